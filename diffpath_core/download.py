"""Deprecated: checksummed downloads moved to :mod:`diffpath_core.datasets.downloads` (0.3); ``fetch`` remains."""
import warnings

from .datasets.downloads import fetch  # noqa: F401

warnings.warn("diffpath_core.download is deprecated: import from diffpath_core.datasets.downloads",
              DeprecationWarning, stacklevel=2)
