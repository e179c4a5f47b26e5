"""Model manifests: the sha256 and size of every file of a model, and the manifest's own digest.

One format: JSON ``{"format": "llmops-model-manifest/1", "files": {"rel/path": {"sha256":
hex, "size": n}}}``, the same idea as the checkpoint engine's manifest (a listing of
sha256/size per file) but defined here so the fetcher does not depend on the checkpoint
code. The *digest* of a model is the sha256 of the manifest file's bytes; that is what
``spec.model.manifestSha256`` pins and what ``status.resolved.digest`` reports.
:func:`render` writes the canonical bytes (sorted keys, no spaces) so a manifest generated
from the same files always has the same digest.

``python -m llmops_runtime.serve.manifest DIR [-o FILE]`` writes a manifest for a local model.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

FORMAT = "llmops-model-manifest/1"
#: Name the fetcher looks for at the root of a model when no --manifest is given.
DEFAULT_NAME = "llmops-manifest.json"
_HEX = set("0123456789abcdef")
_CHUNK = 8 << 20


class ManifestError(ValueError):
    """The manifest does not parse or lists an unsafe path."""


@dataclass(frozen=True)
class Entry:
    sha256: str
    size: int


def check_relpath(path: str) -> str:
    """A relative POSIX path inside the model (no '..', no absolute, no backslashes)."""
    p = PurePosixPath(path)
    if not path or p.is_absolute() or ".." in p.parts or "\\" in path or str(p) != path.rstrip("/"):
        raise ManifestError(f"unsafe or non-normalised path in manifest: {path!r}")
    return path


def parse(data: bytes) -> dict[str, Entry]:
    """Manifest bytes -> {path: Entry}; raises ManifestError naming what is wrong."""
    try:
        doc = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ManifestError(f"manifest is not JSON: {e}") from None
    if not isinstance(doc, dict) or doc.get("format", FORMAT) != FORMAT or not isinstance(doc.get("files"), dict):
        raise ManifestError(f"manifest must be {{'format': {FORMAT!r}, 'files': {{path: {{sha256, size}}}}}}")
    out: dict[str, Entry] = {}
    for path, e in doc["files"].items():
        check_relpath(path)
        sha = str((e or {}).get("sha256", "")).lower() if isinstance(e, dict) else ""
        size = e.get("size") if isinstance(e, dict) else None
        if len(sha) != 64 or not set(sha) <= _HEX:
            raise ManifestError(f"{path}: sha256 must be 64 hex digits")
        if size is not None and (not isinstance(size, int) or size < 0):
            raise ManifestError(f"{path}: size must be a non-negative integer")
        out[path] = Entry(sha, -1 if size is None else size)
    return out


def render(files: Mapping[str, Entry]) -> bytes:
    """Canonical manifest bytes for ``files``."""
    doc = {"format": FORMAT, "files": {p: {"sha256": e.sha256, "size": e.size} for p, e in sorted(files.items())}}
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode() + b"\n"


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def hash_file(path: Path) -> Entry:
    h = hashlib.sha256()
    n = 0
    with open(path, "rb", buffering=0) as f:
        buf = bytearray(_CHUNK)
        view = memoryview(buf)
        while k := f.readinto(buf):
            h.update(view[:k])
            n += k
    return Entry(h.hexdigest(), n)


def build(root: Path, *, exclude: frozenset[str] = frozenset()) -> dict[str, Entry]:
    """Hash every regular file under ``root`` (following symlinks, as HF snapshots need)."""
    out: dict[str, Entry] = {}
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root).as_posix()
        if p.is_file() and rel not in exclude and not rel.startswith(".llmops-"):
            out[rel] = hash_file(p)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m llmops_runtime.serve.manifest", description="Write a model manifest.")
    ap.add_argument("dir", type=Path)
    ap.add_argument("-o", "--output", type=Path, help=f"default: DIR/{DEFAULT_NAME}")
    a = ap.parse_args(argv)
    out = a.output or a.dir / DEFAULT_NAME
    data = render(build(a.dir, exclude=frozenset({DEFAULT_NAME})))
    out.write_bytes(data)
    print(f"{out}: sha256 {digest(data)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
