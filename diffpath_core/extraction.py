"""The extraction driver: images in, path statistics out, sharded over cores, chunked, cached.

An :class:`Extraction` is one value holding everything that decides how statistics are computed (model,
K, clipping, precision, the network's execution) and how the work is run (batch size, cache folder,
progress, chunking). The API, the evaluation, the validation protocol, torchrun and the command line all
take one, so those settings are written down once::

    ex = Extraction(load_model("fashion_mnist"), k=10, cache_dir="cache")
    stats = ex.statistics(load_dataset("digits", "test"))          # dict of (N, …) arrays
    bigger = dataclasses.replace(ex, k=20)                          # another value, other cache entries

Only here is a batch split over CPU cores (:func:`runtime.run_sharded`) and the CPU allocator tuned;
:func:`trajectory.invert` and :func:`statistics.reading_statistics` each see one batch.
"""
from __future__ import annotations

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
from .runtime import cpu_workers, run_sharded, tune_cpu_allocator
from .statistics import check_reading, reading_statistics, to_numpy
from .store import concatenate, digest
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
      fresh-noise reading's seed. These decide the numbers, and the cache key.
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

    # -- identity
    def settings(self, reading: str = "path") -> dict:
        """Everything besides the model and the images that decides the statistics of ``reading``."""
        settings = trajectory_settings(self.k, self.clip, self.precision, reading, self.noise_seed,
                                       self.model.device.type, self.chunk_size)
        if self.network is not None:  # another execution of the network: fp32 rounding differs, so its own entry
            settings["network"] = getattr(self.network, "cache_tag", type(self.network).__name__)
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
        readings = (readings,) if isinstance(readings, str) else tuple(readings)
        name, identity, x = self._checked(images)
        for reading in readings:  # every reading named correctly before any work
            check_reading(reading)
        parts = [self._reading(name, identity, x, reading, desc, rank, world) for reading in readings]
        if any(part is None for part in parts):  # a shard whose peers have not finished
            return None
        return {key: value for part in parts for key, value in part.items()}

    def batch_statistics(self, x: torch.Tensor, reading: str = "path") -> Statistics:
        """One batch's statistics as NumPy arrays; on a CPU the batch is split over cores, network and statistics
        together (each shard single-threaded), and the allocator is tuned once per process."""
        device = self.model.device
        x = x.to(device=device, dtype=torch.float32)
        if device.type == "cpu":
            tune_cpu_allocator()

        def shard(xb: torch.Tensor) -> Statistics:
            return to_numpy(reading_statistics(self.model, xb, reading, self.k, self.clip, self.precision,
                                               self.network, self.noise_seed))

        return concatenate(run_sharded(shard, x, cpu_workers(device, x.shape[0])))

    # -- internals
    def _checked(self, images) -> tuple[str, str, torch.Tensor]:
        if isinstance(images, ImageSet):
            name, identity, x = images.name, images.identity, images.images
        else:
            name, identity = "images", None
            x = torch.from_numpy(images) if isinstance(images, np.ndarray) else images
        x = check_images(torch.as_tensor(x), f"dataset {name!r}")
        m = self.model
        if x.shape[1] != m.in_channels or tuple(x.shape[-2:]) != (m.image_size, m.image_size):
            raise InputError(f"dataset {name!r}: images are {tuple(x.shape[1:])}, the model expects "
                             f"{(m.in_channels, m.image_size, m.image_size)}")
        return name, identity or tensor_identity(x), x

    def _compute(self, x: torch.Tensor, lo: int, hi: int, reading: str) -> Statistics:
        """Statistics of images [lo, hi), batch by batch, with each image's content hash (overlap checks read it
        from the cache, so a cached run needs no decoding to find duplicates)."""
        stats = concatenate([self.batch_statistics(x[start:min(start + self.batch_size, hi)], reading)
                             for start in range(lo, hi, self.batch_size)])
        return {**stats, "image_hash": image_hashes(x[lo:hi])}

    def _reading(self, name: str, identity: str, x: torch.Tensor, reading: str, desc, rank: int,
                 world: int) -> Statistics | None:
        entry = (CacheEntry(Path(self.cache_dir) / f"{name}-{self.entry_key(identity, reading)}", len(x),
                            self.chunk_size) if self.cache_dir is not None else None)
        label = (desc or f"{name}: K={self.k} trajectories") + ("" if reading == "path" else f" ({reading} noise)")
        n_chunks = (len(x) + self.chunk_size - 1) // self.chunk_size
        mine = [i for i in range(n_chunks) if i % world == rank]
        if entry is None:
            if world != 1:
                raise ValueError("sharded extraction needs a cache_dir to merge through")
            bar = progress_bar(mine, desc=label, unit="chunk", progress=self.progress)
            return concatenate([self._compute(x, *chunk_bounds(i, self.chunk_size, len(x)), reading) for i in bar])
        done = entry.load()
        if done is not None:
            return done
        entry.open(self._meta(name, identity, len(x), reading))
        todo = entry.missing(mine)
        bar = progress_bar(total=len(mine), initial=len(mine) - len(todo), desc=label, unit="chunk",
                           progress=self.progress)
        for i in todo:
            t0 = time.perf_counter()
            lo, hi = entry.bounds(i)
            entry.write_chunk(i, lambda: self._compute(x, lo, hi, reading))
            bar.update(1)
            bar.set_postfix(img_per_s=f"{(hi - lo) / (time.perf_counter() - t0):.1f}")
        bar.close()
        return entry.merge()

    def _meta(self, name: str, identity: str, n_images: int, reading: str) -> dict:
        return {"dataset": name, "identity": identity, "n_images": n_images, "chunk_size": self.chunk_size,
                "model": self.model.source, "model_hash": self.model.weights_hash(),
                "settings": self.settings(reading), "schedule": self.model.schedule(self.k).as_dict(),
                "torch": torch.__version__}


def require_extraction(value, caller: str) -> Extraction:
    """``value`` if it is an :class:`Extraction`; anything else (a bare model, say) is refused by name."""
    if not isinstance(value, Extraction):
        raise TypeError(f"{caller} takes an Extraction (Extraction(model, k=…, cache_dir=…)), "
                        f"got {type(value).__name__}")
    return value
