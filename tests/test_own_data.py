"""A user's own folders and models: correct numbers or a clear error, never a silent wrong result."""
import csv
import os
import shutil
import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from diffpath_core.cli import main
from diffpath_core.datasets import dataset_title, decode_image, load_image_folder, load_images
from diffpath_core.datasets.images import image_header
from diffpath_core.errors import CheckpointError, InputError
from diffpath_core.evaluate import Evaluation
from diffpath_core.extraction import Extraction


def _folder(path, n, seed, size=16, smooth=True):
    """n grey PNGs of one distribution (blurred noise); a different seed gives different images."""
    path.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        a = rng.normal(128, 60, (size, size))
        if smooth:
            a = (a + np.roll(a, 1, 0) + np.roll(a, 1, 1) + np.roll(a, (1, 1), (0, 1))) / 4
        Image.fromarray(a.clip(0, 255).astype(np.uint8), "L").save(path / f"img_{i:03d}.png")
    return path


# ----------------------------------------------------------------------------- a folder as an ID set

def test_folder_id_split_is_disjoint_seeded_and_complete(tmp_path):
    folder = _folder(tmp_path / "normal", 31, seed=0)
    train = load_image_folder(folder, size=16, channels=1, split="train", seed=0)
    test = load_image_folder(folder, size=16, channels=1, split="test", seed=0)
    assert set(train.meta["files"]).isdisjoint(test.meta["files"])
    assert sorted(train.meta["files"] + test.meta["files"]) == sorted(p.name for p in folder.iterdir())
    assert (len(train), len(test)) == (15, 16) and train.identity != test.identity
    again = load_image_folder(folder, size=16, channels=1, split="test", seed=0)
    assert again.meta["files"] == test.meta["files"]
    other = load_image_folder(folder, size=16, channels=1, split="test", seed=1)
    assert other.meta["files"] != test.meta["files"]


def test_evaluation_never_scores_id_training_images(tiny_model, tmp_path):
    a, b = _folder(tmp_path / "a", 20, seed=0), _folder(tmp_path / "b", 20, seed=1)
    ev = Evaluation(Extraction(tiny_model, k=2, progress=False), n_train=None, n_test=None)
    ev.id_sources = {str(a)}
    train, test, ood = ev.images(str(a), "train"), ev.images(str(a), "test"), ev.images(str(b), "test")
    assert set(train.meta["files"]).isdisjoint(test.meta["files"])
    assert len(ood) == 20, "a folder used only as OOD is used whole"
    explicit = Evaluation(Extraction(tiny_model, k=2, progress=False), n_train=None, n_test=None,
                          id_test={str(a): str(b)})
    assert len(explicit.images(str(a), "train")) == 20
    assert explicit.images(str(a), "test").meta["files"][0] == "img_000.png"
    assert dataset_title(str(a)) == "a" and dataset_title(str(a) + "/") == "a"


def test_same_distribution_folders_give_auroc_near_one_half(tiny_model_dir, tmp_path):
    """ID and OOD folders of different images from one distribution: no method may look like a detector."""
    a, b = _folder(tmp_path / "normal_a", 80, seed=10), _folder(tmp_path / "normal_b", 80, seed=11)
    out = tmp_path / "table.csv"
    code = main(["evaluate", "--model", str(tiny_model_dir), "--id", str(a), "--ood", str(b), "-k", "3",
                 "--cache-dir", str(tmp_path / "cache"), "--out", str(out), "--quiet",
                 "--methods", "DiffPath-1D", "DiffPath-6D", "DiffPathV2", "DiffPathV2-PS"])
    assert code == 0
    rows = list(csv.DictReader(open(out)))
    assert {r["id"] for r in rows} == {"normal_a"} and {r["ood"] for r in rows} == {"normal_b"}
    assert all(r["n_id_train"] == "40" and r["n_id_test"] == "40" and r["n_ood_test"] == "80" for r in rows)
    for r in rows:  # 40 vs 80 images: the AUROC's standard error is about 0.06
        assert abs(float(r["auroc"]) - 0.5) < 0.2, (r["method"], r["auroc"])


# ----------------------------------------------------------------------------- overlaps and labels

def _user_layout(root):
    """data/train, data/test, data/anomalies under one root, as users lay their images out."""
    train = _folder(root / "data" / "train", 24, seed=0)
    test = _folder(root / "data" / "test", 12, seed=1)
    anomalies = _folder(root / "data" / "anomalies", 12, seed=2, smooth=False)
    return train, test, anomalies


def _evaluate(tiny_model_dir, tmp_path, *args):
    return main(["evaluate", "--model", str(tiny_model_dir), "-k", "2", "--cache-dir", str(tmp_path / "cache"),
                 "--quiet", "--methods", "DiffPath-1D", *args])


def test_overlapping_sets_are_refused_by_name(tiny_model_dir, tmp_path, capsys):
    """ID-train, ID-test and OOD are compared by content: identical images are an error naming files and sets."""
    train, test, anomalies = _user_layout(tmp_path)
    data = train.parent
    # --id data/ takes data/test (and data/anomalies) into ID-train: the ID-test images would be scored by the
    # density fitted on them
    assert _evaluate(tiny_model_dir, tmp_path, "--id", str(data), "--id-test", str(test), "--ood", str(anomalies)) == 2
    err = capsys.readouterr().err
    assert "data (ID-train) and test (ID-test) share 12 identical image(s)" in err
    assert "data (ID-train) and anomalies (OOD) share 12 identical image(s)" in err
    assert "test lies inside data" in err and "--allow-overlap" in err
    assert f"{data}/test/img_000.png (in both)" in err
    # one anomaly copied from ID-train under another name: found by content, both files named
    shutil.copy(train / "img_005.png", anomalies / "copy.png")
    assert _evaluate(tiny_model_dir, tmp_path, "--id", str(train), "--id-test", str(test), "--ood", str(anomalies)) == 2
    err = capsys.readouterr().err
    assert "train (ID-train) and anomalies (OOD) share 1 identical image(s)" in err
    assert f"{train}/img_005.png = {anomalies}/copy.png" in err


def test_allow_overlap_counts_them_and_goes_on(tiny_model_dir, tmp_path, capsys):
    train, test, anomalies = _user_layout(tmp_path)
    shutil.copy(train / "img_005.png", anomalies / "copy.png")
    shutil.copy(train / "img_006.png", anomalies / "copy2.png")
    out = tmp_path / "table.csv"
    assert _evaluate(tiny_model_dir, tmp_path, "--id", str(train), "--id-test", str(test), "--ood", str(anomalies),
                     "--allow-overlap", "--out", str(out)) == 0
    printed = capsys.readouterr().out
    assert "note: train (ID-train) and anomalies (OOD) share 2 identical image(s) (allowed by --allow-overlap)" \
        in printed
    assert len(list(csv.DictReader(open(out)))) == 1
    # without overlap nothing is noted
    (anomalies / "copy.png").unlink()
    (anomalies / "copy2.png").unlink()
    assert _evaluate(tiny_model_dir, tmp_path, "--id", str(train), "--id-test", str(test), "--ood", str(anomalies)) == 0
    assert "note:" not in capsys.readouterr().out


def test_folders_with_the_same_name_keep_their_own_rows(tiny_model_dir, tmp_path):
    """cam1/images and cam2/images are two rows, labelled by the shortest distinguishing suffix of their paths."""
    normal = _folder(tmp_path / "normal", 40, seed=0)
    near = _folder(tmp_path / "cam1" / "images", 20, seed=3)                   # the same distribution as normal
    far = _folder(tmp_path / "cam2" / "images", 20, seed=4, smooth=False)     # another one
    out = tmp_path / "table.csv"
    assert _evaluate(tiny_model_dir, tmp_path, "--id", str(normal), "--ood", str(near), str(far),
                     "--out", str(out)) == 0
    rows = {r["ood"]: float(r["auroc"]) for r in csv.DictReader(open(out))}
    assert set(rows) == {"cam1/images", "cam2/images"}
    assert rows["cam2/images"] > 0.9 > rows["cam1/images"]


def test_labels_are_shortest_distinguishing_suffixes():
    from diffpath_core.evaluate import source_labels

    labels = source_labels(["/x/a/cam1/images", "/y/b/cam2/images", "/z/solo", "digits", "/q/digits", "/r/cam1/images"])
    assert labels == {"/x/a/cam1/images": "a/cam1/images", "/y/b/cam2/images": "cam2/images", "/z/solo": "solo",
                      "digits": "digits", "/q/digits": "q/digits", "/r/cam1/images": "r/cam1/images"}


# ----------------------------------------------------------------------------- decoding

def _loaded(folder, size, channels=1, **kwargs):
    """What the model reads of a folder's first image (through the decoded storage): (C, H, W) float32 numpy."""
    return load_image_folder(folder, size=size, channels=channels, **kwargs).batch(0, 1)[0].numpy()


def _one_file(folder, name, image):
    folder.mkdir(parents=True, exist_ok=True)
    image.save(folder / name)
    return folder


_DEPTH_RAMP = np.arange(32 * 32).reshape(32, 32) / (32 * 32 - 1)  # asymmetric: rows and columns differ


@pytest.mark.parametrize("mode,suffix,make,expected,atol", [
    ("1", ".png", lambda r: (r > 0.5), lambda r: (r > 0.5).astype(np.float64), 1e-6),
    ("L", ".png", lambda r: np.round(r * 255).astype(np.uint8), lambda r: np.round(r * 255) / 255, 1e-6),
    ("I;16", ".png", lambda r: np.round(r * 65535).astype(np.uint16), lambda r: np.round(r * 65535) / 65535, 1e-6),
    ("I", ".tif", lambda r: np.round(r * 65535).astype(np.int32), lambda r: np.round(r * 65535) / 65535, 1e-6),
    ("F", ".tif", lambda r: r.astype(np.float32), lambda r: r, 1.6e-5),  # kept at 16 bits: ±1/65535 in [-1, 1]
])
def test_every_depth_reaches_the_model_at_its_precision(tmp_path, mode, suffix, make, expected, atol):
    """Each depth scaled by its own range (a 16-bit ramp is not read as 8-bit, nor cut to 8 bits on the way): the
    values the model reads from a folder are the file's, to the precision of its depth."""
    img = Image.fromarray(make(_DEPTH_RAMP))
    assert img.mode == mode
    got = _loaded(_one_file(tmp_path / "set", f"ramp{suffix}", img), size=32)[0]
    np.testing.assert_allclose(got, 2 * expected(_DEPTH_RAMP) - 1, atol=atol)
    assert abs(float(got.mean())) < 0.05, "a 0..max ramp averages the middle of [-1, 1], not white"
    if mode in ("I;16", "I"):
        assert len(np.unique(got)) == 1024, "all 1,024 levels of the 16-bit ramp reach the model"


def _twelve_bit_png(path, seed=0):
    """A 32×32 16-bit PNG whose 1,024 pixels hold 1,024 distinct values of the 12-bit range (0 and 4095 among them).
    Returns the values."""
    values = np.round(np.linspace(0, 4095, 1024)).astype(np.uint16)
    assert len(np.unique(values)) == 1024
    image = np.random.default_rng(seed).permutation(values).reshape(32, 32)
    Image.fromarray(image).save(path)
    return image


def test_twelve_bit_data_in_16_bit_files_keeps_every_level(tmp_path):
    """12-bit data in a 16-bit file reaches the model with all its 1,024 values (not 17), with a warning naming the
    file and the option; with bits=12 its values span [-1, 1] and nothing is said."""
    folder = tmp_path / "scans"
    folder.mkdir()
    values = _twelve_bit_png(folder / "scan.png")
    as_16_bit = load_image_folder(folder, size=32, channels=1)
    with pytest.warns(UserWarning, match="use only their low bits") as said:
        x = as_16_bit.batch(0, 1)
    assert len(torch.unique(x)) == 1024, "every level reaches the model"
    np.testing.assert_allclose(x[0, 0].numpy(), values / 32767.5 - 1, atol=1e-6)  # read as 16-bit data
    message = str(said[0].message)
    assert "scan.png" in message and "largest value 4095" in message
    assert "bits=12" in message and "--bits 12" in message
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        as_16_bit.batch(0, 1)  # decoded already: said once
        as_twelve = load_image_folder(folder, size=32, channels=1, bits=12)
        y = as_twelve.batch(0, 1)
    assert len(torch.unique(y)) == 1024
    assert float(y.min()) == -1.0 and float(y.max()) == 1.0, "the 12-bit range spans the model's range"
    np.testing.assert_allclose(y[0, 0].numpy(), 2 * values / 4095 - 1, atol=1.6e-5)  # kept at 16 bits
    assert as_twelve.identity != as_16_bit.identity, "another reading of the bytes, another cache entry"
    assert load_images(str(folder), None, size=32, channels=1, bits=12).identity == as_twelve.identity


def test_the_low_bits_warning_names_a_few_files_then_a_count(tmp_path):
    folder = tmp_path / "scans"
    folder.mkdir()
    for i in range(7):
        _twelve_bit_png(folder / f"scan_{i}.png", seed=i)
    Image.fromarray(np.full((32, 32), 60000, np.uint16)).save(folder / "deep.png")  # uses its 16 bits
    Image.fromarray(np.zeros((32, 32), np.uint8)).save(folder / "plain.png")       # 8-bit: not concerned
    with pytest.warns(UserWarning) as said:
        load_image_folder(folder, size=32, channels=1).images
    low = [str(w.message) for w in said if "low bits" in str(w.message)]
    assert len(low) == 1, "one warning per set"
    assert "7 of the 8 16-bit file(s)" in low[0]
    assert "scan_0.png, scan_1.png, scan_2.png, scan_3.png, scan_4.png and 2 more" in low[0]
    assert "deep.png" not in low[0] and "plain.png" not in low[0]


def test_colour_palette_alpha_and_cmyk(tmp_path):
    rgb = (np.random.default_rng(0).random((8, 8, 3)) * 255).astype(np.uint8)
    Image.fromarray(rgb, "RGB").save(tmp_path / "rgb.png")
    np.testing.assert_allclose(decode_image(tmp_path / "rgb.png"), rgb / 255, atol=1e-6)
    Image.fromarray(rgb, "RGB").quantize(16).save(tmp_path / "p.png")
    assert decode_image(tmp_path / "p.png").shape == (8, 8, 3)
    rgba = np.dstack([rgb, np.full((8, 8), 128, np.uint8)])
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")
    np.testing.assert_allclose(decode_image(tmp_path / "rgba.png"), rgb / 255 * (128 / 255), atol=1e-6)
    la = np.dstack([rgb[..., 0], np.zeros((8, 8), np.uint8)])
    Image.fromarray(la, "LA").save(tmp_path / "la.png")
    np.testing.assert_array_equal(decode_image(tmp_path / "la.png"), 0.0)  # fully transparent over black
    Image.fromarray(rgb, "RGB").convert("CMYK").save(tmp_path / "cmyk.jpg")
    got = decode_image(tmp_path / "cmyk.jpg")
    assert got.shape == (8, 8, 3) and np.abs(got - rgb / 255).mean() < 0.1


def test_out_of_range_depths_are_refused_by_name(tmp_path):
    Image.fromarray(np.full((4, 4), 2.5, np.float32), "F").save(tmp_path / "hot.tif")
    with pytest.raises(InputError, match=r"hot\.tif: float image with values in \[2\.5, 2\.5\]"):
        decode_image(tmp_path / "hot.tif")
    Image.fromarray(np.full((4, 4), 100_000, np.int32), "I").save(tmp_path / "deep.tif")
    with pytest.raises(InputError, match=r"deep\.tif: 32-bit integer image"):
        decode_image(tmp_path / "deep.tif")


@pytest.mark.parametrize("orientation,upright", [
    (1, lambda a: a),
    (3, lambda a: np.rot90(a, 2)),
    (6, lambda a: np.rot90(a, -1)),  # stored turned left: shown turned 90° clockwise
    (8, lambda a: np.rot90(a, 1)),   # stored turned right: shown turned 90° counter-clockwise
])
def test_exif_orientation_is_applied(tmp_path, orientation, upright):
    """A phone photo reaches the model upright: an asymmetric image, so 6 and 8 (and no rotation) differ."""
    stored = np.arange(256, dtype=np.uint8).reshape(16, 16)
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(stored, "L").save(tmp_path / "phone.png", exif=exif)
    got = _loaded(tmp_path, size=16)[0]
    np.testing.assert_allclose(got, upright(stored) / 127.5 - 1, atol=1e-6)
    if orientation in (6, 8):  # the header check sees the upright size too: 16 wide and 8 high stored, 8 × 16 shown
        Image.fromarray(stored[:8], "L").save(tmp_path / "phone.png", exif=exif)
        with pytest.raises(InputError, match=r"phone\.png: size 8×16, the model expects 16×16"):
            load_image_folder(tmp_path, size=16, channels=1)


class _Reader:
    """Stands in for a Pillow reader of a mode no file format of Pillow 13 opens in (HSV, RGBX, RGBa): ``Image.open``
    of a registered path gives the prepared image of that mode; every other path goes to Pillow."""

    def __init__(self, monkeypatch):
        self.images, self.real = {}, Image.open
        monkeypatch.setattr(Image, "open", self.open)

    def open(self, fp, *args, **kwargs):
        return self.images[str(fp)].copy() if str(fp) in self.images else self.real(fp, *args, **kwargs)

    def add(self, path, image):
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", image.size).save(path)  # a real file (listed, hashed); its pixels are the image's
        self.images[str(path)] = image


def test_modes_pillow_converts_load_through_a_folder(tmp_path, monkeypatch):
    """LAB, HSV, RGBX, YCbCr (converted to RGB by Pillow) and premultiplied alpha (La, RGBa: the stored colour is
    already the image over black) pass the header check and reach the model with the expected values."""
    import tifffile

    ramp = np.arange(256, dtype=np.uint8).reshape(16, 16)
    neutral = half = np.full((16, 16), 128, np.uint8)  # neutral chroma; alpha one half
    colour = np.random.default_rng(0).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    for mode in ("LAB", "YCbCr"):  # files Pillow writes and reads in these modes
        (tmp_path / mode.lower()).mkdir()
        bands = [Image.fromarray(b) for b in (ramp, neutral, neutral)]
        Image.merge(mode, bands).save(tmp_path / mode.lower() / "x.tif")
    (tmp_path / "la").mkdir()  # grey with premultiplied alpha: a TIFF with an associated alpha sample
    tifffile.imwrite(tmp_path / "la" / "x.tif", np.dstack([ramp, half]), photometric="minisblack",
                     extrasamples=["assocalpha"])
    reader = _Reader(monkeypatch)
    no_saturation = Image.merge("HSV", [Image.fromarray(b) for b in (colour[..., 0], np.zeros_like(ramp), ramp)])
    reader.add(tmp_path / "hsv" / "x.png", no_saturation)
    reader.add(tmp_path / "rgbx" / "x.png", Image.frombytes("RGBX", (16, 16), np.dstack([colour, ramp]).tobytes()))
    reader.add(tmp_path / "rgba" / "x.png", Image.frombytes("RGBa", (16, 16), np.dstack([colour, half]).tobytes()))
    for mode in ("LAB", "YCbCr", "La", "HSV", "RGBX", "RGBa"):
        folder = tmp_path / mode.lower()
        path = next(folder.iterdir())
        with Image.open(path) as im:
            assert im.mode == mode
        assert image_header(path)[1:] == ((1, 8) if mode == "La" else (3, 8))
    grey = {m: _loaded(tmp_path / m, size=16, channels=3) for m in ("lab", "ycbcr", "hsv")}
    for m, got in grey.items():  # neutral colours: R = G = B (to one level), rising with the lightness band
        np.testing.assert_allclose(got[1:], got[[0, 0]], atol=1.01 / 127.5, err_msg=m)
        assert (np.diff(got[0].ravel()) >= 0).all() and got[0].min() < -0.95 and got[0].max() > 0.95, m
    np.testing.assert_allclose(grey["hsv"][0], ramp / 127.5 - 1, atol=1e-6)  # no saturation: the value band
    np.testing.assert_allclose(grey["ycbcr"][0], ramp / 127.5 - 1, atol=1.01 / 127.5)  # luma, to Pillow's rounding
    np.testing.assert_allclose(_loaded(tmp_path / "la", size=16)[0], ramp / 127.5 - 1, atol=1e-6)
    np.testing.assert_allclose(_loaded(tmp_path / "rgbx", size=16, channels=3), colour.transpose(2, 0, 1) / 127.5 - 1,
                               atol=1e-6)  # the padding band dropped
    np.testing.assert_allclose(_loaded(tmp_path / "rgba", size=16, channels=3), colour.transpose(2, 0, 1) / 127.5 - 1,
                               atol=1e-6)  # premultiplied: the stored colour is the image over black


@pytest.mark.filterwarnings("ignore:.*use only their low bits")  # a blank 16-bit image is said to be one
@pytest.mark.parametrize("mode", Image.MODES)
def test_every_pillow_mode_has_one_channel_count(tmp_path, monkeypatch, mode):
    """Whatever mode a file opens in, the header check and the decoder agree on its channels."""
    reader = _Reader(monkeypatch)
    reader.add(tmp_path / "set" / "x.png", Image.new(mode, (4, 4)))
    _, channels, _ = image_header(tmp_path / "set" / "x.png")
    assert load_image_folder(tmp_path / "set", size=4, channels=channels).images.shape == (1, channels, 4, 4)


# ----------------------------------------------------------------------------- folders

def test_symlinks_followed_hidden_and_other_files_counted(tmp_path):
    real = _folder(tmp_path / "real", 3, seed=0)
    folder = tmp_path / "set"
    _folder(folder, 2, seed=1)
    (folder / "linked_dir").symlink_to(real, target_is_directory=True)
    (folder / "linked.png").symlink_to(real / "img_000.png")
    (folder / "._img_000.png").write_bytes(b"\x00\x05\x16\x07 AppleDouble")  # macOS resource fork
    (folder / ".hidden.png").write_bytes(b"junk")
    (folder / ".git").mkdir()
    (folder / "notes.txt").write_text("not an image")
    loaded = load_image_folder(folder, size=16, channels=1)
    assert len(loaded) == 2 + 3 + 1
    assert loaded.meta["skipped"] == {"hidden": 3, "not an image": 1}
    (folder / "broken.png").symlink_to(tmp_path / "gone.png")
    with pytest.raises(InputError, match=r"broken\.png: unreadable"):
        load_image_folder(folder, size=16, channels=1)


def test_limit_is_a_seeded_random_sample(tmp_path):
    folder = _folder(tmp_path / "many", 30, seed=0)
    a = load_image_folder(folder, size=16, channels=1, limit=5, seed=0)
    assert a.meta["files"] == load_image_folder(folder, size=16, channels=1, limit=5, seed=0).meta["files"]
    assert a.meta["files"] != [f"img_{i:03d}.png" for i in range(5)], "not the first five by name"
    assert a.meta["files"] != load_image_folder(folder, size=16, channels=1, limit=5, seed=1).meta["files"]


def test_every_unusable_file_is_named(tmp_path):
    folder = _folder(tmp_path / "mixed", 3, seed=0)
    (folder / "cut.png").write_bytes((folder / "img_000.png").read_bytes()[:40])
    Image.fromarray(np.zeros((20, 20), np.uint8)).save(folder / "big.png")
    with pytest.raises(InputError) as err:
        load_image_folder(folder, size=16, channels=1)
    assert "2 of 5 image file(s) cannot be used" in str(err.value)
    assert "cut.png: unreadable" in str(err.value) and "big.png: size 20×20" in str(err.value)


# ----------------------------------------------------------------------------- models

@pytest.mark.parametrize("kind", ["v_prediction", "sample"])
def test_prediction_types_are_converted_to_epsilon(tiny_model_dir, tmp_path, kind):
    """The same network read as v- or x0-prediction gives ε by the exact identities."""
    import shutil

    from diffusers import DDPMScheduler

    from diffpath_core.models import load_diffusers

    other = tmp_path / kind
    shutil.copytree(tiny_model_dir, other)
    sched = DDPMScheduler.from_pretrained(tiny_model_dir / "scheduler")
    DDPMScheduler.from_config({**sched.config, "prediction_type": kind}).save_pretrained(other / "scheduler")
    eps_model, model = load_diffusers(str(tiny_model_dir)), load_diffusers(str(other))
    assert model.prediction_type == kind and model.weights_hash() != eps_model.weights_hash()
    x = torch.rand(3, 1, 16, 16) * 2 - 1
    t = torch.tensor([5.0, 40.0, 90.0])
    with torch.no_grad():
        raw = eps_model.predict_eps(x, t).double()  # the network's raw output
        got = model.predict_eps(x, t).double()
    a = torch.as_tensor(eps_model.alphas_cumprod)[t.long()].view(-1, 1, 1, 1)
    expected = a.sqrt() * raw + (1 - a).sqrt() * x if kind == "v_prediction" else (x - a.sqrt() * raw) / (1 - a).sqrt()
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_unknown_prediction_type_is_refused(tiny_model):
    from diffpath_core.models import DiffusionModel

    with pytest.raises(CheckpointError, match="prediction_type 'flow' is not supported"):
        DiffusionModel(tiny_model.unet, tiny_model.alphas_cumprod, prediction_type="flow")


# ----------------------------------------------------------------------------- the command line

@pytest.mark.parametrize("argv,message", [
    (["evaluate", "--id", "no_such_folder/", "--ood", "digits"], "no_such_folder/: no such folder"),
    (["evaluate", "--id", "digits", "--ood", "imaginary"], "unknown dataset 'imaginary'"),
    (["evaluate", "--pair", "digits"], "a pair is written ID:OOD"),
    (["evaluate", "--model", "no_such_model", "--id", "digits", "--ood", "glyphs"], "model 'no_such_model' not found"),
    (["evaluate", "--model", "x.pt", "--model-config", "celeba33", "--id", "digits", "--ood", "glyphs"],
     "unknown improved-diffusion preset 'celeba33'"),
    (["evaluate", "--id", "digits"], "--id needs --ood"),
    (["evaluate"], "nothing to do"),
    (["evaluate", "--bogus"], "unrecognized arguments: --bogus"),
    (["download", "imagenet"], "unknown paper dataset 'imagenet'"),
])
def test_cli_mistakes_are_one_line_and_exit_2(argv, message, capsys):
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse's own errors
        code = exc.code
    err = capsys.readouterr().err.strip()
    assert code == 2 and message in err
    assert len(err.splitlines()) == 1 and "Traceback" not in err


def test_cli_empty_folder_and_too_few_images(tiny_model_dir, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.txt").write_text("nothing")
    few, other = _folder(tmp_path / "few", 4, seed=0), _folder(tmp_path / "other", 4, seed=1)
    common = ["--model", str(tiny_model_dir), "-k", "2", "--cache-dir", str(tmp_path / "c"), "--quiet"]
    assert main(["evaluate", "--id", str(tmp_path / "empty"), "--ood", str(few), *common]) == 2
    assert "folder holds no image files" in capsys.readouterr().err
    assert main(["evaluate", "--id", str(few), "--ood", str(other), "--methods", "DiffPathV2", *common]) == 2
    assert "ID-train image(s) are too few" in capsys.readouterr().err


def test_cli_debug_shows_the_traceback():
    run = subprocess.run([sys.executable, "-m", "diffpath_core.cli", "--debug", "evaluate", "--pair", "digits"],
                         capture_output=True, text=True, env={**os.environ, "DIFFPATH_PROGRESS": "0"})
    assert run.returncode != 0 and "Traceback" in run.stderr and "a pair is written ID:OOD" in run.stderr
