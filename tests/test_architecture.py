"""The layers of docs/ARCHITECTURE.md, checked on the source: no import runs up a layer, no cycles.

Every import counts, including those inside functions (a lazy import still ties two modules
together) and imports by name (`importlib.import_module("framepack.x")`, `__import__`, or any
helper whose name says import, given a literal module name). The layer order is written here
once; ARCHITECTURE.md explains it.

Files stay under about `MAX_LINES` lines; the few that are one cohesive thing anyway are listed
in `LONG_FILES`, each with its reason, and in ARCHITECTURE.md's "Files over ~500 lines".
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# Bottom to top. A module may import its own layer or a lower one.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("framepack.errors", "framepack.request"),
    ("framepack.models",),
    ("framepack.io",),
    ("framepack.engine",),
    ("framepack.jobs",),
    ("framepack.ui", "framepack.api"),
    ("framepack.host", "framepack.app", "framepack.cli"),
)
# Modules allowed to import SD.Next's `modules.*` (always inside functions).
SDNEXT_MODULES = "framepack.host.sdnext"

MAX_LINES = 500
LONG_FILES = {  # over MAX_LINES and still one thing; docs/ARCHITECTURE.md says why at more length
    "framepack/api/routes.py": "the REST route table and its thin handlers: the API's whole surface in one place",
    "framepack/api/validation.py": "request bodies -> located InputErrors, one checker per body shape",
    "framepack/models/lora_formats.py": "one mapping: every trainer key layout -> diffusers' PEFT layout",
    "framepack/request/model.py": "the frozen GenerationRequest: its fields and their validators belong together",
}


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def layer_of(module: str) -> int | None:
    for index, prefixes in enumerate(LAYERS):
        if any(module == prefix or module.startswith(prefix + ".") for prefix in prefixes):
            return index
    return None


def resolve_relative(module: str, is_package: bool, level: int, target: str | None) -> str:
    base = module.split(".")
    if not is_package:
        base = base[:-1]
    base = base[: len(base) - (level - 1)] if level > 1 else base
    return ".".join(base + ([target] if target else []))


def _imported_by_name(node: ast.Call) -> str | None:
    """`import_module("framepack.x")`, `__import__("framepack.x")`, `_import_choices("framepack.x", ...)`."""
    func = node.func
    name = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else ""
    if "import" not in name.lower() or not node.args:
        return None
    first = node.args[0]
    if isinstance(first, ast.Constant) and isinstance(first.value, str) and first.value.startswith("framepack."):
        return first.value
    return None


def imports_of(path: Path, root: Path) -> list[tuple[str, int, bool]]:
    """(imported module, line, at module level) for every import in a file."""
    module = module_name(path, root)
    is_package = path.name == "__init__.py"
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    top_level = {id(node) for node in tree.body}
    found: list[tuple[str, int, bool]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno, id(node) in top_level) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            target = node.module
            if node.level:
                target = resolve_relative(module, is_package, node.level, node.module)
            found.append((target, node.lineno, id(node) in top_level))
            # `from framepack.jobs import queue` imports the submodule framepack.jobs.queue
            found += [(f"{target}.{alias.name}", node.lineno, id(node) in top_level) for alias in node.names
                      if (root / (f"{target}.{alias.name}".replace(".", "/") + ".py")).exists()]
        elif isinstance(node, ast.Call) and (target := _imported_by_name(node)):
            found.append((target, node.lineno, False))
    return found


def build_graph(root: Path) -> dict[str, list[tuple[str, int, bool]]]:
    """Every module of `root`/framepack -> its imports."""
    return {module_name(path, root): imports_of(path, root) for path in sorted((root / "framepack").rglob("*.py"))}


def upward_imports(graph) -> list[str]:
    upward = []
    for module, imports in graph.items():
        own = layer_of(module)
        for target, line, _ in imports:
            theirs = layer_of(target) if target.startswith("framepack.") else None
            if own is not None and theirs is not None and theirs > own:
                upward.append(f"{module}:{line} imports {target}")
    return upward


def known(module: str, graph) -> str | None:
    """The framepack module an import names (the module itself, or its package)."""
    while module:
        if module in graph:
            return module
        module = module.rpartition(".")[0]
    return None


def module_edges(graph) -> dict[str, set[str]]:
    edges: dict[str, set[str]] = {}
    for module, imports in graph.items():
        for target, _, _ in imports:
            resolved = known(target, graph)
            # a package's __init__ re-exporting its own modules is not a cycle worth breaking
            if resolved and resolved != module and not module.startswith(resolved + "."):
                edges.setdefault(module, set()).add(resolved)
    return edges


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(edges):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


GRAPH = build_graph(ROOT)


def test_every_framepack_module_has_a_layer():
    assert [m for m in GRAPH if m != "framepack" and layer_of(m) is None] == []


def test_no_import_runs_up_a_layer():
    assert upward_imports(GRAPH) == []


def test_only_the_sdnext_host_imports_sdnext():
    offenders = [f"{module}:{line} imports {target}"
                 for module, imports in GRAPH.items() for target, line, _ in imports
                 if (target == "modules" or target.startswith("modules."))
                 and not module.startswith(SDNEXT_MODULES)]
    assert offenders == []


def test_sdnext_is_imported_lazily():
    eager = [f"{module}:{line}" for module, imports in GRAPH.items() for target, line, top in imports
             if top and (target == "modules" or target.startswith("modules."))]
    assert eager == []


def test_nothing_below_the_hosts_imports_a_host():
    below = [f"{module}:{line} imports {target}" for module, imports in GRAPH.items() for target, line, _ in imports
             if target.startswith("framepack.host") and not module.startswith(("framepack.host", "framepack.app",
                                                                              "framepack.cli"))]
    assert below == []


def test_the_standalone_host_imports_nothing_from_sdnext():
    assert [t for t, _, _ in GRAPH["framepack.host.standalone"] if t.startswith(SDNEXT_MODULES)] == []


def test_no_import_cycles_between_modules():
    assert find_cycle(module_edges(GRAPH)) is None


def long_files(root: Path, limit: int = MAX_LINES) -> dict[str, int]:
    """Files under `root`/framepack over `limit` lines -> their line count."""
    counts = {path.relative_to(root).as_posix(): len(path.read_text(encoding="utf-8").splitlines())
              for path in sorted((root / "framepack").rglob("*.py"))}
    return {name: lines for name, lines in counts.items() if lines > limit}


def test_files_stay_under_about_500_lines_unless_listed_with_a_reason():
    assert {name: lines for name, lines in long_files(ROOT).items() if name not in LONG_FILES} == {}


def test_every_listed_long_file_exists_and_the_docs_say_why():
    architecture = (ROOT / "docs" / "ARCHITECTURE.md").read_text(encoding="utf-8")
    assert [name for name in LONG_FILES if not (ROOT / name).is_file()] == []
    assert [name for name in LONG_FILES if f"`{name}`" not in architecture] == []


# ----------------------------------------------------------------------------- the checker itself


@pytest.mark.parametrize("source,target,expected", [
    ("framepack.jobs.queue", "framepack.jobs.runner", True),
    ("framepack.request.model", "framepack.engine.loop", False),
])
def test_the_checker_itself_tells_up_from_down(source, target, expected):
    assert (layer_of(target) <= layer_of(source)) is expected


def test_the_cycle_finder_finds_a_planted_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def _plant(root: Path, files: dict[str, str]) -> dict:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return build_graph(root)


def test_the_checker_catches_planted_upward_imports(tmp_path):
    graph = _plant(tmp_path, {
        "framepack/__init__.py": "",
        "framepack/request/__init__.py": "",
        "framepack/request/model.py": "def f():\n    from framepack.engine import loop\n",  # lazy, by from-import
        "framepack/request/limits.py": "from ..jobs.queue import JobQueue\n",  # relative
        "framepack/models/recipe.py": "import importlib\nimportlib.import_module('framepack.ui.logic')\n",  # by name
        "framepack/engine/__init__.py": "",
        "framepack/engine/loop.py": "import framepack.request.model\n",  # downward: fine
        "framepack/jobs/queue.py": "",
        "framepack/ui/logic.py": "",
    })
    assert sorted(upward_imports(graph)) == [
        "framepack.models.recipe:2 imports framepack.ui.logic",
        "framepack.request.limits:1 imports framepack.jobs.queue",
        "framepack.request.model:2 imports framepack.engine",
        "framepack.request.model:2 imports framepack.engine.loop",
    ]


def test_the_size_check_counts_lines(tmp_path):
    _plant(tmp_path, {"framepack/__init__.py": "", "framepack/io/long.py": "x = 1\n" * 501,
                      "framepack/io/short.py": "x = 1\n" * 500})
    assert long_files(tmp_path) == {"framepack/io/long.py": 501}


def test_the_checker_catches_a_planted_cycle_and_an_eager_sdnext_import(tmp_path):
    graph = _plant(tmp_path, {
        "framepack/__init__.py": "",
        "framepack/io/a.py": "from framepack.io import b\n",
        "framepack/io/b.py": "def f():\n    import framepack.io.a\n",
        "framepack/host/sdnext_x.py": "from modules import shared\n",
    })
    assert find_cycle(module_edges(graph)) == ["framepack.io.a", "framepack.io.b", "framepack.io.a"]
    assert [(t, top) for t, _, top in graph["framepack.host.sdnext_x"]] == [("modules", True)]
