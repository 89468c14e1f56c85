"""The ``diffpath`` command: features, evaluate, select, train, and listings of datasets and models."""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

DESCRIPTION = """\
Zero-shot anomaly detection with one pretrained diffusion model (DiffPath, DiffPathV2).

Each image is pushed along the model's deterministic DDIM path towards noise; statistics of that
path are features; a density fitted on in-distribution (ID) training features scores test images
(higher = more in-distribution). Nothing is retrained per dataset.

Typical use, on the embedded Fashion-MNIST model, CPU, a few minutes:
  diffpath evaluate --datasets fashion_mnist digits glyphs --pair fmnist_tops:fmnist_footwear
  diffpath evaluate --id fashion_mnist --ood path/to/my_images --resize
  diffpath features digits --split test --out digits_stats.npz
  torchrun --nproc_per_node=2 -m diffpath_core.cli features cifar10 --split train   (sharded)

Sources are registered dataset names (see `diffpath datasets`) or folders of images.
Models are shipped names (see `diffpath models`), diffusers folders / hub ids, or
improved-diffusion checkpoints (.pt) with --model-config celeba32|imagenet64.
"""


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="fashion_mnist",
                   help="shipped model name, diffusers folder or hub id, or checkpoint file (default: %(default)s)")
    p.add_argument("--model-config", default=None,
                   help="for checkpoint files: improved-diffusion preset (celeba32, imagenet64) or a JSON file")
    p.add_argument("--device", default="auto", help="auto (cuda if present, else cpu), cpu, cuda, cuda:1 …")
    p.add_argument("-k", "--steps", type=int, default=10, dest="k", help="trajectory steps K (default: %(default)s)")
    p.add_argument("--batch-size", type=int, default=64, help="images per network call (default: %(default)s)")
    p.add_argument("--precision", default="fp32", choices=_Listed("trajectory", "PRECISIONS"), metavar="PRECISION",
                   help="network precision: fp32 (exact; TF32 off on GPUs), tf32 (TF32 matmuls on Ampere+ GPUs), "
                        "bf16/fp16 autocast (faster on GPU); each has cache entries of its own")
    p.add_argument("--channels-last", action="store_true",
                   help="channels_last memory format for the network's weights and inputs, on every device (faster "
                        "on recent GPUs); other kernels, other rounding: cached apart from NCHW")
    p.add_argument("--compile", action="store_true",
                   help="run the network through torch.compile, in the chosen precision: one graph per batch shape, "
                        "precision and layout (about half a minute each on a CPU, which needs a C++ compiler); "
                        "features are cached apart from eager ones")
    p.add_argument("--cache-dir", default="cache", help="feature cache folder (default: %(default)s)")
    p.add_argument("--resize", action="store_true", help="resize folder images to the model's size")
    p.add_argument("--convert-channels", action="store_true", help="convert grey↔RGB folder images")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def _bits_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--bits", type=int, default=None, metavar="N",
                   help="folder images: the 16-bit files hold N-bit values (e.g. 12 for 12-bit data in 16-bit files); "
                        "scale them by 2^N-1 instead of 65535 (8-bit files are unaffected)")


class _Listed:
    """The choices of an option, read from the module that keeps the list when first asked for (a value to check,
    or the sub-command's help), so building the parser imports nothing."""

    def __init__(self, module: str, *lists: str):
        self.module, self.lists, self._names = module, lists, None

    def names(self) -> tuple[str, ...]:
        if self._names is None:
            import importlib

            module = importlib.import_module(f"{__package__}.{self.module}")
            self._names = tuple(n for name in self.lists for n in getattr(module, name))
        return self._names

    def __contains__(self, value) -> bool:
        return value in self.names()

    def __iter__(self):
        return iter(self.names())


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage mistake is one line (and exit status 2), pointing at --help."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    from . import methods as names  # the method names, without importing torch
    parser = OneLineParser(prog="diffpath", description=DESCRIPTION,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--debug", action="store_true", help="show the full traceback of an error")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    f = sub.add_parser("features", help="compute (and cache) path statistics and features of one image set")
    f.add_argument("source", help="dataset name or folder of images")
    f.add_argument("--split", default="test", choices=("train", "test"))
    f.add_argument("--limit", type=int, default=None, help="use at most this many images (random, seeded)")
    f.add_argument("--out", default=None, help="write statistics and features to this .npz")
    f.add_argument("--chunk-size", type=int, default=256,
                   help="images per cache chunk, the unit of resumption and of sharding (default: %(default)s)")
    _bits_option(f)
    _common(f)

    e = sub.add_parser("evaluate", help="fit on ID train, score ID test and OOD test sets; print AUROC / FPR95")
    e.add_argument("--datasets", nargs="+", default=[], help="evaluate every ordered pair of these")
    e.add_argument("--id", dest="id_set", default=None, help="one ID dataset (with --ood)")
    e.add_argument("--ood", nargs="+", default=[], help="OOD datasets or folders for --id")
    e.add_argument("--id-test", default=None, metavar="FOLDER",
                   help="folder of ID test images for a folder --id (then --id trains on all its images); "
                        "without it a folder --id is split into disjoint halves, ID-train and ID-test (seeded)")
    e.add_argument("--pair", nargs="+", default=[], metavar="ID:OOD", help="extra pairs, e.g. fmnist_tops:fmnist_footwear")
    e.add_argument("--methods", nargs="+", default=list(names.METHODS + names.VARIANTS), metavar="METHOD",
                   choices=_Listed("evaluate", "METHODS", "VARIANTS", "BASELINES"),
                   help=f"{' '.join(names.METHODS)} (the published methods), {' '.join(names.VARIANTS)} (this "
                        "project's: a per-step formulation and a spatial detector), and the baselines "
                        "Reconstruction, 'Border mean'; default: the published methods and this project's")
    e.add_argument("--density", default="compact", choices=_Listed("detectors", "DENSITIES"),
                   help="density setting: 'compact' grid (fast, small ID sets) or DiffPath's own 'reference' grid "
                        "(GMM 50/100 components × 4 covariance types, 10-fold CV; KDE bandwidth 5)")
    e.add_argument("--n-train", type=int, default=2000, help="ID training images per set (default: %(default)s)")
    e.add_argument("--n-test", type=int, default=1000, help="test images per set (default: %(default)s)")
    e.add_argument("--seed", type=int, default=0)
    e.add_argument("--allow-overlap", action="store_true",
                   help="go on when ID-train, ID-test and an OOD set share identical images (compared by content); "
                        "without it that is an error naming them. Allowed overlaps are counted in the output")
    e.add_argument("--out", default=None, help="write the full table (all metrics) as CSV")
    _bits_option(e)
    _common(e)

    for command, what in (("select", "DiffPathV2's open switches (and this project's variants)"),
                          ("select-spatial", "the candidates of this project's spatial detector (SpatialPath)")):
        s = sub.add_parser(command, help=f"rank {what} on the validation protocol (ID data only)")
        s.add_argument("--id", dest="id_set", default="fashion_mnist")
        s.add_argument("--n-train", type=int, default=2000)
        s.add_argument("--density", default="compact", choices=_Listed("detectors", "DENSITIES"))
        s.add_argument("--out", default=None, help="write the ranking as CSV")
        _bits_option(s)
        _common(s)

    sm = sub.add_parser("select-maps", help="rank the anomaly-map forms of each method on ID images and synthetic "
                                           "validation defects (ID data only)")
    sm.add_argument("--id", dest="id_set", default="fashion_mnist")
    sm.add_argument("--n-train", type=int, default=1300, help="ID training images: 60%% reference, the rest "
                                                             "(at most 300) validation (default: %(default)s)")
    sm.add_argument("--out", default=None, help="write the ranking as CSV")
    _bits_option(sm)
    _common(sm)

    mp = sub.add_parser("maps", help="anomaly maps of images: where in each image the anomaly is")
    mp.add_argument("--id", dest="id_set", required=True, help="ID dataset or folder of normal images to fit on")
    mp.add_argument("--images", required=True, help="dataset name or folder of images to map")
    mp.add_argument("--out", required=True, help="folder for one overlay PNG per image and maps.csv")
    mp.add_argument("--method", default="DiffPathV2", choices=_Listed("evaluate", "METHODS", "VARIANTS"),
                    metavar="METHOD", help="whose map: %(choices)s (DiffPath-1D and -6D share DiffPath's map; "
                                           "default: %(default)s)")
    mp.add_argument("--defects", default=None, metavar="KIND", choices=_Listed("datasets.defects", "DEFECT_KINDS"),
                    help="put a synthetic defect of this kind into each image first and write its mask too "
                         "(%(choices)s)")
    mp.add_argument("--n-train", type=int, default=2000, help="ID training images (default: %(default)s)")
    mp.add_argument("--limit", type=int, default=None, help="map at most this many images (random, seeded)")
    mp.add_argument("--seed", type=int, default=0)
    _bits_option(mp)
    _common(mp)

    t = sub.add_parser("train", help="train a base diffusion model (resumes from --run-dir)")
    t.add_argument("--dataset", default="fashion_mnist_full")
    t.add_argument("--run-dir", required=True, help="checkpoints go here; rerun to resume")
    t.add_argument("--export", default=None, help="folder for the finished model (diffusers layout)")
    t.add_argument("--train-steps", type=int, default=4000)
    t.add_argument("--train-batch", type=int, default=64)
    t.add_argument("--lr", type=float, default=5e-4)
    t.add_argument("--channels", type=int, nargs="+", default=[32, 64, 64], help="UNet block widths")
    t.add_argument("--layers-per-block", type=int, default=1)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--device", default="auto")
    t.add_argument("--quiet", action="store_true")

    d = sub.add_parser("download", help="download paper datasets into the data folder (needs internet)")
    d.add_argument("names", nargs="+", help="cifar10 cifar100 svhn textures tinyimagenet (CelebA is manual)")
    d.add_argument("--data-dir", default=None, help="default: $DIFFPATH_DATA or ~/.cache/diffpath/datasets")

    sub.add_parser("datasets", help="list registered datasets")
    sub.add_parser("models", help="list shipped base models")
    return parser


def _model(args):
    import torch

    from .models import load_model

    model = load_model(args.model, device=args.device, config=args.model_config)
    if args.channels_last:
        model.unet.to(memory_format=torch.channels_last)
    return model


def _extraction(args, model):
    """The one :class:`Extraction` a command's options describe (the compiled network for --compile)."""
    from .extraction import CHUNK_SIZE, Extraction
    from .runtime import CompiledNetwork

    network = CompiledNetwork(model) if args.compile else None
    return Extraction(model, k=args.k, precision=args.precision, network=network, batch_size=args.batch_size,
                      cache_dir=args.cache_dir, progress=not args.quiet,
                      chunk_size=getattr(args, "chunk_size", CHUNK_SIZE))


def cmd_features(args) -> int:
    from . import distributed
    from .api import DiffPathV2
    from .datasets import folder_summary, is_folder_source, load_images
    from .features import diffpath_statistics

    rank, world, device = distributed.setup(args.device)  # under torchrun: one shard per process / GPU
    args.device = device if world > 1 else args.device
    model = _model(args)
    images = load_images(args.source, None if is_folder_source(args.source) else args.split, size=model.image_size,
                         channels=model.in_channels, limit=args.limit, resize_images=args.resize,
                         convert=args.convert_channels, bits=args.bits)
    if folder_summary(images):
        print(folder_summary(images), file=sys.stderr)
    v2_detector = DiffPathV2()
    readings = tuple(dict.fromkeys(("path",) + v2_detector.readings))  # "path" holds DiffPath's statistics
    stats = distributed.path_statistics(_extraction(args, model), images, readings)
    distributed.teardown()
    if rank != 0:
        return 0
    twelve = diffpath_statistics(stats)
    v2 = v2_detector.features_from_statistics(stats)
    print(f"{len(images)} images of {images.name} ({images.split}); model {model.describe()}; K={args.k}"
          + (f"; {world} processes" if world > 1 else ""))
    for name in ("eps_sum_sq_sqrt", "deps_dt_sq_sqrt"):
        print(f"  {name:>16}: mean {twelve[name].mean():.4g}, std {twelve[name].std():.4g}")
    print(f"  DiffPathV2 features ({v2_detector.form.label()}): {v2.shape[1]} per image")
    if args.out:
        from .store import atomic_savez

        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        atomic_savez(out, {**{f"path_{k}": v for k, v in stats.items()}, **twelve, "diffpathv2": v2})
        print(f"wrote {out}")
    return 0


def cmd_evaluate(args) -> int:
    from .evaluate import Evaluation, ordered_pairs, parse_pair

    pairs = ordered_pairs(args.datasets) + [parse_pair(p) for p in args.pair]
    if args.id_set:
        if not args.ood:
            raise UsageError("--id needs --ood (one or more OOD datasets or folders)")
        pairs += [(args.id_set, o) for o in args.ood]
    if args.id_test and not args.id_set:
        raise UsageError("--id-test goes with --id")
    if not pairs:
        raise UsageError("nothing to do; give --datasets A B …, --id A --ood B …, or --pair A:B")
    check_sources([s for pair in pairs for s in pair] + ([args.id_test] if args.id_test else []))
    model = _model(args)
    print(f"model: {model.describe()} on {model.device}; K={args.k}; {len(pairs)} pair(s); "
          f"up to {args.n_train} ID-train / {args.n_test} test images per set", file=sys.stderr)
    ev = Evaluation(_extraction(args, model), n_train=args.n_train, n_test=args.n_test, seed=args.seed,
                    resize=args.resize, convert=args.convert_channels, density=args.density,
                    id_test={args.id_set: args.id_test} if args.id_test else None, allow_overlap=args.allow_overlap,
                    bits=args.bits)
    t0 = time.perf_counter()
    result = ev.run(pairs, args.methods)
    for note in result.notes:
        print(f"note: {note}")
    print(f"\nAUROC (higher is better) [95% interval: stratified bootstrap over images, {result.n_boot} resamples, "
          "seed 0; each test set resampled once per draw, whichever pairs share it]\n" + result.table("auroc"))
    print("\nFPR at 95% TPR (lower is better)\n" + result.table("fpr95"))
    print(f"\n{time.perf_counter() - t0:.1f} s in all; density setting {args.density!r}, hyper-parameters chosen "
          "by cross-validation on ID training features only")
    if args.out:
        result.write_csv(args.out)
        print(f"wrote {args.out}")
    return 0


def _ranked_selection(args, select, family: str, who: str) -> int:
    """Run a selection protocol on the ID set's training images and print its ranking, marking the chosen row
    and the candidates of ``family`` tied with the best; with ``--out`` write the rows as CSV."""
    from .datasets import load_images
    from .evaluate import write_rows_csv

    model = _model(args)
    train = load_images(args.id_set, "train", size=model.image_size, channels=model.in_channels, limit=args.n_train,
                        resize_images=args.resize, convert=args.convert_channels, bits=args.bits)
    rows = select(_extraction(args, model), train, density=args.density)
    print(f"{'rank':>4}  {'mean AUROC (95% interval)':>26}  {'lead of best':>12}  {'':<6}  candidate")
    for i, r in enumerate(rows, 1):
        mark = "CHOSEN" if r["chosen"] else ("tied" if r["tied_with_best"] and r["family"] == family else "")
        what = r["label"] if r["family"] == family else f"{r['family']}: {r['label']}"
        print(f"{i:>4}  {r['mean_auroc']:.4f} ({r['mean_low']:.4f}–{r['mean_high']:.4f})  {r['lead_of_best']:>12.4f}  "
              f"{mark:<6}  {what}")
    chosen = next(r for r in rows if r["chosen"])
    print(f"\n{who}'s default: {chosen['label']} (the simplest {family} candidate whose gap to the best is inside the "
          f"95% paired bootstrap interval; {rows[0]['n_fit']} fit, {rows[0]['n_val']} validation and "
          f"{rows[0]['n_held_out']} held-out-class images)")
    if args.out:
        write_rows_csv(rows, args.out)
        print(f"wrote {args.out}")
    return 0


def cmd_select(args) -> int:
    from .validation import select_formulation

    return _ranked_selection(args, select_formulation, "paper form", "DiffPathV2")


def cmd_select_spatial(args) -> int:
    from .validation import select_spatial_form

    return _ranked_selection(args, select_spatial_form, "spatial", "SpatialPath")


def cmd_select_maps(args) -> int:
    from .datasets import load_images
    from .evaluate import write_rows_csv
    from .validation import select_map_forms

    model = _model(args)
    train = load_images(args.id_set, "train", size=model.image_size, channels=model.in_channels, limit=args.n_train,
                        resize_images=args.resize, convert=args.convert_channels, bits=args.bits)
    rows = select_map_forms(_extraction(args, model), train)
    for family in dict.fromkeys(r["family"] for r in rows):
        mine = [r for r in rows if r["family"] == family]
        chosen = next((r for r in mine if r["chosen"]), None)
        print(f"{family}: best {mine[0]['label']} ({mine[0]['mean_pixel_auroc']:.4f}); "
              + (f"default {chosen['label']} ({chosen['mean_pixel_auroc']:.4f})" if chosen else "an ablation family"))
    if args.out:
        write_rows_csv(rows, args.out)
        print(f"wrote {args.out}")
    return 0


OVERLAY_BATCH = 256  # images converted at a time for the overlays: linear work, bounded memory


def overlay_names(images, defects: str | None = None) -> list[str]:
    """A readable name per image, unique within the set, for its overlay file and its row of maps.csv: a folder's
    file by its path under the folder without the suffix (``a/x.png`` and ``b/x.png`` give ``a/x`` and ``b/x``,
    overlays in matching subfolders; ``x.png`` beside ``x.jpg`` keep their suffixes, ``x_png`` and ``x_jpg``), a
    registered dataset's image by split and index (``fashion_mnist_test_12``); ``-KIND`` appended for defects."""
    from collections import Counter
    from pathlib import PurePosixPath

    from .datasets import item_names

    files = images.meta.get("files")
    if files is None:
        wanted = list(item_names(images))
    else:
        stems = [PurePosixPath(f).with_suffix("").as_posix() for f in files]
        repeated = Counter(stems)
        wanted = [s if repeated[s] == 1 else f"{s}_{PurePosixPath(f).suffix.lstrip('.')}" for f, s in zip(files, stems)]
    suffix = "" if defects is None else "-" + defects.replace(":", "-")
    names, taken = [], set()
    for name in (w.replace(" ", "_").replace("#", "") + suffix for w in wanted):
        unique, k = name, 2
        while unique in taken:  # only names that differed by spaces or '#' can still meet here
            unique, k = f"{name}-{k}", k + 1
        taken.add(unique)
        names.append(unique)
    return names


def cmd_maps(args) -> int:
    import numpy as np

    from .datasets import is_folder_source, load_images
    from .datasets.defects import make_defects
    from .evaluate import make_method, write_rows_csv
    from .metrics import aupro, pixel_auroc
    from .plots import save_overlay
    from .progress import progress_bar

    check_sources([args.id_set, args.images])
    model = _model(args)
    common = dict(size=model.image_size, channels=model.in_channels, resize_images=args.resize,
                  convert=args.convert_channels, seed=args.seed, bits=args.bits)
    train = load_images(args.id_set, None if is_folder_source(args.id_set) else "train", limit=args.n_train, **common)
    images = load_images(args.images, None if is_folder_source(args.images) else "test", limit=args.limit, **common)
    names = overlay_names(images, args.defects)
    files = [Path(images.meta["root"]) / f for f in images.meta["files"]] if "root" in images.meta else None
    masks = None
    if args.defects:  # the defective images exist at the model's size only: overlays are drawn there
        defects = make_defects(images.images, args.defects, seed=args.seed, source=images.name)
        images, masks, files = defects.as_image_set(), defects.masks.numpy(), None
    det = make_method(args.method)
    det.model = _extraction(args, model)
    det.fit(train)
    scores, maps = det.score_and_maps(images)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    shown = maps.original if maps.original is not None else list(maps.maps)

    def each_image():  # converted a batch at a time: each image once, never the whole set per image
        for lo in range(0, len(images), OVERLAY_BATCH):
            yield from enumerate(images.batch(lo, lo + OVERLAY_BATCH), start=lo)

    rows = []
    for i, image in progress_bar(each_image(), total=len(images), desc="overlays", unit="image",
                                 progress=not args.quiet):
        overlay = f"{names[i]}_map.png"
        (out / overlay).parent.mkdir(parents=True, exist_ok=True)
        save_overlay(image, shown[i], out / overlay, source_file=None if files is None else files[i],
                     mask=None if masks is None else masks[i], title=f"{names[i]}: score {scores[i]:.2f}")
        rows.append({"image": names[i], "score": float(scores[i]), "map_max": float(maps.maps[i].max()),
                     "map_mean": float(maps.maps[i].mean()), "overlay": overlay})
    write_rows_csv(rows, out / "maps.csv")
    np.save(out / "maps.npy", maps.maps)
    print(f"{len(rows)} overlays and maps.csv in {out}; map {maps.form.label()}; {det.name} fitted on {len(train)} "
          f"images of {train.name} (score: log-likelihood, higher = more normal; map: higher = more anomalous)")
    if masks is not None:
        print(f"pixel AUROC {pixel_auroc(maps.maps, masks):.3f}, AUPRO {aupro(maps.maps, masks):.3f} "
              f"({args.defects} defects, {len(images)} images)")
    return 0


def cmd_train(args) -> int:
    from .train import TrainConfig, train

    cfg = TrainConfig(dataset=args.dataset, block_out_channels=tuple(args.channels),
                      layers_per_block=args.layers_per_block, steps=args.train_steps,
                      batch_size=args.train_batch, lr=args.lr, seed=args.seed)
    ckpt = train(cfg, args.run_dir, export_dir=args.export, device=args.device, progress=not args.quiet)
    print(f"checkpoint: {ckpt}" + (f"; model exported to {args.export}" if args.export else ""))
    return 0


def cmd_download(args) -> int:
    from .datasets.paper import SOURCES, ensure

    for name in args.names:
        if name not in SOURCES:
            raise UsageError(f"unknown paper dataset {name!r}; known: {', '.join(SOURCES)}")
        print(f"{name}: {ensure(name, args.data_dir, download=True)}")
    return 0


def cmd_datasets(args) -> int:
    from .datasets import DATASETS

    for name, spec in sorted(DATASETS.items()):
        print(f"{name:<20} [{spec.profile}] {spec.description}")
    return 0


def cmd_models(args) -> int:
    from .models import PROJECT_MODELS, shipped_models

    for name in shipped_models():
        rec = PROJECT_MODELS / name / "training_record.json"
        info = json.loads(rec.read_text()) if rec.exists() else {}
        print(f"{name:<16} trained on {info.get('dataset', '?')}, {info.get('steps', '?')} steps, "
              f"{info.get('parameters', 0) / 1e6:.2f}M parameters")
    return 0


class UsageError(Exception):
    """A mistake in how the command was called (the message says what to give instead)."""


def check_sources(sources) -> None:
    """Every source is a registered dataset or an existing folder, before any work."""
    from .datasets import source_problem

    for source in dict.fromkeys(sources):
        problem = source_problem(source)
        if problem:
            raise UsageError(problem)


def main(argv=None) -> int:
    """Run one command. Mistakes print one line naming the problem and return 2; --debug shows the traceback."""
    from .errors import DiffPathError

    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    handler = {"features": cmd_features, "evaluate": cmd_evaluate, "select": cmd_select,
               "select-spatial": cmd_select_spatial, "select-maps": cmd_select_maps, "maps": cmd_maps,
               "train": cmd_train,
               "download": cmd_download, "datasets": cmd_datasets, "models": cmd_models}[args.command]
    try:
        return handler(args)
    except (DiffPathError, UsageError, ValueError, KeyError, FileNotFoundError, RuntimeError) as exc:
        if args.debug:
            raise
        message = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"diffpath: error: {message}" + ("" if isinstance(exc, (DiffPathError, UsageError))
                                               else f" ({type(exc).__name__}; --debug shows where)"), file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
