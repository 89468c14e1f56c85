"""The publishing workflow: actionlint passes on it (and fails on a planted mistake), it builds the book with the
README's command on a CPU torch, publishes _build/html to GitHub Pages, and gives the build the repository's
address so the launch buttons show."""
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
WORKFLOW = ROOT / ".github" / "workflows" / "book.yml"


def _actionlint() -> str:
    found = shutil.which("actionlint") or str(Path(__import__("sys").executable).parent / "actionlint")
    if not Path(found).exists():
        pytest.fail("actionlint is missing: `make test` installs it (pyproject's dev extra)")
    return found


def test_actionlint_passes_and_catches_a_planted_mistake(tmp_path):
    run = subprocess.run([_actionlint(), str(WORKFLOW)], capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr
    broken = tmp_path / "broken.yml"
    broken.write_text(WORKFLOW.read_text().replace("${{ github.repository }}", "${{ github.repositry }}"))
    run = subprocess.run([_actionlint(), str(broken)], capture_output=True, text=True)
    assert run.returncode != 0 and "repositry" in run.stdout


def test_workflow_builds_the_offline_book_and_publishes_it():
    flow = yaml.safe_load(WORKFLOW.read_text())
    build, deploy = flow["jobs"]["build"], flow["jobs"]["deploy"]
    commands = "\n".join(step.get("run", "") for step in build["steps"])
    assert "make book" in commands and "make book" in (ROOT / "README.md").read_text(), "the README's command"
    assert "torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu" in commands, "a CPU torch, not CUDA"
    assert build["env"]["DIFFPATH_REPOSITORY_URL"] == "${{ github.server_url }}/${{ github.repository }}"
    upload = next(s for s in build["steps"] if s.get("uses", "").startswith("actions/upload-pages-artifact"))
    assert upload["with"]["path"] == "_build/html"
    assert any(s.get("uses", "").startswith("actions/deploy-pages") for s in deploy["steps"])
    assert deploy["permissions"] == {"pages": "write", "id-token": "write"}


def test_repository_address_turns_the_launch_buttons_on(monkeypatch):
    """Without an address no repository or launch button shows; with the workflow's address they do."""
    import sys
    from types import SimpleNamespace

    sys.path.insert(0, str(ROOT / "book" / "_ext"))
    import repository_buttons

    def configure():
        config = SimpleNamespace(html_theme_options={
            "repository_url": repository_buttons.JUPYTER_BOOK_DEFAULT, "launch_buttons": {"colab_url": "x"}})
        repository_buttons._repository_buttons(None, config)
        return config.html_theme_options

    monkeypatch.delenv(repository_buttons.REPOSITORY_ENV, raising=False)
    off = configure()
    assert off["repository_url"] == "" and off["launch_buttons"] == {} and not off["use_repository_button"]
    monkeypatch.setenv(repository_buttons.REPOSITORY_ENV, "https://github.com/someone/diffpath-book")
    on = configure()
    assert on["repository_url"] == "https://github.com/someone/diffpath-book" and on["use_repository_button"]
    assert on["launch_buttons"] == {"colab_url": "x"}
