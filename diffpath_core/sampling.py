"""Samples from a base model (deterministic DDIM), to show what the model has learned."""
from __future__ import annotations

import torch

from .models import DiffusionModel
from .runtime import memory_format
from .trajectory import ddim_step


@torch.inference_mode()
def generate(model: DiffusionModel, n: int = 16, steps: int = 50, seed: int = 0) -> torch.Tensor:
    """``n`` images in [-1, 1] by DDIM sampling (η = 0) over ``steps`` evenly spaced timesteps.

    Each step is the inversion's own DDIM step (:func:`trajectory.ddim_step`, clipped), taken towards the
    next, less noisy, level.
    """
    g = torch.Generator(device="cpu").manual_seed(seed)
    size, c = model.image_size, model.in_channels
    x = torch.randn((n, c, size, size), generator=g).to(model.device).contiguous(memory_format=memory_format(model))
    acp = torch.as_tensor(model.alphas_cumprod, dtype=torch.float64)
    idx = torch.linspace(model.num_train_timesteps - 1, 0, steps).round().long().tolist()
    for i, t in enumerate(idx):
        a = acp[t]
        a_prev = acp[idx[i + 1]] if i + 1 < len(idx) else torch.tensor(1.0, dtype=torch.float64)
        _, _, x = ddim_step(model.predict_eps, x, t * model.timestep_scale, (1 / a).sqrt().float(),
                            (1 / a - 1).sqrt().float(), a_prev.sqrt().float(), (1 - a_prev).sqrt().float(), clip=True)
    return x.clamp(-1, 1).cpu()
