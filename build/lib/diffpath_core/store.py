"""What the package writes and how it names it: atomic files, content digests, statistics concatenation.

Atomic writes (temp file, fsync, rename, fsync of the folder): a reader never sees a half-written file, and a
write that returned survives a power cut. Temp files are named ``.<name>.<pid>-<thread>.tmp`` beside their
target (two writers never share one); :func:`clean_stale_temp_files` removes those a killed process left
behind. :func:`digest` is the one hash behind every identity (datasets, models, cache entries, scores).
"""
from __future__ import annotations

import contextlib
import hashlib
import os
import re
import threading
from pathlib import Path

import numpy as np


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # some platforms cannot open folders; the rename is still atomic
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, keep_suffix: bool = False):
    """A temp path beside ``path`` for any writer (``torch.save``, papermill, a download); on leaving the block
    it is fsynced and renamed onto ``path``; on an exception it is removed and ``path`` is left as it was.
    ``keep_suffix`` ends the temp name with ``path``'s suffix, for writers that check it."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{threading.get_ident()}.tmp"
                         + (path.suffix if keep_suffix else ""))
    try:
        yield tmp
        _fsync_file(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_savez(path: str | os.PathLike, arrays: dict[str, np.ndarray]) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, **arrays)


def digest(*parts: str | bytes | np.ndarray, length: int | None = 16, algorithm: str = "sha256") -> str:
    """Hex digest of ``parts`` fed in order (text as UTF-8, arrays as their C-order bytes), cut to ``length``.

    Feeding parts one by one equals hashing their concatenation, so identities written before this helper
    existed (dataset, model and cache keys) are unchanged.
    """
    h = hashlib.new(algorithm)
    for part in parts:
        if isinstance(part, str):
            part = part.encode()
        elif isinstance(part, np.ndarray):
            part = np.ascontiguousarray(part).tobytes()
        h.update(part)
    return h.hexdigest()[:length]


def file_digest(path: str | os.PathLike, algorithm: str = "sha256") -> str:
    """Full hex digest of a file's bytes, read in 1 MiB blocks (download checksums)."""
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def stats_digest(stats: dict[str, np.ndarray]) -> str:
    """Digest of a statistics dict (keys and values, in key order): what a score was computed from."""
    return digest(*(part for key in sorted(stats) for part in (key, stats[key])))


def load_npz(path: str | os.PathLike) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as d:
        return {k: d[k] for k in d.files}


def concatenate(parts: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Per-key concatenation of statistics dicts along the image axis, in order."""
    return {key: np.concatenate([p[key] for p in parts]) for key in parts[0]}


_TEMP_NAME = re.compile(r"\.(\d+)(?:-\d+)?\.tmp(?:\.\w+)?$")  # .<name>.<pid>[-<thread>].tmp[.<suffix>]


def clean_stale_temp_files(folder: str | os.PathLike) -> int:
    """Remove temp files of writers that no longer run (their pid is gone); returns how many."""
    removed = 0
    for tmp in Path(folder).glob(".*.tmp*"):
        match = _TEMP_NAME.search(tmp.name)
        if match is None:
            continue
        pid = int(match.group(1))
        if pid != os.getpid() and not _pid_alive(pid):
            tmp.unlink(missing_ok=True)
            removed += 1
    return removed


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
