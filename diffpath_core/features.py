"""Features from path statistics, in NumPy: DiffPath's, DiffPathV2's paper form, this project's variants.

Cheap and free to change: they read the cached statistics of :mod:`diffpath_core.statistics` and never run
the network, so a new feature needs no new trajectory and no cache version.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from math import comb

import numpy as np

from .statistics import ERROR_MAPS, MAP_GROUPS, MAP_QUANTITIES, SSIM_PAIRS, map_index

PF_READINGS, PF_ERRORS, PF_PAIRS = ("path", "fresh"), ERROR_MAPS, SSIM_PAIRS  # the paper form's switch values

# ----------------------------------------------------------------------------- DiffPath (baseline)

DIFFPATH_STATISTICS = ("eps_sum", "eps_sum_abs", "eps_sum_sq", "eps_sum_sq_sqrt", "eps_sum_cb", "eps_sum_cb_cbrt",
                       "deps_dt", "deps_dt_abs", "deps_dt_sq", "deps_dt_sq_sqrt", "deps_dt_cb", "deps_dt_cb_cbrt")
DIFFPATH_6D = ("eps_sum", "eps_sum_sq", "eps_sum_cb", "deps_dt", "deps_dt_sq", "deps_dt_cb")


def diffpath_statistics(stats: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The twelve statistics of the official ``save_train_statistics.py``, summed over steps and pixels."""
    out = {}
    for src, dst in (("eps", "eps_sum"), ("deps", "deps_dt")):
        s = {m: np.asarray(stats[f"{src}_{m}"]).sum(axis=1) for m in ("s1", "abs", "s2", "s3")}
        out[dst] = s["s1"]
        out[f"{dst}_abs"] = s["abs"]
        out[f"{dst}_sq"] = s["s2"]
        out[f"{dst}_sq_sqrt"] = np.sqrt(s["s2"])
        out[f"{dst}_cb"] = s["s3"]
        out[f"{dst}_cb_cbrt"] = np.cbrt(s["s3"])
    return {k: out[k] for k in DIFFPATH_STATISTICS}


def diffpath_features(stats: dict[str, np.ndarray], variant: str = "6d") -> np.ndarray:
    """DiffPath-1D: √Σ‖Δε‖² (N, 1); DiffPath-6D: (Σε, Σε², Σε³, ΣΔε, ΣΔε², ΣΔε³) (N, 6)."""
    s = diffpath_statistics(stats)
    if variant == "1d":
        return s["deps_dt_sq_sqrt"][:, None]
    if variant == "6d":
        return np.column_stack([s[k] for k in DIFFPATH_6D])
    raise ValueError(f"DiffPath variant must be '1d' or '6d', got {variant!r}")


# ----------------------------------------------------------------------------- DiffPathV2 (paper form)

def _check_choice(owner: str, name: str, value, allowed) -> None:
    if value not in allowed:
        raise ValueError(f"{owner}.{name} must be one of {allowed}, got {value!r}")


@dataclass(frozen=True)
class PaperForm:
    """DiffPathV2 as its published descriptions state it, with the choices they leave open as switches.

    Features: [Σ⟨E⟩₁, Σ⟨E⟩₂, Σ⟨E⟩₃, Σ⟨∂E⟩₁, Σ⟨∂E⟩₂, Σ⟨∂E⟩₃], ⟨x⟩_p = Σ_pixels x^p (signed), summed over
    steps, with E_k = w(D_k) ⊙ e_k and ∂E_k = K (E_k+1 − E_k).

    - ``noise``: "path", the true noise ε̃_k carried by the DDIM path state x_k relative to x0; or "fresh",
      seeded fresh noise n_k of a forward-noised copy √ᾱ_k x0 + √(1−ᾱ_k) n_k.
    - ``ssim_pair``: "image", D from SSIM(x0, x̂0_k); or "noise", D from SSIM(ε̃_k, ε_k).
    - ``weight``: "amplify", w = 1 + λD; "ssim", w = D; "none", w = 1 (SSIM off).
    - ``lam``: λ of "amplify".
    - ``error``: "score", e = r_k = ε_k − ε̃_k (the paper's score error); or "eps", e = ε_k (ablation).
    """

    noise: str = "path"
    ssim_pair: str = "image"
    weight: str = "amplify"
    lam: float = 1.0
    error: str = "score"

    def __post_init__(self):
        for name, allowed in (("noise", PF_READINGS), ("ssim_pair", PF_PAIRS),
                              ("weight", ("amplify", "ssim", "none")), ("error", PF_ERRORS)):
            _check_choice("PaperForm", name, getattr(self, name), allowed)
        if self.lam < 0:
            raise ValueError(f"λ must be non-negative, got {self.lam}")

    @property
    def readings(self) -> tuple[str, ...]:
        """The path-statistics readings these features need (each is its own cache entry)."""
        return (self.noise,)

    def label(self) -> str:
        w = {"amplify": f"w=1+{self.lam:g}D", "ssim": "w=D", "none": "w=1"}[self.weight]
        pair = "" if self.weight == "none" else f", SSIM({'x0,x̂0' if self.ssim_pair == 'image' else 'ε̃,ε'})"
        err = "r" if self.error == "score" else "ε"
        return f"{err}, {self.noise} noise, {w}{pair}"

    def as_dict(self) -> dict:
        return asdict(self)


def _weighted_power_sums(stats: dict[str, np.ndarray], prefix: str, f: PaperForm) -> list[np.ndarray]:
    """Σ⟨E⟩_p for p = 1, 2, 3 from the stored sums Σ a^(p−j) b^j (binomial expansion of (a + λb)^p)."""
    def s(p, j):
        return np.asarray(stats[f"{prefix}{p}{j}"], dtype=np.float64)

    if f.weight == "none":
        return [s(p, 0) for p in (1, 2, 3)]
    if f.weight == "ssim":
        return [s(p, p) for p in (1, 2, 3)]
    return [sum(comb(p, j) * f.lam ** j * s(p, j) for j in range(p + 1)) for p in (1, 2, 3)]


def paper_form_features(stats: dict[str, np.ndarray], f: PaperForm = PaperForm()) -> np.ndarray:
    """DiffPathV2's six features (N, 6) for the switches ``f`` (see :class:`PaperForm`)."""
    prefix = f"pf_{f.noise}_{f.error}_{f.ssim_pair}_"
    if f"{prefix}e10" not in stats:
        raise KeyError(f"statistics lack the {f.noise!r} reading of the paper form: extract them with "
                       f"reading={f.noise!r} (the detector's path_statistics does)")
    return np.column_stack(_weighted_power_sums(stats, prefix + "e", f) + _weighted_power_sums(stats, prefix + "d", f))


# ----------------------------------------------------------------------------- this project's variants

@dataclass(frozen=True)
class VariantFormulation:
    """This project's own DiffPathV2-inspired formulations (not the paper's form; see the Method page).

    error:     "score" — score error r_k = ε_k − ε̃_k;  "eps" — raw noise estimate ε_k (DiffPath's map)
    ssim:      "amplify" — A = (1 + λD) ⊙ e²;  "product" — A = D ⊙ e²;  "off" — A = e²
    lam:       λ of "amplify"
    aggregate: "summed" — statistics summed over steps;  "per_step" — one value per step
    dims:      "1d" — √ΣA (KDE);  "multi" — several statistics (GMM)
    """

    error: str = "score"
    ssim: str = "amplify"
    lam: float = 1.0
    aggregate: str = "summed"
    dims: str = "multi"

    def __post_init__(self):
        checks = {"error": ("score", "eps"), "ssim": ("amplify", "product", "off"),
                  "aggregate": ("summed", "per_step"), "dims": ("1d", "multi")}
        for name, allowed in checks.items():
            _check_choice("VariantFormulation", name, getattr(self, name), allowed)
        if self.aggregate == "per_step" and self.dims == "1d":
            raise ValueError("a per-step formulation has K values per image: use dims='multi' (GMM)")
        if self.lam < 0:
            raise ValueError(f"λ must be non-negative, got {self.lam}")

    readings = ("path",)

    def label(self) -> str:
        ssim = {"amplify": f"(1+{self.lam:g}D)", "product": "D", "off": "1"}[self.ssim]
        err = "r" if self.error == "score" else "ε"
        return f"{ssim}·{err}², {self.aggregate}, {self.dims}"

    def as_dict(self) -> dict:
        return asdict(self)


def amplified_error(stats: dict[str, np.ndarray], f: VariantFormulation) -> np.ndarray:
    """Σ_pixels A_k per image and step (N, K) for formulation ``f``."""
    base = "err" if f.error == "score" else "eps"
    e2 = np.asarray(stats[f"{base}_s2"])
    de2 = np.asarray(stats["d_err2" if f.error == "score" else "d_eps2"])
    if f.ssim == "off":
        return e2
    if f.ssim == "product":
        return de2
    return e2 + f.lam * de2


def variant_features(stats: dict[str, np.ndarray], f: VariantFormulation = VariantFormulation()) -> np.ndarray:
    """Features of a variant formulation ``f``: (N, 1) for "1d", (N, d) for "multi".

    1d/summed:     √(Σ_k Σ A_k)
    multi/summed:  (√ΣA, Σe, cbrt Σe³, Σ|e|, ΣD)   over steps and pixels
    multi/per_step: (log ΣA_k for each k, ΣD_k for each k)
    """
    a = amplified_error(stats, f)
    base = "err" if f.error == "score" else "eps"
    d = np.asarray(stats["d_sum"])
    if f.aggregate == "summed":
        if f.dims == "1d":
            return np.sqrt(a.sum(1))[:, None]
        return np.column_stack([np.sqrt(a.sum(1)), np.asarray(stats[f"{base}_s1"]).sum(1),
                                np.cbrt(np.asarray(stats[f"{base}_s3"]).sum(1)),
                                np.asarray(stats[f"{base}_abs"]).sum(1), d.sum(1)])
    return np.column_stack([np.log(np.maximum(a, 1e-12)), d])


def reconstruction_score(stats: dict[str, np.ndarray]) -> np.ndarray:
    """Baseline score with no density model: −mean_k ‖x0 − x̂0_k‖² (higher = better reconstructed = more ID)."""
    return -np.asarray(stats["rec_s2"]).mean(1)


# ----------------------------------------------------------------------------- this project's spatial detector

CELL_CHANNELS = {  # which per-pixel sums (statistics.MAP_QUANTITIES, both step groups) a cell keeps
    "score error": ("score", "score_ssim", "ssim"),  # DiffPathV2's evidence: |r|, D|r| and D
    "noise": ("eps", "deps"),                        # DiffPath's: |ε| and |KΔε|
    "all": MAP_QUANTITIES,
}
CELL_TRANSFORMS = ("log1p", "sqrt")
CELL_DENSITIES = ("gmm", "knn", "knn-any")


@dataclass(frozen=True)
class CellForm:
    """Where the path departs, kept on a grid of cells: this project's spatial features (not a paper's).

    - ``grid``: cells per side, 8 (the "cells" reading's own grid: 4 × 4 pixels at 32 × 32) or 4 (2 × 2 of them
      averaged);
    - ``channels``: which per-pixel sums each cell keeps, both step groups (:data:`CELL_CHANNELS`);
    - ``transform``: "log1p" or "sqrt" of the (non-negative) cell means;
    - ``density``: "gmm", whitened PCA of the whole grid to ``dims`` dimensions and the compact GMM; "knn", the
      image's worst cell, by the distance of its vector to the nearest ID-train cell at the same position; or
      "knn-any", to the nearest at any position (PatchCore's memory);
    - ``with_global``: DiffPathV2-PS's per-step statistics beside the cells ("gmm" only).
    """

    grid: int = 8
    channels: str = "all"
    transform: str = "log1p"
    density: str = "gmm"
    dims: int = 32
    with_global: bool = False

    def __post_init__(self):
        for name, allowed in (("grid", (4, 8)), ("channels", tuple(CELL_CHANNELS)), ("transform", CELL_TRANSFORMS),
                              ("density", CELL_DENSITIES)):
            _check_choice("CellForm", name, getattr(self, name), allowed)
        if self.dims < 1:
            raise ValueError(f"CellForm.dims must be at least 1, got {self.dims}")
        if self.with_global and self.density != "gmm":
            raise ValueError("global statistics go beside the cells in the GMM only (density='gmm')")

    @property
    def readings(self) -> tuple[str, ...]:
        return ("path", "cells") if self.with_global else ("cells",)

    @property
    def n_channels(self) -> int:
        return len(CELL_CHANNELS[self.channels]) * len(MAP_GROUPS)

    def label(self) -> str:
        how = {"gmm": f"PCA {self.dims} + GMM", "knn": "worst cell, nearest ID cell there",
               "knn-any": "worst cell, nearest ID cell anywhere"}[self.density]
        extra = ", + global path statistics" if self.with_global else ""
        return f"{self.grid}×{self.grid} cells, {self.channels}, {self.transform}, {how}{extra}"

    def as_dict(self) -> dict:
        return asdict(self)


def cell_vectors(stats: dict[str, np.ndarray], form: CellForm) -> np.ndarray:
    """Each image's cells as (N, grid², channels): the chosen sums, averaged over each cell, transformed."""
    if "cell_sums" not in stats:
        raise KeyError("statistics lack the cell sums this detector reads: extract them with the 'cells' reading "
                       "(reading='cells'; it rides in the path pass, no extra network evaluation)")
    sums = np.asarray(stats["cell_sums"], dtype=np.float64)  # (N, quantities × groups, 8, 8)
    keep = [map_index(q, g) for g in MAP_GROUPS for q in CELL_CHANNELS[form.channels]]
    x = sums[:, keep]
    n, c, side, _ = x.shape
    if form.grid != side:
        f = side // form.grid
        x = x.reshape(n, c, form.grid, f, form.grid, f).mean(axis=(3, 5))
    x = np.log1p(np.maximum(x, 0.0)) if form.transform == "log1p" else np.sqrt(np.maximum(x, 0.0))
    return x.reshape(n, c, -1).transpose(0, 2, 1)


def cell_features(stats: dict[str, np.ndarray], form: CellForm) -> np.ndarray:
    """The spatial detector's features (N, d): the cell vectors flattened (cell by cell), and with ``with_global``
    DiffPathV2-PS's per-step statistics after them."""
    x = cell_vectors(stats, form)
    flat = x.reshape(len(x), -1)
    if form.with_global:
        flat = np.column_stack([flat, variant_features(stats, VariantFormulation("score", "off", 0.0, "per_step",
                                                                                 "multi"))])
    return flat
