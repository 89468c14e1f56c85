"""Data streamed: a folder of large photos is held at the model's size, never whole at full resolution; its identity
comes from the files' bytes, so a cached run decodes nothing; decoding overlaps the network."""
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from PIL import Image

from diffpath_core.datasets import load_image_folder
from diffpath_core.extraction import Extraction

pytestmark = pytest.mark.slow


def _photos(folder, n=60, height=1500, width=2000):
    """``n`` RGB JPEGs of 2000×1500 (smooth patterns with noise, like photos, about 0.8 MB each)."""
    folder.mkdir()
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    for i in range(n):
        base = np.sin(x / (50 + i)) * 60 + np.cos(y / 70) * 60 + 128
        arr = np.stack([base, base[::-1], base[:, ::-1]], -1) + rng.normal(0, 8, (height, width, 3))
        Image.fromarray(arr.clip(0, 255).astype(np.uint8)).save(folder / f"photo_{i:02d}.jpg", quality=90)
    return folder


SCRIPT = textwrap.dedent("""
    import resource, sys, tempfile, torch
    from pathlib import Path
    sys.path.insert(0, {tests!r})
    from conftest import make_tiny_model_dir
    from diffpath_core.datasets import load_image_folder
    from diffpath_core.extraction import Extraction
    from diffpath_core.models import load_diffusers

    model = load_diffusers(str(make_tiny_model_dir(Path(tempfile.mkdtemp()), channels=3, size=32)), device="cpu")
    ex = Extraction(model, k=2, cache_dir={cache!r}, progress=False)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    images = load_image_folder({folder!r}, size=32, channels=3, resize_images=True)
    before = images.source.decoded
    ex.statistics(images)
    peak = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) / 1024
    again = load_image_folder({folder!r}, size=32, channels=3, resize_images=True)
    ex.statistics(again)
    print(before, images.source.decoded, again.source.decoded, peak)
""")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="ru_maxrss in KiB is Linux's convention")
def test_large_photos_stream_at_model_size_and_a_cached_run_decodes_none(tmp_path):
    """60 photos of 2000×1500 (0.5 GB as float32 at full size): loading decodes nothing, extraction decodes each
    once with a peak under 300 MB over the process's start (measured: 154 MB with two decoding threads), and a
    second run over the same folder is answered by the cache without decoding any image."""
    folder = _photos(tmp_path / "photos")
    script = SCRIPT.format(tests=os.path.dirname(__file__), cache=str(tmp_path / "cache"), folder=str(folder))
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True,
                         env={**os.environ, "DIFFPATH_DECODE_WORKERS": "2"})
    before, first, second, peak_mb = run.stdout.split()
    assert (int(before), int(first), int(second)) == (0, 60, 0)
    assert float(peak_mb) < 300, f"peak {float(peak_mb):.0f} MB"


def test_identity_follows_the_bytes_not_the_names_of_loading(tmp_path):
    """The identity is a digest of names and bytes: a touched file keeps it, a changed byte changes it."""
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(3):
        Image.fromarray(np.full((16, 16), 40 * i, np.uint8)).save(folder / f"{i}.png")
    first = load_image_folder(folder, size=16, channels=1).identity
    os.utime(folder / "0.png")
    assert load_image_folder(folder, size=16, channels=1).identity == first
    Image.fromarray(np.full((16, 16), 41, np.uint8)).save(folder / "1.png")
    assert load_image_folder(folder, size=16, channels=1).identity != first


def test_the_next_chunk_is_decoded_while_this_one_is_computed(tiny_model, tmp_path, monkeypatch):
    """Decoding runs in a background thread, one chunk ahead of the network: the network's first call (chunk 0)
    waits until the decoding of chunk 1 has begun, which only happens if the two overlap; run one after the other,
    the wait times out (20 s, so a failure cannot hang) and the test fails."""
    import threading

    folder = tmp_path / "imgs"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(24):
        Image.fromarray(rng.integers(0, 256, (16, 16), dtype=np.uint8)).save(folder / f"{i:02d}.png")
    images = load_image_folder(folder, size=16, channels=1)
    threads, next_chunk_decoding, waited = [], threading.Event(), []
    real = images.source.batch

    def recorded(lo, hi):
        threads.append(threading.current_thread().name)
        if lo == 8:
            next_chunk_decoding.set()
        return real(lo, hi)

    def network(x, t):
        if not waited:
            waited.append(next_chunk_decoding.wait(timeout=20))
        return tiny_model.predict_eps(x, t)

    images.source.batch = recorded
    monkeypatch.setenv("DIFFPATH_CPU_WORKERS", "1")
    Extraction(tiny_model, k=2, chunk_size=8, batch_size=8, progress=False, network=network,
               cache_dir=tmp_path / "c").statistics(images)
    assert waited == [True], "the network's first call ran before chunk 1 began decoding: no overlap"
    assert len(threads) == 3 and all(t.startswith("diffpath-prefetch") for t in threads)
    assert images.source.decoded == 24


def test_a_batch_is_never_cut_by_the_chunk(tiny_model, tiny_images):
    """A batch larger than the chunk makes the chunk follow it (one network call per batch of 16, not two of 8)."""
    calls = []
    real = Extraction.batch_statistics

    def counted(self, x, reading="path"):
        calls.append(len(x))
        return real(self, x, reading)

    Extraction.batch_statistics = counted
    try:
        Extraction(tiny_model, k=2, batch_size=16, chunk_size=8, progress=False).statistics(tiny_images)
    finally:
        Extraction.batch_statistics = real
    assert calls == [16, 8]
    assert Extraction(tiny_model, batch_size=16, chunk_size=8).effective_chunk_size == 16
