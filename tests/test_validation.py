"""The validation protocol that chooses DiffPathV2's default: its split, its outliers, its tie band, its table."""
import csv
from pathlib import Path

import numpy as np
import pytest
import torch

from diffpath_core import DEFAULT_V2, DiffPathV2, Extraction, PaperForm, VariantFormulation, auroc
from diffpath_core.datasets import ImageSet
from diffpath_core.metrics import Side
from diffpath_core.metrics import interval, mean_auroc_samples
from diffpath_core.validation import (CORRUPTIONS, SIMPLICITY, best_paper_form, detector_for, mosaics,
                                      paper_form_candidates, select_formulation, simplicity, synthetic_outliers,
                                      tie_band_choice, validation_data, validation_split)

ROOT = Path(__file__).resolve().parent.parent


def test_split_is_disjoint_seeded_and_holds_out_whole_classes():
    labels = np.repeat(np.arange(10), 30)
    split = validation_split(len(labels), labels, seed=0)
    fit, val, held = split["fit"], split["val"], split["held_out"]
    assert len(split["held_out_classes"]) == 2 and set(labels[held]) == set(split["held_out_classes"])
    assert not set(fit) & set(val) and not (set(fit) | set(val)) & set(held)
    assert len(fit) + len(val) + len(held) == len(labels)
    assert not set(labels[fit]) & set(split["held_out_classes"]), "no held-out class is fitted"
    assert validation_split(len(labels), labels, seed=0)["held_out_classes"] == split["held_out_classes"]
    no_labels = validation_split(300, None, seed=0)
    assert len(no_labels["held_out"]) == 0 and len(no_labels["fit"]) + len(no_labels["val"]) == 300


def test_mosaics_are_made_of_four_other_images():
    g = torch.Generator().manual_seed(0)
    images = torch.rand(12, 1, 8, 8, generator=g) * 2 - 1
    out = mosaics(images, seed=1)
    for m in out:
        sources = []
        for ys, xs in ((slice(0, 4), slice(0, 4)), (slice(0, 4), slice(4, 8)), (slice(4, 8), slice(0, 4)),
                       (slice(4, 8), slice(4, 8))):
            match = [i for i in range(12) if torch.equal(images[i, :, ys, xs], m[:, ys, xs])]
            assert len(match) == 1
            sources.append(match[0])
        assert len(set(sources)) == 4, "each quadrant from a different image"
    assert torch.equal(synthetic_outliers(images, "mosaic", seed=1), out)


def _sides(val, kinds):
    """(ID-validation, outlier) sides of each kind: the validation set shared, each kind a set of its own."""
    return [(Side("validation", val), Side(f"kind {i}", k)) for i, k in enumerate(kinds)]


def test_tie_band_picks_the_simpler_candidate_on_a_planted_tie():
    """B is A plus jitter (a difference far inside the noise): the simpler A is chosen. B scoring every validation
    image 0.06 above A is a lead of about 0.015 AUROC on every kind, inside each candidate's own interval but
    certain when both are resampled together: B is chosen (an unpaired band would call it a tie). Ineligible
    candidates (an ablation) are ranked but never chosen."""
    rng = np.random.default_rng(0)
    val = rng.normal(1.0, 1.0, 300)
    kinds = [rng.normal(0.0, 1.0, 300) for _ in range(3)]
    noise = [rng.normal(0, 0.02, 300) for _ in range(4)]
    a = _sides(val, kinds)
    b = _sides(val + noise[0], [k + n for k, n in zip(kinds, noise[1:])])  # B is A plus jitter: a tie
    ablation = _sides(val + 2.0, kinds)                                  # best of all, but not eligible
    rank = {"A": 0, "B": 1, "ablation": -1}
    mean = lambda tasks: np.mean([auroc(p.scores, n.scores) for p, n in tasks])  # noqa: E731
    assert mean(b) != mean(a)
    scores = {"A": a, "B": b, "ablation": ablation}
    if mean(b) < mean(a):  # make B the (noisy) best
        scores = {"A": b, "B": a, "ablation": ablation}
    chosen, standing = tie_band_choice(scores, ["A", "B"], rank.get, n_boot=500)
    assert standing["B"]["lead"] == 0.0 and standing["A"]["lead"] > 0 and standing["A"]["tied"]
    assert chosen == "A"
    slightly = _sides(val + 0.06, kinds)
    chosen, standing = tie_band_choice({"A": a, "B": slightly}, ["A", "B"], rank.get, n_boot=500)
    own = standing["A"]["mean_high"] - standing["A"]["mean_low"]
    assert 0.005 < standing["A"]["lead"] < own / 2, "a lead well inside A's own interval"
    assert chosen == "B" and not standing["A"]["tied"] and standing["A"]["lead_low"] > 0


def test_simplicity_order_is_the_stated_one():
    forms = sorted(paper_form_candidates(), key=simplicity)
    assert forms[0] == PaperForm("path", "image", "amplify", 1.0)
    assert forms[-1] == PaperForm("fresh", "noise", "ssim", 0.0)
    assert [f.lam for f in forms[:6]] == [1.0, 0.5, 2.0, 4.0, 8.0, 0.0]
    assert all(f.weight != "none" for f in paper_form_candidates()), "SSIM stays on in every candidate"
    assert SIMPLICITY["noise"] == ("path", "fresh")


def _labelled_set():
    """Four classes of 16×16 images (smoothed noise at four smoothing levels), 20 each."""
    g = torch.Generator().manual_seed(2)
    images, labels = [], []
    for c, width in enumerate((1, 3, 5, 7)):
        x = torch.rand(20, 1, 16, 16, generator=g) * 2 - 1
        images.append(torch.nn.functional.avg_pool2d(x, width, 1, width // 2).clamp(-1, 1))
        labels += [c] * 20
    return ImageSet("toy", "train", torch.cat(images), np.array(labels), "toy-identity")


def test_select_formulation_end_to_end(tiny_model, tmp_path):
    """The table on a labelled toy set: a row per candidate, best first, exactly one chosen (eligible, tied with
    the best), and a row's AUROC equal to a recomputation with the same split."""
    train = _labelled_set()
    candidates = [PaperForm("path", "image", "amplify", 1.0), PaperForm("path", "image", "ssim", 0.0),
                  PaperForm("path", "image", "none", 0.0), VariantFormulation()]
    ex = Extraction(tiny_model, k=2, cache_dir=tmp_path, progress=False)
    rows = select_formulation(ex, train, candidates=candidates, n_boot=200)
    assert len(rows) == 4 and [r["mean_auroc"] for r in rows] == sorted((r["mean_auroc"] for r in rows), reverse=True)
    chosen = [r for r in rows if r["chosen"]]
    assert len(chosen) == 1 and chosen[0]["family"] == "paper form" and chosen[0]["tied_with_best"]
    assert {r["family"] for r in rows} == {"paper form", "paper form, SSIM off (ablation)", "variant"}
    assert rows[0]["n_held_out"] == 20 and rows[0]["n_fit"] + rows[0]["n_val"] == 60
    split = validation_split(80, train.labels, 0)
    stats = ex.statistics(train)
    part = {name: {k: v[split[name]] for k, v in stats.items()} for name in ("fit", "val", "held_out")}
    det = DiffPathV2(form=candidates[0]).fit_statistics(part["fit"])
    row = next(r for r in rows if r["label"] == candidates[0].label())
    assert row["auroc_held-out classes"] == pytest.approx(auroc(det.score_statistics(part["val"]),
                                                                det.score_statistics(part["held_out"])))
    assert best_paper_form(rows) == PaperForm(**eval(chosen[0]["switches"]))
    # the intervals: one draw of the validation images for every kind (a corruption drawn with the image it was
    # made from), one of the mosaics and one of the held-out classes, the same draws for every candidate
    _, part_stats, outliers = validation_data(ex, train, ("path",))
    samples = {}
    for c in candidates:
        det = detector_for(c).fit_statistics(part_stats["fit"])
        s_val = det.score_statistics(part_stats["val"])
        tasks = [(Side("validation", s_val), Side("validation" if kind in CORRUPTIONS else kind,
                                                   det.score_statistics(o))) for kind, o in outliers.items()]
        samples[c] = mean_auroc_samples(tasks, 200, 0)
    for c in candidates:
        r = next(r for r in rows if r["label"] == c.label())
        assert (r["mean_low"], r["mean_high"]) == interval(samples[c])
    best = max([c for c in candidates if isinstance(c, PaperForm) and c.weight != "none"],
               key=lambda c: next(r for r in rows if r["label"] == c.label())["mean_auroc"])
    for c in candidates:
        r = next(r for r in rows if r["label"] == c.label())
        assert (r["lead_low"], r["lead_high"]) == interval(samples[best] - samples[c])
        assert r["tied_with_best"] == (r["lead_low"] <= 0), "tied exactly when the lead's interval reaches 0"


def test_default_is_the_validation_protocols_choice():
    with open(ROOT / "data" / "reference" / "formulation_selection.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert {r["family"] for r in rows} == {"paper form", "paper form, SSIM off (ablation)", "variant"}
    assert len([r for r in rows if r["family"] == "paper form"]) == len(paper_form_candidates())
    assert {"auroc_held-out classes", "auroc_mosaic", "lead_low", "tied_with_best"} <= set(rows[0])
    assert best_paper_form(rows) == DEFAULT_V2


def test_select_map_forms_chooses_the_simplest_tied_form_and_its_numbers_recompute(tiny_model, tmp_path,
                                                                                    monkeypatch):
    """The maps' protocol on a toy set: every form of every family ranked, one default per eligible family (none
    for the SSIM-off ablation), each the simplest form tied with its family's best; the chosen DiffPathV2 row's
    pixel AUROCs equal a recomputation from the same split, defects and reference."""
    from diffpath_core.datasets.defects import make_defects
    from diffpath_core.maps import MapForm, MapReference, anomaly_maps, map_candidates
    from diffpath_core.metrics import pixel_auroc
    from diffpath_core.validation import MAP_FAMILIES, VALIDATION_DEFECTS, select_map_forms

    import diffpath_core.metrics as metrics

    calls, real = [], metrics.pixel_auroc_samples

    def recorded(maps, masks, n_boot=200, seed=0, units=None, set_key="images"):
        calls.append((set_key, seed, units))
        return real(maps, masks, n_boot, seed, units=units, set_key=set_key)

    monkeypatch.setattr(metrics, "pixel_auroc_samples", recorded)
    train = _labelled_set()
    ex = Extraction(tiny_model, k=2, cache_dir=tmp_path, progress=False)
    rows = select_map_forms(ex, train, n_reference=40, n_val=24, n_boot=100)
    assert {r["family"] for r in rows} == set(MAP_FAMILIES)
    for family in MAP_FAMILIES:
        mine = [r for r in rows if r["family"] == family]
        assert len(mine) == len(map_candidates(family))
        chosen = [r for r in mine if r["chosen"]]
        if family == "score error, SSIM off":
            assert not chosen
            continue
        assert len(chosen) == 1 and chosen[0]["tied_with_best"]
        assert chosen[0]["simplicity"] == min(r["simplicity"] for r in mine if r["tied_with_best"])
        for r in mine:  # tied exactly when the lead's interval reaches 0 (not resampled: far behind, not tied)
            assert r["tied_with_best"] == (not np.isnan(r["lead_low"]) and r["lead_low"] <= 0)
    # every pixel bootstrap drew the same validation images: one key, one seed, a defect with its clean original
    assert calls and {(key, seed) for key, seed, _ in calls} == {("validation images", 0)}
    assert all(np.array_equal(units, np.r_[np.arange(24), np.arange(24)]) for _, _, units in calls)
    row = next(r for r in rows if r["family"] == "DiffPathV2" and r["chosen"])
    form = MapForm(**eval(row["form"]))
    perm = np.random.default_rng(0).permutation(len(train))
    ref, val = np.sort(perm[:40]), np.sort(perm[40:64])
    reference = MapReference.from_totals(ex.statistics(train.images[ref], "mapref"))
    clean = anomaly_maps(ex.statistics(train.images[val], "maps")["map_sums"], form, reference)
    for kind in VALIDATION_DEFECTS:
        d = make_defects(train.images[val], kind, seed=0, source=train.name)
        defective = anomaly_maps(ex.statistics(d.images, "maps")["map_sums"], form, reference)
        expected = pixel_auroc(np.concatenate([defective, clean]),
                               np.concatenate([d.masks.numpy(), np.zeros_like(d.masks.numpy())]))
        assert row[f"pixel_auroc_{kind}"] == pytest.approx(expected, abs=1e-9), kind
