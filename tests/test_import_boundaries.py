"""Import boundaries of the architecture, checked on the source text (AST, every import).

- the pure layers (api, builders, status, autoscaling, crdgen) import no kopf/kubernetes/boto3;
- the controller package ``llmops`` imports no torch/vllm/deepspeed (it runs in a slim image);
- the in-pod package ``llmops_runtime`` imports no kopf;
- no ``__init__.py`` in operator/ (a package named ``operator`` would shadow the stdlib).
"""

from __future__ import annotations

import ast
import pathlib

import pytest

SRC = pathlib.Path(__file__).resolve().parents[1] / "operator"

RULES = [
    ("llmops/api", {"kopf", "kubernetes", "boto3", "torch", "vllm", "deepspeed"}),
    ("llmops/builders", {"kopf", "kubernetes", "boto3", "torch", "vllm", "deepspeed"}),
    ("llmops/status", {"kopf", "kubernetes", "boto3", "torch", "vllm", "deepspeed"}),
    ("llmops/autoscaling", {"kopf", "kubernetes", "boto3", "torch", "vllm", "deepspeed"}),
    ("llmops/crdgen", {"kopf", "kubernetes", "boto3", "torch", "vllm", "deepspeed"}),
    ("llmops", {"torch", "vllm", "deepspeed", "transformers", "peft"}),
    ("llmops_runtime", {"kopf"}),
]


def imported_roots(path: pathlib.Path) -> set[str]:
    roots = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots.add(node.module.split(".")[0])
    return roots


@pytest.mark.parametrize(("package", "forbidden"), RULES, ids=[r[0] for r in RULES])
def test_layer_imports(package: str, forbidden: set[str]) -> None:
    violations = []
    for path in sorted((SRC / package).rglob("*.py")):
        bad = imported_roots(path) & forbidden
        if bad:
            violations.append(f"{path.relative_to(SRC)} imports {sorted(bad)}")
    assert not violations, "\n".join(violations)


def test_boundary_checker_catches_a_violation(tmp_path: pathlib.Path) -> None:
    bad = tmp_path / "x.py"
    bad.write_text("import kopf\nfrom torch.nn import Linear\n")
    assert {"kopf", "torch"} <= imported_roots(bad)


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


def test_pyflakes_clean() -> None:
    """No unused imports or variables, undefined names, or placeholder-less f-strings (ruff's F rules)."""
    import shutil
    import subprocess
    import sys

    ruff = shutil.which("ruff", path=str(pathlib.Path(sys.executable).parent)) or shutil.which("ruff")
    if ruff is None:
        pytest.skip("ruff not installed (it is in the test extra)")
    root = SRC.parent
    out = subprocess.run([ruff, "check", "--select", "F", "--output-format", "concise", "--no-cache",
                          "operator", "tests", "e2e", "bench"], cwd=root, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
