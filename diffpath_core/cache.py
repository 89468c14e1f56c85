"""Path statistics on disk: one folder per entry, keyed, chunked, atomic, resumable, shardable, locked.

An entry is a folder named by a hash of (model weights, trajectory settings, dataset identity,
statistics version); the settings hold everything that changes the numbers: K, clipping, precision,
the reading, the network's execution, the device type (other than the CPU) and the chunk size (other
than the default), so an entry is bound to its chunking. Images are processed in fixed chunks; each
finished chunk is written at once (temp file, fsync, rename), so a killed run resumes at the first
missing chunk, and temp files of killed writers are removed. Each chunk is computed under a file lock:
a second process extracting the same entry waits and then reads what the first wrote. Whoever finds
every chunk present merges them, in order, into ``stats.npz`` — the same file a single process writes.

An entry also records the content hash of each of its images (``content.npy``). Every read and every resumed
write checks them against the images asked for: an entry written for other images (an identity that did not pin
its content, a folder copied by hand, an entry older than this record) is cleared, recomputed and reported
(:class:`StaleEntryWarning`), never read for the wrong images.

What to compute, and in which order, is the extraction driver's business (:mod:`diffpath_core.extraction`).
"""
from __future__ import annotations

import contextlib
import json
import shutil
import warnings
from pathlib import Path

import numpy as np

from .statistics import STATS_VERSION
from .store import (atomic_path, atomic_savez, atomic_write_bytes, clean_stale_temp_files, concatenate, digest,
                    load_npz)

CHUNK_SIZE = 256


def trajectory_settings(k: int, clip: bool, precision: str, reading: str = "path", noise_seed: int = 0,
                        device_type: str = "cpu", chunk_size: int = CHUNK_SIZE, layout: str = "nchw") -> dict:
    """What decides the statistics of an image besides the model: the cache key's settings part.

    Defaults add no key (CPU, default chunking, the path reading, NCHW), so entries written before these keys
    existed stay valid; anything else has entries of its own. The layout (``nchw`` or ``channels_last``) picks other
    convolution kernels, hence other rounding: channels_last entries are apart on every device, and on other devices
    than the CPU every entry names its layout (entries written there before it was keyed ran channels_last inputs
    whatever the option said, and are not read). The fresh reading names its noise generator's version.
    """
    from .trajectory import NOISE_VERSION

    settings = {"k": int(k), "clip": bool(clip), "precision": precision, "stats": STATS_VERSION}
    if reading != "path":
        settings["reading"] = reading
    if reading == "fresh":  # the fresh reading also depends on its seed, and on how its noise is drawn
        settings["noise_seed"] = int(noise_seed)
        settings["noise"] = NOISE_VERSION
    if device_type != "cpu":  # other kernels, other rounding (and TF32 unless precision says fp32)
        settings["device"] = device_type
    if layout != "nchw" or device_type != "cpu":
        settings["layout"] = layout
    if int(chunk_size) != CHUNK_SIZE:
        settings["chunk_size"] = int(chunk_size)
    return settings


def entry_key(model_hash: str, settings: dict, identity: str | None = None) -> str:
    """The hash naming an entry: model weights, settings and (for an entry) the images' identity."""
    blob = {"model": model_hash, "settings": settings}
    if identity is not None:
        blob["data"] = identity
    return digest(json.dumps(blob, sort_keys=True), length=20)


def chunk_bounds(i: int, chunk_size: int, n_images: int) -> tuple[int, int]:
    """The image range [lo, hi) of chunk ``i``: chunks are fixed, so a resumed run cuts the images the same way."""
    return i * chunk_size, min((i + 1) * chunk_size, n_images)


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


class StaleEntryWarning(UserWarning):
    """A cache entry held statistics of other images than those asked for; it was cleared and recomputed."""


class CacheEntry:
    """The folder of one entry: ``meta.json``, ``content.npy`` (each image's content hash), ``chunks/00000.npz`` …,
    and ``stats.npz`` once merged. ``content`` is the content hash of each requested image (int64 (N,))."""

    def __init__(self, folder: str | Path, n_images: int, chunk_size: int = CHUNK_SIZE,
                 content: np.ndarray | None = None):
        self.folder, self.n_images, self.chunk_size = Path(folder), int(n_images), int(chunk_size)
        self.content = None if content is None else np.asarray(content, dtype=np.int64)
        if self.content is not None and len(self.content) != self.n_images:
            raise ValueError(f"{len(self.content)} content hashes for {self.n_images} images")
        self.n_chunks = (self.n_images + self.chunk_size - 1) // self.chunk_size
        self.final, self.chunks = self.folder / "stats.npz", self.folder / "chunks"
        self.record = self.folder / "content.npy"

    def load(self) -> dict[str, np.ndarray] | None:
        """The merged statistics, or ``None`` when not merged yet (or written for other images: then cleared)."""
        if not self.final.exists() or not self._holds_the_request():
            return None
        return load_npz(self.final)

    def open(self, meta: dict) -> None:
        """Make the folders, remove temp files of dead writers, clear what was written for other images, and write
        ``meta.json`` and the content record once."""
        self.folder.mkdir(parents=True, exist_ok=True)
        self._holds_the_request()
        self.chunks.mkdir(parents=True, exist_ok=True)
        clean_stale_temp_files(self.folder)
        clean_stale_temp_files(self.chunks)
        if self.content is not None and not self.record.exists():
            with atomic_path(self.record, keep_suffix=True) as tmp:
                np.save(tmp, self.content)
        if not (self.folder / "meta.json").exists():
            atomic_write_bytes(self.folder / "meta.json", json.dumps(meta, indent=2, default=str).encode())

    def _holds_the_request(self) -> bool:
        """Whether what the folder holds was computed for the requested images (always, without a request's
        content); if not, the folder's statistics are removed, with a :class:`StaleEntryWarning`."""
        if self.content is None or not self.folder.exists():
            return True
        with _locked(self.folder / "merge.lock"):
            found = np.load(self.record, allow_pickle=False) if self.record.exists() else None
            if found is not None and np.array_equal(found, self.content):
                return True
            written = self.final.exists() or any(self.chunks.glob("*.npz"))
            if not written and found is None:
                return True  # an entry just opened by another process, before its record: nothing to misread
            if found is None:
                why = "it has no record of its images' content (written by an older version)"
            elif len(found) != len(self.content):
                why = f"it holds {len(found)} images, {len(self.content)} were asked for"
            else:
                why = f"{int(np.sum(found != self.content))} of its {len(found)} images differ from those asked for"
            warnings.warn(f"cache entry {self.folder.name}: {why}; its statistics are removed and computed again "
                          "for the images asked for", StaleEntryWarning, stacklevel=4)
            for path in (self.final, self.record, self.folder / "meta.json"):
                path.unlink(missing_ok=True)
            shutil.rmtree(self.chunks, ignore_errors=True)
            return False

    def chunk_path(self, i: int) -> Path:
        return self.chunks / f"{i:05d}.npz"

    def missing(self, chunks) -> list[int]:
        return [i for i in chunks if not self.chunk_path(i).exists()]

    def chunk_lock(self, i: int):
        """The exclusive lock of chunk ``i``: whoever holds it computes the chunk, others wait and then read it."""
        return _locked(self.chunks / f"{i:05d}.lock")

    def merge(self) -> dict[str, np.ndarray] | None:
        """Merge chunk files in order into ``stats.npz`` once all exist; ``None`` while some are missing."""
        if self.final.exists():
            return load_npz(self.final)
        if self.missing(range(self.n_chunks)):
            return None
        with _locked(self.folder / "merge.lock"):
            if self.final.exists():
                return load_npz(self.final)
            merged = concatenate([load_npz(self.chunk_path(i)) for i in range(self.n_chunks)])
            atomic_savez(self.final, merged)
        return merged
