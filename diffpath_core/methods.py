"""The names of the methods the book reports, one list per concept, importable without torch (the command line's
parser, the book's findings and every protocol read these same lists).

- :data:`METHODS`: the papers' methods, as published;
- :data:`VARIANTS`: this project's own detectors (DiffPathV2-PS, a per-step formulation; SpatialPath, which keeps
  where on the image the path departs), reported beside them and never under their names;
- :data:`BASELINES`: what a detector must beat to show the trajectory adds anything; :data:`NO_MODEL` those of
  them that use no diffusion model at all, with what they read instead.
"""

METHODS = ("DiffPath-1D", "DiffPath-6D", "DiffPathV2")
VARIANTS = ("DiffPathV2-PS", "SpatialPath")
BASELINES = ("Reconstruction", "Border mean", "Pixel PCA")
NO_MODEL = {"Pixel PCA": "no model: the normal class's pixels, PCA, density",
            "Border mean": "no model: the mean of the image border"}
