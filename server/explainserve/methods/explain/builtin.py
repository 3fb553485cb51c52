"""Importing this module registers every built-in Explain method."""

from explainserve.methods.explain import (activations, cam, filters, guided, occlusion,  # noqa: F401
                                          saliency, smoothgrad)
from explainserve.methods.explain import integrated_gradients, xrai  # noqa: F401
from explainserve.methods.explain import ablation_cam, cam_modern, score_cam  # noqa: F401
from explainserve.methods.explain import attention  # noqa: F401
