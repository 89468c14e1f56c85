"""Feature extraction sharded across processes or GPUs with torchrun (torch.distributed).

    torchrun --nproc_per_node=4 -m diffpath_core.cli features cifar10 --split train --cache-dir cache

Each rank computes its own chunks (i ≡ rank mod world) into the shared cache entry; after a barrier,
rank 0 merges them in order into the same ``stats.npz`` a single process writes, and every rank then
reads it. A crashed rank loses nothing already written: rerun and only missing chunks are computed.

A resumed job has uneven work: ranks whose chunks are all on disk wait at the barrier while the others
compute. The process group's timeout therefore covers a whole extraction (default 24 hours;
``DIFFPATH_DIST_TIMEOUT_MINUTES`` sets it), not NCCL's default of minutes.
"""
from __future__ import annotations

import datetime
import os
from dataclasses import replace

import torch
import torch.distributed as dist

from .extraction import Extraction

DEFAULT_TIMEOUT_MINUTES = 24 * 60


def launched_by_torchrun() -> bool:
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def setup(device: str = "auto") -> tuple[int, int, str]:
    """Join the process group torchrun prepared: (rank, world size, device); (0, 1, ``device``) otherwise.

    With CUDA (and ``device`` not a CPU), each process takes its own GPU and the group talks NCCL; more processes
    on one machine than it has GPUs is refused here, with what to do, before any process group exists. On the
    CPU (no CUDA, or ``device="cpu"``) the processes talk gloo.
    """
    if not launched_by_torchrun():
        return 0, 1, device
    on_gpu = torch.cuda.is_available() and not str(device).startswith("cpu")
    if on_gpu:
        local_world = int(os.environ.get("LOCAL_WORLD_SIZE", os.environ["WORLD_SIZE"]))
        gpus = torch.cuda.device_count()
        if local_world > gpus:
            raise RuntimeError(f"torchrun started {local_world} processes on this machine, which has {gpus} GPU(s): "
                               f"NCCL needs one GPU per process. Start at most {gpus} (--nproc_per_node={gpus}), or "
                               "pass --device cpu to run every process on the CPU (gloo)")
        local = int(os.environ.get("LOCAL_RANK", 0))
        torch.cuda.set_device(local)  # bind this process to its GPU before NCCL creates any context
        device = f"cuda:{local}"
    else:
        device = "cpu"
    if not dist.is_initialized():
        dist.init_process_group("nccl" if on_gpu else "gloo", timeout=timeout())
    return dist.get_rank(), dist.get_world_size(), device


def timeout() -> datetime.timedelta:
    """How long a rank may wait at a barrier for the others (``DIFFPATH_DIST_TIMEOUT_MINUTES``, default 24 h)."""
    minutes = float(os.environ.get("DIFFPATH_DIST_TIMEOUT_MINUTES", DEFAULT_TIMEOUT_MINUTES))
    return datetime.timedelta(minutes=minutes)


def path_statistics(extraction: Extraction, images, readings="path"):
    """:meth:`Extraction.statistics` shared over the process group; every rank returns the merged statistics."""
    rank, world = (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)
    if world == 1:
        return extraction.statistics(images, readings)
    extraction.statistics(images, readings, rank=rank, world=world)
    dist.barrier()  # every chunk is on disk
    quiet = replace(extraction, progress=False)
    if rank == 0:
        merged = quiet.statistics(images, readings)
    dist.barrier()  # stats.npz is on disk
    if rank != 0:
        merged = quiet.statistics(images, readings)
    return merged


def teardown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()
