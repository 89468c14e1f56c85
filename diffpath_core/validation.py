"""Choosing DiffPathV2's open switches without touching any reported pair.

Protocol: split the ID training images into a fit part and a validation part; make synthetic
outliers from the validation images (noise, blur, contrast, rotation); for every candidate fit the
detector on the fit part and measure AUROC of ID-validation against each outlier kind. The
paper-form candidate with the best mean AUROC is DiffPathV2's default; this project's variant
formulations are ranked in the same table, under their own family, and never become "DiffPathV2".
"""
from __future__ import annotations

import itertools

import numpy as np
import torch

from .api import DiffPathV2, DiffPathV2Variant
from .datasets import ImageSet
from .extraction import Extraction, require_extraction
from .features import PF_PAIRS, PF_READINGS, PaperForm, VariantFormulation
from .metrics import auroc

OUTLIER_KINDS = ("noise", "blur", "contrast", "rotation")


def synthetic_outliers(images: torch.Tensor, kind: str, seed: int = 0) -> torch.Tensor:
    """Corrupt ID images into near outliers; deterministic in ``seed``; output stays in [-1, 1]."""
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
    raise ValueError(f"unknown outlier kind {kind!r}; known: {OUTLIER_KINDS}")


def paper_form_candidates(lams=(0.5, 1.0, 2.0, 4.0, 8.0)) -> list[PaperForm]:
    """Every combination of the switches the published descriptions leave open (the error is the score error)."""
    out = []
    for noise in PF_READINGS:
        out.append(PaperForm(noise, "image", "none", 0.0))
        for pair in PF_PAIRS:
            out.append(PaperForm(noise, pair, "ssim", 0.0))
            out.extend(PaperForm(noise, pair, "amplify", lam) for lam in lams)
    return out


def candidate_formulations(lams=(0.5, 1.0, 2.0, 4.0)) -> list[VariantFormulation]:
    """This project's variant family (per-step or summed, SSIM off / product / amplify, r or ε)."""
    out = []
    for error, (aggregate, dims) in itertools.product(("score", "eps"),
                                                      (("summed", "1d"), ("summed", "multi"), ("per_step", "multi"))):
        out.append(VariantFormulation(error, "off", 0.0, aggregate, dims))
        out.append(VariantFormulation(error, "product", 0.0, aggregate, dims))
        out.extend(VariantFormulation(error, "amplify", lam, aggregate, dims) for lam in lams)
    return out


def select_formulation(extraction: Extraction, train: ImageSet, *, val_fraction: float = 0.3, seed: int = 0,
                       candidates=None, density: str = "compact") -> list[dict]:
    """Rank candidates by mean AUROC (ID validation vs synthetic outliers), best first.

    ``candidates`` mixes :class:`PaperForm` (family "paper form") and :class:`VariantFormulation`
    (family "variant"); default: both families in full. Statistics come from ``extraction``; the candidates
    only score them.
    """
    require_extraction(extraction, "select_formulation")
    candidates = list(candidates or paper_form_candidates() + candidate_formulations())
    readings = sorted({r for c in candidates for r in c.readings}, key=PF_READINGS.index)
    n = len(train)
    perm = np.random.default_rng(seed).permutation(n)
    n_val = max(2, int(round(val_fraction * n)))
    val_idx, fit_idx = np.sort(perm[:n_val]), np.sort(perm[n_val:])

    def subset(tag, images):  # the identity holds seed and n_val, which fix the split
        return ImageSet(f"{train.name}-{tag}", train.split, images, None, f"{train.identity}-{tag}-{seed}-{n_val}")

    def stats(s: ImageSet):
        return extraction.statistics(s, readings)

    fit = stats(subset("fit", train.images[fit_idx]))
    val_images = train.images[val_idx]
    val = stats(subset("val", val_images))
    outliers = {kind: stats(subset(f"val-{kind}", synthetic_outliers(val_images, kind, seed)))
                for kind in OUTLIER_KINDS}
    rows = []
    for c in candidates:
        if isinstance(c, PaperForm):
            det, family = DiffPathV2(form=c, density=density), "paper form"
        else:
            det, family = DiffPathV2Variant(formulation=c, density=density), "variant"
        det.fit_statistics(fit)
        s_val = det.score_statistics(val)
        per_kind = {kind: auroc(s_val, det.score_statistics(o)) for kind, o in outliers.items()}
        rows.append({"family": family, "label": c.label(), "switches": repr(c.as_dict()),
                     "mean_auroc": float(np.mean(list(per_kind.values()))),
                     **{f"auroc_{kind}": v for kind, v in per_kind.items()}, "detector": det.detector_.describe(),
                     "density": density, "n_fit": len(fit_idx), "n_val": n_val})
    rows.sort(key=lambda r: -r["mean_auroc"])
    return rows


def best_paper_form(rows: list[dict]) -> PaperForm:
    """The paper-form switches of the best "paper form" row of a selection table (rows or CSV dicts)."""
    import ast

    best = max((r for r in rows if r["family"] == "paper form"), key=lambda r: float(r["mean_auroc"]))
    return PaperForm(**ast.literal_eval(best["switches"]))
