"""`llmops crds [--check] [--out DIR] [--docs FILE]`: write the generated CRDs (and the field
reference), or fail on drift.

Generated means generated: crds/, docs/reference/api.md and docs/reference/conditions.md (the
condition/reason table, from llmops.plan.reasons) are only ever written by this
command, and ``--check`` (run by the tests and CI) exits 1 when a model changed without
regenerating.
"""

from __future__ import annotations

import argparse
import pathlib
import sys

from llmops.crdgen.crds import render_all
from llmops.crdgen.docs import render_conditions, render_reference

#: The repository root when running from a checkout (operator/llmops/crdgen/cli.py -> root).
REPO = pathlib.Path(__file__).resolve().parents[3]


def _in_checkout() -> bool:
    return (REPO / "pyproject.toml").exists()


def default_out() -> pathlib.Path:
    return REPO / "crds" if _in_checkout() else pathlib.Path("crds")


def default_docs() -> pathlib.Path:
    return REPO / "docs" / "reference" / "api.md" if _in_checkout() else pathlib.Path("docs/reference/api.md")


def outputs(out: pathlib.Path, docs: pathlib.Path | None) -> dict[pathlib.Path, str]:
    """Every generated file: path -> exact text."""
    files = {out / name: text for name, text in render_all().items()}
    if docs is not None:
        files[docs] = render_reference()
        files[docs.parent / "conditions.md"] = render_conditions()
    return files


def write(out: pathlib.Path, docs: pathlib.Path | None = None) -> list[pathlib.Path]:
    """Write the generated files; returns the paths written (unchanged files are not rewritten)."""
    written = []
    for path, text in outputs(out, docs).items():
        if not path.exists() or path.read_text() != text:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            written.append(path)
    return written


def drift(out: pathlib.Path, docs: pathlib.Path | None = None) -> list[str]:
    """Files that are missing or differ from what the models generate."""
    problems = []
    for path, text in outputs(out, docs).items():
        if not path.exists():
            problems.append(f"{path}: missing")
        elif path.read_text() != text:
            problems.append(f"{path}: differs from the models (run `llmops crds`)")
    return problems


def run(args: argparse.Namespace) -> int:
    out = pathlib.Path(args.out) if args.out else default_out()
    # With an explicit --out and no --docs, only CRDs are handled (e.g. a scratch directory).
    docs = pathlib.Path(args.docs) if args.docs else (None if args.out else default_docs())
    if args.check:
        problems = drift(out, docs)
        for p in problems:
            print(p, file=sys.stderr)
        if not problems:
            print(f"{out}: up to date")
        return 1 if problems else 0
    for path in write(out, docs):
        print(f"wrote {path}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("crds", help="generate the CustomResourceDefinitions from the typed API")
    p.add_argument("--check", action="store_true", help="exit 1 if the files on disk differ from the models")
    p.add_argument("--out", default=None, help="CRD directory (default: the repository's crds/)")
    p.add_argument("--docs", default=None, help="field reference file (default: docs/reference/api.md in the repository)")
    p.set_defaults(func=run)
