"""Path statistics on disk: keyed, chunked, atomic, resumable, shardable.

An entry is a folder named by a hash of (model weights, trajectory settings, dataset identity,
statistics version). Images are processed in fixed chunks; each finished chunk is written at once
(temp file + rename), so a killed run resumes at the first missing chunk. With ``rank``/``world``
each process takes chunks i ≡ rank (mod world); whoever finds every chunk present merges them, in
order, into ``stats.npz`` — the same file a single process writes.
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from .data import ImageSet, check_images
from .errors import InputError
from .features import STATS_VERSION, batch_path_statistics
from .models import DiffusionModel

CHUNK_SIZE = 256


def atomic_write_bytes(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def atomic_savez(path: Path, arrays: dict[str, np.ndarray]) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        np.savez(f, **arrays)
    os.replace(tmp, path)


def tensor_identity(images: torch.Tensor) -> str:
    """Identity of an in-memory batch: a hash of its shape and bytes."""
    h = hashlib.sha256(str(tuple(images.shape)).encode())
    h.update(images.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def trajectory_settings(k: int, clip: bool, precision: str) -> dict:
    return {"k": int(k), "clip": bool(clip), "precision": precision, "stats": STATS_VERSION}


def entry_key(model: DiffusionModel, settings: dict, identity: str) -> str:
    blob = json.dumps({"model": model.weights_hash(), "settings": settings, "data": identity}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


def _load_npz(path: Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as d:
        return {k: d[k] for k in d.files}


def extract_path_statistics(model: DiffusionModel, images: ImageSet | torch.Tensor, *, k: int = 10,
                            clip: bool = True, precision: str = "fp32", batch_size: int = 64,
                            cache_dir: str | os.PathLike | None = None, progress: bool = True,
                            desc: str | None = None, rank: int = 0, world: int = 1,
                            network=None, chunk_size: int = CHUNK_SIZE) -> dict[str, np.ndarray] | None:
    """Path statistics of every image (see :func:`features.path_statistics`), from cache when present.

    Returns the merged statistics, or ``None`` for a shard whose peers have not finished yet.
    """
    if isinstance(images, ImageSet):
        name, identity, x = images.name, images.identity, images.images
    else:
        name, identity, x = "images", None, images
    x = check_images(torch.as_tensor(x), f"dataset {name!r}")
    if x.shape[1] != model.in_channels or tuple(x.shape[-2:]) != (model.image_size, model.image_size):
        raise InputError(f"dataset {name!r}: images are {tuple(x.shape[1:])}, the model expects "
                         f"{(model.in_channels, model.image_size, model.image_size)}")
    identity = identity or tensor_identity(x)
    settings = trajectory_settings(k, clip, precision)
    if network is not None:  # another execution of the network: fp32 rounding differs, so its own entry
        settings["network"] = getattr(network, "cache_tag", type(network).__name__)
    entry = Path(cache_dir) / f"{name}-{entry_key(model, settings, identity)}" if cache_dir is not None else None
    if entry is not None and (entry / "meta.json").exists():  # resume with the chunking the entry began with
        chunk_size = int(json.loads((entry / "meta.json").read_text())["chunk_size"])
    n_chunks = (len(x) + chunk_size - 1) // chunk_size

    def compute(lo: int, hi: int) -> dict[str, np.ndarray]:
        parts = []
        for start in range(lo, hi, batch_size):
            parts.append(batch_path_statistics(model, x[start:min(start + batch_size, hi)], k, clip, precision,
                                               network))
        return {key: np.concatenate([p[key] for p in parts]) for key in parts[0]}

    mine = [i for i in range(n_chunks) if i % world == rank]
    label = desc or f"{name}: K={k} trajectories"
    if cache_dir is None:
        if world != 1:
            raise ValueError("sharded extraction needs a cache_dir to merge through")
        out = []
        for i in tqdm(mine, desc=label, unit="chunk", disable=not progress, dynamic_ncols=True):
            out.append(compute(i * chunk_size, min((i + 1) * chunk_size, len(x))))
        return {key: np.concatenate([o[key] for o in out]) for key in out[0]}

    final = entry / "stats.npz"
    if final.exists():
        return _load_npz(final)
    chunks = entry / "chunks"
    chunks.mkdir(parents=True, exist_ok=True)
    meta = {"dataset": name, "identity": identity, "n_images": len(x), "chunk_size": chunk_size,
            "model": model.source, "model_hash": model.weights_hash(), "settings": settings,
            "schedule": model.schedule(k).as_dict(), "torch": torch.__version__}
    if not (entry / "meta.json").exists():
        atomic_write_bytes(entry / "meta.json", json.dumps(meta, indent=2, default=str).encode())
    todo = [i for i in mine if not (chunks / f"{i:05d}.npz").exists()]
    bar = tqdm(total=len(mine), initial=len(mine) - len(todo), desc=label, unit="chunk",
               disable=not progress, dynamic_ncols=True)
    for i in todo:
        t0 = time.perf_counter()
        lo, hi = i * chunk_size, min((i + 1) * chunk_size, len(x))
        atomic_savez(chunks / f"{i:05d}.npz", compute(lo, hi))
        bar.update(1)
        bar.set_postfix(img_per_s=f"{(hi - lo) / (time.perf_counter() - t0):.1f}")
    bar.close()
    return merge_chunks(entry, n_chunks)


def merge_chunks(entry: Path, n_chunks: int) -> dict[str, np.ndarray] | None:
    """Merge chunk files in order into ``stats.npz`` once all exist; ``None`` while some are missing."""
    final = entry / "stats.npz"
    if final.exists():
        return _load_npz(final)
    paths = [entry / "chunks" / f"{i:05d}.npz" for i in range(n_chunks)]
    if not all(p.exists() for p in paths):
        return None
    parts = [_load_npz(p) for p in paths]
    merged = {key: np.concatenate([p[key] for p in parts]) for key in parts[0]}
    atomic_savez(final, merged)
    return merged
