"""Docs: the generated field reference fails `llmops crds --check` when it drifts from the models,
and every relative link in docs/*.md and README.md points at a file that exists.
"""

from __future__ import annotations

import pathlib
import re

from llmops.cli import main
from llmops.crdgen import cli as crds_cli

ROOT = pathlib.Path(__file__).resolve().parents[2]


def test_reference_doc_drift_is_detected(tmp_path: pathlib.Path) -> None:
    out, docs = tmp_path / "crds", tmp_path / "api.md"
    assert main(["crds", "--out", str(out), "--docs", str(docs)]) == 0
    assert crds_cli.drift(out, docs) == []
    assert docs.read_text() == (ROOT / "docs" / "reference" / "api.md").read_text()  # committed file is current
    docs.write_text(docs.read_text().replace("TrainingJob", "TrainingJobs", 1))
    assert crds_cli.drift(out, docs) == [f"{docs}: differs from the models (run `llmops crds`)"]
    assert main(["crds", "--check", "--out", str(out), "--docs", str(docs)]) == 1
    docs.unlink()
    assert crds_cli.drift(out, docs) == [f"{docs}: missing"]


def test_relative_links_resolve() -> None:
    files = [*sorted((ROOT / "docs").glob("*.md")), ROOT / "README.md"]
    broken = []
    for f in files:
        for target in re.findall(r"\]\(([^)\s]+)\)", f.read_text()):
            if re.match(r"[a-z]+:", target) or target.startswith("#"):
                continue
            path = target.split("#", 1)[0]
            if not (f.parent / path).exists():
                broken.append(f"{f.relative_to(ROOT)} -> {target}")
    assert broken == []


def test_docs_index_lists_every_doc() -> None:
    index = (ROOT / "docs" / "README.md").read_text()
    for f in sorted((ROOT / "docs").glob("*.md")):
        if f.name != "README.md":
            assert f"]({f.name})" in index, f.name
    assert "](reference/api.md)" in index
