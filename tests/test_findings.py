"""The intro's opening findings say what the tables say, and no more."""
import csv

from diffpath_core.findings import findings


def _write(path, header, rows):
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)


def test_findings_follow_the_tables(tmp_path):
    methods = ["DiffPath-6D", "DiffPathV2", "Border mean"]
    _write(tmp_path / "main_table_auroc.csv", ["ID → OOD", *methods],
           [["A → B", 0.95, 0.97, 0.99], ["C → D", 0.62, 0.70, 0.55], ["average", 0.785, 0.835, 0.77]])
    _write(tmp_path / "main_table_auroc_interval.csv", ["ID → OOD", *methods],
           [["A → B", "0.93–0.96", "0.96–0.98", "0.98–1.00"], ["C → D", "0.58–0.66", "0.66–0.74", "0.51–0.59"],
            ["average", "0.76–0.81", "0.81–0.86", "0.75–0.79"]])
    _write(tmp_path / "main_comparisons.csv", ["a", "b", "difference", "low", "high", "share_a_ahead", "verdict"],
           [["DiffPathV2", "DiffPath-6D", 0.05, 0.01, 0.09, 0.99, "DiffPathV2 above DiffPath-6D"],
            ["DiffPathV2", "Border mean", 0.065, -0.2, 0.3, 0.7, "no difference resolved"]])
    text = findings(tmp_path, tmp_path)
    assert "DiffPathV2 0.835 (0.81–0.86), DiffPath-6D 0.785 (0.76–0.81), Border mean 0.770 (0.75–0.79)" in text
    assert "DiffPathV2 is ahead of DiffPath-6D by 0.050" in text
    assert "DiffPathV2 and Border mean are not told apart" in text
    assert "Where every method fails" in text and "C → D, best DiffPathV2 0.700" in text
    assert "Where a one-number baseline does as well" in text and "A → B" in text
    empty = tmp_path / "nothing"
    empty.mkdir()
    assert "No results yet" in findings(empty, empty)
