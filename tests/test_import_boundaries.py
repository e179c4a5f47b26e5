"""Import boundaries of the architecture: the import-linter contracts in pyproject.toml
(layers handlers > serving > status > builders > scheduling | autoscaling | failures > api; the API
client knows no planner; llmops.api imports no other part of llmops; the in-pod runtime imports
only llmops.api; nothing but ``llmops demo`` imports the sandbox; the pure layers import no
kopf/kubernetes/boto3/ML library), plus:

- the sandbox is an extra in practice: ``llmops operator`` loads no sandbox module, the base
  dependencies (all the operator image installs) hold none of the sandbox extra's packages;
- no ``__init__.py`` in operator/ (a package named ``operator`` would shadow the stdlib);
- test module basenames are unique; ruff's rules (pyproject.toml) hold.
"""

from __future__ import annotations

import pathlib
import re
import shutil
import subprocess
import sys
import tomllib

import pytest

SRC = pathlib.Path(__file__).resolve().parents[1] / "operator"


def tool(name: str) -> str:
    found = shutil.which(name, path=str(pathlib.Path(sys.executable).parent)) or shutil.which(name)
    if found is None:
        pytest.skip(f"{name} not installed (it is in the test extra)")
    return found


def lint_imports(config: pathlib.Path, cwd: pathlib.Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([tool("lint-imports"), "--config", str(config), "--no-cache"], cwd=cwd,
                          capture_output=True, text=True, env={"PYTHONPATH": str(cwd), "PATH": "/usr/bin:/bin"})


def test_import_contracts_are_kept() -> None:
    out = lint_imports(SRC.parent / "pyproject.toml", SRC)
    assert out.returncode == 0 and "0 broken" in out.stdout, out.stdout + out.stderr


def test_a_layer_violation_breaks_the_contract(tmp_path: pathlib.Path) -> None:
    """The same kind of contract fails on a package whose lower layer imports a higher one."""
    pkg = tmp_path / "toy"
    for sub, text in (("", ""), ("handlers", ""), ("api", "import toy.handlers\n")):
        (pkg / sub).mkdir(parents=True, exist_ok=True)
        (pkg / sub / "__init__.py").write_text(text)
    config = tmp_path / "contracts.toml"
    config.write_text('[tool.importlinter]\nroot_packages = ["toy"]\n\n[[tool.importlinter.contracts]]\n'
                      'name = "toy layers"\ntype = "layers"\nlayers = ["toy.handlers", "toy.api"]\n')
    out = lint_imports(config, tmp_path)
    assert out.returncode != 0 and "1 broken" in out.stdout, out.stdout + out.stderr


def test_the_operator_command_loads_no_sandbox() -> None:
    """The CLI imports only the module of the command it runs, so the operator process never
    loads llmops.sandbox (nor the in-pod runtime), whatever the CLI's other commands need."""
    code = ("import sys; from llmops.cli import build_parser; build_parser('operator'); import llmops.controller; "
            "print(sorted(m for m in sys.modules if m.startswith(('llmops.sandbox', 'llmops_runtime', 'moto', 'boto3'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={"PYTHONPATH": str(SRC), "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0 and out.stdout.strip() == "[]", out.stdout + out.stderr


def test_the_operator_image_installs_no_sandbox_extra() -> None:
    """images/operator installs the package without extras; the base dependencies carry none of
    the sandbox extra's packages except those the operator imports itself (none today)."""
    root = SRC.parent
    project = tomllib.loads((root / "pyproject.toml").read_text())["project"]

    def names(reqs: list[str]) -> set[str]:
        return {r.split(";")[0].split("[")[0].split("=")[0].split(">")[0].split("<")[0].strip().lower() for r in reqs}

    assert not names(project["dependencies"]) & names(project["optional-dependencies"]["sandbox"])
    dockerfile = (root / "images" / "operator" / "Dockerfile").read_text()
    installs = re.findall(r"pip install --no-cache-dir (\S+)\s*$", dockerfile, re.M)
    assert installs == ["."], installs  # the package itself, no [sandbox] (nor any other extra)


def test_operator_dir_is_not_a_package() -> None:
    assert not (SRC / "__init__.py").exists()


def test_test_module_basenames_are_unique() -> None:
    """pytest's default import mode needs unique test-module basenames across tests/ and e2e/."""
    root = SRC.parent
    seen: dict[str, pathlib.Path] = {}
    clashes = []
    for path in sorted([*root.joinpath("tests").rglob("test_*.py"), *root.joinpath("e2e").rglob("test_*.py")]):
        if path.name in seen:
            clashes.append(f"{seen[path.name].relative_to(root)} vs {path.relative_to(root)}")
        seen.setdefault(path.name, path)
    assert not clashes, "duplicate test module names: " + "; ".join(clashes)


def test_ruff_clean() -> None:
    """The lint rules in pyproject.toml hold on all code (``make lint`` runs the same)."""
    root = SRC.parent
    out = subprocess.run([tool("ruff"), "check", "--output-format", "concise", "--no-cache", "operator", "tests", "e2e", "bench"],
                         cwd=root, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
