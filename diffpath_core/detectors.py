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


class PCAGMM:
    """Whitened PCA of the first ``split`` feature columns to at most ``dims`` dimensions (fewer with fewer images),
    the remaining columns kept beside them as they are, and the GMM of the named density setting on the result:
    a density over a long vector (a grid of cells) that a GMM could not fit directly."""

    def __init__(self, dims: int = 32, split: int | None = None, density: str = "compact", seed: int = 0):
        self.dims, self.split, self.density, self.seed = dims, split, density, seed

    @_one_blas_thread
    def fit(self, features) -> "PCAGMM":
        from sklearn.decomposition import PCA

        x = _as_2d(features, "PCA + GMM fit")
        cells, rest = self._parts(x)
        n = max(1, min(self.dims, len(x) // 2, cells.shape[1]))
        self.pca_ = PCA(n_components=n, whiten=True, random_state=self.seed).fit(cells)
        self.gmm_ = density_model("gmm", self.density).fit(np.column_stack([self.pca_.transform(cells), rest]))
        return self

    def _parts(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        split = x.shape[1] if self.split is None else self.split
        return x[:, :split], x[:, split:]

    @_one_blas_thread
    def score_samples(self, features) -> np.ndarray:
        cells, rest = self._parts(_as_2d(features, "PCA + GMM score"))
        return self.gmm_.score_samples(np.column_stack([self.pca_.transform(cells), rest]))

    def token(self) -> str:
        return f"pcagmm{self.dims}/{self.split}s{self.seed}|{density_model('gmm', self.density).token()}"

    def describe(self) -> str:
        return f"whitened PCA to {self.pca_.n_components_} dimensions; {self.gmm_.describe()}"


class CellMemory:
    """A memory of the ID-train images' cell vectors, in PatchCore's manner (Roth et al. 2022): an image is as
    anomalous as its worst cell, and a cell as its distance to the nearest ID-train cell, at the same position
    (``position``) or at any. Channels are standardised by their ID-train mean and deviation over all cells first.
    Features are each image's cells flattened cell by cell, (N, cells × channels). ``score_samples`` returns minus
    the worst cell's distance (higher = more ID); :meth:`cell_distances` each cell's."""

    def __init__(self, cells: int, position: bool = True, max_memory: int = 100_000, seed: int = 0):
        self.cells, self.position, self.max_memory, self.seed = cells, position, max_memory, seed

    def _cells(self, features, what: str) -> np.ndarray:
        x = _as_2d(features, what)
        if x.shape[1] % self.cells:
            raise InputError(f"{what}: {x.shape[1]} features are not {self.cells} cells of equal length")
        return x.reshape(len(x), self.cells, -1)

    @_one_blas_thread
    def fit(self, features) -> "CellMemory":
        from sklearn.neighbors import NearestNeighbors

        v = self._cells(features, "cell memory fit")
        flat = v.reshape(-1, v.shape[-1])
        self.mean_ = flat.mean(axis=0)
        self.std_ = np.maximum(flat.std(axis=0), 1e-6 * max(float(flat.std(axis=0).max()), 1e-12))
        z = (v - self.mean_) / self.std_
        if self.position:
            self.memory_ = [NearestNeighbors(n_neighbors=1).fit(z[:, p]) for p in range(self.cells)]
        else:
            pool = z.reshape(-1, z.shape[-1])
            if len(pool) > self.max_memory:  # a seeded random subset stands in for PatchCore's coreset
                pool = pool[np.sort(np.random.default_rng(self.seed).choice(len(pool), self.max_memory, False))]
            self.memory_ = NearestNeighbors(n_neighbors=1).fit(pool)
        self.n_train_ = len(v)
        return self

    @_one_blas_thread
    def cell_distances(self, features) -> np.ndarray:
        """Each cell's distance to the nearest ID-train cell (at its position, or anywhere): (N, cells)."""
        z = (self._cells(features, "cell memory score") - self.mean_) / self.std_
        if self.position:
            return np.column_stack([self.memory_[p].kneighbors(z[:, p])[0][:, 0] for p in range(self.cells)])
        return self.memory_.kneighbors(z.reshape(-1, z.shape[-1]))[0][:, 0].reshape(len(z), self.cells)

    def score_samples(self, features) -> np.ndarray:
        return -self.cell_distances(features).max(axis=1)

    def token(self) -> str:
        return f"cellmemory{self.cells}{'pos' if self.position else 'any'}{self.max_memory}s{self.seed}"

    def describe(self) -> str:
        where = "at the same position" if self.position else "at any position"
        return f"worst cell's distance to the nearest of {self.n_train_} ID-train images' cells {where}"


DENSITIES = ("compact", "reference")


def density_model(kind: str, density: str = "compact"):
    """A fresh density model: ``kind`` 'kde' or 'gmm', with the named ``density`` setting (see the module doc)."""
    if kind not in ("kde", "gmm"):
        raise ValueError(f"detector must be 'kde' or 'gmm', got {kind!r}")
    if density not in DENSITIES:
        raise ValueError(f"density must be one of {DENSITIES}, got {density!r}")
    cls = KDEDetector if kind == "kde" else GMMDetector
    return cls.reference() if density == "reference" else cls()
