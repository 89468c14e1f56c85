"""Path statistics and the features of DiffPath and DiffPathV2 derived from them.

One trajectory yields *path statistics*: per image and per step, sums over pixels of a handful of
maps (ε, Δε, the score error r, the SSIM dissimilarity D, D·r²). They are small, exact, and enough
to form DiffPath's twelve statistics and every DiffPathV2 variant (any λ, SSIM off / product /
amplify, raw ε or score error, per-step or summed) without running the network again.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch

from .runtime import cpu_workers, run_sharded
from .trajectory import Trajectory, invert

STATS_VERSION = "pathstats-v1"  # bump when path_statistics changes: old cache entries then miss

# ----------------------------------------------------------------------------- SSIM

SSIM_WINDOW = 11  # Gaussian window, sigma 1.5 (kornia's and scikit-image's convention)


def _symmetric_pad(x: torch.Tensor, r: int) -> torch.Tensor:
    """Half-sample symmetric padding (scipy's 'reflect': … b a | a b …), which torch lacks."""
    x = torch.cat([x[..., :r].flip(-1), x, x[..., -r:].flip(-1)], dim=-1)
    return torch.cat([x[..., :r, :].flip(-2), x, x[..., -r:, :].flip(-2)], dim=-2)


def ssim_map(a: torch.Tensor, b: torch.Tensor, data_range: float = 2.0) -> torch.Tensor:
    """Per-pixel SSIM of two (N, C, H, W) batches, per channel then averaged over channels → (N, 1, H, W).

    kornia's Gaussian-window SSIM (σ = 1.5, 11 taps) on symmetrically padded images, 'valid' mode:
    the same map, borders included, as scikit-image's
    ``structural_similarity(full=True, gaussian_weights=True, sigma=1.5, use_sample_covariance=False)``.
    """
    import kornia

    r = SSIM_WINDOW // 2
    s = kornia.metrics.ssim(_symmetric_pad(a.float(), r).contiguous(), _symmetric_pad(b.float(), r).contiguous(),
                            SSIM_WINDOW, max_val=data_range, eps=0.0, padding="valid")
    return s.mean(dim=1, keepdim=True)


def dissimilarity(x0: torch.Tensor, x0_hat: torch.Tensor) -> torch.Tensor:
    """D = (1 − SSIM)/2 ∈ [0, 1]: DiffPathV2's spatial attention on where the denoiser fails."""
    return (1.0 - ssim_map(x0, x0_hat)) * 0.5


# ----------------------------------------------------------------------------- maps along a trajectory

def score_error(traj: Trajectory) -> torch.Tensor:
    """r_k = ε_k − ε̃_k = √(ᾱ_k/(1−ᾱ_k)) (x0 − x̂0_k), (B, K, C, H, W): model noise minus the noise x_k carries."""
    c = traj.schedule.coefficients(traj.eps.device)
    return c["snr_sqrt"].view(1, -1, 1, 1, 1) * (traj.x0[:, None] - traj.x0_hat)


def dissimilarity_maps(traj: Trajectory) -> torch.Tensor:
    """D_k between the image and each denoised estimate, (B, K, 1, H, W)."""
    b, k, ch, h, w = traj.x0_hat.shape
    x0_rep = traj.x0[:, None].expand_as(traj.x0_hat).reshape(b * k, ch, h, w)
    return dissimilarity(x0_rep, traj.x0_hat.reshape(b * k, ch, h, w)).reshape(b, k, 1, h, w)


# ----------------------------------------------------------------------------- path statistics

def _moments(t: torch.Tensor, prefix: str) -> dict[str, torch.Tensor]:
    """Σ t, Σ|t|, Σ t², Σ t³ over (C, H, W) for each image and step: t is (B, S, C, H, W) → (B, S)."""
    t = t.double()
    sq = t * t
    return {f"{prefix}_s1": t.sum((2, 3, 4)), f"{prefix}_abs": t.abs().sum((2, 3, 4)),
            f"{prefix}_s2": sq.sum((2, 3, 4)), f"{prefix}_s3": (sq * t).sum((2, 3, 4))}


def path_statistics(traj: Trajectory) -> dict[str, torch.Tensor]:
    """Per-image, per-step sums over pixels (float64, on the trajectory's device).

    eps_*   (B, K)   moments of ε_k
    deps_*  (B, K−1) moments of Δε_k = K (ε_k+1 − ε_k)
    err_*   (B, K)   moments of the score error r_k = ε_k − ε̃_k (noise units)
    d_sum   (B, K)   Σ D_k (per pixel, channel-averaged SSIM)
    d_err2  (B, K)   Σ_c,pixels D_k r_k²       d_eps2 (B, K)  Σ D_k ε_k²
    rec_s2  (B, K)   Σ (x0 − x̂0_k)²: the reconstruction error (a baseline, not part of either method)
    """
    k = traj.schedule.k
    eps = traj.eps
    stats = _moments(eps, "eps")
    stats.update(_moments((eps[:, 1:] - eps[:, :-1]) * k, "deps"))
    err = score_error(traj)
    stats.update(_moments(err, "err"))
    stats["rec_s2"] = ((traj.x0[:, None] - traj.x0_hat).double() ** 2).sum((2, 3, 4))
    d = dissimilarity_maps(traj).double()
    stats["d_sum"] = d.sum((2, 3, 4))
    stats["d_err2"] = (d * err.double() ** 2).sum((2, 3, 4))
    stats["d_eps2"] = (d * eps.double() ** 2).sum((2, 3, 4))
    return stats


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


# ----------------------------------------------------------------------------- DiffPathV2

@dataclass(frozen=True)
class V2Formulation:
    """The switchable parts of DiffPathV2 (see the Method page).

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
            if getattr(self, name) not in allowed:
                raise ValueError(f"V2Formulation.{name} must be one of {allowed}, got {getattr(self, name)!r}")
        if self.aggregate == "per_step" and self.dims == "1d":
            raise ValueError("a per-step formulation has K values per image: use dims='multi' (GMM)")
        if self.lam < 0:
            raise ValueError(f"λ must be non-negative, got {self.lam}")

    def label(self) -> str:
        ssim = {"amplify": f"(1+{self.lam:g}D)", "product": "D", "off": "1"}[self.ssim]
        err = "r" if self.error == "score" else "ε"
        return f"{ssim}·{err}², {self.aggregate}, {self.dims}"

    def as_dict(self) -> dict:
        return asdict(self)


def amplified_error(stats: dict[str, np.ndarray], f: V2Formulation) -> np.ndarray:
    """Σ_pixels A_k per image and step (N, K) for formulation ``f``."""
    base = "err" if f.error == "score" else "eps"
    e2 = np.asarray(stats[f"{base}_s2"])
    de2 = np.asarray(stats["d_err2" if f.error == "score" else "d_eps2"])
    if f.ssim == "off":
        return e2
    if f.ssim == "product":
        return de2
    return e2 + f.lam * de2


def diffpathv2_features(stats: dict[str, np.ndarray], f: V2Formulation = V2Formulation()) -> np.ndarray:
    """DiffPathV2 features of formulation ``f``: (N, 1) for "1d", (N, d) for "multi".

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


def to_numpy(stats: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
    return {k: v.detach().cpu().numpy() for k, v in stats.items()}


def batch_path_statistics(model, x: torch.Tensor, k: int = 10, clip: bool = True, precision: str = "fp32",
                          network=None) -> dict[str, np.ndarray]:
    """Path statistics of one batch as NumPy arrays: trajectory and statistics sharded together on CPU."""
    device = model.device
    x = x.to(device=device, dtype=torch.float32)

    def shard(xb: torch.Tensor) -> dict[str, np.ndarray]:
        with torch.inference_mode():
            return to_numpy(path_statistics(invert(model, xb, k, clip, precision, network, workers=1)))

    parts = run_sharded(shard, x, cpu_workers(device, x.shape[0]))
    return {key: np.concatenate([p[key] for p in parts]) for key in parts[0]}


def reconstruction_score(stats: dict[str, np.ndarray]) -> np.ndarray:
    """Baseline score with no density model: −mean_k ‖x0 − x̂0_k‖² (higher = better reconstructed = more ID)."""
    return -np.asarray(stats["rec_s2"]).mean(1)
