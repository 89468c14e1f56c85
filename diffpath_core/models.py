"""One wrapper for every base model: a noise predictor ε_θ(x, t) plus its ᾱ table.

Loaders: diffusers folders (or hub ids when online), improved-diffusion / DiffPath checkpoints
(converted on load), and this project's shipped models. Weights load only through safetensors or
``torch.load(weights_only=True)``.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .errors import CheckpointError
from .improved_diffusion import PRESETS, ImprovedDiffusionConfig, build_unet, load_converted
from .schedule import TrajectorySchedule
from .store import digest

PROJECT_MODELS = Path(__file__).resolve().parent.parent / "data" / "models"
DEFAULT_MODEL = "fashion_mnist"


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """'auto' → cuda when present, else cpu; anything else is passed to torch (and must exist)."""
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device {device!r} requested but CUDA is not available on this machine")
    return dev


class DiffusionModel(nn.Module):
    """A UNet predicting noise, the ᾱ table it was trained with, and how it reads timesteps."""

    PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")

    def __init__(self, unet: nn.Module, alphas_cumprod: np.ndarray, timestep_scale: float = 1.0,
                 source: dict | None = None, prediction_type: str = "epsilon"):
        super().__init__()
        if prediction_type not in self.PREDICTION_TYPES:
            raise CheckpointError(f"{(source or {}).get('name', 'model')}: prediction_type {prediction_type!r} is not "
                                  f"supported; known: {', '.join(self.PREDICTION_TYPES)}")
        self.unet = unet
        self.alphas_cumprod = np.asarray(alphas_cumprod, dtype=np.float64)
        self.timestep_scale = float(timestep_scale)
        self.prediction_type = prediction_type
        self.source = dict(source or {})
        self._weights_hash: str | None = None

    @property
    def in_channels(self) -> int:
        return int(self.unet.config.in_channels)

    @property
    def image_size(self) -> int:
        size = self.unet.config.sample_size
        return int(size if isinstance(size, int) else size[0])

    @property
    def device(self) -> torch.device:
        return next(self.unet.parameters()).device

    @property
    def num_train_timesteps(self) -> int:
        return len(self.alphas_cumprod)

    def schedule(self, k: int) -> TrajectorySchedule:
        """The K-step trajectory schedule (improved-diffusion's "ddimK" spacing)."""
        return TrajectorySchedule.from_table(self.alphas_cumprod, k, self.timestep_scale)

    def predict_eps(self, x: torch.Tensor, net_timestep: float | torch.Tensor) -> torch.Tensor:
        """ε_θ(x, t) for a batch at one network timestep (a number, or a (B,) tensor); learned-variance
        channels are dropped. v- and x0-predicting models are converted to ε exactly:
        ε = √ᾱ v + √(1−ᾱ) x  (v = √ᾱ ε − √(1−ᾱ) x0),  ε = (x − √ᾱ x0)/√(1−ᾱ)."""
        t = (net_timestep if isinstance(net_timestep, torch.Tensor)
             else torch.full((x.shape[0],), float(net_timestep), device=x.device))
        out = self.unet(x, t).sample[:, : x.shape[1]]
        if self.prediction_type == "epsilon":
            return out
        index = torch.round(t.detach().double().cpu() / self.timestep_scale).long()
        index = index.clamp(0, len(self.alphas_cumprod) - 1)
        a = torch.as_tensor(self.alphas_cumprod)[index].view(-1, 1, 1, 1)
        sqrt_a, sqrt_1ma = a.sqrt().to(x.device, out.dtype), (1 - a).sqrt().to(x.device, out.dtype)
        if self.prediction_type == "v_prediction":
            return sqrt_a * out + sqrt_1ma * x
        return (x - sqrt_a * out) / sqrt_1ma

    def forward(self, x: torch.Tensor, net_timestep: float | torch.Tensor) -> torch.Tensor:
        return self.predict_eps(x, net_timestep)

    def weights_hash(self) -> str:
        """SHA-256 over parameter names and bytes (cached): the model's identity in feature caches."""
        if self._weights_hash is None:
            parts = [part for name, tensor in sorted(self.unet.state_dict().items())
                     for part in (name, tensor.detach().to("cpu", torch.float32).contiguous().numpy())]
            parts += [np.asarray(self.alphas_cumprod, dtype=np.float64), repr(self.timestep_scale)]
            if self.prediction_type != "epsilon":  # ε-models keep the hash (and cache entries) they had
                parts.append(self.prediction_type)
            self._weights_hash = digest(*parts)
        return self._weights_hash

    def describe(self) -> str:
        n = sum(p.numel() for p in self.unet.parameters())
        return (f"{self.source.get('name', 'model')}: {self.in_channels}×{self.image_size}×{self.image_size}, "
                f"{n / 1e6:.2f}M parameters, T={self.num_train_timesteps}")


# ----------------------------------------------------------------------------- safe state-dict loading

def load_state_dict_file(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """A state dict from .safetensors, .npz or a torch file, never by unpickling arbitrary objects."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint {path} not found")
    suffix = path.suffix.lower()
    try:
        if suffix == ".safetensors":
            from safetensors.torch import load_file
            return load_file(str(path))
        if suffix == ".npz":
            with np.load(path, allow_pickle=False) as d:
                return {k: torch.from_numpy(d[k].copy()) for k in d.files}
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except CheckpointError:
        raise
    except Exception as exc:  # safetensors, zip and unpickler errors have many types
        raise CheckpointError(f"{path}: cannot load checkpoint safely ({type(exc).__name__}: {exc})") from exc
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{path}: not a state dict of tensors")
    return obj


# ----------------------------------------------------------------------------- loaders

def load_improved_diffusion(path: str | os.PathLike, config: str | ImprovedDiffusionConfig = "celeba32",
                            device="cpu") -> DiffusionModel:
    """An official DiffPath / improved-diffusion checkpoint, converted to diffusers on load."""
    if isinstance(config, str) and config not in PRESETS:
        raise CheckpointError(f"unknown improved-diffusion preset {config!r}; known: {', '.join(sorted(PRESETS))} "
                              "(or a JSON file of ImprovedDiffusionConfig fields)")
    cfg = PRESETS[config] if isinstance(config, str) else config
    state = load_state_dict_file(path)
    unet = build_unet(cfg)
    load_converted(unet, state, cfg, str(path))
    model = DiffusionModel(unet.eval(), cfg.alphas_cumprod(), cfg.timestep_scale,
                           source={"kind": "improved-diffusion", "name": Path(path).stem, "path": str(path),
                                   "config": cfg.to_dict()})
    return model.to(resolve_device(device))


def load_diffusers(path_or_id: str, device="cpu", subfolder: str | None = None) -> DiffusionModel:
    """A diffusers DDPM-style pipeline folder (unet/ + scheduler/) or a bare UNet folder with a scheduler.

    A hub id works when online; offline it fails with the hub's message, unchanged.
    """
    from diffusers import DDPMScheduler, UNet2DModel

    root = Path(path_or_id)
    local = root.exists()
    looks_like_hub_id = str(path_or_id).count("/") == 1 and not str(path_or_id).startswith((".", "/", "~"))
    if not local and not looks_like_hub_id:
        raise CheckpointError(f"model folder {path_or_id} not found")
    unet_sub = subfolder or ("unet" if (not local or (root / "unet").is_dir()) else None)
    try:
        # low_cpu_mem_usage=False: full-precision load without `accelerate` (and without its install notice)
        unet = UNet2DModel.from_pretrained(path_or_id, subfolder=unet_sub, use_safetensors=True,
                                           low_cpu_mem_usage=False)
        sched_sub = "scheduler" if (not local or (root / "scheduler").is_dir()) else None
        scheduler = DDPMScheduler.from_pretrained(path_or_id, subfolder=sched_sub)
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{path_or_id}: cannot load a diffusers UNet2DModel + scheduler ({exc})") from exc
    acp = scheduler.alphas_cumprod.double().numpy()
    model = DiffusionModel(unet.eval(), acp, 1.0,
                           source={"kind": "diffusers", "name": root.name if local else path_or_id,
                                   "path": str(path_or_id)},
                           prediction_type=scheduler.config.get("prediction_type", "epsilon"))
    return model.to(resolve_device(device))


def shipped_models() -> list[str]:
    """Names of the base models shipped in ``data/models``."""
    if not PROJECT_MODELS.exists():
        return []
    return sorted(p.name for p in PROJECT_MODELS.iterdir() if (p / "unet").is_dir())


def load_model(spec: str = DEFAULT_MODEL, device="auto", config: str | None = None) -> DiffusionModel:
    """Load a base model from one string: a shipped name, a diffusers folder/hub id, or a checkpoint file.

    Checkpoint files (.pt, .pth, .safetensors, .npz) are improved-diffusion models; ``config`` names the
    preset (celeba32, imagenet64, reference_small) or a JSON file of :class:`ImprovedDiffusionConfig` fields.
    """
    if spec in shipped_models():
        model = load_diffusers(str(PROJECT_MODELS / spec), device=device)
        model.source["name"] = spec
        return model
    path = Path(spec)
    if path.suffix.lower() in (".pt", ".pth", ".safetensors", ".npz", ".bin") or path.is_file():
        cfg: str | ImprovedDiffusionConfig = config or "celeba32"
        if config and config.endswith(".json"):
            if not Path(config).is_file():
                raise CheckpointError(f"model config {config} not found")
            fields = json.loads(Path(config).read_text())
            fields = {k: tuple(v) if isinstance(v, list) else v for k, v in fields.items()}
            cfg = ImprovedDiffusionConfig(**fields)
        return load_improved_diffusion(path, cfg, device=device)
    if path.exists() or "/" in spec:
        return load_diffusers(spec, device=device)
    raise CheckpointError(f"model {spec!r} not found: not a shipped model ({', '.join(shipped_models()) or 'none'}), "
                          "a diffusers folder, or a checkpoint file")
