"""SpatialPath, this project's spatial detector: its features against an explicit computation from the stored
trajectory, one trajectory per image for scores and maps, a clear refusal without its reading, and its default
as the validation protocol chose it."""
import ast
import csv
from pathlib import Path

import numpy as np
import pytest
import torch

from diffpath_core import DEFAULT_CELLS, CellForm, Extraction, SpatialPath
from diffpath_core.features import cell_features
from diffpath_core.statistics import dissimilarity_maps, score_error
from diffpath_core.trajectory import invert

ROOT = Path(__file__).resolve().parent.parent


def _explicit_cells(model, x, k, grid, channels, transform):
    """The cell vectors written out from the stored trajectory: per-pixel |r|, D|r|, |x0 − x̂0|, D, |ε|, |KΔε|,
    channel means, summed over the early (k < K/2) and the late steps, averaged over cells, transformed."""
    traj = invert(model, x, k)
    r, d = score_error(traj), dissimilarity_maps(traj)[:, :, 0]
    eps = traj.eps
    per_step = {"score": r.abs().mean(2), "score_ssim": d * r.abs().mean(2),
                "recon": (traj.x0[:, None] - traj.x0_hat).abs().mean(2), "ssim": d, "eps": eps.abs().mean(2)}
    deps = torch.zeros_like(per_step["eps"])
    deps[:, 1:] = (k * (eps[:, 1:] - eps[:, :-1])).abs().mean(2)
    per_step["deps"] = deps
    names = {"score error": ("score", "score_ssim", "ssim"), "noise": ("eps", "deps"),
             "all": ("score", "score_ssim", "recon", "ssim", "eps", "deps")}[channels]
    early = torch.arange(k) < k / 2
    planes = [per_step[q][:, steps].sum(1) for steps in (early, ~early) for q in names]  # (N, H, W) each
    stack = torch.stack(planes, 1).double()
    n, c, h, w = stack.shape
    cells = stack.reshape(n, c, grid, h // grid, grid, w // grid).mean((3, 5))
    cells = torch.log1p(cells) if transform == "log1p" else torch.sqrt(cells)
    return cells.reshape(n, c, -1).transpose(1, 2).reshape(n, -1).numpy()


@pytest.mark.parametrize("form", [CellForm(8, "all", "log1p"), CellForm(4, "score error", "sqrt", "knn"),
                                  CellForm(4, "noise", "log1p", "knn-any")])
def test_features_equal_an_explicit_computation(tiny_model, tiny_images, form):
    stats = Extraction(tiny_model, k=4, progress=False).statistics(tiny_images[:6], "cells")
    expected = _explicit_cells(tiny_model, tiny_images[:6], 4, form.grid, form.channels, form.transform)
    np.testing.assert_allclose(cell_features(stats, form), expected, rtol=1e-4, atol=1e-5)
    assert cell_features(stats, form).shape == (6, form.grid ** 2 * form.n_channels)


def test_one_trajectory_per_image_for_scores_and_maps(tiny_model, tiny_images, tmp_path, monkeypatch):
    """Fitting extracts the training images once; scores and maps of the test images come from one pass."""
    calls = []
    real = Extraction.batch_statistics

    def counted(self, x, reading="path"):
        calls.append((len(x), tuple(reading) if not isinstance(reading, str) else (reading,)))
        return real(self, x, reading)

    monkeypatch.setattr(Extraction, "batch_statistics", counted)
    for form in (CellForm(4, "all", "log1p", "gmm", 8, with_global=True), CellForm(8, "all", "log1p", "knn")):
        calls.clear()
        det = SpatialPath(tiny_model, form=form, k=2, progress=False, cache_dir=tmp_path / form.density).fit(tiny_images[:18])
        scores, maps = det.score_and_maps(tiny_images[18:])
        assert [n for n, _ in calls] == [18, 6], "one network pass for the training images, one for the test images"
        assert all(set(r) == set(form.readings) for _, r in calls)
        assert maps.maps.shape == (6, 16, 16) and scores.shape == (6,)
        np.testing.assert_allclose(scores, det.score_samples(tiny_images[18:]))


def test_the_worst_cell_is_where_the_map_peaks(tmp_path):
    """On the shipped model: the memory's score is minus the worst cell's distance, the map's cells are those
    distances, and a bright square planted on the dark background is where the map peaks."""
    from diffpath_core import load_dataset

    train = load_dataset("fashion_mnist", "train", limit=60, seed=0)
    test = load_dataset("fashion_mnist", "test", limit=6, seed=0).images.clone()
    test[:, :, 2:8, 2:8] = 1.0  # a bright 6×6 square in the top-left corner, where garments rarely reach
    det = SpatialPath("fashion_mnist", form=CellForm(8, "all", "log1p", "knn"), k=10, progress=False,
                      cache_dir=tmp_path).fit(train)
    stats = det.extraction().statistics(test, det.readings)
    distances = det.detector_.cell_distances(cell_features(stats, det.form))
    np.testing.assert_allclose(det.score_statistics(stats), -distances.max(1))
    maps = det.anomaly_maps(test).maps
    assert maps.shape == (6, 32, 32)
    for m, d in zip(maps, distances):
        y, x = np.unravel_index(np.argmax(m), m.shape)
        assert y < 10 and x < 10, (y, x)
        assert np.argmax(d) in (0, 1, 8, 9), "the worst cell is one the square covers"


def test_statistics_without_cell_sums_are_refused_by_name(tiny_model, tiny_images):
    stats = Extraction(tiny_model, k=2, progress=False).statistics(tiny_images, "path")
    with pytest.raises(KeyError, match="'cells' reading"):
        SpatialPath(form=CellForm()).fit_statistics(stats)


def test_default_is_the_validation_protocols_choice():
    from diffpath_core.validation import chosen_cell_form, spatial_candidates, spatial_simplicity

    with open(ROOT / "data" / "reference" / "spatial_selection.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len([r for r in rows if r["family"] == "spatial"]) == len(spatial_candidates())
    assert {r["family"] for r in rows} == {"spatial", "reference: DiffPathV2", "reference: DiffPathV2-PS"}
    assert chosen_cell_form(rows) == DEFAULT_CELLS
    chosen = next(r for r in rows if r["chosen"] == "True")
    spatial = [r for r in rows if r["family"] == "spatial"]
    tied = [r for r in spatial if r["tied_with_best"] == "True"]
    assert all((r["tied_with_best"] == "True") == (float(r["lead_low"]) <= 0) for r in spatial)
    assert chosen in tied and ast.literal_eval(chosen["simplicity"]) == min(ast.literal_eval(r["simplicity"])
                                                                            for r in tied), "the simplest tied form"
    assert spatial_simplicity(DEFAULT_CELLS) == ast.literal_eval(chosen["simplicity"])


def test_the_form_is_in_the_score_caches_key():
    """Scores are cached by the detector's token: another form (the default included) must give another key."""
    from dataclasses import replace

    assert SpatialPath().token() == SpatialPath(form=DEFAULT_CELLS).token()
    assert SpatialPath().token() != SpatialPath(form=replace(DEFAULT_CELLS, transform="sqrt")).token()
