"""Deterministic DDIM inversion from an image towards noise: the path both methods read.

At step k (timestep τ_k, signal level ᾱ_k) with state x_k (x_0 = the image):

    ε_k    = ε_θ(x_k, τ_k)
    x̂0_k  = (x_k − √(1−ᾱ_k) ε_k) / √ᾱ_k          clipped to [-1, 1] if ``clip``
    ε_k    = (x_k − √ᾱ_k x̂0_k) / √(1−ᾱ_k)         re-derived, as the official code does
    x_k+1  = √ᾱ_k+1 x̂0_k + √(1−ᾱ_k+1) ε_k         with ᾱ_K = 0

Everything stays batched on the model's device; the only Python loop is over the K steps. Each function
here takes one batch and returns its result: sharding, caching and progress belong to the extraction driver.

The *fresh-noise* reading of DiffPathV2's "true noise" (:func:`noised_estimates`) instead noises the
image independently at each τ_k, x_t = √ᾱ_k x0 + √(1−ᾱ_k) n_k with seeded n_k, and asks the same
network for ε_k. Both share one estimate step, :func:`denoise_estimate`; inversion and sampling share one
DDIM step, :func:`ddim_step`.
"""
from __future__ import annotations

import contextlib
import hashlib
from dataclasses import dataclass

import torch

from .models import DiffusionModel
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
    """A batch as the network takes it: float32 on the model's device, channels_last on GPUs (matches a
    ``--channels-last`` network; harmless otherwise)."""
    x = x.to(device=model.device, dtype=torch.float32)
    return x.contiguous(memory_format=torch.channels_last) if x.device.type == "cuda" else x


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
    x = _to_model(model, x0)
    first = x
    c = schedule.coefficients(x.device)
    predict = network or model.predict_eps
    for i in range(k):
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


def content_seeded_noise(x0: torch.Tensor, k: int, seed: int = 0) -> torch.Tensor:
    """(B, K, C, H, W) standard normal noise, each image's drawn from a generator seeded by its bytes and ``seed``.

    The noise of an image does not depend on the batch, chunk, shard or dataset it arrives in, so cached,
    sharded and distributed extractions agree. Drawn on the CPU (one small generator per image), then moved.
    """
    arr = x0.detach().to("cpu", torch.float32).contiguous().numpy()
    out = torch.empty((x0.shape[0], k) + tuple(x0.shape[1:]))
    for i in range(x0.shape[0]):
        digest = hashlib.sha256(arr[i].tobytes() + int(seed).to_bytes(8, "little", signed=True)).digest()
        g = torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") & (2**63 - 1))
        out[i] = torch.randn((k,) + tuple(x0.shape[1:]), generator=g)
    return out.to(x0.device)


def noised_steps(model: DiffusionModel, x0: torch.Tensor, k: int = 10, clip: bool = True, precision: str = "fp32",
                 network=None, seed: int = 0):
    """The fresh-noise reading one :class:`Step` at a time: at each τ_k, x0 noised with seeded n_k (the step's
    ``true_noise``) and the network's ε_k, x̂0_k. K network passes, like the inversion; the states are
    independent, not a path. Run it under ``torch.inference_mode()``."""
    schedule = model.schedule(k)
    x0 = _to_model(model, x0)
    c = schedule.coefficients(x0.device)
    predict = network or model.predict_eps
    noise = content_seeded_noise(x0, k, seed)
    for i in range(k):
        x = c["sqrt_a"][i] * x0 + c["sqrt_1ma"][i] * noise[:, i]
        eps, x0_hat = denoise_estimate(predict, x, schedule.net_timesteps[i], c["sqrt_recip"][i],
                                       c["sqrt_recipm1"][i], clip, precision)
        yield Step(i, x, eps, x0_hat, noise[:, i])


@torch.inference_mode()
def noised_estimates(model: DiffusionModel, x0: torch.Tensor, k: int = 10, clip: bool = True,
                     precision: str = "fp32", network=None, seed: int = 0) -> NoisedEstimates:
    """The fresh-noise reading of one batch with every step kept (:class:`NoisedEstimates`)."""
    kept = list(noised_steps(model, x0, k, clip, precision, network, seed))
    stack = lambda field: torch.stack([getattr(st, field) for st in kept], dim=1)  # noqa: E731
    return NoisedEstimates(_to_model(model, x0), stack("x"), stack("true_noise"), stack("eps"), stack("x0_hat"),
                           model.schedule(k))
