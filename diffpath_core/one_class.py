"""The one-class protocol, anomaly detection's classic benchmark, on labelled datasets.

One class is normal: the training images of that class (and no other) fit the density; the test set's
images of that class are the normal test images and those of the other classes the anomalies. Ten tasks for
a ten-class dataset, each with its AUROC (normal = positive, higher score = more normal) and a bootstrap
interval; the mean over tasks with an interval from the same bootstrap. The ten tasks share their test images
(an image is normal in one task and an anomaly in the nine others), so each bootstrap draw resamples the test
set once, within each class, for every task and method (:func:`metrics.joint_bootstrap`); tasks are fixed.
Training and test images are drawn stratified by class, so every class has images at any size.

Every test image's trajectory is computed once and shared by the ten tasks, and the training images' once
for all classes: the cost is one extraction of the training subset and one of the test subset per base model.

*Zero-shot* in the paper's sense means the base model never saw the target dataset (MNIST scored with the
Fashion-MNIST model, Fashion-MNIST with the glyphs model); *in-domain* means it was trained on the target
dataset's training images, all classes, without labels. Results carry that setting on every row.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from .api import PixelPCA
from .datasets import load_dataset
from .datasets.offline import FASHION_MNIST_CLASSES
from .evaluate import METHOD_FACTORIES, cached_scores, fitted_scores, make_method
from .extraction import Extraction, require_extraction
from .methods import METHODS as PAPERS
from .methods import NO_MODEL, VARIANTS
from .metrics import BOOT_SEED, N_BOOT, Side, auroc, interval, joint_bootstrap, paired_difference
from .store import digest

# the papers' methods, this project's, and the baselines that use no model (Reconstruction reads no class)
METHODS = PAPERS + VARIANTS + tuple(NO_MODEL)
CLASS_NAMES = {"fashion_mnist": FASHION_MNIST_CLASSES, "fashion_mnist_full": FASHION_MNIST_CLASSES,
               "mnist": tuple(str(d) for d in range(10)), "digits": tuple(str(d) for d in range(10)),
               "cifar10": ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")}


@dataclass
class OneClassResult:
    rows: list[dict] = field(default_factory=list)      # one per (class, method)
    summary: list[dict] = field(default_factory=list)   # one per method: mean AUROC over the tasks
    scores: dict = field(default_factory=dict)          # (method, class) → (normal scores, anomaly scores)
    seconds: float = 0.0
    tasks: dict = field(default_factory=dict)           # method → the (normal, anomaly) Sides of each task
    strata: dict = field(default_factory=dict)          # the test set's key → its images' classes
    n_boot: int = N_BOOT

    def compare(self, a: str, b: str) -> dict:
        """Method ``a`` against ``b`` over the same tasks and test images: the difference of their mean AUROC with
        a paired interval (one joint draw of the test set, within each class, for both; the tasks fixed, as the
        protocol defines them) and a verdict that names a winner only when the interval excludes zero."""
        diff = paired_difference(self.tasks[a], self.tasks[b], self.n_boot, BOOT_SEED, resample_pairs=False,
                                 strata=self.strata)
        verdict = (f"{a} above {b}" if diff["low"] > 0 else f"{b} above {a}" if diff["high"] < 0
                   else "no difference resolved")
        return {"a": a, "b": b, **diff, "verdict": verdict}


def one_class(extraction: Extraction, dataset: str, *, setting: str, n_train: int = 2000, n_test: int = 1000,
              seed: int = 0, methods=METHODS, density: str = "compact", n_boot: int = N_BOOT) -> OneClassResult:
    """Run the one-class protocol on ``dataset`` with the base model of ``extraction``.

    ``n_train`` training and ``n_test`` test images are drawn at random (seeded) from the dataset's splits; each
    task fits on the training images of its normal class only. ``setting`` ("zero-shot" / "in-domain") labels
    what the base model saw.
    """
    require_extraction(extraction, "one_class")
    t0 = time.perf_counter()
    model = extraction.model
    size, channels = model.image_size, model.in_channels
    train = load_dataset(dataset, "train", size=size, channels=channels, limit=n_train, seed=seed, stratify=True)
    test = load_dataset(dataset, "test", size=size, channels=channels, limit=n_test, seed=seed, stratify=True)
    if train.labels is None or test.labels is None:
        raise ValueError(f"{dataset}: the one-class protocol needs class labels")
    # every reading a method needs, in one pass per image set (readings of one pass share its trajectories)
    readings = tuple(dict.fromkeys(r for m in methods if m in METHOD_FACTORIES for r in make_method(m).readings))
    stats = {"train": extraction.statistics(train, readings, desc=f"{dataset} train: one-class"),
             "test": extraction.statistics(test, readings, desc=f"{dataset} test: one-class")}
    names = CLASS_NAMES.get(dataset, tuple(str(c) for c in np.unique(train.labels)))
    base = model.source.get("name", "model")
    test_set = f"{dataset}|test|{len(test)}|seed {seed}"  # the key of its bootstrap draws
    result = OneClassResult(strata={test_set: test.labels}, n_boot=n_boot)
    tasks = result.tasks
    for c in np.unique(train.labels):
        normal_train = train.labels == c
        normal_test = test.labels == c
        for method in methods:
            if method == "Pixel PCA":
                s, describe = _pixel_scores(train.images[normal_train], test.images, extraction.cache_dir,
                                            density, seed)
            else:
                det = make_method(method, density=density)
                fit_on = {k: v[normal_train] for k, v in stats["train"].items()}
                scores, describe = fitted_scores(det, fit_on, {"test": stats["test"]}, extraction.cache_dir)
                s = scores["test"]
            s_normal, s_anomaly = s[normal_test], s[~normal_test]
            result.scores[(method, int(c))] = (s_normal, s_anomaly)
            tasks.setdefault(method, []).append((Side(test_set, s_normal, np.flatnonzero(normal_test)),
                                                 Side(test_set, s_anomaly, np.flatnonzero(~normal_test))))
            result.rows.append({"dataset": dataset, "base_model": base, "setting": setting, "class": int(c),
                                "class_name": names[int(c)] if int(c) < len(names) else str(c), "method": method,
                                "auroc": auroc(s_normal, s_anomaly), "auroc_low": np.nan, "auroc_high": np.nan,
                                "n_train_normal": int(normal_train.sum()), "n_test_normal": len(s_normal),
                                "n_test_anomalous": len(s_anomaly), "detector": describe, "density": density,
                                "n_boot": n_boot, "seed": seed})
    for method in methods:  # one joint draw of the test set per resample, for every task and method
        samples = joint_bootstrap(tasks[method], n_boot, BOOT_SEED, result.strata)
        for row, task_samples in zip([r for r in result.rows if r["method"] == method], samples):
            row["auroc_low"], row["auroc_high"] = interval(task_samples)
        low, high = interval(samples.mean(axis=0))
        result.summary.append({"dataset": dataset, "base_model": base, "setting": setting, "method": method,
                               "mean_auroc": float(np.mean([r["auroc"] for r in result.rows if r["method"] == method])),
                               "mean_low": low, "mean_high": high, "tasks": len(samples), "n_train": len(train),
                               "n_test": len(test), "n_boot": n_boot, "seed": seed})
    result.seconds = time.perf_counter() - t0
    return result


def _pixel_scores(train_images, test_images, cache_dir, density: str, seed: int) -> tuple[np.ndarray, str]:
    """The Pixel PCA baseline fitted on ``train_images`` and scored on ``test_images``, cached like the others."""
    det = PixelPCA(density=density, seed=seed)
    # "scores v2": entries in cached_scores' layout (an older entry under the old key held a bare "score")
    key = digest("PixelPCA", "scores v2", repr((det.components, density, seed)), train_images.numpy(),
                 test_images.numpy(), length=20)

    def compute():
        return {"test": det.fit(train_images).score_samples(test_images)}, det.describe()

    scores, describe = cached_scores(cache_dir, key, ["test"], compute)
    return scores["test"], describe


def beside_published(summary, published, dataset: str):
    """One dataset's table: this book's rows (one per method and base model) and the published rows below them,
    indexed by a unique row name. A method run with several base models is named with its setting and model; a
    baseline that uses no model (:data:`NO_MODEL`) has one row, unless the base models read images at different
    sizes (then its results differ, and it has one row per size)."""
    import pandas as pd

    ours = summary[summary["dataset"] == dataset]
    # a baseline that uses no model is the same computation under every base model of one image size: one row
    no_model = ours["method"].isin(list(NO_MODEL))
    same = ["method", "mean_auroc", "mean_low", "mean_high"]
    ours = pd.concat([ours[~no_model], ours[no_model].drop_duplicates(same)])
    rows_of = ours["method"].value_counts()

    def row(r) -> dict:
        several = rows_of[r.method] > 1
        if r.method in NO_MODEL:  # several rows only where the base models read images at different sizes
            learned = NO_MODEL[r.method] + (f", at the image size of {r.base_model}" if several else "")
        else:
            learned = f"{r.setting}: base model {r.base_model}, density on the normal class"
        return {"method": f"{r.method} ({r.setting}, {r.base_model})" if several else r.method,
                "learned from": learned, "mean AUROC": r.mean_auroc,
                "95 % interval": f"{r.mean_low:.3f}–{r.mean_high:.3f}", "measured by": "this book, the run above"}

    rows = [row(r) for r in ours.itertuples()]
    theirs = published[published["dataset"] == dataset].sort_values(["trained_on", "mean_auroc_percent"])
    rows += [{"method": r.method, "learned from": r.trained_on, "mean AUROC": r.mean_auroc_percent / 100,
              "95 % interval": "not published", "measured by": f"{r.source} ({r.how_read})"}
             for r in theirs.itertuples()]
    table = pd.DataFrame(rows).set_index("method")
    if not table.index.is_unique:
        raise ValueError(f"{dataset}: two rows share a name: {sorted(set(table.index[table.index.duplicated()]))}")
    return table

