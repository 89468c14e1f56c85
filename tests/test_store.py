"""Atomic writes: fsync of file and folder, nothing half-written on failure, stale temp files of dead writers only."""
import os

import numpy as np
import pytest

from diffpath_core import store


def test_write_is_synced_and_replaces_whole(tmp_path, monkeypatch):
    synced = []
    real_fsync = os.fsync
    monkeypatch.setattr(store.os, "fsync", lambda fd: (synced.append(fd), real_fsync(fd)))
    target = tmp_path / "table.csv"
    store.atomic_write_bytes(target, b"a,b\n1,2\n")
    assert target.read_bytes() == b"a,b\n1,2\n" and len(synced) == 2, "the file, then its folder"
    store.atomic_savez(tmp_path / "x.npz", {"v": np.arange(3)})
    assert store.load_npz(tmp_path / "x.npz")["v"].tolist() == [0, 1, 2]


def test_failed_write_leaves_the_old_file_and_no_temp(tmp_path):
    target = tmp_path / "stats.npz"
    store.atomic_savez(target, {"v": np.arange(3)})
    before = target.read_bytes()

    with pytest.raises(TypeError):  # the write fails halfway: a str where bytes belong
        store.atomic_write_bytes(target, "not bytes")
    assert target.read_bytes() == before and not list(tmp_path.glob(".*.tmp"))


def test_only_dead_writers_temp_files_are_cleaned(tmp_path):
    dead = tmp_path / ".stats.npz.2147483646-1.tmp"
    alive = tmp_path / f".stats.npz.{os.getppid()}-1.tmp"  # the parent process runs
    dead.write_bytes(b"x")
    alive.write_bytes(b"x")
    assert store.clean_stale_temp_files(tmp_path) == 1
    assert not dead.exists() and alive.exists()
