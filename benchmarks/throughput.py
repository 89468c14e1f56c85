"""Throughput of feature extraction and its overhead over the bare network, measured in one run.

    python benchmarks/throughput.py [--device auto] [--batch 64] [--repeats 5] [--skip-options]

1. Overhead: (trajectory + SSIM + statistics) over a bare loop of K forward passes of the same
   network on the same batch, on the shipped Fashion-MNIST model; ratio of the fastest of N interleaved runs
   (the runs least disturbed by other load on a shared machine).
2. The converted DiffPath reference network (3×32×32, K=10, batch 64): images/s in fp32, and the
   options bf16 autocast and torch.compile (fp32) with their speed and their largest feature
   difference, and the AUROC difference each causes on a small Fashion-MNIST → digits run of the
   shipped model.
Prints figures only: timings belong here, never in tests. On Linux the CPU allocator tuning of
``runtime.tune_cpu_allocator`` is active, as in every extraction; ``DIFFPATH_MALLOC_TUNING=0`` turns
it off for a comparison run.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from diffpath_core.extraction import Extraction  # noqa: E402
from diffpath_core.features import diffpath_features, paper_form_features  # noqa: E402
from diffpath_core.models import load_improved_diffusion, load_model, resolve_device  # noqa: E402
from diffpath_core.runtime import CompiledNetwork, cpu_workers, run_sharded, tune_cpu_allocator  # noqa: E402
from diffpath_core.trajectory import autocast_context  # noqa: E402

REFERENCE = Path(__file__).resolve().parent.parent / "tests" / "data" / "reference"


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def bare_loop(model, x, k, network=None, workers=None, precision="fp32"):
    """K forward passes at the trajectory's timesteps, nothing else: the floor any method pays, in the same
    precision context as the extraction (so a GPU's fp32 is compared with fp32, not with PyTorch's default TF32
    convolutions).

    Sharded over CPU workers as the extraction is (``runtime.run_sharded``) unless ``workers`` is given.
    """
    predict = network or model.predict_eps
    steps = model.schedule(k).net_timesteps

    def shard(xb):
        with torch.inference_mode(), autocast_context(xb.device, precision):
            for t in steps:
                predict(xb, torch.full((xb.shape[0],), float(t), device=xb.device))

    run_sharded(shard, x, cpu_workers(x.device, x.shape[0]) if workers is None else workers)


def full_extraction(model, x, k, precision="fp32", network=None):
    """What the extraction driver runs per batch: trajectory and path statistics, sharded over cores."""
    return Extraction(model, k=k, precision=precision, network=network).batch_statistics(x)


def timed(fn, device) -> float:
    sync(device)
    t0 = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - t0


def overhead(model, x, k, repeats, device, precision="fp32") -> tuple[float, float, float]:
    bare, full = [], []
    bare_loop(model, x, k, precision=precision), full_extraction(model, x, k, precision)  # warm-up
    for _ in range(repeats):  # interleaved so drifts in machine load hit both alike
        bare.append(timed(lambda: bare_loop(model, x, k, precision=precision), device))
        full.append(timed(lambda: full_extraction(model, x, k, precision), device))
    b, f = min(bare), min(full)
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
    tuned = tune_cpu_allocator() if device.type == "cpu" else None
    print(f"device {device}, torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"{cpu_workers(device, args.batch)} shard(s) per network call, batch {args.batch}, "
          f"K={args.k}, fastest of {args.repeats} interleaved repeats"
          + ("" if tuned is None else f", CPU allocator tuning {'on' if tuned else 'off'}") + "\n")

    # 1. overhead on the shipped model
    model = load_model("fashion_mnist", device=device)
    x = torch.rand(args.batch, model.in_channels, model.image_size, model.image_size, device=device) * 2 - 1
    b, f, ratio = overhead(model, x, args.k, args.repeats, device)
    print(f"[shipped fashion_mnist model, {model.describe()}]")
    print(f"  bare K forward passes : {b:.3f} s/batch  ({args.batch / b:.1f} images/s)")
    print(f"  full feature extraction: {f:.3f} s/batch  ({args.batch / f:.1f} images/s)")
    print(f"  overhead ratio         : {ratio:.3f}  (target ≤ 1.10)")
    if not args.skip_options:  # slow on CPUs without bf16 units (an order of magnitude below fp32)
        b, f, ratio = overhead(model, x, args.k, args.repeats, device, "bf16")
        print(f"  bf16: bare {args.batch / b:.1f} images/s, full {args.batch / f:.1f} images/s, overhead ratio "
              f"{ratio:.3f} (both under bf16 autocast; target ≤ 1.05)")
    print()

    # 2. the converted reference network
    ref = load_improved_diffusion(REFERENCE / "improved_diffusion_celeba32_small_state_dict.npz",
                                  "reference_small", device=device)
    xr = torch.rand(args.batch, 3, 32, 32, generator=torch.Generator().manual_seed(0)).to(device) * 2 - 1
    b, f, ratio = overhead(ref, xr, args.k, args.repeats, device)
    print(f"[converted DiffPath reference network, {ref.describe()}]")
    print(f"  fp32 full extraction   : {args.batch / f:.1f} images/s (bare network {args.batch / b:.1f} images/s; "
          f"overhead ratio {ratio:.3f})")
    unsharded = min(timed(lambda: bare_loop(ref, xr, args.k, workers=1), device) for _ in range(args.repeats))
    print(f"  bare network, one batch on all intra-op threads (no sharding): {args.batch / unsharded:.1f} images/s")
    print("  official implementation on this machine: about 11 images/s (issue #2); target ≥ 22 images/s")
    if args.skip_options:
        return
    base = full_extraction(ref, xr, args.k)
    base_feats = np.c_[diffpath_features(base, "6d"), paper_form_features(base)]
    options = {"bf16 autocast": dict(precision="bf16"),
               "torch.compile (fp32)": dict(network=CompiledNetwork(ref))}
    for name, kw in options.items():
        try:
            t0 = time.perf_counter()
            full_extraction(ref, xr, args.k, **kw)  # warm-up / compilation
            warm = time.perf_counter() - t0
            t = min(timed(lambda kw=kw: full_extraction(ref, xr, args.k, **kw), device) for _ in range(args.repeats))
            feats = full_extraction(ref, xr, args.k, **kw)
            f2 = np.c_[diffpath_features(feats, "6d"), paper_form_features(feats)]
            rel = np.max(np.abs(f2 - base_feats) / (np.abs(base_feats) + 1e-12))
            # relative differences explode on features near zero; in units of each feature's spread over
            # the batch they say whether images change places
            spread = np.max(np.abs(f2 - base_feats) / (base_feats.std(axis=0) + 1e-12))
            print(f"  {name:<22}: {args.batch / t:.1f} images/s ({f / t:.2f}× fp32); largest feature difference "
                  f"{rel:.2e} relative, {spread:.2e} of the feature's spread; first batch (warm-up) {warm:.1f} s")
        except Exception as exc:  # noqa: BLE001
            print(f"  {name:<22}: failed here ({type(exc).__name__}: {exc})")
    auroc_difference(model, args.k, args.batch)


def auroc_difference(model, k, batch):
    """AUROC of each method in fp32, bf16 and compiled fp32 on a small shipped-model pair: what each option costs."""
    from diffpath_core.datasets import load_dataset
    from diffpath_core.evaluate import METHODS, make_method
    from diffpath_core.metrics import auroc

    sets = {s: load_dataset(n, sp, size=model.image_size, channels=model.in_channels, limit=256)
            for s, (n, sp) in {"train": ("fashion_mnist", "train"), "id": ("fashion_mnist", "test"),
                               "ood": ("digits", "test")}.items()}
    variants = {"fp32": {}, "bf16": dict(precision="bf16"),
                "compile": dict(network=CompiledNetwork(model), batch_size=batch)}
    print("\n[AUROC, Fashion-MNIST → digits, 256 images per set, shipped model]")
    for method in METHODS:
        values = {}
        for variant, kw in variants.items():
            det = make_method(method, model=model, k=k, progress=False, **kw).fit(sets["train"])
            values[variant] = auroc(det.score_samples(sets["id"]), det.score_samples(sets["ood"]))
        print(f"  {method:<12} fp32 {values['fp32']:.4f}  "
              + "  ".join(f"{v} {values[v]:.4f} ({values[v] - values['fp32']:+.4f})" for v in ("bf16", "compile")))


if __name__ == "__main__":
    main()
