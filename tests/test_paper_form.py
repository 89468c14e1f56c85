"""DiffPathV2's paper form against an independent computation from the trajectory maps, and the names it owns."""
import numpy as np
import pytest
import torch
from skimage.metrics import structural_similarity
from sklearn.mixture import GaussianMixture
from sklearn.model_selection import GridSearchCV, KFold
from sklearn.neighbors import KernelDensity
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from diffpath_core import DEFAULT_V2, DiffPath, DiffPathV2, DiffPathV2Variant, PaperForm, VariantFormulation, invert
from diffpath_core.detectors import GMMDetector, KDEDetector, density_model
from diffpath_core.evaluate import METHODS, VARIANTS, make_method
from diffpath_core.trajectory import content_seeded_noise

K = 4
FORMS = [PaperForm(noise, pair, weight, lam)
         for noise in ("path", "fresh") for pair in ("image", "noise")
         for weight, lam in (("amplify", 1.0), ("amplify", 2.5), ("ssim", 0.0), ("none", 0.0))]


def _images():
    g = torch.Generator().manual_seed(11)
    smooth = torch.nn.functional.avg_pool2d(torch.rand(5, 1, 16, 16, generator=g) * 2 - 1, 3, 1, 1)
    return (smooth * 1.5).clamp(-1, 1)


def _d_map(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(1 − SSIM)/2 per pixel, channel-averaged, from scikit-image; a, b are (C, H, W)."""
    maps = [structural_similarity(a[c], b[c], full=True, gaussian_weights=True, sigma=1.5,
                                  use_sample_covariance=False, data_range=2.0)[1] for c in range(a.shape[0])]
    return (1.0 - np.mean(maps, axis=0)) / 2.0


def _by_hand(model, x0: torch.Tensor, noise: str) -> dict[str, np.ndarray]:
    """x0, the true noise ε̃_k and the model's ε_k, x̂0_k per step, (N, K, C, H, W) float64, computed here."""
    sched = model.schedule(K)
    a = np.array(sched.alphas_cumprod)
    if noise == "path":
        traj = invert(model, x0, K)
        xk, eps, x0_hat = (t.double().numpy() for t in (traj.x, traj.eps, traj.x0_hat))
        x0n = x0.double().numpy()
        true = (xk - np.sqrt(a)[None, :, None, None, None] * x0n[:, None]) / np.sqrt(1 - a)[None, :, None, None, None]
        return {"x0": x0n, "true": true, "eps": eps, "x0_hat": x0_hat}
    n = content_seeded_noise(x0, K, seed=0)
    eps, x0_hat = [], []
    for i in range(K):  # one forward-noised copy per step; clip x̂0, re-derive ε, as the trajectory does
        xt = float(np.sqrt(a[i])) * x0 + float(np.sqrt(1 - a[i])) * n[:, i]
        with torch.no_grad():
            e = model.predict_eps(xt, sched.net_timesteps[i]).double()
        xh = ((xt.double() - np.sqrt(1 - a[i]) * e) / np.sqrt(a[i])).clamp(-1, 1)
        eps.append(((xt.double() - np.sqrt(a[i]) * xh) / np.sqrt(1 - a[i])).numpy())
        x0_hat.append(xh.numpy())
    return {"x0": x0.double().numpy(), "true": n.double().numpy(), "eps": np.stack(eps, 1),
            "x0_hat": np.stack(x0_hat, 1)}


def _features_by_hand(m: dict[str, np.ndarray], f: PaperForm) -> np.ndarray:
    e = m["eps"] - m["true"] if f.error == "score" else m["eps"]
    n, k = e.shape[:2]
    if f.ssim_pair == "image":
        d = np.array([[_d_map(m["x0"][i], m["x0_hat"][i, s]) for s in range(k)] for i in range(n)])
    else:
        d = np.array([[_d_map(m["true"][i, s], m["eps"][i, s]) for s in range(k)] for i in range(n)])
    w = {"amplify": 1 + f.lam * d, "ssim": d, "none": np.ones_like(d)}[f.weight][:, :, None]
    big_e = w * e
    d_e = k * (big_e[:, 1:] - big_e[:, :-1])
    return np.column_stack([(t ** p).reshape(n, -1).sum(1) for t in (big_e, d_e) for p in (1, 2, 3)])


@pytest.mark.parametrize("noise", ["path", "fresh"])
def test_paper_form_features_match_an_independent_computation(tiny_model, noise):
    x0 = _images()
    maps = _by_hand(tiny_model, x0, noise)
    for f in [f for f in FORMS if f.noise == noise] + [PaperForm(noise, "image", "amplify", 1.0, error="eps")]:
        ours = DiffPathV2(tiny_model, form=f, k=K, progress=False).features(x0)
        expected = _features_by_hand(maps, f)
        assert ours.shape == (5, 6)
        # SSIM (kornia vs scikit-image) agrees to ~1e-4 per pixel; the error maps to float32 rounding
        scale = np.abs(expected).max(axis=0) + 1e-12
        np.testing.assert_allclose(ours / scale, expected / scale, atol=2e-4, err_msg=f.label())


def test_switches_change_the_features(tiny_model):
    """Each switch reads a different map: no two forms of FORMS give the same features (bar w = 1 over pairs)."""
    x0 = _images()
    feats = {f: DiffPathV2(tiny_model, form=f, k=K, progress=False).features(x0) for f in FORMS}
    distinct = {f: v for f, v in feats.items() if not (f.weight == "none" and f.ssim_pair == "noise")}
    values = list(distinct.values())
    for i in range(len(values)):
        for j in range(i + 1, len(values)):
            assert not np.allclose(values[i], values[j], rtol=1e-6), (list(distinct)[i], list(distinct)[j])
    same = feats[PaperForm("path", "noise", "none", 0.0)]
    np.testing.assert_allclose(same, feats[PaperForm("path", "image", "none", 0.0)])


def test_fresh_noise_is_seeded_by_image_content_not_by_batch():
    x = _images()
    whole = content_seeded_noise(x, 3, seed=0)
    np.testing.assert_array_equal(whole[2:4].numpy(), content_seeded_noise(x[2:4], 3, seed=0).numpy())
    assert not torch.equal(whole, content_seeded_noise(x, 3, seed=1))
    assert abs(float(whole.std()) - 1.0) < 0.05


def test_names_belong_to_what_they_claim(tiny_model):
    assert DiffPathV2(tiny_model, k=2, progress=False).features(_images()).shape == (5, 6)
    assert DiffPathV2(tiny_model, k=2).name == "DiffPathV2"
    assert DiffPathV2(tiny_model, form=PaperForm(weight="none"), k=2).name.startswith("DiffPathV2 (")
    variant = DiffPathV2Variant(tiny_model, k=2)
    assert variant.name == "DiffPathV2-PS"
    assert DiffPathV2Variant(tiny_model, formulation=VariantFormulation(), k=2).name.startswith("variant (")
    with pytest.raises(TypeError, match="DiffPathV2Variant"):
        DiffPathV2(tiny_model, form=VariantFormulation(), k=2)
    assert "DiffPathV2" in METHODS and "DiffPathV2-PS" in VARIANTS and "DiffPathV2-PS" not in METHODS
    assert type(make_method("DiffPathV2")) is DiffPathV2
    assert type(make_method("DiffPathV2-PS")) is DiffPathV2Variant


def test_reference_density_is_diffpaths_grid():
    """GMMDetector.reference() is the official eval_6d.py search, built here independently with scikit-learn:
    the same grid, with its 10 folds drawn at random (as the official code's shuffled DataLoader made them) over
    the rows in an order fixed by their values."""
    rng = np.random.default_rng(0)
    x = np.r_[rng.normal(0, 1, (300, 3)), rng.normal(4, 0.5, (300, 3))] * [1.0, 10.0, 0.1]
    ours = GMMDetector.reference().fit(x)
    rows = x[np.lexsort(x.T[::-1])]
    official = GridSearchCV(Pipeline([("scaler", StandardScaler()), ("gmm", GaussianMixture(max_iter=200,
                                                                                            random_state=0))]),
                            {"gmm__n_components": [50, 100],
                             "gmm__covariance_type": ["full", "tied", "diag", "spherical"]},
                            cv=KFold(10, shuffle=True, random_state=0)).fit(rows)
    assert len(ours.cv_results_["params"]) == 8
    assert ours.best_params_ == {k.split("__")[1]: v for k, v in official.best_params_.items()}
    np.testing.assert_allclose(ours.cv_results_["mean_test_score"], official.cv_results_["mean_test_score"])
    y = rng.normal(2, 2, (20, 3))
    np.testing.assert_allclose(ours.score_samples(y), official.best_estimator_.score_samples(y))
    stat = rng.gamma(4.0, 20.0, 200)
    kde = KDEDetector.reference().fit(stat)
    np.testing.assert_allclose(kde.score_samples(stat[:10]),
                               KernelDensity(bandwidth=5.0).fit(stat[:, None]).score_samples(stat[:10, None]))
    assert kde.describe() == "Gaussian KDE, bandwidth 5 (raw)"
    assert isinstance(density_model("gmm", "reference"), GMMDetector)
    with pytest.raises(ValueError, match="density must be one of"):
        density_model("gmm", "huge")


def test_detectors_take_the_named_density(tiny_model):
    assert DiffPath(tiny_model, "1d", k=2, density="reference").new_density().bandwidth == 5.0
    assert DiffPathV2(tiny_model, k=2, density="reference").new_density().components == (50, 100)
    assert DiffPathV2(tiny_model, k=2).new_density().components == (1, 2, 4, 8, 16)
