"""A dress rehearsal of the paper profile: fake datasets in each paper dataset's real format, random-weight
checkpoints saved as the official code saves them, the real book runner with tiny sizes, and the pages built.

Everything the real profile computes appears: both published protocols' tables with every task and the
published numbers beside this book's columns, the one-class protocol on CIFAR-10, anomaly maps, and the second
base model's comparison. The networks are the presets' architectures at a small width (``model_config`` JSON
files, loaded and converted by the real code); the full-size presets are loaded in
``tests/test_reference_vectors.py``.
"""
import csv
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from diffpath_core.book import ROOT, load_profile, run
from paper_fakes import write_checkpoint, write_paper_datasets

pytestmark = pytest.mark.slow

# Tiny sizes, on the CPU: fp32 and no compilation there (bf16 autocast on a CPU without bf16 units is slower than
# fp32 by an order of magnitude, and compiling costs a C++ build); the GPU defaults' own code paths are tested in
# tests/test_runtime.py and tests/test_cache_resume.py.
TINY = dict(n_train=24, n_test=16, n_ablation=24, quick_n=16, k=2, k_values=[2], sample_steps=2, device="cpu",
            one_class_n_train=300, one_class_n_test=40, maps_n_train=24, maps_n_test=8, batch_size=32,
            precision="fp32", compile_network=False, channels_last=False)


@pytest.fixture(scope="module")
def rehearsed(tmp_path_factory):
    site = tmp_path_factory.mktemp("paper_site")
    data = write_paper_datasets(site / "data")
    model, model_config = write_checkpoint(site / "checkpoints", "celeba32", seed=0)
    second, second_config = write_checkpoint(site / "checkpoints", "imagenet64", seed=1)
    for name in ("_config.yml", "_toc.yml"):
        shutil.copy(ROOT / name, site / name)
    shutil.copytree(ROOT / "book", site / "book", ignore=shutil.ignore_patterns("generated"))
    results = site / "results"
    params = load_profile("paper", {**TINY, "model": str(model), "model_config": str(model_config),
                                    "second_model": str(second), "second_model_config": str(second_config),
                                    "results_dir": str(results), "cache_dir": str(site / "cache")})
    monkey = pytest.MonkeyPatch()
    monkey.setenv("DIFFPATH_DATA", str(data))
    t0 = time.perf_counter()
    try:
        run(params, output_dir=site / "book" / "generated", log=lambda *_: None)
    finally:
        monkey.undo()
    seconds = time.perf_counter() - t0
    build = subprocess.run([str(Path(sys.executable).parent / "jupyter-book"), "build", str(site),
                            "--warningiserror", "--keep-going", "--quiet"], capture_output=True, text=True)
    assert build.returncode == 0, build.stdout[-4000:] + build.stderr[-4000:]
    print(f"\npaper-profile rehearsal: notebooks {seconds:.0f} s")
    return site, results


def _rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_every_notebook_ran_and_every_page_built(rehearsed):
    site, _ = rehearsed
    for page in ("intro", "00_quickstart", "01_base_model", "02_trajectories", "03_main_results", "04_ablations",
                 "05_paper_comparison", "06_one_class", "07_anomaly_maps"):
        nb = (site / "book" / "generated" / f"{page}.ipynb").read_text()
        assert '"output_type": "error"' not in nb, page
        assert (site / "_build" / "html" / "book" / "generated" / f"{page}.html").exists(), page


def test_both_protocols_every_task_with_published_numbers_beside(rehearsed):
    _, results = rehearsed
    rows = _rows(results / "main_results.csv")
    pairs = {(r["id"], r["ood"]) for r in rows}
    eigenscore = {(a, b) for a in ("cifar10", "svhn", "celeba", "cifar100")
                  for b in ("cifar10", "svhn", "celeba", "cifar100") if a != b}
    diffpath = {(a, b) for a in ("cifar10", "svhn", "celeba")
                for b in ("cifar10", "svhn", "celeba", "cifar100", "textures") if a != b}
    assert eigenscore <= pairs and diffpath <= pairs and len(diffpath) == 12
    assert all(float(r["auroc_low"]) <= float(r["auroc"]) <= float(r["auroc_high"]) for r in rows)
    for table in ("published_diffpath_protocol.csv", "published_auroc_table.csv"):
        table_rows = _rows(results / table)
        ours = [c for c in table_rows[0] if c.startswith("this book: ")]
        assert {"this book: DiffPath-6D", "this book: DiffPathV2"} <= set(ours), table
        tasks = [r for r in table_rows if r["ID → OOD"] != "average"]
        assert len(tasks) == 12, table
        for r in tasks:
            assert all(r[c] not in ("", "nan") for c in ours), (table, r["ID → OOD"])
            assert any(r[c] not in ("", "nan") for c in table_rows[0] if not c.startswith("this book")
                       and c != "ID → OOD"), "published numbers beside"


def test_one_class_maps_and_the_second_base_model(rehearsed):
    _, results = rehearsed
    tasks = _rows(results / "one_class_tasks.csv")
    assert {r["dataset"] for r in tasks} == {"cifar10"} and len({r["class"] for r in tasks}) == 10
    assert {r["class_name"] for r in tasks} >= {"airplane", "truck"}
    maps = _rows(results / "maps_metrics.csv")
    assert len({r["defect"] for r in maps}) == 8
    with open(results / "ablation_base_model.csv") as f:
        header = f.readline()
    assert "celeba32_small_random" in header and "imagenet64_small_random" in header
