"""diffpath_core: zero-shot anomaly detection from the denoising paths of one pretrained diffusion model.

    from diffpath_core import DiffPathV2, load_dataset
    det = DiffPathV2("fashion_mnist").fit(load_dataset("fashion_mnist", "train", limit=1000))
    scores = det.score_samples(load_dataset("digits", "test"))   # higher = more in-distribution

The flow, one floor per step: datasets → models → trajectory → statistics → extraction (cache) →
features → density (detectors) → api / evaluation / validation → book, CLI.
"""
from .api import DEFAULT_CELLS, DEFAULT_PS, DEFAULT_V2, DiffPath, DiffPathV2, DiffPathV2Variant, SpatialPath
from .datasets import ImageSet, load_dataset, load_image_folder, load_images
from .extraction import Extraction
from .features import CellForm, PaperForm, VariantFormulation
from .metrics import all_metrics, auroc, fpr_at_tpr
from .models import DiffusionModel, load_model
from .trajectory import invert, noised_estimates

__all__ = ["DiffPath", "DiffPathV2", "DiffPathV2Variant", "SpatialPath", "DEFAULT_V2", "DEFAULT_PS", "DEFAULT_CELLS",
           "Extraction", "PaperForm", "VariantFormulation", "CellForm", "ImageSet", "load_dataset", "load_image_folder", "load_images",
           "all_metrics", "auroc", "fpr_at_tpr", "DiffusionModel", "load_model", "invert", "noised_estimates"]
__version__ = "0.4.0"
