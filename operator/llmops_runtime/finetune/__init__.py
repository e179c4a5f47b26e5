"""The fixed finetune entry: parameters + this code + a dataset = a finetune run.

``python -m llmops_runtime.launch -m llmops_runtime.finetune [--spec-file F] [--log-file P]``

Configuration is the FinetuneJob spec itself, as JSON in ``$LLMOPS_FINETUNE_SPEC`` (camelCase,
exactly the CR's ``spec``; ``--spec-file`` reads it from a file instead), validated with the
same pydantic model the operator uses. The run environment (rank, checkpoint URI/interval,
resume hint, progress Lease) is the TrainingJob contract read by :class:`Session`.

What happens, in order (see docs/finetune.md):

1. inputs (:mod:`.inputs`): spec, method feasibility (QLoRA needs CUDA + bitsandbytes),
   output location, dataset (read, hashed, fields checked), base model staged and verified
   through the serving fetcher, position limit, tokenizer/chat template;
2. training (:mod:`.run`): full or LoRA (peft) under DDP, exact resume via Session;
3. evaluation at checkpoints and at the end, keep best, optional early stop;
4. publish best (or last) weights atomically with a sha256 manifest and a model card.

Every rejected input ends the process with ``ExitCode.CONFIG_ERROR`` (78) and a one-line
termination message ``<Reason>: <detail>`` (reasons in :mod:`.errors`), before anything is
written at the output.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from llmops_runtime.serve.fetch import write_termination_message

from .errors import FinetuneError
from .inputs import SPEC_ENV, load_spec

__all__ = ["SPEC_ENV", "FinetuneError", "load_spec", "main"]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m llmops_runtime.finetune", description=__doc__.splitlines()[0])
    ap.add_argument("--spec-file", help=f"read the spec JSON from this file instead of ${SPEC_ENV}")
    ap.add_argument("--log-file", default=os.environ.get("FINETUNE_LOG_FILE"), help="per-rank JSON lines of step losses (hex)")
    ap.add_argument("--step-delay", type=float, default=float(os.environ.get("FINETUNE_STEP_DELAY") or 0), help="tests: sleep per step")
    ap.add_argument("--threads", type=int, default=int(os.environ.get("FINETUNE_THREADS") or 1), help="torch threads (0 = default)")
    a = ap.parse_args(sys.argv[1:] if argv is None else argv)
    session = None
    try:
        spec = load_spec(Path(a.spec_file).read_text() if a.spec_file else os.environ.get(SPEC_ENV))
        from llmops_runtime.session import Session

        from .run import prepare, run

        prepared = prepare(spec, int(os.environ.get("WORLD_SIZE", "1")))
        session = Session.from_env()
        return run(spec, prepared, session, log_file=a.log_file, step_delay=a.step_delay, threads=a.threads)
    except FinetuneError as error:
        line = error.line()
        print(f"llmops finetune: {line}", file=sys.stderr, flush=True)
        write_termination_message(line)
        if session is not None:
            session._shutdown(wait=False)
        return int(error.code)
