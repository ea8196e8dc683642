"""The package layout holds: data flows one way between the role packages, the training loop
never imports a console library, and no module outgrows one idea."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "charlm"
ROLES = (
    "cli",
    "api",
    "tune",
    "bench",
    "viz",
    "export",
    "training",
    "inference",
    "reporting",
    "runs",
    "data",
    "models",
)
# What each role package may import at module level (the base modules -- config, errors,
# files, faults, device, registry -- are open to all). Imports inside functions (the schema
# asking a registry, a sink importing its backend) are deliberate and not counted here.
ALLOWED = {
    "cli": set(ROLES),
    "api": {"training", "inference", "reporting", "runs", "data", "models"},
    "tune": {"training", "inference", "reporting", "runs", "data", "models"},
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


def import_graph() -> dict[str, set[str]]:
    """Every charlm module's imports of other charlm modules, at module level and inside
    functions alike (`from charlm.inference import sample` names the module sample)."""
    names = {}
    for path in PACKAGE.rglob("*.py"):
        parts = ("charlm", *path.relative_to(PACKAGE).with_suffix("").parts)
        names[path] = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
    known = set(names.values())
    graph = {}
    for path, tree in modules():
        edges = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                edges |= {a.name for a in node.names if a.name in known}
            elif isinstance(node, ast.ImportFrom) and node.module in known:
                edges |= {
                    f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in known else node.module for a in node.names
                }
        graph[names[path]] = edges - {names[path]}
    return graph


def package_of(module: str) -> str:
    return ".".join(module.split(".")[:2])


def test_no_import_circle_within_a_package():
    """Within one package (charlm.training, charlm.inference, ...) no module reaches itself
    through imports, deferred ones included. Across packages only the schema's deferred
    lookups in the registries (config -> models, data) go against the flow."""
    graph = import_graph()
    circles = []

    def reach(start: str, node: str, seen: list[str]) -> None:
        for nxt in graph[node]:
            if package_of(nxt) != package_of(start):
                continue
            if nxt == start:
                circles.append(" -> ".join([*seen, start]))
            elif nxt not in seen and len(seen) < 12:
                reach(start, nxt, [*seen, nxt])

    for module in graph:
        reach(module, module, [module])
    assert not circles, circles[:5]
