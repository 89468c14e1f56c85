"""How the network is executed: CPU allocator tuning, batches sharded over CPU cores, its memory layout, and the
optional ``torch.compile`` path.

None changes what is computed. The allocator tuning changes where freed memory goes; sharding changes which
thread computes which image; the layout (NCHW or channels_last) and the compiled network change which kernels
run. Results differ by float32 rounding only, and the layout and compilation have cache entries of their own.
"""
from __future__ import annotations

import ctypes
import os
import sys
import threading
import types
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


def memory_format(model) -> torch.memory_format:
    """The layout ``model``'s network runs in: ``torch.channels_last`` when its convolution weights are stored so
    (``--channels-last``, i.e. ``model.unet.to(memory_format=torch.channels_last)``), else NCHW. Inputs are made to
    follow it (:func:`trajectory.inversion_steps`), so the network never runs a mix of the two."""
    for p in model.parameters():
        if p.dim() == 4 and not p.is_contiguous() and p.is_contiguous(memory_format=torch.channels_last):
            return torch.channels_last
    return torch.contiguous_format


def layout_name(fmt: torch.memory_format) -> str:
    """How a layout is written in cache keys and pages: ``channels_last`` or ``nchw``."""
    return "channels_last" if fmt == torch.channels_last else "nchw"


class CompileFallbackWarning(UserWarning):
    """torch.compile could not compile a network: it runs eager from then on, and is cached as eager."""


def _own_code(model, number: int):
    """``model.predict_eps`` behind a function with a code object of its own. Dynamo keeps its graphs, and counts
    them against ``recompile_limit``, per code object: through the shared ``DiffusionModel.predict_eps`` every
    model of the process would count against one limit of 8, past which Dynamo silently runs eager."""
    def predict_eps(x, t):
        return model.predict_eps(x, t)

    code = predict_eps.__code__.replace(co_name=f"predict_eps_{number}")  # a distinct (and unequal) code object
    return types.FunctionType(code, predict_eps.__globals__, code.co_name, None, predict_eps.__closure__)


class _Graphs:
    """The compiled graphs of one model (with one set of compile options) in this process, shared by every
    :class:`CompiledNetwork` of that model: one per input shape, memory layout, precision (autocast state) and
    CPU thread count, as Dynamo's guards tell them apart. ``fallback`` says why it runs eager, if it does."""

    def __init__(self, model, options: dict, number: int):
        import torch._dynamo

        self.model, self.lock = model, threading.Lock()
        self.seen: set[tuple] = set()  # guard keys whose graph exists (their first call compiled, under the lock)
        self.fn = torch.compile(_own_code(model, number), dynamic=False, fullgraph=True, **options)
        self.fallback: str | None = None
        self._limit_hit = getattr(torch._dynamo.exc, "FailOnRecompileLimitHit", ())
        if torch._dynamo.config.disable:  # TORCH_COMPILE_DISABLE / TORCHDYNAMO_DISABLE: torch.compile is a no-op
            self.fall_back("torch._dynamo is disabled (TORCH_COMPILE_DISABLE or TORCHDYNAMO_DISABLE is set)",
                           "unset it")

    def fall_back(self, why: str, fix: str) -> None:
        self.fallback = why
        name = getattr(self.model, "source", {}).get("name", type(self.model).__name__)
        warnings.warn(f"torch.compile runs {name} eager: {why}. What it computes is cached as eager from now on; "
                      f"to compile, {fix}", CompileFallbackWarning, stacklevel=4)

    def run(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor | None:
        """The graph's output for inputs already shaped as graphs take them, or ``None`` once fallen back."""
        key = _guard_key(x, t)
        if key in self.seen:
            return self.fn(x, t)
        with self.lock:  # the first call of a key compiles, with no other thread inside (sharded CPU batches)
            if self.fallback is None and key not in self.seen:
                try:
                    with warnings.catch_warnings():  # diffusers' version check is lru_cache-wrapped: Dynamo says so
                        warnings.filterwarnings("ignore", message=_DYNAMO_LRU_CACHE, category=UserWarning)
                        out = self.fn(x, t)
                except self._limit_hit:
                    import torch._dynamo

                    self.fall_back(f"Dynamo's recompile limit ({torch._dynamo.config.recompile_limit} graphs per "
                                   "model) was reached", "raise torch._dynamo.config.recompile_limit, or run fewer "
                                   "batch sizes, precisions and layouts with one model in one process")
                else:
                    self.seen.add(key)
                    return out
        if self.fallback is not None:
            return None  # the caller runs the eager network on its own, unpadded input
        return self.fn(x, t)


def _guard_key(x: torch.Tensor, t: torch.Tensor) -> tuple:
    """What Dynamo's guards tell apart among this project's calls: shapes and strides, dtype and device of the
    inputs, whether they are inference tensors, the autocast state, grad mode and the intra-op thread count (a
    CPU graph is built for the thread count it is compiled at)."""
    kind = x.device.type
    return (tuple(x.shape), x.stride(), x.dtype, str(x.device), tuple(t.shape), t.dtype, x.is_inference(),
            torch.is_inference_mode_enabled(), torch.is_grad_enabled(), torch.is_autocast_enabled(kind),
            torch.get_autocast_dtype(kind), torch.get_num_threads())


_graphs: dict[tuple, _Graphs] = {}  # (id(model), compile options) -> graphs; holds the model, as Dynamo's caches do
_graphs_lock = threading.Lock()


class CompiledNetwork:
    """ε_θ through ``torch.compile``: one graph per (model, batch shape, precision, layout) in a process.

    Every CompiledNetwork of one model shares that model's graphs (two extractions of a model compile nothing
    twice), kept on a code object of the model's own, so that other models do not count against its
    ``recompile_limit``. The timestep enters as a tensor, so one graph serves all K steps. Batches smaller than
    the largest this network has seen are zero-padded to it in their own memory format (each image's result
    depends on that image alone, so the rows kept do not change); a larger batch compiles once more. Inputs are
    given the strides a fresh tensor of their layout has, and are inference tensors under inference mode: Dynamo
    guards on both, and would otherwise compile the same shape again (the first step's input, a grey image's
    ambiguous strides). Compilation errors and graph breaks are raised (``fullgraph=True``). If Dynamo cannot
    compile for another reason (its recompile limit, or disabled), the network says so with a
    :class:`CompileFallbackWarning` and runs eager: ``cache_tag`` becomes ``None``, so what it computes from
    then on is cached as eager.
    """

    def __init__(self, model, **compile_kwargs):
        key = (id(model), repr(sorted(compile_kwargs.items())))  # options may be unhashable (a dict)
        with _graphs_lock:
            if key not in _graphs:
                _graphs[key] = _Graphs(model, compile_kwargs, len(_graphs))
            self._graphs = _graphs[key]
        self.model = model
        self.batch_size = 0  # the largest batch seen: smaller ones are padded to it
        self._lock = threading.Lock()

    @property
    def cache_tag(self) -> str | None:
        """How feature-cache entries tell compiled results apart: ``None`` (eager) once the network fell back."""
        return None if self._graphs.fallback else "torch.compile"

    def __call__(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        b = x.shape[0]
        if self._graphs.fallback is None:
            with self._lock:
                self.batch_size = size = max(self.batch_size, b)
            out = self._graphs.run(_as_graph_input(x, size), _as_graph_input(t, size))
            if out is not None:
                return out[:b]
        return self.model.predict_eps(x, t)  # eager on the batch as given: what an eager extraction computes


def _as_graph_input(x: torch.Tensor, size: int) -> torch.Tensor:
    """``x`` with ``size`` rows (zeros after its own), in its own memory format with the strides a fresh tensor of
    that format has, and an inference tensor under inference mode: x itself when it is so already."""
    fmt = (torch.channels_last if x.dim() == 4 and not x.is_contiguous()
           and x.is_contiguous(memory_format=torch.channels_last) else torch.contiguous_format)
    shape = (size,) + tuple(x.shape[1:])
    strides = torch.empty(shape, device="meta", memory_format=fmt).stride()
    if x.shape[0] == size and x.stride() == strides and x.is_inference() == torch.is_inference_mode_enabled():
        return x
    out = torch.empty(shape, dtype=x.dtype, device=x.device, memory_format=fmt)
    out[: x.shape[0]].copy_(x)
    out[x.shape[0]:].zero_()
    return out


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
