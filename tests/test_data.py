"""Every registered dataset loads with the right shape, range and split sizes; paper loaders parse real formats."""
import gzip

import numpy as np
import pytest
import torch
from PIL import Image

from diffpath_core.datasets import DATASETS, load_dataset
from diffpath_core.datasets.offline import find_fashion_mnist_idx, load_fashion_mnist_full, read_idx, render_glyphs
from diffpath_core.errors import DatasetUnavailableError

OFFLINE_SIZES = {  # (train, test)
    "fashion_mnist": (10000, 10000), "digits": (898, 899), "glyphs": (3000, 2000),
    "fmnist_tops": (4065, 4000), "fmnist_footwear": (2946, 3000),
}


@pytest.mark.parametrize("name", sorted(OFFLINE_SIZES))
def test_offline_datasets(name):
    for split, n in zip(("train", "test"), OFFLINE_SIZES[name]):
        s = load_dataset(name, split, size=32, channels=1)
        assert s.images.shape == (n, 1, 32, 32) and s.images.dtype == torch.float32
        assert float(s.images.min()) >= -1 and float(s.images.max()) <= 1
        assert float(s.images.std()) > 0.1, "images must not be blank"
        assert len(s.labels) == n
    rgb = load_dataset(name, "test", size=16, channels=3, limit=5)
    assert rgb.images.shape == (5, 3, 16, 16)
    torch.testing.assert_close(rgb.images[:, 0], rgb.images[:, 2])


def test_class_splits_are_disjoint_and_labelled():
    tops = load_dataset("fmnist_tops", "test")
    foot = load_dataset("fmnist_footwear", "test")
    assert set(tops.labels) == {0, 2, 4, 6} and set(foot.labels) == {5, 7, 9}


def test_limit_is_seeded_and_identity_tracks_content():
    a = load_dataset("digits", "test", limit=50, seed=1)
    b = load_dataset("digits", "test", limit=50, seed=1)
    c = load_dataset("digits", "test", limit=50, seed=2)
    assert a.identity == b.identity != c.identity
    torch.testing.assert_close(a.images, b.images)
    assert load_dataset("digits", "test", size=16).identity != load_dataset("digits", "test", size=32).identity


def test_glyphs_deterministic_and_fonts_disjoint():
    from diffpath_core.datasets.offline import GLYPH_FONTS

    x1, y1 = render_glyphs("test", n=40, seed=3)
    x2, y2 = render_glyphs("test", n=40, seed=3)
    np.testing.assert_array_equal(x1, x2)
    np.testing.assert_array_equal(y1, y2)
    assert not np.array_equal(x1, render_glyphs("test", n=40, seed=4)[0])
    assert not set(GLYPH_FONTS["train"]) & set(GLYPH_FONTS["test"])
    assert (x1.reshape(40, -1).max(1) == 255).all(), "every glyph is drawn"


def test_fashion_mnist_idx_reader(tmp_path):
    imgs = np.arange(3 * 28 * 28, dtype=np.uint8).reshape(3, 28, 28)
    header = bytes([0, 0, 8, 3]) + b"".join(int(d).to_bytes(4, "big") for d in imgs.shape)
    for prefix, n in (("train", 3), ("t10k", 3)):
        (tmp_path / f"{prefix}-images-idx3-ubyte.gz").write_bytes(gzip.compress(header + imgs.tobytes()))
        (tmp_path / f"{prefix}-labels-idx1-ubyte.gz").write_bytes(
            gzip.compress(bytes([0, 0, 8, 1]) + n.to_bytes(4, "big") + bytes([1, 2, 3])))
    x, y = load_fashion_mnist_full("test", data_dir=tmp_path)
    np.testing.assert_array_equal(x, imgs)
    assert y.tolist() == [1, 2, 3]
    assert read_idx(tmp_path / "train-images-idx3-ubyte.gz").shape == (3, 28, 28)


def test_fashion_mnist_full_missing_says_how(tmp_path, monkeypatch):
    import diffpath_core.datasets.offline as offline

    monkeypatch.setattr(offline, "DEBIAN_FASHION_MNIST", tmp_path / "none")
    monkeypatch.delenv("DIFFPATH_DATA", raising=False)
    with pytest.raises(DatasetUnavailableError, match="apt-get install dataset-fashion-mnist"):
        find_fashion_mnist_idx(tmp_path / "empty")


# ----------------------------------------------------------------------------- paper datasets, fake files

def _cifar_records(n, label_bytes, seed):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, (n, label_bytes), dtype=np.uint8)
    pixels = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
    return np.concatenate([labels, pixels], 1), labels, pixels


def _jpeg(path, w, h, seed=0):
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)
    Image.fromarray(arr).save(path, quality=95)


def test_cifar10_binary(tmp_path):
    folder = tmp_path / "cifar10" / "cifar-10-batches-bin"
    folder.mkdir(parents=True)
    rec, labels, pixels = _cifar_records(7, 1, 0)
    rec.tofile(folder / "test_batch.bin")
    for i in range(1, 6):
        _cifar_records(2, 1, i)[0].tofile(folder / f"data_batch_{i}.bin")
    s = load_dataset("cifar10", "test", size=32, channels=3, data_dir=tmp_path)
    assert s.images.shape == (7, 3, 32, 32) and s.labels.tolist() == labels[:, 0].tolist()
    red = pixels[3, :1024].reshape(32, 32)  # the first plane is red
    np.testing.assert_allclose(s.images[3, 0].numpy(), red / 127.5 - 1, atol=1e-6)
    assert len(load_dataset("cifar10", "train", size=32, channels=3, data_dir=tmp_path)) == 10


def test_cifar100_binary_fine_labels(tmp_path):
    folder = tmp_path / "cifar100" / "cifar-100-binary"
    folder.mkdir(parents=True)
    rec, labels, _ = _cifar_records(5, 2, 1)
    rec.tofile(folder / "test.bin")
    s = load_dataset("cifar100", "test", size=32, channels=3, data_dir=tmp_path)
    assert s.labels.tolist() == labels[:, 1].tolist()


def test_svhn_mat(tmp_path):
    from scipy.io import savemat

    (tmp_path / "svhn").mkdir()
    x = np.random.default_rng(0).integers(0, 256, (32, 32, 3, 6), dtype=np.uint8)
    savemat(tmp_path / "svhn" / "test_32x32.mat", {"X": x, "y": np.array([[10], [1], [2], [3], [4], [5]])})
    s = load_dataset("svhn", "test", size=32, channels=3, data_dir=tmp_path)
    assert s.images.shape == (6, 3, 32, 32) and s.labels.tolist() == [0, 1, 2, 3, 4, 5]
    np.testing.assert_allclose(s.images[2].permute(1, 2, 0).numpy(), x[..., 2] / 127.5 - 1, atol=1e-6)


@pytest.mark.parametrize("layout", ["official", "kaggle"])
def test_celeba_crop_and_partition(tmp_path, layout):
    """Both layouts people have CelebA in: the official (img_align_celeba/, list_eval_partition.txt) and Kaggle's
    (img_align_celeba/img_align_celeba/, list_eval_partition.csv with a header)."""
    root = tmp_path / "celeba"
    images = root / "img_align_celeba" / ("img_align_celeba" if layout == "kaggle" else "")
    names = [f"{i:06d}.jpg" for i in range(1, 6)]
    for i, n in enumerate(names):
        _jpeg(images / n, 178, 218, i)
    parts = [0, 0, 1, 2, 2]
    if layout == "kaggle":
        (root / "list_eval_partition.csv").write_text(
            "image_id,partition\n" + "\n".join(f"{n},{p}" for n, p in zip(names, parts)) + "\n")
    else:
        (root / "list_eval_partition.txt").write_text("\n".join(f"{n} {p}" for n, p in zip(names, parts)))
    from diffpath_core.datasets import check_available

    assert check_available(["celeba"], data_dir=tmp_path) == []
    test = load_dataset("celeba", "test", size=32, channels=3, data_dir=tmp_path)
    assert len(test) == 2 and len(load_dataset("celeba", "train", size=32, channels=3, data_dir=tmp_path)) == 2
    with Image.open(images / names[3]) as im:  # centre crop 140, resize 32
        ref = np.asarray(im.convert("RGB").crop((19, 39, 159, 179)).resize((32, 32), Image.BILINEAR))
    np.testing.assert_allclose(test.images[0].permute(1, 2, 0).numpy(), ref / 127.5 - 1, atol=1e-6)


def test_celeba_missing_parts_are_named(tmp_path):
    from diffpath_core.datasets import check_available

    (tmp_path / "celeba" / "img_align_celeba").mkdir(parents=True)
    [problem] = check_available(["celeba"], data_dir=tmp_path)
    assert "list_eval_partition.txt (or .csv)" in problem and "img_align_celeba/ (or" not in problem
    assert "Kaggle copy" in problem


def test_textures_and_tinyimagenet(tmp_path):
    dtd = tmp_path / "textures" / "dtd"
    rels = ["banded/banded_0001.jpg", "dotted/dotted_0002.jpg", "banded/banded_0003.jpg"]
    for i, rel in enumerate(rels):
        _jpeg(dtd / "images" / rel, 300, 240, i)
    (dtd / "labels").mkdir()
    (dtd / "labels" / "test1.txt").write_text("\n".join(rels))
    t = load_dataset("textures", "test", size=32, channels=3, data_dir=tmp_path)
    assert t.images.shape == (3, 3, 32, 32) and t.labels.tolist() == [0, 1, 0]

    tin = tmp_path / "tinyimagenet" / "tiny-imagenet-200"
    for i in range(3):
        _jpeg(tin / "val" / "images" / f"val_{i}.JPEG", 64, 64, i)
    (tin / "val" / "val_annotations.txt").write_text(
        "".join(f"val_{i}.JPEG\tn0{i % 2}\t0\t0\t63\t63\n" for i in range(3)))
    _jpeg(tin / "train" / "n00" / "images" / "n00_0.JPEG", 64, 64, 9)
    v = load_dataset("tinyimagenet", "test", size=32, channels=3, data_dir=tmp_path)
    assert v.images.shape == (3, 3, 32, 32) and v.labels.tolist() == [0, 1, 0]
    assert len(load_dataset("tinyimagenet", "train", size=32, channels=3, data_dir=tmp_path)) == 1


def test_corrupt_paper_file_is_named(tmp_path):
    from diffpath_core.errors import InputError

    folder = tmp_path / "cifar10" / "cifar-10-batches-bin"
    folder.mkdir(parents=True)
    (folder / "test_batch.bin").write_bytes(b"\x00" * 100)
    with pytest.raises(InputError, match=r"test_batch\.bin: not a CIFAR binary file"):
        load_dataset("cifar10", "test", size=32, channels=3, data_dir=tmp_path)


def test_registry_lists_every_profile_dataset():
    for name in ("fashion_mnist", "digits", "glyphs", "fmnist_tops", "fmnist_footwear", "cifar10", "cifar100",
                 "svhn", "celeba", "textures", "tinyimagenet"):
        assert name in DATASETS


class _RangeServer:
    """A loopback HTTP server for one payload that honours Range requests and can drop the first connection
    after ``cut`` bytes (a network that fails mid-download)."""

    def __init__(self, payload: bytes, cut: int | None = None):
        import http.server
        import threading

        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                server.requests.append(self.headers.get("Range"))
                if self.path != "/file.bin":
                    self.send_error(404)
                    return
                start = int(self.headers["Range"].split("=")[1].rstrip("-")) if self.headers.get("Range") else 0
                if start >= len(payload):
                    self.send_response(416)
                    self.end_headers()
                    return
                body = payload[start:]
                self.send_response(206 if start else 200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if server.cut is not None:  # send part of the body, then drop the connection
                    self.wfile.write(body[:server.cut])
                    server.cut = None
                    self.wfile.flush()
                    self.connection.shutdown(2)
                    return
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.requests, self.cut = [], cut
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()


def test_fetch_resumes_verifies_and_keeps_nothing_wrong(tmp_path):
    """A dropped connection is resumed from the bytes received (Range), the result verified; a wrong file is
    removed, a missing one named."""
    import hashlib

    from diffpath_core.datasets.downloads import fetch, partial_path
    from diffpath_core.errors import DatasetUnavailableError

    def md5(path):
        return hashlib.md5(path.read_bytes()).hexdigest()

    payload = bytes(range(256)) * 4096  # 1 MiB
    server = _RangeServer(payload, cut=300_000)
    try:
        target = tmp_path / "local" / "file.bin"
        assert fetch(f"{server.url}/file.bin", target, md5, hashlib.md5(payload).hexdigest(), progress=False) == target
        assert target.read_bytes() == payload and not partial_path(target).exists()
        assert server.requests[0] is None and len(server.requests) == 2
        resumed_at = int(server.requests[1].split("=")[1].rstrip("-"))
        assert 200_000 < resumed_at <= 300_000, "the second request continues from the bytes received"

        server.requests.clear()  # a verified file present is not fetched again
        fetch(f"{server.url}/file.bin", target, md5, hashlib.md5(payload).hexdigest(), progress=False)
        assert server.requests == []

        other = tmp_path / "local" / "other.bin"
        partial_path(other).write_bytes(payload[:1000])  # a killed process left these bytes
        fetch(f"{server.url}/file.bin", other, md5, hashlib.md5(payload).hexdigest(), progress=False)
        assert other.read_bytes() == payload and server.requests[-1] == "bytes=1000-"

        wrong = tmp_path / "local" / "wrong.bin"
        with pytest.raises(DatasetUnavailableError, match=r"checksum mismatch \(expected 0+\); get it by hand"):
            fetch(f"{server.url}/file.bin", wrong, md5, "0" * 32, "get it by hand", progress=False)
        with pytest.raises(DatasetUnavailableError, match=r"download of .*/missing\.bin failed"):
            fetch(f"{server.url}/missing.bin", wrong, md5, "0" * 32, progress=False)
        assert sorted(p.name for p in wrong.parent.iterdir()) == ["file.bin", "other.bin"], "nothing wrong is kept"
    finally:
        server.close()
