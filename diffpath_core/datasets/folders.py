"""Folders of image files as image sets: listing (hidden and non-image files skipped and counted), seeded
ID-train / ID-test halves, every unusable file named in one error."""
from __future__ import annotations

import os
import threading
import warnings
from pathlib import Path

import numpy as np
import torch

from ..errors import InputError
from ..store import digest, file_digest
from .images import (FileSource, ImageSet, check_bits, convert_channels, decode_image, identity, image_header,
                     resize)

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pbm"}
FOLDER_TEST_FRACTION = 0.5  # a folder used as an ID set: this share is held out as its ID-test part
MAX_NAMED_ERRORS = 20
LOW_BITS_BELOW = 4096  # a 16-bit file whose values all lie below this uses at most 12 of its 16 bits
MAX_NAMED_LOW = 5      # files named in the warning about them (then a count)


def _is_hidden(name: str) -> bool:
    return name.startswith(".")  # also macOS AppleDouble "._name" files


def list_image_files(folder: Path) -> tuple[list[Path], dict[str, int]]:
    """Image files under ``folder`` (recursive, symlinks followed, sorted) and counts of what was skipped."""
    files, skipped, seen = [], {"hidden": 0, "not an image": 0}, set()
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        real = os.path.realpath(dirpath)
        if real in seen:  # a symlink loop
            dirnames[:] = []
            continue
        seen.add(real)
        skipped["hidden"] += sum(_is_hidden(d) for d in dirnames)
        dirnames[:] = sorted(d for d in dirnames if not _is_hidden(d))
        for name in filenames:
            if _is_hidden(name):
                skipped["hidden"] += 1
            elif Path(name).suffix.lower() not in IMAGE_SUFFIXES:
                skipped["not an image"] += 1
            else:
                files.append(Path(dirpath) / name)
    return sorted(files, key=lambda p: p.relative_to(folder).as_posix()), skipped


def folder_split(n: int, split: str | None, seed: int = 0, test_fraction: float = FOLDER_TEST_FRACTION):
    """Indices of a folder's ``split``: None = all; "train" / "test" = disjoint parts of a seeded permutation."""
    if split is None:
        return np.arange(n)
    if split not in ("train", "test"):
        raise InputError(f"split must be 'train', 'test' or None, got {split!r}")
    if n < 2:
        raise InputError(f"a folder used as an ID set is split into ID-train and ID-test parts; it needs at least "
                         f"2 images, it has {n} (or give the ID-test images as a folder of their own)")
    perm = np.random.default_rng(seed).permutation(n)
    n_test = min(n - 1, max(1, int(round(test_fraction * n))))
    return np.sort(perm[:n_test] if split == "test" else perm[n_test:])


def load_image_folder(folder: str | os.PathLike, *, size: int = 32, channels: int = 1,
                      resize_images: bool = False, convert: bool = False, limit: int | None = None,
                      split: str | None = None, seed: int = 0, bits: int | None = None) -> ImageSet:
    """Image files under ``folder`` (recursive, symlinks followed), decoded by :func:`decode_image` when needed.

    ``split`` None takes every image; "train" / "test" take disjoint parts of a seeded permutation (half held
    out for test), so a folder can serve as an ID set without scoring images its density was fitted on.
    ``limit`` keeps a seeded random sample of that many (after the split). Sizes must equal ``size`` unless
    ``resize_images``; channel counts must equal ``channels`` unless ``convert`` (grey↔RGB). Hidden files
    (including macOS ``._*``) and files without an image suffix are skipped and counted in ``meta["skipped"]``.

    Nothing is decoded here: every file's header is read and checked (structure, size, channels, depth; every
    file that cannot be used is named in one :class:`InputError`), and the set's identity is a digest of the
    files' names and bytes. Pixels are decoded when a range of images is first asked for (in parallel threads,
    each image kept at the model's size as uint8, or as uint16 when the set holds 16-bit or float files, so their
    precision reaches the model), so a run whose statistics are cached decodes nothing.

    16-bit files are read as 16-bit data (values / 65535). ``bits`` N says they hold N-bit data (12-bit data in
    16-bit files): their values are scaled by 2^N − 1, and a value above that is an error naming the file (8-bit
    files keep /255).
    Without it, 16-bit files whose values all lie below 4096 (at most 12 bits used) get one warning per set
    that names them and the ``bits`` to pass; since files are decoded only when needed, the warning comes with
    the first batch that holds such files (and never in a run whose statistics are all cached).
    """
    root = Path(folder)
    check_bits(bits)
    if not root.is_dir():
        raise InputError(f"{root}: not a folder")
    files, skipped = list_image_files(root)
    if not files:
        raise InputError(f"{root}: folder holds no image files ({', '.join(sorted(IMAGE_SUFFIXES))}); "
                         f"skipped {skipped['hidden']} hidden and {skipped['not an image']} other file(s)")
    n_all = len(files)
    idx = folder_split(n_all, split, seed)
    if limit is not None and limit < len(idx):
        idx = np.sort(np.random.default_rng(seed).choice(idx, size=limit, replace=False))
    files = [files[i] for i in idx]
    hashed, digests, problems, sizes, depths = [], [], [], [], {}
    for path in files:
        try:
            (h, w), have, depths[path] = image_header(path)
        except InputError as exc:
            problems.append(str(exc))
            continue
        if have != channels and not convert:
            problems.append(f"{path}: has {have} channel(s), the model expects {channels}; "
                            "pass convert=True (CLI: --convert-channels) to convert grey/RGB")
            continue
        if (h, w) != (size, size) and not resize_images:
            problems.append(f"{path}: size {w}×{h}, the model expects {size}×{size}; "
                            "pass resize_images=True (CLI: --resize) to resize")
            continue
        digests.append(file_digest(path))
        hashed += [path.relative_to(root).as_posix(), digests[-1]]
        sizes.append((h, w))
    if problems:
        listed = "\n  ".join(problems[:MAX_NAMED_ERRORS])
        more = f"\n  … and {len(problems) - MAX_NAMED_ERRORS} more" if len(problems) > MAX_NAMED_ERRORS else ""
        raise InputError(f"{root}: {len(problems)} of {len(files)} image file(s) cannot be used:\n  {listed}{more}")
    part = "all" if split is None else split
    stored = 16 if max(depths.values()) > 8 else 8  # 16-bit or float files keep 16 bits, 8-bit sets stay uint8
    deep = () if stored == 8 else ("uint16",) if bits is None else ("uint16", f"bits={bits}")
    key = identity("folder-bytes", digest(*hashed, length=None), size, channels, resize_images, convert, part, seed,
                   *deep)
    decoder = _FolderDecoder(root, channels, size, bits, {p for p, d in depths.items() if d == 16})
    return ImageSet(root.name, split or "folder", labels=None, identity=key,
                    meta={"files": [p.relative_to(root).as_posix() for p in files], "skipped": skipped,
                          "n_in_folder": n_all, "split": part, "seed": seed, "sizes": sizes, "root": str(root),
                          "stored_bits": stored, "bits": bits},
                    source=FileSource(files, decoder, channels, size, hashes=digests, bits=stored,
                                      after_decoding=decoder.warn_low_bits))


class _FolderDecoder:
    """One folder's decoding for its :class:`FileSource` (called from several threads): a file as (C, size, size)
    float in [-1, 1]; notes 16-bit files whose values use only the low bits, for one warning per set."""

    def __init__(self, root: Path, channels: int, size: int, bits: int | None, sixteen: set[Path]):
        self.root, self.channels, self.size, self.bits, self.sixteen = root, channels, size, bits, sixteen
        self.lock = threading.Lock()
        self.n_sixteen, self.low, self.warned = 0, [], False  # 16-bit files decoded; (file, largest value)

    def __call__(self, path: Path) -> torch.Tensor:  # one full-resolution float copy at a time, scaled in place
        arr = decode_image(path, self.bits)
        if self.bits is None and path in self.sixteen:
            top = int(round(float(arr.max()) * 65535))
            with self.lock:
                self.n_sixteen += 1
                if top < LOW_BITS_BELOW:
                    self.low.append((path.relative_to(self.root).as_posix(), top))
        t = torch.from_numpy(arr if arr.ndim == 3 else arr[..., None]).permute(2, 0, 1)[None].mul_(2.0).sub_(1.0)
        return resize(convert_channels(t, self.channels, str(path)), self.size)[0]

    def warn_low_bits(self) -> None:
        with self.lock:
            if self.warned or not self.low:
                return
            self.warned = True
            low, n = sorted(self.low), self.n_sixteen
        largest = max(top for _, top in low)
        depth = max(8, largest.bit_length())
        named = ", ".join(f for f, _ in low[:MAX_NAMED_LOW])
        more = f" and {len(low) - MAX_NAMED_LOW} more" if len(low) > MAX_NAMED_LOW else ""
        warnings.warn(f"{self.root}: {len(low)} of the {n} 16-bit file(s) decoded so far use only their low bits "
                      f"(largest value {largest}, below {LOW_BITS_BELOW}): {named}{more}. Read as 16-bit data they "
                      f"reach the model in [-1, {2 * largest / 65535 - 1:.3f}], not [-1, 1]. If they hold "
                      f"{depth}-bit data, pass bits={depth} (CLI: --bits {depth}) to scale them by {2 ** depth - 1}; "
                      "if they are dark 16-bit images, nothing needs doing. (Files are decoded when first needed: "
                      "this comes with the first batch holding such files, once per set.)", UserWarning, stacklevel=2)


def folder_summary(images: ImageSet) -> str | None:
    """One line on what a folder gave (images, which part, what was skipped); None for a registered dataset."""
    if "skipped" not in images.meta:
        return None
    skipped, part = images.meta["skipped"], images.meta["split"]
    which = "" if part == "all" else f" ({part} part of {images.meta['n_in_folder']}, seed {images.meta['seed']})"
    return (f"{images.name}: {len(images)} images{which}; skipped {skipped['hidden']} hidden and "
            f"{skipped['not an image']} non-image file(s)")


def is_folder_source(source: str) -> bool:
    return os.path.isdir(source) or os.sep in str(source)
