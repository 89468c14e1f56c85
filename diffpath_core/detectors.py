"""Density models over path features, fitted on in-distribution training features only.

``score_samples`` returns log-likelihoods: higher = more in-distribution. Hyper-parameters
(KDE bandwidth; GMM components and covariance type) are chosen by cross-validated
log-likelihood on the ID training features, as the official DiffPath code does for its GMM.

Two named density settings (:func:`density_model`):

- ``"reference"``: DiffPath's own code. GMM: StandardScaler + GaussianMixture, grid n_components
  {50, 100} × covariance {full, tied, diag, spherical}, max_iter 200, 10-fold CV (``eval_6d.py``);
  KDE: Gaussian, bandwidth 5 on the raw 1-D statistic (``eval_1d.py``). The paper profile uses it.
- ``"compact"``: a cheaper grid for small ID sets and CPUs: GMM components {1, 2, 4, 8, 16}, same
  covariance types, 3-fold CV; KDE bandwidth by 5-fold CV on standardised features.

Cross-validation folds are shuffled with the detector's seed, after the rows are put in an order fixed by
their values: the folds, and so the chosen hyper-parameters and the fitted density, do not depend on the
order the images came in (a folder sorted by class, camera or date would otherwise give folds that are whole
classes). The official DiffPath code drew its statistics from a shuffled DataLoader, so its folds were random
too. Cross-validation fits run in parallel over the CPU cores (joblib, ``n_jobs=-1``); everything a detector
computes in this process runs with one BLAS thread (see :func:`_one_blas_thread`).
"""
from __future__ import annotations

import functools

import numpy as np
from sklearn.mixture import GaussianMixture
from sklearn.model_selection import GridSearchCV, KFold
from sklearn.neighbors import KernelDensity
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from .errors import InputError


def _one_blas_thread(method):
    """Run ``method`` with one BLAS thread in this process. A density's matrices are d × d with d of a few to 2K, too
    small for OpenBLAS's threads to pay: a 16-component full-covariance GMM on 2,000 × 20 features took 30.8 s
    with two threads against 0.46 s with one on this project's 2-core machine while another process held a core.
    Cross-validation fits run in joblib's worker processes, which limit their own threads."""
    @functools.wraps(method)
    def wrapper(*args, **kwargs):
        with threadpool_limits(1, user_api="blas"):
            return method(*args, **kwargs)
    return wrapper


def _as_2d(x, what: str, at_least: int = 1) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if x.ndim == 1:
        x = x[:, None]
    if x.ndim != 2 or x.shape[0] == 0:
        raise InputError(f"{what}: expected a non-empty (N, d) feature array, got shape {x.shape}")
    if not np.isfinite(x).all():
        raise InputError(f"{what}: features contain NaN or Inf")
    if x.shape[0] < at_least:
        raise InputError(f"{what}: {x.shape[0]} ID-train image(s) are too few; this density setting needs at least "
                         f"{at_least} (cross-validation folds of two or more images)")
    return x


FOLDS = "shuffled"  # part of every density token: scores cached under unshuffled folds are not reused


def canonical_order(x: np.ndarray) -> np.ndarray:
    """The rows of ``x`` sorted by their values (first column first): an order that does not depend on the
    order the images arrived in. Equal rows are interchangeable, so the result is unique."""
    return x[np.lexsort(x.T[::-1])]


def shuffled_folds(n_splits: int, n: int, seed: int) -> KFold:
    """K-fold splits over a seeded permutation of the rows (at most ``n`` folds)."""
    return KFold(n_splits=min(n_splits, n), shuffle=True, random_state=seed)


class KDEDetector:
    """Gaussian KDE; bandwidth by shuffled k-fold CV log-likelihood on ID data, on standardised features.

    ``bandwidth`` fixes it instead, on the standardised scale, or on the raw scale with
    ``standardize=False`` (the official DiffPath-1D: bandwidth 5, raw; :meth:`reference`).
    """

    def __init__(self, bandwidth: float | None = None, grid=(0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.8, 1.2), cv: int = 5,
                 seed: int = 0, standardize: bool = True, n_jobs: int | None = -1):
        self.bandwidth, self.grid, self.cv, self.seed = bandwidth, tuple(grid), cv, seed
        self.standardize, self.n_jobs = standardize, n_jobs

    @classmethod
    def reference(cls) -> "KDEDetector":
        """The official ``eval_1d.py``: Gaussian kernel, bandwidth 5, on the raw statistic."""
        return cls(bandwidth=5.0, standardize=False)

    @_one_blas_thread
    def fit(self, features) -> "KDEDetector":
        x = canonical_order(_as_2d(features, "KDE fit", at_least=2 if self.bandwidth is not None else 2 * self.cv))
        self.scaler_ = StandardScaler(with_mean=self.standardize, with_std=self.standardize).fit(x)
        z = self.scaler_.transform(x)
        if self.bandwidth is None:
            search = GridSearchCV(KernelDensity(kernel="gaussian"), {"bandwidth": list(self.grid)},
                                  cv=shuffled_folds(self.cv, len(z), self.seed), n_jobs=self.n_jobs)
            search.fit(z)
            self.bandwidth_ = float(search.best_params_["bandwidth"])
        else:
            self.bandwidth_ = float(self.bandwidth)
        self.kde_ = KernelDensity(kernel="gaussian", bandwidth=self.bandwidth_).fit(z)
        return self

    @_one_blas_thread
    def score_samples(self, features) -> np.ndarray:
        return self.kde_.score_samples(self.scaler_.transform(_as_2d(features, "KDE score")))

    def token(self) -> str:
        return (f"kde{self.bandwidth}{self.grid}cv{self.cv}{FOLDS}s{self.seed}"
                + ("" if self.standardize else "raw"))

    def describe(self) -> str:
        return f"Gaussian KDE, bandwidth {self.bandwidth_:g} ({'standardised' if self.standardize else 'raw'})"


class GMMDetector:
    """Gaussian mixture on standardised features; components and covariance type by shuffled k-fold CV on ID data.

    ``grid`` of component counts and ``covariance_types`` are searched with ``cv`` folds (the official
    code: components (50, 100), all four covariance types, 10 folds; ``GMMDetector.reference()``).
    """

    def __init__(self, components=(1, 2, 4, 8, 16), covariance_types=("full", "tied", "diag", "spherical"),
                 cv: int = 3, max_iter: int = 200, seed: int = 0, n_jobs: int | None = -1, reg_covar: float = 1e-5):
        self.components, self.covariance_types = tuple(components), tuple(covariance_types)
        self.cv, self.max_iter, self.seed, self.n_jobs, self.reg_covar = cv, max_iter, seed, n_jobs, reg_covar

    @classmethod
    def reference(cls, seed: int = 0) -> "GMMDetector":
        """The grid of the official ``eval_6d.py`` (scikit-learn's default ``reg_covar``, 1e-6)."""
        return cls(components=(50, 100), covariance_types=("full", "tied", "diag", "spherical"), cv=10,
                   max_iter=200, seed=seed, reg_covar=1e-6)

    @_one_blas_thread
    def fit(self, features) -> "GMMDetector":
        x = canonical_order(_as_2d(features, "GMM fit", at_least=2 * self.cv))
        comps = [c for c in self.components if c <= max(1, len(x) * (self.cv - 1) // self.cv)] or [1]
        pipe = Pipeline([("scaler", StandardScaler()),
                         ("gmm", GaussianMixture(max_iter=self.max_iter, random_state=self.seed,
                                                 reg_covar=self.reg_covar))])
        grid = {"gmm__n_components": comps, "gmm__covariance_type": list(self.covariance_types)}
        search = GridSearchCV(pipe, grid, cv=shuffled_folds(self.cv, len(x), self.seed), n_jobs=self.n_jobs,
                              error_score=-np.inf)
        search.fit(x)
        self.best_params_ = {k.split("__")[1]: v for k, v in search.best_params_.items()}
        self.cv_results_ = search.cv_results_
        self.model_ = search.best_estimator_
        return self

    @_one_blas_thread
    def score_samples(self, features) -> np.ndarray:
        return self.model_.score_samples(_as_2d(features, "GMM score"))

    def token(self) -> str:
        return (f"gmm{self.components}{self.covariance_types}cv{self.cv}{FOLDS}it{self.max_iter}s{self.seed}"
                f"r{self.reg_covar:g}")

    def describe(self) -> str:
        p = self.best_params_
        return f"GMM, {p['n_components']} components, {p['covariance_type']} covariance"


DENSITIES = ("compact", "reference")


def density_model(kind: str, density: str = "compact"):
    """A fresh density model: ``kind`` 'kde' or 'gmm', with the named ``density`` setting (see the module doc)."""
    if kind not in ("kde", "gmm"):
        raise ValueError(f"detector must be 'kde' or 'gmm', got {kind!r}")
    if density not in DENSITIES:
        raise ValueError(f"density must be one of {DENSITIES}, got {density!r}")
    cls = KDEDetector if kind == "kde" else GMMDetector
    return cls.reference() if density == "reference" else cls()
