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
    t0: float = field(default_factory=time.perf_counter)

    @property
    def size(self) -> int:
        return self.model.image_size

    @property
    def channels(self) -> int:
        return self.model.in_channels

    def elapsed(self) -> str:
        return f"{time.perf_counter() - self.t0:.0f} s"


def start(profile: str, model: str, results_dir: str, cache_dir: str = "cache", device: str = "auto",
          model_config: str | None = None, k: int | None = None, **settings) -> Session:
    """Load the base model, make the folders, print one settings line; return the :class:`Session`."""
    from .models import load_model

    results, cache = project_path(results_dir), project_path(cache_dir)
    results.mkdir(parents=True, exist_ok=True)
    spec = str(project_path(model)) if Path(model).suffix else model
    base = load_model(spec, device=device, config=model_config)
    extra = "".join(f" | {key} {value}" for key, value in settings.items())
    print(f"base model {base.describe()}")
    print(f"device {base.device.type} | profile {profile!r}" + (f" | K = {k}" if k is not None else "") + extra)
    return Session(base, results, cache)
