"""The rooms keep to their imports (docs/architecture.md): no cycles among packer's modules, no
Polars on the worker side, release adapters that import only what they share, a pool that knows
nothing of shards, and shard cutting that never imports the pool."""

from __future__ import annotations

import ast
from pathlib import Path

from conftest import ROOT

PACKAGE = ROOT / "packer"
WORKER_SIDE = {
    "packer.execute",
    "packer.pool",
    "packer.images",
    "packer.video",
    "packer.reuse",
    "packer.shards",
    "packer.specs",
    "packer.state",
}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> tuple[set[str], set[str]]:
    """(packer modules imported at run time, third-party top-level names), from the source."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    tree = ast.parse(path.read_text(encoding="utf-8"))
    typing_only = {
        id(n)
        for node in ast.walk(tree)
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
        for n in ast.walk(node)
    }
    ours, theirs = set(), set()
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
                candidates = [target] + [f"{target}.{a.name}" for a in node.names]
                ours.update(c for c in candidates if module_path(c) is not None)
            elif node.module:
                (ours if node.module.startswith("packer") else theirs).add(node.module.split(".")[0])
        elif isinstance(node, ast.Import):
            for alias in node.names:
                (ours if alias.name.startswith("packer") else theirs).add(alias.name.split(".")[0])
    ours.discard(name)
    return ours, theirs


def module_path(name: str) -> Path | None:
    base = ROOT / Path(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


GRAPH = {module_name(p): imports(p) for p in PACKAGE.rglob("*.py")}


def test_there_are_no_import_cycles():
    ours = {name: {m for m in deps if m in GRAPH} for name, (deps, _) in GRAPH.items()}
    state: dict[str, int] = {}

    def visit(name: str, path: list[str]) -> None:
        state[name] = 1
        for dep in ours[name]:
            # A package's __init__ re-exporting its own modules is not a cycle of rooms.
            if dep.startswith(name + ".") or name.startswith(dep + ".") and dep == name.rsplit(".", 1)[0]:
                continue
            assert state.get(dep) != 1, f"import cycle: {' -> '.join([*path, name, dep])}"
            if dep not in state:
                visit(dep, [*path, name])
        state[name] = 2

    for name in sorted(ours):
        if name not in state:
            visit(name, [])
    assert len(GRAPH) >= 30


def test_the_worker_side_never_imports_polars():
    for name in WORKER_SIDE:
        seen, todo = set(), [name]
        while todo:
            current = todo.pop()
            if current in seen:
                continue
            seen.add(current)
            deps, third = GRAPH[current]
            assert "polars" not in third, f"{current} (reached from {name}) imports polars"
            todo.extend(d for d in deps if d in GRAPH and d != "packer")


def test_each_room_keeps_to_its_imports():
    adapters = [n for n in GRAPH if n.startswith("packer.sources.") and n.rsplit(".", 1)[1] not in
                ("common", "cli", "__main__")]  # fmt: skip
    assert len(adapters) >= 7
    for name in adapters:
        assert GRAPH[name][0] <= {"packer.sources.common"}, (name, GRAPH[name][0])
    worker_code = {"packer.images", "packer.video", "packer.objects"}
    assert GRAPH["packer.pool"][0] <= {"packer.config", "packer", *worker_code}, GRAPH["packer.pool"][0]
    assert "packer.pool" not in GRAPH["packer.execute"][0]
    for name, (deps, _) in GRAPH.items():
        if name not in ("packer.__main__", "packer.cli"):
            assert not deps & {"packer.pipeline", "packer.cli"}, (name, deps)
