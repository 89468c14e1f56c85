"""Path statistics and the features of DiffPath and DiffPathV2 derived from them.

One trajectory yields *path statistics*: per image, sums over pixels of a handful of maps (ε, Δε, the
score error r, the SSIM dissimilarity D, and the power sums the paper form needs). They are small,
exact, and enough to form DiffPath's twelve statistics, DiffPathV2's six features for every switch
(true-noise reading, SSIM pair, weight w = 1+λD / D / 1 for any λ, score error or raw ε) and this
project's variants, without running the network again.

Paper form (see the Method page): with a = the error map e_k and b = D_k ⊙ e_k, the weighted map is
E_k = w(D_k) ⊙ e_k = a + λb (w = 1+λD), b (w = D) or a (w = 1), so

    Σ_pixels E_k^p = Σ_j C(p, j) λ^j Σ_pixels a^(p−j) b^j,      p = 1, 2, 3,

and the same for ∂E_k = K (E_k+1 − E_k) = K Δa + λ K Δb. Storing the nine sums Σ a^(p−j) b^j of both
(summed over steps) keeps every λ exact.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from math import comb

import numpy as np
import torch

from .runtime import cpu_workers, run_sharded
from .trajectory import NoisedEstimates, Trajectory, invert, noised_estimates

STATS_VERSION = "pathstats-v3"  # bump when path_statistics changes: old cache entries then miss

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


PF_READINGS = ("path", "fresh")
PF_ERRORS = ("score", "eps")
PF_PAIRS = ("image", "noise")


def paper_form_statistics(traj: Trajectory | NoisedEstimates, reading: str,
                          d_image: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """The power sums of DiffPathV2's paper form for one true-noise reading, every error map and SSIM pair.

    ``pf_{reading}_{error}_{pair}_e{p}{j}`` = Σ_k Σ_pixels e_k^(p−j) (D_k e_k)^j and ``…_d{p}{j}`` the same
    of K Δe_k and K Δ(D_k e_k); ``error`` is the score error r ("score") or the raw ε ("eps"). ``d_image``:
    the image pair's D maps when the caller has them already.
    """
    k = traj.eps.shape[1]
    errors = {"score": score_error(traj), "eps": traj.eps}
    pairs = {"image": dissimilarity_maps(traj) if d_image is None else d_image,
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


V2Formulation = VariantFormulation  # deprecated name (before the paper form existed); use VariantFormulation


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


# ----------------------------------------------------------------------------- batches

READINGS = PF_READINGS  # "path": the DDIM inversion (every method);  "fresh": forward-noised copies (paper form)


def to_numpy(stats: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
    return {k: v.detach().cpu().numpy() for k, v in stats.items()}


def batch_path_statistics(model, x: torch.Tensor, k: int = 10, clip: bool = True, precision: str = "fp32",
                          network=None, reading: str = "path", noise_seed: int = 0) -> dict[str, np.ndarray]:
    """Statistics of one batch as NumPy arrays, for one reading; network and statistics sharded together on CPU.

    ``reading="path"``: :func:`path_statistics` of the DDIM inversion; ``"fresh"``:
    :func:`fresh_noise_statistics` of K forward-noised copies (noise seeded by image content and ``noise_seed``).
    """
    _check_choice("batch_path_statistics", "reading", reading, READINGS)
    device = model.device
    x = x.to(device=device, dtype=torch.float32)

    def shard(xb: torch.Tensor) -> dict[str, np.ndarray]:
        with torch.inference_mode():
            if reading == "path":
                return to_numpy(path_statistics(invert(model, xb, k, clip, precision, network, workers=1)))
            return to_numpy(fresh_noise_statistics(noised_estimates(model, xb, k, clip, precision, network,
                                                                    noise_seed)))

    parts = run_sharded(shard, x, cpu_workers(device, x.shape[0]))
    return {key: np.concatenate([p[key] for p in parts]) for key in parts[0]}


def border_mean(x0: torch.Tensor) -> torch.Tensor:
    """Mean of each image over its outer frame, side // 8 pixels wide (4 at 32×32), float64 (B,).

    Not part of any method: a one-number baseline that shows what a pair does not prove. MNIST digits are
    centred on a black frame, Fashion-MNIST garments reach the edges, so this alone separates them.
    """
    w = max(1, x0.shape[-1] // 8)
    frame = torch.ones(x0.shape[-2:], dtype=torch.bool, device=x0.device)
    frame[w:-w, w:-w] = False
    return x0.double()[..., frame].mean((1, 2))


def reconstruction_score(stats: dict[str, np.ndarray]) -> np.ndarray:
    """Baseline score with no density model: −mean_k ‖x0 − x̂0_k‖² (higher = better reconstructed = more ID)."""
    return -np.asarray(stats["rec_s2"]).mean(1)
