"""What TLS, mutual TLS and bearer-token auth cost per call: the round-trip time of a unary
ListModels (transport alone) and of a small Explain (saliency on a random-weight resnet18 at
64x64), through a real server on loopback, for each transport. One command:

    python benchmarks/transport_security.py [--quick] [--calls 400] [--out FILE.json]

It writes docs/results/transport_security.json.
Certificates are made on the spot (EC P-256), as tests/api/test_security.py makes them. Each mode
gets a fresh server and client; the first calls (connection set-up, TLS handshake) are warm-up
and not timed, so the numbers are the steady per-call cost.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from explainserve.app import BackgroundServer
from explainserve.config import ModelConfig, SecurityConfig, ServerConfig
from explainserve_client import Client

from results import add_out_argument, write_result  # benchmarks/ is on the path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from ops_support import make_certificates  # noqa: E402  (the tests' certificate helper)

NAME = "transport_security"
TOKEN = "benchmark-token-0123456789abcdef"
MODEL = ModelConfig(name="resnet18", arch="torchvision:resnet18", weights=None, num_classes=10,
                    input_size=(64, 64))


def modes(certs) -> dict[str, tuple[SecurityConfig, dict]]:
    ca = certs.ca.read_bytes()
    client_identity = {"client_certificate": certs.client_cert.read_bytes(),
                       "client_key": certs.client_key.read_bytes()}
    tls = {"tls_cert": certs.server_cert, "tls_key": certs.server_key}
    return {
        "plaintext": (SecurityConfig(), {}),
        "token": (SecurityConfig(tokens=(TOKEN,)), {"token": TOKEN}),
        "tls": (SecurityConfig(**tls), {"root_certificates": ca}),
        "mtls": (SecurityConfig(**tls, tls_client_ca=certs.ca), {"root_certificates": ca, **client_identity}),
        "mtls+token": (SecurityConfig(**tls, tls_client_ca=certs.ca, tokens=(TOKEN,)),
                       {"root_certificates": ca, "token": TOKEN, **client_identity}),
    }


def timed(call, count: int) -> list[float]:
    for _ in range(min(20, count)):  # warm-up: handshake, first batch
        call()
    times = []
    for _ in range(count):
        started = time.perf_counter()
        call()
        times.append((time.perf_counter() - started) * 1000)
    return times


def summary(times: list[float]) -> dict[str, float]:
    ordered = sorted(times)
    return {"median_ms": statistics.median(ordered),
            "p90_ms": ordered[int(0.9 * (len(ordered) - 1))], "calls": len(ordered)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="50 calls per measurement")
    parser.add_argument("--calls", type=int, default=400)
    add_out_argument(parser, NAME)
    args = parser.parse_args()
    calls = 50 if args.quick else args.calls
    explain_calls = max(10, calls // 5)
    image = np.random.default_rng(0).random((3, 64, 64), dtype=np.float32)
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        certs = make_certificates(Path(folder))
        print(f"{calls} calls each, after warm-up; server and client on loopback")
        for name, (security, client_options) in modes(certs).items():
            config = ServerConfig(host="127.0.0.1", port=0, metrics_port=None, device="cpu",
                                  models=(MODEL,), security=security)
            with BackgroundServer(config) as server, \
                    Client(f"127.0.0.1:{server.server.port}", timeout=60, **client_options) as client:
                unary = summary(timed(client.list_models, calls))
                explain = summary(timed(lambda: client.explain(image, model="resnet18",
                                                               method="saliency", targets=[0]),
                                        explain_calls))
            rows.append({"mode": name, "list_models": unary, "explain_saliency": explain})
            print(f"{name:11s} ListModels median {unary['median_ms']:7.3f} ms  p90 "
                  f"{unary['p90_ms']:7.3f} ms | Explain saliency median "
                  f"{explain['median_ms']:7.3f} ms  p90 {explain['p90_ms']:7.3f} ms", flush=True)
    settings = {"quick": args.quick, "list_models_calls": calls, "explain_calls": explain_calls,
                "warm_up_calls": min(20, explain_calls), "model": "torchvision resnet18, random weights, 10 classes",
                "explain_input": "3x64x64 float32 tensor, saliency, one target",
                "certificates": "EC P-256, made for the run", "transport": "loopback",
                "modes": [row["mode"] for row in rows]}
    write_result(NAME, settings, {"rows": rows}, args.out)


if __name__ == "__main__":
    main()
