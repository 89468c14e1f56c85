"""The registry of named datasets, and the two ways to ask for images: by name or by folder.

The package's ``__init__`` registers the offline sets (:mod:`.offline`) and the paper sets (:mod:`.paper`);
users add their own with :func:`register`.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from ..errors import InputError
from ..store import digest
from .folders import is_folder_source, load_image_folder
from .images import ArraySource, FileImages, ImageSet, identity


@dataclass(frozen=True)
class DatasetSpec:
    """How to get one named dataset: a loader giving uint8 (N,H,W[,C]) images and labels."""

    name: str
    title: str
    loader: Callable[..., tuple]
    description: str
    classes: tuple[int, ...] | None = None  # keep only these labels (class splits)
    profile: str = "offline"


DATASETS: dict[str, DatasetSpec] = {}


def register(spec: DatasetSpec) -> DatasetSpec:
    """Add a dataset to the registry (also how users plug in their own named sets)."""
    DATASETS[spec.name] = spec
    return spec


def load_dataset(name: str, split: str = "test", *, size: int = 32, channels: int = 1,
                 limit: int | None = None, seed: int = 0, data_dir=None, download: bool = False,
                 stratify: bool = False) -> ImageSet:
    """Load a registered dataset split as an :class:`ImageSet` at ``size``×``size`` with ``channels``.

    ``limit`` keeps a random subset of that many images (fixed by ``seed``), in original order; with ``stratify``
    each class keeps its share of them (:func:`stratified_draw`: every class present when ``limit`` allows).
    """
    if name not in DATASETS:
        raise InputError(f"unknown dataset {name!r}; known: {', '.join(sorted(DATASETS))} "
                         "(or pass a folder path)")
    if split not in ("train", "test"):
        raise InputError(f"split must be 'train' or 'test', got {split!r}")
    spec = DATASETS[name]
    raw, labels = spec.loader(split, data_dir=data_dir, download=download)
    indices = np.arange(len(labels))  # each image's index in the split, for messages that name it
    if spec.classes is not None:
        keep = np.isin(labels, spec.classes)
        raw, labels, indices = raw[keep], labels[keep], indices[keep]
    if limit is not None and limit < len(raw):
        rng = np.random.default_rng(seed)
        idx = stratified_draw(labels, limit, rng) if stratify else np.sort(rng.choice(len(raw), size=limit,
                                                                                        replace=False))
        labels, indices = labels[idx], indices[idx]
        raw = raw.subset(idx) if isinstance(raw, FileImages) else raw[idx]
    meta = {"title": spec.title, "description": spec.description, "indices": indices}
    if isinstance(raw, FileImages):  # files (paper datasets): decoded when needed, identified by their bytes
        key = identity(name, split, raw.identity(), size, channels, "crop-bilinear-pil")
        return ImageSet(name, split, labels=labels, identity=key, meta=meta, source=raw.source(size, channels, name))
    key = identity(name, split, digest(raw), size, channels, "bilinear-aa")
    return ImageSet(name, split, labels=labels, identity=key, meta=meta, source=ArraySource(raw, size, channels, name))


def stratified_draw(labels: np.ndarray, limit: int, rng: np.random.Generator) -> np.ndarray:
    """Sorted indices of ``limit`` images drawn without replacement, each class keeping its share (largest
    remainders round), and every class at least one image when ``limit`` is at least the number of classes."""
    classes, counts = np.unique(labels, return_counts=True)
    share = limit * counts / counts.sum()
    take = np.floor(share).astype(int)
    take[np.argsort(-(share - take), kind="stable")[:limit - take.sum()]] += 1
    if limit >= len(classes):
        while (take == 0).any():  # one image for an empty class, from the class with the most
            take[np.argmax(take)] -= 1
            take[np.argmax(take == 0)] += 1
    picked = [rng.choice(np.flatnonzero(labels == c), size=t, replace=False) for c, t in zip(classes, take)]
    return np.sort(np.concatenate(picked))


def dataset_title(name: str) -> str:
    """The short display name of a registered dataset; a folder's own name (never a path of this machine)."""
    if name in DATASETS:
        return DATASETS[name].title
    return Path(str(name).rstrip("/\\")).name or str(name)


def source_problem(source: str) -> str | None:
    """``None`` if ``source`` is a registered dataset or an existing folder, else one line saying which it is not
    (checked before any work, by the CLI and the book runner)."""
    if is_folder_source(source):
        return None if Path(source).is_dir() else f"{source}: no such folder"
    if source not in DATASETS:
        return f"unknown dataset {source!r}; `diffpath datasets` lists them (or give a folder path)"
    return None


def load_images(source: str, split: str | None = "test", **kwargs) -> ImageSet:
    """A registered dataset name or a folder path, whichever ``source`` is.

    For a folder, ``split`` None takes every image and "train" / "test" its disjoint parts (see
    :func:`load_image_folder`); ``bits`` concerns 16-bit files only, so a registered (8-bit) set ignores it.
    """
    if is_folder_source(source):
        folder_kwargs = {k: kwargs[k] for k in ("size", "channels", "resize_images", "convert", "limit", "seed",
                                                "bits") if k in kwargs}
        return load_image_folder(source, split=split, **folder_kwargs)
    dataset_kwargs = {k: kwargs[k] for k in ("size", "channels", "limit", "seed", "data_dir", "download")
                      if k in kwargs}
    return load_dataset(source, split, **dataset_kwargs)
