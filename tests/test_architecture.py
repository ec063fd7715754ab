"""The layering of docs/architecture.md, read from the import graph: no module imports a layer above its own,
and project modules are imported at the top of a file (a function-level import would hide a cycle)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.fast

# Lowest first. A module may import its own layer and the layers below it, never one above.
LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("ground", ("pipeline.io",)),
    ("scores and flow", ("rewards",)),
    ("codecs and stylizers", ("pipeline.latents",)),
    ("policies and the RL loop", ("policies",)),
    ("pixel-space baselines", ("baselines",)),
    ("end-to-end pipeline", ("pipeline", "pipeline.scenes", "pipeline.stylize", "pipeline.methods")),
    ("evaluation, comparison, reports", ("pipeline.evaluation",)),
    ("scripts", ("scripts",)),
)
PROJECT = ("pipeline", "policies", "rewards", "baselines", "scripts")


def layer_of(module: str) -> int | None:
    """Index in ``LAYERS`` of a dotted module name (the longest matching prefix), None outside the project."""
    best = None
    for index, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            if module == prefix or module.startswith(prefix + "."):
                if best is None or len(prefix) > best[1]:
                    best = (index, len(prefix))
    return None if best is None else best[0]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def project_imports(path: Path) -> list[tuple[str, int, bool]]:
    """(imported module, line, at the top level) of every import of a project module in ``path``."""
    tree = ast.parse(path.read_text(), str(path))
    top = {id(node) for node in tree.body}
    for node in tree.body:  # ``if __package__ ...: sys.path`` blocks and try/except at the top count as top level
        if isinstance(node, (ast.If, ast.Try)):
            top.update(id(child) for child in ast.walk(node))
    found = []
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
            if not any(name.startswith(f"{node.module}.") for name in map(module_name, SOURCES)):
                names = [node.module]  # names imported from a module, not submodules
            else:  # ``from package import module``
                names = [f"{node.module}.{alias.name}" for alias in node.names]
        for name in names:
            if name.split(".")[0] in PROJECT:
                found.append((name, node.lineno, id(node) in top))
    return found


SOURCES = sorted(p for package in PROJECT for p in (REPO / package).rglob("*.py"))


def test_every_project_module_has_a_layer() -> None:
    missing = [module_name(p) for p in SOURCES if layer_of(module_name(p)) is None]
    assert not missing, f"modules outside every layer of LAYERS: {missing}"


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(REPO)))
def test_no_import_reaches_a_higher_layer(path: Path) -> None:
    own = layer_of(module_name(path))
    upward = []
    for name, line, _ in project_imports(path):
        target = layer_of(name)
        if target is not None and target > own:
            upward.append(f"line {line}: {name} ({LAYERS[target][0]}) from the {LAYERS[own][0]} layer")
    assert not upward, "imports up the layering:\n" + "\n".join(upward)


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(REPO)))
def test_project_modules_are_imported_at_the_top(path: Path) -> None:
    inner = [f"line {line}: {name}" for name, line, top in project_imports(path) if not top]
    assert not inner, "function-level imports of project modules:\n" + "\n".join(inner)


def test_the_checker_sees_an_upward_import(tmp_path: Path) -> None:
    """The checker itself: an upward and a function-level import are both reported."""
    source = tmp_path / "probe.py"
    source.write_text("from pipeline.io.files import atomic_output\n\ndef f():\n    from policies.base import Policy\n")
    imports = project_imports(source)
    assert ("policies.base", 4, False) in imports and ("pipeline.io.files", 1, True) in imports
    assert layer_of("policies.base") > layer_of("rewards.flow") > layer_of("pipeline.io.files")
    assert layer_of("pipeline.evaluation.comparison") > layer_of("pipeline.stylize") > layer_of("pipeline.latents.codecs")
