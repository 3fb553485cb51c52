"""The built-in demo: a small CNN (network), the synthetic shapes it learns (shapes), its training
script (training) and its entry in the model repository (repository).

Model repositories name the architecture `python:explainserve.models.demo:build_demo_model`; it
is resolved lazily so that the shape generator can be imported without torch.
"""


def __getattr__(name: str):
    if name == "build_demo_model":
        from explainserve.models.demo.network import build_demo_model
        return build_demo_model
    raise AttributeError(name)
