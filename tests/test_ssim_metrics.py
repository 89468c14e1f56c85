"""SSIM maps against scikit-image; metrics against scikit-learn."""
import numpy as np
import pytest
import torch
from skimage.metrics import structural_similarity
from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve

from diffpath_core.statistics import ssim_map
from diffpath_core.metrics import all_metrics, aupr_in, aupr_out, auroc, fpr_at_tpr


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
        np.testing.assert_allclose(ours[i, 0], skimage_map(a[i].numpy(), b[i].numpy()), atol=1e-3)


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
