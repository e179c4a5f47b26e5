"""What a process node runs for a container image: the node-level runtime mapping.

A process node has no images: a container's command runs as a local process. An image stands
for an environment (which ``python``, which ``vllm`` its PATH finds) and for entrypoints that
exist in it. ``ImageRuntime`` says how this node provides one image: directories put first on
PATH (the image's bin directories) and argv prefixes replaced by what runs the same program
here. The mapping is node configuration, given where the agents are created (``Sandbox(...,
serving=...)``, ``llmops node --serving``): what serves an InferenceService is decided by how
the nodes run pods. The operator renders the GPU image's real vLLM argv everywhere; nothing in
a CR, and nothing about which API server the node is joined to, can pick the test double.

Two serving runtimes for the server image:

* ``vllm``: the vLLM venv (``make install`` creates ``.venv-vllm``: the CPU build of vLLM plus
  llmops_runtime, as in the server image). ``vllm serve`` becomes ``python -m
  vllm.entrypoints.cli.main serve`` with that venv's interpreter: the same CLI as the console
  script, which the CPU build's distribution name breaks. The fetch and adapter-agent
  containers of the same image also run in that venv, as they would in the image;
* ``standin``: ``vllm serve`` becomes ``python -m llmops_runtime.serve.standin`` (the test
  double: fast start, scriptable load), other containers as the node's own interpreter runs them.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from llmops.builders.inference import DEFAULT_SERVER_IMAGE

REPO_ROOT = Path(__file__).resolve().parents[4]
VLLM_VENV_ENV = "LLMOPS_VLLM_VENV"  # overrides where the vLLM venv is (default REPO_ROOT/.venv-vllm)
SERVING_CHOICES = ("vllm", "standin")
ANY_IMAGE = "*"  # a mapping key that applies to images with no entry of their own


def image_repository(image: str) -> str:
    """``registry:5000/org/name:tag@sha256:..`` -> ``registry:5000/org/name``."""
    name = image.split("@", 1)[0]
    slash = name.rfind("/")
    colon = name.rfind(":")
    return name[:colon] if colon > slash else name


@dataclass(frozen=True)
class ImageRuntime:
    """How this node runs the containers of one image (see the module essay)."""

    bin_dirs: tuple[str, ...] = ()
    rewrites: tuple[tuple[tuple[str, ...], tuple[str, ...]], ...] = ()  # argv prefix -> replacement

    def argv(self, argv: Sequence[str]) -> list[str]:
        """The first rewrite whose prefix starts ``argv`` replaces that prefix."""
        for prefix, replacement in self.rewrites:
            if tuple(argv[: len(prefix)]) == prefix:
                return [*replacement, *argv[len(prefix):]]
        return list(argv)

    def env(self, env: Mapping[str, str]) -> dict[str, str]:
        """``env`` with the image's bin directories first on PATH."""
        if not self.bin_dirs:
            return dict(env)
        rest = [p for p in env.get("PATH", "").split(os.pathsep) if p and p not in self.bin_dirs]
        return {**env, "PATH": os.pathsep.join([*self.bin_dirs, *rest])}


def lookup(runtimes: Mapping[str, ImageRuntime], image: str) -> ImageRuntime | None:
    """The entry for ``image``: its exact reference, else its repository, else ``*``."""
    for key in (image, image_repository(image), ANY_IMAGE):
        if key in runtimes:
            return runtimes[key]
    return None


def vllm_venv() -> Path:
    return Path(os.environ.get(VLLM_VENV_ENV) or REPO_ROOT / ".venv-vllm")


def vllm_runtime(venv: Path | None = None) -> ImageRuntime:
    """The server image as the vLLM venv provides it."""
    bin_dir = (venv or vllm_venv()).resolve() / "bin"
    python = str(bin_dir / "python")
    return ImageRuntime(bin_dirs=(str(bin_dir),), rewrites=((("vllm",), (python, "-m", "vllm.entrypoints.cli.main")),))


def standin_runtime() -> ImageRuntime:
    """The server image with the vLLM test double in place of ``vllm serve``."""
    return ImageRuntime(rewrites=((("vllm", "serve"), ("python", "-m", "llmops_runtime.serve.standin")),))


def serving_runtimes(serving: str, *, image: str = DEFAULT_SERVER_IMAGE, venv: Path | None = None) -> dict[str, ImageRuntime]:
    """The node mapping for ``serving`` (``vllm`` or ``standin``) of the server image's repository."""
    if serving == "vllm":
        return {image_repository(image): vllm_runtime(venv)}
    if serving == "standin":
        return {image_repository(image): standin_runtime()}
    raise ValueError(f"unknown serving runtime {serving!r} (one of {', '.join(SERVING_CHOICES)})")
