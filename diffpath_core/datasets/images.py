"""Images as the model reads them: (N, C, H, W) float32 in [-1, 1], with an identity naming their bytes.

Every loader returns an :class:`ImageSet` whose ``identity`` names the source bytes and the preprocessing,
so the feature cache can tell two versions of "the same" dataset apart. Files are decoded by
:func:`decode_image`'s explicit rules.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import InputError
from ..store import digest


@dataclass
class ImageSet:
    """Images of one split, ready for the model: ``images`` is (N, C, H, W) float32 in [-1, 1]."""

    name: str
    split: str
    images: torch.Tensor
    labels: np.ndarray | None
    identity: str
    meta: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.images)


def item_names(images: ImageSet, source: str | None = None) -> list[str]:
    """A name for each image, for messages: a folder's files under ``source`` (the folder as the user gave it),
    a registered dataset's images by split and index."""
    files = images.meta.get("files")
    if files is not None:
        return [f"{source or images.name}/{f}" for f in files]
    indices = images.meta.get("indices", range(len(images)))
    return [f"{images.name} {images.split} #{i}" for i in indices]


def image_hashes(images: torch.Tensor) -> np.ndarray:
    """A 64-bit content hash of each image as the model reads it ((N, C, H, W), after decoding and resizing):
    equal hashes are identical images, whatever their file names."""
    import hashlib

    arr = images.detach().to("cpu", torch.float32).contiguous().numpy()
    return np.array([int.from_bytes(hashlib.blake2b(a.tobytes(), digest_size=8).digest(), "little", signed=True)
                     for a in arr], dtype=np.int64)


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


def decode_image(path: Path) -> np.ndarray:
    """One image file as float32 in [0, 1], (H, W) grey or (H, W, 3) colour, by explicit rules.

    - EXIF orientation is applied (a phone photo shows upright);
    - integer modes are scaled by their bit depth: 1 (0/1), L, P, RGB, CMYK, YCbCr (/255), I;16 (/65535),
      I (32-bit; accepted when its values fit 16 bits, /65535, as 16-bit PNGs often decode to it);
    - F (float) must already lie in [0, 1];
    - an alpha channel (LA, RGBA, PA, P with transparency) is composited over black, the background of the
      offline datasets;
    - a file whose structure or checksums are damaged (``PIL.Image.verify``) is refused even if it decodes.

    Anything else raises :class:`InputError` naming the file and the problem.
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

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
            elif mode not in ("1", "L", "LA", "RGB", "RGBA", "I", "F") and not mode.startswith("I;16"):
                im = im.convert("RGB")  # CMYK, YCbCr, LAB, HSV: Pillow's conversion to RGB
                mode = "RGB"
            arr = np.asarray(im)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise InputError(f"{path}: unreadable or truncated image ({type(exc).__name__}: {exc})") from exc
    if mode == "1":
        out = arr.astype(np.float32)
    elif mode.startswith("I;16"):
        out = arr.astype(np.float32) / 65535.0
    elif mode == "I":
        lo, hi = int(arr.min()), int(arr.max())
        if lo < 0 or hi > 65535:
            raise InputError(f"{path}: 32-bit integer image with values in [{lo}, {hi}]; only values that fit "
                             "16 bits (0..65535) have a known range; save it as 8- or 16-bit")
        out = arr.astype(np.float32) / 65535.0
    elif mode == "F":
        lo, hi = float(np.nanmin(arr)), float(np.nanmax(arr))
        if not np.isfinite(arr).all() or lo < 0.0 or hi > 1.0:
            raise InputError(f"{path}: float image with values in [{lo:.4g}, {hi:.4g}] or NaN/Inf; "
                             "float images must lie in [0, 1]")
        out = arr.astype(np.float32)
    else:
        out = arr.astype(np.float32) / 255.0
    if mode in ("LA", "RGBA"):
        colour, alpha = out[..., :-1], out[..., -1:]
        out = colour * alpha  # composited over black
        if mode == "LA":
            out = out[..., 0]
    return out


class FileImages:
    """Image files decoded on demand (only the ones a ``limit`` keeps): crop, then resize with PIL."""

    def __init__(self, paths: list[Path], crop: int | None = None):
        self.paths, self.crop = list(paths), crop

    def __len__(self) -> int:
        return len(self.paths)

    def decode(self, indices, size: int) -> np.ndarray:
        from PIL import Image

        out = np.empty((len(indices), size, size, 3), dtype=np.uint8)
        for j, i in enumerate(indices):
            path = self.paths[i]
            try:
                with Image.open(path) as im:
                    im = im.convert("RGB")
            except OSError as exc:
                raise InputError(f"{path}: unreadable or truncated image ({exc})") from exc
            w, h = im.size
            side = self.crop or min(w, h)
            left, top = (w - side) // 2, (h - side) // 2
            im = im.crop((left, top, left + side, top + side)).resize((size, size), Image.BILINEAR)
            out[j] = np.asarray(im)
        return out
