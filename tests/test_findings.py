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


def test_one_class_verdicts_rest_on_the_paired_comparison(tmp_path):
    """The best trajectory method against Pixel PCA: "above" only when the paired interval excludes zero, even
    where the two methods' own intervals overlap; the gap to the published methods trained on the normal class."""
    _write(tmp_path / "one_class_summary.csv", ["dataset", "base_model", "setting", "method", "mean_auroc",
                                                "mean_low", "mean_high", "tasks"],
           [["mnist", "m", "zero-shot", "SpatialPath", 0.86, 0.83, 0.89, 10],
            ["mnist", "m", "zero-shot", "DiffPathV2", 0.70, 0.67, 0.73, 10],
            ["mnist", "m", "zero-shot", "Pixel PCA", 0.83, 0.80, 0.86, 10]])
    _write(tmp_path / "one_class_comparisons.csv", ["dataset", "base_model", "setting", "a", "b", "difference", "low",
                                                    "high"],
           [["mnist", "m", "zero-shot", "SpatialPath", "Pixel PCA", 0.03, 0.01, 0.05]])
    _write(tmp_path / "one_class_published.csv", ["dataset", "method", "trained_on", "mean_auroc_percent"],
           [["mnist", "X", "normal class only", 95.0], ["mnist", "Y", "normal class only", 98.0]])
    text = findings(tmp_path, tmp_path)
    assert "best trajectory method SpatialPath 0.860 (0.830–0.890), above a density on raw pixels" in text
    assert "paired difference +0.030 (+0.010 to +0.050)" in text
    assert "0.950–0.980" in text and "0.090 below the lowest of them" in text
    _write(tmp_path / "one_class_comparisons.csv", ["dataset", "base_model", "setting", "a", "b", "difference", "low",
                                                    "high"],
           [["mnist", "m", "zero-shot", "SpatialPath", "Pixel PCA", 0.03, -0.01, 0.07]])
    assert "not told apart from a density on raw pixels" in findings(tmp_path, tmp_path)
