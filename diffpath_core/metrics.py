"""Detection metrics with in-distribution as the positive class and higher score = more in-distribution.

Implemented directly (ranks, thresholds) so the tests can hold them against scikit-learn.
"""
from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
from scipy.stats import rankdata


def _check(score_id, score_ood) -> tuple[np.ndarray, np.ndarray]:
    a, b = np.asarray(score_id, dtype=np.float64).ravel(), np.asarray(score_ood, dtype=np.float64).ravel()
    if a.size == 0 or b.size == 0:
        raise ValueError("metrics need at least one in-distribution and one out-of-distribution score")
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise ValueError("scores contain NaN or Inf")
    return a, b


def auroc(score_id, score_ood) -> float:
    """Area under the ROC curve: P(score_ID > score_OOD) + ½ P(tie) (Mann–Whitney U)."""
    a, b = _check(score_id, score_ood)
    ranks = rankdata(np.concatenate([a, b]))
    return float((ranks[: a.size].sum() - a.size * (a.size + 1) / 2) / (a.size * b.size))


def fpr_at_tpr(score_id, score_ood, tpr: float = 0.95) -> float:
    """Fraction of OOD accepted by the threshold that keeps at least ``tpr`` of ID (FPR95 by default)."""
    a, b = _check(score_id, score_ood)
    threshold = np.sort(a)[::-1][int(np.ceil(tpr * a.size)) - 1]  # lowest score among the top tpr·n of ID
    return float(np.mean(b >= threshold))


def average_precision(score_pos, score_neg) -> float:
    """Average precision (area under precision–recall, step-wise) with the first argument positive."""
    pos, neg = _check(score_pos, score_neg)
    scores = np.concatenate([pos, neg])
    labels = np.concatenate([np.ones(pos.size), np.zeros(neg.size)])
    order = np.argsort(-scores, kind="mergesort")
    scores, labels = scores[order], labels[order]
    last_of_tie = np.r_[np.diff(scores) != 0, True]  # thresholds at distinct scores
    tp = np.cumsum(labels)[last_of_tie]
    fp = np.cumsum(1 - labels)[last_of_tie]
    precision, recall = tp / (tp + fp), tp / pos.size
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def aupr_in(score_id, score_ood) -> float:
    return average_precision(score_id, score_ood)


def aupr_out(score_id, score_ood) -> float:
    a, b = _check(score_id, score_ood)
    return average_precision(-b, -a)


def all_metrics(score_id, score_ood) -> dict[str, float]:
    """AUROC, FPR at 95% TPR, AUPR-in and AUPR-out in one dict."""
    return {"auroc": auroc(score_id, score_ood), "fpr95": fpr_at_tpr(score_id, score_ood),
            "aupr_in": aupr_in(score_id, score_ood), "aupr_out": aupr_out(score_id, score_ood)}


# ----------------------------------------------------------------------------- uncertainty
#
# A bootstrap draw resamples each distinct image set once: every pair, kind or task that contains that set, and
# every method scored on it, sees the same resampled images in that draw (a joint bootstrap). So a mean over
# pairs that share their ID-test images carries the covariance those pairs share, and two methods on the same
# images are compared on the same resamples (paired). Each set is resampled with its size fixed (within each
# class when it has strata): the stratified bootstrap. Draw b of a set depends on (seed, the set's key, b) only,
# never on which other sets, tasks or methods are computed with it.

N_BOOT = 2000      # bootstrap resamples behind every interval the book reports
BOOT_SEED = 0
LEVEL = 0.95


@dataclass(frozen=True)
class Side:
    """One side of an AUROC: the ``scores`` of some images of the image set ``set`` (a key naming it), at positions
    ``index`` of that set (None: all of it, in order). Sides with the same key share one draw per resample: the
    same images, or images made one by one from them (a corruption of image i resampled with image i)."""

    set: str
    scores: np.ndarray
    index: np.ndarray | None = None


class SetDraws:
    """The bootstrap draws of one image set, resample after resample: :meth:`next` gives the counts of the next
    ``r`` resamples, (r, n) float32 (whole counts, exact). Each resample draws n indices with replacement (within
    each stratum, its size kept, when ``strata`` gives each image's class) from one generator seeded by (seed, the
    set's key) and counts them, so resample b is the same whatever blocks the resamples are asked for in."""

    def __init__(self, key: str, n: int, seed: int = BOOT_SEED, strata=None):
        self.n = int(n)
        self.rng = np.random.default_rng([int(seed), int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "little")])
        self.groups = None
        if strata is not None:
            strata = np.asarray(strata)
            if len(strata) != self.n:
                raise ValueError(f"set {key!r}: {len(strata)} strata labels for {self.n} images")
            self.groups = [np.flatnonzero(strata == u) for u in np.unique(strata)]

    def next(self, r: int) -> np.ndarray:
        n = self.n
        if self.groups is None:
            drawn = self.rng.integers(0, n, (r, n))  # the same numbers as r draws of n, one after another
        else:
            drawn = np.stack([np.concatenate([g[self.rng.integers(0, len(g), len(g))] for g in self.groups])
                              for _ in range(r)])
        rows = (np.arange(r)[:, None] * n + drawn).ravel()
        return np.bincount(rows, minlength=r * n).reshape(r, n).astype(np.float32)


def resample_counts(key: str, n: int, n_boot: int = N_BOOT, seed: int = BOOT_SEED, strata=None) -> np.ndarray:
    """How often each of the ``n`` images of set ``key`` is drawn in each of ``n_boot`` resamples, (n_boot, n): the
    draws :func:`joint_bootstrap` makes for that set (:class:`SetDraws`)."""
    return SetDraws(key, n, seed, strata).next(n_boot)


class _Prepared:
    """A task's scores sorted once. Each resample's Mann–Whitney count is then one cumulative sum of weights over
    the larger side, in score order, read at the smaller side's positions: for each image of the smaller side,
    the weight of the other side below it (or above it) plus half the weight tied with it."""

    def __init__(self, pos: Side, neg: Side):
        a, b = _check(pos.scores, neg.scores)
        self.pos, self.neg = pos, neg
        self.flip = a.size > b.size  # cumulate the positives, read them at the negatives
        big, small = (a, b) if self.flip else (b, a)
        self.order = np.argsort(big, kind="stable")
        ordered = big[self.order]
        self.left = np.searchsorted(ordered, small, side="left")    # the larger side's images strictly below
        self.right = np.searchsorted(ordered, small, side="right")  # … and those tied with it
        self.dtype = np.float32 if big.size < 2**24 else np.float64  # whole counts: float32 is exact below 2^24

    def aurocs(self, w_pos: np.ndarray, w_neg: np.ndarray) -> np.ndarray:
        """AUROC of each row of multiplicities ((r, n_pos), (r, n_neg)); a tie counts ½; NaN where a side weighs 0."""
        w_big, w_small = (w_pos, w_neg) if self.flip else (w_neg, w_pos)
        cum = np.zeros((len(w_big), len(self.order) + 1), dtype=self.dtype)
        np.cumsum(w_big[:, self.order], axis=1, out=cum[:, 1:])
        twice = cum[:, self.left].astype(np.float64) + cum[:, self.right]  # 2 × (below + ½ tied), exact
        u = np.einsum("rn,rn->r", w_small.astype(np.float64), twice) / 2
        total = w_pos.sum(axis=1, dtype=np.float64) * w_neg.sum(axis=1, dtype=np.float64)
        if self.flip:  # u counted positives below each negative: the pairs won are the rest
            u = total - u
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(total > 0, u / np.where(total > 0, total, 1.0), np.nan)


def _set_sizes(tasks, strata: dict) -> dict[str, int]:
    sizes = {key: len(labels) for key, labels in strata.items()}
    for side in (s for task in tasks for s in task):
        if side.index is None:
            n = len(np.asarray(side.scores).ravel())
            if sizes.setdefault(side.set, n) != n:
                raise ValueError(f"set {side.set!r} appears with {sizes[side.set]} and with {n} images: one key, "
                                 "one image set")
    for side in (s for task in tasks for s in task):
        if side.set not in sizes:
            raise ValueError(f"set {side.set!r}: give its size (strata) when every side indexes into it")
        if side.index is not None and len(side.index) and np.max(side.index) >= sizes[side.set]:
            raise ValueError(f"set {side.set!r}: index beyond its {sizes[side.set]} images")
        if side.index is not None and len(side.index) != len(np.asarray(side.scores).ravel()):
            raise ValueError(f"set {side.set!r}: {len(side.index)} indices for {len(side.scores)} scores")
    return sizes


def joint_bootstrap(tasks, n_boot: int = N_BOOT, seed: int = BOOT_SEED, strata: dict | None = None) -> np.ndarray:
    """AUROC of every task in ``n_boot`` joint resamples, (n_tasks, n_boot): a task is a (positive, negative) pair
    of :class:`Side`; each distinct set is resampled once per draw for all tasks (see the section's comment).
    Exact with ties. ``strata`` maps a set's key to its images' classes (resampled within each class)."""
    tasks = [_as_task(t) for t in tasks]
    strata = dict(strata or {})
    key = _memo_key(tasks, n_boot, seed, strata)
    with _memo_lock:
        if key in _memo:
            _memo.move_to_end(key)
            return _memo[key]
    sizes = _set_sizes(tasks, strata)
    prepared = [_Prepared(pos, neg) for pos, neg in tasks]
    out = np.empty((len(tasks), n_boot))
    block = max(1, min(250, int(4e6 // max(sizes.values()))))  # bounds memory at a few (block × n) arrays
    draws = {k: SetDraws(k, n, seed, strata.get(k)) for k, n in sizes.items()}
    for lo in range(0, n_boot, block):
        r = min(block, n_boot - lo)
        counts = {k: d.next(r) for k, d in draws.items()}

        def weights(side):
            c = counts[side.set]
            return c if side.index is None else c[:, side.index]

        for t, task in enumerate(prepared):
            out[t, lo:lo + r] = task.aurocs(weights(task.pos), weights(task.neg))
    out.flags.writeable = False  # shared by later calls with the same tasks
    with _memo_lock:
        _memo[key] = out
        while len(_memo) > _MEMO_SIZE:
            _memo.popitem(last=False)
    return out


def _as_task(task) -> tuple[Side, Side]:
    if len(task) != 2 or not all(isinstance(s, Side) for s in task):
        raise TypeError("a bootstrap task is a (positive, negative) pair of metrics.Side, each naming its image set: "
                        "Side('id-test', scores) — sides of one set share its resampled images")
    return tuple(task)


def _memo_key(tasks, n_boot, seed, strata) -> bytes:
    h = hashlib.blake2b(digest_size=16)
    for side in (s for task in tasks for s in task):
        h.update(side.set.encode() + b"|" + np.asarray(side.scores, dtype=np.float64).tobytes() + b"|")
        h.update(b"all" if side.index is None else np.asarray(side.index, dtype=np.int64).tobytes())
    for k in sorted(strata):
        h.update(k.encode() + np.asarray(strata[k]).tobytes())
    return h.digest() + repr((n_boot, seed)).encode()


# A book page asks for the same resamples several times (a cell's interval, then the mean over pairs, then each
# paired comparison): they are kept, keyed by the tasks' sets, scores and indices, n_boot and seed.
_MEMO_SIZE = 256
_memo: OrderedDict = OrderedDict()
_memo_lock = threading.Lock()


def bootstrap_aurocs(score_id, score_ood, n_boot: int = N_BOOT, seed: int = BOOT_SEED) -> np.ndarray:
    """AUROC of ``n_boot`` stratified bootstrap resamples of one ID and one OOD set (each drawn with replacement,
    its size fixed), exact with ties: :func:`joint_bootstrap` of one task."""
    return joint_bootstrap([(Side("ID", score_id), Side("OOD", score_ood))], n_boot, seed)[0]


def interval(samples: np.ndarray, level: float = LEVEL) -> tuple[float, float]:
    """The percentile interval of bootstrap samples at ``level``. Resamples whose AUROC is undefined (NaN: no positive
    or no negative drawn, as when few images carry a defect) are left out: the interval is conditional on a
    defined AUROC. All undefined is an error."""
    samples = np.asarray(samples, dtype=np.float64)
    if np.isnan(samples).all():
        raise ValueError("no bootstrap resample has a defined AUROC (every one drew no positive or no negative)")
    tail = (1.0 - level) / 2 * 100
    low, high = np.nanpercentile(samples, [tail, 100 - tail])
    return float(low), float(high)


def auroc_interval(score_id, score_ood, n_boot: int = N_BOOT, seed: int = BOOT_SEED,
                   level: float = LEVEL) -> tuple[float, float]:
    """A ``level`` percentile interval of the AUROC, stratified bootstrap over images (:func:`bootstrap_aurocs`).

    At AUROC 1 (perfect separation) every resample is 1 too and the interval collapses to [1, 1]: it says the
    sample shows no overlap, not that the population has none.
    """
    return interval(bootstrap_aurocs(score_id, score_ood, n_boot, seed), level)


def mean_auroc_samples(tasks, n_boot: int = N_BOOT, seed: int = BOOT_SEED, resample_pairs: bool = False,
                       strata: dict | None = None) -> np.ndarray:
    """Bootstrap samples of the mean AUROC over tasks ((positive, negative) :class:`Side` pairs), jointly resampled
    (:func:`joint_bootstrap`); with ``resample_pairs`` the tasks themselves are drawn with replacement too (the
    same draw for every method, since it depends on the seed and the number of tasks only)."""
    per_task = joint_bootstrap(tasks, n_boot, seed, strata)
    if not resample_pairs:
        return per_task.mean(axis=0)
    # tasks in an order fixed by their sets, so the tasks drawn do not depend on the order they were listed in
    order = sorted(range(len(per_task)), key=lambda t: (_as_task(tasks[t])[0].set, _as_task(tasks[t])[1].set, t))
    draws = np.random.default_rng(seed + 10_000).integers(0, len(per_task), (n_boot, len(per_task)))
    return per_task[order][draws, np.arange(n_boot)[:, None]].mean(axis=1)


def paired_difference(tasks_a, tasks_b, n_boot: int = N_BOOT, seed: int = BOOT_SEED, resample_pairs: bool = True,
                      level: float = LEVEL, strata: dict | None = None) -> dict:
    """Mean AUROC of method A minus method B over the same tasks and images, with a paired bootstrap interval (one
    joint draw of the image sets for both methods; the tasks resampled too unless ``resample_pairs`` is False) and
    the share of resamples in which A is ahead."""
    tasks_a, tasks_b = [_as_task(t) for t in tasks_a], [_as_task(t) for t in tasks_b]
    if len(tasks_a) != len(tasks_b):
        raise ValueError("a paired comparison needs both methods on the same pairs")
    for ta, tb in zip(tasks_a, tasks_b):
        for sa, sb in zip(ta, tb):
            same_index = (sa.index is None and sb.index is None) or (
                sa.index is not None and sb.index is not None and np.array_equal(sa.index, sb.index))
            if sa.set != sb.set or np.size(sa.scores) != np.size(sb.scores) or not same_index:
                raise ValueError("a paired comparison needs both methods scored on the same images")
    diff = (mean_auroc_samples(tasks_a, n_boot, seed, resample_pairs, strata)
            - mean_auroc_samples(tasks_b, n_boot, seed, resample_pairs, strata))
    observed = float(np.mean([auroc(a.scores, b.scores) for a, b in tasks_a])
                     - np.mean([auroc(a.scores, b.scores) for a, b in tasks_b]))
    low, high = interval(diff, level)
    defined = diff[~np.isnan(diff)]  # as the interval: over the resamples whose AUROCs are defined
    return {"difference": observed, "low": low, "high": high, "share_a_ahead": float(np.mean(defined > 0)),
            "n_pairs": len(tasks_a), "n_boot": n_boot, "seed": seed, "resample_pairs": resample_pairs}


# ----------------------------------------------------------------------------- anomaly maps

def pixel_auroc(maps, masks) -> float:
    """AUROC of anomalous pixels against normal ones over every pixel of every image (anomalib's pixel AUROC;
    higher map value = more anomalous)."""
    maps, masks = np.asarray(maps, dtype=np.float64).ravel(), np.asarray(masks, dtype=bool).ravel()
    return auroc(maps[masks], maps[~masks])


def image_auroc(defective_maps, clean_maps) -> float:
    """AUROC of each image's map maximum, defective images against clean ones."""
    top = lambda m: np.asarray(m, dtype=np.float64).reshape(len(m), -1).max(axis=1)  # noqa: E731
    return auroc(top(defective_maps), top(clean_maps))


def pro_curve(maps, masks, fpr_limit: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The per-region overlap curve of MVTec AD (Bergmann et al. 2021), as anomalib computes AUPRO.

    Regions are the connected components (8-connected) of each image's mask. At a threshold t the false positive
    rate is the share of all normal pixels at or above t, and the PRO the mean over regions of the share of the
    region's pixels at or above t. Thresholds run over every distinct map value, normal and anomalous (plus one
    above them all), so the curve is exact: a value found only in regions raises the PRO at a constant FPR.
    With ``fpr_limit`` the curve stops at the first threshold whose FPR exceeds it. Returns (FPR, PRO), FPR
    increasing.
    """
    from scipy import ndimage

    maps, masks = np.asarray(maps, dtype=np.float64), np.asarray(masks, dtype=bool)
    normal = np.sort(maps[~masks])
    if normal.size == 0:
        raise ValueError("AUPRO needs normal pixels")
    regions = []
    for m, mask in zip(maps, masks):
        labelled, count = ndimage.label(mask, structure=np.ones((3, 3)))
        regions += [np.sort(m[labelled == r]) for r in range(1, count + 1)]
    if not regions:
        raise ValueError("AUPRO needs at least one anomalous region")
    thresholds = np.r_[np.inf, np.unique(maps)[::-1]]
    fpr = (normal.size - np.searchsorted(normal, thresholds, side="left")) / normal.size  # share of normal ≥ t
    if fpr_limit is not None and np.any(fpr > fpr_limit):
        stop = int(np.argmax(fpr > fpr_limit)) + 1
        thresholds, fpr = thresholds[:stop], fpr[:stop]
    pro = np.zeros(len(thresholds))
    for r in regions:
        pro += (r.size - np.searchsorted(r, thresholds, side="left")) / r.size
    return fpr, pro / len(regions)


def aupro(maps, masks, fpr_limit: float = 0.3) -> float:
    """Area under the PRO curve up to ``fpr_limit`` (linear interpolation at the limit), divided by the limit:
    1 is perfect, and a map with no information scores about ``fpr_limit / 2``."""
    fpr, pro = pro_curve(maps, masks, fpr_limit)
    keep = fpr <= fpr_limit
    x, y = fpr[keep], pro[keep]
    if x[-1] < fpr_limit and keep.sum() < len(fpr):
        nxt = int(keep.sum())
        y_end = np.interp(fpr_limit, [fpr[nxt - 1], fpr[nxt]], [pro[nxt - 1], pro[nxt]])
        x, y = np.r_[x, fpr_limit], np.r_[y, y_end]
    return float(np.trapezoid(y, x) / fpr_limit)


def pixel_auroc_samples(maps, masks, n_boot: int = 200, seed: int = BOOT_SEED, units=None,
                        set_key: str = "images") -> np.ndarray:
    """Pixel AUROC of ``n_boot`` bootstrap resamples of the images (each image's pixels go with it), exact with
    ties: the images are the independent units, not the pixels.

    ``units`` gives each map's unit (default: each map its own); maps of one unit are drawn together (a defective
    image and the clean image it was made from). Units are resampled as the set ``set_key``
    (:class:`SetDraws`): every call with the same key, seed and number of units draws the same units, so
    pixel AUROCs of several defect kinds or map forms made from one set of images are resampled jointly.
    """
    maps, masks = np.asarray(maps, dtype=np.float64), np.asarray(masks, dtype=bool)
    units = np.arange(len(maps)) if units is None else np.asarray(units, dtype=np.int64)
    if len(units) != len(maps):
        raise ValueError(f"{len(units)} units for {len(maps)} maps")
    n_units = int(units.max()) + 1
    unit_of = np.repeat(units, maps[0].size)
    flat, positive = maps.ravel(), masks.ravel()
    task = _Prepared(Side(set_key, flat[positive]), Side(set_key, flat[~positive]))
    u_pos, u_neg = unit_of[positive], unit_of[~positive]
    out = np.empty(n_boot)
    block = max(1, int(4e6 // flat.size))
    draws = SetDraws(set_key, n_units, seed)
    for lo in range(0, n_boot, block):
        r = min(block, n_boot - lo)
        counts = draws.next(r)
        out[lo:lo + r] = task.aurocs(counts[:, u_pos], counts[:, u_neg])
    return out
