"""`llmops` command line: a thin dispatcher; each subcommand lives with its capability.

Each module in SUBCOMMANDS exposes ``register(subparsers)`` which adds its parser(s) and
sets ``func`` (a callable taking the parsed args and returning an exit code).
"""

from __future__ import annotations

import argparse
import importlib
import sys

SUBCOMMANDS = [
    "llmops.operator_cli",
    "llmops.crdgen.cli",  # crds [--check] [--out DIR]
    "llmops.validate",  # validate -f CR.yaml
    "llmops.sandbox.cli",  # sandbox, node
    "llmops.render",  # render -f CR.yaml [--attempt N] [--backend B]
    "llmops.demo",  # demo: the main job on the sandbox
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="llmops", description=__doc__.splitlines()[0])
    subparsers = parser.add_subparsers(dest="command", required=True)
    for module in SUBCOMMANDS:
        importlib.import_module(module).register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
