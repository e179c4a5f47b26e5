"""images/trainer, checked without a Docker engine.

* Versions: the torch the image installs is pyproject.toml's pin, and DeepSpeed comes only
  through the runtime extra (pyproject's pin, installed after torch), never a second pin.
* User: the image's user is created by images/trainer/create-user.sh, run here against
  scratch ``/etc`` files (shadow-utils' ``--prefix``): on an Ubuntu 24.04 base, whose
  ``ubuntu`` account holds uid/gid 1000 (where a plain ``groupadd --gid 1000`` fails), and
  on a base without it; the result is ``trainer`` at 1000 with its home, and a second run
  changes nothing.
* Paths: the image runs as 1000:1000 from /workspace (owned by it) with the runtime's venv
  on PATH.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "images" / "trainer" / "Dockerfile"
CREATE_USER = ROOT / "images" / "trainer" / "create-user.sh"


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments), continuation lines joined, comments dropped."""
    lines = [ln for ln in DOCKERFILE.read_text().splitlines() if not ln.lstrip().startswith("#")]
    joined = re.sub(r"\\\n", " ", "\n".join(lines))
    out = []
    for line in joined.splitlines():
        if line.strip():
            word, _, rest = line.strip().partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def pyproject_pin(name: str) -> str:
    found = re.search(rf'"{name}==([^"]+)"', (ROOT / "pyproject.toml").read_text())
    assert found, f"pyproject.toml pins no {name}"
    return found.group(1)


def test_versions_follow_pyproject():
    ins = instructions()
    args = dict(rest.split("=", 1) for word, rest in ins if word == "ARG" and "=" in rest)
    assert args["TORCH_VERSION"] == pyproject_pin("torch")
    runs = [rest for word, rest in ins if word == "RUN"]
    torch_at = next(i for i, r in enumerate(runs) if '"torch==${TORCH_VERSION}"' in r)
    extra_at = next(i for i, r in enumerate(runs) if re.search(r"pip install .*\.\[runtime", r))
    assert torch_at < extra_at, "torch must be installed before the runtime extra (which brings deepspeed)"
    assert not re.search(r"deepspeed==", DOCKERFILE.read_text()), "deepspeed has one pin: pyproject's runtime extra"
    assert pyproject_pin("deepspeed")


def test_user_paths_and_order():
    ins = instructions()
    assert not any(word == "RUN" and "groupadd --gid 1000" in rest for word, rest in ins)
    assert ("COPY", "images/trainer/create-user.sh /usr/local/sbin/llmops-create-user") in ins
    create = next(i for i, (w, r) in enumerate(ins) if w == "RUN" and "llmops-create-user" in r)
    assert "chown trainer:trainer /workspace" in ins[create][1]
    user = next(i for i, (w, _) in enumerate(ins) if w == "USER")
    assert ins[user] == ("USER", "1000:1000") and create < user
    workdirs = [r for w, r in ins[:user] if w == "WORKDIR"]
    assert workdirs[-1] == "/workspace"
    env = " ".join(r for w, r in ins if w == "ENV")
    assert "PATH=/opt/llmops/bin:$PATH" in env
    assert ins[-1] == ("CMD", '["python", "-m", "llmops_runtime.train"]')
    base = next(r for w, r in ins if w == "ARG" and r.startswith("CUDA_IMAGE="))
    assert base.endswith("ubuntu24.04"), "the user fixture below models an Ubuntu 24.04 base"


UBUNTU_2404 = {
    "passwd": "root:x:0:0:root:/root:/bin/bash\nubuntu:x:1000:1000:Ubuntu:/home/ubuntu:/bin/bash\n",
    "group": "root:x:0:\nadm:x:4:syslog,ubuntu\nubuntu:x:1000:\n",
    "shadow": "root:*:19000:0:99999:7:::\nubuntu:!:19000:0:99999:7:::\n",
    "gshadow": "root:*::\nadm:*::syslog,ubuntu\nubuntu:!::\n",
}
PLAIN_BASE = {k: "\n".join(ln for ln in v.splitlines() if "ubuntu:" not in ln) + "\n" for k, v in UBUNTU_2404.items()}


def _scratch_root(tmp: Path, files: dict[str, str]) -> Path:
    (tmp / "etc").mkdir(parents=True)
    for name, text in files.items():
        path = tmp / "etc" / name
        path.write_text(text)
        path.chmod(0o600 if "shadow" in name else 0o644)
    if "ubuntu:x:1000" in files["passwd"]:
        (tmp / "home" / "ubuntu").mkdir(parents=True)
    return tmp


def _create_user(root: Path) -> subprocess.CompletedProcess:
    return subprocess.run(["sh", str(CREATE_USER)], env={**os.environ, "ROOT": str(root)},
                          capture_output=True, text=True, timeout=60)


def _entry(root: Path, db: str, name: str) -> list[str] | None:
    for line in (root / "etc" / db).read_text().splitlines():
        if line.split(":")[0] == name:
            return line.split(":")
    return None


def _shadow_utils_usable() -> str | None:
    if os.geteuid() != 0:
        return "useradd/groupadd need root even with --prefix; run as root to check create-user.sh"
    if not shutil.which("useradd") or "--prefix" not in subprocess.run(["useradd", "--help"], capture_output=True, text=True).stdout:
        return "shadow-utils with --prefix (4.6+) is not installed"
    return None


@pytest.mark.parametrize("base", [UBUNTU_2404, PLAIN_BASE], ids=["ubuntu-24.04", "no-user-at-1000"])
def test_create_user_takes_uid_and_gid_1000(tmp_path, base):
    why = _shadow_utils_usable()
    if why:
        pytest.skip(why)
    root = _scratch_root(tmp_path, base)
    result = _create_user(root)
    assert result.returncode == 0, result.stderr
    assert _entry(root, "passwd", "trainer")[2:4] == ["1000", "1000"]
    assert _entry(root, "passwd", "trainer")[5] == "/home/trainer" and (root / "home" / "trainer").is_dir()
    assert (root / "home" / "trainer").stat().st_uid == 1000
    assert _entry(root, "group", "trainer")[2] == "1000"
    assert _entry(root, "passwd", "ubuntu") is None and _entry(root, "group", "ubuntu") is None
    assert not (root / "home" / "ubuntu").exists()
    assert _entry(root, "shadow", "trainer") is not None
    before = {db: (root / "etc" / db).read_text() for db in base}
    again = _create_user(root)
    assert again.returncode == 0, again.stderr
    assert {db: (root / "etc" / db).read_text() for db in base} == before, "a second run must change nothing"
