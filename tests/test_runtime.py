"""Execution options change speed, not results: sharded CPU batches, the compiled network, allocator tuning."""
import os
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from diffpath_core.extraction import Extraction
from diffpath_core.runtime import CompiledNetwork, cpu_workers, run_sharded
from diffpath_core.statistics import path_statistics
from diffpath_core.trajectory import invert


def test_sharded_inversion_equals_one_batch(reference_model, reference):
    x0 = torch.from_numpy(reference["x0"])
    one = invert(reference_model, x0, 10)
    parts = run_sharded(lambda xb: invert(reference_model, xb, 10), x0, 2)  # as the extraction driver shards
    two = SimpleNamespace(**{f: torch.cat([getattr(p, f) for p in parts]) for f in ("x", "eps", "x0_hat", "x_final")})
    assert len(parts) == 2 and two.eps.shape == one.eps.shape == (4, 10, 3, 32, 32)
    # float32 rounding of a different batch shape, amplified in ε at the first (least noisy) steps;
    # the tolerance is the one the official vectors are held to
    for field in ("x", "eps", "x0_hat", "x_final"):
        torch.testing.assert_close(getattr(two, field), getattr(one, field), rtol=0, atol=1e-4, msg=field)
    np.testing.assert_allclose(two.eps.numpy(), reference["eps"], atol=1e-4)


def test_batch_statistics_shard_by_worker_count(tiny_model, tiny_images, monkeypatch):
    """With 3 workers the batch really is cut in 3 single-threaded shards, in order: the result equals, bit for
    bit, the three shards computed one after another here (one thread each), and the one-batch result to
    float32 rounding."""
    import diffpath_core.extraction as extraction

    monkeypatch.setenv("DIFFPATH_CPU_WORKERS", "3")
    assert cpu_workers(torch.device("cpu"), 24) == 3
    assert cpu_workers(torch.device("cpu"), 16) == 2, "shards of fewer than 8 images are not made"
    shards, real = [], extraction.run_sharded

    def spy(fn, x, workers):
        def counted(xb):
            shards.append((len(xb), torch.get_num_threads()))
            return fn(xb)
        return real(counted, x, workers)

    monkeypatch.setattr(extraction, "run_sharded", spy)
    sharded = Extraction(tiny_model, k=3).batch_statistics(tiny_images)
    assert sorted(shards) == [(8, 1)] * 3, "three shards of 8 images, each single-threaded"
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.inference_mode():
            one_by_one = [path_statistics(invert(tiny_model, xb, 3)) for xb in tiny_images.chunk(3)]
    finally:
        torch.set_num_threads(previous)
    with torch.inference_mode():
        whole = path_statistics(invert(tiny_model, tiny_images, 3))
    for key in whole:
        np.testing.assert_array_equal(sharded[key], torch.cat([p[key] for p in one_by_one]).numpy(), err_msg=key)
        # per-step sums where terms cancel (Σ Δε³) are small: their tolerance scales with the largest value
        scale = np.abs(whole[key].numpy()).max()
        np.testing.assert_allclose(sharded[key], whole[key].numpy(), rtol=1e-4, atol=1e-5 * scale, err_msg=key)


def test_run_sharded_restores_threads_and_keeps_order():
    before = torch.get_num_threads()
    seen = []

    def fn(xb):
        seen.append(torch.get_num_threads())
        return xb * 2

    parts = run_sharded(fn, torch.arange(12.0), 3)
    assert torch.equal(torch.cat(parts), torch.arange(12.0) * 2)
    assert seen == [1, 1, 1] and torch.get_num_threads() == before


def test_compiled_network_matches_eager_and_pads(tiny_model):
    net = CompiledNetwork(tiny_model)
    g = torch.Generator().manual_seed(3)
    x = torch.rand(8, 1, 16, 16, generator=g) * 2 - 1
    t = torch.full((8,), 40.0)
    with torch.inference_mode():
        eager = tiny_model.predict_eps(x, t)
        full = net(x, t)
        part = net(x[:5], t[:5])  # padded to the compiled batch of 8: no second compilation
    assert net.batch_size == 8 and net._compiled == {8}
    torch.testing.assert_close(full, eager, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(part, eager[:5], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("setting, expected", [("1", "True"), ("0", "False")])
def test_allocator_tuning_switch(setting, expected):
    if not sys.platform.startswith("linux"):
        pytest.skip("glibc mallopt tuning exists on Linux only")
    out = subprocess.run([sys.executable, "-c", "from diffpath_core.runtime import tune_cpu_allocator as t; "
                          "print(t(), t())"], capture_output=True, text=True, check=True,
                         env={**os.environ, "DIFFPATH_MALLOC_TUNING": setting, "PYTHONPATH": os.getcwd()})
    assert out.stdout.split() == [expected, expected]


def test_cli_compile_caches_apart_and_agrees(tiny_model_dir, tmp_path):
    import json

    from PIL import Image

    from diffpath_core.cli import main

    folder = tmp_path / "images"
    folder.mkdir()
    rng = np.random.default_rng(2)
    for i in range(10):
        Image.fromarray(rng.integers(0, 256, (16, 16), dtype=np.uint8), "L").save(folder / f"{i:02d}.png")
    outs = {}
    for extra in ([], ["--compile"]):
        out = tmp_path / f"features{len(extra)}.npz"
        assert main(["features", str(folder), "--model", str(tiny_model_dir), "-k", "3", "--batch-size", "4",
                     "--cache-dir", str(tmp_path / "cache"), "--out", str(out), "--quiet", *extra]) == 0
        with np.load(out) as d:
            outs[bool(extra)] = d["diffpathv2"]
    metas = [json.loads(p.read_text()) for p in (tmp_path / "cache").glob("*/meta.json")]
    assert sorted(m["settings"].get("network", "eager") for m in metas) == ["eager", "torch.compile"]
    np.testing.assert_allclose(outs[True], outs[False], rtol=1e-3, atol=1e-4)
