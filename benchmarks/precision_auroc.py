"""What each way of running the network costs in AUROC, on the offline pairs, paired against strict fp32.

    python benchmarks/precision_auroc.py [--n-train 400] [--n-test 250] [--variants fp32 bf16 fp16 compile]

Every variant extracts the same images (the offline profile's pairs at reduced sizes, seeded) with the shipped
model, then each method is fitted and scored as in the main table. For each method and variant it prints the mean
AUROC over the pairs and its difference from fp32 with a 95 % paired bootstrap interval (the same images and
pairs resampled for both), and the largest change of any single pair. On a CPU, TF32 does not exist (tf32 equals
fp32 there) and bf16/fp16 run through CPU autocast kernels, whose rounding may differ from a GPU's: the tf32 cost,
and the GPU's own bf16 cost, can only be measured on a GPU (``--device cuda``). Prints figures only.
"""
from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from diffpath_core.evaluate import METHODS, VARIANTS, Evaluation, ordered_pairs  # noqa: E402
from diffpath_core.extraction import Extraction  # noqa: E402
from diffpath_core.metrics import auroc, paired_difference  # noqa: E402
from diffpath_core.models import load_model  # noqa: E402
from diffpath_core.runtime import CompiledNetwork  # noqa: E402

PAIRS = ordered_pairs(["fashion_mnist", "digits", "glyphs"]) + [("fmnist_tops", "fmnist_footwear"),
                                                                ("fashion_mnist", "mnist")]


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="auto")
    p.add_argument("--n-train", type=int, default=400)
    p.add_argument("--n-test", type=int, default=250)
    p.add_argument("--variants", nargs="+", default=["fp32", "bf16", "fp16", "compile"],
                   help="fp32, tf32, bf16, fp16, compile (fp32 through torch.compile), compile-bf16")
    p.add_argument("--cache-dir", default="cache")
    args = p.parse_args()
    model = load_model("fashion_mnist", device=args.device)
    base = Extraction(model, k=10, cache_dir=args.cache_dir, progress=False)
    settings = {"fp32": {}, "tf32": dict(precision="tf32"), "bf16": dict(precision="bf16"),
                "fp16": dict(precision="fp16"), "compile": dict(network=CompiledNetwork(model)),
                "compile-bf16": dict(network=CompiledNetwork(model), precision="bf16")}
    methods = list(METHODS + VARIANTS)
    results = {}
    for variant in dict.fromkeys(["fp32", *args.variants]):
        t0 = time.perf_counter()
        ev = Evaluation(replace(base, **settings[variant]), n_train=args.n_train, n_test=args.n_test, n_boot=0)
        results[variant] = ev.run(PAIRS, methods)
        print(f"{variant}: {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    print(f"shipped model, {model.device.type}; {len(PAIRS)} offline pairs, {args.n_train} ID-train and "
          f"{args.n_test} test images per set; differences paired against fp32 (2000 joint resamples of the test sets, "
          "and of the pairs)\n")
    print(f"{'method':<14} {'variant':<13} {'mean AUROC':>10} {'− fp32':>8} {'95% interval':>19} {'largest pair':>13}")
    for method in methods:
        reference = [results["fp32"].scores[(method, a, b)] for a, b in PAIRS]
        for variant, result in results.items():
            pairs = [result.scores[(method, a, b)] for a, b in PAIRS]
            mean = np.mean([auroc(*s) for s in pairs])
            if variant == "fp32":
                print(f"{method:<14} {variant:<13} {mean:>10.4f}")
                continue
            d = paired_difference(result.tasks(method, PAIRS), results["fp32"].tasks(method, PAIRS))
            worst = max(abs(auroc(*s) - auroc(*r)) for s, r in zip(pairs, reference))
            print(f"{method:<14} {variant:<13} {mean:>10.4f} {d['difference']:>+8.4f} "
                  f"{d['low']:>+9.4f} to {d['high']:>+7.4f} {worst:>13.4f}")


if __name__ == "__main__":
    main()
