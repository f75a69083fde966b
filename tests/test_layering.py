"""Dependencies point downward (docs/ARCHITECTURE.md): no package imports a layer above it, nor anyone's
private names. Read from the source, so a new import that breaks the order fails here, not in review."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "seawall"

# Each package and the packages it must never import (those above it).
FORBIDDEN = {
    "data": {"models", "generation", "detect", "guard", "gene", "lab", "evaluate"},
    "models": {"generation", "detect", "guard", "gene", "lab", "evaluate"},
    "generation": {"detect", "guard", "gene", "lab", "evaluate"},
    "detect": {"guard", "gene", "lab", "evaluate"},
    "gene": {"guard", "lab", "evaluate"},
    "lab": {"guard", "evaluate"},
}


def _imports(path: Path) -> list[tuple[str, list[str], int]]:
    """(module, imported names, line) of every `seawall.` import in a file, top-level or inside functions."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("seawall"):
            found.append((node.module, [a.name for a in node.names], node.lineno))
        elif isinstance(node, ast.Import):
            found += [(a.name, [], node.lineno) for a in node.names if a.name.startswith("seawall")]
    return found


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_no_package_imports_a_layer_above_it(package):
    violations = []
    for path in sorted((SRC / package).rglob("*.py")):
        for module, _, line in _imports(path):
            parts = module.split(".")
            if len(parts) > 1 and parts[1] in FORBIDDEN[package]:
                violations.append(f"{path.relative_to(SRC)}:{line} imports {module}")
    assert not violations, "\n".join(violations)


def test_no_module_imports_another_packages_private_names():
    violations = []
    for path in sorted(SRC.rglob("*.py")):
        own = path.relative_to(SRC).parts[0]
        for module, names, line in _imports(path):
            parts = module.split(".")
            other = len(parts) > 1 and parts[1] != own.removesuffix(".py")
            private = [n for n in names if n.startswith("_") and not n.startswith("__")]
            private += [p for p in parts[2:] if p.startswith("_")]  # a private module, e.g. detect._torch
            if other and private:
                violations.append(f"{path.relative_to(SRC)}:{line} imports {private} from {module}")
    assert not violations, "\n".join(violations)
