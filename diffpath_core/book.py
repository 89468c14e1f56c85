"""Run the book's notebooks with papermill for one profile.

    python -m diffpath_core.book --profile offline            # what `make book` does first
    python -m diffpath_core.book --profile paper --set model=/path/to/celeba.pt

A profile is a YAML file of notebook parameters (``profiles/<name>.yaml``, or a path). Executed
copies go to ``book/generated/`` (the pages jupyter-book builds); tables and figures to the
profile's ``results_dir``. For the paper profile, missing datasets or checkpoints stop the run
before any notebook starts, with one message listing what to get and where to put it.

Pages show results, not machinery: the kernels run with progress bars off (``DIFFPATH_PROGRESS=0``), and
whatever a cell still writes to stderr (a library's warning) is taken out of the page and printed in this
runner's log instead, with the notebook and cell it came from.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import yaml

from .notebook import ROOT
from .progress import PROGRESS_ENV
from .store import atomic_path

NOTEBOOKS = ("00_quickstart", "01_base_model", "02_trajectories", "03_main_results", "04_ablations",
             "05_paper_comparison", "06_one_class", "07_anomaly_maps", "intro")  # intro last: it reads the others
REPOSITORY_ENV = "DIFFPATH_REPOSITORY_URL"
GENERATED = ROOT / "book" / "generated"


def repository_url() -> str:
    """The book's repository address: ``$DIFFPATH_REPOSITORY_URL`` (the publishing workflow sets it), else
    ``repository.url`` of ``_config.yml``; "" when neither is set."""
    if os.environ.get(REPOSITORY_ENV):
        return os.environ[REPOSITORY_ENV]
    config = yaml.safe_load((ROOT / "_config.yml").read_text()) or {}
    return str((config.get("repository") or {}).get("url") or "")


def load_profile(name_or_path: str, overrides: dict | None = None) -> dict:
    path = Path(name_or_path)
    if not path.suffix:
        path = ROOT / "profiles" / f"{name_or_path}.yaml"
    if not path.exists():
        known = ", ".join(p.stem for p in sorted((ROOT / "profiles").glob("*.yaml")))
        raise SystemExit(f"profile {name_or_path!r} not found (known: {known})")
    params = yaml.safe_load(path.read_text())
    params.setdefault("repository", repository_url())  # for runs without the package installed (Colab)
    params.update(overrides or {})
    return params


def preflight(params: dict) -> list[str]:
    """Everything the profile needs that is not here, as one line each (checked before any work)."""
    from .datasets import check_available, source_problem

    names = (list(params.get("datasets", [])) + [n for pair in params.get("extra_pairs", []) for n in pair]
             + [task["dataset"] for task in params.get("one_class", [])])
    problems = [problem for n in dict.fromkeys(names) for problem in [source_problem(n)] if problem]
    problems += check_available(dict.fromkeys(names))
    if params.get("profile") == "paper" and str(params.get("device", "auto")) == "auto":
        import torch

        if not torch.cuda.is_available():
            problems.append("device: the paper profile would run on the CPU (no CUDA device usable by the installed "
                            f"torch {torch.__version__}): a day or more. Install a CUDA build of torch, or pass "
                            "--set device=cpu to run on the CPU on purpose")
    problem = model_problem(params, "model")  # the second base model is optional: its section says it was skipped
    return problems + ([problem] if problem else [])


def model_problem(params: dict, key: str) -> str | None:
    """One line if the profile's ``key`` model ("model" or "second_model") is a checkpoint or name not found
    here; ``None`` if it is there, or a hub id (which only loading, online, can check)."""
    from .models import shipped_models
    from .notebook import project_path

    spec = str(params.get(key) or "")
    if not spec or spec in shipped_models() or project_path(spec).exists():
        return None
    if Path(spec).suffix:
        return (f"{key}: checkpoint {spec} not found; see README 'Paper profile' for where the authors publish it, "
                f"then pass --set {key}=/path/to/file")
    if "/" not in spec:
        return f"{key}: {spec!r} is not a shipped model (shipped: {', '.join(shipped_models())})"
    return None


def run(params: dict, only=None, output_dir: Path = GENERATED, log=print) -> list[Path]:
    import papermill

    problems = preflight(params)
    if problems:
        raise SystemExit("cannot run profile {!r}; nothing was computed:\n  - {}".format(
            params.get("profile"), "\n  - ".join(problems)))
    skipped = model_problem(params, "second_model")
    if skipped:
        log(f"note: the base-model comparison of 04_ablations is skipped ({skipped})")
    unknown = sorted(set(only or ()) - set(NOTEBOOKS))
    if unknown:
        raise SystemExit(f"unknown notebook(s) {', '.join(unknown)}; known: {', '.join(NOTEBOOKS)}")
    names = [n for n in NOTEBOOKS if not only or n in only]
    declared = {n: set(papermill.inspect_notebook(str(ROOT / "notebooks" / f"{n}.ipynb"))) for n in NOTEBOOKS}
    unused = sorted(set(params) - set().union(*declared.values()))
    if unused:  # a misspelt --set would otherwise be dropped without a word
        raise SystemExit(f"parameter(s) {', '.join(unused)} are read by none of the notebooks; nothing was computed")
    output_dir.mkdir(parents=True, exist_ok=True)
    written = []
    previous = os.environ.get(PROGRESS_ENV)
    os.environ[PROGRESS_ENV] = "0"  # inherited by the kernels: no progress-bar lines in the pages
    try:
        for name in names:
            t0 = time.perf_counter()
            out = output_dir / f"{name}.ipynb"
            with atomic_path(out, keep_suffix=True) as tmp:  # a page is replaced only by a finished run
                papermill.execute_notebook(str(ROOT / "notebooks" / f"{name}.ipynb"), str(tmp),
                                           parameters={k: v for k, v in params.items() if k in declared[name]},
                                           kernel_name="python3", cwd=str(ROOT), progress_bar=False,
                                           log_output=False)
                for line in _tidy_for_the_page(tmp):
                    log(f"{name}: {line}")
            written.append(out)
            log(f"{name}: {time.perf_counter() - t0:.1f} s")
    finally:
        if previous is None:
            os.environ.pop(PROGRESS_ENV, None)
        else:
            os.environ[PROGRESS_ENV] = previous
    return written


def _tidy_for_the_page(path: Path) -> list[str]:
    """Fold papermill's injected-parameters cell; move stderr out of the page. Returns the stderr lines."""
    import nbformat

    nb = nbformat.read(path, as_version=4)
    moved = []
    for index, cell in enumerate(nb.cells):
        tags = cell.metadata.setdefault("tags", [])
        if "injected-parameters" in tags and "hide-cell" not in tags:
            tags.append("hide-cell")
        if cell.cell_type != "code":
            continue
        kept = []
        for output in cell.get("outputs", []):
            if output.get("output_type") == "stream" and output.get("name") == "stderr":
                moved += [f"stderr of cell {index}: {line}" for line in output.get("text", "").splitlines() if line]
            else:
                kept.append(output)
        cell["outputs"] = kept
    nbformat.write(nb, path)
    return moved


def _parse_set(items) -> dict:
    out = {}
    for item in items or []:
        key, _, value = item.partition("=")
        out[key] = yaml.safe_load(value)
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--profile", default="offline", help="profile name in profiles/ or a YAML path")
    p.add_argument("--only", nargs="+", help="run only these notebooks")
    p.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE", help="override profile parameters")
    args = p.parse_args(argv)
    params = load_profile(args.profile, _parse_set(args.set))
    t0 = time.perf_counter()
    run(params, args.only)
    print(f"all notebooks: {time.perf_counter() - t0:.1f} s (profile {params['profile']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
