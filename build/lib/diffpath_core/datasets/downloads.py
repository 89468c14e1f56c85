"""The one download folder, and checksummed downloads into it.

Every dataset that is fetched lives in ``<root>/<name>/``, root being ``data_dir`` when given, else
``$DIFFPATH_DATA``, else ``~/.cache/diffpath/datasets``. A download goes to a temp file, is verified, then
renamed, so a file present is a file verified.
"""
from __future__ import annotations

import os
import tarfile
import urllib.request
import zipfile
from pathlib import Path
from typing import Callable

from ..errors import DatasetUnavailableError
from ..store import atomic_path

DATA_ENV = "DIFFPATH_DATA"


def data_root(data_dir: str | os.PathLike | None = None) -> Path:
    """Where downloaded datasets live: ``data_dir``, ``$DIFFPATH_DATA`` or ``~/.cache/diffpath/datasets``."""
    if data_dir:
        return Path(data_dir)
    if DATA_ENV in os.environ:
        return Path(os.environ[DATA_ENV])
    return Path.home() / ".cache" / "diffpath" / "datasets"


def fetch(url: str, target: Path, digest: Callable[[Path], str], expected: str, advice: str = "") -> Path:
    """Download ``url`` to ``target`` unless ``digest(target) == expected`` already; return ``target``.

    A failed download or a checksum mismatch leaves no file behind and raises
    :class:`DatasetUnavailableError` naming the URL, followed by ``advice`` (what to do instead).
    """
    target = Path(target)
    if target.exists() and digest(target) == expected:
        return target
    suffix = f"; {advice}" if advice else ""
    with atomic_path(target) as tmp:
        try:
            urllib.request.urlretrieve(url, tmp)
        except OSError as exc:
            raise DatasetUnavailableError(f"download of {url} failed ({exc}){suffix}") from exc
        if digest(tmp) != expected:
            raise DatasetUnavailableError(f"{url}: checksum mismatch (expected {expected}){suffix}")
    return target


def unpack(archive: Path, folder: Path) -> None:
    """Extract a .zip or tar archive into ``folder`` (tar with the "data" filter: no paths out of it)."""
    if archive.suffix == ".zip":
        with zipfile.ZipFile(archive) as z:
            z.extractall(folder)
    else:
        with tarfile.open(archive) as t:
            t.extractall(folder, filter="data")
