"""Deterministic DDIM inversion from an image towards noise: the path both methods read.

At step k (timestep τ_k, signal level ᾱ_k) with state x_k (x_0 = the image):

    ε_k    = ε_θ(x_k, τ_k)
    x̂0_k  = (x_k − √(1−ᾱ_k) ε_k) / √ᾱ_k          clipped to [-1, 1] if ``clip``
    ε_k    = (x_k − √ᾱ_k x̂0_k) / √(1−ᾱ_k)         re-derived, as the official code does
    x_k+1  = √ᾱ_k+1 x̂0_k + √(1−ᾱ_k+1) ε_k         with ᾱ_K = 0

Everything stays batched on the model's device; the only Python loop is over the K steps. Each function
here takes one batch and returns its result: sharding, caching and progress belong to the extraction driver.

The *fresh-noise* reading of DiffPathV2's "true noise" (:func:`noised_estimates`) instead noises the
image independently at each τ_k, x_t = √ᾱ_k x0 + √(1−ᾱ_k) n_k with n_k seeded by the image's content
(:func:`content_seeded_noise`, drawn on the model's device), and asks the same network for ε_k. Both share
one estimate step, :func:`denoise_estimate`; inversion and sampling share one DDIM step, :func:`ddim_step`.
"""
from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass

import torch

from .models import DiffusionModel
from .runtime import memory_format
from .schedule import TrajectorySchedule


@dataclass
class Step:
    """One step of a reading, (B, C, H, W) each: the state ``x`` at step ``index``, the network's ``eps`` and
    ``x0_hat``, and the noise the state carries relative to x0 (``true_noise``)."""

    index: int
    x: torch.Tensor
    eps: torch.Tensor
    x0_hat: torch.Tensor
    true_noise: torch.Tensor


@dataclass
class Trajectory:
    """Per-step tensors of shape (B, K, C, H, W): inputs ``x`` (x[:, 0] is the image), ``eps``, ``x0_hat``."""

    x: torch.Tensor
    eps: torch.Tensor
    x0_hat: torch.Tensor
    x_final: torch.Tensor
    schedule: TrajectorySchedule

    @property
    def x0(self) -> torch.Tensor:
        return self.x[:, 0]

    @property
    def true_noise(self) -> torch.Tensor:
        """ε̃_k = (x_k − √ᾱ_k x0)/√(1−ᾱ_k): the noise the path state x_k carries relative to x0."""
        c = self.schedule.coefficients(self.x.device)
        return (self.x - c["sqrt_a"].view(1, -1, 1, 1, 1) * self.x0[:, None]) / c["sqrt_1ma"].view(1, -1, 1, 1, 1)

    @property
    def states_after(self) -> torch.Tensor:
        """x_1 … x_K: the state after each step (the reference's ``x_t``)."""
        return torch.cat([self.x[:, 1:], self.x_final[:, None]], dim=1)

    def steps(self):
        """The stored steps one at a time, as :func:`inversion_steps` yields them."""
        true = self.true_noise
        for i in range(self.schedule.k):
            yield Step(i, self.x[:, i], self.eps[:, i], self.x0_hat[:, i], true[:, i])


@dataclass
class NoisedEstimates:
    """K independent forward-noised copies of each image and the network's estimates, (B, K, C, H, W) each.

    ``x[:, k] = √ᾱ_k x0 + √(1−ᾱ_k) true_noise[:, k]``; ``eps`` and ``x0_hat`` as along a trajectory.
    """

    x0: torch.Tensor
    x: torch.Tensor
    true_noise: torch.Tensor
    eps: torch.Tensor
    x0_hat: torch.Tensor
    schedule: TrajectorySchedule

    def steps(self):
        """The stored steps one at a time, as :func:`noised_steps` yields them."""
        for i in range(self.schedule.k):
            yield Step(i, self.x[:, i], self.eps[:, i], self.x0_hat[:, i], self.true_noise[:, i])


PRECISIONS = ("fp32", "tf32", "bf16", "fp16")


def _tf32_switches() -> list[tuple[object, str, object, object]]:
    """(object, attribute, value for TF32 on, value for off) of every switch of CUDA matmuls and convolutions:
    the ``fp32_precision`` settings where this torch has them (2.9 and later), the legacy ``allow_tf32`` flags
    otherwise (setting both kinds at once is refused by recent torch)."""
    cudnn_conv = getattr(torch.backends.cudnn, "conv", None)
    if hasattr(torch.backends.cuda.matmul, "fp32_precision") and hasattr(cudnn_conv, "fp32_precision"):
        return [(torch.backends.cuda.matmul, "fp32_precision", "tf32", "ieee"),
                (cudnn_conv, "fp32_precision", "tf32", "ieee")]
    return [(torch.backends.cuda.matmul, "allow_tf32", True, False), (torch.backends.cudnn, "allow_tf32", True, False)]


def tf32_enabled() -> tuple[bool, bool]:
    """Whether CUDA matmuls and convolutions may use TF32 now, under whichever flag API this torch has."""
    return tuple(getattr(obj, attr) == on for obj, attr, on, _ in _tf32_switches())


@contextlib.contextmanager
def _tf32(allowed: bool):
    """TF32 for CUDA matmuls and convolutions on or off while the network runs; the caller's setting restored."""
    switches = _tf32_switches()
    before = [getattr(obj, attr) for obj, attr, _, _ in switches]
    for obj, attr, on, off in switches:
        setattr(obj, attr, on if allowed else off)
    try:
        yield
    finally:
        for (obj, attr, _, _), value in zip(switches, before):
            setattr(obj, attr, value)


def check_precision(precision: str) -> str:
    """``precision`` if it is one of :data:`PRECISIONS`; otherwise a ValueError that names them."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    return precision


def autocast_context(device: torch.device, precision: str):
    """How the network runs: fp32 (default; on GPUs TF32 is turned off, so fp32 means fp32), tf32 (TF32
    matmuls and convolutions on Ampere+ GPUs; on a CPU the same as fp32, but cached apart), or bf16 / fp16
    autocast. Only the network runs under it; the trajectory's own arithmetic is always fp32."""
    if check_precision(precision) in ("fp32", "tf32"):
        return _tf32(precision == "tf32") if device.type == "cuda" else contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


def _to_model(model: DiffusionModel, x: torch.Tensor) -> torch.Tensor:
    """A batch as the network takes it: float32 on the model's device, in the network's own layout
    (:func:`runtime.memory_format`: channels_last only when its weights are, on every device)."""
    return x.to(device=model.device, dtype=torch.float32).contiguous(memory_format=memory_format(model))


def inversion_steps(model: DiffusionModel, x0: torch.Tensor, k: int = 10, clip: bool = True,
                    precision: str = "fp32", network=None):
    """The K-step DDIM inversion of one batch ``x0`` in [-1, 1], one :class:`Step` at a time (nothing kept: what
    a step leaves is the consumer's business), then the final state x_K as the generator's return value.

    Pure and in the calling thread: how batches are sharded over cores belongs to the extraction driver
    (:class:`extraction.Extraction`). ``network(x, t)`` optionally replaces ``model.predict_eps`` (for example
    a :class:`runtime.CompiledNetwork`); it receives the timestep as a (B,) tensor. Run it under
    ``torch.inference_mode()``.
    """
    schedule = model.schedule(k)
    layout = memory_format(model)
    x = _to_model(model, x0)
    first = x
    c = schedule.coefficients(x.device)
    predict = network or model.predict_eps
    for i in range(k):
        x = x.contiguous(memory_format=layout)  # the network's output need not come back in its input's layout
        eps, x0_hat, x_next = ddim_step(predict, x, schedule.net_timesteps[i], c["sqrt_recip"][i],
                                        c["sqrt_recipm1"][i], c["sqrt_a_next"][i], c["sqrt_1ma_next"][i], clip,
                                        precision)
        yield Step(i, x, eps, x0_hat, (x - c["sqrt_a"][i] * first) / c["sqrt_1ma"][i])
        x = x_next
    return x


@torch.inference_mode()
def invert(model: DiffusionModel, x0: torch.Tensor, k: int = 10, clip: bool = True,
           precision: str = "fp32", network=None) -> Trajectory:
    """Run the K-step DDIM inversion of one batch ``x0`` in [-1, 1] and keep every step: a :class:`Trajectory`
    of (B, K, C, H, W) tensors (figures, tests, anomaly maps; statistics stream the steps instead)."""
    steps = inversion_steps(model, x0, k, clip, precision, network)
    kept = []
    while True:
        try:
            kept.append(next(steps))
        except StopIteration as done:
            x_final = done.value
            break
    stack = lambda field: torch.stack([getattr(st, field) for st in kept], dim=1)  # noqa: E731
    return Trajectory(stack("x"), stack("eps"), stack("x0_hat"), x_final, model.schedule(k))


def denoise_estimate(predict, x: torch.Tensor, net_timestep: float, sqrt_recip, sqrt_recipm1, clip: bool,
                     precision: str = "fp32") -> tuple[torch.Tensor, torch.Tensor]:
    """ε and x̂0 of a batch ``x`` at one timestep: x̂0 = (x − √(1−ᾱ) ε)/√ᾱ (clipped if ``clip``), ε re-derived.

    ``sqrt_recip`` = 1/√ᾱ and ``sqrt_recipm1`` = √(1/ᾱ − 1). The one estimate step of inversion, of the
    fresh-noise reading and of DDIM sampling (improved-diffusion's ``ddim_sample`` / ``ddim_reverse_sample``).
    """
    t = torch.full((x.shape[0],), float(net_timestep), device=x.device)
    with autocast_context(x.device, precision):
        eps = predict(x, t)
    eps = eps.float()
    x0_hat = sqrt_recip * x - sqrt_recipm1 * eps
    if clip:
        x0_hat = x0_hat.clamp(-1.0, 1.0)
    eps = (sqrt_recip * x - x0_hat) / sqrt_recipm1  # re-derived always, as the official code does
    return eps, x0_hat


def ddim_step(predict, x: torch.Tensor, net_timestep: float, sqrt_recip, sqrt_recipm1, sqrt_a_next, sqrt_1ma_next,
              clip: bool, precision: str = "fp32") -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One deterministic DDIM step (η = 0) to another signal level ᾱ', in either direction: ε and x̂0 by
    :func:`denoise_estimate`, then x' = √ᾱ' x̂0 + √(1−ᾱ') ε. Towards noise it is the inversion's step; towards
    data, sampling's (:func:`sampling.generate`). Returns (ε, x̂0, x')."""
    eps, x0_hat = denoise_estimate(predict, x, net_timestep, sqrt_recip, sqrt_recipm1, clip, precision)
    return eps, x0_hat, x0_hat * sqrt_a_next + sqrt_1ma_next * eps


# ----------------------------------------------------------------------------- the fresh reading's noise

NOISE_VERSION = 2  # in the fresh reading's cache key; 1: one torch.Generator per image, on the CPU
_M32 = 0xFFFFFFFF


def _mix32(h: torch.Tensor) -> torch.Tensor:
    """A bijection of [0, 2³²), in place on int64 ``h``, in which every output bit depends on every input bit (Thomas
    Mueller's integer hash); its multiplier is below 2²⁷, so no product leaves int64."""
    for _ in range(2):
        h ^= h >> 16
        h.mul_(0x45D9F3B).bitwise_and_(_M32)
    h ^= h >> 16
    return h


def image_keys(x0: torch.Tensor, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Two 32-bit keys per image (int64 (B,) each, on x0's device) from the bits of its float32 values and ``seed``:
    per key, a sum over pixels of each pixel's bits mixed with its position; the NCHW order, whatever x0's layout."""
    bits = x0.detach().to(torch.float32).contiguous().reshape(x0.shape[0], -1).view(torch.int32).to(torch.int64)
    bits &= _M32
    position = torch.arange(bits.shape[1], device=x0.device, dtype=torch.int64)
    seed = int(seed) & (2**64 - 1)
    return tuple(_mix32((_mix32(bits ^ _mix32(2 * position + lane)).sum(dim=1) & _M32) ^ part)
                 for lane, part in ((0, seed & _M32), (1, seed >> 32)))


def _ln_unit(a: torch.Tensor) -> torch.Tensor:
    """ln u for u = (⌊a/2⁸⌋ + 1)/2²⁴ in (0, 1], from +, −, ×, ÷ (IEEE-rounded, so bit-equal wherever an element sits in
    a batch, on every device and instruction set, which ``torch.log`` does not promise): u = m·2^e with m in
    [√½, √2), ln m = 2 atanh s, s = (m − 1)/(m + 1), |s| < 0.172, to s¹³. In place where it can (a third faster
    on a CPU)."""
    u = (a >> 8).to(torch.float32)
    m, e = torch.frexp(u.add_(1))  # exact: an integer up to 2²⁴
    low = (m < 0.70710678).to(torch.float32)
    m.mul_(low + 1)
    s = m - 1
    s.div_(m.add_(1))
    s2 = s * s
    series = s2 * (1 / 13)
    for c in (1 / 11, 1 / 9, 1 / 7, 1 / 5, 1 / 3):
        series.add_(c).mul_(s2)
    series.add_(1).mul_(s).mul_(2)
    exponent = e.to(torch.float32).sub_(low).sub_(24).mul_(math.log(2))
    return series.add_(exponent)


def _cos_sin_turn(b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin of a uniform angle from 32-bit ``b``: its top 2 bits a quarter turn q, its next 22 an angle θ in
    [−π/4, π/4); cos and sin of θ by Taylor series to θ¹⁰ (error under 10⁻⁸) with +, −, × as :func:`_ln_unit`, then
    turned by q: swapped for odd q, signs by arithmetic (exact: products with 0, ±1)."""
    q = b >> 30
    theta = ((b >> 8) & 0x3FFFFF).to(torch.float32).sub_(2**21).mul_(math.pi / 2**23)
    t2 = theta * theta
    sin = t2 * (1 / 362880)
    for c in (-1 / 5040, 1 / 120, -1 / 6):
        sin.add_(c).mul_(t2)
    sin.add_(1).mul_(theta)
    cos = t2 * (-1 / 3628800)
    for c in (1 / 40320, -1 / 720, 1 / 24, -1 / 2):
        cos.add_(c).mul_(t2)
    cos.add_(1)
    odd = (q & 1).to(torch.float32)
    even = 1 - odd
    sin_sign = (q >> 1).to(torch.float32).mul_(-2).add_(1)  # q = 0, 1: +1; 2, 3: −1
    cos_sign = (odd * -2).add_(1).mul_(sin_sign)  # q = 0: +1, 1: −1, 2: −1, 3: +1
    turned_cos = (cos * even).add_(sin * odd).mul_(cos_sign)
    turned_sin = sin.mul_(even).add_(cos.mul_(odd)).mul_(sin_sign)
    return turned_cos, turned_sin


def step_noise(keys: tuple[torch.Tensor, torch.Tensor], step: int, shape: tuple[int, ...]) -> torch.Tensor:
    """(B, *shape) standard normal noise of step ``step`` for the images of ``keys`` (:func:`image_keys`).

    Counter-based: pair p of an image's values at this step comes from two 32-bit hashes of its counter, each two
    rounds of :func:`_mix32` keyed by the image's keys, turned into two normals by Box–Muller. Integer ops and
    IEEE-rounded arithmetic only, all batched on the keys' device: a value depends on its image's keys, step and
    position alone."""
    n = math.prod(shape)
    pairs = (n + 1) // 2
    counter = 2 * (torch.arange(pairs, device=keys[0].device, dtype=torch.int64) + step * pairs)
    k1, k2 = (key[:, None] for key in keys)
    a, b = (_mix32(_mix32(c ^ k1) ^ k2) for c in (counter, counter + 1))
    radius = (-2 * _ln_unit(a)).clamp_min(0).sqrt()
    cos, sin = _cos_sin_turn(b)
    z = torch.stack([radius * cos, radius * sin], dim=-1).reshape(len(a), 2 * pairs)[:, :n]
    return z.reshape((len(a),) + tuple(shape))


def content_seeded_noise(x0: torch.Tensor, k: int, seed: int = 0) -> torch.Tensor:
    """(B, K, C, H, W) standard normal noise on x0's device, each image's a function of its content and ``seed``.

    The noise of an image does not depend on the batch, chunk, shard or dataset it arrives in, so cached,
    sharded and distributed extractions agree. No copy to the host and no loop over images
    (:func:`image_keys`, :func:`step_noise`); :func:`noised_steps` draws it one step at a time."""
    keys = image_keys(x0, seed)
    return torch.stack([step_noise(keys, i, tuple(x0.shape[1:])) for i in range(k)], dim=1)


def noised_steps(model: DiffusionModel, x0: torch.Tensor, k: int = 10, clip: bool = True, precision: str = "fp32",
                 network=None, seed: int = 0):
    """The fresh-noise reading one :class:`Step` at a time: at each τ_k, x0 noised with seeded n_k (the step's
    ``true_noise``, :func:`content_seeded_noise`) and the network's ε_k, x̂0_k. K network passes, like the
    inversion; the states are independent, not a path. Run it under ``torch.inference_mode()``."""
    schedule = model.schedule(k)
    layout = memory_format(model)
    x0 = _to_model(model, x0)
    c = schedule.coefficients(x0.device)
    predict = network or model.predict_eps
    keys = image_keys(x0, seed)
    for i in range(k):
        noise = step_noise(keys, i, tuple(x0.shape[1:])).contiguous(memory_format=layout)
        x = (c["sqrt_a"][i] * x0 + c["sqrt_1ma"][i] * noise).contiguous(memory_format=layout)
        eps, x0_hat = denoise_estimate(predict, x, schedule.net_timesteps[i], c["sqrt_recip"][i],
                                       c["sqrt_recipm1"][i], clip, precision)
        yield Step(i, x, eps, x0_hat, noise)


@torch.inference_mode()
def noised_estimates(model: DiffusionModel, x0: torch.Tensor, k: int = 10, clip: bool = True,
                     precision: str = "fp32", network=None, seed: int = 0) -> NoisedEstimates:
    """The fresh-noise reading of one batch with every step kept (:class:`NoisedEstimates`)."""
    kept = list(noised_steps(model, x0, k, clip, precision, network, seed))
    stack = lambda field: torch.stack([getattr(st, field) for st in kept], dim=1)  # noqa: E731
    return NoisedEstimates(_to_model(model, x0), stack("x"), stack("true_noise"), stack("eps"), stack("x0_hat"),
                           model.schedule(k))
