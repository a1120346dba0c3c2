"""The packages' imports, read from the source (imports inside functions count too).

- ``core`` imports nothing of ours; ``train`` and ``infer`` import only ``core``; ``export``
  imports the other three; the one exception is the command line's ``seginfer --adapt``, which
  reaches ``export`` inside a function; the napari plugin (``unsupseg.napari``) imports ``core``,
  ``infer``, and ``export`` only in its adaptation's child process (adapt_job.py), inside a function;
- ``infer`` never imports torch (seginfer installs without it);
- no module imports itself through others: no import cycle;
- every import of ours names a module or a name that exists (an import inside a function,
  or in a module that only a fork server loads, fails only when it runs).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib", reason="tomllib is in the standard library from Python 3.11")
ROOT = Path(__file__).resolve().parent.parent
# what each package may import of ours, besides itself and the top-level unsupseg package
ALLOWED = {
    "unsupseg.core": set(),
    "unsupseg.train": {"unsupseg.core"},
    "unsupseg.infer": {"unsupseg.core"},
    "unsupseg.export": {"unsupseg.core", "unsupseg.train", "unsupseg.infer"},
    # the napari plugin joins the stages as the command line does: seginfer's run, and the adaptation
    "unsupseg.napari": {"unsupseg.core", "unsupseg.infer", "unsupseg.export"},
}
# the command line's layer joins the stages: seginfer --adapt (infer/cli/adapt.py) reaches the
# adaptation in export, inside the function that runs only with --adapt (it needs torch)
EXCEPTIONS = {("unsupseg.infer.cli.adapt", "unsupseg.export.adapt")}


def _modules() -> dict[str, Path]:
    """Module name -> file, from pyproject's package folders."""
    folders = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"]
    found = {}
    for package, folder in folders.items():
        for path in (ROOT / folder).rglob("*.py"):
            parts = list(path.relative_to(ROOT / folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            name = ".".join([package, *parts])
            if package != "unsupseg" or name == "unsupseg":  # unsupseg/ holds only the top package
                found[name] = path
    return found


def _imports(name: str, path: Path) -> set[str]:
    """Every module named by an import statement of the file, anywhere in it."""
    out = set()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parent + ([base] if base else []))
            out.add(base)
            out.update(f"{base}.{a.name}" for a in node.names)  # from package import module (or a name)
    return out


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    return {name: _imports(name, path) for name, path in _modules().items()}


def _top_level_names(path: Path) -> set[str]:
    """The names a module binds at its top level (definitions, assignments, imports)."""
    names = set()
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names.update(t.id for t in targets if isinstance(t, ast.Name))
        elif isinstance(node, ast.Import | ast.ImportFrom):
            names.update((a.asname or a.name).split(".")[0] for a in node.names)
    return names


def test_imports_of_ours_resolve():
    modules = _modules()
    wrong = []
    for name, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                wrong += [f"{name}: import {a.name}" for a in node.names if _ours(a.name, modules)]
            elif isinstance(node, ast.ImportFrom) and not node.level and _ours(node.module, modules):
                wrong.append(f"{name}: from {node.module} import ...")
            elif isinstance(node, ast.ImportFrom) and not node.level and node.module in modules:
                bound = _top_level_names(modules[node.module])
                wrong += [
                    f"{name}: from {node.module} import {a.name}"
                    for a in node.names
                    if f"{node.module}.{a.name}" not in modules and a.name not in bound
                ]
    assert not wrong, f"imports of what does not exist: {wrong}"


def _ours(module: str, modules: dict) -> bool:
    """Whether ``module`` is in our packages' namespace but is no module of them."""
    return module.split(".")[0] == "unsupseg" and module not in modules


def _package(module: str) -> str:
    return ".".join(module.split(".")[:2])


def test_packages_import_only_the_layers_below(graph):
    wrong = []
    for module, imports in graph.items():
        package = _package(module)
        if package not in ALLOWED:
            continue
        for imported in imports:
            if imported not in graph or imported == "unsupseg" or _package(imported) == package:
                continue
            if _package(imported) not in ALLOWED[package] and (module, imported) not in EXCEPTIONS:
                wrong.append(f"{module} imports {imported}")
    assert not wrong, wrong


def test_the_adapt_exception_imports_inside_a_function():
    """infer/cli/adapt.py imports export only inside a function: plain seginfer never loads torch."""
    for module, imported in EXCEPTIONS:
        assert imported not in _top_imports(module), f"{module} imports {imported} at its top level"


def _top_imports(module: str) -> set[str]:
    """The modules ``module`` imports from at its top level (``from X import ...``)."""
    tree = ast.parse(_modules()[module].read_text(encoding="utf-8"))
    return {node.module or "" for node in tree.body if isinstance(node, ast.ImportFrom)}


def test_infer_never_imports_torch(graph):
    wrong = [
        f"{module} imports {imported}"
        for module, imports in graph.items()
        if module.startswith("unsupseg.infer")
        for imported in imports
        if imported.split(".")[0] == "torch"
    ]
    assert not wrong, wrong


def test_no_import_cycles(graph):
    ours = {module: {i for i in imports if i in graph and i != module} for module, imports in graph.items()}
    cycles, index, low, stack, on_stack = [], {}, {}, [], set()

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in ours[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while not component or component[-1] != v:
                component.append(stack.pop())
                on_stack.discard(component[-1])
            if len(component) > 1:
                cycles.append(sorted(component))

    for module in sorted(ours):
        if module not in index:
            visit(module)
    assert not cycles, f"modules that import each other: {cycles}"


def test_the_napari_plugin_reaches_torch_only_in_its_child_process(graph):
    """The viewer's process never loads torch (torchvision's triton crashes it beside Mesa's OpenGL
    driver): of the plugin, only adapt_job.py, the adaptation's child process, imports export, and
    only inside its function; nothing of the plugin imports train or torch."""
    wrong = [
        f"{module} imports {imported}"
        for module, imports in graph.items()
        if module.startswith("unsupseg.napari")
        for imported in imports
        if imported.split(".")[0] == "torch"
        or _package(imported) == "unsupseg.train"
        or (_package(imported) == "unsupseg.export" and module != "unsupseg.napari.adapt_job")
    ]
    assert not wrong, wrong
    top = _top_imports("unsupseg.napari.adapt_job")
    assert not {m for m in top if m and _package(m) == "unsupseg.export"}, (
        "adapt_job imports export at its top"
    )
