"""Training runs a few steps on CPU, resumes exactly after an interruption, and exports round-trip weights."""
import json

import pytest
import torch

from diffpath_core.models import load_diffusers
from diffpath_core.train import TrainConfig, train

CFG = dict(dataset="digits", image_size=16, block_out_channels=(8, 16), layers_per_block=1, norm_num_groups=4,
           num_train_timesteps=50, batch_size=8, checkpoint_every=2, warmup_steps=1, limit=64)


def _state(run_dir):
    return torch.load(run_dir / "checkpoint.pt", weights_only=True)


def test_train_resume_matches_uninterrupted_and_exports(tmp_path):
    straight = tmp_path / "straight"
    train(TrainConfig(steps=6, **CFG), straight, export_dir=tmp_path / "model", device="cpu", progress=False)
    # an interrupted run: stops at step 4 (a checkpoint), then resumes to 6
    halves = tmp_path / "halves"
    train(TrainConfig(steps=4, **CFG), halves, device="cpu", progress=False)
    assert _state(halves)["step"] == 4
    train(TrainConfig(steps=6, **CFG), halves, device="cpu", progress=False)
    a, b = _state(straight), _state(halves)
    assert a["losses"] == pytest.approx(b["losses"], rel=1e-6)
    for key in a["ema"]:
        torch.testing.assert_close(a["ema"][key], b["ema"][key], rtol=1e-5, atol=1e-6)

    model = load_diffusers(str(tmp_path / "model"), device="cpu")
    for key, value in model.unet.state_dict().items():
        torch.testing.assert_close(value, a["ema"][key], rtol=0, atol=0)
    record = json.loads((tmp_path / "model" / "training_record.json").read_text())
    assert record["steps"] == 6 and record["dataset"] == "digits" and "torch" in record["versions"]
    assert (tmp_path / "model" / "loss_curve.csv").read_text().count("\n") == 7


def test_resume_refuses_another_configuration(tmp_path):
    train(TrainConfig(steps=2, **CFG), tmp_path, device="cpu", progress=False)
    with pytest.raises(ValueError, match="another configuration"):
        train(TrainConfig(steps=4, **{**CFG, "lr": 1e-3}), tmp_path, device="cpu", progress=False)
