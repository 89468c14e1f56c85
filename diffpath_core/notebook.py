"""What every notebook of the book does first: paths from the repository root, the base model, one settings line.

Notebooks run the same from the repository root (papermill, ``make book``) and from ``notebooks/``
(JupyterLab, ``make lab``): relative paths in their parameters are read against the repository root, and
pages print paths relative to it, never a path of the machine that built them.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

def project_path(path: str | os.PathLike) -> Path:
    """``path`` read against the repository root (absolute paths are kept)."""
    return ROOT / Path(path).expanduser()


def shown(path: str | os.PathLike) -> str:
    """A path as a page may print it: relative to the repository root when inside it, else its name."""
    p = Path(path).resolve()
    try:
        return p.relative_to(ROOT).as_posix()
    except ValueError:
        return p.name


@dataclass
class Session:
    """The base model and the folders of one notebook run."""

    model: object
    results: Path
    cache: Path
    run: dict = field(default_factory=dict)  # precision, batch_size, compile_network, channels_last
    t0: float = field(default_factory=time.perf_counter)

    @property
    def size(self) -> int:
        return self.model.image_size

    @property
    def channels(self) -> int:
        return self.model.in_channels

    def elapsed(self) -> str:
        return f"{time.perf_counter() - self.t0:.0f} s"

    def extraction(self, model=None, k: int = 10, progress: bool = True):
        """An :class:`~diffpath_core.extraction.Extraction` of ``model`` (default: the base model) with this run's
        precision, batch size, layout and compilation, caching into the session's folder. ``channels_last`` converts
        the model's weights on every device (its inputs follow them); a compiled network shares the model's graphs
        with every other extraction of it."""
        from .extraction import Extraction
        from .runtime import CompiledNetwork

        model = model or self.model
        if self.run.get("channels_last"):
            import torch

            model.unet.to(memory_format=torch.channels_last)
        network = CompiledNetwork(model) if self.run.get("compile_network") else None
        return Extraction(model, k=k, precision=self.run.get("precision", "fp32"), network=network,
                          batch_size=int(self.run.get("batch_size", 64)), cache_dir=self.cache, progress=progress)


def start(profile: str, model: str, results_dir: str, cache_dir: str = "cache", device: str = "auto",
          model_config: str | None = None, k: int | None = None, run: dict | None = None, **settings) -> Session:
    """Load the base model, make the folders, print one settings line; return the :class:`Session`. ``run``:
    how the network runs (``precision``, ``batch_size``, ``compile_network``, ``channels_last``)."""
    from .models import load_model

    results, cache = project_path(results_dir), project_path(cache_dir)
    results.mkdir(parents=True, exist_ok=True)
    spec = str(project_path(model)) if Path(model).suffix else model
    base = load_model(spec, device=device, config=model_config)
    run = dict(run or {})
    extra = "".join(f" | {key} {value}" for key, value in {**settings, **run}.items())
    print(f"base model {base.describe()}")
    print(f"device {base.device.type} | profile {profile!r}" + (f" | K = {k}" if k is not None else "") + extra)
    return Session(base, results, cache, run)
