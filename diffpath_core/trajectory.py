"""Deterministic DDIM inversion from an image towards noise: the path both methods read.

At step k (timestep τ_k, signal level ᾱ_k) with state x_k (x_0 = the image):

    ε_k    = ε_θ(x_k, τ_k)
    x̂0_k  = (x_k − √(1−ᾱ_k) ε_k) / √ᾱ_k          clipped to [-1, 1] if ``clip``
    ε_k    = (x_k − √ᾱ_k x̂0_k) / √(1−ᾱ_k)         re-derived, as the official code does
    x_k+1  = √ᾱ_k+1 x̂0_k + √(1−ᾱ_k+1) ε_k         with ᾱ_K = 0

Everything stays batched on the model's device; the only Python loop is over the K steps.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch

from .models import DiffusionModel
from .runtime import cpu_workers, run_sharded, tune_cpu_allocator
from .schedule import TrajectorySchedule


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
    def states_after(self) -> torch.Tensor:
        """x_1 … x_K: the state after each step (the reference's ``x_t``)."""
        return torch.cat([self.x[:, 1:], self.x_final[:, None]], dim=1)


def autocast_context(device: torch.device, precision: str):
    """fp32 (default, exact), or bf16 / fp16 autocast for the network only."""
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    if dtype is None:
        raise ValueError(f"precision must be fp32, bf16 or fp16, got {precision!r}")
    return torch.autocast(device_type=device.type, dtype=dtype)


@torch.inference_mode()
def invert(model: DiffusionModel, x0: torch.Tensor, k: int = 10, clip: bool = True,
           precision: str = "fp32", network=None, workers: int | None = None) -> Trajectory:
    """Run the K-step DDIM inversion of a batch ``x0`` in [-1, 1]; returns a :class:`Trajectory`.

    ``network(x, t)`` optionally replaces ``model.predict_eps`` (for example a
    :class:`runtime.CompiledNetwork`); it receives the timestep as a (B,) tensor. On CPU the batch
    is split over ``workers`` threads (default :func:`runtime.cpu_workers`; see
    :func:`runtime.run_sharded`).
    """
    device = model.device
    x = x0.to(device=device, dtype=torch.float32)
    if device.type == "cpu":
        tune_cpu_allocator()
    workers = cpu_workers(device, x.shape[0]) if workers is None else workers
    parts = run_sharded(lambda xb: _invert(model, xb, k, clip, precision, network), x, workers)
    if len(parts) == 1:
        return parts[0]
    return Trajectory(*(torch.cat([getattr(p, f) for p in parts]) for f in ("x", "eps", "x0_hat", "x_final")),
                      parts[0].schedule)


@torch.inference_mode()
def _invert(model: DiffusionModel, x: torch.Tensor, k: int, clip: bool, precision: str, network) -> Trajectory:
    """One batch, in the calling thread (inference mode and autocast are thread-local: entered here)."""
    schedule = model.schedule(k)
    device = x.device
    if device.type == "cuda":  # matches a channels_last network (--channels-last); harmless otherwise
        x = x.contiguous(memory_format=torch.channels_last)
    c = schedule.coefficients(device)
    predict = network or model.predict_eps
    b = x.shape[0]
    xs = x.new_empty((b, k) + tuple(x.shape[1:]))
    eps_all = torch.empty_like(xs)
    x0_hat_all = torch.empty_like(xs)
    for i in range(k):
        xs[:, i] = x
        t = torch.full((b,), float(schedule.net_timesteps[i]), device=device)
        with autocast_context(device, precision):
            eps = predict(x, t)
        eps = eps.float()
        x0_hat = c["sqrt_recip"][i] * x - c["sqrt_recipm1"][i] * eps
        if clip:
            x0_hat = x0_hat.clamp(-1.0, 1.0)
        eps = (c["sqrt_recip"][i] * x - x0_hat) / c["sqrt_recipm1"][i]
        eps_all[:, i] = eps
        x0_hat_all[:, i] = x0_hat
        x = x0_hat * c["sqrt_a_next"][i] + c["sqrt_1ma_next"][i] * eps
    return Trajectory(xs, eps_all, x0_hat_all, x, schedule)
