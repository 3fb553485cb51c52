"""`explainserve serve|models|methods|explain|maximize|embed|demo`: the parser; each command is a
module of this package with `add_parser(commands)` and `run(args)`."""

from __future__ import annotations

import argparse
import logging
import os

from explainserve.cli import demo, embed, explain, maximize, methods, models, serve
from explainserve.config import ConfigError
from explainserve.logs import configure_logging

logger = logging.getLogger("explainserve")


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(
        prog="explainserve",
        description="Explain what PyTorch vision models look at and what they have learned.")
    # Environment defaults, so a container can set them without rewriting its entrypoint.
    root.add_argument("--log-level", default=os.environ.get("EXPLAINSERVE_LOG_LEVEL", "INFO"),
                      help="default: $EXPLAINSERVE_LOG_LEVEL or INFO")
    root.add_argument("--log-format", choices=["text", "json"],
                      default=os.environ.get("EXPLAINSERVE_LOG_FORMAT", "text"),
                      help="json: one object per line with a request_id field "
                           "(default: $EXPLAINSERVE_LOG_FORMAT or text)")
    commands = root.add_subparsers(dest="command", required=True)

    for command in (serve, models, methods, explain, maximize, embed, demo):
        command.add_parser(commands)
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
