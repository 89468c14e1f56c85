"""Anomaly maps: the defects they are judged on, the maps themselves, the metrics, the command and the defaults."""
import csv
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from scipy import ndimage
from sklearn.metrics import roc_auc_score, roc_curve

from diffpath_core import DiffPathV2, Extraction, load_dataset
from diffpath_core.api import DEFAULT_MAPS
from diffpath_core.cli import main
from diffpath_core.datasets.defects import CHANGED, DEFECT_KINDS, make_defects
from diffpath_core.errors import InputError
from diffpath_core.maps import MapForm, MapReference, anomaly_maps, map_candidates
from diffpath_core.metrics import aupro, image_auroc, pixel_auroc

ROOT = Path(__file__).resolve().parent.parent


# ----------------------------------------------------------------------------- defects

def _in_its_region(kind, mask, values, size, side):
    """Whether the changed pixels of one image (``mask`` (H, W) bool, their values (C, n)) lie in the region a defect
    of ``kind`` is put in, judged from the pixels alone: a size × size box; a thin straight line of white, at most
    12/32 of the side long (scratch); an ellipse of one value inside a size × size box (blot)."""
    ys, xs = np.nonzero(mask)
    height, width = np.ptp(ys) + 1, np.ptp(xs) + 1
    if kind == "scratch":  # along the pixels' principal axis: at most a pixel off it, at most the length along
        points = np.c_[ys, xs] - np.c_[ys, xs].mean(0)
        along, across = np.linalg.svd(points, full_matrices=False)[2] if len(points) > 1 else np.eye(2)
        return bool((values == 1.0).all() and np.abs(points @ across).max() <= 1.0
                    and np.ptp(points @ along) <= 12 * side / 32 + 1.5)
    if height > size or width > size:
        return False
    if kind == "blot":  # inside the ellipse inscribed in the changed pixels' bounding box (grown by a pixel)
        cy, cx = (ys.min() + ys.max()) / 2, (xs.min() + xs.max()) / 2
        ellipse = ((ys - cy) / (height / 2 + 0.5)) ** 2 + ((xs - cx) / (width / 2 + 0.5)) ** 2 <= 1.0
        return bool((values == values[:, :1]).all() and ellipse.all())
    return True


@pytest.mark.parametrize("side", [16, 32, 64, 96, 128])
@pytest.mark.parametrize("kind", DEFECT_KINDS)
def test_defects_are_local_seeded_and_masked_exactly(kind, side):
    """At every model size: outside the mask each defective image is the clean one, bit for bit; inside, every pixel
    moved by more than CHANGED; and the changed pixels lie in the region the defect was put in."""
    # halved, so no clean value lies within CHANGED of a blot's (|v| >= 0.6) or a scratch's (1): every pixel of those
    # regions changes, and the changed pixels show the region's whole shape
    clean = 0.5 * load_dataset("fashion_mnist", "test", limit=12, seed=0, size=side).images
    size = side * 5 // 16
    a, b = make_defects(clean, kind, seed=1, size=size), make_defects(clean, kind, seed=1, size=size)
    assert torch.equal(a.images, b.images) and torch.equal(a.masks, b.masks), "seeded"
    assert not torch.equal(make_defects(clean, kind, seed=2, size=size).images, a.images)
    assert (a.kind, a.seed, a.size) == (kind, 1, size)
    differs = (a.images != clean).any(1)
    assert not (differs & ~a.masks).any(), "outside the mask: the clean image, bit for bit"
    assert ((a.images - clean).abs().amax(1)[a.masks] > CHANGED).all(), "inside the mask: a visible change"
    for i in range(len(clean)):
        if a.masks[i].any():
            assert _in_its_region(kind, a.masks[i].numpy(), a.images[i][:, a.masks[i]].numpy(), size, side), i
    assert a.masks.any(dim=(1, 2)).float().mean() >= 0.5, "most images get a visible defect"
    assert a.masks.float().mean() < 0.2, "defects are local"
    assert float(a.images.min()) >= -1 and float(a.images.max()) <= 1


def test_a_defect_sets_identity_names_its_clean_images_kind_seed_and_size():
    """Another seed, size, kind or clean set is another cache entry; the same defects are the same entry."""
    clean = load_dataset("fashion_mnist", "test", limit=6, seed=0).images

    def key(images=clean, kind="blot", seed=0, size=None):
        return make_defects(images, kind, seed=seed, size=size).as_image_set().identity

    assert key() == key()
    assert len({key(), key(seed=1), key(size=6), key(kind="scratch"), key(images=clean.flip(-1))}) == 5
    with pytest.raises(InputError, match="defect size 40 does not fit 32×32 images"):
        make_defects(clean, "blot", size=40)


# ----------------------------------------------------------------------------- metrics

def _regions_example(rounded: bool):
    """Six 12×12 maps with four defect regions (two in one image); off the grid of normal values unless rounded."""
    rng = np.random.default_rng(0)
    maps = rng.normal(size=(6, 12, 12))
    masks = np.zeros((6, 12, 12), bool)
    masks[0, 2:5, 2:5] = True
    masks[1, 6:9, 1:3] = True
    masks[1, 0:2, 9:12] = True
    masks[3, 5:10, 5:7] = True
    maps[masks] += 1.0
    return (np.round(maps, 1) if rounded else maps), masks


def _aupro_by_regions(maps, masks, limit):
    """AUPRO written another way: the PRO curve is the mean of the regions' own ROC curves (each region's pixels
    against all normal pixels) on one FPR axis, so its area up to ``limit`` is the mean of their areas, each from
    scikit-learn's ROC curve with linear interpolation at the limit."""
    normal = maps[~masks]
    areas = []
    for m, k in zip(maps, masks):
        labelled, count = ndimage.label(k, structure=np.ones((3, 3)))
        for r in range(1, count + 1):
            region = m[labelled == r]
            fpr, tpr, _ = roc_curve(np.r_[np.ones(region.size), np.zeros(normal.size)], np.r_[region, normal],
                                    drop_intermediate=False)
            x, y = fpr[fpr <= limit], tpr[fpr <= limit]
            if x[-1] < limit:
                x, y = np.r_[x, limit], np.r_[y, np.interp(limit, fpr, tpr)]
            areas.append(np.trapezoid(y, x) / limit)
    return float(np.mean(areas))


@pytest.mark.parametrize("rounded", [False, True])
def test_pixel_metrics_match_independent_computations(rounded):
    """Pixel AUROC against scikit-learn; AUPRO against the mean of the regions' scikit-learn ROC areas, within 1e-6,
    on values off the normal pixels' grid (each defect value its own threshold) and on rounded ones (ties)."""
    maps, masks = _regions_example(rounded)
    assert pixel_auroc(maps, masks) == pytest.approx(roc_auc_score(masks.ravel(), maps.ravel()), abs=1e-12)
    for limit in (0.3, 1.0):
        assert aupro(maps, masks, limit) == pytest.approx(_aupro_by_regions(maps, masks, limit), abs=1e-6), limit
    perfect = np.where(masks, 10.0, 0.0) + 0.01 * np.random.default_rng(1).random(masks.shape)
    assert aupro(perfect, masks) == pytest.approx(1.0) and pixel_auroc(perfect, masks) == 1.0
    assert image_auroc(maps[:3] + 5, maps[3:]) == 1.0


def test_aupro_counts_region_values_between_normal_ones():
    """Normal pixels 0 and 1, the defect pixel 0.5: at FPR ½ (threshold 1) the PRO is 0, and just below 1 the
    defect pixel is found with no more false positives, so the curve rises at FPR ½: area ½ over FPR [0, 1].
    Thresholds at normal values only would draw a diagonal and give ¼."""
    maps = np.array([[[0.0, 1.0, 0.5]]])
    masks = np.array([[[False, False, True]]])
    assert aupro(maps, masks, fpr_limit=1.0) == pytest.approx(0.5, abs=1e-12)


def test_pixel_auroc_samples_are_exact_and_drawn_by_image():
    """Each resample equals scikit-learn's weighted pixel AUROC with each image's pixels weighted by how often the
    image was drawn; maps of one unit (a defective image and its clean original) share a draw, and two calls on
    one set of units draw the same images."""
    from diffpath_core.metrics import pixel_auroc_samples, resample_counts

    maps, masks = _regions_example(True)
    pooled = np.concatenate([maps, maps[::-1] - 0.5])
    pooled_masks = np.concatenate([masks, np.zeros_like(masks)])
    units = np.r_[np.arange(6), np.arange(6)]
    samples = pixel_auroc_samples(pooled, pooled_masks, n_boot=15, seed=2, units=units, set_key="val")
    counts = resample_counts("val", 6, 15, 2)
    drawn = [b for b in range(15) if counts[b][[0, 1, 3]].sum() > 0]  # a resample with a defective image
    assert len(drawn) >= 10 and np.isnan(np.delete(samples, drawn)).all()
    for b in drawn:
        weights = np.repeat(counts[b][units], masks[0].size)
        expected = roc_auc_score(pooled_masks.ravel(), pooled.ravel(), sample_weight=weights)
        assert samples[b] == pytest.approx(expected, abs=1e-12)
    again = pixel_auroc_samples(pooled * 2, pooled_masks, n_boot=15, seed=2, units=units, set_key="val")
    np.testing.assert_allclose(again, samples, atol=1e-12)  # scaled maps, the same draws: the same AUROCs


# ----------------------------------------------------------------------------- maps

def test_z_scored_map_matches_an_explicit_per_pixel_reference(tiny_model, tiny_images):
    """The reference keeps sums and outer products; a z-scored or divided map must equal the one computed from the
    reference images' own maps, pixel by pixel."""
    ex = Extraction(tiny_model, k=3, progress=False)
    ref_images, test_images = tiny_images[:16], tiny_images[16:]
    reference = MapReference.from_totals(ex.statistics(ref_images, "mapref"))
    ref_sums = ex.statistics(ref_images, "maps")["map_sums"].astype(np.float64)
    test_sums = ex.statistics(test_images, "maps")["map_sums"]
    for form in (MapForm("score", "amplify", 2.0, "all", "z"), MapForm("recon", steps="early", normalise="ratio")):
        raw = np.einsum("i,nihw->nhw", form.coefficients(), ref_sums)
        mean, std = raw.mean(0), raw.std(0)
        scale = std if form.normalise == "z" else mean
        scale = np.maximum(scale, np.median(scale))
        test_raw = np.einsum("i,nihw->nhw", form.coefficients(), test_sums.astype(np.float64))
        expected = (test_raw - mean) / scale if form.normalise == "z" else test_raw / scale
        np.testing.assert_allclose(anomaly_maps(test_sums, form, reference), expected, rtol=2e-3, atol=2e-3)


def test_maps_shape_determinism_one_pass_and_a_planted_square(tmp_path):
    """On the shipped model: maps are (N, H, W) and the same twice; scores and maps come from one trajectory per
    image; a bright square planted on the dark background is where the map peaks."""
    train = load_dataset("fashion_mnist", "train", limit=60, seed=0)
    test = load_dataset("fashion_mnist", "test", limit=6, seed=0).images.clone()
    test[:, :, 2:8, 2:8] = 1.0  # a bright 6×6 square in the top-left corner, where garments rarely reach
    det = DiffPathV2("fashion_mnist", k=10, progress=False, cache_dir=tmp_path).fit(train)
    calls = []
    real = Extraction.batch_statistics

    def counted(self, x, reading="path"):
        calls.append((len(x), reading))
        return real(self, x, reading)

    Extraction.batch_statistics = counted
    try:
        scores, maps = det.score_and_maps(test)
    finally:
        Extraction.batch_statistics = real
    assert [n for n, _ in calls] == [6] and set(calls[0][1]) == {"path", "maps", "cells"}, \
        "one pass for both (and the cells that ride in it)"
    assert maps.maps.shape == (6, 32, 32) and maps.original is None
    np.testing.assert_array_equal(det.anomaly_maps(test).maps, maps.maps)
    np.testing.assert_allclose(scores, det.score_samples(test))
    for m in maps.maps:
        y, x = np.unravel_index(np.argmax(m), m.shape)
        assert 1 <= y <= 8 and 1 <= x <= 8, (y, x)


def test_maps_need_a_fit_with_images(tiny_model, tiny_images):
    det = DiffPathV2(tiny_model, k=2, progress=False)
    det.fit_statistics(Extraction(tiny_model, k=2, progress=False).statistics(tiny_images))
    with pytest.raises(RuntimeError, match="no map reference"):
        det.anomaly_maps(tiny_images)


def test_map_families_keep_their_promises():
    assert all(f.weight != "none" for f in map_candidates("DiffPathV2")), "DiffPathV2's map keeps SSIM weighting on"
    assert {f.quantity for f in map_candidates("DiffPath")} == {"eps", "deps"}
    first = map_candidates("variant")[0]
    assert (first.normalise, first.smooth, first.steps) == ("none", 0.0, "all"), "simplest first"


def test_defaults_are_the_map_protocols_choice():
    from diffpath_core.validation import chosen_map_forms

    with open(ROOT / "data" / "reference" / "map_selection.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert {r["family"] for r in rows} == {"DiffPath", "DiffPathV2", "score error, SSIM off", "variant"}
    assert chosen_map_forms(rows) == DEFAULT_MAPS


# ----------------------------------------------------------------------------- the command

def _pngs(folder, n, seed, size=16):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        a = rng.normal(128, 40, (size + 4 * (i % 2), size)).clip(0, 255).astype(np.uint8)  # two sizes
        Image.fromarray(a, "L").save(folder / f"img_{i:02d}.png")
    return folder


def test_cli_maps_writes_an_overlay_per_image_and_names_bad_files(tiny_model_dir, tmp_path, capsys):
    normal, new = _pngs(tmp_path / "normal", 24, 0), _pngs(tmp_path / "new", 5, 1)
    out = tmp_path / "out"
    common = ["--model", str(tiny_model_dir), "-k", "2", "--cache-dir", str(tmp_path / "cache"), "--quiet",
              "--resize"]
    assert main(["maps", "--id", str(normal), "--images", str(new), "--out", str(out), *common]) == 0
    rows = list(csv.DictReader(open(out / "maps.csv")))
    assert [r["image"] for r in rows] == [f"img_{i:02d}" for i in range(5)]
    for r in rows:
        with Image.open(out / r["overlay"]) as im:
            assert im.size[0] > 100, "a figure, not a bare map"
    assert np.load(out / "maps.npy").shape == (5, 16, 16)
    (new / "broken.png").write_bytes(b"not a png")
    assert main(["maps", "--id", str(normal), "--images", str(new), "--out", str(out), *common]) == 2
    assert "broken.png: unreadable" in capsys.readouterr().err


def test_original_sizes_come_back_for_folder_images(tiny_model, tmp_path):
    from diffpath_core.datasets import load_image_folder

    folder = _pngs(tmp_path / "imgs", 4, 2)
    images = load_image_folder(folder, size=16, channels=1, resize_images=True)
    det = DiffPathV2(tiny_model, k=2, progress=False).fit(load_image_folder(_pngs(tmp_path / "ref", 12, 3), size=16,
                                                                          channels=1, resize_images=True))
    maps = det.anomaly_maps(images)
    assert [m.shape for m in maps.original] == [(16, 16), (20, 16), (16, 16), (20, 16)]


def _maps_cli(tiny_model_dir, normal, images, out, cache, *extra):
    """``diffpath maps`` on the tiny model; returns the warnings it gave."""
    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always")
        assert main(["maps", "--id", str(normal), "--images", str(images), "--out", str(out), "--model",
                     str(tiny_model_dir), "-k", "2", "--cache-dir", str(cache), "--quiet", "--resize", *extra]) == 0
    return [str(w.message) for w in said]


def test_cli_maps_defects_of_another_seed_get_their_own_sums(tiny_model_dir, tmp_path):
    """``--defects blot --seed 1`` after ``--seed 0`` on the same images and cache folder: seed 1's own maps (those
    of a fresh cache), not seed 0's, found under an entry of their own (no entry caught holding other images)."""
    normal, new = _pngs(tmp_path / "normal", 24, 0), _pngs(tmp_path / "new", 6, 1)

    def maps(seed, cache):
        out = tmp_path / f"out-{seed}-{cache}"
        said = _maps_cli(tiny_model_dir, normal, new, out, tmp_path / cache, "--defects", "blot", "--seed", str(seed))
        assert not [m for m in said if "cache entry" in m], said
        return np.load(out / "maps.npy")

    seed0, seed1 = maps(0, "shared"), maps(1, "shared")
    np.testing.assert_array_equal(seed1, maps(1, "fresh"))
    assert not np.array_equal(seed0, seed1)


def test_cli_maps_names_overlays_by_path_and_converts_each_image_once(tiny_model_dir, tmp_path, monkeypatch):
    """a/x.png and b/x.png give two overlays (a/x_map.png, b/x_map.png), x.png beside x.jpg keep their suffixes;
    the overlays convert each image once (the work grows with the images, not with their square)."""
    from diffpath_core.datasets import ImageSet

    normal, new = _pngs(tmp_path / "normal", 24, 0), tmp_path / "new"
    _pngs(new / "a", 5, 1), _pngs(new / "b", 5, 2)
    Image.open(new / "a" / "img_00.png").convert("L").save(new / "a" / "img_00.jpg")
    produced, real = {}, ImageSet.batch

    def counted(self, lo, hi):
        x = real(self, lo, hi)
        produced[self.name] = produced.get(self.name, 0) + len(x)
        return x

    monkeypatch.setattr(ImageSet, "batch", counted)
    out = tmp_path / "out"
    _maps_cli(tiny_model_dir, normal, new, out, tmp_path / "cache")
    rows = list(csv.DictReader(open(out / "maps.csv")))
    assert [r["image"] for r in rows] == ["a/img_00_jpg", "a/img_00_png"] + [f"a/img_{i:02d}" for i in range(1, 5)] \
        + [f"b/img_{i:02d}" for i in range(5)]
    assert [r["overlay"] for r in rows][-5:] == [f"b/img_{i:02d}_map.png" for i in range(5)]
    assert all((out / r["overlay"]).is_file() for r in rows)
    assert len(list(out.rglob("*_map.png"))) == len(rows) == 11
    assert produced["new"] <= 2 * len(rows), produced  # once for the statistics, once for the overlays
