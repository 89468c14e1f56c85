"""Shared fixtures: the official reference vectors, the converted reference network, a tiny diffusers model."""
from pathlib import Path

import numpy as np
import pytest
import torch

REFERENCE = Path(__file__).parent / "data" / "reference"


@pytest.fixture(scope="session")
def reference():
    with np.load(REFERENCE / "diffpath_reference_outputs.npz") as d:
        return {k: d[k] for k in d.files}


@pytest.fixture(scope="session")
def reference_model():
    from diffpath_core.models import load_improved_diffusion

    return load_improved_diffusion(REFERENCE / "improved_diffusion_celeba32_small_state_dict.npz",
                                   "reference_small", device="cpu")


def make_tiny_model_dir(path: Path, channels: int = 1, size: int = 16, seed: int = 0) -> Path:
    """A small random diffusers UNet2DModel + DDPMScheduler folder: exercises the real loading path."""
    from diffusers import DDPMScheduler, UNet2DModel

    torch.manual_seed(seed)
    unet = UNet2DModel(sample_size=size, in_channels=channels, out_channels=channels, block_out_channels=(8, 16),
                       layers_per_block=1, down_block_types=("DownBlock2D", "DownBlock2D"),
                       up_block_types=("UpBlock2D", "UpBlock2D"), norm_num_groups=4, add_attention=False)
    unet.save_pretrained(path / "unet", safe_serialization=True)
    DDPMScheduler(num_train_timesteps=100, beta_schedule="squaredcos_cap_v2").save_pretrained(path / "scheduler")
    return path


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    return make_tiny_model_dir(tmp_path_factory.mktemp("tiny_model"))


@pytest.fixture(scope="session")
def tiny_model(tiny_model_dir):
    from diffpath_core.models import load_diffusers

    return load_diffusers(str(tiny_model_dir), device="cpu")


@pytest.fixture
def tiny_images():
    g = torch.Generator().manual_seed(1)
    return torch.rand(24, 1, 16, 16, generator=g) * 2 - 1
