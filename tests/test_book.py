"""The book: every notebook runs under papermill with tiny parameters, the site builds, and a browser loads it.

One module-scoped build (notebooks → jupyter-book HTML in a temporary copy of the book sources) serves
all checks, so the suite pays for it once.
"""
import csv
import http.server
import math
import re
import shutil
import socketserver
import subprocess
import sys
import threading
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest
import yaml

from diffpath_core.book import NOTEBOOKS, ROOT, load_profile, run

pytestmark = pytest.mark.slow

TINY = dict(n_train=40, n_test=40, n_ablation=24, quick_n=24, k=3, k_values=[2, 3], sample_steps=5)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """Run all notebooks with tiny parameters into a copy of the book sources, then build the HTML."""
    site = tmp_path_factory.mktemp("site")
    for name in ("_config.yml", "_toc.yml"):
        shutil.copy(ROOT / name, site / name)
    shutil.copytree(ROOT / "book", site / "book", ignore=shutil.ignore_patterns("generated"))
    results = site / "results"
    params = load_profile("offline", {**TINY, "results_dir": str(results), "cache_dir": str(site / "cache")})
    run(params, output_dir=site / "book" / "generated", log=lambda *_: None)
    build = subprocess.run([str(Path(sys.executable).parent / "jupyter-book"), "build", str(site),
                            "--warningiserror", "--keep-going", "--quiet"], capture_output=True, text=True)
    assert build.returncode == 0, build.stdout[-4000:] + build.stderr[-4000:]
    return site, results


def _finite_numbers(path: Path) -> list[float]:
    values = []
    with open(path) as f:
        for row in csv.DictReader(f):
            for v in row.values():
                try:
                    values.append(float(v))
                except (TypeError, ValueError):
                    pass
    return values


def test_notebooks_write_tables_and_figures(built):
    site, results = built
    for name in NOTEBOOKS:
        nb = (site / "book" / "generated" / f"{name}.ipynb").read_text()
        assert '"output_type": "error"' not in nb, name
    for table in ("main_results.csv", "main_table_auroc.csv", "main_table_fpr95.csv", "ablation_components.csv",
                  "ablation_detectors.csv", "ablation_steps.csv", "ablation_base_model.csv",
                  "published_auroc_table.csv"):
        values = _finite_numbers(results / table)
        assert values and all(math.isfinite(v) for v in values), table
    aurocs = [float(r["auroc"]) for r in csv.DictReader(open(results / "main_results.csv"))]
    assert all(0.0 <= a <= 1.0 for a in aurocs) and len(aurocs) == 7 * 4  # 6 + 1 pairs, 3 methods + baseline
    for figure in ("quickstart_roc", "base_model_loss", "base_model_samples", "dataset_gallery", "trajectory_id",
                   "trajectory_ood", "eps_norm_vs_t", "feature_pca", "ablation_components", "ablation_steps",
                   "published_auroc_heatmap"):
        for ext in ("png", "svg"):
            assert (results / f"{figure}.{ext}").stat().st_size > 1000, f"{figure}.{ext}"


class _Links(HTMLParser):
    def __init__(self):
        super().__init__()
        self.refs = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "img" and a.get("src"):
            self.refs.append(("img", a["src"]))
        if tag == "a" and a.get("href"):
            self.refs.append(("a", a["href"]))


def test_every_toc_page_built_and_links_resolve(built):
    site, _ = built
    html = site / "_build" / "html"
    toc = yaml.safe_load((site / "_toc.yml").read_text())
    pages = [toc["root"]] + [c["file"] for part in toc["parts"] for c in part["chapters"]]
    for page in pages:
        assert (html / f"{page}.html").exists(), page
    broken = []
    for page in html.rglob("*.html"):
        parser = _Links()
        parser.feed(page.read_text(errors="replace"))
        for kind, ref in parser.refs:
            url = urlparse(ref)
            if url.scheme or ref.startswith(("#", "mailto:", "javascript:")):
                continue
            target = (page.parent / unquote(url.path)).resolve()
            if not target.exists():
                broken.append(f"{page.relative_to(html)}: {kind} {ref}")
    assert not broken, "\n".join(broken[:20])


def test_main_results_page_shows_auroc_table(built):
    site, _ = built
    page = (site / "_build" / "html" / "book" / "generated" / "03_main_results.html").read_text()
    section = page[page.index("AUROC (higher is better)"):]
    table = section[section.index("<table"):section.index("</table>")]
    assert "Fashion-MNIST → Digits" in table and "DiffPathV2" in table and "average" in table
    assert len(re.findall(r">\s*[01]\.\d{3}\s*<", table)) >= 7 * 4


def test_browser_loads_pages_without_errors(built, tmp_path):
    chromium, driver_path = shutil.which("chromium"), shutil.which("chromedriver")
    if not (chromium and driver_path):
        pytest.fail("Debian's chromium and chromium-driver are needed (make test installs them)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    site, _ = built
    html = site / "_build" / "html"

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *a, **k):
            super().__init__(*a, directory=str(html), **k)

        def log_message(self, *a):
            pass

    with socketserver.TCPServer(("127.0.0.1", 0), Quiet) as server:
        threading.Thread(target=server.serve_forever, daemon=True).start()
        port = server.server_address[1]
        opts = webdriver.ChromeOptions()
        opts.binary_location = chromium
        for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                     "--disable-background-networking", "--disable-component-update", "--disable-sync",
                     "--window-size=1280,1600", f"--user-data-dir={tmp_path / 'profile'}"):
            opts.add_argument(flag)
        opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        driver = webdriver.Chrome(service=Service(driver_path), options=opts)
        try:
            for page, shot in (("index.html", "index.png"), ("book/generated/03_main_results.html", "main.png")):
                driver.get(f"http://127.0.0.1:{port}/{page}")
                driver.execute_script("return document.readyState")
                missing = driver.execute_script(
                    "return Array.from(document.images).filter(i => !i.complete || i.naturalWidth === 0)"
                    ".map(i => i.src)")
                errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
                driver.save_screenshot(str(site / shot))
                assert not missing, f"{page}: images failed to load: {missing}"
                assert not errors, f"{page}: console errors: {errors}"
                assert (site / shot).stat().st_size > 10_000
            assert "AUROC" in driver.page_source
        finally:
            driver.quit()
            server.shutdown()
