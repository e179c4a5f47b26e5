"""`llmops render -f CR.yaml [--attempt N] [--backend B]`: print the children of a CR.

Pure and offline: the same builders the operator runs, fed with the CR from a file and the
facts given as flags, printed as multi-document YAML in a stable order. Review what the
operator will create before applying (and in golden tests) without a cluster.

- TrainingJob: the attempt's pods, headless Service, gang object, Lease/RBAC (flags: attempt,
  gang backend, checkpoint to resume from);
- FinetuneJob: its child TrainingJob, then that TrainingJob's children as above;
- InferenceService: Deployment (at minReplicas, at least 1), Service, PDB, cache PVC and the
  autoscaler object its engine asks for (measured load times unknown: the defaults).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import yaml

from llmops.api import finetune, inference, training
from llmops.api.errors import ApiValidationError
from llmops.api.scheduling import GangBackend
from llmops.builders import finetune as finetune_builders
from llmops.builders import inference as inference_builders
from llmops.builders.training import BuildInputs, build_training_children

#: uid used when the CR was never stored (a file): owner references need one.
PLACEHOLDER_UID = "00000000-0000-0000-0000-000000000000"
BACKEND_CHOICES = [b.value for b in GangBackend if b != GangBackend.AUTO]
KINDS = (training.KIND, finetune.KIND, inference.KIND)


def _stored(body: dict[str, Any]) -> dict[str, Any]:
    """The body as if the API server had stored it: a namespace and a uid for owner references."""
    body = dict(body)
    meta = dict(body.get("metadata") or {})
    meta.setdefault("namespace", "default")
    meta.setdefault("uid", PLACEHOLDER_UID)
    body["metadata"] = meta
    return body


def render_documents(body: dict[str, Any], attempt: int = 0, backend: str | None = None,
                     resume_from: str | None = None) -> list[dict[str, Any]]:
    """The child objects for a CR body. For TrainingJobs, ``backend`` None takes the spec's
    value; ``auto`` (which needs discovery) renders as ``none``."""
    body = _stored(body)
    kind = body.get("kind")
    if kind == finetune.KIND:
        child = finetune_builders.build_training_job(finetune.parse_finetune_job(body))
        return [child, *render_documents(child, attempt, backend, resume_from)]
    if kind == inference.KIND:
        svc = inference.parse_inference_service(body)
        return inference_builders.build_inference_children(svc, inference_builders.BuildInputs(replicas=max(svc.spec.min_replicas, 1)))
    job = training.parse_training_job(body)
    chosen = GangBackend(backend) if backend else job.spec.scheduling.gang.backend
    if chosen == GangBackend.AUTO:
        chosen = GangBackend.NONE
    return build_training_children(job, BuildInputs(attempt=attempt, backend=chosen, resume_from=resume_from))


def dump(docs: list[dict[str, Any]]) -> str:
    return yaml.safe_dump_all(docs, sort_keys=True, default_flow_style=False, explicit_start=True)


def _run(args: argparse.Namespace) -> int:
    try:
        text = sys.stdin.read() if args.file == "-" else Path(args.file).read_text(encoding="utf-8")
        bodies = [d for d in yaml.safe_load_all(text) if d]
    except (OSError, yaml.YAMLError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    out: list[dict[str, Any]] = []
    for body in bodies:
        if body.get("kind") not in KINDS:
            print(f"error: render supports {', '.join(KINDS)}, got {body.get('kind')!r}", file=sys.stderr)
            return 2
        try:
            out += render_documents(body, args.attempt, args.backend, args.resume_from)
        except ApiValidationError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
    sys.stdout.write(dump(out))
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("render", help="print the child objects of a TrainingJob, FinetuneJob or InferenceService as YAML (offline)")
    p.add_argument("-f", "--file", required=True, help="CR file (YAML, may hold several documents), - for stdin")
    p.add_argument("--attempt", type=int, default=0, help="gang restart attempt to render (default 0)")
    p.add_argument("--backend", choices=BACKEND_CHOICES, default=None, help="gang backend (default: the spec's; auto renders as none)")
    p.add_argument("--resume-from", default=None, help="checkpoint id the attempt resumes from")
    p.set_defaults(func=_run)
