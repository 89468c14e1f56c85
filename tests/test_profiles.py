"""Profiles resolve; the paper profile stops at once offline, listing what to get and where."""
import pytest

from diffpath_core.book import load_profile, preflight, run
from diffpath_core.datasets import DATASETS
from diffpath_core.improved_diffusion import PRESETS, build_unet, unet_kwargs


def test_paper_profile_resolves():
    params = load_profile("paper")
    names = params["datasets"] + [n for pair in params["extra_pairs"] for n in pair]
    assert all(n in DATASETS for n in names)
    assert len(params["datasets"]) * (len(params["datasets"]) - 1) == 12, "the paper's 12 ordered pairs"
    assert params["model_config"] in PRESETS and params["second_model_config"] in PRESETS
    unet = build_unet(PRESETS[params["model_config"]])  # the CelebA-32 architecture builds
    assert unet.config.block_out_channels == (128, 256, 256, 256) and unet.config.out_channels == 6
    heads = {m.heads for m in unet.modules() if m.__class__.__name__ == "Attention"}
    assert heads == {4}
    kw = unet_kwargs(PRESETS["imagenet64"])
    assert kw["down_block_types"] == ("DownBlock2D", "DownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D")


def test_paper_profile_stops_before_any_work(tmp_path, monkeypatch):
    import torch

    monkeypatch.setenv("DIFFPATH_DATA", str(tmp_path / "data"))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # the CPU warning is checked as on a CPU host
    params = load_profile("paper", {"model": str(tmp_path / "celeba_ema_0.9999_499999.pt"),
                                    "results_dir": str(tmp_path / "results")})
    problems = preflight(params)
    text = "\n".join(problems)
    for name in ("cifar10", "cifar100", "svhn", "celeba", "textures", "tinyimagenet"):
        assert f"{name}: missing" in text
    assert "cifar-10-binary.tar.gz" in text and str(tmp_path / "data" / "cifar10") in text
    assert "model: checkpoint" in text and "celeba_ema_0.9999_499999.pt not found" in text
    assert "would run on the CPU" in text, "no GPU (pinned above), and device is 'auto'"
    assert "would run on the CPU" not in "\n".join(preflight({**params, "device": "cpu"}))
    out = tmp_path / "generated"
    with pytest.raises(SystemExit, match="nothing was computed"):
        run(params, output_dir=out)
    assert not out.exists() and not (tmp_path / "results").exists()


def test_offline_profile_has_no_problems():
    assert preflight(load_profile("offline")) == []


def test_misspelt_parameter_stops_before_any_work(tmp_path):
    params = load_profile("offline", {"n_trian": 40})
    with pytest.raises(SystemExit, match=r"parameter\(s\) n_trian are read by none of the notebooks"):
        run(params, output_dir=tmp_path / "generated")
    assert not (tmp_path / "generated").exists()


def test_notebooks_declare_exactly_what_they_read():
    """Each notebook declares only the parameters its code reads; together they read every profile key.

    (That nothing read exists only when injected is checked by running each notebook on its own defaults,
    tests/test_book.py::test_notebooks_run_by_hand_from_the_notebooks_folder.)
    """
    import re

    import nbformat
    import papermill

    from diffpath_core.book import NOTEBOOKS, ROOT

    union = set()
    for name in NOTEBOOKS:
        path = ROOT / "notebooks" / f"{name}.ipynb"
        declared = set(papermill.inspect_notebook(str(path)))
        body = "\n".join(c.source for c in nbformat.read(path, as_version=4).cells
                         if c.cell_type == "code" and "parameters" not in c.metadata.get("tags", []))
        unread = {p for p in declared if not re.search(rf"\b{p}\b", body)}
        assert not unread, f"{name} declares parameters it never reads: {sorted(unread)}"
        union |= declared
    for profile in ("offline", "paper"):
        assert set(load_profile(profile)) <= union, (profile, set(load_profile(profile)) - union)


def test_paper_preflight_finds_a_missing_training_file(tmp_path, monkeypatch):
    """Test files present, one training file absent: found before any work, not hours in."""
    from diffpath_core.datasets.paper import SOURCES, check_available

    monkeypatch.setenv("DIFFPATH_DATA", str(tmp_path))
    for rel in SOURCES["cifar10"].needs(("train", "test")):
        (tmp_path / "cifar10" / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "cifar10" / rel).write_bytes(b"x")
    assert check_available(["cifar10"]) == []
    (tmp_path / "cifar10" / "cifar-10-batches-bin" / "data_batch_3.bin").unlink()
    problems = check_available(["cifar10"])
    assert len(problems) == 1 and "data_batch_3.bin" in problems[0]
