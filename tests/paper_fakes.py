"""Tiny stand-ins for the paper profile's datasets and checkpoints, written in their real on-disk formats.

Datasets (under one root, as ``$DIFFPATH_DATA`` holds them): CIFAR-10 and CIFAR-100 binary batches, SVHN format-2
``.mat`` files, CelebA aligned JPEGs with ``list_eval_partition.txt``, DTD folders with split files, and the
TinyImageNet layout. Checkpoints: random weights saved as the official code saves them
(``torch.save(state_dict)`` under improved-diffusion's names), for small configurations of both presets'
architectures (``model_config`` JSON files). Images carry a little structure per class so densities have
something to fit.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image


def _images(n: int, height: int, width: int, classes: np.ndarray, seed: int) -> np.ndarray:
    """(n, height, width, 3) uint8: a colour and stripe frequency per class, plus noise."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    out = np.empty((n, height, width, 3), dtype=np.uint8)
    for i, c in enumerate(classes):
        colour = np.array([(37 * c) % 255, (91 * c + 40) % 255, (53 * c + 90) % 255], dtype=np.float64)
        stripes = 60 * np.sin((x + y * (c % 3)) / (2 + c % 5))[..., None]
        out[i] = np.clip(colour + stripes + rng.normal(0, 20, (height, width, 3)), 0, 255).astype(np.uint8)
    return out


def _cifar_records(images: np.ndarray, labels: list[np.ndarray]) -> bytes:
    planes = images.transpose(0, 3, 1, 2).reshape(len(images), -1)  # R, G, B planes
    return np.concatenate([np.stack(labels, 1).astype(np.uint8), planes], axis=1).tobytes()


def write_paper_datasets(root: Path, per_class_train: int = 30, n_test: int = 40) -> Path:
    """Every paper dataset in its published format under ``root``; CIFAR-10 has ``per_class_train`` training
    images of each class (the one-class protocol's densities need a few dozen)."""
    from scipy.io import savemat

    root = Path(root)
    # CIFAR-10: five training batches and a test batch of 1 label byte + 3072 pixel bytes
    folder = root / "cifar10" / "cifar-10-batches-bin"
    folder.mkdir(parents=True)
    labels = np.tile(np.arange(10), per_class_train)
    images = _images(len(labels), 32, 32, labels, 1)
    for b, part in enumerate(np.array_split(np.arange(len(labels)), 5), start=1):
        (folder / f"data_batch_{b}.bin").write_bytes(_cifar_records(images[part], [labels[part]]))
    test_labels = np.arange(n_test) % 10
    (folder / "test_batch.bin").write_bytes(_cifar_records(_images(n_test, 32, 32, test_labels, 2), [test_labels]))
    # CIFAR-100: coarse and fine label bytes, then pixels
    folder = root / "cifar100" / "cifar-100-binary"
    folder.mkdir(parents=True)
    for split, n, seed in (("train", 60, 3), ("test", n_test, 4)):
        fine = np.arange(n) % 100
        (folder / f"{split}.bin").write_bytes(_cifar_records(_images(n, 32, 32, fine % 17 + 3, seed),
                                                             [fine // 5, fine]))
    # SVHN format 2: X (32, 32, 3, N), y (N, 1) with 10 for the digit 0
    folder = root / "svhn"
    folder.mkdir(parents=True)
    for split, n, seed in (("train", 60, 5), ("test", n_test, 6)):
        digits = np.arange(n) % 10
        savemat(folder / f"{split}_32x32.mat", {"X": _images(n, 32, 32, digits + 20, seed).transpose(1, 2, 3, 0),
                                                "y": np.where(digits == 0, 10, digits)[:, None]})
    # CelebA: aligned 178×218 JPEGs and the evaluation partition (0 train, 1 valid, 2 test)
    folder = root / "celeba" / "img_align_celeba"
    folder.mkdir(parents=True)
    parts = [0] * 60 + [1] * 5 + [2] * n_test
    faces = _images(len(parts), 218, 178, np.full(len(parts), 33), 7)
    lines = []
    for i, (face, part) in enumerate(zip(faces, parts), start=1):
        Image.fromarray(face).save(folder / f"{i:06d}.jpg", quality=90)
        lines.append(f"{i:06d}.jpg {part}")
    (root / "celeba" / "list_eval_partition.txt").write_text("\n".join(lines) + "\n")
    # DTD: images/<class>/<file>.jpg and labels/{train,test}1.txt
    dtd = root / "textures" / "dtd"
    (dtd / "labels").mkdir(parents=True)
    for split, n, seed in (("train", 60, 8), ("test", n_test, 9)):
        rels = []
        for i, img in enumerate(_images(n, 90, 120, np.arange(n) % 4 + 40, seed)):
            rel = f"{('banded', 'dotted', 'striped', 'woven')[i % 4]}/{split}_{i:04d}.jpg"
            (dtd / "images" / rel).parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(img).save(dtd / "images" / rel, quality=90)
            rels.append(rel)
        (dtd / "labels" / f"{split}1.txt").write_text("\n".join(rels) + "\n")
    # TinyImageNet: train/<wnid>/images/*.JPEG, val/images/*.JPEG with val_annotations.txt
    tin = root / "tinyimagenet" / "tiny-imagenet-200"
    wnids = ("n01443537", "n01629819", "n01641577")
    for i, img in enumerate(_images(60, 64, 64, np.arange(60) % 3 + 50, 10)):
        target = tin / "train" / wnids[i % 3] / "images" / f"{wnids[i % 3]}_{i}.JPEG"
        target.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(target, format="JPEG", quality=90)
    (tin / "val" / "images").mkdir(parents=True)
    rows = []
    for i, img in enumerate(_images(n_test, 64, 64, np.arange(n_test) % 3 + 50, 11)):
        Image.fromarray(img).save(tin / "val" / "images" / f"val_{i}.JPEG", format="JPEG", quality=90)
        rows.append(f"val_{i}.JPEG\t{wnids[i % 3]}\t0\t0\t63\t63")
    (tin / "val" / "val_annotations.txt").write_text("\n".join(rows) + "\n")
    return root


SMALL = {"celeba32": {"num_channels": 32, "num_res_blocks": 1},
         "imagenet64": {"image_size": 64, "channel_mult": [1, 2, 3, 4], "num_channels": 32, "num_res_blocks": 1}}


def write_checkpoint(folder: Path, preset: str, seed: int = 0) -> tuple[Path, Path]:
    """A random-weight checkpoint of ``preset``'s architecture at a small width, as the official code saves it,
    and its ``model_config`` JSON (ImprovedDiffusionConfig fields); returns (checkpoint, config)."""
    from diffpath_core.improved_diffusion import PRESETS, ImprovedDiffusionConfig, build_unet, export_state_dict

    base = PRESETS[preset].to_dict()
    fields = {**{k: list(v) if isinstance(v, tuple) else v for k, v in base.items()}, **SMALL[preset]}
    cfg = ImprovedDiffusionConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in fields.items()})
    torch.manual_seed(seed)
    unet = build_unet(cfg)
    folder.mkdir(parents=True, exist_ok=True)
    checkpoint, config = folder / f"{preset}_small_random.pt", folder / f"{preset}_small.json"
    torch.save(export_state_dict(unet, cfg), checkpoint)
    config.write_text(json.dumps(fields, indent=2))
    return checkpoint, config
