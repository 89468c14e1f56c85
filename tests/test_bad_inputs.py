"""Every kind of bad input stops with a message that names the file and the problem."""
import json

import numpy as np
import pytest
import torch
from PIL import Image

from diffpath_core.datasets import load_image_folder
from diffpath_core.datasets.offline import read_idx
from diffpath_core.errors import CheckpointError, DatasetUnavailableError, InputError
from diffpath_core.extraction import Extraction
from diffpath_core.models import load_improved_diffusion, load_model


def _png(path, size=16, mode="L"):
    arr = np.random.default_rng(0).integers(0, 255, (size, size) + ((3,) if mode == "RGB" else ()), dtype=np.uint8)
    Image.fromarray(arr, mode).save(path)


def test_unreadable_image(tmp_path):
    _png(tmp_path / "good.png")
    (tmp_path / "broken.png").write_bytes(b"not an image at all")
    with pytest.raises(InputError, match=r"broken\.png: unreadable or truncated image"):
        load_image_folder(tmp_path, size=16, channels=1)


def test_truncated_image(tmp_path):
    _png(tmp_path / "full.png")
    data = (tmp_path / "full.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match=r"cut\.png: unreadable or truncated image"):
        load_image_folder(tmp_path, size=16, channels=1)


def test_wrong_channel_count(tmp_path):
    _png(tmp_path / "colour.png", mode="RGB")
    with pytest.raises(InputError, match=r"colour\.png: has 3 channel\(s\), the model expects 1"):
        load_image_folder(tmp_path, size=16, channels=1)
    assert load_image_folder(tmp_path, size=16, channels=1, convert=True).images.shape == (1, 1, 16, 16)


def test_wrong_size_resized_only_when_asked(tmp_path):
    _png(tmp_path / "big.png", size=20)
    with pytest.raises(InputError, match=r"big\.png: size 20×20, the model expects 16×16; pass resize_images=True"):
        load_image_folder(tmp_path, size=16, channels=1)
    assert load_image_folder(tmp_path, size=16, channels=1, resize_images=True).images.shape == (1, 1, 16, 16)


def test_values_above_the_declared_depth(tmp_path):
    """``bits`` N declares the 16-bit files' values N-bit: a larger value is named when its file is decoded."""
    Image.fromarray(np.full((16, 16), 4095, np.uint16)).save(tmp_path / "fits.png")
    Image.fromarray(np.full((16, 16), 5000, np.uint16)).save(tmp_path / "hot.png")
    images = load_image_folder(tmp_path, size=16, channels=1, bits=12)
    assert float(images.batch(0, 1).max()) == 1.0
    with pytest.raises(InputError, match=r"hot\.png: values up to 5000, above 4095, the largest 12-bit value"):
        images.batch(1, 2)


@pytest.mark.parametrize("bits", [0, 17, "12", 12.0, True])
def test_a_depth_that_is_not_one(tmp_path, bits):
    _png(tmp_path / "x.png")
    with pytest.raises(InputError, match=r"bits=.*an integer 1\.\.16"):
        load_image_folder(tmp_path, size=16, channels=1, bits=bits)


def test_empty_folder(tmp_path):
    (tmp_path / "notes.txt").write_text("no images here")
    with pytest.raises(InputError, match="folder holds no image files"):
        load_image_folder(tmp_path, size=16, channels=1)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_nan_inf_inputs(tiny_model, tiny_images, bad):
    x = tiny_images.clone()
    x[5, 0, 3, 3] = bad
    with pytest.raises(InputError, match="image 5 contains NaN or Inf"):
        Extraction(tiny_model, k=2, progress=False).statistics(x)


def test_out_of_range_inputs(tiny_model, tiny_images):
    with pytest.raises(InputError, match=r"expects \[-1, 1\]"):
        Extraction(tiny_model, k=2, progress=False).statistics(tiny_images * 127.5 + 127.5)


def test_missing_checkpoint(tmp_path):
    with pytest.raises(CheckpointError, match=r"missing\.pt not found"):
        load_model(str(tmp_path / "missing.pt"))
    with pytest.raises(CheckpointError, match="not found"):
        load_model("no_such_model_name")


def test_mismatched_config(tmp_path):
    src = "tests/data/reference/improved_diffusion_celeba32_small_state_dict.npz"
    with pytest.raises(CheckpointError, match=r"config does not match weights at 'time_embed.0.weight': "
                                              r"checkpoint has shape \(128, 32\), the configured model expects "
                                              r"\(512, 128\)"):
        load_improved_diffusion(src, "celeba32")
    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps({"num_channels": 32, "num_res_blocks": 2}))
    with pytest.raises(CheckpointError, match=r"config does not match weights at 'input_blocks.2.0.op.weight'"):
        load_model(src, config=str(cfg))


def test_pickled_checkpoint_is_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("this must never run",))

    path = tmp_path / "evil.pt"
    torch.save({"weight": Evil()}, path)
    with pytest.raises(CheckpointError, match="cannot load checkpoint safely"):
        load_improved_diffusion(path, "reference_small")


def test_truncated_idx_file(tmp_path):
    import gzip

    raw = bytes([0, 0, 8, 3]) + (10).to_bytes(4, "big") + (28).to_bytes(4, "big") * 2 + bytes(100)
    (tmp_path / "x.gz").write_bytes(gzip.compress(raw))
    with pytest.raises(InputError, match=r"x\.gz: truncated idx file"):
        read_idx(tmp_path / "x.gz")


def test_dataset_not_available_offline(tmp_path, monkeypatch):
    from diffpath_core.datasets import load_dataset

    monkeypatch.setenv("DIFFPATH_DATA", str(tmp_path))
    with pytest.raises(DatasetUnavailableError, match=r"cifar10: missing .*cifar-10-binary\.tar\.gz"):
        load_dataset("cifar10", "test", size=32, channels=3)
    with pytest.raises(DatasetUnavailableError, match="CelebA page"):
        load_dataset("celeba", "test", size=32, channels=3)


def test_unknown_dataset_name():
    from diffpath_core.datasets import load_dataset

    with pytest.raises(InputError, match="unknown dataset 'nope'; known: .*digits"):
        load_dataset("nope")


def test_model_image_mismatch(tiny_model):
    with pytest.raises(ValueError, match=r"images are \(3, 16, 16\), the model expects \(1, 16, 16\)"):
        Extraction(tiny_model, k=2, progress=False).statistics(torch.zeros(2, 3, 16, 16))
