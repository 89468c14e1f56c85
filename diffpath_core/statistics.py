"""Path statistics: what one trajectory leaves per image, computed in torch, cached and versioned.

One trajectory yields, per image, sums over pixels of a handful of maps, folded in step by step as the network
makes them (:class:`PathStatistics`) (ε, Δε, the score error r, the SSIM
dissimilarity D, and the power sums the paper form needs). They are small, exact, and enough to form
DiffPath's twelve statistics, DiffPathV2's six features for every switch (true-noise reading, SSIM pair,
weight w = 1+λD / D / 1 for any λ, score error or raw ε) and this project's variants
(:mod:`diffpath_core.features`, NumPy), without running the network again. Anything that changes these
numbers bumps :data:`STATS_VERSION`, so old cache entries miss instead of being misread.

Paper form (see the Method page): with a = the error map e_k and b = D_k ⊙ e_k, the weighted map is
E_k = w(D_k) ⊙ e_k = a + λb (w = 1+λD), b (w = D) or a (w = 1), so

    Σ_pixels E_k^p = Σ_j C(p, j) λ^j Σ_pixels a^(p−j) b^j,      p = 1, 2, 3,

and the same for ∂E_k = K (E_k+1 − E_k) = K Δa + λ K Δb. Storing the nine sums Σ a^(p−j) b^j of both
(summed over steps) keeps every λ exact.
"""
from __future__ import annotations

import numpy as np
import torch

from .trajectory import NoisedEstimates, Step, Trajectory, inversion_steps, noised_steps

STATS_VERSION = "pathstats-v4"  # bump when PathStatistics changes: old cache entries then miss
READINGS = ("path", "fresh", "maps", "mapref", "cells")  # what one extraction can produce (see PASSES)
# "path": statistics of the DDIM inversion (every method); "fresh": of forward-noised copies (DiffPathV2's other
# reading of "true noise"); "maps": per-pixel sums for anomaly maps; "mapref": their moments over a set (the
# reference a map is normalised by); "cells": the per-pixel sums averaged over a grid of cells (where on the image
# the path departs, compactly, for this project's spatial detector). Readings of one pass share its network
# evaluations.
PASSES = {"path": "path", "maps": "path", "mapref": "path", "cells": "path", "fresh": "fresh"}
# Readings a cached pass keeps even when it runs for another one: the cells cost about 1 % of the path pass's time
# and 3 KB an image, so a later request for them (SpatialPath after DiffPathV2) reads the cache instead of running
# the trajectories again.
RIDERS = ("cells",)
CELL_GRID = 8  # the "cells" reading's grid: 8 × 8 cells whatever the image size (4 × 4 pixels at 32 × 32)
TOTALS = ("mapref",)  # readings whose rows are sums over a batch, not one row per image
ERROR_MAPS = ("score", "eps")   # the score error r_k, or the raw ε_k (an ablation)
SSIM_PAIRS = ("image", "noise")  # D from SSIM(x0, x̂0_k), or from SSIM(ε̃_k, ε_k)


def check_reading(reading: str) -> str:
    """``reading`` if it is one of :data:`READINGS`; otherwise a ValueError that names them."""
    if reading not in READINGS:
        raise ValueError(f"reading must be one of {READINGS}, got {reading!r}")
    return reading


# ----------------------------------------------------------------------------- SSIM

SSIM_WINDOW = 11  # Gaussian window, sigma 1.5 (kornia's and scikit-image's convention)


def _symmetric_pad(x: torch.Tensor, r: int) -> torch.Tensor:
    """Half-sample symmetric padding (scipy's 'reflect': … b a | a b …), which torch lacks."""
    x = torch.cat([x[..., :r].flip(-1), x, x[..., -r:].flip(-1)], dim=-1)
    return torch.cat([x[..., :r, :].flip(-2), x, x[..., -r:, :].flip(-2)], dim=-2)


def ssim_map(a: torch.Tensor, b: torch.Tensor, data_range: float = 2.0) -> torch.Tensor:
    """Per-pixel SSIM of two (N, C, H, W) batches, per channel then averaged over channels → (N, 1, H, W).

    Wang et al.'s formula with a Gaussian window (σ = 1.5, 11 taps) on symmetrically padded images, 'valid'
    mode: the same map, borders included, as scikit-image's
    ``structural_similarity(full=True, gaussian_weights=True, sigma=1.5, use_sample_covariance=False)``.
    The five local moments are filtered in one call of kornia's separable filter (two 11-tap passes instead
    of kornia.metrics.ssim's 11×11 convolution, about five times fewer operations; same values).
    """
    import kornia

    r = SSIM_WINDOW // 2
    a, b = a.float(), b.float()
    c = a.shape[1]
    window = kornia.filters.get_gaussian_kernel1d(SSIM_WINDOW, 1.5, device=a.device, dtype=a.dtype)  # (1, 11)
    stacked = torch.cat([a, b, a * a, b * b, a * b], dim=1)
    mu_a, mu_b, aa, bb, ab = kornia.filters.filter2d_separable(
        _symmetric_pad(stacked, r).contiguous(), window, window, padding="valid").split(c, dim=1)
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    var_a, var_b, cov = aa - mu_a * mu_a, bb - mu_b * mu_b, ab - mu_a * mu_b
    s = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a * mu_a + mu_b * mu_b + c1) * (var_a + var_b + c2))
    return s.mean(dim=1, keepdim=True)


def dissimilarity(x0: torch.Tensor, x0_hat: torch.Tensor) -> torch.Tensor:
    """D = (1 − SSIM)/2 ∈ [0, 1]: DiffPathV2's spatial attention on where the denoiser fails."""
    return (1.0 - ssim_map(x0, x0_hat)) * 0.5


# ----------------------------------------------------------------------------- maps along a trajectory

def score_error(traj: Trajectory | NoisedEstimates) -> torch.Tensor:
    """r_k = ε_k − ε̃_k = √(ᾱ_k/(1−ᾱ_k)) (x0 − x̂0_k), (B, K, C, H, W): model noise minus the true noise.

    The identity holds for both readings of "true noise" (the noise the path state carries, or the fresh
    noise of a forward-noised copy), since ε_k is always (x_k − √ᾱ_k x̂0_k)/√(1−ᾱ_k).
    """
    c = traj.schedule.coefficients(traj.eps.device)
    return c["snr_sqrt"].view(1, -1, 1, 1, 1) * (traj.x0[:, None] - traj.x0_hat)


def _pairwise_dissimilarity(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """D between two (B, K, C, H, W) stacks, step by step → (B, K, 1, H, W)."""
    bsz, k, ch, h, w = b.shape
    flat = dissimilarity(a.expand_as(b).reshape(bsz * k, ch, h, w), b.reshape(bsz * k, ch, h, w))
    return flat.reshape(bsz, k, 1, h, w)


def dissimilarity_maps(traj: Trajectory | NoisedEstimates) -> torch.Tensor:
    """D_k between the image and each denoised estimate x̂0_k, (B, K, 1, H, W): the "image" SSIM pair."""
    return _pairwise_dissimilarity(traj.x0[:, None], traj.x0_hat)


def noise_dissimilarity_maps(traj: Trajectory | NoisedEstimates) -> torch.Tensor:
    """D_k between the true noise ε̃_k and the model's ε_k, (B, K, 1, H, W): the "noise" SSIM pair.

    Same window and constants as for images (data range 2); for unit-variance noise the constants are small
    against the local variances, so the map is close to the local correlation of the two noise fields.
    """
    return _pairwise_dissimilarity(traj.true_noise, traj.eps)


# ----------------------------------------------------------------------------- path statistics

SUM_BLOCK = 2048  # float32 partial sums over this many entries, then float64 across blocks


def pixel_sum(t: torch.Tensor) -> torch.Tensor:
    """Σ over all but the first dim of a (B, …) map → (B,) float64, without a float64 copy of the map.

    Sums of thousands of signed terms can nearly cancel, so they must not lose float32's digits to the order
    of addition: entries are summed in float32 within blocks of :data:`SUM_BLOCK` (each block's rounding error
    is ~1e-6 of its absolute sum) and the block sums in float64. ``t.sum(dtype=float64)`` would first make a
    float64 copy of the whole map.
    """
    flat = t.float().reshape(t.shape[0], -1)
    n = flat.shape[-1]
    if n <= SUM_BLOCK:
        return flat.sum(-1).double()
    if n % SUM_BLOCK:  # zeros complete the last block (a float32 copy, only for odd sizes)
        flat = torch.nn.functional.pad(flat, (0, SUM_BLOCK - n % SUM_BLOCK))
    return flat.reshape(t.shape[0], -1, SUM_BLOCK).sum(-1).double().sum(-1)


def _moments(t: torch.Tensor) -> dict[str, torch.Tensor]:
    """Σ t, Σ|t|, Σ t², Σ t³ over the pixels of each image of one step: (B, …) → (B,) float64 each."""
    sq = t * t
    return {"s1": pixel_sum(t), "abs": pixel_sum(t.abs()), "s2": pixel_sum(sq), "s3": pixel_sum(sq * t)}


def _power_sums(a: torch.Tensor, bs: dict[str, torch.Tensor]) -> dict[tuple, torch.Tensor]:
    """{(name, p, j): Σ_pixels a^(p−j) b^j} for 1 ≤ p ≤ 3, 0 ≤ j ≤ p and each map b of ``bs``, for one step;
    (B,) float64 each. Products are float32 and made one at a time; the powers of a serve every b."""
    pa = {1: a, 2: a * a}
    pa[3] = pa[2] * a
    alone = {p: pixel_sum(pa[p]) for p in (1, 2, 3)}  # j = 0: the same for every b
    out = {}
    for name, b in bs.items():
        pb = {1: b, 2: b * b}
        pb[3] = pb[2] * b
        for p in (1, 2, 3):
            out[name, p, 0] = alone[p]
            for j in range(1, p + 1):
                out[name, p, j] = pixel_sum(pb[j] if j == p else pa[p - j] * pb[j])
    return out


class PathStatistics:
    """Per-image statistics of one reading, accumulated step by step: memory is a few maps of one step, whatever
    K and the image size (the steps need not be kept).

    ``reading="path"`` (the DDIM inversion) gives::

        eps_*   (B, K)   moments of ε_k (s1 = Σ, abs = Σ|·|, s2 = Σ·², s3 = Σ·³ over channels and pixels)
        deps_*  (B, K−1) moments of Δε_k = K (ε_k+1 − ε_k)
        err_*   (B, K)   moments of the score error r_k = ε_k − ε̃_k (noise units)
        d_sum   (B, K)   Σ D_k (per pixel, channel-averaged SSIM dissimilarity of x0 and x̂0_k)
        d_err2  (B, K)   Σ_c,pixels D_k r_k²       d_eps2 (B, K)  Σ D_k ε_k²
        rec_s2  (B, K)   Σ (x0 − x̂0_k)²: the reconstruction error (a baseline, not part of either method)
        border_mean (B,) mean of x0 over its outer frame (a trivial baseline, see :func:`border_mean`)

    and ``"fresh"`` (forward-noised copies) ``fresh_err_s2`` (B, K) = Σ r_k². Both add the paper form's power
    sums ``pf_{reading}_{error}_{pair}_e{p}{j}`` = Σ_k Σ_pixels e_k^(p−j) (D_k e_k)^j and ``…_d{p}{j}`` the same
    of K Δe_k and K Δ(D_k e_k), for ``error`` the score error r ("score") or the raw ε ("eps") and ``pair`` the
    SSIM pair (x0, x̂0_k) ("image") or (ε̃_k, ε_k) ("noise"). All float64, on the steps' device.
    """

    def __init__(self, schedule, x0: torch.Tensor, reading: str = "path"):
        self.reading, self.k = check_reading(reading), schedule.k
        self.x0 = x0.float()
        self.snr_sqrt = schedule.coefficients(self.x0.device)["snr_sqrt"]
        self.per_step: dict[str, list] = {}
        zero = torch.zeros(x0.shape[0], dtype=torch.float64, device=x0.device)
        self.totals = {f"pf_{reading}_{err}_{pair}_{kind}{p}{j}": zero.clone() for err in ERROR_MAPS
                       for pair in SSIM_PAIRS for kind in "ed" for p in (1, 2, 3) for j in range(p + 1)}
        self.previous: dict | None = None

    def _record(self, name: str, value: torch.Tensor) -> None:
        self.per_step.setdefault(name, []).append(value)

    def add(self, step: Step) -> tuple:
        """Fold one step in (steps in order, 0 … K−1); returns (r, D, ε, x̂0) of the step for other accumulators."""
        eps, x0_hat = step.eps.float(), step.x0_hat.float()
        r = self.snr_sqrt[step.index] * (self.x0 - x0_hat)
        d_image = dissimilarity(self.x0, x0_hat)
        if self.reading == "path":
            for name, value in _moments(eps).items():
                self._record(f"eps_{name}", value)
            if self.previous is not None:
                for name, value in _moments(self.k * (eps - self.previous["eps"][0])).items():
                    self._record(f"deps_{name}", value)
            for name, value in _moments(r).items():
                self._record(f"err_{name}", value)
            self._record("rec_s2", pixel_sum((self.x0 - x0_hat) ** 2))
            self._record("d_sum", pixel_sum(d_image))
            self._record("d_err2", pixel_sum(d_image * r * r))
            self._record("d_eps2", pixel_sum(d_image * eps * eps))
        else:
            self._record("fresh_err_s2", pixel_sum(r * r))
        pairs = {"image": d_image, "noise": dissimilarity(step.true_noise.float(), eps)}  # SSIM_PAIRS
        current = {}
        for err, e in (("score", r), ("eps", eps)):  # ERROR_MAPS
            bs = {pair: d * e for pair, d in pairs.items()}
            current[err] = (e, bs)
            self._add_power_sums(f"pf_{self.reading}_{err}_", "e", e, bs)
            if self.previous is not None:
                e_prev, bs_prev = self.previous[err]
                rates = {pair: self.k * (b - bs_prev[pair]) for pair, b in bs.items()}
                self._add_power_sums(f"pf_{self.reading}_{err}_", "d", self.k * (e - e_prev), rates)
        self.previous = current  # current["eps"][0] is ε_k itself
        return r, d_image, eps, x0_hat

    def _add_power_sums(self, prefix: str, kind: str, a: torch.Tensor, bs: dict[str, torch.Tensor]) -> None:
        for (pair, p, j), value in _power_sums(a, bs).items():
            self.totals[f"{prefix}{pair}_{kind}{p}{j}"] += value

    def result(self) -> dict[str, torch.Tensor]:
        """The statistics of every step added so far (see the class docstring)."""
        b = self.x0.shape[0]
        out = {name: torch.stack(values, dim=1) for name, values in self.per_step.items()}
        if self.reading == "path":
            for name in ("s1", "abs", "s2", "s3"):  # K = 1: no rate of change
                out.setdefault(f"deps_{name}", torch.zeros(b, 0, dtype=torch.float64, device=self.x0.device))
            out["border_mean"] = border_mean(self.x0)
        return {**out, **self.totals}


def path_statistics(traj: Trajectory) -> dict[str, torch.Tensor]:
    """:class:`PathStatistics` of a stored DDIM trajectory (the extraction streams the steps instead)."""
    acc = PathStatistics(traj.schedule, traj.x0, "path")
    for step in traj.steps():
        acc.add(step)
    return acc.result()


def fresh_noise_statistics(est: NoisedEstimates) -> dict[str, torch.Tensor]:
    """:class:`PathStatistics` of the fresh-noise reading's stored steps."""
    acc = PathStatistics(est.schedule, est.x0, "fresh")
    for step in est.steps():
        acc.add(step)
    return acc.result()


def border_mean(x0: torch.Tensor) -> torch.Tensor:
    """Mean of each image over its outer frame, side // 8 pixels wide (4 at 32×32), float64 (B,).

    Not part of any method: a one-number baseline that shows what a pair does not prove. MNIST digits are
    centred on a black frame, Fashion-MNIST garments reach the edges, so this alone separates them.
    """
    w = max(1, x0.shape[-1] // 8)
    frame = torch.ones(x0.shape[-2:], dtype=torch.bool, device=x0.device)
    frame[w:-w, w:-w] = False
    return x0.float()[..., frame].double().mean((1, 2))


def to_numpy(stats: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
    return {k: v.detach().cpu().numpy() for k, v in stats.items()}


def reading_statistics(model, x: torch.Tensor, reading: str = "path", k: int = 10, clip: bool = True,
                       precision: str = "fp32", network=None, noise_seed: int = 0) -> dict[str, torch.Tensor]:
    """Statistics of one batch for one reading, in the calling thread: nothing is sharded or cached here, and no
    step is kept (each is folded into :class:`PathStatistics` as it is made).

    ``reading="path"``: the DDIM inversion; ``"fresh"``: K forward-noised copies (noise seeded by image content
    and ``noise_seed``).
    """
    return batch_readings(model, x, (check_reading(reading),), k, clip, precision, network, noise_seed)[reading]


def batch_readings(model, x: torch.Tensor, readings, k: int = 10, clip: bool = True, precision: str = "fp32",
                   network=None, noise_seed: int = 0) -> dict[str, dict[str, torch.Tensor]]:
    """Every requested reading of one batch, {reading: statistics}; readings of one pass (:data:`PASSES`) share
    its K network evaluations, so statistics and anomaly-map sums of the same images cost one trajectory."""
    readings = tuple(dict.fromkeys(check_reading(r) for r in readings))
    out: dict[str, dict[str, torch.Tensor]] = {}
    with torch.inference_mode():
        if any(PASSES[r] == "path" for r in readings):
            stats = maps = None
            for step in inversion_steps(model, x, k, clip, precision, network):
                if stats is None and "path" in readings:
                    stats = PathStatistics(model.schedule(k), x.to(step.x.device), "path")
                if maps is None and any(r in readings for r in ("maps", "mapref", "cells")):
                    maps = MapSums(model.schedule(k), x.to(step.x.device))
                shared = stats.add(step) if stats is not None else None
                if maps is not None:
                    maps.add(step, shared)
            if stats is not None:
                out["path"] = stats.result()
            if maps is not None:
                out.update({r: maps.result(r) for r in ("maps", "mapref", "cells") if r in readings})
        if "fresh" in readings:
            acc = None
            for step in noised_steps(model, x, k, clip, precision, network, noise_seed):
                if acc is None:
                    acc = PathStatistics(model.schedule(k), x.to(step.x.device), "fresh")
                acc.add(step)
            out["fresh"] = acc.result()
    return out


# ----------------------------------------------------------------------------- anomaly-map sums

MAP_QUANTITIES = ("score", "score_ssim", "recon", "ssim", "eps", "deps")
MAP_GROUPS = ("early", "late")  # steps k < K/2 (little noise added), and the rest


def map_index(quantity: str, group: str) -> int:
    """Where a quantity of a step group sits among the :data:`MAP_QUANTITIES` × :data:`MAP_GROUPS` map sums."""
    return MAP_GROUPS.index(group) * len(MAP_QUANTITIES) + MAP_QUANTITIES.index(quantity)


class MapSums:
    """Per-pixel sums over the steps of each group, channel-averaged, of what anomaly maps are made of::

        score       |r_k|                 the score error
        score_ssim  D_k |r_k|             its SSIM-weighted part (w = 1 + λD gives score + λ score_ssim)
        recon       |x0 − x̂0_k|          the reconstruction error (r_k without the √(ᾱ/(1−ᾱ)) weight)
        ssim        D_k                   the SSIM dissimilarity of x0 and x̂0_k
        eps         |ε_k|                 DiffPath's noise estimate
        deps        |K (ε_k − ε_k−1)|     its rate of change (from the second step on)

    for the early and late steps: (B, 12, H, W). Folded in step by step like :class:`PathStatistics`, from the same
    maps when both run. ``result("maps")`` gives the sums of each image (float16: maps need three digits);
    ``result("mapref")`` their count, sum and sum of outer products over the batch (float64), from which a set's
    per-pixel mean and covariance follow (:mod:`diffpath_core.maps`); ``result("cells")`` each image's sums
    averaged over :data:`CELL_GRID` × :data:`CELL_GRID` cells, (B, 12, g, g) float32 (``cell_sums``).
    """

    def __init__(self, schedule, x0: torch.Tensor):
        self.k, self.x0 = schedule.k, x0.float()
        self.snr_sqrt = schedule.coefficients(self.x0.device)["snr_sqrt"]
        b, _, h, w = x0.shape
        self.sums = torch.zeros(b, len(MAP_QUANTITIES) * len(MAP_GROUPS), h, w, device=x0.device)
        self.previous_eps: torch.Tensor | None = None

    def add(self, step: Step, shared: tuple | None = None) -> None:
        """Fold one step in; ``shared`` = (r, D, ε, x̂0) when :class:`PathStatistics` has computed them already."""
        if shared is None:
            eps, x0_hat = step.eps.float(), step.x0_hat.float()
            r = self.snr_sqrt[step.index] * (self.x0 - x0_hat)
            d = dissimilarity(self.x0, x0_hat)
        else:
            r, d, eps, x0_hat = shared
        group = MAP_GROUPS[0] if step.index < self.k / 2 else MAP_GROUPS[1]
        abs_r = r.abs().mean(1)
        d = d[:, 0]
        parts = {"score": abs_r, "score_ssim": d * abs_r, "recon": (self.x0 - x0_hat).abs().mean(1), "ssim": d,
                 "eps": eps.abs().mean(1)}
        if self.previous_eps is not None:
            parts["deps"] = (self.k * (eps - self.previous_eps)).abs().mean(1)
        for quantity, value in parts.items():
            self.sums[:, map_index(quantity, group)] += value
        self.previous_eps = eps

    def result(self, reading: str) -> dict[str, torch.Tensor]:
        if reading == "maps":
            return {"map_sums": self.sums.half()}
        if reading == "cells":
            return {"cell_sums": torch.nn.functional.adaptive_avg_pool2d(self.sums, CELL_GRID)}
        a = self.sums.double()
        return {"map_n": torch.tensor([a.shape[0]], dtype=torch.float64, device=a.device),
                "map_s1": a.sum(0, keepdim=True),
                "map_s2": torch.einsum("bihw,bjhw->ijhw", a, a)[None]}
