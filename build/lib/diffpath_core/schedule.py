"""The noise schedule as data: which network timesteps the K trajectory steps use and their ᾱ.

Both improved-diffusion's respacing ("ddimK") and diffusers' schedulers reduce to the same thing:
a table of T cumulative signal levels ᾱ, a choice of K of its indices, and a factor that maps an
index to the timestep the network was trained to see.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch


def cosine_alphas_cumprod(num_steps: int, max_beta: float = 0.999) -> np.ndarray:
    """ᾱ of the cosine schedule (Nichol & Dhariwal 2021) as improved-diffusion builds it (float64)."""
    def f(t):
        return math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2

    betas = np.array([min(1 - f((i + 1) / num_steps) / f(i / num_steps), max_beta) for i in range(num_steps)])
    return np.cumprod(1.0 - betas)


def linear_alphas_cumprod(num_steps: int) -> np.ndarray:
    """ᾱ of the linear schedule of Ho et al. (2020), scaled to ``num_steps`` as improved-diffusion does."""
    scale = 1000 / num_steps
    betas = np.linspace(scale * 0.0001, scale * 0.02, num_steps, dtype=np.float64)
    return np.cumprod(1.0 - betas)


def ddim_step_indices(num_train_steps: int, k: int) -> list[int]:
    """Indices 0, s, 2s, … with the smallest stride s giving exactly ``k`` of them (improved-diffusion "ddimK")."""
    if not 1 <= k <= num_train_steps:
        raise ValueError(f"number of steps K={k} must be between 1 and {num_train_steps}")
    for stride in range(1, num_train_steps + 1):
        idx = list(range(0, num_train_steps, stride))
        if len(idx) == k:
            return idx
    raise ValueError(f"cannot create exactly {k} evenly spaced steps from {num_train_steps}")


@dataclass(frozen=True)
class TrajectorySchedule:
    """The K steps of one inversion: indices into the training schedule, network timesteps and ᾱ.

    ``alphas_cumprod_next[k]`` is ᾱ of the state step k moves to; the last is 0, so the final state
    is the last noise estimate (as in the official DiffPath code).
    """

    indices: tuple[int, ...]
    net_timesteps: tuple[float, ...]
    alphas_cumprod: tuple[float, ...]
    alphas_cumprod_next: tuple[float, ...]

    @classmethod
    def from_table(cls, alphas_cumprod: np.ndarray, k: int, timestep_scale: float = 1.0) -> "TrajectorySchedule":
        table = np.asarray(alphas_cumprod, dtype=np.float64)
        idx = ddim_step_indices(len(table), k)
        acp = [float(table[i]) for i in idx]
        return cls(tuple(idx), tuple(float(i) * timestep_scale for i in idx), tuple(acp),
                   tuple(acp[1:]) + (0.0,))

    @property
    def k(self) -> int:
        return len(self.indices)

    def coefficients(self, device, dtype=torch.float32) -> dict[str, torch.Tensor]:
        """Per-step coefficients computed in float64, then cast (as improved-diffusion does)."""
        a = np.array(self.alphas_cumprod, dtype=np.float64)
        a_next = np.array(self.alphas_cumprod_next, dtype=np.float64)
        table = {
            "sqrt_recip": np.sqrt(1.0 / a),
            "sqrt_recipm1": np.sqrt(1.0 / a - 1.0),
            "sqrt_a": np.sqrt(a),
            "sqrt_1ma": np.sqrt(1.0 - a),
            "sqrt_a_next": np.sqrt(a_next),
            "sqrt_1ma_next": np.sqrt(1.0 - a_next),
            "snr_sqrt": np.sqrt(a / (1.0 - a)),
        }
        return {name: torch.as_tensor(v, device=device).to(dtype) for name, v in table.items()}

    def as_dict(self) -> dict:
        return {"indices": list(self.indices), "net_timesteps": list(self.net_timesteps),
                "alphas_cumprod": list(self.alphas_cumprod)}
