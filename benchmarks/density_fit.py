"""Cost of the density fit next to the cost of the features, at the paper profile's scale.

    python benchmarks/density_fit.py [--n 50000] [--jobs -1] [--grid reference|compact]

1. Fit + score time of a density grid (default: DiffPath's reference grid, GMM n_components {50, 100} ×
   covariance {full, tied, diag, spherical}, max_iter 200, 10-fold CV, then the refit of the best) on
   ``--n`` synthetic 6-D features, cross-validation fits in parallel over ``--jobs`` cores (joblib).
2. The extraction time of the same number of images at the paper model's cost: the CelebA-32
   architecture (improved-diffusion preset ``celeba32``, random weights: the cost does not depend on
   them) is timed for one batch of forward passes here, and extraction ≈ n × K × (time per image and
   forward pass) × (1 + overhead of the trajectory bookkeeping, measured by benchmarks/throughput.py).
Prints figures only: timings belong here, never in tests.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from diffpath_core.detectors import density_model  # noqa: E402
from diffpath_core.improved_diffusion import PRESETS, build_unet  # noqa: E402
from diffpath_core.runtime import cpu_workers, run_sharded, tune_cpu_allocator  # noqa: E402


def synthetic_features(n: int, seed: int = 0) -> np.ndarray:
    """n × 6 features from a 12-component mixture with correlated, differently scaled coordinates."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 3, (12, 6))
    mixing = rng.normal(0, 1, (12, 6, 6))
    labels = rng.integers(0, 12, n)
    x = centres[labels] + np.einsum("nij,nj->ni", mixing[labels], rng.normal(0, 1, (n, 6)))
    return x * np.array([1.0, 1e3, 1e5, 10.0, 1e4, 1e6])  # the spread of power sums of order 1–3


def forward_seconds_per_image(batch: int = 64, repeats: int = 3) -> float:
    """Seconds per image and forward pass of the CelebA-32 architecture on this machine (sharded as in extraction)."""
    tune_cpu_allocator()
    unet = build_unet(PRESETS["celeba32"]).eval()
    x = torch.rand(batch, 3, 32, 32) * 2 - 1

    def shard(xb):
        with torch.inference_mode():
            unet(xb, torch.full((xb.shape[0],), 500.0))

    workers = cpu_workers(torch.device("cpu"), batch)
    run_sharded(shard, x, workers)  # warm-up
    best = min(_timed(lambda: run_sharded(shard, x, workers)) for _ in range(repeats))
    return best / batch


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=50_000, help="images / feature rows (default: %(default)s)")
    p.add_argument("--grid", default="reference", choices=("reference", "compact"))
    p.add_argument("--jobs", type=int, default=-1, help="joblib workers for the CV fits (-1: all cores)")
    p.add_argument("-k", type=int, default=10, help="trajectory steps K")
    p.add_argument("--overhead", type=float, default=1.07,
                   help="extraction / bare network time, from benchmarks/throughput.py (default: %(default)s)")
    args = p.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; {args.n} images, K={args.k}\n")

    x = synthetic_features(args.n)
    gmm = density_model("gmm", args.grid)
    gmm.n_jobs = args.jobs
    t_fit = _timed(lambda: gmm.fit(x))
    t_score = _timed(lambda: gmm.score_samples(x))
    n_fits = len(gmm.cv_results_["params"]) * gmm.cv
    print(f"[density: {args.grid} GMM grid, {n_fits} CV fits + 1 refit, n_jobs={args.jobs}]")
    print(f"  chosen          : {gmm.describe()}")
    print(f"  fit             : {t_fit:.1f} s")
    print(f"  score {args.n} rows: {t_score:.2f} s\n")

    per_forward = forward_seconds_per_image()
    extraction = args.n * args.k * per_forward * args.overhead
    print("[features at the paper model's cost: CelebA-32 architecture, fp32, this CPU]")
    print(f"  forward pass    : {per_forward * 1e3:.2f} ms per image")
    print(f"  extraction      : {args.n} × K={args.k} × {per_forward * 1e3:.2f} ms × {args.overhead:.2f} overhead "
          f"= {extraction:.0f} s ({extraction / 3600:.1f} h); twice that for the fresh-noise reading")
    print(f"  density fit / extraction: {t_fit / extraction:.3f}")


if __name__ == "__main__":
    main()
