"""Importing this module registers every built-in Explain method."""

from explainserve.methods.explain import (activations, cam, filters, guided, occlusion,  # noqa: F401
                                          saliency, smoothgrad)
