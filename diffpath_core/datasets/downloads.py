"""The one download folder, and checksummed, resumable downloads into it.

Every dataset that is fetched lives in ``<root>/<name>/``, root being ``data_dir`` when given, else
``$DIFFPATH_DATA``, else ``~/.cache/diffpath/datasets``. A download streams into ``<file>.part`` with a
timeout and a progress bar; an interrupted one (a dropped connection, a killed process) is resumed from the
bytes already there with an HTTP ``Range`` request on the next try. The finished file is verified, then
renamed, so a file present is a file verified. (pooch verifies and times out the same way but cannot resume
a half-downloaded archive of several GB; this is that, plus the resume.)
"""
from __future__ import annotations

import os
import tarfile
import zipfile
from pathlib import Path
from typing import Callable

from ..errors import DatasetUnavailableError
from ..progress import progress_bar
from ..store import atomic_path

DATA_ENV = "DIFFPATH_DATA"
TIMEOUT = (30, 120)  # seconds: to connect, and between two blocks of data
ATTEMPTS = 4         # a dropped connection is resumed this many times before giving up
BLOCK = 1 << 16   # bytes per read: what a dropped connection can lose of the last block


def data_root(data_dir: str | os.PathLike | None = None) -> Path:
    """Where downloaded datasets live: ``data_dir``, ``$DIFFPATH_DATA`` or ``~/.cache/diffpath/datasets``."""
    if data_dir:
        return Path(data_dir)
    if DATA_ENV in os.environ:
        return Path(os.environ[DATA_ENV])
    return Path.home() / ".cache" / "diffpath" / "datasets"


def partial_path(target: Path) -> Path:
    """Where the bytes of an unfinished download of ``target`` wait for the next try."""
    return target.with_name(target.name + ".part")


def download(url: str, part: Path, timeout=TIMEOUT, attempts: int = ATTEMPTS, progress: bool = True) -> Path:
    """Stream ``url`` into ``part``, continuing after the bytes already there (HTTP Range); returns ``part``.

    A server that ignores the range (status 200) is read from the start again; one that answers 416 to a range
    starting at the end says the file is complete. A dropped connection is resumed up to ``attempts`` times.
    Raises ``OSError`` (every ``requests`` error is one) when it cannot finish.
    """
    import requests

    part.parent.mkdir(parents=True, exist_ok=True)
    for attempt in range(1, attempts + 1):
        have = part.stat().st_size if part.exists() else 0
        headers = {"Range": f"bytes={have}-"} if have else {}
        try:
            with requests.get(url, headers=headers, stream=True, timeout=timeout) as response:
                if have and response.status_code == 416:  # nothing after the bytes we have: complete
                    return part
                response.raise_for_status()
                resumed = have and response.status_code == 206
                size = int(response.headers.get("content-length", 0)) + (have if resumed else 0)
                with open(part, "ab" if resumed else "wb") as f, progress_bar(
                        total=size or None, initial=have if resumed else 0, unit="B", unit_scale=True,
                        desc=Path(url).name, progress=progress) as bar:
                    for block in response.iter_content(BLOCK):
                        f.write(block)
                        bar.update(len(block))
            return part
        except (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError):
            if attempt == attempts:
                raise
    return part


def fetch(url: str, target: Path, digest: Callable[[Path], str], expected: str, advice: str = "",
          progress: bool = True) -> Path:
    """Download ``url`` to ``target`` unless ``digest(target) == expected`` already; return ``target``.

    Bytes of an interrupted download stay in ``<target>.part`` and the next call continues from them. A failed
    download or a checksum mismatch raises :class:`DatasetUnavailableError` naming the URL, followed by
    ``advice`` (what to do instead); a file that arrived whole but wrong is removed, never kept.
    """
    target = Path(target)
    if target.exists() and digest(target) == expected:
        return target
    suffix = f"; {advice}" if advice else ""
    part = partial_path(target)
    try:
        download(url, part, progress=progress)
    except OSError as exc:
        if part.exists() and part.stat().st_size == 0:
            part.unlink()
        kept = (f"; the {part.stat().st_size} bytes received are kept in {part.name} and the next try continues "
                "from them" if part.exists() else "")
        raise DatasetUnavailableError(f"download of {url} failed ({exc}){kept}{suffix}") from exc
    if digest(part) != expected:
        part.unlink()
        raise DatasetUnavailableError(f"{url}: checksum mismatch (expected {expected}){suffix}")
    with atomic_path(target) as tmp:
        os.replace(part, tmp)
    return target


def unpack(archive: Path, folder: Path) -> None:
    """Extract a .zip or tar archive into ``folder`` (tar with the "data" filter: no paths out of it)."""
    if archive.suffix == ".zip":
        with zipfile.ZipFile(archive) as z:
            z.extractall(folder)
    else:
        with tarfile.open(archive) as t:
            t.extractall(folder, filter="data")
