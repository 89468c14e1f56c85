"""The one-class protocol: each task fits on its normal class only, scores every test image once, and reports
AUROCs with intervals."""
import numpy as np
import torch

import diffpath_core.one_class as one_class_module
from diffpath_core import Extraction
from diffpath_core.datasets import DatasetSpec, image_hashes, load_dataset, register
from diffpath_core.metrics import auroc


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
    ex = Extraction(tiny_model, k=2, cache_dir=tmp_path, progress=False)
    result = one_class_module.one_class(ex, "toy_classes", setting="zero-shot", n_train=60, n_test=60,
                                        methods=("DiffPath-1D", "DiffPathV2", "Pixel PCA"), n_boot=200)
    assert calls == [60, 60], "one extraction of the training images and one of the test images, for all tasks"
    train = load_dataset("toy_classes", "train", size=16, channels=1)
    per_class = {c: set(image_hashes(train.images[train.labels == c])) for c in range(3)}
    assert len(fitted) == 3 * 2
    for hashes, c in zip(fitted, np.repeat(np.arange(3), 2)):
        assert set(hashes) == per_class[c], "fitted on the normal class's training images, all of them, only"
    assert len(result.rows) == 9 and len(result.summary) == 3
    for row in result.rows:
        assert row["n_test_normal"] == 20 and row["n_test_anomalous"] == 40 and row["setting"] == "zero-shot"
        assert row["auroc_low"] <= row["auroc"] <= row["auroc_high"]
        s_normal, s_anomaly = result.scores[(row["method"], row["class"])]
        assert row["auroc"] == auroc(s_normal, s_anomaly)
    pixel = {r["class"]: r["auroc"] for r in result.rows if r["method"] == "Pixel PCA"}
    assert min(pixel.values()) > 0.9, "brightness classes are easy for a density on pixels"
    summary = {r["method"]: r for r in result.summary}
    assert summary["Pixel PCA"]["mean_auroc"] == np.mean(list(pixel.values()))
    assert summary["Pixel PCA"]["mean_low"] <= summary["Pixel PCA"]["mean_auroc"] <= summary["Pixel PCA"]["mean_high"]
