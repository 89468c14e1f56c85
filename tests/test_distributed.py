"""torchrun with 2 gloo processes on CPU gives the single-process features, through the same cache files."""
import os
import socket
import subprocess
import sys

import numpy as np
import torch
from PIL import Image

from diffpath_core.datasets import load_image_folder
from diffpath_core.extraction import Extraction


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _assert_equals_single_process(model, folder, sharded_npz):
    """The statistics one process computes, at one thread as each torchrun process: bitwise equal."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # same batches, same kernels → bitwise equal
    try:
        single = Extraction(model, k=3, batch_size=4, progress=False).statistics(
            load_image_folder(folder, size=16, channels=1))
    finally:
        torch.set_num_threads(threads)
    with np.load(sharded_npz) as sharded:
        for key, value in single.items():
            np.testing.assert_array_equal(sharded[f"path_{key}"], value, err_msg=key)


def _image_folder(folder, n, seed):
    folder.mkdir()
    rng = np.random.default_rng(seed)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (16, 16), dtype=np.uint8), "L").save(folder / f"{i:03d}.png")
    return folder


def _torchrun_features(entry: list[str], folder, model_dir, tmp_path) -> list[str]:
    """2 processes of `features` on ``folder``: K=3, batches of 4, chunks of 8, cache and output in tmp_path."""
    return [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--nnodes=1",
            "--master_addr=127.0.0.1", f"--master_port={_free_port()}", *entry, "features", str(folder),
            "--model", str(model_dir), "-k", "3", "--batch-size", "4", "--chunk-size", "8", "--device", "cpu",
            "--cache-dir", str(tmp_path / "cache"), "--out", str(tmp_path / "sharded.npz"), "--quiet"]


def test_torchrun_two_processes_equal_single_process(tiny_model_dir, tiny_model, tmp_path):
    folder = _image_folder(tmp_path / "images", 40, seed=0)
    cmd = _torchrun_features(["-m", "diffpath_core.cli"], folder, tiny_model_dir, tmp_path)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "2 processes" in done.stdout
    chunks = sorted((tmp_path / "cache").glob("*/chunks/*.npz"))
    assert len(chunks) == 5, "40 images in chunks of 8, shared by both ranks"

    _assert_equals_single_process(tiny_model, folder, tmp_path / "sharded.npz")


KILLER = '''
import os, signal, sys
from diffpath_core.extraction import Extraction

original, calls = Extraction.batch_statistics, [0]


def batch_then_maybe_die(*args, **kwargs):
    out = original(*args, **kwargs)
    calls[0] += 1
    if os.environ.get("RANK") == "1" and calls[0] >= int(os.environ.get("DIE_AFTER_BATCHES", "0") or 10**9):
        os.kill(os.getpid(), signal.SIGKILL)  # a rank lost mid-extraction, after its first chunk is on disk
    return out


Extraction.batch_statistics = batch_then_maybe_die
from diffpath_core.cli import main
sys.exit(main(sys.argv[1:]))
'''


def test_torchrun_rank_killed_then_resumed_equals_single_process(tiny_model_dir, tiny_model, tmp_path):
    folder = _image_folder(tmp_path / "images", 48, seed=3)
    script = tmp_path / "features_or_die.py"
    script.write_text(KILLER)
    cache = tmp_path / "cache"

    def torchrun(die_after: int):
        cmd = _torchrun_features([str(script)], folder, tiny_model_dir, tmp_path)
        env = {**os.environ, "OMP_NUM_THREADS": "1", "DIE_AFTER_BATCHES": str(die_after or ""),
               "DIFFPATH_DIST_TIMEOUT_MINUTES": "5"}
        return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)

    killed = torchrun(die_after=3)  # rank 1 writes its first chunk (2 batches), dies in its second
    assert killed.returncode != 0
    written = {p: p.read_bytes() for p in cache.glob("*/chunks/*.npz")}
    assert 0 < len(written) < 6 and not list(cache.glob("*/stats.npz"))
    assert any(p.name == "00001.npz" for p in written), "rank 1's first chunk survived the kill"

    resumed = torchrun(die_after=0)  # rank 0 has nothing left and waits; rank 1 finishes its chunks
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    for path, content in written.items():
        assert path.read_bytes() == content, f"{path.name} was recomputed"
    _assert_equals_single_process(tiny_model, folder, tmp_path / "sharded.npz")


def test_setup_binds_the_gpu_before_the_process_group(monkeypatch):
    """On GPUs: set_device(LOCAL_RANK) first, then init_process_group with the job-long timeout (recorded, no GPU)."""
    import datetime

    from diffpath_core import distributed

    calls = []
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setenv("DIFFPATH_DIST_TIMEOUT_MINUTES", "90")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "set_device", lambda i: calls.append(("set_device", i)))
    monkeypatch.setattr(distributed.dist, "is_initialized", lambda: False)
    monkeypatch.setattr(distributed.dist, "init_process_group",
                        lambda backend, timeout: calls.append(("init", backend, timeout)))
    monkeypatch.setattr(distributed.dist, "get_rank", lambda: 1)
    monkeypatch.setattr(distributed.dist, "get_world_size", lambda: 2)
    assert distributed.setup() == (1, 2, "cuda:1")
    assert calls == [("set_device", 1), ("init", "nccl", datetime.timedelta(minutes=90))]


def test_more_processes_than_gpus_is_refused_with_what_to_do(monkeypatch):
    """Two ranks on a one-GPU machine: a clear refusal before any process group exists; on the CPU, gloo."""
    import pytest

    from diffpath_core import distributed

    for key, value in {"RANK": "0", "WORLD_SIZE": "2", "LOCAL_RANK": "0", "LOCAL_WORLD_SIZE": "2"}.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(RuntimeError, match=r"2 processes on this machine, which has 1 GPU.*--nproc_per_node=1.*--device cpu"):
        distributed.setup("auto")
    assert not torch.distributed.is_initialized()
