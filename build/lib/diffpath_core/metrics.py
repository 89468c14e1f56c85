"""Detection metrics with in-distribution as the positive class and higher score = more in-distribution.

Implemented directly (ranks, thresholds) so the tests can hold them against scikit-learn.
"""
from __future__ import annotations

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
