"""Detection metrics with in-distribution as the positive class and higher score = more in-distribution.

Implemented directly (ranks, thresholds) so the tests can hold them against scikit-learn.
"""
from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict

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

N_BOOT = 2000      # bootstrap resamples behind every interval the book reports
BOOT_SEED = 0
LEVEL = 0.95


def bootstrap_aurocs(score_id, score_ood, n_boot: int = N_BOOT, seed: int = BOOT_SEED) -> np.ndarray:
    """AUROC of ``n_boot`` stratified bootstrap resamples (ID and OOD images each drawn with replacement, their
    counts fixed), exact with ties. Two calls with the same seed and set sizes draw the same images, so scores of
    two methods on the same images give paired resamples.

    Each resample is a vector of multiplicities; its Mann–Whitney count is Σ_i w_i (W_OOD below s_i + ½ W_OOD
    tied with s_i), computed for all resamples at once from the scores' sorted distinct values.
    """
    a, b = _check(score_id, score_ood)
    key = (hashlib.blake2b(a.tobytes() + b"|" + b.tobytes(), digest_size=16).digest(), a.size, n_boot, seed)
    with _memo_lock:
        if key in _memo:
            _memo.move_to_end(key)
            return _memo[key]
    out = _bootstrap_aurocs(a, b, n_boot, seed)
    out.flags.writeable = False  # shared by later calls with the same scores
    with _memo_lock:
        _memo[key] = out
        while len(_memo) > _MEMO_SIZE:
            _memo.popitem(last=False)
    return out


# A book page asks for the same resamples several times (a cell's interval, then the mean over pairs, then each
# paired comparison): they are kept, keyed by the scores' bytes, the sizes, n_boot and seed (16 MB at most).
_MEMO_SIZE = 1024
_memo: OrderedDict = OrderedDict()
_memo_lock = threading.Lock()


def _bootstrap_aurocs(a: np.ndarray, b: np.ndarray, n_boot: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    values, groups = np.unique(np.concatenate([a, b]), return_inverse=True)
    ga, gb = groups[: a.size], groups[a.size:]
    out = np.empty(n_boot)
    for lo in range(0, n_boot, 250):  # blocks of resamples bound the memory at 250 × (n + m) numbers
        r = min(250, n_boot - lo)
        wa = rng.multinomial(a.size, np.full(a.size, 1.0 / a.size), size=r).astype(np.float64)
        wb = rng.multinomial(b.size, np.full(b.size, 1.0 / b.size), size=r).astype(np.float64)
        out[lo:lo + r] = _weighted_mann_whitney(values.size, ga, wa, gb, wb)
    return out


def _weighted_mann_whitney(n_values: int, g_pos: np.ndarray, w_pos: np.ndarray, g_neg: np.ndarray,
                           w_neg: np.ndarray) -> np.ndarray:
    """AUROC of each row of multiplicities: positives and negatives are indices ``g_*`` into ``n_values`` sorted
    distinct scores, ``w_*`` (r, n_*) their weights in r resamples; a tie counts ½. NaN where a side weighs 0."""
    r = w_pos.shape[0]
    per_value = np.bincount((np.arange(r)[:, None] * n_values + g_neg[None, :]).ravel(), weights=w_neg.ravel(),
                            minlength=r * n_values).reshape(r, n_values)  # negatives' weight at each score
    below = np.cumsum(per_value, axis=1) - per_value
    u = (w_pos * (below[:, g_pos] + 0.5 * per_value[:, g_pos])).sum(axis=1)
    total = w_pos.sum(axis=1) * w_neg.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, u / np.where(total > 0, total, 1.0), np.nan)


def interval(samples: np.ndarray, level: float = LEVEL) -> tuple[float, float]:
    """The percentile interval of bootstrap samples at ``level``."""
    tail = (1.0 - level) / 2 * 100
    low, high = np.percentile(samples, [tail, 100 - tail])
    return float(low), float(high)


def auroc_interval(score_id, score_ood, n_boot: int = N_BOOT, seed: int = BOOT_SEED,
                   level: float = LEVEL) -> tuple[float, float]:
    """A ``level`` percentile interval of the AUROC, stratified bootstrap over images (:func:`bootstrap_aurocs`).

    At AUROC 1 (perfect separation) every resample is 1 too and the interval collapses to [1, 1]: it says the
    sample shows no overlap, not that the population has none.
    """
    return interval(bootstrap_aurocs(score_id, score_ood, n_boot, seed), level)


def mean_auroc_samples(score_pairs: list[tuple], n_boot: int = N_BOOT, seed: int = BOOT_SEED,
                       resample_pairs: bool = False) -> np.ndarray:
    """Bootstrap samples of the mean AUROC over several (ID scores, OOD scores) pairs: images are resampled within
    each pair (pair i with seed ``seed + i``, so two methods scored on the same images are paired), and with
    ``resample_pairs`` the pairs themselves are drawn with replacement too (the same draw for every method)."""
    per_pair = np.stack([bootstrap_aurocs(s_id, s_ood, n_boot, seed + i) for i, (s_id, s_ood) in enumerate(score_pairs)])
    if not resample_pairs:
        return per_pair.mean(axis=0)
    draws = np.random.default_rng(seed + 10_000).integers(0, len(score_pairs), (n_boot, len(score_pairs)))
    return per_pair[draws, np.arange(n_boot)[:, None]].mean(axis=1)


def paired_difference(pairs_a: list[tuple], pairs_b: list[tuple], n_boot: int = N_BOOT, seed: int = BOOT_SEED,
                      resample_pairs: bool = True, level: float = LEVEL) -> dict:
    """Mean AUROC of method A minus method B over the same pairs and images, with a paired bootstrap interval
    (images resampled within each pair, the same images for both methods; pairs resampled too unless
    ``resample_pairs`` is False) and the share of resamples in which A is ahead."""
    if len(pairs_a) != len(pairs_b):
        raise ValueError("a paired comparison needs both methods on the same pairs")
    for (a_id, a_ood), (b_id, b_ood) in zip(pairs_a, pairs_b):
        if np.size(a_id) != np.size(b_id) or np.size(a_ood) != np.size(b_ood):
            raise ValueError("a paired comparison needs both methods scored on the same images")
    diff = (mean_auroc_samples(pairs_a, n_boot, seed, resample_pairs)
            - mean_auroc_samples(pairs_b, n_boot, seed, resample_pairs))
    observed = float(np.mean([auroc(*p) for p in pairs_a]) - np.mean([auroc(*p) for p in pairs_b]))
    low, high = interval(diff, level)
    return {"difference": observed, "low": low, "high": high, "share_a_ahead": float(np.mean(diff > 0)),
            "n_pairs": len(pairs_a), "n_boot": n_boot, "seed": seed, "resample_pairs": resample_pairs}


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


def pro_curve(maps, masks) -> tuple[np.ndarray, np.ndarray]:
    """The per-region overlap curve of MVTec AD (Bergmann et al. 2021), as anomalib computes AUPRO.

    Regions are the connected components (8-connected) of each image's mask. At a threshold t the false positive
    rate is the share of all normal pixels at or above t, and the PRO the mean over regions of the share of the
    region's pixels at or above t. Thresholds run over every distinct normal-pixel score (plus one above them
    all), so the curve is exact. Returns (FPR, PRO), FPR increasing.
    """
    from scipy import ndimage

    maps, masks = np.asarray(maps, dtype=np.float64), np.asarray(masks, dtype=bool)
    normal = np.sort(maps[~masks])[::-1]
    if normal.size == 0:
        raise ValueError("AUPRO needs normal pixels")
    regions = []
    for m, mask in zip(maps, masks):
        labelled, count = ndimage.label(mask, structure=np.ones((3, 3)))
        regions += [np.sort(m[labelled == r]) for r in range(1, count + 1)]
    if not regions:
        raise ValueError("AUPRO needs at least one anomalous region")
    thresholds = np.r_[np.inf, np.unique(normal)[::-1]]
    fpr = np.searchsorted(-normal, -thresholds, side="right") / normal.size  # share of normal ≥ t
    pro = np.mean([(r.size - np.searchsorted(r, thresholds, side="left")) / r.size for r in regions], axis=0)
    pro[0] = np.mean([np.mean(r > normal[0]) for r in regions])  # just above every normal pixel: FPR 0
    return fpr, pro


def aupro(maps, masks, fpr_limit: float = 0.3) -> float:
    """Area under the PRO curve up to ``fpr_limit`` (linear interpolation at the limit), divided by the limit:
    1 is perfect, and a map with no information scores about ``fpr_limit / 2``."""
    fpr, pro = pro_curve(maps, masks)
    keep = fpr <= fpr_limit
    x, y = fpr[keep], pro[keep]
    if x[-1] < fpr_limit and keep.sum() < len(fpr):
        nxt = int(keep.sum())
        y_end = np.interp(fpr_limit, [fpr[nxt - 1], fpr[nxt]], [pro[nxt - 1], pro[nxt]])
        x, y = np.r_[x, fpr_limit], np.r_[y, y_end]
    return float(np.trapezoid(y, x) / fpr_limit)


def pixel_auroc_samples(maps, masks, n_boot: int = 200, seed: int = BOOT_SEED) -> np.ndarray:
    """Pixel AUROC of ``n_boot`` bootstrap resamples of the images (each image's pixels go with it), exact with
    ties: the images are the independent units, not the pixels."""
    maps, masks = np.asarray(maps, dtype=np.float64), np.asarray(masks, dtype=bool)
    n = len(maps)
    image_of = np.repeat(np.arange(n), maps[0].size)
    flat, positive = maps.ravel(), masks.ravel()
    values, groups = np.unique(flat, return_inverse=True)
    g_pos, g_neg, i_pos, i_neg = groups[positive], groups[~positive], image_of[positive], image_of[~positive]
    rng = np.random.default_rng(seed)
    out = np.empty(n_boot)
    for b in range(n_boot):  # one resample at a time: a row of weights per pixel is large
        w_image = np.bincount(rng.integers(0, n, n), minlength=n).astype(np.float64)
        out[b] = _weighted_mann_whitney(values.size, g_pos, w_image[i_pos][None], g_neg, w_image[i_neg][None])[0]
    return out
