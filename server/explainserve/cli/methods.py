"""`explainserve methods`: list the Explain methods a server offers, with what each needs,
its sanity-check verdict and its parameters."""

from __future__ import annotations

import argparse
import json
import sys

from explainserve.cli.params import add_server_option


def add_parser(commands) -> None:
    methods = commands.add_parser("methods", help="list the explanation methods and their "
                                                  "parameters")
    add_server_option(methods)
    methods.add_argument("--json", action="store_true", help="one JSON object per method")
    methods.set_defaults(run=run)


def needs(method) -> str:
    wanted = [name for name, flag in (("target", method.needs_target),
                                      ("layer", method.uses_layer),
                                      ("gradients", method.needs_gradients),
                                      ("smoothgrad-base", method.smoothgrad_base)) if flag]
    return ",".join(wanted) or "-"


def parameter_line(param) -> str:
    bounds = ""
    if param.minimum is not None or param.maximum is not None:
        low = "" if param.minimum is None else f"{param.minimum:g}"
        high = "" if param.maximum is None else f"{param.maximum:g}"
        bounds = f" [{low}, {high}]"
    choices = f" one of {','.join(param.choices)}" if param.choices else ""
    return (f"  {param.name}\t{param.type}\tdefault {json.dumps(param.default)}{bounds}"
            f"{choices}\t{param.help}\n")


def run(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from explainserve_client import Client
    with Client(args.server) as client:
        methods = client.list_methods()
    for method in methods:
        if args.json:
            sys.stdout.write(json.dumps(asdict(method)) + "\n")
            continue
        sys.stdout.write(f"{method.name}\t{needs(method)}\tsanity {method.sanity}\t"
                         f"{method.description}\n")
        for param in method.parameters:
            sys.stdout.write(parameter_line(param))
    return 0
