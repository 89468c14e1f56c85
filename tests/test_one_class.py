"""The one-class protocol: each task fits on its normal class only, scores every test image once, and reports
AUROCs with intervals."""
import numpy as np
import pytest
import torch

import diffpath_core.one_class as one_class_module
from diffpath_core import Extraction
from diffpath_core.datasets import DatasetSpec, image_hashes, load_dataset, register
from diffpath_core.metrics import Side, auroc, interval, joint_bootstrap


def _toy(split, data_dir=None, download=False):
    """Three classes of 16×16 uint8 images: dark, mid-grey and bright noise."""
    rng = np.random.default_rng(0 if split == "train" else 1)
    labels = np.repeat(np.arange(3), 20)
    images = np.clip(rng.normal(60 + 70 * labels[:, None, None], 25, (60, 16, 16)), 0, 255).astype(np.uint8)
    return images, labels


register(DatasetSpec("toy_classes", "Toy classes", _toy, "three classes of noise at three brightness levels"))


def test_each_task_fits_on_its_normal_class_only(tiny_model, tmp_path, monkeypatch):
    fitted, real = [], one_class_module.fitted_scores

    def spy(det, train, tests, cache_dir=None):
        fitted.append(train["image_hash"])
        return real(det, train, tests, cache_dir)

    monkeypatch.setattr(one_class_module, "fitted_scores", spy)
    calls = []
    real_stats = Extraction.statistics

    def counted(self, images, *args, **kwargs):
        calls.append(len(images))
        return real_stats(self, images, *args, **kwargs)

    monkeypatch.setattr(Extraction, "statistics", counted)
    draws, real_load = [], one_class_module.load_dataset

    def recorded(*args, **kwargs):
        draws.append(kwargs.get("stratify"))
        return real_load(*args, **kwargs)

    monkeypatch.setattr(one_class_module, "load_dataset", recorded)
    ex = Extraction(tiny_model, k=2, cache_dir=tmp_path, progress=False)
    result = one_class_module.one_class(ex, "toy_classes", setting="zero-shot", n_train=60, n_test=60,
                                        methods=("DiffPath-1D", "DiffPathV2", "Pixel PCA"), n_boot=200)
    assert calls == [60, 60], "one extraction of the training images and one of the test images, for all tasks"
    assert draws == [True, True], "training and test images drawn stratified by class"
    train = load_dataset("toy_classes", "train", size=16, channels=1)
    per_class = {c: set(image_hashes(train.images[train.labels == c])) for c in range(3)}
    assert len(fitted) == 3 * 2
    for hashes, c in zip(fitted, np.repeat(np.arange(3), 2)):
        assert set(hashes) == per_class[c], "fitted on the normal class's training images, all of them, only"
    assert len(result.rows) == 9 and len(result.summary) == 3
    for row in result.rows:
        assert row["n_test_normal"] == 20 and row["n_test_anomalous"] == 40 and row["setting"] == "zero-shot"
        s_normal, s_anomaly = result.scores[(row["method"], row["class"])]
        assert row["auroc"] == auroc(s_normal, s_anomaly)
    pixel = {r["class"]: r["auroc"] for r in result.rows if r["method"] == "Pixel PCA"}
    assert min(pixel.values()) > 0.9, "brightness classes are easy for a density on pixels"
    summary = {r["method"]: r for r in result.summary}
    assert summary["Pixel PCA"]["mean_auroc"] == np.mean(list(pixel.values()))
    # intervals: one draw of the test set per resample, within each class, shared by the three tasks and methods
    test = load_dataset("toy_classes", "test", size=16, channels=1)
    key = "toy_classes|test|60|seed 0"
    for method in ("DiffPath-1D", "Pixel PCA"):
        tasks = [(Side(key, result.scores[(method, c)][0], np.flatnonzero(test.labels == c)),
                  Side(key, result.scores[(method, c)][1], np.flatnonzero(test.labels != c))) for c in range(3)]
        samples = joint_bootstrap(tasks, 200, strata={key: test.labels})
        rows = [r for r in result.rows if r["method"] == method]
        assert [(r["auroc_low"], r["auroc_high"]) for r in rows] == [interval(t) for t in samples]
        assert (summary[method]["mean_low"], summary[method]["mean_high"]) == interval(samples.mean(axis=0))
    verdict = result.compare("Pixel PCA", "DiffPath-1D")
    assert verdict["n_pairs"] == 3 and verdict["low"] <= verdict["high"] and not verdict["resample_pairs"]


def test_test_draws_keep_every_class():
    """40 test images of a ten-class set: a plain random draw leaves some class without an image about one run in
    seven, and its task cannot be scored; the stratified draw keeps every class, each with its share."""
    for seed in range(50):
        test = load_dataset("mnist", "test", limit=40, seed=seed, stratify=True)
        counts = np.bincount(test.labels, minlength=10)
        assert counts.min() >= 3 and counts.max() <= 5 and counts.sum() == 40, (seed, counts)
    plain = [np.bincount(load_dataset("mnist", "test", limit=40, seed=seed).labels, minlength=10).min()
             for seed in range(50)]
    assert min(plain) == 0, "the plain draw does miss classes: the stratified one is needed"


def test_table_beside_published_names_each_base_model_once():
    """Fashion-MNIST runs with two base models (zero-shot and in-domain): each method's two rows get distinct
    names, a baseline that uses no model has one row, the published rows follow, and a clash is an error rather
    than a table the page cannot style."""
    import pandas as pd

    summary = pd.DataFrame([{"dataset": "fashion_mnist", "method": m, "setting": s, "base_model": b,
                             "mean_auroc": 0.7, "mean_low": 0.6, "mean_high": 0.8}
                            for s, b in (("zero-shot", "glyphs"), ("in-domain", "fashion_mnist"))
                            for m in ("DiffPath-6D", "Pixel PCA")])
    published = pd.DataFrame([{"dataset": "fashion_mnist", "method": "CSI", "trained_on": "normal class only",
                               "mean_auroc_percent": 94.2, "source": "Tack et al. 2020", "how_read": "Table 2"},
                              {"dataset": "mnist", "method": "CSI", "trained_on": "normal class only",
                               "mean_auroc_percent": 99.0, "source": "x", "how_read": "y"}])
    table = one_class_module.beside_published(summary, published, "fashion_mnist")
    assert table.index.is_unique and len(table) == 4, "Pixel PCA uses no model: one row, not one per base model"
    assert "DiffPath-6D (zero-shot, glyphs)" in table.index and "DiffPath-6D (in-domain, fashion_mnist)" in table.index
    assert table.loc["Pixel PCA", "learned from"].startswith("no model")
    resized = summary.copy()  # two base models of different image sizes: the pixel baseline differs, two rows
    resized.loc[(resized["method"] == "Pixel PCA") & (resized["setting"] == "in-domain"), "mean_auroc"] = 0.75
    two = one_class_module.beside_published(resized, published, "fashion_mnist")
    assert {"Pixel PCA (zero-shot, glyphs)", "Pixel PCA (in-domain, fashion_mnist)"} <= set(two.index)
    assert table.loc["CSI", "mean AUROC"] == pytest.approx(0.942) and table.loc["CSI", "95 % interval"] == "not published"
    single = one_class_module.beside_published(summary[summary["setting"] == "zero-shot"], published, "fashion_mnist")
    assert list(single.index[:2]) == ["DiffPath-6D", "Pixel PCA"], "one base model: plain method names"
    clash = pd.concat([published, published.iloc[:1]])
    with pytest.raises(ValueError, match="share a name"):
        one_class_module.beside_published(summary, clash, "fashion_mnist")
