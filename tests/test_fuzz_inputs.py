"""Over a hundred generated bad files: each gives a named error or a counted skip, never a traceback."""
import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from diffpath_core.cli import main
from diffpath_core.datasets import load_image_folder
from diffpath_core.errors import InputError


def _png_bytes(arr, mode=None):
    buf = io.BytesIO()
    (Image.fromarray(arr, mode) if mode else Image.fromarray(arr)).save(buf, "PNG")
    return buf.getvalue()


def _jpeg_bytes(arr):
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "JPEG")
    return buf.getvalue()


def _huge_png(width=60_000, height=60_000):
    """A valid PNG header declaring a 3.6-gigapixel image (a decompression bomb), then a tiny IDAT."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\x00" * 16)) + chunk(b"IEND", b""))


def bad_files() -> dict[str, bytes]:
    """Name → content of at least 100 bad inputs, deterministic."""
    rng = np.random.default_rng(0)
    good = (rng.random((16, 16)) * 255).astype(np.uint8)
    png, jpg = _png_bytes(good), _jpeg_bytes(good)
    files = {}
    for i, ext in enumerate([".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"]):
        files[f"zero_{i}{ext}"] = b""
        for j in range(5):
            files[f"random_{i}_{j}{ext}"] = rng.integers(0, 256, int(rng.integers(1, 4000)), dtype=np.uint8).tobytes()
    for i, frac in enumerate(np.linspace(0.05, 0.95, 16)):
        files[f"truncated_{i}.png"] = png[: int(len(png) * frac)]
        files[f"truncated_{i}.jpg"] = jpg[: max(4, int(len(jpg) * frac) // 4)]
    files["bomb.png"] = _huge_png()
    files["header_only.png"] = png[:33]
    files["jpeg_named.png"] = jpg[:-200]  # truncated JPEG behind a PNG suffix
    files["wrong_size.png"] = _png_bytes(np.zeros((20, 20), np.uint8))
    files["colour_for_grey_model.png"] = _png_bytes(np.zeros((16, 16, 3), np.uint8))
    files["float_out_of_range.tif"] = (lambda b: (Image.fromarray(np.full((16, 16), 7.0, np.float32)).save(b, "TIFF"),
                                                   b.getvalue())[1])(io.BytesIO())
    files["int32_negative.tif"] = (lambda b: (Image.fromarray(np.full((16, 16), -5, np.int32)).save(b, "TIFF"),
                                               b.getvalue())[1])(io.BytesIO())
    for i, name in enumerate(["ünïcødé", "日本語の画像", "emoji_🙂", "space name", "ça-va"]):
        files[f"{name}_{i}.png"] = b"\x89PNG\r\n\x1a\n" + b"\x00" * i  # signature, then nothing
    files["._appledouble.png"] = b"\x00\x05\x16\x07" + b"\x00" * 60  # skipped: hidden
    files[".hidden.jpg"] = b"garbage"                                   # skipped: hidden
    files["notes.txt"] = b"not an image"                               # skipped: not an image
    files["archive.zip"] = b"PK\x03\x04"                               # skipped: not an image
    return files


SKIPPED = {"._appledouble.png", ".hidden.jpg", "notes.txt", "archive.zip"}


def test_at_least_a_hundred_bad_files():
    assert len(bad_files()) >= 100


def test_each_bad_file_is_a_named_error_or_a_counted_skip(tmp_path):
    outcomes = {}
    for i, (name, content) in enumerate(bad_files().items()):
        folder = tmp_path / f"case_{i:03d}"
        folder.mkdir()
        (folder / name).write_bytes(content)
        try:  # the header is checked on loading; pixel values (a float TIFF out of [0, 1]) when first decoded
            load_image_folder(folder, size=16, channels=1).images
        except InputError as exc:  # any other exception type fails the test with its traceback
            text = str(exc)
            if name in SKIPPED:
                assert "holds no image files" in text and "skipped" in text, (name, text)
                outcomes[name] = "skipped"
            else:
                assert name in text, (name, text)
                outcomes[name] = "named"
        else:
            pytest.fail(f"{name}: loaded without an error")
    assert sum(v == "named" for v in outcomes.values()) >= 100
    assert {n for n, v in outcomes.items() if v == "skipped"} == SKIPPED


def test_a_folder_of_bad_files_through_the_cli_keeps_the_cache(tiny_model_dir, tmp_path, capsys):
    good = tmp_path / "good"
    good.mkdir()
    rng = np.random.default_rng(1)
    for i in range(24):
        Image.fromarray((rng.random((16, 16)) * 255).astype(np.uint8)).save(good / f"{i:02d}.png")
    fuzz = tmp_path / "fuzz"
    fuzz.mkdir()
    for name, content in bad_files().items():
        (fuzz / name).write_bytes(content)
    cache = tmp_path / "cache"
    common = ["--model", str(tiny_model_dir), "-k", "2", "--cache-dir", str(cache), "--quiet",
              "--methods", "DiffPath-6D"]
    assert main(["features", str(good), *common[:-2]]) == 0
    before = {p: p.read_bytes() for p in cache.rglob("*.npz")}
    assert before
    code = main(["evaluate", "--id", str(good), "--ood", str(fuzz), *common])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert "cannot be used" in err and "bomb.png" in err
    for path, content in before.items():  # everything cached before is still there, byte for byte
        assert path.read_bytes() == content
