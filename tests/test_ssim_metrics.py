"""SSIM maps against scikit-image; metrics against scikit-learn."""
import numpy as np
import pytest
import torch
from skimage.metrics import structural_similarity
from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve

from diffpath_core.statistics import ssim_map
from diffpath_core.metrics import (all_metrics, aupr_in, aupr_out, auroc, auroc_interval, bootstrap_aurocs,
                                   fpr_at_tpr, mean_auroc_samples, paired_difference)


def skimage_map(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Channel-averaged SSIM map of (C, H, W) images in [-1, 1]."""
    maps = [structural_similarity(a[c], b[c], full=True, gaussian_weights=True, sigma=1.5,
                                  use_sample_covariance=False, data_range=2.0)[1] for c in range(a.shape[0])]
    return np.mean(maps, axis=0)


def _natural_pairs():
    from diffpath_core.datasets import load_dataset

    clean = load_dataset("fashion_mnist", "test", limit=4, size=32).images
    g = torch.Generator().manual_seed(0)
    noisy = (clean + 0.2 * torch.randn(clean.shape, generator=g)).clamp(-1, 1)
    return clean, noisy


# Measured agreement with scikit-image: 4.5e-7 on random and RGB pairs, 4.4e-5 on natural images (float32
# cancellation in E[x²] − μ² where the image is flat); the tolerances leave a factor of about two.
SSIM_TOLERANCE = {"random": 1e-6, "natural": 1e-4, "rgb": 1e-6}


@pytest.mark.parametrize("kind", ["random", "natural", "rgb"])
def test_ssim_map_matches_skimage(kind):
    g = torch.Generator().manual_seed(3)
    if kind == "random":
        a, b = torch.rand(3, 1, 32, 32, generator=g) * 2 - 1, torch.rand(3, 1, 32, 32, generator=g) * 2 - 1
    elif kind == "natural":
        a, b = _natural_pairs()
    else:
        a = torch.rand(2, 3, 32, 32, generator=g) * 2 - 1
        b = (a + 0.3 * torch.randn(a.shape, generator=g)).clamp(-1, 1)
    ours = ssim_map(a, b).numpy()
    assert ours.shape == (a.shape[0], 1, 32, 32)
    for i in range(a.shape[0]):
        np.testing.assert_allclose(ours[i, 0], skimage_map(a[i].numpy(), b[i].numpy()), rtol=0,
                                   atol=SSIM_TOLERANCE[kind])


def test_metrics_match_sklearn():
    rng = np.random.default_rng(0)
    for _ in range(100):
        a = np.round(rng.normal(1, 1, rng.integers(2, 80)), 1)  # rounding makes ties
        b = np.round(rng.normal(0, 1, rng.integers(2, 80)), 1)
        y, s = np.r_[np.ones(a.size), np.zeros(b.size)], np.r_[a, b]
        assert auroc(a, b) == pytest.approx(roc_auc_score(y, s), abs=1e-12)
        assert aupr_in(a, b) == pytest.approx(average_precision_score(y, s), abs=1e-12)
        assert aupr_out(a, b) == pytest.approx(average_precision_score(1 - y, -s), abs=1e-12)
        fpr, tpr, _ = roc_curve(y, s, drop_intermediate=False)
        assert fpr_at_tpr(a, b) == pytest.approx(fpr[np.searchsorted(tpr, 0.95, side="left")], abs=1e-12)


def test_metrics_extremes_and_errors():
    m = all_metrics([3, 4, 5], [0, 1, 2])
    assert m == {"auroc": 1.0, "fpr95": 0.0, "aupr_in": 1.0, "aupr_out": 1.0}
    assert auroc([0, 1], [2, 3]) == 0.0
    with pytest.raises(ValueError, match="NaN or Inf"):
        auroc([0, np.nan], [1])
    with pytest.raises(ValueError, match="at least one"):
        auroc([], [1])


# ----------------------------------------------------------------------------- intervals

def test_bootstrap_resamples_are_exact_weighted_aurocs():
    """Each resample's AUROC equals scikit-learn's on the same draw (multiplicities as sample weights), ties too."""
    rng = np.random.default_rng(0)
    a, b = np.round(rng.normal(1, 1, 50), 1), np.round(rng.normal(0, 1, 70), 1)
    ours = bootstrap_aurocs(a, b, n_boot=20, seed=3)
    draw = np.random.default_rng(3)
    wa = draw.multinomial(50, np.full(50, 1 / 50), size=20)
    wb = draw.multinomial(70, np.full(70, 1 / 70), size=20)
    y, s = np.r_[np.ones(50), np.zeros(70)], np.r_[a, b]
    expected = [roc_auc_score(y, s, sample_weight=np.r_[wa[i], wb[i]]) for i in range(20)]
    np.testing.assert_allclose(ours, expected, rtol=0, atol=1e-12)


def test_interval_covers_the_true_auroc_at_its_rate():
    """200 simulated draws of 100 ID and 150 OOD scores (unit normals 1 apart: AUROC = Φ(1/√2) = 0.760): the 95 %
    interval holds the true value in at least 90 % of them (measured: 94 %)."""
    from scipy.stats import norm

    rng = np.random.default_rng(0)
    true = norm.cdf(1 / np.sqrt(2))
    covered = [lo <= true <= hi for lo, hi in (auroc_interval(rng.normal(1, 1, 100), rng.normal(0, 1, 150),
                                                              n_boot=1000, seed=i) for i in range(200))]
    assert np.mean(covered) >= 0.90, np.mean(covered)


def test_paired_difference_sees_a_real_gap_and_not_a_fake_one():
    """Method A better than B on every pair: its lead is inside a positive interval; B against a copy of itself
    with tiny noise: an interval around zero. Both methods must score the same images."""
    rng = np.random.default_rng(1)
    ood = [rng.normal(0, 1, 200) for _ in range(4)]
    ids = [rng.normal(0, 1, 200) for _ in range(4)]
    pairs_a = [(i + 1.0, o) for i, o in zip(ids, ood)]   # AUROC about 0.76
    pairs_b = [(i + 0.5, o) for i, o in zip(ids, ood)]   # about 0.64
    gap = paired_difference(pairs_a, pairs_b, n_boot=1000)
    assert 0.05 < gap["low"] < gap["difference"] < gap["high"] and gap["share_a_ahead"] == 1.0
    twin = [(i + 0.5 + 1e-6 * rng.normal(size=200), o) for i, o in zip(ids, ood)]
    tie = paired_difference(twin, pairs_b, n_boot=1000)
    assert tie["low"] <= 0 <= tie["high"]
    with pytest.raises(ValueError, match="same images"):
        paired_difference(pairs_a, [(i[:10], o) for i, o in pairs_b])
    fixed = mean_auroc_samples(pairs_a, n_boot=500)
    assert abs(np.mean(fixed) - np.mean([auroc(*p) for p in pairs_a])) < 0.01
