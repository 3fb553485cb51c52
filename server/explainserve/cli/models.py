"""`explainserve models`: list the models a server serves, or one model's layers."""

from __future__ import annotations

import argparse
import sys

from explainserve.cli.params import add_server_option


def add_parser(commands) -> None:
    models = commands.add_parser("models", help="list the models a server serves")
    add_server_option(models)
    models.add_argument("--layers", metavar="MODEL",
                        help="print MODEL's layers instead: name, type, output shape and layout "
                             "(how layer methods read it as [channels, height, width] maps); "
                             "the default layer is marked with *")
    models.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from explainserve_client import Client, ExplainServeError
    with Client(args.server) as client:
        if args.layers:
            try:
                described = client.get_model(args.layers)
            except ExplainServeError as error:
                sys.stderr.write(f"{error}\n")
                return 1
            for layer in described.layers:
                mark = "*" if layer.name == described.default_layer else ""
                shape = "x".join(map(str, layer.output_shape))
                sys.stdout.write(f"{layer.name}{mark}\t{layer.type}\t{shape}\t{layer.layout}\n")
            return 0
        for model in client.list_models():
            sys.stdout.write(f"{model.name}\t{model.arch}\t{model.num_classes} classes\t"
                             f"{','.join(model.devices)}\n")
    return 0
