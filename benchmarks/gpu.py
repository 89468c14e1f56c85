"""The paper profile's network on a GPU: images/s per precision and batch, overhead, memory, FLOP utilisation.

    python benchmarks/gpu.py                              # on a CUDA machine
    python benchmarks/gpu.py --official /path/to/clear-nus/diffpath   # also the official loop, same run
    python benchmarks/gpu.py --device cpu --quick         # the same code paths on a CPU, small

The network is the DiffPath CelebA-32 architecture (the ``celeba32`` preset, 52.5 M parameters) with random
weights, converted exactly as a checkpoint would be. For each setting (fp32 with TF32 off, tf32, bf16, fp16,
bf16 through ``torch.compile``; batch 256 and 1024) and each reading (the DDIM path, and the fresh-noise reading,
whose noise is drawn on the device) it prints images/s of the full extraction (K network passes, trajectory or
noise, statistics), the bare K forward passes in the same precision context, layout and compiled graph, their
ratio (the overhead of everything that is not the network, the fresh reading's noise included), the peak GPU
memory, and the share of the chip's matrix rate the extraction uses (FLOPs per forward counted by
``FlopCounterMode``; the peak rate is ``--peak-tflops``, 800 for an H100's dense bf16 by default, and assumed
equal for every precision, so tf32 and fp32 utilisations are upper bounds). With ``--official`` each batch size
is also timed through the official loop, and "× official" divides by that loop at the same batch size. Prints
figures only; a timing is the fastest of ``--repeats`` runs after a warm-up.
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
from diffpath_core.improved_diffusion import PRESETS, ImprovedDiffusionConfig, build_unet, export_state_dict  # noqa
from diffpath_core.models import DiffusionModel, resolve_device  # noqa: E402
from diffpath_core.runtime import CompiledNetwork, layout_name, memory_format  # noqa: E402
from diffpath_core.trajectory import autocast_context  # noqa: E402

SETTINGS = (("fp32", "fp32", False), ("tf32", "tf32", False), ("bf16", "bf16", False), ("fp16", "fp16", False),
            ("bf16 + compile", "bf16", True))


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def fastest(fn, device, repeats: int) -> float:
    fn()  # warm-up (and compilation)
    times = []
    for _ in range(repeats):
        sync(device)
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t0)
    return min(times)


def network_model(cfg: ImprovedDiffusionConfig, device) -> DiffusionModel:
    torch.manual_seed(0)
    unet = build_unet(cfg).eval()
    model = DiffusionModel(unet, cfg.alphas_cumprod(), cfg.timestep_scale, source={"name": "celeba32 (random)"})
    return model.to(device)


def forward_flops(model: DiffusionModel, x: torch.Tensor) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with torch.inference_mode(), counter:
        model.predict_eps(x[:1], torch.tensor([1.0], device=x.device))
    return float(counter.get_total_flops())


def official_loop(path: Path, model: DiffusionModel, cfg, k: int):
    """The official ``save_train_statistics.py`` work for one batch, ``run(x)``: ddim_reverse_sample_loop, then NumPy
    statistics. The official network gets the same weights (exported to its names), in its own layout (NCHW)."""
    import yaml

    sys.path.insert(0, str(path))
    from improved_diffusion.script_util import create_model_and_diffusion, model_and_diffusion_defaults

    args = model_and_diffusion_defaults()
    args.update(yaml.safe_load((path / "configs" / "celeba_model_config.yaml").read_text()))
    args["timestep_respacing"] = f"ddim{k}"
    args = {key: args[key] for key in model_and_diffusion_defaults()}
    net, diffusion = create_model_and_diffusion(**args)
    device, layout = model.device, memory_format(model)
    net.load_state_dict(export_state_dict(model.unet.cpu(), cfg))
    net = net.to(device).eval()
    model.to(device)
    model.unet.to(memory_format=layout)  # the export's trip through the CPU must not change the layout timed

    def run(x):
        with torch.no_grad():
            _, eps = diffusion.ddim_reverse_sample_loop(net, x.shape, x, clip_denoised=True, model_kwargs=None,
                                                        return_eps=True, return_xt=False)
        eps = np.array([e.cpu().numpy() for e in eps]).transpose(1, 0, 2, 3, 4)
        diff = np.diff(eps, axis=1) * k
        return [np.sum(v ** p, axis=(1, 2, 3, 4)) for v in (eps, diff) for p in (1, 2, 3)]

    return run


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="auto")
    p.add_argument("--quick", action="store_true", help="a small network, batches of 4 and 8, K = 4 (CPU check)")
    p.add_argument("--batches", type=int, nargs="+", default=None, help="default: 256 1024 (quick: 4 8)")
    p.add_argument("-k", type=int, default=None, help="default: 10 (quick: 4)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--peak-tflops", type=float, default=800.0, help="the chip's dense matrix rate (TFLOP/s)")
    p.add_argument("--official", type=Path, default=None, help="a clear-nus/diffpath checkout: time its loop too")
    p.add_argument("--channels-last", action="store_true",
                   help="channels_last network (the paper profile's layout): the extraction's inputs and the bare "
                        "loop's follow it")
    p.add_argument("--readings", nargs="+", default=["path", "fresh"], choices=("path", "fresh"),
                   help="the readings timed (default: both; the fresh reading draws its noise on the device)")
    args = p.parse_args()
    device = resolve_device(args.device)
    cfg = PRESETS["reference_small"] if args.quick else PRESETS["celeba32"]
    batches = args.batches or ([4, 8] if args.quick else [256, 1024])
    args.k = args.k or (4 if args.quick else 10)
    model = network_model(cfg, device)
    if args.channels_last:
        model.unet.to(memory_format=torch.channels_last)
    n_params = sum(q.numel() for q in model.unet.parameters())
    x1 = torch.rand(1, 3, 32, 32, device=device) * 2 - 1
    flops = forward_flops(model, x1)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"{name}; torch {torch.__version__}; network {'reference_small' if args.quick else 'celeba32'} "
          f"({n_params / 1e6:.1f} M parameters, {flops / 1e9:.2f} GFLOP per forward at 32×32); K = {args.k}; "
          f"layout {layout_name(memory_format(model))}; fastest of {args.repeats} after a warm-up\n")
    print(f"{'setting':<22} {'batch':>6} {'images/s':>10} {'bare images/s':>14} {'overhead':>9} "
          f"{'peak memory':>12} {'FLOP use':>9}")
    official = official_loop(args.official, model, cfg, args.k) if args.official is not None else None
    layout = memory_format(model)
    for batch in batches:
        x = torch.rand(batch, 3, 32, 32, generator=torch.Generator().manual_seed(0)).to(device) * 2 - 1
        official_rate = None
        if official is not None:  # at this batch size: "× official" compares like with like
            official_rate = batch / fastest(lambda: official(x), device, args.repeats)
            print(f"{'official loop':<22} {batch:>6} {official_rate:>10.1f} {'':>14} {'':>9} {'':>12} {'':>9}  "
                  "(PyTorch defaults: cuDNN TF32 on, NCHW)")
        for label, precision, compiled in SETTINGS:
            if device.type == "cpu" and precision == "fp16" and not args.quick:
                continue
            network = CompiledNetwork(model) if compiled else None  # one graph per shape, shared with the bare loop
            ex = Extraction(model, k=args.k, precision=precision, network=network, batch_size=batch, progress=False)
            predict = network or model.predict_eps
            steps = model.schedule(args.k).net_timesteps
            with torch.inference_mode():  # what the extraction feeds the network: its layout, an inference tensor
                xb = x.clone(memory_format=layout)

            def bare():
                with torch.inference_mode(), autocast_context(device, precision):
                    for t in steps:
                        predict(xb, torch.full((batch,), float(t), device=device))

            for reading in args.readings:
                name = label if reading == "path" else f"{label} ({reading})"
                try:
                    if device.type == "cuda":
                        torch.cuda.reset_peak_memory_stats(device)
                    full = fastest(lambda: ex.batch_statistics(x, reading), device, args.repeats)
                    memory = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
                    floor = fastest(bare, device, args.repeats)
                except Exception as exc:  # noqa: BLE001 (a setting this machine cannot run is reported, not fatal)
                    print(f"{name:<22} {batch:>6}  failed: {type(exc).__name__}: {exc}")
                    continue
                use = flops * args.k * batch / full / (args.peak_tflops * 1e12)
                versus = f"  {batch / full / official_rate:.2f}× official" if official_rate else ""
                # a CPU has neither a GPU memory counter nor the GPU's matrix rate: those columns say n/a there
                memory_text = f"{memory:>9.2f} GB" if device.type == "cuda" else f"{'n/a':>12}"
                use_text = f"{100 * use:>8.1f}%" if device.type == "cuda" else f"{'n/a':>9}"
                print(f"{name:<22} {batch:>6} {batch / full:>10.1f} {batch / floor:>14.1f} {full / floor:>9.3f} "
                      f"{memory_text} {use_text}{versus}")


if __name__ == "__main__":
    main()
