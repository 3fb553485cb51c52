"""Importing this module registers every built-in method."""

from . import cam, saliency  # noqa: F401
