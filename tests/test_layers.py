"""The package's layering (STYLE.md): imports run downwards only, and no module-level import cycle exists."""

from __future__ import annotations

import ast
from pathlib import Path

import autocompress

PACKAGE = Path(autocompress.__file__).parent
# Lower layers never import upper ones. Within a layer, modules may import each other (models may use data).
LAYERS = [
    {"errors", "files", "config", "registry", "runs", "plugins", "context_rules", "distributed"},
    {"data", "models"},
    {"compress"},
    {"hardware"},
    {"env"},
    {"search"},
    {"deploy", "evaluation", "testing"},
    {"cli", "__main__"},
]
LEVEL = {part: i for i, parts in enumerate(LAYERS) for part in parts}


def _part(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[0] == "autocompress" else None


def _imports(path: Path, typing_too: bool = False) -> list[tuple[str, bool]]:
    """(module, at file level) for every ``autocompress`` import of a file; type-checking-only ones excluded unless
    ``typing_too`` (then they count as file level)."""
    tree = ast.parse(path.read_text())
    typing_only = {
        id(n)
        for node in ast.walk(tree)
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
        for n in ast.walk(node)
    }
    top = {id(n) for n in tree.body} | (typing_only if typing_too else set())
    if typing_too:
        typing_only = set()
    found = []
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("autocompress"):
            found.append((node.module, id(node) in top))
        elif isinstance(node, ast.Import):
            found += [(a.name, id(node) in top) for a in node.names if a.name.startswith("autocompress")]
    return found


def _modules() -> dict[str, Path]:
    result = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        result[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return result


def test_imports_run_downwards_only() -> None:
    upward = []
    for module, path in _modules().items():
        own = _part(module)
        if own is None:
            continue  # the top-level package re-exports the public API lazily
        for imported, _ in _imports(path):
            target = _part(imported)
            if target is not None and LEVEL[target] > LEVEL[own]:
                upward.append(f"{module} imports {imported}")
    assert not upward, upward


def _targets(module: str, modules: dict[str, Path]) -> set[str]:
    """The modules a file-level import of ``module`` loads (``from autocompress.deploy import onnx_wire`` names
    the submodule); the top-level package's lazy re-exports are not edges."""
    return {module} if module in modules and module != "autocompress" else set()


def test_no_file_level_import_cycle() -> None:
    """No circle among file-level imports, TYPE_CHECKING ones included (they still tie the modules together for a
    reader and for the type checker)."""
    modules = _modules()
    graph: dict[str, set[str]] = {}
    for m, p in modules.items():
        tree = ast.parse(p.read_text())
        subs = {
            f"{n.module}.{a.name}"
            for n in ast.walk(tree)
            if isinstance(n, ast.ImportFrom) and n.module
            for a in n.names
            if f"{n.module}.{a.name}" in modules
        }
        graph[m] = set()
        for imported, top in _imports(p, typing_too=True):
            if top:
                named = {s for s in subs if s.startswith(imported + ".")}
                graph[m] |= named or _targets(imported, modules)
    graph["autocompress"] = set()
    state: dict[str, int] = {}
    cycles: list[list[str]] = []

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in graph[node]:
            if state.get(nxt) == 1:
                cycles.append([*stack[stack.index(nxt) :], nxt])
            elif nxt not in state:
                visit(nxt, stack)
        stack.pop()
        state[node] = 2

    for module in modules:
        if module not in state:
            visit(module, [])
    assert not cycles, cycles


# What the on-device runtime may import of the package: itself and these leaves, none of which imports torch,
# gymnasium, onnx or yaml (tests/deploy/test_device.py runs it with those unimportable).
RUNTIME = "autocompress.deploy.runtime"
RUNTIME_LEAVES = {
    "autocompress",
    "autocompress.errors",
    "autocompress.files",
    "autocompress.registry",
    "autocompress.context_rules",
    "autocompress.deploy",
    "autocompress.deploy.manifest",
    "autocompress.deploy.onnx_wire",
    "autocompress.deploy.shared_weights",
    RUNTIME,
}


def test_deploy_sits_above_search_and_the_runtime_is_a_leaf() -> None:
    assert LEVEL["deploy"] == LEVEL["search"] + 1
    modules = _modules()
    reached, todo = set(), [RUNTIME]
    while todo:
        module = todo.pop()
        if module in reached:
            continue
        reached.add(module)
        todo += [i for i, _ in _imports(modules[module]) if i in modules]
    assert reached <= RUNTIME_LEAVES, sorted(reached - RUNTIME_LEAVES)
    for module in reached:
        imported = {n.split(".")[0] for n in _third_party(modules[module])}
        optional = {"gymnasium"} if module == "autocompress.registry" else set()  # imported only where installed
        assert imported <= {"numpy", "onnxruntime", *optional}, (module, imported)


def _third_party(path: Path) -> set[str]:
    import sys

    tree = ast.parse(path.read_text())
    names = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    names |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module and not n.level}
    return {n for n in names if n.split(".")[0] not in sys.stdlib_module_names and not n.startswith("autocompress")}


def test_the_readme_python_snippet_runs(tmp_path: Path, monkeypatch, capsys) -> None:  # type: ignore[no-untyped-def]
    """The README's "From Python" block runs as written (a user's searcher, callback and export)."""
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    block = readme.split("### From Python", 1)[1].split("```python\n", 1)[1].split("```", 1)[0]
    monkeypatch.setenv("AUTOCOMPRESS_RUNS_DIR", str(tmp_path))
    namespace: dict[str, object] = {}
    exec(compile(block, "README.md", "exec"), namespace)  # the project's own documentation, not user input
    summary, report = namespace["summary"], namespace["report"]
    assert summary["episodes"] == 5 and report["verification"]["passed"]  # type: ignore[index]
    assert len(capsys.readouterr().out.splitlines()) == 5
