"""`explainserve serve|models|explain|maximize|embed|demo`: the command line."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from pathlib import Path

from explainserve.config import (ConfigError, LimitsConfig, SecurityConfig, ServerConfig,
                     load_model_repository)

from explainserve.cli.maximize import parse_param
from explainserve.logs import configure_logging

logger = logging.getLogger("explainserve")


def build_config(args: argparse.Namespace) -> ServerConfig:
    from explainserve.models.demo.repository import demo_model_config
    models = load_model_repository(args.models) if args.models else (demo_model_config(),)
    return ServerConfig(
        host=args.host, port=args.port, metrics_port=args.metrics_port or None,
        device=args.device, cpu_workers=args.cpu_workers, grace_period_s=args.grace_period,
        models=models, limits=LimitsConfig(), security=security_config(args),
        max_connection_age_s=args.max_connection_age,
        max_connection_age_grace_s=args.max_connection_age_grace,
        health_port=args.health_port or None,
    )


def security_config(args: argparse.Namespace) -> SecurityConfig:
    from explainserve.api.auth import load_tokens, open_service_names
    return SecurityConfig(
        tls_cert=args.tls_cert, tls_key=args.tls_key, tls_client_ca=args.tls_client_ca,
        tokens=load_tokens(args.auth_token_file), open_services=open_service_names(args.auth_open),
    )


def cmd_serve(args: argparse.Namespace) -> int:
    from explainserve.app import serve
    asyncio.run(serve(build_config(args)))
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    from explainserve_client import Client
    with Client(args.server) as client:
        for model in client.list_models():
            sys.stdout.write(f"{model.name}\t{model.arch}\t{model.num_classes} classes\t"
                             f"{','.join(model.devices)}\n")
    return 0


def cmd_explain(args: argparse.Namespace) -> int:
    from explainserve_client import Client
    from explainserve_client.render import heatmap_png

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with Client(args.server, timeout=args.timeout) as client:
        for image in args.images:
            explanations = client.explain(image, model=args.model, method=args.method,
                                          targets=args.target, layer=args.layer,
                                          top_k=args.top_k, overlay=True,
                                          **dict(args.param or ()))
            for item in explanations:
                stem = f"{Path(image).stem}_{args.method}_{item.target}"
                if item.heatmap is not None:
                    (out / f"{stem}_heatmap.png").write_bytes(heatmap_png(item.heatmap))
                if item.overlay_png:
                    (out / f"{stem}_overlay.png").write_bytes(item.overlay_png)
                sys.stdout.write(f"{image}\t{args.method}\tclass {item.target} ({item.label})\t"
                                 f"score {item.score:.4f}\tp {item.probability:.4f}\n")
    return 0


def cmd_maximize(args: argparse.Namespace) -> int:
    from explainserve.cli.maximize import run
    return run(args)


def cmd_demo(args: argparse.Namespace) -> int:
    from explainserve.cli.demo import run_demo
    index = run_demo(Path(args.out), device=args.device)
    sys.stdout.write(f"gallery written to {index}\n")
    return 0


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="explainserve", description=__doc__)
    # Environment defaults, so a container can set them without rewriting its entrypoint.
    root.add_argument("--log-level", default=os.environ.get("EXPLAINSERVE_LOG_LEVEL", "INFO"),
                      help="default: $EXPLAINSERVE_LOG_LEVEL or INFO")
    root.add_argument("--log-format", choices=["text", "json"],
                      default=os.environ.get("EXPLAINSERVE_LOG_FORMAT", "text"),
                      help="json: one object per line with a request_id field "
                           "(default: $EXPLAINSERVE_LOG_FORMAT or text)")
    commands = root.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the gRPC server")
    serve.add_argument("--models", type=Path, help="model repository TOML (default: the demo model)")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=50051)
    serve.add_argument("--metrics-port", type=int, default=9090, help="0 disables metrics")
    serve.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    serve.add_argument("--cpu-workers", type=int, default=1)
    serve.add_argument("--grace-period", type=float, default=10.0, help="seconds to drain on SIGTERM")
    serve.add_argument("--max-connection-age", type=float, metavar="SECONDS",
                       help="close client connections at this age so clients rebalance over "
                            "new replicas (default: never)")
    serve.add_argument("--max-connection-age-grace", type=float, metavar="SECONDS",
                       help="time calls on an aged connection get to finish (default: --grace-period)")
    serve.add_argument("--health-port", type=int, default=0,
                       help="also serve grpc.health.v1 alone, plaintext, on this port (for "
                            "kubelet probes when TLS is on); 0 disables")
    security = serve.add_argument_group("security")
    security.add_argument("--tls-cert", type=Path, help="PEM certificate chain; enables TLS")
    security.add_argument("--tls-key", type=Path, help="PEM private key of --tls-cert")
    security.add_argument("--tls-client-ca", type=Path,
                          help="PEM CA bundle; clients must present a certificate it signed (mTLS)")
    security.add_argument("--auth-token-file", type=Path,
                          help="bearer tokens, one per line; tokens in $EXPLAINSERVE_AUTH_TOKENS "
                               "(comma-separated) count too; any token enables auth")
    security.add_argument("--auth-open", nargs="*", default=["health"], metavar="SERVICE",
                          choices=["health", "reflection"],
                          help="services reachable without a token (default: health)")
    serve.set_defaults(run=cmd_serve)

    models = commands.add_parser("models", help="list the models a server serves")
    models.add_argument("--server", default="localhost:50051")
    models.set_defaults(run=cmd_models)

    explain = commands.add_parser("explain", help="explain images; writes heatmap PNGs")
    explain.add_argument("images", nargs="+")
    explain.add_argument("--server", default="localhost:50051")
    explain.add_argument("--model", default="demo")
    explain.add_argument("--method", default="gradcam")
    explain.add_argument("--target", type=int, action="append", help="class index (repeatable)")
    explain.add_argument("--top-k", type=int, default=0)
    explain.add_argument("--layer")
    explain.add_argument("--param", action="append", type=parse_param, metavar="KEY=VALUE",
                         help="a method parameter, e.g. --param window=16 (repeatable)")
    explain.add_argument("--out", default="explanations")
    explain.add_argument("--timeout", type=float, default=120.0)
    explain.set_defaults(run=cmd_explain)

    maximize = commands.add_parser("maximize", help="synthesise an input by gradient ascent; "
                                   "writes the final PNG (and a GIF of the frames)")
    maximize.add_argument("--server", default="localhost:50051")
    maximize.add_argument("--model", default="demo")
    maximize.add_argument("--objective", default="class",
                          choices=["class", "channel", "neuron", "inversion"])
    maximize.add_argument("--class", dest="class_index", type=int, action="append", metavar="N",
                          help="class index (repeatable; one image each)")
    maximize.add_argument("--channel", type=int, action="append", help="channel (repeatable)")
    maximize.add_argument("--layer", help="module path (channel, neuron, inversion)")
    maximize.add_argument("--reference", help="image to invert, or to start from")
    maximize.add_argument("--init", choices=["zeros", "noise", "image"],
                          help="start image (default: zeros for class, noise otherwise)")
    maximize.add_argument("--steps", type=int, default=256)
    maximize.add_argument("--frame-every", type=int, default=0,
                          help="steps between frames (default: steps/64)")
    maximize.add_argument("--seed", type=int, default=0)
    maximize.add_argument("--param", action="append", type=parse_param, metavar="KEY=VALUE",
                          help="optimiser/prior setting, e.g. l2=0.05 (repeatable)")
    maximize.add_argument("--out", default="maximize.png")
    maximize.add_argument("--gif", nargs="?", const=True, metavar="FILE",
                          help="also write the frames as an animated GIF (default: --out as .gif)")
    maximize.add_argument("--timeout", type=float, default=600.0)
    maximize.set_defaults(run=cmd_maximize)

    demo = commands.add_parser("demo", help="serve the demo model and write a gallery")
    demo.add_argument("--out", default="gallery")
    demo.add_argument("--device", default="auto")
    demo.set_defaults(run=cmd_demo)

    from explainserve.cli.embed import add_embed_parser
    add_embed_parser(commands)
    return root


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    configure_logging(args.log_level, args.log_format)
    try:
        return args.run(args)
    except ConfigError as error:
        logger.error("%s", error)
        return 2
    except KeyboardInterrupt:
        return 130


__all__ = ["main", "parser"]
