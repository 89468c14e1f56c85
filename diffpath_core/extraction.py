"""The extraction driver: images in, path statistics out, sharded over cores, chunked, cached.

An :class:`Extraction` is one value holding everything that decides how statistics are computed (model,
K, clipping, precision, the network's execution) and how the work is run (batch size, cache folder,
progress, chunking). The API, the evaluation, the validation protocol, torchrun and the command line all
take one, so those settings are written down once::

    ex = Extraction(load_model("fashion_mnist"), k=10, cache_dir="cache")
    stats = ex.statistics(load_dataset("digits", "test"))          # dict of (N, …) arrays
    bigger = dataclasses.replace(ex, k=20)                          # another value, other cache entries

Only here is a batch split over CPU cores (:func:`runtime.run_sharded`) and the CPU allocator tuned;
:func:`trajectory.inversion_steps` and :func:`statistics.batch_readings` each see one batch.
"""
from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from .cache import CHUNK_SIZE, CacheEntry, chunk_bounds, entry_key, trajectory_settings
from .datasets import ImageSet, check_images, image_hashes
from .errors import InputError
from .models import DiffusionModel
from .progress import progress_bar
from .runtime import cpu_workers, layout_name, memory_format, run_sharded, tune_cpu_allocator
from .statistics import PASSES, RIDERS, TOTALS, batch_readings, check_reading, to_numpy
from .store import atomic_savez, concatenate, digest
from .trajectory import check_precision

Statistics = dict[str, np.ndarray]


def tensor_identity(images: torch.Tensor) -> str:
    """Identity of an in-memory batch: a hash of its shape and bytes."""
    return digest(str(tuple(images.shape)), images.detach().to("cpu", torch.float32).contiguous().numpy())


@dataclass(frozen=True, eq=False)
class Extraction:
    """How path statistics are computed and run; ``statistics(images)`` computes or reads them.

    - ``model``: the diffusion model (:func:`models.load_model`); ``k``: trajectory steps; ``clip``: clip x̂0
      to [-1, 1] as the official code does; ``precision``: fp32 / tf32 / bf16 / fp16 for the network;
      ``network``: another execution of ε_θ (e.g. :class:`runtime.CompiledNetwork`); ``noise_seed``: the
      fresh-noise reading's seed. These decide the numbers, and the cache key, as does the model's memory layout
      (channels_last weights, :func:`runtime.memory_format`: the inputs follow them).
    - ``batch_size``: images per network call; ``cache_dir``: where entries live (None: no cache);
      ``progress``: progress bars; ``chunk_size``: images per cache chunk (the unit of resumption and
      sharding, part of the key when not the default).
    """

    model: DiffusionModel
    k: int = 10
    clip: bool = True
    precision: str = "fp32"
    network: Callable | None = None
    batch_size: int = 64
    cache_dir: str | os.PathLike | None = None
    progress: bool = True
    noise_seed: int = 0
    chunk_size: int = CHUNK_SIZE

    def __post_init__(self):
        check_precision(self.precision)
        for name in ("k", "batch_size", "chunk_size"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)!r}")

    @property
    def effective_chunk_size(self) -> int:
        """Images per cache chunk: ``chunk_size``, or the batch size when that is larger (a chunk holds whole
        batches: a GPU batch of 1024 is never cut to chunks of 256)."""
        return max(int(self.chunk_size), int(self.batch_size))

    # -- identity
    def settings(self, reading: str = "path") -> dict:
        """Everything besides the model and the images that decides the statistics of ``reading``."""
        settings = trajectory_settings(self.k, self.clip, self.precision, reading, self.noise_seed,
                                       self.model.device.type, self.effective_chunk_size,
                                       layout_name(memory_format(self.model)))
        if self.network is not None:  # another execution of the network: fp32 rounding differs, so its own entry
            tag = getattr(self.network, "cache_tag", type(self.network).__name__)
            if tag is not None:  # None: eager after all (a compiled network that fell back), cached as eager
                settings["network"] = tag
        return settings

    def key(self, reading: str = "path") -> str:
        """A hash of the model's weights and :meth:`settings`: equal keys give equal statistics for equal images."""
        return entry_key(self.model.weights_hash(), self.settings(reading))

    def entry_key(self, identity: str, reading: str = "path") -> str:
        """The cache entry's key for images of ``identity`` (the folder is ``<name>-<key>``)."""
        return entry_key(self.model.weights_hash(), self.settings(reading), identity)

    # -- work
    def statistics(self, images: ImageSet | torch.Tensor | np.ndarray, readings: str | tuple[str, ...] = "path", *,
                   desc: str | None = None, rank: int = 0, world: int = 1) -> Statistics | None:
        """Statistics of every image for ``readings`` (one cache entry each, merged into one dict).

        ``"path"``: the DDIM inversion, which every method reads; ``"fresh"``: DiffPathV2's fresh-noise
        reading. With ``rank``/``world`` this process computes chunks i ≡ rank (mod world) only, and gets
        ``None`` while its peers' chunks are missing (:mod:`diffpath_core.distributed` waits for them).
        """
        readings = (readings,) if isinstance(readings, str) else tuple(dict.fromkeys(readings))
        parts = self.statistics_by_reading(images, readings, desc=desc, rank=rank, world=world)
        if parts is None:  # a shard whose peers have not finished
            return None
        return {key: value for reading in readings for key, value in parts[reading].items()}

    def statistics_by_reading(self, images: ImageSet | torch.Tensor | np.ndarray, readings: tuple[str, ...], *,
                              desc: str | None = None, rank: int = 0, world: int = 1) -> dict[str, Statistics] | None:
        """:meth:`statistics` kept apart per reading, {reading: statistics}: the same passes and cache entries."""
        readings = tuple(dict.fromkeys(readings))
        name, identity, x = self._checked(images)
        for reading in readings:  # every reading named correctly before any work
            check_reading(reading)
        parts: dict[str, Statistics] = {}
        for family in dict.fromkeys(PASSES[r] for r in readings):  # readings of one pass share its trajectories
            wanted = [r for r in readings if PASSES[r] == family]
            riders = ([r for r in RIDERS if PASSES[r] == family and r not in wanted]
                      if self.cache_dir is not None and world == 1 else [])
            got = self._readings(name, identity, x, wanted, desc, rank, world, riders)
            if got is None:  # a shard whose peers have not finished
                return None
            parts.update(got)
        return parts

    def batch_statistics(self, x: torch.Tensor, reading: str | tuple[str, ...] = "path"):
        """One batch's statistics as NumPy arrays (for a tuple of readings, {reading: statistics}, one pass for the
        readings that share one); on a CPU the batch is split over cores, network and statistics together (each
        shard single-threaded), and the allocator is tuned once per process."""
        device = self.model.device
        if device.type == "cuda" and x.device.type == "cpu":  # pinned host memory: the copy overlaps GPU work
            x = x.to(torch.float32).pin_memory().to(device, non_blocking=True)
        x = x.to(device=device, dtype=torch.float32)
        if device.type == "cpu":
            tune_cpu_allocator()
        readings = (reading,) if isinstance(reading, str) else tuple(reading)

        def shard(xb: torch.Tensor) -> dict[str, Statistics]:
            got = batch_readings(self.model, xb, readings, self.k, self.clip, self.precision, self.network,
                                 self.noise_seed)
            return {r: to_numpy(stats) for r, stats in got.items()}

        # a compiled CPU graph is built for the thread count it runs at: a short batch of a compiled network is cut
        # into as many shards as a full one (each single-threaded), so it reuses the full batch's graph
        n = x.shape[0] if self.network is None else max(x.shape[0], self.batch_size)
        tag = self.settings().get("network")
        parts = run_sharded(shard, x, cpu_workers(device, n))
        if self.settings().get("network") != tag:  # fell back to eager within this batch, keyed as compiled
            raise RuntimeError(f"the network fell back to eager while computing this batch (see the warning above); "
                               f"nothing of it is returned, as its cache entry was keyed {tag!r}. The network runs "
                               "eager from now on and is cached so: run the same call again to go on")
        merged = {r: concatenate([p[r] for p in parts]) for r in readings}
        return merged[reading] if isinstance(reading, str) else merged

    # -- internals
    def _checked(self, images) -> tuple[str, str, ImageSet]:
        """The images as an :class:`ImageSet` (a tensor or array is checked whole, here; a set's images are
        checked batch by batch as they are produced, and not produced at all when the cache has them)."""
        if not isinstance(images, ImageSet):
            x = torch.from_numpy(images) if isinstance(images, np.ndarray) else torch.as_tensor(images)
            x = check_images(x, "dataset 'images'")
            images = ImageSet("images", "given", x, None, tensor_identity(x))
        name = images.name
        m = self.model
        if len(images) == 0:
            raise InputError(f"dataset {name!r}: no images")
        if tuple(images.image_shape) != (m.in_channels, m.image_size, m.image_size):
            raise InputError(f"dataset {name!r}: images are {tuple(images.image_shape)}, the model expects "
                             f"{(m.in_channels, m.image_size, m.image_size)}")
        return name, images.identity, images

    def _compute(self, images: ImageSet, lo: int, hi: int, readings: list[str],
                 x: torch.Tensor | None = None) -> dict[str, Statistics]:
        """Every reading of images [lo, hi), batch by batch, in one pass; per-image readings get each image's content
        hash (overlap checks read it from the cache, so a cached run needs no decoding to find duplicates).
        ``x``: the images [lo, hi) when they were produced already (prefetched)."""
        x = check_images(images.batch(lo, hi) if x is None else x, f"dataset {images.name!r}")
        batches = [self.batch_statistics(x[start:start + self.batch_size], tuple(readings))
                   for start in range(0, len(x), self.batch_size)]
        hashes = image_hashes(x)
        return {r: {**concatenate([b[r] for b in batches]), **({} if r in TOTALS else {"image_hash": hashes})}
                for r in readings}

    def _readings(self, name: str, identity: str, images: ImageSet, readings: list[str], desc, rank: int,
                  world: int, riders=()) -> dict[str, Statistics] | None:
        """The readings of one pass: each its own cache entry, the chunks any of them lacks computed once for all.
        The next chunk's images are produced (decoded) in a background thread while the network works on this one.
        ``riders`` (:data:`statistics.RIDERS`) are cached from every chunk computed, never computed for themselves."""
        n = len(images)
        label = (desc or f"{name}: K={self.k} trajectories") + "".join(f" ({r})" for r in readings if r != "path")
        chunk = self.effective_chunk_size
        n_chunks = (n + chunk - 1) // chunk
        mine = [i for i in range(n_chunks) if i % world == rank]
        if self.cache_dir is None:
            if world != 1:
                raise ValueError("sharded extraction needs a cache_dir to merge through")
            bar = progress_bar(total=len(mine), desc=label, unit="chunk", progress=self.progress)
            chunks = []
            for i, x in _prefetched(images, mine, chunk):
                chunks.append(self._compute(images, *chunk_bounds(i, chunk, n), readings, x))
                bar.update(1)
            bar.close()
            return {r: concatenate([c[r] for c in chunks]) for r in readings}
        content = images.content_hashes()  # checked against each entry's record: no entry is read for other images
        entries = {r: CacheEntry(Path(self.cache_dir) / f"{name}-{self.entry_key(identity, r)}", n, chunk, content)
                   for r in [*readings, *riders]}
        done = {r: entries[r].load() for r in readings}
        pending = [r for r in readings if done[r] is None]
        for r in pending:
            entries[r].open(self._meta(name, identity, n, r))
        todo = sorted({i for r in pending for i in entries[r].missing(mine)})
        if todo:  # the pass runs: its riders are kept from the chunks it computes
            riding = [r for r in riders if entries[r].load() is None]
            for r in riding:
                entries[r].open(self._meta(name, identity, n, r))
            pending += riding
        bar = progress_bar(total=len(mine), initial=len(mine) - len(todo), desc=label, unit="chunk",
                           progress=self.progress)
        for i, x in _prefetched(images, todo, chunk):
            t0 = time.perf_counter()
            lo, hi = chunk_bounds(i, chunk, n)
            with contextlib.ExitStack() as locks:  # the chunk's lock in every entry, in one order for all processes
                for r in sorted(pending):
                    locks.enter_context(entries[r].chunk_lock(i))
                need = [r for r in pending if not entries[r].chunk_path(i).exists()]
                if any(r not in riders for r in need):  # another process may have written them while this one waited
                    computed = self._compute(images, lo, hi, need, x)
                    for r in need:
                        atomic_savez(entries[r].chunk_path(i), computed[r])
            bar.update(1)
            bar.set_postfix(img_per_s=f"{(hi - lo) / (time.perf_counter() - t0):.1f}")
        bar.close()
        for r in pending:
            if r in riders:
                entries[r].merge()  # complete once every chunk is there (an earlier partial run may lack some)
                continue
            done[r] = entries[r].merge()
            if done[r] is None:
                return None
        return done

    def _meta(self, name: str, identity: str, n_images: int, reading: str) -> dict:
        return {"dataset": name, "identity": identity, "n_images": n_images, "chunk_size": self.effective_chunk_size,
                "model": self.model.source, "model_hash": self.model.weights_hash(),
                "settings": self.settings(reading), "schedule": self.model.schedule(self.k).as_dict(),
                "torch": torch.__version__}


def _prefetched(images: ImageSet, chunks: list[int], chunk_size: int):
    """(chunk index, its images) for each chunk in order; the next chunk's images are produced in a background
    thread while the caller works on the current one (decoding overlaps the network)."""
    from concurrent.futures import ThreadPoolExecutor

    if not chunks:
        return
    n = len(images)
    with ThreadPoolExecutor(1, thread_name_prefix="diffpath-prefetch") as pool:
        upcoming = pool.submit(images.batch, *chunk_bounds(chunks[0], chunk_size, n))
        for j, i in enumerate(chunks):
            x = upcoming.result()
            if j + 1 < len(chunks):
                upcoming = pool.submit(images.batch, *chunk_bounds(chunks[j + 1], chunk_size, n))
            yield i, x


def require_extraction(value, caller: str) -> Extraction:
    """``value`` if it is an :class:`Extraction`; anything else (a bare model, say) is refused by name."""
    if not isinstance(value, Extraction):
        raise TypeError(f"{caller} takes an Extraction (Extraction(model, k=…, cache_dir=…)), "
                        f"got {type(value).__name__}")
    return value
