"""One load window for benchmarks/protocols.py, run in the environment that has the protocol's
client (tritonclient needs protobuf < 7, so the driver runs outside the project's venv):
`clients` threads, each with its own connection, send one Grad-CAM request at a time for
`seconds`; prints {"count", "errors", "latencies"} as JSON."""

from __future__ import annotations

import base64
import json
import sys
import threading
import time

import numpy as np


def explain_caller(spec):
    from explainserve_client import Client
    client = Client(spec["grpc"], timeout=120)
    png = open(spec["image"], "rb").read()
    return lambda: client.explain(png, model=spec["model"], method="gradcam", outputs=("heatmap",))


def oip_grpc_caller(spec):
    import tritonclient.grpc as grpcclient
    client = grpcclient.InferenceServerClient(spec["grpc"])
    png = np.array([open(spec["image"], "rb").read()], dtype=object)
    outputs = [grpcclient.InferRequestedOutput(n) for n in ("targets", "scores", "heatmap")]

    def call():
        tensor = grpcclient.InferInput("image_bytes", [1], "BYTES")
        tensor.set_data_from_numpy(png)
        result = client.infer(spec["model"], [tensor], outputs=outputs,
                              parameters={"method": "gradcam"}, client_timeout=120)
        return result.as_numpy("heatmap")
    return call


def http_caller(spec):
    import httpx
    client = httpx.Client(base_url=spec["http"], timeout=120)
    body = {"parameters": {"method": "gradcam"},
            "inputs": [{"name": "image_bytes", "datatype": "BYTES", "shape": [1],
                        "data": [base64.b64encode(open(spec["image"], "rb").read()).decode()]}],
            "outputs": [{"name": n} for n in ("targets", "scores", "heatmap")]}

    def call():
        answer = client.post(f"/v2/models/{spec['model']}/infer", json=body)
        answer.raise_for_status()
        heatmap = next(o for o in answer.json()["outputs"] if o["name"] == "heatmap")
        return np.asarray(heatmap["data"], np.float32)
    return call


CALLERS = {"explain": explain_caller, "oip_grpc": oip_grpc_caller, "http": http_caller}


def main() -> int:
    spec = json.loads(sys.argv[1])
    callers = [CALLERS[spec["protocol"]](spec) for _ in range(spec["clients"])]
    for call in callers:  # connect and warm up outside the window
        call()
    latencies: list[float] = []
    errors = [0]
    lock = threading.Lock()
    stop_at = time.monotonic() + spec["seconds"]

    def loop(call):
        while time.monotonic() < stop_at:
            started = time.perf_counter()
            try:
                call()
            except Exception:  # noqa: BLE001 - counted; the window goes on
                with lock:
                    errors[0] += 1
                continue
            with lock:
                latencies.append(time.perf_counter() - started)
    threads = [threading.Thread(target=loop, args=(call,)) for call in callers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    json.dump({"count": len(latencies), "errors": errors[0], "latencies": latencies}, sys.stdout)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
