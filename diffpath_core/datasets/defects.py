"""Synthetic local defects with exact masks, made offline from any image set: the test bed of anomaly maps.

Each defect changes one region of an image: a patch pasted from another set (an MNIST digit, a rendered
glyph) or from another image of the same set (cut-paste), a bright scratch, a blot, local blur, a local
contrast change, or a rotated region, at any image size. The mask holds exactly the pixels the defect changed:
a change of at most :data:`CHANGED` (2/255 of the range) is undone, so every pixel outside the mask is the clean
image's, bit for bit, and every pixel inside moved by more than that (a blur over a flat region changes nothing
there and masks nothing). Everything is seeded: the same images, kind, seed and size give the same defects.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..errors import InputError
from ..store import digest
from .images import ImageSet, identity

DEFECT_KINDS = ("patch:mnist", "patch:glyphs", "cutpaste", "scratch", "blot", "blur", "contrast", "rotation")
CHANGED = 4.0 / 255  # in model units ([-1, 1] spans 2): a pixel that moved by more than 2/255 of the range


@dataclass
class DefectSet:
    """Defective images (N, C, H, W) in [-1, 1], their masks (N, H, W) bool, the clean originals, and what made
    them: the kind, the seed and the defect's side in pixels."""

    images: torch.Tensor
    masks: torch.Tensor
    clean: torch.Tensor
    kind: str
    source: str
    seed: int
    size: int

    def __len__(self) -> int:
        return len(self.images)

    def as_image_set(self) -> ImageSet:
        """The defective images as an :class:`ImageSet` whose identity names the clean images' content, the kind,
        the seed, the size and the defective images' own content: another seed, size or clean set (or a change of
        how defects are made) is another cache entry, never one computed for other images."""
        key = identity("defects", digest(self.clean.cpu().numpy()), self.kind, self.seed, self.size,
                       digest(self.images.cpu().numpy()))
        return ImageSet(f"{self.source}-{self.kind}", "defects", self.images, None, key)


def _region(rng: np.random.Generator, h: int, w: int, size: int) -> tuple[int, int]:
    return int(rng.integers(0, h - size + 1)), int(rng.integers(0, w - size + 1))


def _patches(kind: str, n: int, size: int, side: int, channels: int, rng: np.random.Generator) -> torch.Tensor:
    """``n`` square patches of ``size`` cut from near the centre of another offline set's test images (where the
    digit or letter is), read at ``side`` (the defective images' short side), so a patch shows the same part of a
    digit at every model size. Only the picked images are converted."""
    from .registry import load_dataset

    name = kind.split(":", 1)[1]
    other = load_dataset(name, "test", size=side, channels=channels)
    picks = rng.integers(0, len(other), n)
    centre, jitter = side // 2 - size // 2, max(1, round(4 * side / 32))  # at 32 px: offsets 7..14 for size 10
    offsets = rng.integers(max(0, centre - jitter), min(side - size, centre + jitter - 1) + 1, (n, 2))
    return torch.stack([other.batch(p, p + 1)[0, :, oy:oy + size, ox:ox + size]
                        for p, (oy, ox) in zip(picks, offsets)])


def make_defects(images: torch.Tensor, kind: str, seed: int = 0, size: int | None = None,
                 source: str = "images") -> DefectSet:
    """Put one defect of ``kind`` (:data:`DEFECT_KINDS`) into each image; ``size`` is the defect's side in pixels
    (default: 10/32 of the image's short side). Returns the defects with their exact masks and the clean images."""
    if kind not in DEFECT_KINDS:
        raise InputError(f"unknown defect kind {kind!r}; known: {', '.join(DEFECT_KINDS)}")
    if images.ndim != 4 or len(images) < 2:
        raise InputError("defects are made on a batch of at least two (N, C, H, W) images")
    n, c, h, w = images.shape
    size = size or max(3, round(10 * min(h, w) / 32))
    if not 1 <= size <= min(h, w):
        raise InputError(f"defect size {size} does not fit {h}×{w} images; give a size from 1 to {min(h, w)}")
    rng = np.random.default_rng([seed, DEFECT_KINDS.index(kind)])
    out = images.clone()
    if kind.startswith("patch:"):
        patches = _patches(kind, n, size, min(h, w), c, rng).to(images)
    for i in range(n):
        y, x = _region(rng, h, w, size)
        box = (slice(None), slice(y, y + size), slice(x, x + size))
        if kind.startswith("patch:"):
            out[i][box] = patches[i]
        elif kind == "cutpaste":
            j = int((i + rng.integers(1, n)) % n)
            sy, sx = _region(rng, h, w, size)
            out[i][box] = images[j][:, sy:sy + size, sx:sx + size]
        elif kind == "scratch":
            length = int(round(12 * min(h, w) / 32))
            angle = rng.uniform(0, np.pi)
            cy, cx = rng.uniform(length / 2, h - length / 2), rng.uniform(length / 2, w - length / 2)
            for t in np.linspace(-length / 2, length / 2, 4 * length):
                py, px = int(round(cy + t * np.sin(angle))), int(round(cx + t * np.cos(angle)))
                if 0 <= py < h and 0 <= px < w:
                    out[i][:, py, px] = 1.0
        elif kind == "blot":
            yy, xx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
            ry, rx = rng.uniform(size / 4, size / 2, 2)
            cy, cx = y + size / 2, x + size / 2
            inside = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1.0
            out[i][:, inside] = float(rng.choice([-1.0, 1.0]) * rng.uniform(0.6, 1.0))
        elif kind == "blur":
            import kornia

            blurred = kornia.filters.gaussian_blur2d(images[i:i + 1], (7, 7), (2.0, 2.0), border_type="reflect")[0]
            out[i][box] = blurred[box]
        elif kind == "contrast":
            region = out[i][box]
            out[i][box] = (region.mean() + float(rng.choice([0.2, 2.5])) * (region - region.mean())).clamp(-1, 1)
        elif kind == "rotation":
            out[i][box] = torch.rot90(images[i][box], int(rng.integers(1, 4)), dims=(1, 2))
    masks = (out - images).abs().amax(dim=1) > CHANGED
    out = torch.where(masks[:, None], out, images)  # changes of at most CHANGED undone: the mask is exact
    return DefectSet(out, masks, images.clone(), kind, source, seed, size)
