"""Path statistics take a few maps of one step beyond what the network itself needs, whatever K and image size.

Measured in a fresh process by its peak resident memory (``ru_maxrss``): first the network alone on the batch,
then the statistics of both readings. At 128×128 RGB, batch 16, K = 10 (one step's map is 3 MB, all K steps 30
MB) the statistics added 23 MB (path) and 75 MB (fresh, whose seeded noise was then drawn for all steps at once);
before they were accumulated step by step, with float64 power arrays of every step, they added 1,248 MB. The fresh
noise is now drawn on the device one step at a time (int64 hashes of each image's values): 42 to 121 MB over six
runs on the shared 2-core machine, 2026-12-03; the same runs gave the path reading 89 to 243 MB, and the commit
before as many different figures (67 to 193 MB): this peak varies between runs by more than the reading's own maps.
"""
import os
import subprocess
import sys
import textwrap

import pytest

SCRIPT = textwrap.dedent("""
    import resource, sys, tempfile, torch
    from pathlib import Path
    sys.path.insert(0, {tests!r})
    from conftest import make_tiny_model_dir
    from diffpath_core.models import load_diffusers
    from diffpath_core.statistics import reading_statistics

    model = load_diffusers(str(make_tiny_model_dir(Path(tempfile.mkdtemp()), channels=3, size=128)), device="cpu")
    x = torch.rand(16, 3, 128, 128) * 2 - 1
    reading_statistics(model, x[:1], {reading!r}, k=10)  # every code path once, on one image
    with torch.inference_mode():
        for _ in range(3):
            model.predict_eps(x, 5.0)  # the network's own peak at this batch
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    stats = reading_statistics(model, x, {reading!r}, k=10)
    print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) / 1024)
""")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="ru_maxrss in KiB is Linux's convention")
@pytest.mark.parametrize("reading", ["path", "fresh"])
def test_statistics_peak_memory_is_bounded(reading):
    script = SCRIPT.format(tests=os.path.dirname(__file__), reading=reading)
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True,
                         env={**os.environ, "DIFFPATH_CPU_WORKERS": "1"})
    extra_mb = float(run.stdout.split()[-1])
    assert extra_mb < 150, f"statistics added {extra_mb:.0f} MB over the network's own peak (K maps are 30 MB)"
