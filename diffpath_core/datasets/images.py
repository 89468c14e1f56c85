"""Images as the model reads them: (N, C, H, W) float32 in [-1, 1], with an identity naming their bytes.

Every loader returns an :class:`ImageSet` whose ``identity`` names the source bytes and the preprocessing,
so the feature cache can tell two versions of "the same" dataset apart. Images are produced where they are
needed, a range at a time (:meth:`ImageSet.batch`): arrays already in memory are converted per batch, files
are decoded in parallel threads and kept at the model's size as uint8 (uint16 for a set of 16-bit files), never
at their full resolution, and a set whose statistics are all cached is never decoded at all. Files are decoded
by :func:`decode_image`'s explicit rules.
"""
from __future__ import annotations

import hashlib
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import InputError
from ..store import digest

DECODE_WORKERS_ENV = "DIFFPATH_DECODE_WORKERS"


def decode_workers() -> int:
    """Threads that decode image files in parallel: ``$DIFFPATH_DECODE_WORKERS``, else the cores, at most 4 (each
    holds one full-resolution float copy of its image while resizing: about 50 MB for a 12-megapixel photo)."""
    return max(1, int(os.environ.get(DECODE_WORKERS_ENV, min(4, os.cpu_count() or 1))))


class TensorSource:
    """Images given as a float tensor in [-1, 1]: held as they are."""

    def __init__(self, images: torch.Tensor):
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.images.shape[1:])

    def batch(self, lo: int, hi: int) -> torch.Tensor:
        return self.images[lo:hi]

    def content_hashes(self) -> np.ndarray:
        """Each image's hash as the model reads it (the ``image_hash`` its statistics carry)."""
        return image_hashes(self.images)


class ArraySource:
    """uint8 images already in memory at their own size ((N, H, W) or (N, H, W, C)): converted to the model's
    range, channels and size one batch at a time (antialiased bilinear)."""

    def __init__(self, array: np.ndarray, size: int, channels: int, name: str):
        self.array, self.size, self.channels, self.name = array, size, channels, name

    def __len__(self) -> int:
        return len(self.array)

    @property
    def shape(self) -> tuple[int, ...]:
        return (self.channels, self.size, self.size)

    def batch(self, lo: int, hi: int) -> torch.Tensor:
        return resize(convert_channels(uint8_to_model_range(self.array[lo:hi]), self.channels, self.name), self.size)

    def content_hashes(self) -> np.ndarray:
        """Each image's hash of its stored bytes (nothing converted)."""
        return row_hashes(self.array)


class FileSource:
    """Image files, decoded on demand in parallel threads by ``decode(path) -> (C, H, W) float in [-1, 1] at the
    model's size``. Each decoded image is kept at ``bits`` per value: 8 (uint8, C·H·W bytes) for 8-bit files, 16
    (uint16) for a set holding deeper files, so memory follows the model's size, not the files', and 16-bit data
    keeps its 65,536 levels. ``decoded`` counts the files decoded so far (a cached run decodes none);
    ``after_decoding()``, if given, runs after each batch that decoded files (a loader's warnings on what the
    pixels showed)."""

    def __init__(self, paths: list[Path], decode, channels: int, size: int, hashes: list[str] | None = None, *,
                 bits: int = 8, after_decoding=None):
        if bits not in (8, 16):
            raise ValueError(f"a FileSource keeps 8 or 16 bits per value, not {bits}")
        self.paths, self.decode, self.after_decoding = list(paths), decode, after_decoding
        self.hashes = hashes  # the files' byte digests when the loader read them already
        self.levels = 2 ** bits - 1
        self.pixels = torch.zeros((len(self.paths), channels, size, size),
                                  dtype=torch.uint8 if bits == 8 else torch.uint16)
        self.done = np.zeros(len(self.paths), dtype=bool)
        self.decoded = 0

    def stored(self, path: Path) -> torch.Tensor:
        """One file decoded and quantised to the stored depth (in the decoding thread: no float copy is kept)."""
        return self.decode(path).add(1.0).mul_(self.levels / 2).round_().clamp_(0, self.levels).to(self.pixels.dtype)

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.pixels.shape[1:])

    def batch(self, lo: int, hi: int) -> torch.Tensor:
        todo = [i for i in range(lo, hi) if not self.done[i]]
        if todo:
            workers = min(decode_workers(), len(todo))
            if workers > 1:
                with ThreadPoolExecutor(workers, thread_name_prefix="diffpath-decode") as pool:
                    decoded = list(pool.map(lambda i: self.stored(self.paths[i]), todo))
            else:
                decoded = [self.stored(self.paths[i]) for i in todo]
            for i, pixels in zip(todo, decoded):
                self.pixels[i] = pixels
            self.done[todo] = True
            self.decoded += len(todo)
            if self.after_decoding is not None:
                self.after_decoding()
        return self.pixels[lo:hi].float().div(self.levels / 2).sub(1.0)

    def content_hashes(self) -> np.ndarray:
        """Each file's hash of its bytes (nothing decoded)."""
        from ..store import file_digest

        hashes = self.hashes if self.hashes is not None else [file_digest(p) for p in self.paths]
        return row_hashes(h.encode() for h in hashes)


class ImageSet:
    """Images of one split, ready for the model (float32 (N, C, H, W) in [-1, 1]), with labels, an identity
    naming their bytes and preprocessing, and facts about where they came from (``meta``).

    ``images`` may be given as a tensor; loaders give a ``source`` instead, which produces any range of the
    images when asked (:meth:`batch`), decoding files only then. ``images`` (the whole set) is for small sets
    and figures; extraction asks for the chunks it computes.

    Without an ``identity`` the set is identified by its content (:meth:`content_hashes`): two different sets
    under one name never share a cache entry. The feature cache checks those hashes on every read, whatever the
    identity says.
    """

    def __init__(self, name: str, split: str, images: torch.Tensor | None = None, labels: np.ndarray | None = None,
                 identity: str = "", meta: dict | None = None, *, source=None):
        if (images is None) == (source is None):
            raise ValueError("an ImageSet takes images or a source, one of the two")
        self.name, self.split, self.labels = name, split, labels
        self.meta = dict(meta or {})
        self.source = TensorSource(images) if source is None else source
        self._content: np.ndarray | None = None
        self.identity = identity or digest("content", repr(tuple(self.image_shape)), self.content_hashes())

    def content_hashes(self) -> np.ndarray:
        """A 64-bit hash per image of what fixes it, read without decoding anything: the bytes of an in-memory
        image, or of an image file (whose decoding rules the identity names). int64 (N,), computed once."""
        if self._content is None:
            self._content = self.source.content_hashes()
        return self._content

    def __len__(self) -> int:
        return len(self.source)

    def batch(self, lo: int, hi: int) -> torch.Tensor:
        """Images [lo, hi) as float32 in [-1, 1] (files among them decoded now, once)."""
        return self.source.batch(lo, min(hi, len(self)))

    @property
    def images(self) -> torch.Tensor:
        """Every image, as float32 (N, C, H, W) in [-1, 1]."""
        return self.batch(0, len(self))

    @property
    def image_shape(self) -> tuple[int, ...]:
        """(C, H, W) of every image, known without decoding any."""
        return self.source.shape

    def __repr__(self) -> str:
        return f"ImageSet({self.name!r}, {self.split!r}, {len(self)} images, identity {self.identity[:8]})"


def item_names(images: ImageSet, source: str | None = None) -> list[str]:
    """A name for each image, for messages: a folder's files under ``source`` (the folder as the user gave it),
    a registered dataset's images by split and index."""
    files = images.meta.get("files")
    if files is not None:
        return [f"{source or images.name}/{f}" for f in files]
    indices = images.meta.get("indices", range(len(images)))
    return [f"{images.name} {images.split} #{i}" for i in indices]


def row_hashes(rows) -> np.ndarray:
    """A 64-bit hash of each row's bytes (an array's first axis, or an iterable of bytes): int64 (N,)."""
    rows = [np.ascontiguousarray(r).tobytes() if isinstance(r, np.ndarray) else bytes(r) for r in rows]
    return np.array([int.from_bytes(hashlib.blake2b(r, digest_size=8).digest(), "little", signed=True)
                     for r in rows], dtype=np.int64).reshape(len(rows))


def image_hashes(images: torch.Tensor) -> np.ndarray:
    """A 64-bit content hash of each image as the model reads it ((N, C, H, W), after decoding and resizing):
    equal hashes are identical images, whatever their file names."""
    return row_hashes(images.detach().to("cpu", torch.float32).contiguous().numpy())


def check_images(images: torch.Tensor, source: str) -> torch.Tensor:
    """Refuse arrays a trajectory cannot use: wrong rank, empty, NaN or Inf, far outside [-1, 1]."""
    if images.ndim != 4:
        raise InputError(f"{source}: expected images of shape (N, C, H, W), got {tuple(images.shape)}")
    if images.shape[0] == 0:
        raise InputError(f"{source}: no images")
    finite = torch.isfinite(images)
    if not bool(finite.all()):
        bad = int((~finite).flatten(1).any(1).nonzero()[0])
        raise InputError(f"{source}: image {bad} contains NaN or Inf values")
    lo, hi = float(images.min()), float(images.max())
    if lo < -1.0001 or hi > 1.0001:
        raise InputError(f"{source}: pixel values span [{lo:.3g}, {hi:.3g}]; the model expects [-1, 1] "
                         "(use diffpath_core.datasets.uint8_to_model_range for 0..255 images)")
    return images


def uint8_to_model_range(array: np.ndarray) -> torch.Tensor:
    """(N, H, W) or (N, H, W, C) uint8 → (N, C, H, W) float32 in [-1, 1]."""
    x = torch.from_numpy(np.array(array, copy=True))
    if x.ndim == 3:
        x = x.unsqueeze(-1)
    return x.permute(0, 3, 1, 2).float().div(127.5).sub(1.0)


def convert_channels(images: torch.Tensor, channels: int, source: str) -> torch.Tensor:
    """Grey → RGB by repetition, RGB → grey by ITU-R 601 luma; anything else is an error."""
    have = images.shape[1]
    if have == channels:
        return images
    if have == 1 and channels == 3:
        return images.repeat(1, 3, 1, 1)
    if have == 3 and channels == 1:
        weights = images.new_tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
        return (images * weights).sum(1, keepdim=True)
    raise InputError(f"{source}: cannot convert {have}-channel images to {channels} channels")


def resize(images: torch.Tensor, size: int) -> torch.Tensor:
    """Square resize by bilinear interpolation with antialiasing (the method every loader states)."""
    if images.shape[-2:] == (size, size):
        return images
    return F.interpolate(images, size=(size, size), mode="bilinear", antialias=True,
                         align_corners=False).clamp_(-1.0, 1.0)


def identity(*parts: object) -> str:
    """The identity of an image set from what fixes it (name, split, digest of bytes, size, …)."""
    return digest("|".join(map(str, parts)))


# Every Pillow mode a file can open in, with the channels decode_image gives it (grey 1, colour 3): the header
# check and the decoder read this one table, so a file the decoder converts is never refused by the header.
_MODE_CHANNELS = {"1": 1, "L": 1, "LA": 1, "La": 1, "I": 1, "F": 1, "I;16": 1, "I;16L": 1, "I;16B": 1, "I;16N": 1,
                  "P": 3, "PA": 3, "RGB": 3, "RGBA": 3, "RGBa": 3, "RGBX": 3, "CMYK": 3, "YCbCr": 3, "LAB": 3,
                  "HSV": 3}
_AS_IS = ("1", "L", "LA", "La", "RGB", "RGBA", "RGBa", "I", "F")  # decoded without a Pillow conversion
_PREMULTIPLIED = ("La", "RGBa")  # alpha already applied to the colour bands: they are the image over black


def mode_depth(mode: str) -> int:
    """Bits per value of a Pillow mode as decoded: 16 for I;16* and I (32-bit integers accepted when they fit 16
    bits), 32 for F (float), 8 for every other mode."""
    return 16 if mode == "I" or mode.startswith("I;16") else 32 if mode == "F" else 8


def image_header(path: Path) -> tuple[tuple[int, int], int, int]:
    """((height, width) as displayed, channels after :func:`decode_image`, bits per value (:func:`mode_depth`))
    from a file's header, without decoding its pixels; the file's structure is verified (``PIL.Image.verify``),
    so a cut or damaged file is refused here. Raises :class:`InputError` naming the file and the problem."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            mode, (w, h) = im.mode, im.size
            orientation = im.getexif().get(0x0112, 1)
        with Image.open(path) as im:
            im.verify()  # must directly follow open
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise InputError(f"{path}: unreadable or truncated image ({exc})") from exc
    if mode not in _MODE_CHANNELS and not mode.startswith("I;16"):
        raise InputError(f"{path}: unsupported image mode {mode!r}; save it as 8- or 16-bit grey or RGB")
    if orientation in (5, 6, 7, 8):  # EXIF rotations by 90°: decode_image shows it upright
        w, h = h, w
    return (h, w), _MODE_CHANNELS.get(mode, 1), mode_depth(mode)


def decode_image(path: Path, bits: int | None = None) -> np.ndarray:
    """One image file as float32 in [0, 1], (H, W) grey or (H, W, 3) colour, by explicit rules.

    - EXIF orientation is applied (a phone photo shows upright);
    - integer modes are scaled by their bit depth: 1 (0/1), L, P, RGB, CMYK, YCbCr (/255), I;16 (/65535),
      I (32-bit; accepted when its values fit 16 bits, /65535, as 16-bit PNGs often decode to it);
    - ``bits`` N says that the values of the 16-bit modes (I;16, I) are N-bit data (12-bit data in a 16-bit
      container): they are scaled by 2^N − 1 instead, and a value above that is an error; 8-bit modes keep /255;
    - F (float) must already lie in [0, 1];
    - CMYK, YCbCr, LAB, HSV and RGBX are converted to RGB by Pillow;
    - an alpha channel (LA, RGBA, PA, P with transparency) is composited over black, the background of the
      offline datasets; premultiplied alpha (La, RGBa) is that composite already, so its alpha is dropped;
    - a file whose structure or checksums are damaged (``PIL.Image.verify``) is refused even if it decodes.

    Anything else raises :class:`InputError` naming the file and the problem.
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    check_bits(bits)
    try:
        with Image.open(path) as im:
            im.verify()  # structure and checksums: a cut or damaged file is refused even if its pixels decode
        with Image.open(path) as im:
            im.load()
            im = ImageOps.exif_transpose(im)
            mode = im.mode
            if mode == "P" or mode == "PA":
                im = im.convert("RGBA" if ("transparency" in im.info or mode == "PA") else "RGB")
                mode = im.mode
            elif mode not in _AS_IS and not mode.startswith("I;16"):
                im = im.convert("RGB")  # CMYK, YCbCr, LAB, HSV, RGBX: Pillow's conversion to RGB
                mode = "RGB"
            arr = np.asarray(im)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise InputError(f"{path}: unreadable or truncated image ({type(exc).__name__}: {exc})") from exc
    if mode == "1":
        out = arr.astype(np.float32)
    elif mode_depth(mode) == 16:
        lo, hi = int(arr.min()), int(arr.max())
        if lo < 0 or hi > 65535:
            raise InputError(f"{path}: 32-bit integer image with values in [{lo}, {hi}]; only values that fit "
                             "16 bits (0..65535) have a known range; save it as 8- or 16-bit")
        top = 65535 if bits is None else 2 ** bits - 1
        if hi > top:
            raise InputError(f"{path}: values up to {hi}, above {top}, the largest {bits}-bit value; bits={bits} "
                             "(CLI: --bits) must be the depth of every 16-bit file of the set (leave it unset for "
                             "16-bit data)")
        out = arr.astype(np.float32) / np.float32(top)
    elif mode == "F":
        lo, hi = float(np.nanmin(arr)), float(np.nanmax(arr))
        if not np.isfinite(arr).all() or lo < 0.0 or hi > 1.0:
            raise InputError(f"{path}: float image with values in [{lo:.4g}, {hi:.4g}] or NaN/Inf; "
                             "float images must lie in [0, 1]")
        out = arr.astype(np.float32)
    else:
        out = arr.astype(np.float32)
        out *= np.float32(1.0 / 255.0)  # in place: one full-resolution float copy, not two
    if mode in ("LA", "RGBA", "La", "RGBa"):
        colour, alpha = out[..., :-1], out[..., -1:]
        out = colour if mode in _PREMULTIPLIED else colour * alpha  # composited over black
        if mode in ("LA", "La"):
            out = out[..., 0]
    return out


def check_bits(bits: int | None) -> None:
    """``bits`` is None (16-bit files are 16-bit data) or the depth N of the values in 16-bit files, 1..16."""
    if bits is not None and (isinstance(bits, bool) or not isinstance(bits, (int, np.integer)) or not 1 <= bits <= 16):
        raise InputError(f"bits={bits!r}: give the depth of the values in the 16-bit files, an integer 1..16 "
                         "(12 for 12-bit data stored in 16-bit files), or leave it unset")


class FileImages:
    """Image files of a paper dataset, read on demand (only the ones a ``limit`` keeps): a centre square crop
    (``crop`` pixels, or the short side), then a bilinear resize with PIL, as the DiffPath reference does."""

    def __init__(self, paths: list[Path], crop: int | None = None):
        self.paths, self.crop = list(paths), crop

    def __len__(self) -> int:
        return len(self.paths)

    def subset(self, indices) -> "FileImages":
        return FileImages([self.paths[i] for i in indices], self.crop)

    def digests(self) -> list[str]:
        """Each file's byte digest (read in blocks, nothing decoded; computed once)."""
        from ..store import file_digest

        if getattr(self, "_digests", None) is None:
            self._digests = [file_digest(p) for p in self.paths]
        return self._digests

    def identity(self) -> str:
        """A digest of the files' names and bytes."""
        return digest(*(part for p, d in zip(self.paths, self.digests()) for part in (p.name, d)))

    def decode_one(self, path: Path, size: int) -> np.ndarray:
        """One file as (size, size, 3) uint8: RGB, centre square crop, bilinear resize."""
        from PIL import Image

        try:
            with Image.open(path) as im:
                im = im.convert("RGB")
        except OSError as exc:
            raise InputError(f"{path}: unreadable or truncated image ({exc})") from exc
        w, h = im.size
        side = self.crop or min(w, h)
        left, top = (w - side) // 2, (h - side) // 2
        return np.array(im.crop((left, top, left + side, top + side)).resize((size, size), Image.BILINEAR))

    def source(self, size: int, channels: int, name: str) -> FileSource:
        """A :class:`FileSource` that decodes these files in parallel, at ``size`` with ``channels``."""
        def one(path: Path) -> torch.Tensor:
            rgb = torch.from_numpy(self.decode_one(path, size)).permute(2, 0, 1)[None].float().div(127.5).sub(1.0)
            return convert_channels(rgb, channels, name)[0]  # kept as uint8 by the source

        return FileSource(self.paths, one, channels, size, hashes=self.digests())
