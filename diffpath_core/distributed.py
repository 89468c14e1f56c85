"""Feature extraction sharded across processes or GPUs with torchrun (torch.distributed).

    torchrun --nproc_per_node=4 -m diffpath_core.cli features cifar10 --split train --cache-dir cache

Each rank computes its own chunks (i ≡ rank mod world) into the shared cache entry; after a barrier,
rank 0 merges them in order into the same ``stats.npz`` a single process writes, and every rank then
reads it. A crashed rank loses nothing already written: rerun and only missing chunks are computed.
"""
from __future__ import annotations

import os

import torch
import torch.distributed as dist

from .cache import extract_path_statistics


def launched_by_torchrun() -> bool:
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def setup() -> tuple[int, int, str]:
    """Join the process group torchrun prepared: (rank, world size, device); (0, 1, 'auto') otherwise."""
    if not launched_by_torchrun():
        return 0, 1, "auto"
    if not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    if torch.cuda.is_available():
        local = int(os.environ.get("LOCAL_RANK", 0))
        torch.cuda.set_device(local)
        device = f"cuda:{local}"
    else:
        device = "cpu"
    return dist.get_rank(), dist.get_world_size(), device


def path_statistics(model, images, *, cache_dir, **kwargs):
    """Sharded :func:`cache.extract_path_statistics`; every rank returns the merged statistics."""
    rank, world = (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)
    if world == 1:
        return extract_path_statistics(model, images, cache_dir=cache_dir, **kwargs)
    extract_path_statistics(model, images, cache_dir=cache_dir, rank=rank, world=world, **kwargs)
    dist.barrier()  # every chunk is on disk
    if rank == 0:
        merged = extract_path_statistics(model, images, cache_dir=cache_dir, **{**kwargs, "progress": False})
    dist.barrier()  # stats.npz is on disk
    if rank != 0:
        merged = extract_path_statistics(model, images, cache_dir=cache_dir, **{**kwargs, "progress": False})
    return merged


def teardown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()
