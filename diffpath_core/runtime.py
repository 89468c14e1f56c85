"""How the network is executed: CPU allocator tuning, batches sharded over CPU cores, and the
optional ``torch.compile`` path.

None changes what is computed. The allocator tuning changes where freed memory goes; sharding
changes which thread computes which image; the compiled network is the same fp32 network run through
Inductor's kernels. Results differ by float32 rounding only.
"""
from __future__ import annotations

import ctypes
import os
import sys
import threading
import warnings
from concurrent.futures import ThreadPoolExecutor

import torch

# glibc mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD = -1, -2, -3
_MMAP_THRESHOLD = 32 * 2**20   # glibc's largest allowed value: blocks below it come from the heap
_TRIM_THRESHOLD = 512 * 2**20  # keep up to this much freed memory at the heap's top
_TOP_PAD = 64 * 2**20

_allocator_tuned: bool | None = None


def tune_cpu_allocator() -> bool:
    """Keep freed activation buffers in the heap instead of returning them to the kernel.

    PyTorch's CPU allocator uses malloc. For tensors over glibc's (dynamic) mmap threshold, every
    forward pass maps fresh pages and faults them in again; on this project's 2-core machine that was
    10% of a K-step extraction, mostly kernel time. Raising the mmap and trim thresholds once per
    process removes it. Linux/glibc only; elsewhere, or with ``DIFFPATH_MALLOC_TUNING=0``, it does
    nothing and returns False. Idempotent.
    """
    global _allocator_tuned
    if _allocator_tuned is None:
        _allocator_tuned = False
        if sys.platform.startswith("linux") and os.environ.get("DIFFPATH_MALLOC_TUNING", "1") != "0":
            try:
                libc = ctypes.CDLL("libc.so.6")
            except OSError:  # musl or another libc: nothing to tune
                return False
            if hasattr(libc, "mallopt"):
                _allocator_tuned = all(libc.mallopt(param, value) == 1 for param, value in (
                    (_M_MMAP_THRESHOLD, _MMAP_THRESHOLD), (_M_TRIM_THRESHOLD, _TRIM_THRESHOLD),
                    (_M_TOP_PAD, _TOP_PAD)))
    return _allocator_tuned


# diffusers calls its lru_cache-wrapped ``is_torch_version`` inside forward; Dynamo traces through the cache and
# warns once per call site (harmless here: the result is a constant). Only this message is silenced.
_DYNAMO_LRU_CACHE = r"Dynamo detected a call to a `functools\.lru_cache`-wrapped function"


class CompiledNetwork:
    """ε_θ through ``torch.compile``, padded to one batch shape so that an extraction compiles once.

    The timestep enters as a tensor, so one graph serves all K steps. Batches smaller than the
    largest seen so far are zero-padded to it (each image's result depends on that image alone, so
    the rows kept do not change); a larger batch compiles once more. The first call of each shape
    compiles under a lock, since sharded extraction calls from several threads. Compilation errors
    are raised, never replaced by the eager network.
    """

    cache_tag = "torch.compile"  # feature-cache entries keep compiled and eager results apart

    def __init__(self, model, **compile_kwargs):
        self.fn = torch.compile(model.predict_eps, dynamic=False, **compile_kwargs)
        self.batch_size = 0
        self._compiled: set[int] = set()
        self._lock = threading.Lock()

    def __call__(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        b = x.shape[0]
        with self._lock:
            self.batch_size = size = max(self.batch_size, b)
            if size not in self._compiled:  # compile (or recompile) with no other thread inside
                with warnings.catch_warnings():  # diffusers' version check is lru_cache-wrapped: Dynamo says so
                    warnings.filterwarnings("ignore", message=_DYNAMO_LRU_CACHE, category=UserWarning)
                    out = self.fn(*self._pad(x, t, size))
                self._compiled.add(size)
                return out[:b]
        return self.fn(*self._pad(x, t, size))[:b]

    @staticmethod
    def _pad(x: torch.Tensor, t: torch.Tensor, size: int) -> tuple[torch.Tensor, torch.Tensor]:
        pad = size - x.shape[0]
        if pad == 0:
            return x, t
        return torch.cat([x, x.new_zeros((pad,) + tuple(x.shape[1:]))]), torch.cat([t, t[:1].expand(pad)])


# ----------------------------------------------------------------------------- data-parallel CPU calls

MIN_SHARD = 8  # images per worker below which splitting a batch is not worth it
_pools: dict[int, ThreadPoolExecutor] = {}


def cpu_workers(device: torch.device, batch: int) -> int:
    """How many shards a CPU batch is split into: one per intra-op thread (1 on GPUs).

    On CPU, the network's small convolutions parallelise poorly inside one op; giving each core its
    own slice of the batch, single-threaded, was 1.1–1.3× faster on this 2-core machine.
    ``DIFFPATH_CPU_WORKERS`` overrides the count (1 turns sharding off).
    """
    if device.type != "cpu":
        return 1
    wanted = int(os.environ.get("DIFFPATH_CPU_WORKERS", torch.get_num_threads()))
    return max(1, min(wanted, batch // MIN_SHARD))


def run_sharded(fn, x: torch.Tensor, workers: int) -> list:
    """``[fn(shard) for shard in x.chunk(workers)]``, the shards in parallel threads, each op single-threaded.

    Used for whole per-batch computations (a trajectory and its statistics), so the intra-op thread
    count changes twice per batch, not per step. Each image's result depends on that image alone, so
    the concatenated outputs equal the batched ones up to float32 rounding. ``fn`` runs in worker
    threads: it must enter its own inference / autocast modes (they are thread-local).
    """
    if workers <= 1:
        return [fn(x)]
    pool = _pools.get(workers)
    if pool is None:
        pool = _pools[workers] = ThreadPoolExecutor(workers, thread_name_prefix="diffpath-shard")
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return list(pool.map(fn, x.chunk(workers)))
    finally:
        torch.set_num_threads(previous)
