"""The paper profile's public datasets, read from their published on-disk formats.

CIFAR-10/100 (binary version: fixed-length records, no pickle), SVHN (format 2 .mat), CelebA
(aligned JPEGs + list_eval_partition.txt; centre crop 140, resize 32 as the DiffPath reference),
Textures / DTD (JPEGs + labels/{train,test}1.txt) and TinyImageNet (train folders, val annotations).

Files live in ``<root>/<name>/``, root being the one download folder (:func:`.downloads.data_root`).
Archives with a direct public URL are downloaded and checked on first use when ``download=True``; offline,
a missing set raises an error that says what to get and where to put it.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import DatasetUnavailableError, InputError
from ..store import file_digest
from .downloads import data_root, fetch, unpack
from .images import FileImages
from .registry import DatasetSpec


@dataclass(frozen=True)
class Source:
    """Where a dataset comes from and what must be on disk once it is unpacked."""

    folder: str                 # <root>/<folder>
    expect: tuple[str, ...]     # paths (relative to the folder) the test split needs
    url: str | None             # direct archive URL, or None when the host needs a manual download
    archive: str | None = None
    md5: str | None = None
    how: str = ""               # manual instructions when url is None
    expect_train: tuple[str, ...] = ()  # further paths the train split needs

    def needs(self, splits) -> tuple[str, ...]:
        return (self.expect if "test" in splits else ()) + (self.expect_train if "train" in splits else ())


SOURCES = {
    "cifar10": Source("cifar10", ("cifar-10-batches-bin/test_batch.bin",),
                      "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz", "cifar-10-binary.tar.gz",
                      "c32a1d4ab5d03f1284b67883e8d87530",
                      expect_train=tuple(f"cifar-10-batches-bin/data_batch_{i}.bin" for i in range(1, 6))),
    "cifar100": Source("cifar100", ("cifar-100-binary/test.bin",),
                       "https://www.cs.toronto.edu/~kriz/cifar-100-binary.tar.gz", "cifar-100-binary.tar.gz",
                       "03b5dce01913d631647c71ecec9e9cb8", expect_train=("cifar-100-binary/train.bin",)),
    "svhn": Source("svhn", ("test_32x32.mat",), "http://ufldl.stanford.edu/housenumbers/test_32x32.mat",
                   "test_32x32.mat", "eb5a983be6a315427106f1b164d9cef3", expect_train=("train_32x32.mat",)),
    "celeba": Source("celeba", ("img_align_celeba", "list_eval_partition.txt"), None,
                     how="download img_align_celeba.zip and list_eval_partition.txt from the CelebA page "
                         "(mmlab.ie.cuhk.edu.hk/projects/CelebA.html, Google Drive) and unzip the images; the "
                         "Kaggle copy (img_align_celeba/img_align_celeba/ and list_eval_partition.csv) works as "
                         "it unpacks"),
    "textures": Source("textures", ("dtd/images", "dtd/labels/test1.txt"),
                       "https://www.robots.ox.ac.uk/~vgg/data/dtd/download/dtd-r1.0.1.tar.gz", "dtd-r1.0.1.tar.gz",
                       "fff73e5086ae6bdbea199a49dfb8a4c1", expect_train=("dtd/labels/train1.txt",)),
    "tinyimagenet": Source("tinyimagenet", ("tiny-imagenet-200/val/val_annotations.txt",),
                           "http://cs231n.stanford.edu/tiny-imagenet-200.zip", "tiny-imagenet-200.zip",
                           "90528d7ca1a48142e341f4ef8d21d0de", expect_train=("tiny-imagenet-200/train",)),
}
SVHN_TRAIN = ("http://ufldl.stanford.edu/housenumbers/train_32x32.mat", "train_32x32.mat",
              "e26dedcc434d2e4c54c9b2d4a06d8373")


def celeba_layout(folder: Path) -> tuple[Path | None, Path | None]:
    """The image folder and partition file of CelebA in either layout people have it in: the official one
    (``img_align_celeba/*.jpg``, ``list_eval_partition.txt``) or Kaggle's (``img_align_celeba/img_align_celeba/
    *.jpg``, ``list_eval_partition.csv`` with a header). ``None`` for what is not there."""
    images = folder / "img_align_celeba"
    if (images / "img_align_celeba").is_dir():
        images = images / "img_align_celeba"
    partition = next((folder / f for f in ("list_eval_partition.txt", "list_eval_partition.csv")
                      if (folder / f).is_file()), None)
    return (images if images.is_dir() else None), partition


def read_celeba_partition(path: Path) -> list[tuple[str, str]]:
    """(file name, partition) rows of list_eval_partition.txt (space-separated) or .csv (Kaggle: a header row
    ``image_id,partition``, then comma-separated rows)."""
    rows = []
    for line in path.read_text().splitlines():
        fields = line.replace(",", " ").split()
        if len(fields) == 2 and fields[1] in ("0", "1", "2"):
            rows.append((fields[0], fields[1]))
    if not rows:
        raise InputError(f"{path}: no rows of the form '<image> <0|1|2>' (CelebA's evaluation partition)")
    return rows


def missing_message(name: str, data_dir=None, splits=("train", "test")) -> str | None:
    """``None`` if the files of ``splits`` are on disk, else one line saying what to get and where to put it."""
    src = SOURCES[name]
    folder = data_root(data_dir) / src.folder
    if name == "celeba":
        images, partition = celeba_layout(folder)
        absent = ([] if images else ["img_align_celeba/ (or img_align_celeba/img_align_celeba/)"]) + \
                 ([] if partition else ["list_eval_partition.txt (or .csv)"])
    else:
        absent = [p for p in src.needs(splits) if not (folder / p).exists()]
    if not absent:
        return None
    get = (f"run online with download=True (CLI: `diffpath download {name}`), or fetch {src.url} "
           f"(md5 {src.md5}) and unpack it" if src.url else src.how)
    return f"{name}: missing {', '.join(absent)} in {folder}; {get} into {folder}"


def check_available(names, data_dir=None) -> list[str]:
    """Problems (one line each) for every listed paper dataset whose train or test files are not on disk:
    check before any work."""
    return [m for n in names if n in SOURCES for m in [missing_message(n, data_dir)] if m]


def _fetch(url: str, target: Path, md5: str) -> None:
    fetch(url, target, lambda path: file_digest(path, "md5"), md5, f"get it by hand into {target.parent}")


def ensure(name: str, data_dir=None, download: bool = False, split: str | None = None) -> Path:
    """The dataset's folder with the files of ``split`` (None: both), downloading and unpacking it first when
    allowed and needed."""
    src = SOURCES[name]
    folder = data_root(data_dir) / src.folder
    problem = missing_message(name, data_dir, (split,) if split else ("train", "test"))
    if problem is None:
        return folder
    if not download or src.url is None:
        raise DatasetUnavailableError(problem)
    folder.mkdir(parents=True, exist_ok=True)
    archive = folder / src.archive
    _fetch(src.url, archive, src.md5)
    if name == "svhn":
        _fetch(SVHN_TRAIN[0], folder / SVHN_TRAIN[1], SVHN_TRAIN[2])
    else:
        unpack(archive, folder)
    return folder


# ----------------------------------------------------------------------------- readers

def read_cifar_binary(paths: list[Path], label_bytes: int, label_index: int) -> tuple[np.ndarray, np.ndarray]:
    """CIFAR binary records: ``label_bytes`` label bytes then 3×32×32 bytes (R, G, B planes)."""
    record = label_bytes + 3072
    chunks = []
    for p in paths:
        raw = np.fromfile(p, dtype=np.uint8)
        if raw.size == 0 or raw.size % record:
            raise InputError(f"{p}: not a CIFAR binary file (size {raw.size} is not a multiple of {record})")
        chunks.append(raw.reshape(-1, record))
    rows = np.concatenate(chunks)
    images = rows[:, label_bytes:].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return np.ascontiguousarray(images), rows[:, label_index].astype(np.int64)


def read_svhn_mat(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """SVHN format 2: ``X`` (32, 32, 3, N), ``y`` (N, 1) with 10 standing for digit 0."""
    from scipy.io import loadmat

    try:
        d = loadmat(path)
    except Exception as exc:
        raise InputError(f"{path}: not a readable SVHN .mat file ({exc})") from exc
    images = np.ascontiguousarray(d["X"].transpose(3, 0, 1, 2))
    labels = d["y"].ravel().astype(np.int64) % 10
    return images, labels


def _cifar10(split, data_dir=None, download=False):
    folder = ensure("cifar10", data_dir, download, split) / "cifar-10-batches-bin"
    files = [folder / f"data_batch_{i}.bin" for i in range(1, 6)] if split == "train" else [folder / "test_batch.bin"]
    return read_cifar_binary(files, 1, 0)


def _cifar100(split, data_dir=None, download=False):
    folder = ensure("cifar100", data_dir, download, split) / "cifar-100-binary"
    return read_cifar_binary([folder / ("train.bin" if split == "train" else "test.bin")], 2, 1)


def _svhn(split, data_dir=None, download=False):
    folder = ensure("svhn", data_dir, download, split)
    path = folder / ("train_32x32.mat" if split == "train" else "test_32x32.mat")
    if not path.exists():
        raise DatasetUnavailableError(f"svhn: missing {path}; get {SVHN_TRAIN[0]} (md5 {SVHN_TRAIN[2]})")
    return read_svhn_mat(path)


def _celeba(split, data_dir=None, download=False):
    images, partition = celeba_layout(ensure("celeba", data_dir, download, split))
    wanted = "0" if split == "train" else "2"  # list_eval_partition: 0 train, 1 valid, 2 test
    names = [n for n, part in read_celeba_partition(partition) if part == wanted]
    return FileImages([images / n for n in names], crop=140), np.zeros(len(names), np.int64)


def _textures(split, data_dir=None, download=False):
    folder = ensure("textures", data_dir, download, split) / "dtd"
    lines = (folder / "labels" / f"{split}1.txt").read_text().split()
    classes = sorted({rel.split("/")[0] for rel in lines})
    labels = np.array([classes.index(rel.split("/")[0]) for rel in lines], dtype=np.int64)
    return FileImages([folder / "images" / rel for rel in lines]), labels


def _tinyimagenet(split, data_dir=None, download=False):
    folder = ensure("tinyimagenet", data_dir, download, split) / "tiny-imagenet-200"
    if split == "train":
        paths = sorted((folder / "train").glob("*/images/*.JPEG"))
        wnids = [p.parent.parent.name for p in paths]
    else:
        rows = [line.split("\t") for line in (folder / "val" / "val_annotations.txt").read_text().splitlines() if line]
        paths = [folder / "val" / "images" / r[0] for r in rows]
        wnids = [r[1] for r in rows]
    classes = sorted(set(wnids))
    return FileImages(paths), np.array([classes.index(w) for w in wnids], dtype=np.int64)


PAPER_DATASETS = (
    DatasetSpec("cifar10", "CIFAR-10", _cifar10, "CIFAR-10 (binary version), 32×32 RGB", profile="paper"),
    DatasetSpec("cifar100", "CIFAR-100", _cifar100, "CIFAR-100 (binary version, fine labels), 32×32 RGB",
                profile="paper"),
    DatasetSpec("svhn", "SVHN", _svhn, "SVHN cropped digits (format 2 .mat), 32×32 RGB", profile="paper"),
    DatasetSpec("celeba", "CelebA", _celeba, "CelebA aligned faces, centre crop 140, resized to 32",
                profile="paper"),
    DatasetSpec("textures", "Textures", _textures, "Describable Textures (DTD) split 1, centre square crop",
                profile="paper"),
    DatasetSpec("tinyimagenet", "TinyImageNet", _tinyimagenet, "Tiny ImageNet-200 (test = val split), 64→32",
                profile="paper"),
)
