"""Run by tests/api/test_oip_triton.py in an environment with tritonclient (protobuf < 7) and
the explainserve client beside it: the Open Inference Protocol calls a Triton user would make,
over gRPC and HTTP, with their answers written to an .npz file and a JSON summary on stdout."""

from __future__ import annotations

import json
import sys

import numpy as np
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient


def infer(module, client, image: np.ndarray, method: str, params: dict, outputs: list[str],
          binary: bool):
    tensor = module.InferInput("image", list(image.shape), "UINT8")
    if module is httpclient:
        tensor.set_data_from_numpy(image, binary_data=binary)
        wanted = [module.InferRequestedOutput(name, binary_data=binary) for name in outputs]
    else:
        tensor.set_data_from_numpy(image)
        wanted = [module.InferRequestedOutput(name) for name in outputs]
    result = client.infer("demo", [tensor], outputs=wanted,
                          parameters={"method": method, **params})
    return {name: result.as_numpy(name) for name in outputs}


def main() -> int:
    spec = json.loads(sys.argv[1])
    image = np.load(spec["image"])
    grpc_client = grpcclient.InferenceServerClient(spec["grpc"])
    http_client = httpclient.InferenceServerClient(spec["http"])
    metadata = grpc_client.get_model_metadata("demo", as_json=True)
    summary = {
        "grpc_live": grpc_client.is_server_live(), "grpc_ready": grpc_client.is_server_ready(),
        "grpc_model_ready": grpc_client.is_model_ready("demo"),
        "http_live": http_client.is_server_live(), "http_ready": http_client.is_server_ready(),
        "http_model_ready": http_client.is_model_ready("demo"),
        "grpc_metadata": metadata, "http_metadata": http_client.get_model_metadata("demo"),
    }
    arrays = {}
    for call in spec["calls"]:
        outputs = ["heatmap", "targets", "scores", "labels"]
        for transport, module, client, binary in (
                ("grpc", grpcclient, grpc_client, True), ("http", httpclient, http_client, True),
                ("httpjson", httpclient, http_client, False)):
            answer = infer(module, client, image, call["method"], call.get("params", {}),
                           outputs, binary)
            for name, value in answer.items():
                if value.dtype == object:
                    summary[f"{transport}_{call['method']}_{name}"] = [v.decode() if isinstance(v, bytes) else str(v) for v in value]
                else:
                    arrays[f"{transport}_{call['method']}_{name}"] = value
    try:
        grpc_client.get_model_metadata("no_such_model")
    except Exception as error:  # noqa: BLE001 - the message is what the test checks
        summary["grpc_unknown_model"] = str(error)
    np.savez(spec["out"], **arrays)
    json.dump(summary, sys.stdout)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
