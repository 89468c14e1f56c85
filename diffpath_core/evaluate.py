"""Run the protocol: for each ID set, fit each method on ID-train, score ID-test and each OOD test set.

Used by ``diffpath evaluate`` and by the notebooks, so both print the same numbers. Every path
statistic goes through the feature cache, so a second run only refits the density models.
"""
from __future__ import annotations

import csv
import io
import os
import sys
import time
from dataclasses import dataclass, field
from itertools import permutations
from pathlib import Path

import numpy as np

from .api import BorderMean, DiffPath, DiffPathV2, DiffPathV2Variant, SpatialPath
from .datasets import DATASETS, dataset_title, folder_summary, is_folder_source, item_names, load_images
from .errors import InputError
from .extraction import Extraction, require_extraction
from .features import reconstruction_score
from .methods import BASELINES as ALL_BASELINES
from .methods import METHODS, VARIANTS
from .metrics import BOOT_SEED, N_BOOT, Side, all_metrics, auroc, interval, joint_bootstrap, paired_difference
from .store import atomic_savez, atomic_write_bytes, digest, stats_digest

METHOD_FACTORIES = {
    "DiffPath-1D": lambda **kw: DiffPath(variant="1d", **kw),
    "DiffPath-6D": lambda **kw: DiffPath(variant="6d", **kw),
    "DiffPathV2": lambda **kw: DiffPathV2(**kw),
    "DiffPathV2-PS": lambda **kw: DiffPathV2Variant(**kw),
    "SpatialPath": lambda **kw: SpatialPath(**kw),
    "Border mean": lambda **kw: BorderMean(**kw),
}


# the baselines that score images from their path statistics (Pixel PCA reads pixels: the one-class protocol runs it)
BASELINES = tuple(b for b in ALL_BASELINES if b in METHOD_FACTORIES or b == "Reconstruction")


def make_method(name: str, **kwargs):
    """A fresh detector for a method name, ``kwargs`` passed to its constructor (``Reconstruction`` has none:
    it needs no fitting). Scoring statistics needs no model, so an evaluation passes only the density."""
    if name in METHOD_FACTORIES:
        return METHOD_FACTORIES[name](**kwargs)
    if name == "Reconstruction":
        return None
    raise ValueError(f"unknown method {name!r}; known: {', '.join(METHODS + VARIANTS + BASELINES)}")


def source_labels(sources) -> dict[str, str]:
    """How each source appears in tables and CSVs, unique within a run: a registered name as it is; a folder by
    the shortest suffix of its path that tells it from every other source (``cam1/images``, ``cam2/images``)."""
    sources = list(dict.fromkeys(sources))
    folders = {s: Path(os.path.abspath(s)).parts for s in sources if is_folder_source(s)}
    labels = {s: s for s in sources if s not in folders}
    for source, parts in folders.items():
        others = [p for o, p in folders.items() if p != parts]
        for n in range(1, len(parts) + 1):
            label = "/".join(parts[-n:]).lstrip("/")
            if label not in labels.values() and all(p[-n:] != parts[-n:] for p in others):
                break
        labels[source] = label
    return labels


def fitted_scores(det, train: dict, tests: dict, cache_dir=None) -> tuple[dict[str, np.ndarray], str]:
    """Fit ``det`` on the ``train`` statistics and score each of ``tests`` ({name: statistics}); returns the
    scores and the fitted density's description.

    Scores are cached under ``cache_dir/scores`` (keyed by the detector's settings and a digest of every statistic
    it saw): a fitted density is deterministic in those, so a rebuild of the book refits nothing.
    """
    names = list(tests)
    key = digest("|".join([det.token(), stats_digest(train)] + [f"{n}:{stats_digest(tests[n])}" for n in names]),
                 length=20)

    def compute():
        det.fit_statistics(train)
        return {n: det.score_statistics(tests[n]) for n in names}, det.detector_.describe()

    return cached_scores(cache_dir, key, names, compute)


def cached_scores(cache_dir, key: str, names: list[str], compute) -> tuple[dict[str, np.ndarray], str]:
    """``compute()`` → ({name: scores}, description), kept in ``cache_dir/scores/<key>.npz`` (written atomically)
    and read from there when present; no cache without ``cache_dir``. ``key`` must hold everything the scores
    depend on."""
    path = Path(cache_dir) / "scores" / f"{key}.npz" if cache_dir else None
    if path is not None and path.exists():
        with np.load(path, allow_pickle=False) as d:
            return {n: d[f"score_{n}"] for n in names}, str(d["describe"])
    scores, describe = compute()
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_savez(path, {**{f"score_{n}": v for n, v in scores.items()}, "describe": np.array(describe)})
    return scores, describe


def label_title(label: str) -> str:
    """A table's name for a row label: a registered dataset's title, a folder's label as it is."""
    return DATASETS[label].title if label in DATASETS else label


def find_overlaps(content: dict, against: str | None = None) -> list[str]:
    """For sets given as {name: (image hashes, image names or None, where)}, one line per pair of sets that share
    identical images: how many, and up to five of them by name. With ``against``, only that set is compared with
    each other one."""
    found = []
    names = list(content)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            if against is not None and against not in (a, b):
                continue
            (ha, na, wa), (hb, nb, wb) = content[a], content[b]
            if wa == wb:  # the same images by construction (an OOD set that is also the ID set): not an overlap
                continue
            common, ia, ib = np.intersect1d(ha, hb, return_indices=True)
            if len(common) == 0:
                continue
            first = np.argsort(ia, kind="stable")[:5]  # the first few in the order of set a
            shown = [_same(na[x] if na else f"#{x}", nb[y] if nb else f"#{y}") for x, y in zip(ia[first], ib[first])]
            nested = _nesting(wa[0], wb[0])
            found.append(f"{a} and {b} share {len(common)} identical image(s){nested}: " + "; ".join(shown)
                         + ("; …" if len(common) > 5 else ""))
    return found


def _same(a: str, b: str) -> str:
    return f"{a} (in both)" if os.path.normpath(a) == os.path.normpath(b) else f"{a} = {b}"


def _nesting(a: str, b: str) -> str:
    """ " (… lies inside …)" when one folder contains the other (folder listings are recursive)."""
    if not (is_folder_source(a) and is_folder_source(b)):
        return ""
    ra, rb = Path(a).resolve(), Path(b).resolve()
    for inner, outer in ((ra, rb), (rb, ra)):
        if inner != outer and outer in inner.parents:
            return f" ({inner.name} lies inside {outer.name}: a folder's listing includes its sub-folders)"
    return ""


def _readings(method, density: str) -> tuple[str, ...]:
    """The readings a method's detector needs (the path for the reconstruction baseline)."""
    label, factory = (method, None) if isinstance(method, str) else method
    det = make_method(label, density=density) if factory is None else factory()
    return det.readings if det is not None else ("path",)


def ordered_pairs(datasets) -> list[tuple[str, str]]:
    """Every ordered (ID, OOD) pair of distinct datasets."""
    return list(permutations(datasets, 2))


def parse_pair(text: str) -> tuple[str, str]:
    if ":" not in text or text.startswith(":") or text.endswith(":"):
        raise InputError(f"a pair is written ID:OOD (e.g. fmnist_tops:fmnist_footwear), got {text!r}")
    a, b = text.split(":", 1)
    return a, b


def write_rows_csv(rows: list[dict], path: str | os.PathLike) -> None:
    """Rows of dicts as UTF-8 CSV, written atomically (the cache's temp file + rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = io.StringIO(newline="")
    w = csv.DictWriter(text, fieldnames=list(rows[0]))
    w.writeheader()
    w.writerows(rows)
    atomic_write_bytes(path, text.getvalue().encode("utf-8"))


@dataclass
class EvaluationResult:
    rows: list[dict] = field(default_factory=list)
    scores: dict = field(default_factory=dict)  # (method, id, ood) -> (scores_id, scores_ood)
    seconds: float = 0.0
    notes: list = field(default_factory=list)   # lines a reader should see beside the table (allowed overlaps)
    labels: dict = field(default_factory=dict)  # source → its label in the rows
    pairs: list = field(default_factory=list)   # the (ID, OOD) pairs in order
    test_sets: dict = field(default_factory=dict)  # source → the key of its test images (one bootstrap draw each)
    n_boot: int = N_BOOT

    def tasks(self, method: str, pairs=None) -> list[tuple[Side, Side]]:
        """The method's (ID-test, OOD-test) scores on each pair, each side naming its image set: a set shared by
        several pairs (an ID-test set, a set that is OOD for two ID sets and ID for a third) is resampled once
        per bootstrap draw for all of them, and for every method (paired)."""
        return [(Side(self.test_sets[a], self.scores[(method, a, b)][0]),
                 Side(self.test_sets[b], self.scores[(method, a, b)][1])) for a, b in (pairs or self.pairs)]

    def samples(self, method: str, pairs=None) -> np.ndarray:
        """Bootstrap AUROCs (pairs × resamples) of the method, one joint draw of the test sets per resample."""
        return joint_bootstrap(self.tasks(method, pairs), self.n_boot, BOOT_SEED)

    def mean_auroc(self, method: str, pairs=None) -> dict:
        """A method's mean AUROC over the pairs (default: all) with a bootstrap interval over images (pairs fixed;
        each test set resampled once per draw, whichever pairs share it)."""
        pairs = pairs or self.pairs
        values = [auroc(*self.scores[(method, a, b)]) for a, b in pairs]
        low, high = interval(self.samples(method, pairs).mean(axis=0))
        return {"method": method, "mean_auroc": float(np.mean(values)), "low": low, "high": high,
                "pairs": len(pairs), "n_boot": self.n_boot}

    def compare(self, a: str, b: str, pairs=None) -> dict:
        """Method ``a`` against ``b`` on the same pairs and images: the mean AUROC difference, its paired bootstrap
        interval (the test sets and the pairs themselves resampled, the same draws for both methods) and a verdict
        that says a difference only when the interval excludes zero."""
        diff = paired_difference(self.tasks(a, pairs), self.tasks(b, pairs), self.n_boot, BOOT_SEED,
                                 resample_pairs=True)
        verdict = (f"{a} above {b}" if diff["low"] > 0 else f"{b} above {a}" if diff["high"] < 0
                   else "no difference resolved")
        return {"a": a, "b": b, **diff, "verdict": verdict}

    def write_csv(self, path: str | os.PathLike) -> None:
        write_rows_csv(self.rows, path)

    def write_scores(self, path: str | os.PathLike) -> None:
        """Every score behind the table, as ``.npz`` (keys ``method|id|ood|id`` and ``method|id|ood|ood``, with the
        rows' labels), so a reader can recompute any metric; written atomically."""
        arrays = {}
        for (method, id_name, ood), (s_id, s_ood) in self.scores.items():
            key = f"{method}|{self.labels.get(id_name, id_name)}|{self.labels.get(ood, ood)}"
            arrays[f"{key}|id"], arrays[f"{key}|ood"] = np.asarray(s_id), np.asarray(s_ood)
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        atomic_savez(path, arrays)

    def table(self, metric: str = "auroc") -> str:
        """A plain-text pairs × methods table of one metric, with the average row. For the AUROC each cell also
        shows its 95 % bootstrap interval (the average's: test sets resampled jointly, pairs fixed)."""
        methods = list(dict.fromkeys(r["method"] for r in self.rows))
        pairs = list(dict.fromkeys((r["id"], r["ood"]) for r in self.rows))
        rows = {(r["id"], r["ood"], r["method"]): r for r in self.rows}
        with_interval = metric == "auroc" and self.n_boot > 0
        cell = 24 if with_interval else 16

        def shown(value, low=None, high=None):
            return f"{value:.3f} [{low:.3f}, {high:.3f}]" if with_interval else f"{value:.3f}"

        width = max(len(f"{label_title(a)} → {label_title(b)}") for a, b in pairs) + 2
        lines = [f"{'ID → OOD':<{width}}" + "".join(f"{m:>{cell}}" for m in methods)]
        for a, b in pairs:
            cells = [shown(rows[a, b, m][metric], rows[a, b, m].get("auroc_low"), rows[a, b, m].get("auroc_high"))
                     for m in methods]
            lines.append(f"{label_title(a) + ' → ' + label_title(b):<{width}}" + "".join(f"{c:>{cell}}" for c in cells))
        averages = []
        for m in methods:
            if with_interval and len(self.scores):
                mean = self.mean_auroc(m)
                averages.append(shown(mean["mean_auroc"], mean["low"], mean["high"]))
            else:
                averages.append(shown(np.mean([rows[(a, b, m)][metric] for a, b in pairs])))
        lines.append(f"{'average':<{width}}" + "".join(f"{v:>{cell}}" for v in averages))
        return "\n".join(lines)


class Evaluation:
    """Path statistics per (dataset, split), memoised in memory and cached on disk; scores cached too.

    ``extraction`` says how statistics are computed (model, K, precision, cache folder, …); the rest says
    which images (sizes, seed, folder options) and which density setting the named methods get.
    """

    def __init__(self, extraction: Extraction, *, n_train: int | None = 2000, n_test: int | None = 2000,
                 seed: int = 0, resize: bool = False, convert: bool = False, density: str = "compact",
                 id_test: dict | None = None, allow_overlap: bool = False, n_boot: int = N_BOOT,
                 bits: int | None = None):
        require_extraction(extraction, "Evaluation")
        self.extraction, self.n_train, self.n_test, self.seed = extraction, n_train, n_test, seed
        self.density, self.resize, self.convert = density, resize, convert
        self.id_test = dict(id_test or {})  # ID source → a folder of its ID-test images
        self.id_sources: set[str] = set()   # set by run(): folders among them are split into train / test
        self.allow_overlap = allow_overlap  # identical images in two sets: counted in the notes instead of refused
        self.n_boot = n_boot                # bootstrap resamples behind each AUROC's interval (0: none)
        self.bits = bits                    # folders' 16-bit files hold values of this many bits (None: 16)
        self._stats: dict = {}
        self._names: dict = {}              # (where, split) → a name for each image, for messages

    @property
    def model(self):
        return self.extraction.model

    def resolve(self, source: str, split: str) -> tuple[str, str | None]:
        """Where one split of a source comes from: (source, part), part None meaning a whole folder.

        A folder that is an ID set is split into disjoint ID-train / ID-test parts, unless ``id_test`` gives its
        ID-test images as a folder of their own (then it trains on all its images); a folder used only as OOD
        is used whole; a registered dataset has its own splits.
        """
        if source in self.id_test:
            return (self.id_test[source], None) if split == "test" else (source, None)
        if is_folder_source(source):
            return source, (split if source in self.id_sources else None)
        return source, split

    def images(self, source: str, split: str):
        where, part = self.resolve(source, split)
        return load_images(where, part, size=self.model.image_size, channels=self.model.in_channels,
                           limit=self.n_train if split == "train" else self.n_test, seed=self.seed,
                           resize_images=self.resize, convert=self.convert, bits=self.bits)

    def stats(self, source: str, split: str, readings=("path",)) -> dict[str, np.ndarray]:
        """Statistics of one (dataset, split) for the given readings, merged (each reading cached on its own; the
        readings not memoised yet are extracted in one call, so readings of one pass share its trajectories)."""
        where = self.resolve(source, split)
        missing = [r for r in dict.fromkeys(readings) if (where, split, r) not in self._stats]
        if missing:  # decoded once, only if some reading is not memoised yet
            images = self.images(source, split)
            self._names[where, split] = item_names(images, where[0])
            if self.extraction.progress and folder_summary(images):
                print(folder_summary(images), file=sys.stderr)
            got = self.extraction.statistics_by_reading(
                images, tuple(missing), desc=f"{dataset_title(source)} {split}: K={self.extraction.k} trajectories")
            for reading in missing:
                self._stats[where, split, reading] = got[reading]
        merged: dict[str, np.ndarray] = {}
        for reading in readings:
            merged.update(self._stats[where, split, reading])
        return merged

    def overlaps(self, id_name: str, oods: list[str], readings=("path",), labels: dict | None = None) -> list[str]:
        """Identical images (by content, decoded at the model's size) shared by ID-train and ID-test or an OOD set:
        the overlaps that bias a number (an ID-train image scored by the density fitted on it, or fitted as ID
        and scored as OOD). An :class:`InputError` naming them, or with ``allow_overlap`` one counted line per pair
        of sets that share any (returned). Test sets sharing images with each other bias nothing and are not
        compared."""
        sets = {"ID-train": (id_name, "train"), "ID-test": (id_name, "test"), **{o: (o, "test") for o in oods}}
        labels = labels or source_labels([*oods, *(self.resolve(s, split)[0] for s, split in sets.values())])
        content = {}
        for role, (source, split) in sets.items():
            where = self.resolve(source, split)
            name = f"{labels[where[0]]} ({role if role in ('ID-train', 'ID-test') else 'OOD'})"
            hashes = self.stats(source, split, readings)["image_hash"]
            content[name] = (hashes, self._names.get((where, split)), where)
        train = next(iter(content))
        found = find_overlaps(content, against=train)
        if found and not self.allow_overlap:
            raise InputError("identical images in ID-train and a test set of one evaluation (compared by content, "
                             f"decoded at {self.model.image_size}×{self.model.image_size}):\n  " + "\n  ".join(found) +
                             "\nAn ID-train image in ID-test is scored by the density fitted on it; one in an OOD set was "
                             "fitted as ID. Remove the duplicates or point the sets elsewhere, or pass --allow-overlap "
                             "(allow_overlap=True) to count them and go on.")
        return [line.split(":")[0] + " (allowed by --allow-overlap)" for line in found]

    def fit_and_score(self, det, id_name: str, targets: list[str]) -> tuple[dict[str, np.ndarray], str]:
        """Fit ``det`` on ID-train statistics, score the ID test set and each target's test set (cached:
        :func:`fitted_scores`)."""
        train = self.stats(id_name, "train", det.readings)
        names = [id_name] + [t for t in targets if t != id_name]
        tests = {n: self.stats(n, "test", det.readings) for n in names}
        return fitted_scores(det, train, tests, self.extraction.cache_dir)

    def run(self, pairs, methods=METHODS + VARIANTS) -> EvaluationResult:
        """Every method on every (ID, OOD) pair; ``methods`` holds names or (label, factory()) pairs.

        Named methods get this evaluation's density setting; a factory builds its detector as it likes (no model
        needed: the detector only scores the statistics this evaluation extracts).
        """
        t0 = time.perf_counter()
        result = EvaluationResult(n_boot=self.n_boot)
        pairs = list(dict.fromkeys(tuple(p) for p in pairs))
        result.pairs = pairs
        self.id_sources |= {a for a, _ in pairs}
        labels = source_labels([s for pair in pairs for s in pair] + list(self.id_test.values()))
        result.labels = labels
        cells: dict[str, list] = {}  # method → (its row, its pair) for each pair
        result.test_sets = {s: "|".join(map(str, self.resolve(s, "test"))) for pair in pairs for s in pair}
        for id_name in dict.fromkeys(a for a, _ in pairs):
            oods = [b for a, b in pairs if a == id_name]
            # every reading any method needs, extracted before the first fit: readings of one pass share it
            readings = tuple(dict.fromkeys(r for method in methods for r in _readings(method, self.density)))
            result.notes += self.overlaps(id_name, oods, readings, labels)
            for method in methods:
                label, factory = (method, None) if isinstance(method, str) else method
                det = make_method(label, density=self.density) if factory is None else factory()
                if det is None:  # the reconstruction baseline needs no density
                    scores = {n: reconstruction_score(self.stats(n, "test")) for n in [id_name] + oods}
                    describe, n_train = "none", 0
                else:
                    scores, describe = self.fit_and_score(det, id_name, oods)
                    n_train = len(next(iter(self.stats(id_name, "train", det.readings).values())))
                for ood in oods:
                    s_id, s_ood = scores[id_name], scores[ood]
                    result.scores[(label, id_name, ood)] = (s_id, s_ood)
                    row = {"id": labels[id_name], "ood": labels[ood], "method": label,
                           **{m: round(v, 4) for m, v in all_metrics(s_id, s_ood).items()},
                           "auroc_low": np.nan, "auroc_high": np.nan,  # from the joint draws, below
                           "n_boot": self.n_boot, "boot_seed": BOOT_SEED,
                           "n_id_train": n_train, "n_id_test": len(s_id), "n_ood_test": len(s_ood),
                           "k": self.extraction.k, "detector": describe,
                           "density": self.density if factory is None else "custom",
                           "model": self.model.source.get("name", "model")}
                    result.rows.append(row)
                    cells.setdefault(label, []).append((row, (id_name, ood)))
        if self.n_boot:  # each cell's interval from the same joint draws as the means and comparisons
            for method, made in cells.items():
                samples = dict(zip(pairs, result.samples(method)))
                for row, pair in made:
                    low, high = interval(samples[pair])
                    row["auroc_low"], row["auroc_high"] = round(low, 4), round(high, 4)
        result.seconds = time.perf_counter() - t0
        return result
