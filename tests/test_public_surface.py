"""One public surface: plugins and the example import only `unlearn_core` and `unlearn_core.testing`;
the core has no import cycles; nothing imports another module's private (underscored) names."""

from __future__ import annotations

import ast
from pathlib import Path

import unlearn_core

ROOT = Path(__file__).resolve().parent.parent
PUBLIC = {"unlearn_core", "unlearn_core.testing"}


def _imports(path: Path) -> list[tuple[str, list[str], int]]:
    """(absolute module, imported names, line) for every import in the file, functions included."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out += [(a.name, [], node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            names = [a.name for a in node.names]
            if node.level:  # relative: resolve against the file's package
                base = _package_of(path).split(".")
                base = base[:len(base) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            out.append((module, names, node.lineno))
    return out


def _package_of(path: Path) -> str:
    """The dotted package a file belongs to, e.g. plugins/unlearn_snip/method.py -> unlearn_snip."""
    parts = []
    folder = path.parent
    while (folder / "__init__.py").exists():
        parts.insert(0, folder.name)
        folder = folder.parent
    return ".".join(parts)


def _plugin_files() -> list[Path]:
    return sorted(ROOT.glob("plugins/**/*.py")) + sorted(ROOT.glob("docs/examples/**/*.py"))


def test_plugins_and_the_example_import_only_the_public_surface():
    files = _plugin_files()
    assert len(files) > 15
    bad = [f"{f.relative_to(ROOT)}:{line}: {module}" for f in files for module, _, line in _imports(f)
           if module.startswith("unlearn_core") and module not in PUBLIC]
    assert not bad, "import from unlearn_core or unlearn_core.testing instead:\n" + "\n".join(bad)


def test_what_plugins_import_from_unlearn_core_is_exported():
    exported = set(unlearn_core.__all__)
    missing = {name for f in _plugin_files() for module, names, _ in _imports(f)
               if module == "unlearn_core" for name in names if name not in exported}
    assert not missing
    for name in unlearn_core.__all__:
        assert hasattr(unlearn_core, name), name


def test_the_core_has_no_import_cycles():
    graph: dict[str, set[str]] = {}
    for f in sorted((ROOT / "unlearn_core").glob("*.py")):
        me = f"unlearn_core.{f.stem}" if f.stem != "__init__" else "unlearn_core"
        graph[me] = set()
        for module, names, _ in _imports(f):
            if not module.startswith("unlearn_core"):
                continue
            # `from . import hookspecs` names a module; `from .x import y` names x
            targets = [f"{module}.{n}" for n in names if (ROOT / "unlearn_core" / f"{n}.py").exists()] \
                if module == "unlearn_core" else [module]
            graph[me].update(t for t in targets if t != me)
    graph.pop("unlearn_core")  # the package's __init__ only re-exports: it sits above every module
    for deps in graph.values():
        deps.discard("unlearn_core")
    cycles = []

    def visit(node: str, path: list[str]) -> None:
        for dep in sorted(graph.get(node, ())):
            if dep in path:
                cycles.append(" -> ".join(path[path.index(dep):] + [dep]))
            elif dep not in done:
                visit(dep, path + [dep])
        done.add(node)

    done: set[str] = set()
    for node in sorted(graph):
        if node not in done:
            visit(node, [node])
    assert not cycles, "\n".join(sorted(set(cycles)))


def test_no_private_name_is_imported_from_another_module():
    files = sorted(ROOT.glob("unlearn_core/*.py")) + _plugin_files()
    bad = [f"{f.relative_to(ROOT)}:{line}: {module}.{name}" for f in files
           for module, names, line in _imports(f) for name in names
           if name.startswith("_") and name != "__version__"]
    assert not bad, "\n".join(bad)


def test_no_module_shadows_the_standard_library():
    import sys

    shadowing = [f.stem for f in (ROOT / "unlearn_core").glob("*.py") if f.stem in sys.stdlib_module_names]
    assert not shadowing
