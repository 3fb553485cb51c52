"""Importing this module registers every built-in method."""

from . import activations, cam, filters, guided, occlusion, saliency, smoothgrad  # noqa: F401
