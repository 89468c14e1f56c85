"""The book: every notebook runs under papermill with tiny parameters, the site builds, and a browser loads it.

One module-scoped build (notebooks → jupyter-book HTML in a temporary copy of the book sources) serves
all checks, so the suite pays for it once. The notebooks also run by hand, from the notebooks/ folder.
"""
import csv
import http.server
import math
import os
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

TINY = dict(n_train=40, n_test=40, n_ablation=24, quick_n=24, k=3, k_values=[2, 3], sample_steps=5,
            one_class=[{"dataset": "mnist", "model": "model", "setting": "zero-shot"}], one_class_n_train=200,
            one_class_n_test=60, maps_n_train=40, maps_n_test=12)


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


TABLES = ("quickstart_metrics.csv", "main_results.csv", "main_table_auroc.csv", "main_table_fpr95.csv",
          "main_comparisons.csv", "fmnist_mnist_comparison.csv", "ablation_v2_switches.csv", "ablation_true_noise.csv",
          "ablation_structure.csv", "ablation_detectors.csv", "ablation_density_grid.csv", "ablation_steps.csv",
          "ablation_base_model.csv", "published_auroc_table.csv", "published_diffpath_protocol.csv",
          "published_disagreement.csv", "one_class_tasks.csv", "one_class_summary.csv", "one_class_mnist.csv",
          "maps_metrics.csv", "one_class_comparisons.csv", "method_overview.csv")


def test_notebooks_write_tables_and_figures(built):
    site, results = built
    for name in NOTEBOOKS:
        nb = (site / "book" / "generated" / f"{name}.ipynb").read_text()
        assert '"output_type": "error"' not in nb, name
        assert '"name": "stderr"' not in nb, f"{name}: stderr left in the page"
    for table in TABLES:
        values = _finite_numbers(results / table)
        assert values and all(math.isfinite(v) for v in values), table
    rows = list(csv.DictReader(open(results / "main_results.csv")))
    assert len(rows) == 8 * 7  # 6 ordered pairs + 2 extra pairs; 3 published methods, 2 of ours, 2 baselines
    assert {r["method"] for r in rows} == {"DiffPath-1D", "DiffPath-6D", "DiffPathV2", "DiffPathV2-PS",
                                           "SpatialPath", "Reconstruction", "Border mean"}
    for figure in ("quickstart_roc", "base_model_loss", "base_model_samples", "dataset_gallery", "trajectory_id",
                   "trajectory_ood", "eps_norm_vs_t", "feature_pca", "ablation_v2_switches", "ablation_steps",
                   "published_auroc_heatmap", "one_class_mnist_fashion_mnist_zero_shot", "anomaly_maps_grid",
                   "method_overview"):
        for ext in ("png", "svg"):
            assert (results / f"{figure}.{ext}").stat().st_size > 1000, f"{figure}.{ext}"


def test_every_auroc_in_the_tables_is_the_scores_auroc_with_its_interval(built):
    """Each row of main_results.csv recomputed by scikit-learn from the scores the run wrote (main_scores.npz), its
    interval and the paired comparisons recomputed from the same scores by the joint bootstrap (each test set
    drawn once per resample, for every pair and method); and a fact of the data that a swapped ID/OOD or a sign
    error would break: the border mean tells MNIST (black frame) from Fashion-MNIST even with 40 test images."""
    import numpy as np
    from sklearn.metrics import roc_auc_score

    from diffpath_core.metrics import Side, interval, joint_bootstrap, paired_difference

    _, results = built
    rows = list(csv.DictReader(open(results / "main_results.csv")))
    tasks = {}
    with np.load(results / "main_scores.npz") as scores:
        for r in rows:
            key = f"{r['method']}|{r['id']}|{r['ood']}"
            s_id, s_ood = scores[f"{key}|id"], scores[f"{key}|ood"]
            assert (len(s_id), len(s_ood)) == (int(r["n_id_test"]), int(r["n_ood_test"])), key
            expected = roc_auc_score(np.r_[np.ones(len(s_id)), np.zeros(len(s_ood))], np.r_[s_id, s_ood])
            assert float(r["auroc"]) == pytest.approx(expected, abs=6e-5), key  # the CSV rounds to 4 decimals
            task = (Side(f"{r['id']}|test", s_id), Side(f"{r['ood']}|test", s_ood))
            tasks.setdefault(r["method"], []).append(task)
            low, high = interval(joint_bootstrap([task], int(r["n_boot"]), int(r["boot_seed"]))[0])
            assert (float(r["auroc_low"]), float(r["auroc_high"])) == pytest.approx((low, high), abs=6e-5), key
            assert r["n_boot"] == "2000", key
    border = next(r for r in rows if (r["method"], r["id"], r["ood"]) == ("Border mean", "fashion_mnist", "mnist"))
    assert float(border["auroc"]) > 0.9
    compared = list(csv.DictReader(open(results / "main_comparisons.csv")))
    assert compared
    for c in compared:
        again = paired_difference(tasks[c["a"]], tasks[c["b"]], n_boot=int(c["n_boot"]))
        assert (float(c["low"]), float(c["high"])) == pytest.approx((again["low"], again["high"]), abs=1e-9)
    for r in csv.DictReader(open(results / "one_class_tasks.csv")):
        assert 0 <= float(r["auroc_low"]) <= float(r["auroc_high"]) <= 1


def test_intro_opens_with_findings_read_from_the_tables(built):
    """The root page's first section states this build's averages and their intervals as the CSVs hold them."""
    site, results = built
    page = (site / "_build" / "html" / "book" / "generated" / "intro.html").read_text()
    main = page[page.index("<main"):]
    found = main.index('<section id="what-this-build-found">')
    assert found < main.index('<section id="what-this-book-is">')
    with open(results / "main_table_auroc.csv") as f:
        average = next(r for r in csv.DictReader(f) if r["ID → OOD"] == "average")
    with open(results / "main_table_auroc_interval.csv") as f:
        interval = next(r for r in csv.DictReader(f) if r["ID → OOD"] == "average")
    text = re.sub(r"<[^>]+>", "", main[found:main.index('<section id="what-this-book-is">')])
    for method in ("DiffPathV2", "DiffPath-6D", "Border mean"):
        assert f"{method} {float(average[method]):.3f} ({interval[method]})" in text, method
    assert "One class normal, MNIST, zero-shot" in text


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


def _first_table_numbers(html: str) -> tuple[str, list[float]]:
    table = html[html.index("<table"):html.index("</table>")]
    return table, [float(v) for v in re.findall(r">\s*([01]\.\d{3})\s*<", table)]


def test_main_results_page_opens_with_the_csv_table(built):
    """Results first: the page's first table is the AUROC table, its numbers are the CSV's, best per row bold."""
    site, results = built
    page = (site / "_build" / "html" / "book" / "generated" / "03_main_results.html").read_text()
    main = page[page.index("<main"):]
    table, numbers = _first_table_numbers(main)
    styles = main[:main.index("</table>")]  # the Styler's <style> block sits just before its table
    assert "Fashion-MNIST → Digits" in table and "Fashion-MNIST → MNIST" in table and "average" in table
    assert 'href="../method.html#method-diffpathv2"' in table, "method names link to the Method page"
    with open(results / "main_table_auroc.csv") as f:
        expected = [float(v) for row in csv.reader(f) for v in row[1:] if re.fullmatch(r"[01]\.\d+", v)]
    assert numbers == pytest.approx(expected, abs=5e-4) and len(numbers) == 9 * 7  # 8 pairs + average, 7 methods
    table_id = re.search(r'<table id="(T_\w+)"', table).group(1)
    assert re.search(rf"#{table_id}_row\d+_col\d+[^{{]*{{\s*font-weight: bold", styles), "best per row in bold"
    assert page.index("AUROC (higher is better)") < page.index("Score distributions and ROC curves")


def test_method_page_has_the_anchors_tables_link_to(built):
    site, _ = built
    page = (site / "_build" / "html" / "book" / "method.html").read_text()
    for anchor in ("method-diffpath", "method-diffpathv2", "method-variants", "method-baselines"):
        assert f'id="{anchor}"' in page, anchor


def test_no_repository_buttons_without_a_repository(built):
    """With repository.url unset, no repository or launch button shows; the .ipynb download does."""
    site, _ = built
    page = (site / "_build" / "html" / "book" / "generated" / "00_quickstart.html").read_text()
    assert "executablebooks/jupyter-book" not in page and "mybinder.org" not in page and "colab" not in page
    assert "00_quickstart.ipynb" in page, "the notebook page offers its .ipynb for download"
    assert (site / "_build" / "html" / "_sources" / "book" / "generated" / "00_quickstart.ipynb").exists()


# a warning as Python prints it ("UserWarning: …"; the API page names warning classes, which is not noise)
MACHINE_NOISE = re.compile(r"(/tmp/|/root/|/home/|/work/|site-packages|Traceback|Warning:|"
                           r"\d+(\.\d+)?\s*(it|chunk|s/it)/s\b|\d+%\|)")


def test_browser_loads_every_page_clean(built, tmp_path):
    chromium, driver_path = shutil.which("chromium"), shutil.which("chromedriver")
    if not (chromium and driver_path):
        pytest.fail("Debian's chromium and chromium-driver are needed (make test installs them)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    site, _ = built
    html = site / "_build" / "html"
    toc = yaml.safe_load((site / "_toc.yml").read_text())
    pages = [toc["root"]] + [c["file"] for part in toc["parts"] for c in part["chapters"]]
    shots = site / "screenshots"
    shots.mkdir(exist_ok=True)

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
        problems = []
        try:
            for page in pages:
                driver.get(f"http://127.0.0.1:{port}/{page}.html")
                driver.execute_script("return document.readyState")
                missing = driver.execute_script(
                    "return Array.from(document.images).filter(i => !i.complete || i.naturalWidth === 0)"
                    ".map(i => i.src)")
                errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
                text = driver.execute_script("return document.querySelector('main').innerText")
                noise = sorted({m.group(0) for m in MACHINE_NOISE.finditer(text)})
                shot = shots / (page.replace("/", "_") + ".png")
                driver.save_screenshot(str(shot))
                if missing:
                    problems.append(f"{page}: images failed to load: {missing}")
                if errors:
                    problems.append(f"{page}: console errors: {errors}")
                if noise:
                    problems.append(f"{page}: build noise in the page: {noise}")
                if shot.stat().st_size < 10_000:
                    problems.append(f"{page}: blank screenshot")
            driver.get(f"http://127.0.0.1:{port}/book/generated/03_main_results.html")
            assert "AUROC" in driver.page_source
        finally:
            driver.quit()
            server.shutdown()
    assert not problems, "\n".join(problems)


def test_notebooks_run_by_hand_from_the_notebooks_folder(built, tmp_path):
    """Each notebook, as a student runs it: working directory notebooks/, relative paths, own parameter cell
    (papermill changes only the sizes, and points results at a temporary folder and the cache at the built
    site's, relatively: the statistics are there already, so this run costs the fits, not the trajectories)."""
    import papermill

    site, _ = built
    rel = Path(os.path.relpath(tmp_path, ROOT))
    cache = Path(os.path.relpath(site / "cache", ROOT))
    sizes = {**TINY, "results_dir": str(rel / "results"), "cache_dir": str(cache)}
    for name in NOTEBOOKS:
        source = ROOT / "notebooks" / f"{name}.ipynb"
        declared = set(papermill.inspect_notebook(str(source)))
        papermill.execute_notebook(str(source), str(tmp_path / f"{name}.ipynb"),
                                   parameters={k: v for k, v in sizes.items() if k in declared},
                                   cwd=str(ROOT / "notebooks"), kernel_name="python3", progress_bar=False)
    assert (tmp_path / "results" / "main_table_auroc.csv").exists()
    assert not (ROOT / "notebooks" / "cache").exists() and not (ROOT / "notebooks" / "results").exists()
