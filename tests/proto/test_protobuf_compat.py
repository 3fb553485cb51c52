"""The generated code runs on the oldest protobuf the client declares (proto/generate.py pins
the generator, not the runtime): a fresh environment with that protobuf installs the client
and makes a real call, whose answer equals the one made here on the newest protobuf."""

from __future__ import annotations

import json
import re
import tomllib

from explainserve.models.demo.repository import demo_model_config
from explainserve.models.demo.shapes import draw_shape
from explainserve_client.render import image_png
from oip_venvs import CLIENT, cached_venv, run_python
from support import TESTS, running_server

from explainserve_client import Client


def oldest_protobuf() -> str:
    dependencies = tomllib.loads((CLIENT / "pyproject.toml").read_text())["project"]["dependencies"]
    pin = next(d for d in dependencies if d.startswith("protobuf"))
    return re.search(r">=\s*([\d.]+)", pin).group(1)


def test_the_client_runs_on_the_oldest_supported_protobuf(tmp_path):
    oldest = oldest_protobuf()
    assert oldest.startswith("5."), "the client promises protobuf 5.x and later"
    python = cached_venv("protobuf-oldest", [f"protobuf=={oldest}"])
    picture = tmp_path / "star.png"
    picture.write_bytes(image_png(draw_shape("star", seed=1)))
    with running_server((demo_model_config(),)) as background:
        answer = json.loads(run_python(python, TESTS / "proto" / "oldest_protobuf_call.py",
                                       background.address, str(picture)))
        with Client(background.address, timeout=120) as client:
            here = client.explain(picture.read_bytes(), model="demo", method="gradcam")[0]
    assert answer["protobuf"] == oldest
    assert answer["models"] == ["demo"]
    assert (answer["target"], answer["label"]) == (here.target, here.label)
    assert bytes.fromhex(answer["heatmap"]) == here.heatmap.tobytes()
