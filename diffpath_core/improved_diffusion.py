"""Checkpoints of the official DiffPath / improved-diffusion code, converted to a diffusers UNet2DModel.

improved-diffusion's UNet and diffusers' ``UNet2DModel`` compute the same function once configured
with scale-shift norm, cos-first timestep embedding and group-normed mid attention; only the names
differ, and attention's fused ``qkv`` (ordered [head][q,k,v][channel]) is split into q, k, v.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from .errors import CheckpointError
from .schedule import cosine_alphas_cumprod, linear_alphas_cumprod


@dataclass(frozen=True)
class ImprovedDiffusionConfig:
    """The settings of an improved-diffusion UNet and its diffusion that a conversion needs."""

    image_size: int = 32
    in_channels: int = 3
    num_channels: int = 128
    num_res_blocks: int = 3
    channel_mult: tuple[int, ...] = (1, 2, 2, 2)
    attention_resolutions: tuple[int, ...] = (16, 8)
    num_heads: int = 4
    learn_sigma: bool = True
    use_scale_shift_norm: bool = True
    diffusion_steps: int = 4000
    noise_schedule: str = "cosine"
    rescale_timesteps: bool = True
    notes: dict = field(default_factory=dict, compare=False)

    @property
    def out_channels(self) -> int:
        return self.in_channels * (2 if self.learn_sigma else 1)

    @property
    def attention_levels(self) -> list[bool]:
        """Whether each resolution level has attention (improved-diffusion: ds = image_size // resolution)."""
        ds_with_attention = {self.image_size // r for r in self.attention_resolutions}
        return [2 ** level in ds_with_attention for level in range(len(self.channel_mult))]

    def alphas_cumprod(self) -> np.ndarray:
        if self.noise_schedule == "cosine":
            return cosine_alphas_cumprod(self.diffusion_steps)
        if self.noise_schedule == "linear":
            return linear_alphas_cumprod(self.diffusion_steps)
        raise CheckpointError(f"unknown noise_schedule {self.noise_schedule!r} (cosine or linear)")

    @property
    def timestep_scale(self) -> float:
        return 1000.0 / self.diffusion_steps if self.rescale_timesteps else 1.0

    def to_dict(self) -> dict:
        d = asdict(self)
        d.pop("notes")
        return d


PRESETS: dict[str, ImprovedDiffusionConfig] = {
    # The DiffPath authors' CelebA 32×32 model (celeba_ema_0.9999_499999.pt).
    "celeba32": ImprovedDiffusionConfig(),
    # OpenAI's improved-diffusion ImageNet 64×64 unconditional L-hybrid model (imagenet64_uncond_100M_1500K.pt).
    "imagenet64": ImprovedDiffusionConfig(image_size=64, channel_mult=(1, 2, 3, 4)),
    # The small random-weight network of the reference test vectors (tests/data/reference).
    "reference_small": ImprovedDiffusionConfig(num_channels=32, num_res_blocks=1),
}


def unet_kwargs(cfg: ImprovedDiffusionConfig) -> dict:
    """``UNet2DModel`` arguments that reproduce the improved-diffusion network of ``cfg``."""
    widths = [cfg.num_channels * m for m in cfg.channel_mult]
    attn = cfg.attention_levels
    attention_widths = [w for w, a in zip(widths, attn) if a] + [widths[-1]]
    return dict(
        sample_size=cfg.image_size, in_channels=cfg.in_channels, out_channels=cfg.out_channels,
        freq_shift=0, flip_sin_to_cos=True,
        down_block_types=tuple("AttnDownBlock2D" if a else "DownBlock2D" for a in attn),
        up_block_types=tuple("AttnUpBlock2D" if a else "UpBlock2D" for a in reversed(attn)),
        block_out_channels=tuple(widths), layers_per_block=cfg.num_res_blocks,
        attention_head_dim=max(attention_widths) // cfg.num_heads,
        norm_num_groups=32, attn_norm_num_groups=32, norm_eps=1e-5,
        resnet_time_scale_shift="scale_shift" if cfg.use_scale_shift_norm else "default",
        add_attention=True, downsample_padding=1,
    )


def build_unet(cfg: ImprovedDiffusionConfig):
    """An empty UNet2DModel shaped like ``cfg``, with improved-diffusion's head count in every attention."""
    from diffusers import UNet2DModel

    unet = UNet2DModel(**unet_kwargs(cfg))
    # improved-diffusion keeps num_heads at every level; diffusers derives heads from one head width.
    for module in unet.modules():
        if module.__class__.__name__ == "Attention":
            width = module.to_q.out_features
            module.heads = cfg.num_heads
            module.scale = (width // cfg.num_heads) ** -0.5
    return unet


_RESNET = {"in_layers.0": "norm1", "in_layers.2": "conv1", "emb_layers.1": "time_emb_proj",
           "out_layers.0": "norm2", "out_layers.3": "conv2", "skip_connection": "conv_shortcut"}


def _module_map(cfg: ImprovedDiffusionConfig) -> dict[str, tuple[str, str]]:
    """improved-diffusion module prefix → (diffusers prefix, kind)."""
    m = {"time_embed.0": ("time_embedding.linear_1", "plain"), "time_embed.2": ("time_embedding.linear_2", "plain"),
         "input_blocks.0.0": ("conv_in", "plain"), "out.0": ("conv_norm_out", "plain"),
         "out.2": ("conv_out", "plain")}
    levels, attn, nrb = len(cfg.channel_mult), cfg.attention_levels, cfg.num_res_blocks
    block = 1
    for level in range(levels):
        for j in range(nrb):
            m[f"input_blocks.{block}.0"] = (f"down_blocks.{level}.resnets.{j}", "resnet")
            if attn[level]:
                m[f"input_blocks.{block}.1"] = (f"down_blocks.{level}.attentions.{j}", "attention")
            block += 1
        if level != levels - 1:
            m[f"input_blocks.{block}.0.op"] = (f"down_blocks.{level}.downsamplers.0.conv", "plain")
            block += 1
    m["middle_block.0"] = ("mid_block.resnets.0", "resnet")
    m["middle_block.1"] = ("mid_block.attentions.0", "attention")
    m["middle_block.2"] = ("mid_block.resnets.1", "resnet")
    block = 0
    for up, level in enumerate(reversed(range(levels))):
        for j in range(nrb + 1):
            m[f"output_blocks.{block}.0"] = (f"up_blocks.{up}.resnets.{j}", "resnet")
            layer = 1
            if attn[level]:
                m[f"output_blocks.{block}.1"] = (f"up_blocks.{up}.attentions.{j}", "attention")
                layer = 2
            if level and j == nrb:
                m[f"output_blocks.{block}.{layer}.conv"] = (f"up_blocks.{up}.upsamplers.0.conv", "plain")
            block += 1
    return m


def convert_state_dict(state: dict[str, torch.Tensor], cfg: ImprovedDiffusionConfig,
                       expected: dict[str, torch.Tensor] | None = None, source: str = "checkpoint"
                       ) -> dict[str, torch.Tensor]:
    """Rename and reshape an improved-diffusion state dict into diffusers' ``UNet2DModel`` layout.

    With ``expected`` (the target model's state dict) every weight is checked as it is converted, in
    checkpoint order, so the error names the first key whose place or shape disagrees with ``cfg``.
    """
    modules = _module_map(cfg)
    out: dict[str, torch.Tensor] = {}

    def mismatch(key: str, why: str) -> CheckpointError:
        return CheckpointError(f"{source}: config does not match weights at {key!r}: {why} "
                               f"(config {cfg.to_dict()})")

    def put(key: str, name: str, value: torch.Tensor) -> None:
        if expected is not None:
            if name not in expected:
                raise mismatch(key, f"the configured model has no weight {name!r}")
            if tuple(expected[name].shape) != tuple(value.shape):
                raise mismatch(key, f"checkpoint has shape {tuple(value.shape)}, the configured model expects "
                                    f"{tuple(expected[name].shape)}")
        out[name] = value

    for key, value in state.items():
        prefix, _, param = key.rpartition(".")  # param: weight / bias
        src = next((p for p in modules if prefix == p or prefix.startswith(p + ".")), None)
        if src is None:
            raise mismatch(key, "no layer of the configured network sits there")
        dst, kind = modules[src]
        inner = prefix[len(src) + 1:]
        if kind == "plain":
            put(key, f"{dst}.{param}", value)
        elif kind == "resnet":
            if inner not in _RESNET:
                raise mismatch(key, f"expected a ResBlock layer, found {inner!r}")
            put(key, f"{dst}.{_RESNET[inner]}.{param}", value)
        elif inner == "norm":
            put(key, f"{dst}.group_norm.{param}", value)
        elif inner == "proj_out":
            put(key, f"{dst}.to_out.0.{param}", value.reshape(value.shape[0], -1) if param == "weight" else value)
        elif inner == "qkv":
            width = value.shape[0] // 3
            if width % cfg.num_heads:
                raise mismatch(key, f"{width} channels do not split into {cfg.num_heads} heads")
            per_head = value.reshape(cfg.num_heads, 3, width // cfg.num_heads, -1)
            for i, name in enumerate(("to_q", "to_k", "to_v")):
                part = per_head[:, i].reshape(width, -1)
                put(key, f"{dst}.{name}.{param}", part if param == "weight" else part.reshape(width))
        else:
            raise mismatch(key, f"expected an attention layer, found {inner!r}")
    return out


def load_converted(unet, state: dict[str, torch.Tensor], cfg: ImprovedDiffusionConfig, source: str) -> None:
    """Convert and load improved-diffusion weights, failing at the first key that does not fit ``cfg``."""
    expected = unet.state_dict()
    converted = convert_state_dict(state, cfg, expected, source)
    missing = [k for k in expected if k not in converted]
    if missing:
        raise CheckpointError(f"{source}: checkpoint lacks {len(missing)} weight(s) the config needs, "
                              f"first {missing[0]!r}; the config does not match the checkpoint")
    unet.load_state_dict({k: v.to(expected[k].dtype) for k, v in converted.items()}, strict=True)


def export_state_dict(unet, cfg: ImprovedDiffusionConfig) -> dict[str, torch.Tensor]:
    """A diffusers UNet's weights under improved-diffusion's names and shapes: the inverse of
    :func:`convert_state_dict` (qkv fused head-major again, 1×1 attention projections as conv1d weights).

    What a checkpoint of the official code holds (``torch.save(model.state_dict())``); used to write
    random-weight checkpoints in the official format for rehearsals of the paper profile.
    """
    weights = unet.state_dict()
    inverse_resnet = {v: k for k, v in _RESNET.items()}
    out: dict[str, torch.Tensor] = {}
    for src, (dst, kind) in _module_map(cfg).items():
        mine = {k[len(dst) + 1:]: v for k, v in weights.items() if k.startswith(dst + ".")}
        if kind == "plain":
            out.update({f"{src}.{param}": v for param, v in mine.items()})
        elif kind == "resnet":
            for name, v in mine.items():
                layer, _, param = name.rpartition(".")
                out[f"{src}.{inverse_resnet[layer]}.{param}"] = v
        else:
            width = mine["to_q.weight"].shape[0]
            for param in ("weight", "bias"):
                parts = [mine[f"{n}.{param}"].reshape(cfg.num_heads, width // cfg.num_heads, -1)
                         for n in ("to_q", "to_k", "to_v")]
                qkv = torch.stack(parts, dim=1).reshape(3 * width, -1)
                out[f"{src}.qkv.{param}"] = qkv[:, :, None] if param == "weight" else qkv[:, 0]
            out[f"{src}.norm.weight"], out[f"{src}.norm.bias"] = mine["group_norm.weight"], mine["group_norm.bias"]
            out[f"{src}.proj_out.weight"] = mine["to_out.0.weight"][:, :, None]
            out[f"{src}.proj_out.bias"] = mine["to_out.0.bias"]
    return out
