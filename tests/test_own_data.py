"""A user's own folders and models: correct numbers or a clear error, never a silent wrong result."""
import csv
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from diffpath_core.cli import main
from diffpath_core.datasets import dataset_title, decode_image, load_image_folder
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

def _ramp(h=8, w=32):
    return np.tile(np.linspace(0, 1, w), (h, 1))


@pytest.mark.parametrize("mode,suffix,make,expected", [
    ("1", ".png", lambda r: (r > 0.5), lambda r: (r > 0.5).astype(np.float32)),
    ("L", ".png", lambda r: np.round(r * 255).astype(np.uint8), lambda r: np.round(r * 255) / 255),
    ("I;16", ".png", lambda r: np.round(r * 65535).astype(np.uint16), lambda r: np.round(r * 65535) / 65535),
    ("I", ".tif", lambda r: np.round(r * 65535).astype(np.int32), lambda r: np.round(r * 65535) / 65535),
    ("F", ".tif", lambda r: r.astype(np.float32), lambda r: r),
])
def test_every_depth_is_scaled_by_its_range(tmp_path, mode, suffix, make, expected):
    r = _ramp()
    path = tmp_path / f"ramp{suffix}"
    img = Image.fromarray(make(r))
    assert img.mode == mode
    img.save(path)
    got = decode_image(path)
    np.testing.assert_allclose(got, expected(r), atol=1e-6)
    assert 0.45 < got.mean() < 0.55, "a 0..max ramp averages one half, not white"


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


def test_exif_orientation_is_applied(tmp_path):
    img = Image.fromarray(np.zeros((8, 16), np.uint8), "L")
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise when shown
    img.save(tmp_path / "phone.jpg", exif=exif)
    assert decode_image(tmp_path / "phone.jpg").shape == (16, 8)


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
