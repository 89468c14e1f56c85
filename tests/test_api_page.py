"""The API page alone, rendered by Sphinx with the book's parsing settings in seconds: a docstring that is
not valid reStructuredText (``|r|`` reads as a substitution) fails here, not only in the slow book build."""
import subprocess
import sys

import yaml

from diffpath_core.book import ROOT


def test_the_api_pages_docstrings_render_without_warnings(tmp_path):
    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    sphinx = config["sphinx"]["config"]
    wanted = [e for e in config["sphinx"]["extra_extensions"] if e.startswith("sphinx.ext.autodoc")
              or e == "sphinx.ext.napoleon"]
    conf = {"extensions": ["myst_parser", *wanted],
            "myst_enable_extensions": config["parse"]["myst_enable_extensions"],
            "autodoc_member_order": sphinx["autodoc_member_order"],
            "autodoc_typehints": sphinx["autodoc_typehints"],
            "add_module_names": sphinx["add_module_names"],
            # links to the book's other pages cannot resolve in a one-page build
            "suppress_warnings": ["myst.header", "myst.xref_missing", "ref.ref", "ref.doc"]}
    src = tmp_path / "src"
    src.mkdir()
    (src / "conf.py").write_text("".join(f"{k} = {v!r}\n" for k, v in conf.items()))
    (src / "index.md").write_text((ROOT / "book" / "api.md").read_text())
    build = subprocess.run([sys.executable, "-m", "sphinx", "-E", "-b", "html", "-q", "-W", "--keep-going",
                            str(src), str(tmp_path / "html")], capture_output=True, text=True, cwd=ROOT)
    assert build.returncode == 0, build.stderr[-4000:]
    page = (tmp_path / "html" / "index.html").read_text()
    # the page was really rendered from docstrings (the anchors autodoc writes, not the page's own text)
    assert 'id="diffpath_core.api.SpatialPath"' in page and 'id="diffpath_core.metrics.joint_bootstrap"' in page
