"""Path statistics: what one trajectory leaves per image, computed in torch, cached and versioned.

One trajectory yields, per image, sums over pixels of a handful of maps (ε, Δε, the score error r, the SSIM
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

from .trajectory import NoisedEstimates, Trajectory, invert, noised_estimates

STATS_VERSION = "pathstats-v3"  # bump when path_statistics changes: old cache entries then miss
READINGS = ("path", "fresh")    # "path": the DDIM inversion (every method); "fresh": forward-noised copies
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

def _sum64(t: torch.Tensor, dims) -> torch.Tensor:
    """Sum of a float32 map accumulated in float64: products stay float32 (7 digits each, plenty for a power
    of a pixel), while sums of thousands of signed terms, which can nearly cancel, keep float64's digits."""
    return t.sum(dims, dtype=torch.float64)


def _moments(t: torch.Tensor, prefix: str) -> dict[str, torch.Tensor]:
    """Σ t, Σ|t|, Σ t², Σ t³ over (C, H, W) for each image and step: t is (B, S, C, H, W) → (B, S), float64."""
    t = t.float()
    sq = t * t
    dims = (2, 3, 4)
    return {f"{prefix}_s1": _sum64(t, dims), f"{prefix}_abs": _sum64(t.abs(), dims),
            f"{prefix}_s2": _sum64(sq, dims), f"{prefix}_s3": _sum64(sq * t, dims)}


def _powers(t: torch.Tensor) -> torch.Tensor:
    """[1, t, t², t³] of each image's map, flattened: (B, 4, N) float64 (N = steps × C × H × W)."""
    t = t.reshape(t.shape[0], 1, -1).double()
    t2 = t * t
    return torch.cat([torch.ones_like(t), t, t2, t2 * t], dim=1)


def _power_sums(a: torch.Tensor, bs: dict[str, torch.Tensor], prefixes: dict[str, str]) -> dict[str, torch.Tensor]:
    """``prefix{p}{j}`` = Σ_steps,pixels a^(p−j) b^j for 1 ≤ p ≤ 3, 0 ≤ j ≤ p, per image (B,), float64, for
    each map b of ``bs`` (with its prefix). One batched product [1, a, a², a³] · [1, b, b², b³]ᵀ per b gives
    every such sum at once; the powers of a are shared by all b."""
    pa = _powers(a)
    out = {}
    for name, b in bs.items():
        m = torch.bmm(pa, _powers(b).transpose(1, 2))  # m[:, i, j] = Σ a^i b^j
        out.update({f"{prefixes[name]}{p}{j}": m[:, p - j, j] for p in (1, 2, 3) for j in range(p + 1)})
    return out


def paper_form_statistics(traj: Trajectory | NoisedEstimates, reading: str,
                          d_image: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """The power sums of DiffPathV2's paper form for one true-noise reading, every error map and SSIM pair.

    ``pf_{reading}_{error}_{pair}_e{p}{j}`` = Σ_k Σ_pixels e_k^(p−j) (D_k e_k)^j and ``…_d{p}{j}`` the same
    of K Δe_k and K Δ(D_k e_k); ``error`` is the score error r ("score") or the raw ε ("eps"). ``d_image``:
    the image pair's D maps when the caller has them already.
    """
    k = traj.eps.shape[1]
    errors = {"score": score_error(traj), "eps": traj.eps}  # ERROR_MAPS
    pairs = {"image": dissimilarity_maps(traj) if d_image is None else d_image,  # SSIM_PAIRS
             "noise": noise_dissimilarity_maps(traj)}
    out = {}
    for err_name, e in errors.items():
        bs = {pair: d * e for pair, d in pairs.items()}
        prefix = {pair: f"pf_{reading}_{err_name}_{pair}_" for pair in pairs}
        rates = {pair: k * (b[:, 1:] - b[:, :-1]) for pair, b in bs.items()}
        out.update(_power_sums(e, bs, {pair: p + "e" for pair, p in prefix.items()}))
        out.update(_power_sums(k * (e[:, 1:] - e[:, :-1]), rates, {pair: p + "d" for pair, p in prefix.items()}))
    return out


def path_statistics(traj: Trajectory) -> dict[str, torch.Tensor]:
    """Per-image sums over pixels (float64, on the trajectory's device) along the DDIM path.

    eps_*   (B, K)   moments of ε_k
    deps_*  (B, K−1) moments of Δε_k = K (ε_k+1 − ε_k)
    err_*   (B, K)   moments of the score error r_k = ε_k − ε̃_k (noise units)
    d_sum   (B, K)   Σ D_k (per pixel, channel-averaged SSIM of x0 and x̂0_k)
    d_err2  (B, K)   Σ_c,pixels D_k r_k²       d_eps2 (B, K)  Σ D_k ε_k²
    rec_s2  (B, K)   Σ (x0 − x̂0_k)²: the reconstruction error (a baseline, not part of either method)
    border_mean (B,) mean of x0 over its outer frame (a trivial baseline, see :func:`border_mean`)
    pf_path_* (B,)   the paper form's power sums (:func:`paper_form_statistics`)
    """
    k = traj.schedule.k
    eps = traj.eps
    stats = _moments(eps, "eps")
    stats.update(_moments((eps[:, 1:] - eps[:, :-1]) * k, "deps"))
    err = score_error(traj)
    stats.update(_moments(err, "err"))
    dims = (2, 3, 4)
    stats["rec_s2"] = _sum64((traj.x0[:, None] - traj.x0_hat) ** 2, dims)
    stats["border_mean"] = border_mean(traj.x0)
    d_image = dissimilarity_maps(traj)
    stats["d_sum"] = _sum64(d_image, dims)
    stats["d_err2"] = _sum64(d_image * err * err, dims)
    stats["d_eps2"] = _sum64(d_image * eps * eps, dims)
    stats.update(paper_form_statistics(traj, "path", d_image))
    return stats


def fresh_noise_statistics(est: NoisedEstimates) -> dict[str, torch.Tensor]:
    """Statistics of the fresh-noise reading: the paper form's power sums and the per-step ‖r_k‖²."""
    r = score_error(est)
    stats = {"fresh_err_s2": _sum64(r * r, (2, 3, 4))}
    stats.update(paper_form_statistics(est, "fresh"))
    return stats


def border_mean(x0: torch.Tensor) -> torch.Tensor:
    """Mean of each image over its outer frame, side // 8 pixels wide (4 at 32×32), float64 (B,).

    Not part of any method: a one-number baseline that shows what a pair does not prove. MNIST digits are
    centred on a black frame, Fashion-MNIST garments reach the edges, so this alone separates them.
    """
    w = max(1, x0.shape[-1] // 8)
    frame = torch.ones(x0.shape[-2:], dtype=torch.bool, device=x0.device)
    frame[w:-w, w:-w] = False
    return x0.double()[..., frame].mean((1, 2))


def to_numpy(stats: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
    return {k: v.detach().cpu().numpy() for k, v in stats.items()}


def reading_statistics(model, x: torch.Tensor, reading: str = "path", k: int = 10, clip: bool = True,
                       precision: str = "fp32", network=None, noise_seed: int = 0) -> dict[str, torch.Tensor]:
    """Statistics of one batch for one reading, in the calling thread: nothing is sharded or cached here.

    ``reading="path"``: :func:`path_statistics` of the DDIM inversion; ``"fresh"``:
    :func:`fresh_noise_statistics` of K forward-noised copies (noise seeded by image content and ``noise_seed``).
    """
    with torch.inference_mode():
        if check_reading(reading) == "path":
            return path_statistics(invert(model, x, k, clip, precision, network))
        return fresh_noise_statistics(noised_estimates(model, x, k, clip, precision, network, noise_seed))
