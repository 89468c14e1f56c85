"""The evaluation protocol's numbers: intervals from one joint draw of the test sets, paired comparisons, and the
overlap check limited to what biases a number."""
import shutil

import numpy as np
import pytest
from PIL import Image

from diffpath_core.book import load_profile
from diffpath_core.errors import InputError
from diffpath_core.evaluate import Evaluation
from diffpath_core.extraction import Extraction
from diffpath_core.metrics import Side, interval, joint_bootstrap


def _folder(path, n, seed, size=16, smooth=True):
    path.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        a = rng.normal(128 + 20 * smooth, 60, (size, size))
        if smooth:
            a = (a + np.roll(a, 1, 0) + np.roll(a, 1, 1)) / 3
        Image.fromarray(a.clip(0, 255).astype(np.uint8), "L").save(path / f"img_{i:03d}.png")
    return path


@pytest.fixture
def three_folders(tmp_path):
    return [str(_folder(tmp_path / name, 24, seed, smooth=smooth))
            for name, seed, smooth in (("a", 0, True), ("b", 1, False), ("c", 2, True))]


def test_every_interval_comes_from_one_draw_per_test_set(tiny_model, three_folders):
    """Each cell's interval, the averages and the paired comparisons are percentiles of draws in which every test
    set is resampled once for every pair and method: recomputed here from the scores, set by set."""
    a, b, c = three_folders
    ev = Evaluation(Extraction(tiny_model, k=2, progress=False), n_train=None, n_test=None, n_boot=300)
    result = ev.run([(a, b), (a, c), (c, b)], ["DiffPath-1D", "DiffPath-6D"])
    keys = result.test_sets
    assert keys[b] == f"{b}|None" and keys[a] == f"{a}|test" and keys[c] == f"{c}|test"
    joint = {}
    for method in ("DiffPath-1D", "DiffPath-6D"):
        tasks = [(Side(keys[i], result.scores[(method, i, o)][0]), Side(keys[o], result.scores[(method, i, o)][1]))
                 for i, o in result.pairs]
        joint[method] = joint_bootstrap(tasks, 300)
        for (i, o), samples in zip(result.pairs, joint[method]):
            row = next(r for r in result.rows if (r["method"], r["id"], r["ood"]) == (method, result.labels[i],
                                                                                       result.labels[o]))
            alone = joint_bootstrap([(Side(keys[i], result.scores[(method, i, o)][0]),
                                      Side(keys[o], result.scores[(method, i, o)][1]))], 300)[0]
            np.testing.assert_array_equal(alone, samples)  # a set's draws do not depend on the other pairs
            assert (row["auroc_low"], row["auroc_high"]) == tuple(round(v, 4) for v in interval(samples))
        mean = result.mean_auroc(method)
        assert (mean["low"], mean["high"]) == interval(joint[method].mean(axis=0))
    diff = result.compare("DiffPath-6D", "DiffPath-1D")
    assert diff["n_pairs"] == 3 and diff["low"] <= diff["high"]


def test_only_overlaps_that_bias_a_number_are_refused(tiny_model, tmp_path):
    """An image in ID-train and in ID-test or an OOD set is refused; two OOD sets (or ID-test and an OOD set)
    sharing an image bias nothing and pass."""
    train = _folder(tmp_path / "train", 20, 0)
    test = _folder(tmp_path / "test", 10, 1)
    ood1 = _folder(tmp_path / "ood1", 10, 2, smooth=False)
    ood2 = _folder(tmp_path / "ood2", 10, 3, smooth=False)
    shutil.copy(ood1 / "img_000.png", ood2 / "shared.png")   # OOD with OOD
    shutil.copy(test / "img_001.png", ood2 / "also.png")     # ID-test with OOD

    def run(allow=False):
        ev = Evaluation(Extraction(tiny_model, k=2, progress=False), n_train=None, n_test=None, n_boot=0,
                        id_test={str(train): str(test)}, allow_overlap=allow)
        return ev.run([(str(train), str(ood1)), (str(train), str(ood2))], ["DiffPath-1D"])

    assert run().notes == []
    shutil.copy(train / "img_003.png", ood1 / "leak.png")    # ID-train with OOD
    with pytest.raises(InputError, match=r"train \(ID-train\) and ood1 \(OOD\) share 1 identical"):
        run()
    assert run(allow=True).notes == ["train (ID-train) and ood1 (OOD) share 1 identical image(s) "
                                     "(allowed by --allow-overlap)"]


def test_the_paper_profile_counts_duplicates_and_goes_on():
    """Public sets can hold exact duplicates across their splits: the paper profile counts them on the page
    (the notebooks print the notes) instead of stopping the book; the offline sets have none, and refuse."""
    assert load_profile("paper")["allow_overlap"] is True
    assert load_profile("offline")["allow_overlap"] is False


def test_every_methods_readings_come_from_one_pass_per_set(tiny_model, three_folders, monkeypatch):
    """The path statistics and the cells SpatialPath reads ride in one network pass per image set, whichever
    method asks first."""
    a, b, c = three_folders
    calls = []
    real = Extraction.batch_statistics

    def counted(self, x, reading="path"):
        calls.append((len(x), tuple(sorted(reading)) if not isinstance(reading, str) else (reading,)))
        return real(self, x, reading)

    monkeypatch.setattr(Extraction, "batch_statistics", counted)
    ev = Evaluation(Extraction(tiny_model, k=2, progress=False), n_train=None, n_test=None, n_boot=0)
    result = ev.run([(a, b), (a, c)], ["DiffPathV2", "SpatialPath", "DiffPath-1D"])
    assert sorted(n for n, _ in calls) == [12, 12, 24, 24], "a's two halves, b and c: one pass each"
    assert {r for _, r in calls} == {("cells", "path")}
    assert {r["method"] for r in result.rows} == {"DiffPathV2", "SpatialPath", "DiffPath-1D"}
