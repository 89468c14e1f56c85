"""torchrun with 2 gloo processes on CPU gives the single-process features, through the same cache files."""
import os
import socket
import subprocess
import sys

import numpy as np
import torch
from PIL import Image

from diffpath_core.cache import extract_path_statistics
from diffpath_core.data import load_image_folder


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_torchrun_two_processes_equal_single_process(tiny_model_dir, tiny_model, tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(40):
        Image.fromarray(rng.integers(0, 256, (16, 16), dtype=np.uint8), "L").save(folder / f"{i:03d}.png")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--nnodes=1",
           "--master_addr=127.0.0.1", f"--master_port={_free_port()}", "-m", "diffpath_core.cli", "features",
           str(folder), "--model", str(tiny_model_dir), "-k", "3", "--batch-size", "4", "--chunk-size", "8",
           "--cache-dir", str(tmp_path / "cache"), "--out", str(tmp_path / "sharded.npz"), "--quiet"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "2 processes" in done.stdout
    chunks = sorted((tmp_path / "cache").glob("*/chunks/*.npz"))
    assert len(chunks) == 5, "40 images in chunks of 8, shared by both ranks"

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as each torchrun process: same batches, same kernels → bitwise equal
    try:
        single = extract_path_statistics(tiny_model, load_image_folder(folder, size=16, channels=1), k=3,
                                         batch_size=4, progress=False)
    finally:
        torch.set_num_threads(threads)
    with np.load(tmp_path / "sharded.npz") as sharded:
        for key, value in single.items():
            np.testing.assert_array_equal(sharded[f"path_{key}"], value, err_msg=key)
