"""Errors of pretrained-model installation and conversion."""
from xasr.errors import XasrError


class ModelInstallError(XasrError):
    """A model could not be downloaded, verified or converted."""


class ChecksumError(ModelInstallError):
    """A downloaded file does not have the pinned sha256."""

