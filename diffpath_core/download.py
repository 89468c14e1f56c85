"""Checksummed downloads: to ``<name>.part``, verified, then renamed, so a file present is a file verified."""
from __future__ import annotations

import os
import urllib.request
from pathlib import Path
from typing import Callable

from .errors import DatasetUnavailableError


def fetch(url: str, target: Path, digest: Callable[[Path], str], expected: str, advice: str = "") -> Path:
    """Download ``url`` to ``target`` unless ``digest(target) == expected`` already; return ``target``.

    A failed download or a checksum mismatch leaves no file behind and raises
    :class:`DatasetUnavailableError` naming the URL, followed by ``advice`` (what to do instead).
    """
    target = Path(target)
    if target.exists() and digest(target) == expected:
        return target
    tmp = target.with_name(target.name + ".part")
    suffix = f"; {advice}" if advice else ""
    try:
        urllib.request.urlretrieve(url, tmp)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise DatasetUnavailableError(f"download of {url} failed ({exc}){suffix}") from exc
    if digest(tmp) != expected:
        tmp.unlink()
        raise DatasetUnavailableError(f"{url}: checksum mismatch (expected {expected}){suffix}")
    os.replace(tmp, target)
    return target
