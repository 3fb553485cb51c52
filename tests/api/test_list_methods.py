"""ListMethods through the real server and client: every registered method with its
parameters and needs exactly as the registry declares them, and its recorded sanity verdict."""

from __future__ import annotations

import json

from explainserve.methods.explain import sanity
from explainserve.methods.explain.registry import get_method, list_methods
from google.protobuf import json_format

TYPES = {int: "int", float: "float", bool: "bool", str: "string"}


def test_list_methods_matches_the_registry(client):
    listed = client.list_methods()
    assert [method.name for method in listed] == list_methods()
    for method in listed:
        spec = get_method(method.name)
        assert method.description == spec.description and method.description
        assert (method.needs_target, method.uses_layer, method.spatial_layer,
                method.needs_gradients, method.smoothgrad_base) == (
            spec.needs_target, spec.uses_layer, spec.spatial_layer, spec.needs_gradients,
            spec.gradient_kernel is not None)
        expected = [(p.name, TYPES[p.kind], p.default, p.minimum, p.maximum,
                     tuple(p.choices or ()), p.help) for p in spec.params]
        actual = [(p.name, p.type, p.default, p.minimum, p.maximum, p.choices, p.help)
                  for p in method.parameters]
        assert actual == expected, method.name
        recorded = sanity.verdict(method.name)
        assert (method.sanity, method.sanity_detail) == (recorded.verdict, recorded.detail)
        assert method.sanity in (sanity.PASSES, sanity.FAILS, sanity.NOT_CHECKED)


def test_every_map_method_has_a_recorded_verdict(client):
    """The shipped verdict file covers the gradient and CAM methods the benchmark checks."""
    verdicts = {method.name: method.sanity for method in client.list_methods()}
    for name in ("saliency", "guided_backprop", "gradcam"):
        assert verdicts[name] in (sanity.PASSES, sanity.FAILS), name


def test_list_methods_in_json_as_grpcurl_shows_it(client):
    from explainserve_client._proto import explainer_pb2 as pb
    response = client.stub.ListMethods(pb.ListMethodsRequest(), timeout=30)
    as_json = json.loads(json_format.MessageToJson(response))
    occlusion = next(m for m in as_json["methods"] if m["name"] == "occlusion")
    window = next(p for p in occlusion["parameters"] if p["name"] == "window")
    assert window["type"] == "int" and window["defaultValue"] == 32 and "minimum" in window
    assert "maximum" not in window  # unbounded above: the optional field is absent
