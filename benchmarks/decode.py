"""Decoding a folder of photos: serial against parallel threads, and what a cached run costs.

    python benchmarks/decode.py [--n 40] [--size 1200x900] [--workers 1 2 4]

Writes ``--n`` JPEG photos (smooth patterns with noise) to a temporary folder, times loading the folder (listing,
header checks and the identity from the files' bytes: nothing decoded, which is all a run whose statistics are
cached pays), then how long it takes to have the images as the model reads them (decoded, resized to 32×32,
held as uint8) with each number of decoding threads. Prints figures only.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from diffpath_core.datasets import load_image_folder  # noqa: E402
from diffpath_core.datasets.images import DECODE_WORKERS_ENV  # noqa: E402


def photos(folder: Path, n: int, width: int, height: int) -> None:
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    for i in range(n):
        base = np.sin(x / (40 + i)) * 60 + np.cos(y / 60) * 60 + 128
        arr = np.stack([base, base[::-1], base[:, ::-1]], -1) + rng.normal(0, 8, (height, width, 3))
        Image.fromarray(arr.clip(0, 255).astype(np.uint8)).save(folder / f"photo_{i:03d}.jpg", quality=90)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=40)
    p.add_argument("--size", default="1200x900", help="width x height of each photo")
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    args = p.parse_args()
    width, height = map(int, args.size.lower().split("x"))
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "photos"
        folder.mkdir()
        photos(folder, args.n, width, height)
        mb = sum(f.stat().st_size for f in folder.iterdir()) / 2**20
        print(f"{args.n} JPEG photos of {width}×{height} ({mb:.0f} MB), decoded and resized to 32×32 RGB; "
              f"{os.cpu_count()} cores\n")
        t0 = time.perf_counter()
        load_image_folder(folder, size=32, channels=3, resize_images=True)
        print(f"  listing, header checks and byte identity (no decode): {time.perf_counter() - t0:.2f} s")
        base = None
        for workers in args.workers:
            os.environ[DECODE_WORKERS_ENV] = str(workers)
            images = load_image_folder(folder, size=32, channels=3, resize_images=True)
            t0 = time.perf_counter()
            images.images
            t = time.perf_counter() - t0
            base = base or t
            print(f"  decode with {workers} thread(s): {t:.2f} s ({args.n / t:.1f} images/s, {base / t:.2f}× serial)")


if __name__ == "__main__":
    main()
