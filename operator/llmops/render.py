"""`llmops render -f CR.yaml [--attempt N] [--backend B]`: print a TrainingJob's children.

Pure and offline: the same builders the operator runs, fed with the CR from a file and the
facts given as flags (attempt, gang backend, checkpoint to resume from), printed as
multi-document YAML in a stable order. Review what the operator will create before applying
(and in golden tests) without a cluster.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import yaml

from llmops.api.common import ApiValidationError, GangBackend
from llmops.api.training import KIND, parse_training_job
from llmops.builders.training import BuildInputs, build_training_children

#: uid used when the CR was never stored (a file): owner references need one.
PLACEHOLDER_UID = "00000000-0000-0000-0000-000000000000"
BACKEND_CHOICES = [b.value for b in GangBackend if b != GangBackend.AUTO]


def render_documents(body: dict[str, Any], attempt: int = 0, backend: str | None = None, resume_from: str | None = None) -> list[dict[str, Any]]:
    """The child objects for a TrainingJob body. ``backend`` None takes the spec's value;
    ``auto`` (which needs discovery) renders as ``none``."""
    body = dict(body)
    meta = dict(body.get("metadata") or {})
    meta.setdefault("namespace", "default")
    meta.setdefault("uid", PLACEHOLDER_UID)
    body["metadata"] = meta
    job = parse_training_job(body)
    chosen = GangBackend(backend) if backend else job.spec.scheduling.gang.backend
    if chosen == GangBackend.AUTO:
        chosen = GangBackend.NONE
    return build_training_children(job, BuildInputs(attempt=attempt, backend=chosen, resume_from=resume_from))


def dump(docs: list[dict[str, Any]]) -> str:
    return yaml.safe_dump_all(docs, sort_keys=True, default_flow_style=False, explicit_start=True)


def _run(args: argparse.Namespace) -> int:
    try:
        text = sys.stdin.read() if args.file == "-" else open(args.file, encoding="utf-8").read()
        bodies = [d for d in yaml.safe_load_all(text) if d]
    except (OSError, yaml.YAMLError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    out: list[dict[str, Any]] = []
    for body in bodies:
        if body.get("kind") != KIND:
            print(f"error: render supports {KIND} only, got {body.get('kind')!r}", file=sys.stderr)
            return 2
        try:
            out += render_documents(body, args.attempt, args.backend, args.resume_from)
        except ApiValidationError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
    sys.stdout.write(dump(out))
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("render", help="print the child objects of a TrainingJob as YAML (offline)")
    p.add_argument("-f", "--file", required=True, help="CR file (YAML, may hold several documents), - for stdin")
    p.add_argument("--attempt", type=int, default=0, help="gang restart attempt to render (default 0)")
    p.add_argument("--backend", choices=BACKEND_CHOICES, default=None, help="gang backend (default: the spec's; auto renders as none)")
    p.add_argument("--resume-from", default=None, help="checkpoint id the attempt resumes from")
    p.set_defaults(func=_run)
