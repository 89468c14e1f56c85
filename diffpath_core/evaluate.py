"""Run the protocol: for each ID set, fit each method on ID-train, score ID-test and each OOD test set.

Used by ``diffpath evaluate`` and by the notebooks, so both print the same numbers. Every path
statistic goes through the feature cache, so a second run only refits the density models.
"""
from __future__ import annotations

import csv
import os
import time
from dataclasses import dataclass, field
from itertools import permutations
from pathlib import Path

import numpy as np

from .api import DiffPath, DiffPathV2
from .cache import extract_path_statistics
from .data import dataset_title, load_images
from .features import reconstruction_score
from .metrics import all_metrics
from .models import DiffusionModel

METHODS = ("DiffPath-1D", "DiffPath-6D", "DiffPathV2")
BASELINES = ("Reconstruction",)


def make_method(name: str, model: DiffusionModel, **kwargs):
    """A fresh detector for a method name (``Reconstruction`` has none: it needs no fitting)."""
    if name == "DiffPath-1D":
        return DiffPath(model, "1d", **kwargs)
    if name == "DiffPath-6D":
        return DiffPath(model, "6d", **kwargs)
    if name == "DiffPathV2":
        return DiffPathV2(model, **kwargs)
    if name == "Reconstruction":
        return None
    raise ValueError(f"unknown method {name!r}; known: {', '.join(METHODS + BASELINES)}")


def ordered_pairs(datasets) -> list[tuple[str, str]]:
    """Every ordered (ID, OOD) pair of distinct datasets."""
    return list(permutations(datasets, 2))


def parse_pair(text: str) -> tuple[str, str]:
    if ":" not in text:
        raise ValueError(f"a pair is written ID:OOD, got {text!r}")
    a, b = text.split(":", 1)
    return a, b


@dataclass
class EvaluationResult:
    rows: list[dict] = field(default_factory=list)
    scores: dict = field(default_factory=dict)  # (method, id, ood) -> (scores_id, scores_ood)
    seconds: float = 0.0

    def write_csv(self, path: str | os.PathLike) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        with open(tmp, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(self.rows[0]))
            w.writeheader()
            w.writerows(self.rows)
        os.replace(tmp, path)

    def table(self, metric: str = "auroc") -> str:
        """A plain-text pairs × methods table of one metric, with the average row."""
        methods = list(dict.fromkeys(r["method"] for r in self.rows))
        pairs = list(dict.fromkeys((r["id"], r["ood"]) for r in self.rows))
        value = {(r["id"], r["ood"], r["method"]): r[metric] for r in self.rows}
        width = max(len(f"{dataset_title(a)} → {dataset_title(b)}") for a, b in pairs) + 2
        lines = [f"{'ID → OOD':<{width}}" + "".join(f"{m:>16}" for m in methods)]
        for a, b in pairs:
            lines.append(f"{dataset_title(a) + ' → ' + dataset_title(b):<{width}}" +
                         "".join(f"{value[(a, b, m)]:>16.3f}" for m in methods))
        lines.append(f"{'average':<{width}}" + "".join(
            f"{np.mean([value[(a, b, m)] for a, b in pairs]):>16.3f}" for m in methods))
        return "\n".join(lines)


class Evaluation:
    """Path statistics per (dataset, split), memoised in memory and cached on disk."""

    def __init__(self, model: DiffusionModel, *, k: int = 10, n_train: int | None = 2000,
                 n_test: int | None = 2000, seed: int = 0, batch_size: int = 64, cache_dir=None,
                 precision: str = "fp32", progress: bool = True, resize: bool = False, convert: bool = False):
        self.model, self.k, self.n_train, self.n_test, self.seed = model, k, n_train, n_test, seed
        self.batch_size, self.cache_dir, self.precision, self.progress = batch_size, cache_dir, precision, progress
        self.resize, self.convert = resize, convert
        self._stats: dict = {}

    def images(self, source: str, split: str):
        return load_images(source, split, size=self.model.image_size, channels=self.model.in_channels,
                           limit=self.n_train if split == "train" else self.n_test, seed=self.seed,
                           resize_images=self.resize, convert=self.convert)

    def stats(self, source: str, split: str) -> dict[str, np.ndarray]:
        if (source, split) not in self._stats:
            self._stats[(source, split)] = extract_path_statistics(
                self.model, self.images(source, split), k=self.k, precision=self.precision,
                batch_size=self.batch_size, cache_dir=self.cache_dir, progress=self.progress,
                desc=f"{dataset_title(source)} {split}: K={self.k} trajectories")
        return self._stats[(source, split)]

    def run(self, pairs, methods=METHODS) -> EvaluationResult:
        t0 = time.perf_counter()
        result = EvaluationResult()
        for id_name in dict.fromkeys(a for a, _ in pairs):
            train, test = self.stats(id_name, "train"), self.stats(id_name, "test")
            for method in methods:
                det = make_method(method, self.model, k=self.k)
                if det is not None:
                    det.fit_statistics(train)
                score = (lambda s: reconstruction_score(s)) if det is None else det.score_statistics
                s_id = score(test)
                for a, ood in pairs:
                    if a != id_name:
                        continue
                    ood_stats = self.stats(ood, "test")
                    s_ood = score(ood_stats)
                    result.scores[(method, id_name, ood)] = (s_id, s_ood)
                    result.rows.append({"id": id_name, "ood": ood, "method": method,
                                        **{m: round(v, 4) for m, v in all_metrics(s_id, s_ood).items()},
                                        "n_id_train": len(next(iter(train.values()))),
                                        "n_id_test": len(s_id), "n_ood_test": len(s_ood), "k": self.k,
                                        "detector": det.detector_.describe() if det is not None else "none",
                                        "model": self.model.source.get("name", "model")})
        result.seconds = time.perf_counter() - t0
        return result
