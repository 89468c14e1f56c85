"""Files that are either whole or absent: atomic writes (temp file, fsync, rename, fsync of the folder).

A reader never sees a half-written file, and a write that returned survives a power cut. Temp files are
named ``.<name>.<pid>-<thread>.tmp`` beside their target (two writers never share one);
:func:`clean_stale_temp_files` removes those a killed process left behind.
"""
from __future__ import annotations

import os
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


def _atomic_write(path: Path, write) -> None:
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{threading.get_ident()}.tmp")
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    _atomic_write(Path(path), lambda f: f.write(data))


def atomic_savez(path: str | os.PathLike, arrays: dict[str, np.ndarray]) -> None:
    _atomic_write(Path(path), lambda f: np.savez(f, **arrays))


def load_npz(path: str | os.PathLike) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as d:
        return {k: d[k] for k in d.files}


def concatenate(parts: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Per-key concatenation of statistics dicts along the image axis, in order."""
    return {key: np.concatenate([p[key] for p in parts]) for key in parts[0]}


def clean_stale_temp_files(folder: str | os.PathLike) -> int:
    """Remove temp files of writers that no longer run (their pid is gone); returns how many."""
    removed = 0
    for tmp in Path(folder).glob(".*.tmp"):
        try:
            pid = int(tmp.name.rsplit(".", 2)[-2].split("-")[0])
        except ValueError:
            continue
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
