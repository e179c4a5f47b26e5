"""Parse argument lists with vLLM's own OpenAI-server parser; run with the vLLM venv's python.

stdin: a JSON list of argument lists (what follows ``vllm serve``). stdout: one JSON object
per list, in order: ``{"ok": true, "args": {...parsed values...}}`` or ``{"ok": false,
"error": "..."}``. The parser is built as ``vllm serve`` builds it, then the parsed namespace
goes through vLLM's own serve-args validation and engine-args conversion, so an unknown flag,
a bad value or a refused combination is an error, as it would be when the server starts.
"""

from __future__ import annotations

import contextlib
import io
import json
import sys


def build_parser():  # noqa: ANN201 - vLLM's FlexibleArgumentParser
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    try:
        from vllm.entrypoints.launchers.cli_args import make_arg_parser, validate_parsed_serve_args
    except ImportError:  # older vLLM releases keep it here
        from vllm.entrypoints.openai.cli_args import make_arg_parser, validate_parsed_serve_args
    return make_arg_parser(FlexibleArgumentParser(prog="vllm serve")), validate_parsed_serve_args


def check(argv: list[str]) -> dict[str, object]:
    from vllm.engine.arg_utils import AsyncEngineArgs

    parser, validate = build_parser()
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            ns = parser.parse_args(argv)
        if ns.model_tag is not None:  # what `vllm serve MODEL` does with the positional
            ns.model = ns.model_tag
        validate(ns)
        AsyncEngineArgs.from_cli_args(ns)
    except SystemExit:
        return {"ok": False, "error": err.getvalue().strip().splitlines()[-1] if err.getvalue().strip() else "parser exit"}
    except Exception as exc:  # noqa: BLE001 - every refusal is a result
        return {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
    return {"ok": True, "args": {k: v for k, v in vars(ns).items() if isinstance(v, (str, int, float, bool, list, type(None)))}}


def main() -> int:
    import vllm

    results = [check(list(argv)) for argv in json.load(sys.stdin)]
    json.dump({"version": vllm.__version__, "results": results}, sys.stdout, default=str)
    return 0


if __name__ == "__main__":
    sys.exit(main())
