"""Path statistics on disk: keyed, chunked, atomic, resumable, shardable, locked.

An entry is a folder named by a hash of (model weights, trajectory settings, dataset identity,
statistics version); the settings hold everything that changes the numbers: K, clipping, precision,
the reading, the network's execution, the device type (other than the CPU) and the chunk size (other
than the default), so an entry is bound to its chunking. Images are processed in fixed chunks; each
finished chunk is written at once (temp file, fsync, rename), so a killed run resumes at the first
missing chunk, and temp files of killed writers are removed. Each chunk is computed under a file lock:
a second process extracting the same entry waits and then reads what the first wrote. With
``rank``/``world`` each process takes chunks i ≡ rank (mod world); whoever finds every chunk present
merges them, in order, into ``stats.npz`` — the same file a single process writes.
"""
from __future__ import annotations

import contextlib
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
from .notebook import progress_enabled
from .store import atomic_savez, atomic_write_bytes, clean_stale_temp_files, concatenate, load_npz

CHUNK_SIZE = 256


def tensor_identity(images: torch.Tensor) -> str:
    """Identity of an in-memory batch: a hash of its shape and bytes."""
    h = hashlib.sha256(str(tuple(images.shape)).encode())
    h.update(images.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def trajectory_settings(k: int, clip: bool, precision: str, reading: str = "path", noise_seed: int = 0,
                        device_type: str = "cpu", chunk_size: int = CHUNK_SIZE) -> dict:
    """What decides the statistics of an image besides the model: the cache key's settings part.

    Defaults add no key (CPU, default chunking, the path reading), so entries written before these keys
    existed stay valid; anything else has entries of its own.
    """
    settings = {"k": int(k), "clip": bool(clip), "precision": precision, "stats": STATS_VERSION}
    if reading != "path":  # the fresh reading also depends on its seed
        settings.update(reading=reading, noise_seed=int(noise_seed))
    if device_type != "cpu":  # other kernels, other rounding (and TF32 unless precision says fp32)
        settings["device"] = device_type
    if int(chunk_size) != CHUNK_SIZE:
        settings["chunk_size"] = int(chunk_size)
    return settings


@contextlib.contextmanager
def _locked(path: Path):
    """An exclusive advisory lock on ``path`` (fcntl; where there is none, e.g. on Windows, no lock)."""
    try:
        import fcntl
    except ImportError:
        yield
        return
    with open(path, "a+b") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def entry_key(model: DiffusionModel, settings: dict, identity: str) -> str:
    blob = json.dumps({"model": model.weights_hash(), "settings": settings, "data": identity}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


def extract_path_statistics(model: DiffusionModel, images: ImageSet | torch.Tensor, *, k: int = 10,
                            clip: bool = True, precision: str = "fp32", batch_size: int = 64,
                            cache_dir: str | os.PathLike | None = None, progress: bool = True,
                            desc: str | None = None, rank: int = 0, world: int = 1,
                            network=None, chunk_size: int = CHUNK_SIZE, reading: str = "path",
                            noise_seed: int = 0) -> dict[str, np.ndarray] | None:
    """Statistics of every image for one reading, from cache when present.

    ``reading="path"``: :func:`features.path_statistics` of the DDIM inversion (every method);
    ``"fresh"``: :func:`features.fresh_noise_statistics` (DiffPathV2's fresh-noise reading, seeded by
    ``noise_seed``). Returns the merged statistics, or ``None`` for a shard whose peers have not finished yet.
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
    settings = trajectory_settings(k, clip, precision, reading, noise_seed, model.device.type, chunk_size)
    if network is not None:  # another execution of the network: fp32 rounding differs, so its own entry
        settings["network"] = getattr(network, "cache_tag", type(network).__name__)
    entry = Path(cache_dir) / f"{name}-{entry_key(model, settings, identity)}" if cache_dir is not None else None
    n_chunks = (len(x) + chunk_size - 1) // chunk_size

    def compute(lo: int, hi: int) -> dict[str, np.ndarray]:
        parts = []
        for start in range(lo, hi, batch_size):
            parts.append(batch_path_statistics(model, x[start:min(start + batch_size, hi)], k, clip, precision,
                                               network, reading, noise_seed))
        return concatenate(parts)

    mine = [i for i in range(n_chunks) if i % world == rank]
    label = (desc or f"{name}: K={k} trajectories") + ("" if reading == "path" else f" ({reading} noise)")
    if cache_dir is None:
        if world != 1:
            raise ValueError("sharded extraction needs a cache_dir to merge through")
        out = []
        for i in tqdm(mine, desc=label, unit="chunk", disable=not progress_enabled(progress), dynamic_ncols=True):
            out.append(compute(i * chunk_size, min((i + 1) * chunk_size, len(x))))
        return concatenate(out)

    final = entry / "stats.npz"
    if final.exists():
        return load_npz(final)
    chunks = entry / "chunks"
    chunks.mkdir(parents=True, exist_ok=True)
    clean_stale_temp_files(entry)
    clean_stale_temp_files(chunks)
    meta = {"dataset": name, "identity": identity, "n_images": len(x), "chunk_size": chunk_size,
            "model": model.source, "model_hash": model.weights_hash(), "settings": settings,
            "schedule": model.schedule(k).as_dict(), "torch": torch.__version__}
    if not (entry / "meta.json").exists():
        atomic_write_bytes(entry / "meta.json", json.dumps(meta, indent=2, default=str).encode())
    todo = [i for i in mine if not (chunks / f"{i:05d}.npz").exists()]
    bar = tqdm(total=len(mine), initial=len(mine) - len(todo), desc=label, unit="chunk",
               disable=not progress_enabled(progress), dynamic_ncols=True)
    for i in todo:
        t0 = time.perf_counter()
        lo, hi = i * chunk_size, min((i + 1) * chunk_size, len(x))
        target = chunks / f"{i:05d}.npz"
        with _locked(chunks / f"{i:05d}.lock"):
            if not target.exists():  # another process may have written it while this one waited
                atomic_savez(target, compute(lo, hi))
        bar.update(1)
        bar.set_postfix(img_per_s=f"{(hi - lo) / (time.perf_counter() - t0):.1f}")
    bar.close()
    return merge_chunks(entry, n_chunks)


def merge_chunks(entry: Path, n_chunks: int) -> dict[str, np.ndarray] | None:
    """Merge chunk files in order into ``stats.npz`` once all exist; ``None`` while some are missing."""
    final = entry / "stats.npz"
    if final.exists():
        return load_npz(final)
    paths = [entry / "chunks" / f"{i:05d}.npz" for i in range(n_chunks)]
    if not all(p.exists() for p in paths):
        return None
    with _locked(entry / "merge.lock"):
        if final.exists():
            return load_npz(final)
        merged = concatenate([load_npz(p) for p in paths])
        atomic_savez(final, merged)
    return merged
