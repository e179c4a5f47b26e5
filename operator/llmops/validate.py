"""`llmops validate -f CR.yaml`: check custom resources offline, as admission would.

Two independent checks run on every document, and both must pass:

1. what kube-apiserver does with the generated CRD: strict field validation (unknown
   fields), pruning, defaulting, the structural schema and the CEL rules (kubeschema);
2. the typed model the operator parses with (pydantic), which also enforces the name bound
   that keeps child object names within 63 characters.

Each error names the field. Errors the schema already reported for a field are not repeated
from the model. Exit status 1 when any document is invalid.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from llmops.api.errors import ApiValidationError
from llmops.api.finetune import parse_finetune_job
from llmops.api.inference import parse_inference_service
from llmops.api.training import parse_training_job
from llmops.api.wire import API_GROUP, GROUP_VERSION
from llmops.crdgen.crds import schema_for
from llmops.kubeschema import apply_defaults, prune, unknown_fields, validate

PARSERS: dict[str, Callable[[dict[str, Any]], Any]] = {
    "TrainingJob": parse_training_job,
    "FinetuneJob": parse_finetune_job,
    "InferenceService": parse_inference_service,
}


def check(body: dict[str, Any], old: dict[str, Any] | None = None) -> list[str]:
    """Every problem of one custom resource, each starting with the field path."""
    if not isinstance(body, dict):
        return ["<root>: a custom resource must be a mapping"]
    kind = body.get("kind")
    if body.get("apiVersion") != GROUP_VERSION:
        return [f"apiVersion: Unsupported value: {body.get('apiVersion')!r}: supported values: \"{GROUP_VERSION}\""]
    if kind not in PARSERS:
        supported = ", ".join(f'"{k}"' for k in PARSERS)
        return [f"kind: Unsupported value: {kind!r}: supported values: {supported}"]
    schema = schema_for(kind)
    problems = [str(e) for e in unknown_fields(schema, body)]
    admitted = apply_defaults(schema, prune(schema, body))
    old_admitted = apply_defaults(schema, prune(schema, old)) if old else None
    schema_errors = validate(schema, admitted, old_admitted)
    problems += [str(e) for e in schema_errors]
    reported = {e.path for e in schema_errors} | {e.path for e in unknown_fields(schema, body)}
    try:
        PARSERS[kind](body)
    except ApiValidationError as exc:
        for path, msg in exc.errors:
            if path in reported or any(r.startswith(path + ".") or r.startswith(path + "[") for r in reported):
                continue  # the schema already named this field (or one below it)
            problems.append(f"{path}: {msg}")
    return problems


def _name(body: Any) -> str:
    if isinstance(body, dict):
        return f"{body.get('kind', '?')}.{API_GROUP}/{(body.get('metadata') or {}).get('name', '?')}"
    return "?"


def run(args: argparse.Namespace) -> int:
    failed = False
    for path in args.filename:
        try:
            text = sys.stdin.read() if path == "-" else Path(path).read_text()
            docs = [d for d in yaml.safe_load_all(text) if d is not None]
        except (OSError, yaml.YAMLError) as exc:
            print(f"{path}: {exc}", file=sys.stderr)
            failed = True
            continue
        for doc in docs:
            problems = check(doc)
            if problems:
                failed = True
                for p in problems:
                    print(f"{path}: {_name(doc)}: {p}")
            elif not args.quiet:
                print(f"{path}: {_name(doc)}: valid")
    return 1 if failed else 0


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("validate", help="check custom resources offline (CRD schema + CEL + typed model)")
    p.add_argument("-f", "--filename", action="append", required=True, help="YAML file (repeatable; - for stdin)")
    p.add_argument("-q", "--quiet", action="store_true", help="print only errors")
    p.set_defaults(func=run)

