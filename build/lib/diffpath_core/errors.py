"""Exceptions with messages a reader can act on: each names the file or dataset and the fix."""


class DiffPathError(Exception):
    """Base class for every error this package raises on purpose."""


class InputError(DiffPathError, ValueError):
    """An image, folder or array cannot be used as given (the message names it and why)."""


class DatasetUnavailableError(DiffPathError, FileNotFoundError):
    """A named dataset is not on disk and cannot be downloaded here (the message says how to get it)."""


class CheckpointError(DiffPathError, ValueError):
    """A checkpoint is missing, unsafe, or does not match its configuration."""
