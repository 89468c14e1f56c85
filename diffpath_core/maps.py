"""Anomaly maps from the per-pixel sums one trajectory leaves (:class:`statistics.MapSums`), in NumPy.

A map is a linear combination of the sums (which quantity, which steps, which SSIM weight: :class:`MapForm`),
optionally normalised per pixel against the same combination on ID-train images (divided by their mean, or
z-scored; the ID images' per-pixel mean and standard deviation follow from the sums' means and covariances, so
one reference serves every form), then smoothed with a Gaussian. Higher = more anomalous. Cheap and free to
change, like the features: a new form needs no new trajectory.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from .statistics import MAP_GROUPS, MAP_QUANTITIES, map_index

MAP_WEIGHTS = ("none", "amplify", "ssim")
MAP_STEPS = ("all", "early", "late")
MAP_NORMALISATIONS = ("none", "ratio", "z")
MAP_SMOOTHING = (0.0, 1.0, 2.0, 3.0)


@dataclass(frozen=True)
class MapForm:
    """Which per-pixel quantity, summed over which steps, weighted how, normalised and smoothed how.

    - ``quantity``: "score" (``|r_k|``, the score error), "recon" (``|x0 − x̂0_k|``), "ssim" (D_k), "eps"
      (``|ε_k|``) or "deps" (``|K Δε_k|``);
    - ``weight`` (score only): "none"; "amplify", ``(1 + λD_k)|r_k|``; "ssim", ``D_k |r_k|``;
    - ``steps``: "all", "early" (k < K/2) or "late";
    - ``normalise``: against ID-train images, per pixel: "none"; "ratio", divided by their mean; "z", minus their
      mean, divided by their standard deviation. Means and deviations are floored at their median over the
      pixels, so a pixel the ID images never vary at (a black background) does not turn noise into alarms;
    - ``smooth``: standard deviation of the Gaussian smoothing, in pixels at the model's size (0: none).
    """

    quantity: str = "score"
    weight: str = "none"
    lam: float = 0.0
    steps: str = "all"
    normalise: str = "none"
    smooth: float = 0.0

    def __post_init__(self):
        for name, allowed in (("quantity", ("score", "recon", "ssim", "eps", "deps")), ("weight", MAP_WEIGHTS),
                              ("steps", MAP_STEPS), ("normalise", MAP_NORMALISATIONS)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"MapForm.{name} must be one of {allowed}, got {getattr(self, name)!r}")
        if self.weight != "none" and self.quantity != "score":
            raise ValueError("an SSIM weight applies to the score error only (quantity='score')")
        if self.lam < 0 or self.smooth < 0:
            raise ValueError("λ and the smoothing width are non-negative")

    def coefficients(self) -> np.ndarray:
        """The map as weights on the :data:`MAP_QUANTITIES` × :data:`MAP_GROUPS` sums."""
        c = np.zeros(len(MAP_QUANTITIES) * len(MAP_GROUPS))
        groups = MAP_GROUPS if self.steps == "all" else (self.steps,)
        for group in groups:
            if self.weight == "ssim":
                c[map_index("score_ssim", group)] = 1.0
            else:
                c[map_index(self.quantity, group)] = 1.0
                if self.weight == "amplify":
                    c[map_index("score_ssim", group)] = self.lam
        return c

    def label(self) -> str:
        what = {"score": "|r|", "recon": "|x0−x̂0|", "ssim": "D", "eps": "|ε|", "deps": "|Δε|"}[self.quantity]
        if self.weight == "amplify":
            what = f"(1+{self.lam:g}D)|r|"
        elif self.weight == "ssim":
            what = "D|r|"
        extra = [] if self.steps == "all" else [f"{self.steps} steps"]
        extra += [{"z": "z-scored", "ratio": "÷ ID mean", "none": "raw"}[self.normalise]]
        extra += [f"smoothed σ={self.smooth:g}"] if self.smooth else []
        return f"Σ {what}, " + ", ".join(extra)

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class CellMap:
    """The map of this project's spatial detector (:class:`api.SpatialPath`): each cell's distance to the nearest
    ID-train cell at its position, on a ``grid`` × ``grid`` grid, upsampled bilinearly to the image."""

    grid: int

    def label(self) -> str:
        return f"{self.grid}×{self.grid} cells' distance to the nearest ID-train cell there, upsampled"

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class MapReference:
    """Per-pixel mean (G, H, W) and covariance (G, G, H, W) of the map sums over a set of ID images."""

    n: int
    mean: np.ndarray
    cov: np.ndarray

    @classmethod
    def from_totals(cls, stats: dict[str, np.ndarray]) -> "MapReference":
        """From a "mapref" reading: rows of counts, sums and sums of outer products, one row per batch."""
        n = float(np.sum(stats["map_n"]))
        if n < 2:
            raise ValueError("a map reference needs at least two ID images")
        mean = np.sum(stats["map_s1"], axis=0) / n
        cov = np.sum(stats["map_s2"], axis=0) / n - np.einsum("ihw,jhw->ijhw", mean, mean)
        return cls(int(n), mean, cov)

    def moments(self, form: MapForm) -> tuple[np.ndarray, np.ndarray]:
        """Per-pixel mean and standard deviation (H, W) of ``form``'s unsmoothed map over the reference images."""
        c = form.coefficients()
        var = np.einsum("i,ijhw,j->hw", c, self.cov, c)
        return np.einsum("i,ihw->hw", c, self.mean), np.sqrt(np.maximum(var, 0.0))


def anomaly_maps(sums: np.ndarray, form: MapForm, reference: MapReference | None = None) -> np.ndarray:
    """(N, H, W) maps, higher = more anomalous, from (N, G, H, W) map sums."""
    from scipy.ndimage import gaussian_filter

    maps = np.einsum("i,nihw->nhw", form.coefficients(), np.asarray(sums, dtype=np.float64))
    if form.normalise != "none":
        if reference is None:
            raise ValueError(f"{form.label()}: a normalised map needs the ID-train reference (fit first)")
        mean, std = reference.moments(form)
        if form.normalise == "ratio":
            maps = maps / _floored(mean)
        else:
            maps = (maps - mean) / _floored(std)
    if form.smooth:
        maps = gaussian_filter(maps, sigma=(0, form.smooth, form.smooth), mode="nearest")
    return maps


def _floored(values: np.ndarray) -> np.ndarray:
    """``values`` raised to at least their median over the pixels (and never to zero)."""
    floor = max(float(np.median(values)), 1e-6 * max(float(values.max()), 1e-12), 1e-12)
    return np.maximum(values, floor)


def map_candidates(family: str) -> list[MapForm]:
    """The forms a method's map is chosen from, simplest first (this order is the tie band's order of
    simplicity): fewer estimated reference quantities first (raw, then ÷ ID mean, then z-scored), then less
    smoothing (σ = 0, 1, 2, 3 pixels), then all steps before early or late ones, then the quantities and weights
    in the order listed per family.

    - "DiffPath": what DiffPath reads, ``|ε|`` and its rate ``|Δε|``;
    - "DiffPathV2": the SSIM-weighted score error, w = 1 + λD (λ = 1, 0.5, 2, 4) or D (SSIM stays on, as in the
      paper; the unweighted ``|r|`` is a separate ablation family, "score error, SSIM off");
    - "variant": this project's maps, the score error unweighted, the reconstruction error and D alone.
    """
    if family == "DiffPath":
        heads = [("eps", "none", 0.0), ("deps", "none", 0.0)]
    elif family == "DiffPathV2":
        heads = [("score", "amplify", lam) for lam in (1.0, 0.5, 2.0, 4.0)] + [("score", "ssim", 0.0)]
    elif family == "score error, SSIM off":
        heads = [("score", "none", 0.0)]
    elif family == "variant":
        heads = [("score", "none", 0.0), ("recon", "none", 0.0), ("ssim", "none", 0.0)]
    else:
        raise ValueError(f"unknown map family {family!r}")
    return [MapForm(q, w, lam, steps, norm, smooth) for norm in MAP_NORMALISATIONS for smooth in MAP_SMOOTHING
            for steps in MAP_STEPS for q, w, lam in heads]
