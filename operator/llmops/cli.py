"""`llmops` command line: a thin dispatcher; each subcommand lives with its capability.

Each module in COMMANDS exposes ``register(subparsers)`` which adds its parser(s) and sets
``func`` (a callable taking the parsed args and returning an exit code). Only the module of
the command being run is imported (``--help`` and an unknown command import them all), so
``llmops operator`` loads no sandbox code and needs none of the sandbox extra's packages.
"""

from __future__ import annotations

import argparse
import importlib
import sys

#: command -> the module that registers it
COMMANDS = {
    "operator": "llmops.operator_cli",
    "crds": "llmops.crdgen.cli",  # crds [--check] [--out DIR]
    "validate": "llmops.validate",  # validate -f CR.yaml
    "sandbox": "llmops.sandbox.cli",  # sandbox, node: the sandbox extra
    "node": "llmops.sandbox.cli",
    "render": "llmops.render",  # render -f CR.yaml [--attempt N] [--backend B]
    "demo": "llmops.demo",  # demo: the main job on the sandbox (the sandbox extra)
}
SUBCOMMANDS = list(dict.fromkeys(COMMANDS.values()))


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser with ``command``'s subcommands, or all of them when it is None or unknown."""
    parser = argparse.ArgumentParser(prog="llmops", description=(__doc__ or "").splitlines()[0])
    subparsers = parser.add_subparsers(dest="command", required=True)
    for module in [COMMANDS[command]] if command in COMMANDS else SUBCOMMANDS:
        importlib.import_module(module).register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    command = next((a for a in argv if not a.startswith("-")), None)  # `llmops` has no options of its own but -h
    args = build_parser(command).parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
