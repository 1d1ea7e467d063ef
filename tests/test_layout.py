"""The package's structure: its modules import one another without cycles (lazy imports
inside functions included), and the loader names no dataset kind."""

from __future__ import annotations

import ast
from pathlib import Path

import arrowloader

PACKAGE = Path(arrowloader.__file__).resolve().parent
ROOT = "arrowloader"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    """Every module of the package by name; the extension by its stub (it imports nothing
    of the package)."""
    found = {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}
    found[f"{ROOT}._C"] = PACKAGE / "_C.pyi"
    return found


def resolve(name: str, known: dict[str, Path]) -> str | None:
    """The package module ``name`` refers to (the longest known prefix), else None."""
    while name and name not in known:
        name = name.rpartition(".")[0]
    return name or None


def imports_of(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """Package modules that ``name`` imports anywhere in its body."""
    tree = ast.parse(path.read_text(), filename=str(path))
    is_package = path.name == "__init__.py"
    found: set[str] = set()
    for node in ast.walk(_without_type_checking_blocks(tree)):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: from the module's own package
                base = name if is_package else name.rpartition(".")[0]
                for _ in range(node.level - 1):
                    base = base.rpartition(".")[0]
                source = f"{base}.{node.module}" if node.module else base
            else:
                source = node.module or ""
            # `from a import b` imports the module a.b when there is one, else takes the
            # name b from a.
            for alias in node.names:
                submodule = f"{source}.{alias.name}"
                targets.append(submodule if submodule in known else source)
        for target in targets:
            if target != ROOT and not target.startswith(ROOT + "."):
                continue
            module = resolve(target, known)
            if module is not None and module != name:
                found.add(module)
    return found


def _without_type_checking_blocks(tree: ast.Module) -> ast.Module:
    """``tree`` less its ``if TYPE_CHECKING:`` blocks: imports only a type checker runs,
    for annotations, which never execute."""

    class Strip(ast.NodeTransformer):
        def visit_If(self, node: ast.If) -> ast.AST | None:
            test = node.test
            name = test.id if isinstance(test, ast.Name) else getattr(test, "attr", None)
            if name == "TYPE_CHECKING":
                return None
            return self.generic_visit(node)

    return Strip().visit(tree)


def import_graph() -> dict[str, set[str]]:
    known = modules()
    return {
        name: set() if name == f"{ROOT}._C" else imports_of(name, path, known)
        for name, path in known.items()
    }


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_package_has_no_import_cycles() -> None:
    graph = import_graph()
    assert "arrowloader.loader" in graph and "arrowloader.native" in graph
    assert cycles(graph) == []


def test_the_cycle_finder_finds_a_cycle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert cycles(graph) == [["a", "b", "c"]]


def test_the_loader_names_no_dataset_and_the_contract_imports_no_dataset() -> None:
    graph = import_graph()
    kinds = {f"{ROOT}.{name}" for name in ("dataset", "packed", "mixed")}
    assert not graph[f"{ROOT}.loader"] & kinds
    assert not graph[f"{ROOT}.native"] & (kinds | {f"{ROOT}.loader"})
    for kind in kinds:
        assert f"{ROOT}.loader" not in graph[kind], f"{kind} imports the loader"


def test_the_readme_layout_table_names_every_top_level_module() -> None:
    """The README's "How the code is laid out" table has a row for each module and
    subpackage directly under python/arrowloader, so a new module cannot go unlisted."""
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    section = readme[readme.index("## How the code is laid out"):]
    section = section[:section.index("\n## ", 1)]
    listed = {line.split("|")[1].strip().strip("`") for line in section.splitlines()
              if line.startswith("| `")}
    present = {path.name for path in PACKAGE.glob("*.py")}
    present |= {f"{path.name}/" for path in PACKAGE.iterdir()
                if path.is_dir() and (path / "__init__.py").exists()}
    assert present - listed == set(), "modules missing from the README's layout table"
    assert listed - present == set(), "the README's layout table names modules that are gone"
