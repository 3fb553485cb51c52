"""`explainserve models`: list the models a server serves."""

from __future__ import annotations

import argparse
import sys

from explainserve.cli.params import add_server_option


def add_parser(commands) -> None:
    models = commands.add_parser("models", help="list the models a server serves")
    add_server_option(models)
    models.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from explainserve_client import Client
    with Client(args.server) as client:
        for model in client.list_models():
            sys.stdout.write(f"{model.name}\t{model.arch}\t{model.num_classes} classes\t"
                             f"{','.join(model.devices)}\n")
    return 0
