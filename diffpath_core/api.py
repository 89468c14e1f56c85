"""The one-object API: ``DiffPathV2(model).fit(id_train).score_samples(test)``.

Every detector runs the same trajectory, caches the same path statistics, and differs only in the
features read from them and the density model on top. Scores are log-likelihoods under the density
fitted to ID training features: higher = more in-distribution.

- :class:`DiffPath`: the NeurIPS 2024 baseline (1-D with KDE, 6-D with GMM).
- :class:`DiffPathV2`: the paper's published form, six SSIM-weighted score-error statistics with a GMM.
- :class:`DiffPathV2Variant`: this project's own formulations ("DiffPathV2-PS" and others), never
  reported under the paper's name.
- :class:`BorderMean`: a trivial one-number baseline (mean of the image's outer frame, KDE).
"""
from __future__ import annotations

import dataclasses
import inspect
from dataclasses import dataclass

import numpy as np
import torch

from .datasets import ImageSet
from .detectors import CellMemory, PCAGMM, density_model
from .extraction import Extraction
from .features import (CellForm, PaperForm, VariantFormulation, cell_features, cell_vectors, diffpath_features,
                       paper_form_features, variant_features)
from .maps import CellMap, MapForm, MapReference, anomaly_maps
from .models import DiffusionModel, load_model

# DiffPathV2's default switches: the chosen row of data/reference/formulation_selection.csv, written by
# `diffpath select --id fashion_mnist --out data/reference/formulation_selection.csv` (rerun 2026-12-03 with the joint
# bootstrap and the fresh reading's on-device noise; the same default as the 2026-11-26 run) on the validation
# protocol of the Method page (Fashion-MNIST ID-train only: two held-out classes, a 70/30 fit/validation split,
# corruptions and mosaics of the validation images; never a reported pair). Rule: the simplest candidate whose gap
# to the best is inside the 95 % paired bootstrap interval; here the best itself (mean AUROC 0.826, 0.814–0.838),
# no simpler candidate being tied with it (the one tied, fresh noise with w = 1 + 2D, is less simple). λ = 8 is the
# largest of the grid fixed beforehand (0.5, 1, 2, 4, 8).
# tests/test_validation.py checks that this constant is that row.
DEFAULT_V2 = PaperForm(noise="path", ssim_pair="noise", weight="amplify", lam=8.0, error="score")

# "DiffPathV2-PS", this project's per-step variant: per-step log Σr²_k and ΣD_k (2K features), GMM. It was
# the top row of the first validation run (2026-11-23, 36 variant formulations, mean AUROC 0.949) and stays
# fixed as a named variant; the current selection table ranks it beside the paper form.
DEFAULT_PS = VariantFormulation(error="score", ssim="off", lam=0.0, aggregate="per_step", dims="multi")

# Each method's default anomaly map: the chosen row of its family in data/reference/map_selection.csv, written by
# `diffpath select-maps --id fashion_mnist --n-train 1300 --out data/reference/map_selection.csv` (rerun 2026-12-03
# with the joint bootstrap: one draw of the validation images for every defect kind and form; the same defaults as
# the 2026-11-26 run) on ID-train images and synthetic validation defects made from them only (cut-paste, scratch,
# blot, blur, contrast, rotation; no test image, no patch from another dataset). In every family the best form was
# the only one tied with itself: early steps, no normalisation, Gaussian smoothing σ = 3 (the grid's largest). Mean
# validation pixel AUROC: DiffPath 0.961, DiffPathV2 0.945 (SSIM on; w = 1 + 0.5D), variant 0.947.
# tests/test_maps.py checks these.
DEFAULT_MAPS = {
    "DiffPath": MapForm("eps", "none", 0.0, "early", "none", 3.0),
    "DiffPathV2": MapForm("score", "amplify", 0.5, "early", "none", 3.0),
    "variant": MapForm("score", "none", 0.0, "early", "none", 3.0),
}


# SpatialPath's default: the chosen row of data/reference/spatial_selection.csv, written by
# `diffpath select-spatial --id fashion_mnist --out data/reference/spatial_selection.csv` (2026-12-03) on the validation
# protocol of DiffPathV2's default (Fashion-MNIST ID-train only; never a reported pair or a one-class test set), among
# 72 candidates fixed beforehand (validation.spatial_candidates) and by the same rule: the simplest candidate tied with
# the best (validation.SPATIAL_SIMPLICITY). 4 × 4 cells of the score-error sums (|r|, D|r|, D; early and late steps),
# log 1 + x, whitened PCA to 32 dimensions, the compact GMM: mean AUROC 0.893 (0.883–0.904), 0.0028 behind the best
# (which adds the global path statistics). tests/test_spatial.py checks that this constant is that row.
DEFAULT_CELLS = CellForm(grid=4, channels="score error", transform="log1p", density="gmm", dims=32, with_global=False)


@dataclass
class AnomalyMaps:
    """Anomaly maps (higher = more anomalous): ``maps`` (N, H, W) at the model's size; ``original``, for images
    read from files, each map resized (bilinear) to its file's own height and width, else None."""

    maps: np.ndarray
    form: MapForm
    original: list[np.ndarray] | None = None

    @classmethod
    def of(cls, maps: np.ndarray, images, form: MapForm) -> "AnomalyMaps":
        sizes = images.meta.get("sizes") if isinstance(images, ImageSet) else None
        original = None
        if sizes:
            import torch.nn.functional as F

            original = [F.interpolate(torch.as_tensor(m, dtype=torch.float32)[None, None], size=tuple(hw),
                                      mode="bilinear", align_corners=False)[0, 0].numpy()
                        for m, hw in zip(maps, sizes)]
        return cls(maps, form, original)

    def __len__(self) -> int:
        return len(self.maps)

Images = ImageSet | torch.Tensor | np.ndarray


class _TrajectoryDetector:
    """A detector in two halves.

    Scoring needs no model: :meth:`features_from_statistics`, :meth:`fit_statistics`, :meth:`score_statistics`
    and :meth:`token` work on path statistics already computed (the evaluation and the validation protocol
    use only these). On top, :meth:`fit`, :meth:`score_samples` and :meth:`features` take images and get
    their statistics from :meth:`extraction`, built from the parameters each time it is needed.

    Parameters follow scikit-learn's rules: the constructor stores its arguments and does nothing else (a model
    name is loaded only when images are first given, and kept for the next call), :meth:`set_params` or a plain
    attribute change takes effect at the next fit or score, and a fitted detector whose parameters changed
    since it was fitted refuses to score until it is fitted again. ``model`` is a shipped name, a
    :class:`DiffusionModel`, or a whole :class:`Extraction` (which then carries K, precision, cache folder, …:
    leave those arguments unset). ``density`` names the density setting ("compact" or DiffPath's "reference"
    grid, see :mod:`diffpath_core.detectors`); ``detector`` replaces it with any object with ``fit`` /
    ``score_samples`` / ``token`` / ``describe``.
    """

    def __init__(self, model: DiffusionModel | Extraction | str = "fashion_mnist", *, k: int = 10,
                 clip: bool = True, precision: str = "fp32", batch_size: int = 64, cache_dir=None,
                 device="auto", progress: bool = True, detector=None, density: str = "compact", network=None,
                 noise_seed: int = 0, map_form: MapForm | None = None):
        self.model, self.k, self.clip, self.precision = model, k, clip, precision
        self.map_form = map_form  # None: the method's default map (chosen on the maps' validation protocol)
        self.batch_size, self.cache_dir, self.device, self.progress = batch_size, cache_dir, device, progress
        self.detector, self.density = detector, density
        self.network, self.noise_seed = network, noise_seed

    detector_kind = "gmm"
    map_family = "DiffPathV2"  # which family of anomaly maps (maps.map_candidates) the default map comes from

    @property
    def readings(self) -> tuple[str, ...]:
        """The path-statistics readings the features need (each is its own cache entry)."""
        return ("path",)

    # -- parameters
    @classmethod
    def _param_defaults(cls) -> dict:
        out = {}
        for klass in reversed(cls.__mro__):
            init = klass.__dict__.get("__init__")
            if init is not None and klass is not object:
                out.update({n: p.default for n, p in inspect.signature(init).parameters.items()
                            if n != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)})
        return out

    def get_params(self, deep: bool = False) -> dict:
        """The constructor's arguments as they are now (scikit-learn's convention)."""
        return {name: getattr(self, name) for name in self._param_defaults()}

    def set_params(self, **params):
        """Change parameters (scikit-learn's convention); they are read at the next fit or score. Returns self."""
        known = self._param_defaults()
        unknown = sorted(set(params) - set(known))
        if unknown:
            raise ValueError(f"{type(self).__name__} has no parameter(s) {', '.join(unknown)}; "
                             f"its parameters: {', '.join(known)}")
        for name, value in params.items():
            setattr(self, name, value)
        self._check_params()
        return self

    def _check_params(self) -> None:
        """Refuse parameter values no fit could use (subclasses add their own checks)."""

    def _extraction_settings(self) -> dict:
        """The parameters that are :class:`Extraction` fields (k, clip, precision, …), read off its dataclass."""
        names = {f.name for f in dataclasses.fields(Extraction)} - {"model"}
        return {name: value for name, value in self.get_params().items() if name in names}

    def _scoring_params(self) -> dict:
        """What decides the scores given the statistics: the non-extraction parameters and the density's token."""
        not_scoring = {*self._extraction_settings(), "model", "device", "detector", "density", "map_form"}
        scoring = {k: v for k, v in self.get_params().items() if k not in not_scoring}
        return {**scoring, "density": self.new_density().token()}

    def token(self) -> str:
        """Everything that decides this detector's scores, given the statistics (the score cache's key part)."""
        scoring = self._scoring_params()
        density = scoring.pop("density")
        return f"{type(self).__name__}|{scoring!r}|{density}"

    # -- scoring: statistics in, no model needed
    def features_from_statistics(self, stats: dict[str, np.ndarray]) -> np.ndarray:
        raise NotImplementedError

    def new_density(self):
        return self.detector if self.detector is not None else density_model(self.detector_kind, self.density)

    def fit_statistics(self, stats: dict[str, np.ndarray]):
        """Fit the density on ID training statistics."""
        self._check_params()
        detector = self.new_density()
        detector.fit(self.features_from_statistics(stats))
        self.detector_ = detector
        self.fitted_scoring_ = self._scoring_params()
        self.fitted_extraction_ = None  # statistics given: what extracted them is not known here
        self.map_reference_ = None      # nor the ID images' per-pixel map moments (fit(images) keeps them)
        return self

    def score_statistics(self, stats: dict[str, np.ndarray]) -> np.ndarray:
        """Log-likelihood of each image's features under the ID density (higher = more ID)."""
        self._check_fitted(self._scoring_params(), getattr(self, "fitted_scoring_", None))
        return self.detector_.score_samples(self.features_from_statistics(stats))

    def _check_fitted(self, now: dict, then: dict | None) -> None:
        if not hasattr(self, "detector_"):
            raise RuntimeError(f"{type(self).__name__} is not fitted: call fit(id_train_images) first")
        changed = [name for name in now if then is not None and now[name] != then.get(name)]
        if changed:
            what = ", ".join(f"{n} {then.get(n)!r} → {now[n]!r}" for n in changed)
            raise RuntimeError(f"{type(self).__name__} was fitted with other settings than it has now ({what}): "
                               "its density describes the old features; call fit(id_train_images) again")

    # -- images: the thin convenience on top
    def _base_model(self) -> DiffusionModel:
        """``model`` as a loaded model; a name is loaded once per (name, device) and kept for later calls."""
        if isinstance(self.model, DiffusionModel):
            return self.model
        key = (self.model, str(self.device))
        loaded = getattr(self, "_loaded_model", None)
        if loaded is None or loaded[0] != key:
            self._loaded_model = (key, load_model(self.model, device=self.device))
        return self._loaded_model[1]

    def extraction(self) -> Extraction:
        """The :class:`Extraction` the current parameters describe (the model is loaded on first use only)."""
        settings = self._extraction_settings()
        if isinstance(self.model, Extraction):
            defaults = self._param_defaults()
            given = {n: v for n, v in {**settings, "device": self.device}.items() if v != defaults[n]}
            if given:
                raise TypeError(f"{type(self).__name__} got an Extraction and also {', '.join(sorted(given))}: "
                                "set them on the Extraction (dataclasses.replace) instead")
            return self.model
        return Extraction(self._base_model(), **settings)

    def _extraction_identity(self, extraction: Extraction) -> dict:
        """What in an extraction decides the values of this detector's statistics: the model's weights and the
        settings of each reading it needs (not the device type or the chunking, which change rounding only)."""
        identity = {"model weights": extraction.model.weights_hash()}
        for reading in self.readings:
            settings = extraction.settings(reading)
            identity.update({k: v for k, v in settings.items() if k not in ("device", "chunk_size", "reading")})
        return identity

    def path_statistics(self, images: Images, desc: str | None = None) -> dict[str, np.ndarray]:
        """Every statistic this detector's features need: one cached extraction per reading, merged."""
        return self.extraction().statistics(images, self.readings, desc=desc)

    def features(self, images: Images) -> np.ndarray:
        return self.features_from_statistics(self.path_statistics(images))

    def fit(self, images: Images):
        """Fit the density on ID training images (features computed or read from the cache), and keep the ID
        images' per-pixel map moments for :meth:`anomaly_maps`, from the same trajectories."""
        extraction = self.extraction()
        stats = extraction.statistics(images, self.readings + ("mapref",))
        self.fit_statistics(stats)
        self.map_reference_ = MapReference.from_totals(stats)
        self.fitted_extraction_ = self._extraction_identity(extraction)
        return self

    def score_samples(self, images: Images) -> np.ndarray:
        """Log-likelihood of each image's features under the ID density (higher = more ID)."""
        return self.score_statistics(self._checked_extraction().statistics(images, self.readings))

    def _checked_extraction(self) -> Extraction:
        """The extraction to score with, after checking the detector is fitted with the settings it has now."""
        self._check_fitted(self._scoring_params(), getattr(self, "fitted_scoring_", None))
        extraction = self.extraction()
        if getattr(self, "fitted_extraction_", None) is not None:
            self._check_fitted(self._extraction_identity(extraction), self.fitted_extraction_)
        return extraction

    # -- anomaly maps: where in the image
    @property
    def map_form_(self) -> MapForm:
        """The map form in use: ``map_form`` if given, else the method's default."""
        return self.map_form if self.map_form is not None else DEFAULT_MAPS[self.map_family]

    def anomaly_maps(self, images: Images) -> "AnomalyMaps":
        """Per-pixel anomaly maps of ``images`` (higher = more anomalous), normalised against the ID-train images
        given to :meth:`fit`: (N, H, W) at the model's size, and for folder images each map resized to its file's
        own size too (``AnomalyMaps.original``)."""
        return self.score_and_maps(images, scores=False)[1]

    def score_and_maps(self, images: Images, scores: bool = True) -> tuple[np.ndarray | None, "AnomalyMaps"]:
        """Scores (as :meth:`score_samples`) and anomaly maps (as :meth:`anomaly_maps`) from one trajectory per
        image."""
        if getattr(self, "map_reference_", None) is None:
            raise RuntimeError(f"{type(self).__name__} has no map reference: fit it on ID images with fit(images) "
                               "(fit_statistics keeps no per-pixel moments)")
        extraction = self._checked_extraction()
        readings = (self.readings if scores else ()) + ("maps",)
        stats = extraction.statistics(images, readings)
        maps = anomaly_maps(stats["map_sums"], self.map_form_, self.map_reference_)
        return (self.score_statistics(stats) if scores else None), AnomalyMaps.of(maps, images, self.map_form_)


class DiffPath(_TrajectoryDetector):
    """DiffPath (Heng et al., NeurIPS 2024): ε and its rate of change along the path.

    ``variant="1d"``: √Σ‖Δε‖² with a Gaussian KDE; ``"6d"``: six summed moments with a GMM.
    """

    def __init__(self, model="fashion_mnist", variant: str = "6d", **kwargs):
        super().__init__(model, **kwargs)
        self.variant = variant
        self._check_params()

    def _check_params(self) -> None:
        if self.variant not in ("1d", "6d"):
            raise ValueError(f"DiffPath variant must be '1d' or '6d', got {self.variant!r}")

    map_family = "DiffPath"

    @property
    def detector_kind(self) -> str:
        return "kde" if self.variant == "1d" else "gmm"

    @property
    def name(self) -> str:
        return f"DiffPath-{self.variant.upper()}"

    def features_from_statistics(self, stats):
        return diffpath_features(stats, self.variant)


class DiffPathV2(_TrajectoryDetector):
    """DiffPathV2 (Abdi et al., ICCV 2025 workshop) in its published form: six statistics of the SSIM-weighted
    score-error map along the path, with a GMM (see :class:`features.PaperForm` and the Method page).

    ``form`` sets the switches the published descriptions leave open; the default :data:`DEFAULT_V2` was chosen
    on the validation protocol. Any form is the paper's structure; only the default is reported as "DiffPathV2".
    """

    def __init__(self, model="fashion_mnist", form: PaperForm = DEFAULT_V2, **kwargs):
        super().__init__(model, **kwargs)
        self.form = form
        self._check_params()

    def _check_params(self) -> None:
        if not isinstance(self.form, PaperForm):
            raise TypeError(f"DiffPathV2 takes a PaperForm; {type(self.form).__name__} formulations belong to "
                            "DiffPathV2Variant")

    @property
    def readings(self) -> tuple[str, ...]:
        return self.form.readings

    @property
    def name(self) -> str:
        return "DiffPathV2" if self.form == DEFAULT_V2 else f"DiffPathV2 ({self.form.label()})"

    def features_from_statistics(self, stats):
        return paper_form_features(stats, self.form)


class DiffPathV2Variant(_TrajectoryDetector):
    """This project's own formulations inspired by DiffPathV2 (not the paper's form).

    The default, "DiffPathV2-PS", reads per-step statistics: log Σ_pixels r_k² and Σ_pixels D_k for every
    step (2K features) with a GMM. Other :class:`features.VariantFormulation` switches are ablations.
    """

    def __init__(self, model="fashion_mnist", formulation: VariantFormulation = DEFAULT_PS, **kwargs):
        super().__init__(model, **kwargs)
        self.formulation = formulation
        self._check_params()

    def _check_params(self) -> None:
        if not isinstance(self.formulation, VariantFormulation):
            raise TypeError(f"DiffPathV2Variant takes a VariantFormulation, got {type(self.formulation).__name__}")

    map_family = "variant"

    @property
    def detector_kind(self) -> str:
        return "kde" if self.formulation.dims == "1d" else "gmm"

    @property
    def name(self) -> str:
        return "DiffPathV2-PS" if self.formulation == DEFAULT_PS else f"variant ({self.formulation.label()})"

    def features_from_statistics(self, stats):
        return variant_features(stats, self.formulation)


class SpatialPath(_TrajectoryDetector):
    """This project's spatial detector (not a paper's method): where on the image the path departs from the ID
    images, kept on a grid of cells instead of summed to a few numbers.

    The per-pixel sums one trajectory leaves (``|r|``, ``D|r|``, ``|x0 − x̂0|``, ``D``, ``|ε|``, ``|KΔε|`` over
    the early and the late steps) are averaged over cells (the "cells" reading, from the same network pass as the
    path statistics), transformed, and scored by a density of the whole grid (whitened PCA and the compact GMM)
    or by a memory of ID-train cells where the image is as anomalous as its worst cell
    (:class:`features.CellForm`). The default :data:`DEFAULT_CELLS` was chosen on the validation protocol (ID-train
    images only). Its anomaly map is its own cells: each cell's distance to the nearest ID-train cell at its
    position, upsampled to the image.
    """

    name = "SpatialPath"

    def __init__(self, model="fashion_mnist", form: CellForm = DEFAULT_CELLS, **kwargs):
        super().__init__(model, **kwargs)
        self.form = form  # a parameter, so it is in the score cache's key (the default too)
        self._check_params()

    def _check_params(self) -> None:
        if not isinstance(self.form, CellForm):
            raise TypeError(f"SpatialPath takes a CellForm, got {type(self.form).__name__}")

    @property
    def readings(self) -> tuple[str, ...]:
        return self.form.readings

    def new_density(self):
        if self.detector is not None:
            return self.detector
        f = self.form
        if f.density == "gmm":
            return PCAGMM(f.dims, split=f.grid ** 2 * f.n_channels, density=self.density)
        return CellMemory(f.grid ** 2, position=f.density == "knn")

    def features_from_statistics(self, stats):
        return cell_features(stats, self.form)

    def fit_statistics(self, stats: dict[str, np.ndarray]):
        """Fit the density on ID-train statistics, and the memory of their cells that the maps read."""
        super().fit_statistics(stats)
        cells = cell_vectors(stats, self.form)
        self.cell_memory_ = (self.detector_ if isinstance(self.detector_, CellMemory) and self.detector_.position
                             else CellMemory(cells.shape[1], position=True).fit(cells.reshape(len(cells), -1)))
        return self

    def fit(self, images: Images):
        """Fit on ID training images (one extraction of the readings it needs; no map reference is needed)."""
        extraction = self.extraction()
        self.fit_statistics(extraction.statistics(images, self.readings))
        self.fitted_extraction_ = self._extraction_identity(extraction)
        return self

    def cell_maps(self, stats: dict[str, np.ndarray], size: int) -> np.ndarray:
        """Each image's map (N, size, size), higher = more anomalous: its cells' distances to the nearest ID-train
        cell at the same position, upsampled bilinearly from the grid to the image."""
        import torch.nn.functional as F

        cells = cell_vectors(stats, self.form)
        grid = self.form.grid
        distances = self.cell_memory_.cell_distances(cells.reshape(len(cells), -1)).reshape(len(cells), 1, grid, grid)
        return F.interpolate(torch.as_tensor(distances, dtype=torch.float32), size=(size, size), mode="bilinear",
                             align_corners=False)[:, 0].numpy()

    def score_and_maps(self, images: Images, scores: bool = True) -> tuple[np.ndarray | None, "AnomalyMaps"]:
        """Scores and maps from one trajectory per image: both read the same cells."""
        if getattr(self, "cell_memory_", None) is None:
            raise RuntimeError("SpatialPath is not fitted: call fit(id_train_images) first")
        extraction = self._checked_extraction()
        stats = extraction.statistics(images, self.readings)
        maps = self.cell_maps(stats, extraction.model.image_size)
        return (self.score_statistics(stats) if scores else None), AnomalyMaps.of(maps, images, self.map_form_)

    @property
    def map_form_(self) -> CellMap:
        return CellMap(self.form.grid)


class BorderMean(_TrajectoryDetector):
    """Trivial baseline: the mean of each image's outer frame, with a Gaussian KDE fitted on ID-train images.

    It reads no trajectory quantity; it is here to show what a pair does and does not prove (it separates
    Fashion-MNIST from MNIST almost perfectly). The value is stored with the path statistics, so it is cached.
    """

    detector_kind = "kde"
    name = "Border mean"

    def new_density(self):
        """Always the cross-validated KDE: DiffPath's reference bandwidth (5, raw) is not for a value in [-1, 1]."""
        return self.detector if self.detector is not None else density_model("kde", "compact")

    def features_from_statistics(self, stats):
        return np.asarray(stats["border_mean"], dtype=np.float64)[:, None]


class PixelPCA:
    """Trivial baseline: a density on raw pixels. The ID-train images, flattened, are reduced by PCA to at most
    ``components`` whitened dimensions (fewer when there are fewer images), and a Gaussian mixture on them is
    chosen by the same cross-validation as every method's (:mod:`detectors`). No diffusion model is involved:
    it shows what the trajectory adds over the pixels themselves."""

    name = "Pixel PCA"

    def __init__(self, components: int = 32, density: str = "compact", seed: int = 0):
        self.components, self.density, self.seed = components, density, seed

    @staticmethod
    def _pixels(images: Images) -> np.ndarray:
        x = images.images if isinstance(images, ImageSet) else images
        x = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
        return x.reshape(len(x), -1).astype(np.float64)

    def fit(self, images: Images) -> "PixelPCA":
        from sklearn.decomposition import PCA

        x = self._pixels(images)
        n = min(self.components, len(x) // 2, x.shape[1])
        self.pca_ = PCA(n_components=max(1, n), whiten=True, random_state=self.seed).fit(x)
        self.detector_ = density_model("gmm", self.density).fit(self.pca_.transform(x))
        return self

    def score_samples(self, images: Images) -> np.ndarray:
        """Log-likelihood under the density of the ID-train pixels' PCA coefficients (higher = more ID)."""
        return self.detector_.score_samples(self.pca_.transform(self._pixels(images)))

    def describe(self) -> str:
        return f"PCA to {self.pca_.n_components_} whitened dimensions; {self.detector_.describe()}"
