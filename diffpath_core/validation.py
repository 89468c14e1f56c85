"""Choosing DiffPathV2's open switches without touching any reported pair, and without picking noise.

Protocol (ID training images only):

1. If the images have class labels, a seeded fifth of the classes is **held out**: its images are semantic
   outliers, never fitted. The rest is split 70/30 into a fit part and an ID-validation part.
2. Outliers are made from ID-validation images: four corruptions (noise, blur, contrast, rotation: covariate
   shift) and **mosaics** (each the four quadrants of four different validation images: every part is ID, the
   whole is not). With the held-out classes that is six kinds, two of them semantic.
3. Every candidate is fitted on the fit part; its score is the mean over kinds of the AUROC of ID-validation
   against that kind, with a joint stratified bootstrap (:func:`metrics.joint_bootstrap`): each draw resamples
   the validation images once for every kind (a corruption of validation image i goes with image i), the
   mosaics and the held-out-class images once each, and the same draws serve every candidate.
4. **Tie band.** A candidate is tied with the best one when the paired bootstrap interval (95 %, the same
   resampled images for both) of the best's lead contains zero. DiffPathV2's default is the *simplest* tied
   candidate, in the order :data:`SIMPLICITY` fixes in advance; it is never chosen on a difference inside
   the noise.

Every DiffPathV2 candidate keeps the SSIM weighting on, since that is the paper's description; "SSIM off" is
ranked in the same table as an ablation and cannot become the default. This project's variant formulations
are ranked under their own family and never become "DiffPathV2".
"""
from __future__ import annotations

import itertools

import numpy as np
import torch

from .api import DEFAULT_PS, DEFAULT_V2, DiffPathV2, DiffPathV2Variant, SpatialPath
from .datasets import ImageSet
from .extraction import Extraction, require_extraction
from .features import PF_PAIRS, PF_READINGS, CellForm, PaperForm, VariantFormulation
from .statistics import READINGS
from .metrics import BOOT_SEED, LEVEL, Side, auroc, interval, mean_auroc_samples

CORRUPTIONS = ("noise", "blur", "contrast", "rotation")   # covariate shift
SEMANTIC = ("held-out classes", "mosaic")                  # what the images show, not how they were taken
OUTLIER_KINDS = CORRUPTIONS + SEMANTIC
LAMBDAS = (0.5, 1.0, 2.0, 4.0, 8.0)
HELD_OUT_SHARE = 0.2
N_BOOT_SELECT = 1000
# Outlier kinds made image by image from the validation images are resampled with them (one draw of the validation
# set serves both sides); mosaics (four images each) and the held-out classes are sets of their own.
VALIDATION_DRAWS = {kind: "validation" for kind in CORRUPTIONS}

# Simplicity, fixed before any run: one network pass per step before two (the path's own noise before fresh
# noise); the SSIM of the images the published description names (x0 and its estimate) before that of the
# noise maps; the plain amplification w = 1 + D before tuned strengths (the further λ is from 1, the more
# tuned), and those before w = D, which drops the unweighted error altogether.
SIMPLICITY = {"noise": ("path", "fresh"), "ssim_pair": ("image", "noise"),
              "weight": ((1.0, "amplify"), (0.5, "amplify"), (2.0, "amplify"), (4.0, "amplify"),
                         (8.0, "amplify"), (0.0, "ssim"))}


def simplicity(form: PaperForm) -> tuple:
    """A form's place in :data:`SIMPLICITY` (smaller is simpler); weights outside the list come after it."""
    weights = SIMPLICITY["weight"]
    weight = (form.lam if form.weight == "amplify" else 0.0, form.weight)
    return (SIMPLICITY["noise"].index(form.noise), SIMPLICITY["ssim_pair"].index(form.ssim_pair),
            weights.index(weight) if weight in weights else len(weights), form.lam)


# ----------------------------------------------------------------------------- outliers made from ID images

def synthetic_outliers(images: torch.Tensor, kind: str, seed: int = 0) -> torch.Tensor:
    """Corrupt ID images into near outliers, or assemble mosaics of them; deterministic in ``seed``; in [-1, 1]."""
    import kornia

    g = torch.Generator().manual_seed(seed)
    if kind == "noise":
        return (images + 0.3 * torch.randn(images.shape, generator=g)).clamp(-1, 1)
    if kind == "blur":
        return kornia.filters.gaussian_blur2d(images, (7, 7), (1.5, 1.5), border_type="reflect")
    if kind == "contrast":
        mean = images.mean(dim=(1, 2, 3), keepdim=True)
        return (mean + 0.4 * (images - mean)).clamp(-1, 1)
    if kind == "rotation":
        return torch.rot90(images, 1, dims=(2, 3))
    if kind == "mosaic":
        return mosaics(images, seed)
    raise ValueError(f"unknown outlier kind {kind!r}; known: {CORRUPTIONS + ('mosaic',)}")


def mosaics(images: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """One mosaic per image: its four quadrants taken from four different images of the set (seeded)."""
    n, _, h, w = images.shape
    if n < 4:
        raise ValueError(f"mosaics need at least 4 images, got {n}")
    rng = np.random.default_rng(seed)
    out = images.clone()
    sources = np.stack([rng.permutation(n) for _ in range(4)], axis=1)  # (n, 4) source image per quadrant
    for row in range(n):  # four distinct sources per mosaic
        while len(set(sources[row])) < 4:
            sources[row] = rng.choice(n, 4, replace=False)
    hh, ww = h // 2, w // 2
    for q, (ys, xs) in enumerate(((slice(0, hh), slice(0, ww)), (slice(0, hh), slice(ww, w)),
                                  (slice(hh, h), slice(0, ww)), (slice(hh, h), slice(ww, w)))):
        out[:, :, ys, xs] = images[torch.as_tensor(sources[:, q])][:, :, ys, xs]
    return out


# ----------------------------------------------------------------------------- candidates

def paper_form_candidates(lams=LAMBDAS) -> list[PaperForm]:
    """DiffPathV2's candidates: every combination of the switches the published descriptions leave open, SSIM
    weighting on (the error is the score error)."""
    out = []
    for noise in PF_READINGS:
        for pair in PF_PAIRS:
            out.extend(PaperForm(noise, pair, "amplify", lam) for lam in lams)
            out.append(PaperForm(noise, pair, "ssim", 0.0))
    return out


def ablation_forms() -> list[PaperForm]:
    """Paper-form rows ranked beside the candidates but never chosen: SSIM off, each reading."""
    return [PaperForm(noise, "image", "none", 0.0) for noise in PF_READINGS]


def candidate_formulations(lams=(0.5, 1.0, 2.0, 4.0)) -> list[VariantFormulation]:
    """This project's variant family (per-step or summed, SSIM off / product / amplify, r or ε)."""
    out = []
    for error, (aggregate, dims) in itertools.product(("score", "eps"),
                                                      (("summed", "1d"), ("summed", "multi"), ("per_step", "multi"))):
        out.append(VariantFormulation(error, "off", 0.0, aggregate, dims))
        out.append(VariantFormulation(error, "product", 0.0, aggregate, dims))
        out.extend(VariantFormulation(error, "amplify", lam, aggregate, dims) for lam in lams)
    return out


# ----------------------------------------------------------------------------- the split

def validation_split(n: int, labels: np.ndarray | None, seed: int = 0, val_fraction: float = 0.3,
                     held_out_share: float = HELD_OUT_SHARE) -> dict:
    """Indices of the fit part, the ID-validation part and the held-out-class images (seeded; disjoint).

    With labels, ``held_out_share`` of the classes (at least one, and at least one kept) is held out; without,
    nothing is, and the semantic outliers are the mosaics alone.
    """
    rng = np.random.default_rng(seed)
    held_classes: list = []
    held = np.array([], dtype=np.int64)
    keep = np.arange(n)
    if labels is not None:
        classes = np.unique(labels)
        if len(classes) >= 2:
            n_held = min(len(classes) - 1, max(1, int(round(held_out_share * len(classes)))))
            held_classes = sorted(rng.choice(classes, n_held, replace=False).tolist())
            held = np.flatnonzero(np.isin(labels, held_classes))
            keep = np.flatnonzero(~np.isin(labels, held_classes))
    perm = rng.permutation(keep)
    n_val = max(2, int(round(val_fraction * len(keep))))
    return {"fit": np.sort(perm[n_val:]), "val": np.sort(perm[:n_val]), "held_out": held,
            "held_out_classes": held_classes}


# ----------------------------------------------------------------------------- the rule

def tie_band_choice(scores: dict, eligible, simplicity_key, n_boot: int = N_BOOT_SELECT, seed: int = BOOT_SEED,
                    level: float = LEVEL) -> tuple[object, dict]:
    """The simplest candidate tied with the best, and each candidate's standing.

    ``scores`` maps each candidate to its list of (ID-validation, outlier) :class:`metrics.Side` pairs, one per
    kind (the same images for every candidate: each set is resampled once per draw, for every kind and
    candidate). The best is the eligible candidate with the highest mean AUROC; another is tied when the paired
    bootstrap interval of the best's lead contains zero. Returns (chosen, {candidate: {"mean", "mean_low",
    "mean_high", "lead", "lead_low", "lead_high", "tied"}}).
    """
    eligible = [c for c in scores if c in set(eligible)]
    if not eligible:
        raise ValueError("no eligible candidate to choose from")
    samples = {c: mean_auroc_samples(tasks, n_boot, seed) for c, tasks in scores.items()}
    means = {c: float(np.mean([auroc(pos.scores, neg.scores) for pos, neg in tasks])) for c, tasks in scores.items()}
    best = max(eligible, key=lambda c: means[c])
    standing = {}
    for c in scores:
        lead = samples[best] - samples[c]
        lead_low, lead_high = interval(lead, level)
        mean_low, mean_high = interval(samples[c], level)
        standing[c] = {"mean": means[c], "mean_low": mean_low, "mean_high": mean_high,
                       "lead": means[best] - means[c], "lead_low": lead_low, "lead_high": lead_high,
                       "tied": c == best or lead_low <= 0.0}
    chosen = min((c for c in eligible if standing[c]["tied"]), key=simplicity_key)
    return chosen, standing


def validation_data(extraction: Extraction, train: ImageSet, readings, *, seed: int = 0,
                    val_fraction: float = 0.3) -> tuple[dict, dict, dict]:
    """The protocol's data (module docstring): the split, the statistics of its parts ("fit", "val", "held_out")
    and of each outlier kind made from the validation images ({kind: statistics}), for ``readings``."""
    readings = sorted(set(readings), key=READINGS.index)
    split = validation_split(len(train), train.labels, seed, val_fraction)

    def made(tag, images):  # identity: the train set's, the split (fixed by seed and sizes) and what was made
        identity = f"{train.identity}-{tag}-{seed}-{len(split['val'])}-{len(split['held_out'])}"
        return ImageSet(f"{train.name}-{tag}", train.split, images, None, identity)

    whole = extraction.statistics(train, readings, desc=f"{train.name}: validation protocol")
    part = {name: {key: value[idx] for key, value in whole.items()} for name, idx in split.items()
            if name != "held_out_classes"}
    val_images = train.images[split["val"]]
    outliers = {kind: extraction.statistics(made(f"val-{kind}", synthetic_outliers(val_images, kind, seed)), readings,
                                            desc=f"{train.name}: {kind} outliers")
                for kind in CORRUPTIONS + ("mosaic",)}
    if len(split["held_out"]):
        outliers["held-out classes"] = part["held_out"]
    return split, part, outliers


def detector_for(candidate, density: str = "compact"):
    """The detector of a candidate form: DiffPathV2's (:class:`PaperForm`), a variant's or SpatialPath's."""
    if isinstance(candidate, PaperForm):
        return DiffPathV2(form=candidate, density=density)
    if isinstance(candidate, CellForm):
        return SpatialPath(form=candidate, density=density)
    return DiffPathV2Variant(formulation=candidate, density=density)


def _ranked(candidates, detector_of, part: dict, outliers: dict, eligible, simplicity_key, n_boot: int, seed: int):
    """Fit every candidate's detector on the fit part, score the validation images and each outlier kind, and
    apply the tie band: (chosen, standing, {candidate: per-kind tasks}, {candidate: density described})."""
    scores, detectors = {}, {}
    for c in candidates:
        det = detector_of(c)
        det.fit_statistics(part["fit"])
        s_val = det.score_statistics(part["val"])
        scores[c] = [(Side("validation", s_val), Side(VALIDATION_DRAWS.get(kind, kind), det.score_statistics(o)))
                     for kind, o in outliers.items()]
        detectors[c] = det.detector_.describe()
    chosen, standing = tie_band_choice(scores, eligible, simplicity_key, n_boot, seed)
    return chosen, standing, scores, detectors


def _row(c, family: str, rank: str, standing: dict, tasks, kinds, chosen, detector: str, split: dict, **extra) -> dict:
    """One row of a selection table."""
    return {"family": family, "label": c.label(), "switches": repr(c.as_dict()), "simplicity": rank,
            "mean_auroc": standing["mean"], "mean_low": standing["mean_low"], "mean_high": standing["mean_high"],
            **{f"auroc_{kind}": auroc(pos.scores, neg.scores) for kind, (pos, neg) in zip(kinds, tasks)},
            "lead_of_best": standing["lead"], "lead_low": standing["lead_low"], "lead_high": standing["lead_high"],
            "tied_with_best": standing["tied"], "chosen": c == chosen, "detector": detector, **extra,
            "n_fit": len(split["fit"]), "n_val": len(split["val"]), "n_held_out": len(split["held_out"]),
            "held_out_classes": " ".join(map(str, split["held_out_classes"]))}


def select_formulation(extraction: Extraction, train: ImageSet, *, val_fraction: float = 0.3, seed: int = 0,
                       candidates=None, density: str = "compact", n_boot: int = N_BOOT_SELECT) -> list[dict]:
    """Rank candidates on the validation protocol (module docstring) and mark DiffPathV2's default.

    ``candidates`` mixes :class:`PaperForm` and :class:`VariantFormulation`; default: DiffPathV2's candidates,
    the SSIM-off ablations and the variant family. Returns one row per candidate, best mean AUROC first; the
    row with ``chosen`` True is DiffPathV2's default (:func:`best_paper_form`).
    """
    require_extraction(extraction, "select_formulation")
    candidates = list(candidates or paper_form_candidates() + ablation_forms() + candidate_formulations())
    split, part, outliers = validation_data(extraction, train, {r for c in candidates for r in c.readings},
                                            seed=seed, val_fraction=val_fraction)
    eligible = [c for c in candidates if isinstance(c, PaperForm) and c.weight != "none"]
    chosen, standing, scores, detectors = _ranked(candidates, lambda c: detector_for(c, density), part, outliers,
                                                  eligible, simplicity, n_boot, seed)
    rows = []
    for c in candidates:
        family = ("paper form" if c in eligible else "paper form, SSIM off (ablation)"
                  if isinstance(c, PaperForm) else "variant")
        rows.append(_row(c, family, str(simplicity(c)) if c in eligible else "", standing[c], scores[c], outliers,
                         chosen, detectors[c], split, density=density, seed=seed, n_boot=n_boot))
    return sorted(rows, key=lambda r: -r["mean_auroc"])


# ----------------------------------------------------------------------------- this project's spatial detector

# Simplicity of a spatial form, fixed before any run, in this order of precedence: the cells alone before global
# statistics beside them; the density every other method uses (GMM) before a memory of cells, and a memory at the
# cell's own position before one at any position; fewer cells (4 × 4) before more; the sums DiffPathV2 reads
# (score error and SSIM) before DiffPath's (ε, Δε) before all of them; fewer PCA dimensions; log before square root.
SPATIAL_SIMPLICITY = {"with_global": (False, True), "density": ("gmm", "knn", "knn-any"), "grid": (4, 8),
                      "channels": ("score error", "noise", "all"), "dims": (16, 32), "transform": ("log1p", "sqrt")}


def spatial_simplicity(form: CellForm) -> tuple:
    """A spatial form's place in :data:`SPATIAL_SIMPLICITY` (smaller is simpler)."""
    return tuple(values.index(getattr(form, name)) if getattr(form, name) in values else len(values)
                 for name, values in SPATIAL_SIMPLICITY.items())


def spatial_candidates() -> list[CellForm]:
    """The spatial detector's candidates, fixed before any run: for each grid (4, 8), sums (score error, noise,
    all) and transform (log1p, sqrt), the GMM with 16 or 32 PCA dimensions, with and without the global path
    statistics, and the two memories of cells."""
    out = []
    for grid, channels, transform in itertools.product(SPATIAL_SIMPLICITY["grid"], SPATIAL_SIMPLICITY["channels"],
                                                       SPATIAL_SIMPLICITY["transform"]):
        out += [CellForm(grid, channels, transform, "gmm", dims, with_global)
                for dims in SPATIAL_SIMPLICITY["dims"] for with_global in (False, True)]
        out += [CellForm(grid, channels, transform, density) for density in ("knn", "knn-any")]
    return out


def select_spatial_form(extraction: Extraction, train: ImageSet, *, val_fraction: float = 0.3, seed: int = 0,
                        candidates=None, density: str = "compact", n_boot: int = N_BOOT_SELECT) -> list[dict]:
    """Rank the spatial detector's candidates on the validation protocol (the same split, outliers, bootstrap and
    tie band as DiffPathV2's, :func:`select_formulation`) and mark its default: the simplest candidate tied with
    the best (:data:`SPATIAL_SIMPLICITY`). DiffPathV2 and DiffPathV2-PS at their defaults are ranked beside them
    as references, never chosen. Rows best first; the chosen row's switches are :data:`api.DEFAULT_CELLS`."""
    require_extraction(extraction, "select_spatial_form")
    candidates = list(candidates or spatial_candidates())
    references = [DEFAULT_V2, DEFAULT_PS]
    everything = candidates + references
    split, part, outliers = validation_data(extraction, train, {r for c in everything for r in c.readings},
                                            seed=seed, val_fraction=val_fraction)

    chosen, standing, scores, detectors = _ranked(everything, lambda c: detector_for(c, density), part, outliers,
                                                  candidates, spatial_simplicity, n_boot, seed)
    names = {DEFAULT_V2: "reference: DiffPathV2", DEFAULT_PS: "reference: DiffPathV2-PS"}
    rows = [_row(c, names.get(c, "spatial"), str(spatial_simplicity(c)) if c in candidates else "", standing[c],
                 scores[c], outliers, chosen, detectors[c], split, density=density, seed=seed, n_boot=n_boot)
            for c in everything]
    return sorted(rows, key=lambda r: -r["mean_auroc"])


def chosen_cell_form(rows: list[dict]) -> CellForm:
    """The spatial detector's default from its selection table (rows or CSV dicts): the row marked chosen."""
    import ast

    chosen = [r for r in rows if str(r["chosen"]) == "True"]
    if len(chosen) != 1:
        raise ValueError(f"a selection table marks exactly one chosen row, this one {len(chosen)}")
    return CellForm(**ast.literal_eval(chosen[0]["switches"]))


def best_paper_form(rows: list[dict]) -> PaperForm:
    """DiffPathV2's default from a selection table (rows or CSV dicts): the row marked chosen."""
    import ast

    chosen = [r for r in rows if str(r["chosen"]) == "True"]
    if len(chosen) != 1:
        raise ValueError(f"a selection table marks exactly one chosen row, this one {len(chosen)}")
    return PaperForm(**ast.literal_eval(chosen[0]["switches"]))


# ----------------------------------------------------------------------------- anomaly maps

VALIDATION_DEFECTS = ("cutpaste", "scratch", "blot", "blur", "contrast", "rotation")  # made from ID images only
MAP_FAMILIES = ("DiffPath", "DiffPathV2", "score error, SSIM off", "variant")
ELIGIBLE_MAPS = {"DiffPath": "DiffPath", "DiffPathV2": "DiffPathV2", "variant": "variant"}  # family → default of


def select_map_forms(extraction: Extraction, train: ImageSet, *, seed: int = 0, n_reference: int | None = None,
                     n_val: int | None = None, families=MAP_FAMILIES, n_boot: int = 200,
                     prefilter: float = 0.02) -> list[dict]:
    """Rank every anomaly-map form of each family on ID images and synthetic validation defects, and mark each
    family's default (the maps' own validation protocol; no reported defect set is looked at).

    The ID training images are split (seeded) into a reference part, whose per-pixel moments normalise the maps,
    and a validation part; each validation image gets one defect of every kind of :data:`VALIDATION_DEFECTS`
    (from the same set only: cut-paste from another of its images, scratches, blots, local blur, local contrast,
    rotated regions). A form's score is its pixel AUROC averaged over the kinds, each kind's pixels pooled with
    those of the clean validation images. Within each family the default is the simplest form (the order of
    :func:`maps.map_candidates`) whose gap to the family's best is inside the 95 % paired bootstrap interval over
    validation images (forms more than ``prefilter`` behind the best are not resampled: they are not tied). Each
    bootstrap draw resamples the validation images once, for every kind and form: a defective image and the clean
    image it was made from are drawn together.
    """
    from .datasets.defects import make_defects
    from .maps import MapReference, anomaly_maps, map_candidates
    from .metrics import pixel_auroc, pixel_auroc_samples

    require_extraction(extraction, "select_map_forms")
    perm = np.random.default_rng(seed).permutation(len(train))
    n_reference = n_reference or int(round(0.6 * len(train)))
    n_val = n_val or min(len(train) - n_reference, 300)
    ref_idx, val_idx = np.sort(perm[:n_reference]), np.sort(perm[n_reference:n_reference + n_val])

    def made(tag, images):
        return ImageSet(f"{train.name}-{tag}", train.split, images, None,
                        f"{train.identity}-maps-{tag}-{seed}-{n_reference}-{n_val}")

    reference = MapReference.from_totals(extraction.statistics(made("reference", train.images[ref_idx]), "mapref",
                                                               desc=f"{train.name}: map reference"))
    clean_images = train.images[val_idx]
    clean = extraction.statistics(made("clean", clean_images), "maps", desc=f"{train.name}: clean validation")
    defects = {}
    for kind in VALIDATION_DEFECTS:
        d = make_defects(clean_images, kind, seed=seed, source=train.name)
        sums = extraction.statistics(made(kind, d.images), "maps", desc=f"{train.name}: {kind} defects")
        defects[kind] = (sums["map_sums"], d.masks.numpy())
    normal = np.zeros((len(val_idx),) + clean_images.shape[-2:], dtype=bool)
    rows = []
    for family in families:
        forms = map_candidates(family)
        scores, per_kind = {}, {}
        for form in forms:
            clean_maps = anomaly_maps(clean["map_sums"], form, reference)
            pooled = {kind: (np.concatenate([anomaly_maps(s, form, reference), clean_maps]),
                             np.concatenate([m, normal])) for kind, (s, m) in defects.items()}
            per_kind[form] = {kind: pixel_auroc(*p) for kind, p in pooled.items()}
            scores[form] = pooled
        means = {f: float(np.mean(list(per_kind[f].values()))) for f in forms}
        best = max(forms, key=means.get)
        samples = {}  # one draw of the validation images per resample, for every kind and form
        units = np.r_[np.arange(len(val_idx)), np.arange(len(val_idx))]  # a defective image goes with its clean one
        for form in [f for f in forms if means[best] - means[f] <= prefilter]:
            samples[form] = np.mean([pixel_auroc_samples(*scores[form][kind], n_boot, seed, units=units,
                                                         set_key="validation images")
                                     for kind in VALIDATION_DEFECTS], axis=0)
        tied = {f for f in samples if interval(samples[best] - samples[f])[0] <= 0.0}
        chosen = min(tied, key=forms.index)
        for form in forms:
            low, high = interval(samples[best] - samples[form]) if form in samples else (float("nan"),) * 2
            rows.append({"family": family, "label": form.label(), "form": repr(form.as_dict()),
                         "simplicity": forms.index(form), "mean_pixel_auroc": means[form],
                         **{f"pixel_auroc_{kind}": v for kind, v in per_kind[form].items()},
                         "lead_of_best": means[best] - means[form], "lead_low": low, "lead_high": high,
                         "tied_with_best": form in tied, "chosen": form == chosen and family in ELIGIBLE_MAPS,
                         "n_reference": n_reference, "n_val": len(val_idx), "seed": seed, "n_boot": n_boot})
    return sorted(rows, key=lambda r: (MAP_FAMILIES.index(r["family"]), -r["mean_pixel_auroc"]))


def chosen_map_forms(rows: list[dict]) -> dict:
    """{family: MapForm} of the chosen rows of a map selection table (rows or CSV dicts)."""
    import ast

    from .maps import MapForm

    return {r["family"]: MapForm(**ast.literal_eval(r["form"])) for r in rows if str(r["chosen"]) == "True"}
