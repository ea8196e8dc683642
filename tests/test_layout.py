"""The package layout holds: data flows one way between the role packages, the training loop
never imports a console library, and no module outgrows one idea."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "charlm"
ROLES = ("cli", "bench", "viz", "export", "training", "inference", "reporting", "runs", "data", "models")
# What each role package may import at module level (the base modules -- config, errors,
# files, faults, device, registry -- are open to all). Imports inside functions (the schema
# asking a registry, a sink importing its backend) are deliberate and not counted here.
ALLOWED = {
    "cli": set(ROLES),
    "bench": {"training", "inference", "reporting", "runs", "data", "models"},
    "viz": {"inference", "runs", "data", "models"},
    "export": {"inference", "runs", "data", "models"},
    "training": {"inference", "reporting", "runs", "data", "models"},
    "inference": {"runs", "data", "models"},
    "reporting": {"inference", "runs"},
    "runs": {"models"},
    "data": set(),
    "models": set(),
}


def modules():
    for path in sorted(PACKAGE.rglob("*.py")):
        yield path, ast.parse(path.read_text(encoding="utf-8"))


def role(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in ROLES else None


def top_level_imports(tree: ast.Module) -> list[str]:
    return [node.module for node in tree.body if isinstance(node, ast.ImportFrom) and node.module]


@pytest.mark.parametrize(
    "path, tree", list(modules()), ids=lambda v: str(v.relative_to(PACKAGE)) if isinstance(v, Path) else ""
)
def test_data_flows_one_way_between_packages(path, tree):
    own = role("charlm." + ".".join(path.relative_to(PACKAGE).with_suffix("").parts))
    if path.name == "__main__.py":
        return  # `python -m charlm` starts the CLI
    if own is None:  # a base module: imports no role package at module level
        assert not [m for m in top_level_imports(tree) if role(m)], path
        return
    for module in top_level_imports(tree):
        other = role(module)
        assert other is None or other == own or other in ALLOWED[own], f"{path}: {own} imports {module}"


def test_training_code_never_imports_a_console_library():
    for path, tree in modules():
        if role("charlm." + ".".join(path.relative_to(PACKAGE).parts)) not in (
            "training",
            "data",
            "models",
            "runs",
            "inference",
            "viz",
            "export",
        ):
            continue
        names = [a.name for node in ast.walk(tree) if isinstance(node, ast.Import) for a in node.names]
        names += [node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module]
        assert not [n for n in names if n.split(".")[0] in ("rich", "typer")], path
