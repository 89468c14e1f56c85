"""Throughput of feature extraction and its overhead over the bare network, measured in one run.

    python benchmarks/throughput.py [--device auto] [--batch 64] [--repeats 5] [--skip-options]

1. Overhead: (trajectory + SSIM + statistics) over a bare loop of K forward passes of the same
   network on the same batch, on the shipped Fashion-MNIST model; ratio of medians, interleaved runs.
2. The converted DiffPath reference network (3×32×32, K=10, batch 64): images/s in fp32, and the
   options bf16 autocast and torch.compile with their speed and their largest feature difference,
   and the AUROC difference they cause on a small Fashion-MNIST → digits run of the shipped model.
Prints figures only: timings belong here, never in tests.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from diffpath_core.features import diffpath_features, diffpathv2_features, path_statistics, to_numpy  # noqa: E402
from diffpath_core.models import load_improved_diffusion, load_model, resolve_device  # noqa: E402
from diffpath_core.trajectory import invert  # noqa: E402

REFERENCE = Path(__file__).resolve().parent.parent / "tests" / "data" / "reference"


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


@torch.inference_mode()
def bare_loop(model, x, k, network=None):
    """K forward passes at the trajectory's timesteps, nothing else: the floor any method pays."""
    predict = network or model.predict_eps
    for t in model.schedule(k).net_timesteps:
        predict(x, t)


@torch.inference_mode()
def full_extraction(model, x, k, precision="fp32", network=None):
    return to_numpy(path_statistics(invert(model, x, k, True, precision, network)))


def timed(fn, device) -> float:
    sync(device)
    t0 = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - t0


def overhead(model, x, k, repeats, device) -> tuple[float, float, float]:
    bare, full = [], []
    bare_loop(model, x, k), full_extraction(model, x, k)  # warm-up
    for _ in range(repeats):  # interleaved so drifts in machine load hit both alike
        bare.append(timed(lambda: bare_loop(model, x, k), device))
        full.append(timed(lambda: full_extraction(model, x, k), device))
    b, f = statistics.median(bare), statistics.median(full)
    return b, f, f / b


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="auto")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("-k", type=int, default=10)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--skip-options", action="store_true", help="skip bf16 / torch.compile / AUROC comparison")
    args = p.parse_args()
    device = resolve_device(args.device)
    print(f"device {device}, torch {torch.__version__}, {torch.get_num_threads()} threads, batch {args.batch}, "
          f"K={args.k}, median of {args.repeats} interleaved repeats\n")

    # 1. overhead on the shipped model
    model = load_model("fashion_mnist", device=device)
    x = torch.rand(args.batch, model.in_channels, model.image_size, model.image_size, device=device) * 2 - 1
    b, f, ratio = overhead(model, x, args.k, args.repeats, device)
    print(f"[shipped fashion_mnist model, {model.describe()}]")
    print(f"  bare K forward passes : {b:.3f} s/batch  ({args.batch / b:.1f} images/s)")
    print(f"  full feature extraction: {f:.3f} s/batch  ({args.batch / f:.1f} images/s)")
    print(f"  overhead ratio         : {ratio:.3f}  (target ≤ 1.10)\n")

    # 2. the converted reference network
    ref = load_improved_diffusion(REFERENCE / "improved_diffusion_celeba32_small_state_dict.npz",
                                  "reference_small", device=device)
    xr = torch.rand(args.batch, 3, 32, 32, generator=torch.Generator().manual_seed(0)).to(device) * 2 - 1
    b, f, ratio = overhead(ref, xr, args.k, args.repeats, device)
    print(f"[converted DiffPath reference network, {ref.describe()}]")
    print(f"  fp32 full extraction   : {args.batch / f:.1f} images/s (bare network {args.batch / b:.1f} images/s; "
          f"overhead ratio {ratio:.3f})")
    print("  official implementation on this machine: about 11 images/s (issue #2); target ≥ 22 images/s")
    if args.skip_options:
        return
    base = full_extraction(ref, xr, args.k)
    base_feats = np.c_[diffpath_features(base, "6d"), diffpathv2_features(base)]
    options = {"bf16 autocast": dict(precision="bf16")}
    try:
        compiled = torch.compile(ref.predict_eps, dynamic=False)
        options["torch.compile"] = dict(network=compiled)
    except Exception as exc:  # noqa: BLE001 - report, do not hide
        print(f"  torch.compile unavailable: {exc}")
    for name, kw in options.items():
        try:
            full_extraction(ref, xr, args.k, **kw)  # warm-up / compilation
            t = statistics.median(timed(lambda kw=kw: full_extraction(ref, xr, args.k, **kw), device)
                                  for _ in range(args.repeats))
            feats = full_extraction(ref, xr, args.k, **kw)
            f2 = np.c_[diffpath_features(feats, "6d"), diffpathv2_features(feats)]
            rel = np.max(np.abs(f2 - base_feats) / (np.abs(base_feats) + 1e-12))
            print(f"  {name:<22}: {args.batch / t:.1f} images/s ({f / t:.2f}× fp32); largest relative feature "
                  f"difference {rel:.2e}")
        except Exception as exc:  # noqa: BLE001
            print(f"  {name:<22}: failed here ({type(exc).__name__}: {exc})")
    auroc_difference(model, args.k)


def auroc_difference(model, k):
    """AUROC of each method in fp32 and bf16 on a small shipped-model pair, to show what bf16 costs."""
    from diffpath_core.data import load_dataset
    from diffpath_core.evaluate import METHODS, make_method
    from diffpath_core.metrics import auroc

    sets = {s: load_dataset(n, sp, size=model.image_size, channels=model.in_channels, limit=256)
            for s, (n, sp) in {"train": ("fashion_mnist", "train"), "id": ("fashion_mnist", "test"),
                               "ood": ("digits", "test")}.items()}
    print("\n[AUROC, Fashion-MNIST → digits, 256 images per set, shipped model]")
    for method in METHODS:
        values = {}
        for precision in ("fp32", "bf16"):
            det = make_method(method, model, k=k, precision=precision, progress=False).fit(sets["train"])
            values[precision] = auroc(det.score_samples(sets["id"]), det.score_samples(sets["ood"]))
        print(f"  {method:<12} fp32 {values['fp32']:.4f}  bf16 {values['bf16']:.4f}  "
              f"difference {values['bf16'] - values['fp32']:+.4f}")


if __name__ == "__main__":
    main()
