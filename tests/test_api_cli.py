"""The three-line API, the detectors, the evaluation table and the command line, on a tiny model."""
import numpy as np
import pytest
import torch
from sklearn.model_selection import GridSearchCV, KFold
from sklearn.neighbors import KernelDensity

from diffpath_core import DiffPath, DiffPathV2, DiffPathV2Variant, VariantFormulation, auroc
from diffpath_core.cli import main
from diffpath_core.detectors import GMMDetector, KDEDetector
from diffpath_core import invert
from diffpath_core.features import amplified_error, variant_features
from diffpath_core.statistics import dissimilarity_maps, score_error


def _sets():
    """ID: smooth images; OOD: other smooth images with mean-preserving noise (σ = 0.3), so neither the image mean
    nor its border tells them apart."""
    g = torch.Generator().manual_seed(0)
    smooth = lambda n: torch.nn.functional.avg_pool2d(torch.rand(n, 1, 16, 16, generator=g) * 2 - 1, 3, 1, 1)  # noqa
    train, test = smooth(64).clamp(-1, 1) * 0.6, smooth(32).clamp(-1, 1) * 0.6
    noisy = (smooth(32) * 0.6 + 0.3 * torch.randn(32, 1, 16, 16, generator=g)).clamp(-1, 1)
    return train, test, noisy


@pytest.mark.parametrize("make", [lambda m: DiffPath(m, "1d", k=4, progress=False),
                                  lambda m: DiffPath(m, "6d", k=4, progress=False),
                                  lambda m: DiffPathV2(m, k=4, progress=False),
                                  lambda m: DiffPathV2Variant(m, k=4, progress=False)])
def test_three_line_api_detects_without_order_effects(tiny_model, make):
    """fit / score_samples end to end: ID scores above OOD scores (AUROC, measured 0.96–1.0 with this random
    network), each image's score its own (a permuted test set gives the permuted scores) and the fit blind to the
    order of the training images (a permuted training set gives the same scores)."""
    train, test, noisy = _sets()
    det = make(tiny_model).fit(train)
    s_id, s_ood = det.score_samples(test), det.score_samples(noisy)
    assert s_id.shape == (32,) and np.isfinite(s_id).all()
    assert auroc(s_id, s_ood) > 0.9
    g = torch.Generator().manual_seed(5)
    perm = torch.randperm(len(test), generator=g)
    np.testing.assert_array_equal(det.score_samples(test[perm]), s_id[perm.numpy()])
    refit = make(tiny_model).fit(train[torch.randperm(len(train), generator=g)])
    np.testing.assert_array_equal(refit.score_samples(test), s_id)


def test_unfitted_detector_says_so(tiny_model):
    with pytest.raises(RuntimeError, match="not fitted"):
        DiffPathV2(tiny_model, k=2, progress=False).score_samples(torch.zeros(2, 1, 16, 16))


def test_v2_components_switch(tiny_model):
    train, _, _ = _sets()
    stats = DiffPath(tiny_model, k=4, progress=False).path_statistics(train)
    off = amplified_error(stats, VariantFormulation(ssim="off"))
    prod = amplified_error(stats, VariantFormulation(ssim="product"))
    amp = amplified_error(stats, VariantFormulation(ssim="amplify", lam=2.0))
    # against the maps themselves, reduced here: Σ_pixels (1 + 2D) r² and D r² per image and step
    traj = invert(tiny_model, train, 4)
    r2 = (score_error(traj).double() ** 2).numpy()
    d = dissimilarity_maps(traj).double().numpy()
    np.testing.assert_allclose(off, r2.sum((2, 3, 4)), rtol=1e-5)
    np.testing.assert_allclose(prod, (d * r2).sum((2, 3, 4)), rtol=1e-5)
    np.testing.assert_allclose(amp, ((1 + 2.0 * d) * r2).sum((2, 3, 4)), rtol=1e-5)
    assert (prod <= off + 1e-9).all(), "D ∈ [0, 1] so D·r² ≤ r²"
    eps = amplified_error(stats, VariantFormulation(error="eps", ssim="off"))
    np.testing.assert_allclose(eps, stats["eps_s2"])
    assert variant_features(stats, VariantFormulation(dims="1d")).shape == (64, 1)
    assert variant_features(stats, VariantFormulation(aggregate="per_step")).shape == (64, 8)
    with pytest.raises(ValueError, match="per-step"):
        VariantFormulation(aggregate="per_step", dims="1d")


def test_detectors_choose_by_cross_validation():
    rng = np.random.default_rng(0)
    two_blobs = np.r_[rng.normal(-3, 0.3, (200, 2)), rng.normal(3, 0.3, (200, 2))]
    gmm = GMMDetector(components=(1, 2, 4), covariance_types=("full",), cv=3).fit(two_blobs)
    assert gmm.best_params_["n_components"] >= 2
    assert gmm.score_samples([[3, 3]])[0] > gmm.score_samples([[0, 0]])[0]
    sample = rng.normal(0, 1, 300)
    kde = KDEDetector().fit(sample)
    z = np.sort((sample - sample.mean()) / sample.std())  # the detector's standardisation and row order, done here
    independent = GridSearchCV(KernelDensity(), {"bandwidth": list(kde.grid)},
                               cv=KFold(5, shuffle=True, random_state=0)).fit(z[:, None])
    assert kde.bandwidth_ == independent.best_params_["bandwidth"]
    assert kde.bandwidth_ not in (min(kde.grid), max(kde.grid)), "a unit normal's CV bandwidth is inside the grid"
    assert kde.score_samples([0.0])[0] > kde.score_samples([5.0])[0]
    with pytest.raises(ValueError, match="NaN or Inf"):
        KDEDetector().fit([1.0, np.nan, 2.0])


def test_density_work_in_this_process_runs_on_one_blas_thread(monkeypatch):
    """The refit of the chosen GMM and every score run with one BLAS thread, whatever the caller allows (two threads
    made a 20-D GMM fit 60× slower on this project's machine); the caller's setting comes back afterwards."""
    from sklearn.mixture import GaussianMixture
    from threadpoolctl import threadpool_info, threadpool_limits

    def blas_threads():
        return max(i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas")

    seen, real_fit, real_score = [], GaussianMixture.fit, GaussianMixture.score_samples
    monkeypatch.setattr(GaussianMixture, "fit", lambda self, *a, **k: (seen.append(blas_threads()),
                                                                       real_fit(self, *a, **k))[1])
    monkeypatch.setattr(GaussianMixture, "score_samples", lambda self, *a, **k: (seen.append(blas_threads()),
                                                                                 real_score(self, *a, **k))[1])
    x = np.random.default_rng(0).normal(size=(120, 3))
    with threadpool_limits(2, user_api="blas"):
        gmm = GMMDetector(components=(1, 2), covariance_types=("full",), cv=3, n_jobs=1).fit(x)
        gmm.score_samples(x[:5])
        assert blas_threads() == 2, "the caller's limit is restored"
    assert seen and set(seen) == {1}, seen


def test_cross_validation_folds_ignore_the_order_of_the_images():
    """Three clusters sorted by cluster (a folder sorted by class): unshuffled 3-fold CV holds out whole clusters
    and picks one diagonal component; shuffled folds pick four tied ones. The detectors now pick the shuffled
    choice (an independent scikit-learn search with KFold(shuffle=True)) whatever the order of the rows, and
    give the same density. The same holds for the KDE's bandwidth."""
    from sklearn.mixture import GaussianMixture
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(c, 0.5, (150, 6)) for c in rng.normal(0, 3, (3, 6))])  # sorted by cluster
    pipe = Pipeline([("scaler", StandardScaler()), ("gmm", GaussianMixture(random_state=0, reg_covar=1e-5))])
    grid = {"gmm__n_components": [1, 2, 4, 8, 16], "gmm__covariance_type": ["full", "tied", "diag", "spherical"]}
    unshuffled = GridSearchCV(pipe, grid, cv=3, error_score=-np.inf).fit(x).best_params_
    rows = x[np.lexsort(x.T[::-1])]
    shuffled = GridSearchCV(pipe, grid, cv=KFold(3, shuffle=True, random_state=0), error_score=-np.inf).fit(rows)
    assert unshuffled == {"gmm__covariance_type": "diag", "gmm__n_components": 1}
    assert shuffled.best_params_ == {"gmm__covariance_type": "tied", "gmm__n_components": 4}
    probe = rng.normal(0, 3, (5, 6))
    for order in (np.arange(len(x)), rng.permutation(len(x)), np.arange(len(x))[::-1]):
        gmm = GMMDetector().fit(x[order])
        assert gmm.best_params_ == {"covariance_type": "tied", "n_components": 4}
        np.testing.assert_allclose(gmm.score_samples(probe), shuffled.best_estimator_.score_samples(probe))
    y = np.concatenate([rng.normal(c, 0.2, 150) for c in (-3, 0, 3)])
    z = ((y - y.mean()) / y.std())[:, None]
    bandwidths = {"bandwidth": list(KDEDetector().grid)}
    independent = GridSearchCV(KernelDensity(), bandwidths, cv=KFold(5, shuffle=True, random_state=0))
    expected = independent.fit(np.sort(z, axis=0)).best_params_["bandwidth"]
    assert expected != GridSearchCV(KernelDensity(), bandwidths, cv=5).fit(z).best_params_["bandwidth"]
    assert {KDEDetector().fit(y[o]).bandwidth_ for o in (np.arange(len(y)), rng.permutation(len(y)))} == {expected}


def test_cli_help_and_evaluate(tiny_model_dir, tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "Zero-shot anomaly detection" in capsys.readouterr().out
    for name, scale in (("smooth", 0.3), ("noise", 1.0)):
        folder = tmp_path / name
        folder.mkdir()
        from PIL import Image
        rng = np.random.default_rng(1)
        for i in range(24):  # an ID folder is split in halves: 12 to fit on, 12 to score
            arr = rng.normal(128, 128 * scale, (16, 16)).clip(0, 255).astype(np.uint8)
            Image.fromarray(arr, "L").save(folder / f"{i:02d}.png")
    out = tmp_path / "table.csv"
    code = main(["evaluate", "--model", str(tiny_model_dir), "--id", str(tmp_path / "smooth"), "--ood",
                 str(tmp_path / "noise"), "-k", "3", "--cache-dir", str(tmp_path / "cache"), "--out", str(out),
                 "--quiet", "--methods", "DiffPath-1D", "DiffPathV2", "DiffPathV2-PS", "Reconstruction"])
    printed = capsys.readouterr().out
    assert code == 0 and "AUROC" in printed and "FPR at 95% TPR" in printed and "average" in printed
    rows = out.read_text().splitlines()
    assert rows[0].startswith("id,ood,method,auroc,fpr95,aupr_in,aupr_out") and len(rows) == 5


def test_cli_reports_errors_cleanly(tmp_path, capsys):
    missing = tmp_path / "nothing.pt"
    code = main(["evaluate", "--model", str(missing), "--id", "digits", "--ood", "glyphs"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("diffpath: error:") and f"checkpoint {missing} not found" in err


@pytest.mark.parametrize("command, protocol, family, who", [
    ("select", "select_formulation", "paper form", "DiffPathV2"),
    ("select-spatial", "select_spatial_form", "spatial", "SpatialPath")])
def test_cli_selection_prints_the_ranking_and_writes_it(command, protocol, family, who, tiny_model_dir, tmp_path,
                                                       capsys, monkeypatch):
    """The selection commands' wiring: the protocol gets the ID set's training images and the options, the
    ranking marks the chosen row and the tied rows of the family, and --out writes every row (the protocols
    themselves are tested in test_validation.py and test_spatial.py)."""
    import diffpath_core.validation as validation

    seen = {}

    def fake(extraction, train, density):
        seen.update(k=extraction.k, n=len(train), density=density)
        base = {"mean_low": 0.7, "mean_high": 0.9, "lead_low": -0.01, "lead_high": 0.02, "n_fit": 7, "n_val": 3,
                "n_held_out": 2}
        return [{**base, "label": "best", "family": family, "mean_auroc": 0.85, "lead_of_best": 0.0,
                 "tied_with_best": True, "chosen": False},
                {**base, "label": "simple", "family": family, "mean_auroc": 0.84, "lead_of_best": 0.01,
                 "tied_with_best": True, "chosen": True},
                {**base, "label": "other", "family": "reference", "mean_auroc": 0.80, "lead_of_best": 0.05,
                 "tied_with_best": True, "chosen": False}]

    monkeypatch.setattr(validation, protocol, fake)
    out = tmp_path / "ranking.csv"
    code = main([command, "--model", str(tiny_model_dir), "--id", "digits", "--n-train", "30", "-k", "3",
                 "--density", "reference", "--out", str(out), "--quiet"])
    printed = capsys.readouterr().out.splitlines()
    assert code == 0 and seen == {"k": 3, "n": 30, "density": "reference"}
    ranking = [line.split() for line in printed if line[:4].strip().isdigit()]
    assert [r[-1] for r in ranking] == ["best", "simple", "other"]
    assert ranking[0][-2] == "tied" and ranking[1][-2] == "CHOSEN" and "tied" not in ranking[2]
    assert any(line.startswith(f"{who}'s default: simple") for line in printed)
    assert len(out.read_text().splitlines()) == 4
