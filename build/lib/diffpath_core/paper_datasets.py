"""Deprecated: the paper datasets moved to :mod:`diffpath_core.datasets.paper` (0.3); the old names remain."""
import warnings

from .datasets.downloads import data_root  # noqa: F401
from .datasets.paper import (SOURCES, Source, check_available, ensure, missing_message,  # noqa: F401
                             read_cifar_binary, read_svhn_mat)

warnings.warn("diffpath_core.paper_datasets is deprecated: import from diffpath_core.datasets.paper",
              DeprecationWarning, stacklevel=2)
