"""Arguments that several commands share."""

from __future__ import annotations

import argparse
import json
from typing import Any


def parse_param(text: str) -> tuple[str, Any]:
    """KEY=VALUE with a JSON value (numbers, true/false) or else a plain string."""
    key, separator, value = text.partition("=")
    if not separator or not key:
        raise argparse.ArgumentTypeError(f"--param {text!r} is not KEY=VALUE")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


def add_param_option(parser: argparse.ArgumentParser, help: str) -> None:
    parser.add_argument("--param", action="append", type=parse_param, metavar="KEY=VALUE", help=help)


def add_server_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--server", default="localhost:50051", help="address of a running server")
