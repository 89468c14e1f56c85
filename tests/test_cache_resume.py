"""A killed extraction resumes from its finished chunks and ends with the uninterrupted result."""
import json
import os
import shutil
import warnings
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import diffpath_core.cache as cache
from diffpath_core.extraction import Extraction

N, CHUNK = 48, 8  # six chunks


def path_entries(cache_dir) -> list[Path]:
    """The path reading's entries (the cells, statistics.RIDERS, are kept beside each in an entry of their own)."""
    return sorted(p for p in Path(cache_dir).glob("*") if (p / "meta.json").exists()
                  and "reading" not in json.loads((p / "meta.json").read_text())["settings"])


def _images():
    g = torch.Generator().manual_seed(7)
    return torch.rand(N, 1, 16, 16, generator=g) * 2 - 1


def test_kill_and_resume(tiny_model_dir, tiny_model, tmp_path):
    cache_dir = tmp_path / "cache"
    torch.save(_images(), tmp_path / "images.pt")
    # A child process extracts slowly (0.4 s per batch) and is SIGKILLed after two chunks are on disk.
    script = textwrap.dedent(f"""
        import time, torch
        from diffpath_core.extraction import Extraction
        from diffpath_core.models import load_diffusers
        slow = Extraction.batch_statistics
        def slowly(*a, **k):
            time.sleep(0.4)
            return slow(*a, **k)
        Extraction.batch_statistics = slowly
        model = load_diffusers({str(tiny_model_dir)!r}, device="cpu")
        x = torch.load({str(tmp_path / 'images.pt')!r}, weights_only=True)
        Extraction(model, k=3, batch_size=4, cache_dir={str(cache_dir)!r}, progress=False,
                   chunk_size={CHUNK}).statistics(x)
    """)
    child = subprocess.Popen([sys.executable, "-c", script], env={**os.environ, "PYTHONPATH": os.getcwd()})
    deadline = time.time() + 120
    chunks = lambda: sorted(c for e in path_entries(cache_dir) for c in e.glob("chunks/[0-9]*.npz"))  # noqa: E731
    while len(chunks()) < 2 and time.time() < deadline and child.poll() is None:
        time.sleep(0.05)
    child.send_signal(signal.SIGKILL)
    child.wait()
    done_before = len(chunks())
    assert 2 <= done_before < N // CHUNK, "the child should have been killed midway"
    assert not list(cache_dir.glob("*/stats.npz"))
    mtimes = {p.name: p.stat().st_mtime_ns for p in chunks()}

    calls = []
    real = Extraction.batch_statistics

    def counting(self, x, *a, **k):
        calls.append(len(x))
        return real(self, x, *a, **k)

    Extraction.batch_statistics = counting
    try:
        resumed = Extraction(tiny_model, k=3, batch_size=4, cache_dir=cache_dir, progress=False,
                             chunk_size=CHUNK).statistics(_images())
    finally:
        Extraction.batch_statistics = real
    assert sum(calls) == N - done_before * CHUNK, "finished chunks must not be recomputed"
    assert all(p.stat().st_mtime_ns == mtimes[p.name] for p in chunks() if p.name in mtimes)

    fresh = Extraction(tiny_model, k=3, batch_size=4, progress=False).statistics(_images())
    assert set(resumed) == set(fresh)
    for key in fresh:
        np.testing.assert_array_equal(resumed[key], fresh[key], err_msg=key)


def test_cache_hit_and_key(tiny_model, tiny_images, tmp_path):
    a = Extraction(tiny_model, k=3, cache_dir=tmp_path, progress=False).statistics(tiny_images)
    entries = path_entries(tmp_path)
    assert len(entries) == 1 and (entries[0] / "stats.npz").exists() and (entries[0] / "meta.json").exists()
    b = Extraction(tiny_model, k=3, cache_dir=tmp_path, progress=False).statistics(tiny_images)
    np.testing.assert_array_equal(a["eps_s2"], b["eps_s2"])
    Extraction(tiny_model, k=4, cache_dir=tmp_path, progress=False).statistics(tiny_images)
    Extraction(tiny_model, k=3, cache_dir=tmp_path, progress=False).statistics(tiny_images[:-1])
    assert len(path_entries(tmp_path)) == 3, "other K or other images must not hit the same entry"
    assert len(list(tmp_path.iterdir())) == 6, "nor the cells kept beside each"
    assert not list(Path(tmp_path).rglob("*.tmp"))


def test_entry_is_bound_to_chunk_size_and_precision(tiny_model, tiny_images, tmp_path):
    """Anything that changes the numbers or the chunking gets an entry of its own; each precision's entry holds
    that precision's numbers (bf16 / fp16 autocast really ran: close to fp32, not equal; TF32 does not exist on
    a CPU, so its numbers are fp32's, kept apart)."""
    got = {}
    for kwargs in ({}, {"chunk_size": 8, "batch_size": 8}, {"chunk_size": 16, "batch_size": 8},
                   {"precision": "tf32"}, {"precision": "bf16"}, {"precision": "fp16"}):
        got[repr(kwargs)] = Extraction(tiny_model, k=2, cache_dir=tmp_path, progress=False,
                                       **kwargs).statistics(tiny_images)
    assert len(path_entries(tmp_path)) == 6
    # a chunk below the batch follows the batch (chunks hold whole batches): chunks of 8 at batch 16 are chunks of
    # 16, the entry above
    Extraction(tiny_model, k=2, cache_dir=tmp_path, progress=False, chunk_size=8, batch_size=16).statistics(
        tiny_images)
    assert len(path_entries(tmp_path)) == 6
    fp32 = got["{}"]
    np.testing.assert_array_equal(got["{'precision': 'tf32'}"]["eps_s2"], fp32["eps_s2"])
    for precision, close in (("bf16", 0.05), ("fp16", 0.01)):  # measured: 0.02 and 0.002 of the largest value
        for key in ("eps_s1", "eps_s2", "err_s2", "d_sum"):
            diff = np.abs(got[f"{{'precision': '{precision}'}}"][key] - fp32[key]).max() / np.abs(fp32[key]).max()
            assert 1e-5 < diff < close, (precision, key, diff)
    from diffpath_core.cache import trajectory_settings

    cpu = trajectory_settings(10, True, "fp32")
    assert cpu == {"k": 10, "clip": True, "precision": "fp32", "stats": cache.STATS_VERSION}, "CPU keys unchanged"
    assert trajectory_settings(10, True, "fp32", device_type="cuda")["device"] == "cuda"


def test_stale_temp_files_are_cleaned(tiny_model, tiny_images, tmp_path):
    first = Extraction(tiny_model, k=2, cache_dir=tmp_path, progress=False, chunk_size=8).statistics(tiny_images)
    entry = path_entries(tmp_path)[0]
    (entry / "stats.npz").unlink()  # as if the merge had not happened yet
    dead = entry / "chunks" / ".00001.npz.2147483646.tmp"  # a writer that no longer runs
    dead.write_bytes(b"half a chunk")
    again = Extraction(tiny_model, k=2, cache_dir=tmp_path, progress=False, chunk_size=8).statistics(tiny_images)
    assert not dead.exists()
    np.testing.assert_array_equal(first["eps_s2"], again["eps_s2"])


def test_two_writers_of_one_entry_compute_each_chunk_once(tiny_model, tiny_images, tmp_path):
    """Two extractions of the same entry at once: each chunk is computed by one of them, both get the same."""
    import threading

    real, computed, lock = Extraction.batch_statistics, [], threading.Lock()

    def slow_and_counted(self, x, *a, **k):
        time.sleep(0.2)
        with lock:
            computed.append(len(x))
        return real(self, x, *a, **k)

    Extraction.batch_statistics = slow_and_counted
    results = [None, None]
    try:
        def run(i):
            results[i] = Extraction(tiny_model, k=2, batch_size=8, chunk_size=8, cache_dir=tmp_path,
                                    progress=False).statistics(tiny_images)
        threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        Extraction.batch_statistics = real
    assert sum(computed) == len(tiny_images), "no chunk computed twice"
    for key in results[0]:
        np.testing.assert_array_equal(results[0][key], results[1][key])


def test_fp32_turns_tf32_off_while_the_network_runs_and_restores_it():
    """Under either flag API (fp32_precision where torch has it, allow_tf32 otherwise): fp32 means TF32 off for
    matmuls and convolutions while the network runs, tf32 on, and the caller's setting comes back."""
    from diffpath_core.trajectory import _tf32_switches, autocast_context, tf32_enabled

    switches = _tf32_switches()
    before = [getattr(obj, attr) for obj, attr, _, _ in switches]
    seen = {}
    try:
        for user_setting in (True, False):
            for obj, attr, on, off in switches:
                setattr(obj, attr, on if user_setting else off)
            for precision in ("fp32", "tf32"):
                with autocast_context(torch.device("cuda"), precision):
                    seen[(user_setting, precision)] = tf32_enabled()
                assert tf32_enabled() == (user_setting, user_setting), "the caller's setting is restored"
    finally:
        for (obj, attr, _, _), value in zip(switches, before):
            setattr(obj, attr, value)
    assert all(v == (False, False) for (u, p), v in seen.items() if p == "fp32")
    assert all(v == (True, True) for (u, p), v in seen.items() if p == "tf32")


# ----------------------------------------------------------------------------- no entry read for other images

def test_two_image_sets_under_one_name_and_count_get_their_own_statistics(tiny_model, tmp_path):
    """ImageSets built without an identity are identified by their content: same name, same count, other images,
    other statistics (each equal to its own computation without a cache)."""
    from diffpath_core.datasets import ImageSet

    g = torch.Generator().manual_seed(5)
    x1, x2 = torch.rand(8, 1, 16, 16, generator=g) * 2 - 1, torch.rand(8, 1, 16, 16, generator=g) * 2 - 1
    cached = Extraction(tiny_model, k=2, cache_dir=tmp_path, progress=False)
    bare = Extraction(tiny_model, k=2, progress=False)
    for x in (x1, x2, x1):
        got = cached.statistics(ImageSet("mine", "test", x))
        np.testing.assert_array_equal(got["eps_s2"], bare.statistics(ImageSet("mine", "test", x))["eps_s2"])
    assert ImageSet("mine", "test", x1).identity != ImageSet("mine", "test", x2).identity
    assert ImageSet("a", "test", x1).identity == ImageSet("b", "train", x1.clone()).identity, "content, not names"


def test_an_entry_is_never_read_for_other_images(tiny_model, tmp_path):
    """An identity that does not pin its images (given by hand here) cannot make the cache misread: the entry
    records each image's content hash, a read or a resumed write for other images (or another count) clears it,
    recomputes and says so; an entry without that record is recomputed too."""
    from diffpath_core.cache import StaleEntryWarning
    from diffpath_core.datasets import ImageSet

    g = torch.Generator().manual_seed(6)
    x1, x2 = torch.rand(8, 1, 16, 16, generator=g) * 2 - 1, torch.rand(8, 1, 16, 16, generator=g) * 2 - 1
    ex = Extraction(tiny_model, k=2, cache_dir=tmp_path, chunk_size=4, batch_size=4, progress=False)
    bare = Extraction(tiny_model, k=2, progress=False)
    own = {n: bare.statistics(x)["eps_s2"] for n, x in (("x1", x1), ("x2", x2), ("x2[:6]", x2[:6]))}
    first = ex.statistics(ImageSet("same", "test", x1, identity="by hand"))
    np.testing.assert_array_equal(first["eps_s2"], own["x1"])
    with pytest.warns(StaleEntryWarning, match="8 of its 8 images differ"):
        second = ex.statistics(ImageSet("same", "test", x2, identity="by hand"))
    np.testing.assert_array_equal(second["eps_s2"], own["x2"])
    with pytest.warns(StaleEntryWarning, match="it holds 8 images, 6 were asked for"):
        third = ex.statistics(ImageSet("same", "test", x2[:6], identity="by hand"))
    np.testing.assert_array_equal(third["eps_s2"], own["x2[:6]"])
    # a killed run's chunk of x2 left behind, then x1 asked for under the same identity: the chunk is not merged
    folder = path_entries(tmp_path)[0]
    (folder / "stats.npz").unlink()
    shutil.rmtree(folder / "chunks")
    with pytest.warns(StaleEntryWarning, match="it holds 6 images, 8 were asked for"):  # the record is still x2[:6]'s
        ex.statistics(ImageSet("same", "test", x2, identity="by hand"))
    (folder / "stats.npz").unlink()
    (folder / "chunks" / "00001.npz").unlink()
    with pytest.warns(StaleEntryWarning):
        resumed = ex.statistics(ImageSet("same", "test", x1, identity="by hand"))
    np.testing.assert_array_equal(resumed["eps_s2"], own["x1"])
    # an entry written before the content record existed
    (folder / "content.npy").unlink()
    with pytest.warns(StaleEntryWarning, match="no record"):
        again = ex.statistics(ImageSet("same", "test", x1, identity="by hand"))
    np.testing.assert_array_equal(again["eps_s2"], own["x1"])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the entry holds what was asked for now: read without a word
        np.testing.assert_array_equal(ex.statistics(ImageSet("same", "test", x1, identity="by hand"))["eps_s2"],
                                      own["x1"])
