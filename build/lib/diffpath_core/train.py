"""Train a small base diffusion model (diffusers UNet2DModel + DDPMScheduler) on a named dataset.

Resumable: a checkpoint (weights, EMA, optimiser, step, loss history) is written atomically every
``checkpoint_every`` steps; each step's batch, timesteps and noise come from a generator seeded by
(seed, step), so a resumed run continues exactly as an uninterrupted one would.
"""
from __future__ import annotations

import copy
import csv
import json
import os
import platform
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from .datasets import load_dataset
from .models import resolve_device
from .progress import progress_bar
from .store import atomic_path


@dataclass
class TrainConfig:
    """Everything that defines a training run (saved in the training record)."""

    dataset: str = "fashion_mnist_full"
    image_size: int = 32
    channels: int = 1
    block_out_channels: tuple[int, ...] = (32, 64, 64)
    layers_per_block: int = 1
    norm_num_groups: int = 8
    num_train_timesteps: int = 1000
    beta_schedule: str = "squaredcos_cap_v2"
    steps: int = 4000
    batch_size: int = 64
    lr: float = 5e-4
    warmup_steps: int = 200
    ema_decay: float = 0.999
    seed: int = 0
    checkpoint_every: int = 250
    hflip: bool = False
    limit: int | None = None
    extra: dict = field(default_factory=dict)


def build_model(cfg: TrainConfig):
    from diffusers import DDPMScheduler, UNet2DModel

    n = len(cfg.block_out_channels)
    unet = UNet2DModel(sample_size=cfg.image_size, in_channels=cfg.channels, out_channels=cfg.channels,
                       block_out_channels=tuple(cfg.block_out_channels), layers_per_block=cfg.layers_per_block,
                       down_block_types=("DownBlock2D",) * n, up_block_types=("UpBlock2D",) * n,
                       norm_num_groups=cfg.norm_num_groups, add_attention=False)
    scheduler = DDPMScheduler(num_train_timesteps=cfg.num_train_timesteps, beta_schedule=cfg.beta_schedule,
                              prediction_type="epsilon", clip_sample=True)
    return unet, scheduler


def _atomic_torch_save(obj, path: Path) -> None:
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def _step_generator(seed: int, step: int, device) -> torch.Generator:
    g = torch.Generator(device="cpu")
    g.manual_seed(seed * 1_000_003 + step)
    return g


def train(cfg: TrainConfig, run_dir: str | os.PathLike, export_dir: str | os.PathLike | None = None,
          device="auto", progress: bool = True) -> Path:
    """Train (or resume) in ``run_dir``; export the EMA model to ``export_dir`` when done."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    dev = resolve_device(device)
    torch.manual_seed(cfg.seed)
    data = load_dataset(cfg.dataset, "train", size=cfg.image_size, channels=cfg.channels, limit=cfg.limit)
    images = data.images.to(dev)
    unet, scheduler = build_model(cfg)
    unet.to(dev).train()
    ema = copy.deepcopy(unet).eval().requires_grad_(False)
    opt = torch.optim.AdamW(unet.parameters(), lr=cfg.lr, weight_decay=0.0)
    acp = scheduler.alphas_cumprod.to(dev)
    ckpt_path = run_dir / "checkpoint.pt"
    start, losses, elapsed = 0, [], 0.0
    if ckpt_path.exists():
        state = torch.load(ckpt_path, map_location=dev, weights_only=True)
        if _resume_key(state["config"]) != _resume_key(_jsonable(cfg)):
            raise ValueError(f"{ckpt_path} was written by a run with another configuration; "
                             "use a new run directory or delete the checkpoint")
        if cfg.steps < int(state["step"]):
            raise ValueError(f"{ckpt_path} is already at step {state['step']}, past the requested {cfg.steps}")
        unet.load_state_dict(state["model"])
        ema.load_state_dict(state["ema"])
        opt.load_state_dict(state["optimizer"])
        start, losses, elapsed = int(state["step"]), list(state["losses"]), float(state["elapsed"])

    def save(step: int) -> None:
        _atomic_torch_save({"model": unet.state_dict(), "ema": ema.state_dict(), "optimizer": opt.state_dict(),
                            "step": step, "losses": losses, "elapsed": elapsed, "config": _jsonable(cfg)},
                           ckpt_path)

    bar = progress_bar(total=cfg.steps, initial=start, desc=f"training on {cfg.dataset}", progress=progress)
    t0 = time.perf_counter()
    for step in range(start, cfg.steps):
        g = _step_generator(cfg.seed, step, dev)
        idx = torch.randint(len(images), (cfg.batch_size,), generator=g)
        x0 = images[idx.to(dev)]
        if cfg.hflip:
            flip = torch.rand(cfg.batch_size, generator=g) < 0.5
            x0 = torch.where(flip.to(dev)[:, None, None, None], x0.flip(-1), x0)
        t = torch.randint(cfg.num_train_timesteps, (cfg.batch_size,), generator=g).to(dev)
        noise = torch.randn(x0.shape, generator=g).to(dev)
        a = acp[t].view(-1, 1, 1, 1)
        xt = a.sqrt() * x0 + (1 - a).sqrt() * noise
        loss = F.mse_loss(unet(xt, t).sample, noise)
        for group in opt.param_groups:
            group["lr"] = cfg.lr * min(1.0, (step + 1) / max(1, cfg.warmup_steps))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
        opt.step()
        with torch.no_grad():
            for pe, p in zip(ema.parameters(), unet.parameters()):
                pe.lerp_(p, 1.0 - cfg.ema_decay)
        losses.append(float(loss.detach()))
        bar.update(1)
        bar.set_postfix(loss=f"{sum(losses[-50:]) / len(losses[-50:]):.4f}")
        if (step + 1) % cfg.checkpoint_every == 0 or step + 1 == cfg.steps:
            elapsed += time.perf_counter() - t0
            t0 = time.perf_counter()
            save(step + 1)
    bar.close()
    if export_dir is not None:
        export(ema, scheduler, cfg, data, losses, elapsed, Path(export_dir))
    return ckpt_path


def _resume_key(config: dict) -> dict:
    """What must agree for a checkpoint to be resumed: everything but the run length and save period."""
    return {k: v for k, v in config.items() if k not in ("steps", "checkpoint_every")}


def _jsonable(cfg: TrainConfig) -> dict:
    return json.loads(json.dumps(asdict(cfg)))


def export(ema, scheduler, cfg: TrainConfig, data, losses: list[float], elapsed: float, target: Path) -> None:
    """Write the EMA model as a diffusers folder (safetensors) with its training record, atomically."""
    import diffusers
    import numpy
    import safetensors

    tmp = target.with_name(target.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    ema.to("cpu").save_pretrained(tmp / "unet", safe_serialization=True)
    scheduler.save_pretrained(tmp / "scheduler")
    with open(tmp / "loss_curve.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["step", "loss"])
        w.writerows((i + 1, f"{v:.6f}") for i, v in enumerate(losses))
    record = {
        "dataset": cfg.dataset, "dataset_identity": data.identity, "train_images": len(data),
        "config": _jsonable(cfg), "steps": len(losses), "batch_size": cfg.batch_size,
        "wall_time_seconds": round(elapsed, 1), "final_loss_mean_last_200": sum(losses[-200:]) / len(losses[-200:]),
        "parameters": sum(p.numel() for p in ema.parameters()),
        "versions": {"python": platform.python_version(), "torch": torch.__version__,
                     "diffusers": diffusers.__version__, "numpy": numpy.__version__,
                     "safetensors": safetensors.__version__},
        "machine": {"platform": platform.platform(), "processor": platform.machine(),
                    "threads": torch.get_num_threads()},
    }
    (tmp / "training_record.json").write_text(json.dumps(record, indent=2))
    if target.exists():
        shutil.rmtree(target)
    os.replace(tmp, target)


def export_checkpoint(run_dir: str | os.PathLike, target: str | os.PathLike) -> None:
    """Export the EMA weights of a run's latest checkpoint (finished or not) as a model folder."""
    state = torch.load(Path(run_dir) / "checkpoint.pt", map_location="cpu", weights_only=True)
    cfg = TrainConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in state["config"].items()})
    ema, scheduler = build_model(cfg)
    ema.load_state_dict(state["ema"])
    data = load_dataset(cfg.dataset, "train", size=cfg.image_size, channels=cfg.channels, limit=cfg.limit)
    export(ema.eval(), scheduler, cfg, data, list(state["losses"]), float(state["elapsed"]), Path(target))
