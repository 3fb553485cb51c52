"""Run by test_protobuf_compat.py in an environment with the oldest protobuf the client
supports: one Explain call through the real client, its answer as JSON on stdout."""

import json
import sys

import google.protobuf
from explainserve_client import Client

address, path = sys.argv[1], sys.argv[2]
with Client(address, timeout=120) as client:
    models = [m.name for m in client.list_models()]
    item = client.explain(open(path, "rb").read(), model="demo", method="gradcam")[0]
json.dump({"protobuf": google.protobuf.__version__, "models": models, "target": item.target,
           "label": item.label, "heatmap": item.heatmap.tobytes().hex()}, sys.stdout)
