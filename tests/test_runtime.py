"""Execution options change speed, not results: sharded CPU batches, the compiled network, allocator tuning."""
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
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
    """Inductor's graph agrees with the eager network, on a full batch and on a short one padded to it."""
    net = CompiledNetwork(tiny_model)
    g = torch.Generator().manual_seed(3)
    x = torch.rand(8, 1, 16, 16, generator=g) * 2 - 1
    t = torch.full((8,), 40.0)
    with torch.inference_mode():
        eager = tiny_model.predict_eps(x, t)
        full = net(x, t)
        part = net(x[:5], t[:5])  # padded to the compiled batch of 8
    assert net.batch_size == 8 and net.cache_tag == "torch.compile"
    torch.testing.assert_close(full, eager, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(part, eager[:5], rtol=1e-4, atol=1e-5)


def _rgb_model(tmp_path, name="rgb"):
    """A model of its own (compiled graphs are kept per model for the process)."""
    from conftest import make_tiny_model_dir

    from diffpath_core.models import load_diffusers

    return load_diffusers(str(make_tiny_model_dir(tmp_path / name, channels=3, size=16)), device="cpu")


@pytest.fixture
def graphs(monkeypatch):
    """Every graph Dynamo hands a backend, as (shape, strides) of its image inputs ((N, 3, 16, 16), not weights).
    Each torch.compile call gets a backend object of its own, as ``backend="inductor"`` does (Dynamo keeps graphs
    per backend object)."""
    import diffpath_core.runtime as runtime

    seen, real = [], torch.compile

    def counting_compile(fn, **kwargs):
        def backend(gm, example_inputs):
            seen.append([(tuple(a.shape), a.stride()) for a in example_inputs
                         if isinstance(a, torch.Tensor) and a.dim() == 4 and tuple(a.shape[1:]) == (3, 16, 16)])
            return gm.forward

        return real(fn, **{**kwargs, "backend": backend})

    monkeypatch.setattr(torch, "compile", counting_compile)
    monkeypatch.setattr(runtime, "_graphs", {})  # no graphs of other tests' models
    monkeypatch.setenv("DIFFPATH_CPU_WORKERS", "2")
    return seen


@pytest.mark.parametrize("channels_last, strides", [(True, (768, 1, 48, 3)), (False, (768, 256, 16, 1))])
def test_one_graph_per_batch_shape_in_a_notebook_sized_run(tmp_path, graphs, channels_last, strides):
    """The paper profile's settings (bf16 autocast, compiled, channels_last, or NCHW) through the notebooks' own
    path: two extractions of one model, three sets, both readings, short last batches. Every batch of 16 is two
    shards of 8 and every short one is padded to 8 in the batch's layout: one graph in all. Fails with the padding
    made by ``torch.cat`` (NCHW: a second graph at the same shape), with a torch.compile per CompiledNetwork, with
    a short batch run at another thread count, or with the first step's input not an inference tensor (NCHW)."""
    from diffpath_core.notebook import Session

    model = _rgb_model(tmp_path)
    session = Session(model, tmp_path / "results", tmp_path / "cache",
                      run=dict(precision="bf16", batch_size=16, compile_network=True, channels_last=channels_last))
    g = torch.Generator().manual_seed(0)
    sets = {n: torch.rand(n, 3, 16, 16, generator=g) * 2 - 1 for n in (40, 20, 9)}  # last batches: 8, 4, 9
    first, second = session.extraction(k=2, progress=False), session.extraction(k=3, progress=False)
    for n, x in sets.items():
        first.statistics(x, ("path", "fresh"))
        second.statistics(x, "path")
    assert graphs == [[((8, 3, 16, 16), strides)]], "one graph: a batch of 8 images in the model's layout"
    assert first.settings()["network"] == "torch.compile"
    assert first.settings().get("layout", "nchw") == ("channels_last" if channels_last else "nchw")


def _layouts_seen(model, **run):
    """The layout of every input the network gets in both readings through a notebook's extraction, on the CPU."""
    from diffpath_core.notebook import Session

    seen = []

    def record(module, args, kwargs):
        x = args[0] if args else kwargs["sample"]
        seen.append("channels_last" if not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last)
                    else "nchw" if x.is_contiguous() else "other")

    handle = model.unet.register_forward_pre_hook(record, with_kwargs=True)
    try:
        ex = Session(model, Path("."), Path("."), run=dict(batch_size=4, **run)).extraction(k=2, progress=False)
        ex = replace(ex, cache_dir=None)
        ex.statistics(torch.rand(6, 3, 16, 16) * 2 - 1, ("path", "fresh"))
    finally:
        handle.remove()
    return ex, set(seen), len(seen)


def test_channels_last_means_what_it_says(tmp_path):
    """Off, the network sees NCHW inputs and weights on the CPU exactly as on a GPU; on, NHWC inputs and weights:
    never a mix of the two. The layout is part of the cache key when channels_last."""
    model = _rgb_model(tmp_path)
    off, seen, calls = _layouts_seen(model, channels_last=False)
    assert seen == {"nchw"} and calls == 2 * 2 * 2, "two batches, two readings, K = 2"
    assert all(p.is_contiguous() for p in model.parameters())
    assert "layout" not in off.settings()
    nchw_key = off.key()
    on, seen, _ = _layouts_seen(model, channels_last=True)
    assert seen == {"channels_last"}
    conv = [p for p in model.parameters() if p.dim() == 4 and p.shape[1] > 1 and p.shape[2] > 1]
    assert conv and all(p.is_contiguous(memory_format=torch.channels_last) and not p.is_contiguous() for p in conv)
    assert on.settings()["layout"] == "channels_last" and on.key() != nchw_key


def test_a_fallback_to_eager_is_reported_and_cached_as_eager(tmp_path, graphs, monkeypatch):
    """Dynamo's recompile limit set to one graph: the second precision cannot compile. That is a warning saying what
    to do, the batch in flight (keyed as compiled) is refused, and from then on the network runs eager and its
    entries are keyed as eager, with eager's numbers."""
    import torch._dynamo

    from diffpath_core.runtime import CompileFallbackWarning

    monkeypatch.setenv("DIFFPATH_CPU_WORKERS", "1")
    model = _rgb_model(tmp_path)
    x = torch.rand(4, 3, 16, 16, generator=torch.Generator().manual_seed(1)) * 2 - 1
    fp32 = Extraction(model, k=2, network=CompiledNetwork(model), batch_size=4, progress=False)
    bf16 = replace(fp32, precision="bf16")
    with torch._dynamo.config.patch(recompile_limit=1):
        fp32.batch_statistics(x)
        assert len(graphs) == 1 and bf16.settings()["network"] == "torch.compile"
        with pytest.warns(CompileFallbackWarning, match="recompile_limit"), pytest.raises(RuntimeError, match="eager"):
            bf16.batch_statistics(x)
    assert "network" not in bf16.settings() and "network" not in fp32.settings()
    got = bf16.batch_statistics(x)
    expected = Extraction(model, k=2, precision="bf16", batch_size=4, progress=False).batch_statistics(x)
    for key in expected:
        np.testing.assert_array_equal(got[key], expected[key], err_msg=key)


def test_fresh_noise_is_a_function_of_each_image_drawn_where_the_image_is(tiny_model, monkeypatch):
    """The fresh reading's noise: the same image gets the same noise, bit for bit, in any batch, order or layout;
    another seed or one changed bit of the image another; standard normal moments; batched, with no loop over the
    images (the mixer is called as often for 1 image as for 32); drawn on the images' device, with no copy to the
    host (the meta device has no data to copy); the noise the fresh reading adds; old cache entries missed."""
    import scipy.stats

    import diffpath_core.trajectory as trajectory
    from diffpath_core.trajectory import NOISE_VERSION, content_seeded_noise, noised_estimates

    g = torch.Generator().manual_seed(5)
    x, others = torch.rand(12, 3, 16, 16, generator=g) * 2 - 1, torch.rand(5, 3, 16, 16, generator=g) * 2 - 1
    whole = content_seeded_noise(x, 4)
    order = torch.randperm(12, generator=g)
    assert torch.equal(content_seeded_noise(x[order], 4), whole[order])
    assert torch.equal(content_seeded_noise(x[3:4], 4), whole[3:4])
    assert torch.equal(content_seeded_noise(torch.cat([others[:2], x[5:9], others[2:]]), 4)[2:6], whole[5:9])
    assert torch.equal(content_seeded_noise(x.contiguous(memory_format=torch.channels_last), 4), whole)
    assert (content_seeded_noise(x, 4, seed=1) == whole).float().mean() < 1e-3
    touched = x.clone()
    touched[0, 0, 0, 0] = torch.nextafter(touched[0, 0, 0, 0], torch.tensor(2.0))
    again = content_seeded_noise(touched, 4)
    assert (again[0] == whole[0]).float().mean() < 1e-3 and torch.equal(again[1:], whole[1:])

    z = content_seeded_noise(torch.rand(64, 3, 16, 16, generator=g) * 2 - 1, 4).double()  # 196,608 values
    flat = z.flatten()
    assert abs(flat.mean()) < 0.01 and abs(flat.std() - 1) < 0.01
    assert abs(scipy.stats.skew(flat.numpy())) < 0.03 and abs(scipy.stats.kurtosis(flat.numpy())) < 0.06
    assert scipy.stats.kstest(flat.numpy(), "norm").pvalue > 1e-3
    neighbours = torch.corrcoef(torch.stack([flat[:-1], flat[1:]]))[0, 1]
    steps = torch.corrcoef(torch.stack([z[:, 0].flatten(), z[:, 1].flatten()]))[0, 1]
    assert abs(neighbours) < 0.01 and abs(steps) < 0.01

    calls, real = [], trajectory._mix32
    monkeypatch.setattr(trajectory, "_mix32", lambda h: calls.append(len(h)) or real(h))
    counted = []
    for n in (1, 32):
        calls.clear()
        content_seeded_noise(torch.rand(n, 3, 16, 16, generator=g), 4)
        counted.append(len(calls))
    assert counted[0] == counted[1] > 0, counted
    monkeypatch.setattr(trajectory, "_mix32", real)

    meta = content_seeded_noise(x.to("meta"), 4)
    assert meta.device.type == "meta" and meta.shape == whole.shape

    grey = torch.rand(3, 1, 16, 16, generator=g) * 2 - 1
    assert torch.equal(noised_estimates(tiny_model, grey, k=2).true_noise, content_seeded_noise(grey, 2))
    assert Extraction(tiny_model, k=2).settings("fresh")["noise"] == NOISE_VERSION


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
    metas = [m for m in (json.loads(p.read_text()) for p in (tmp_path / "cache").glob("*/meta.json"))
             if "reading" not in m["settings"]]  # the path entries (the cells ride beside each in their own)
    assert sorted(m["settings"].get("network", "eager") for m in metas) == ["eager", "torch.compile"]
    np.testing.assert_allclose(outs[True], outs[False], rtol=1e-3, atol=1e-4)
