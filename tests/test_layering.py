"""The package's layering, written down as data and held against every import under scrub/.

`LAYERS` lists the layers from the ground up. A module may import modules of its own layer and of
the layers below it, never one above (house rule: hypothesis -> plan -> engine -> result -> report,
lower modules never import higher ones). Every ``import`` statement counts, at module level, inside
functions and under ``if TYPE_CHECKING:`` alike; imports made through ``importlib`` with a computed
name (``scrub/__init__.py`` loads ``tasks`` and ``zoo`` lazily that way) are not seen. The tests fail

* on an import that runs up the layering, naming the file, line, import and the rule;
* on any import circle (between layers or inside one);
* on a module under scrub/ that `LAYERS` does not place, saying where to add it.

Changing the layering is a design decision: move a module in `LAYERS` only together with the
README's "How it works" picture.
"""

from __future__ import annotations

import ast
import functools
from pathlib import Path
from typing import NamedTuple, Optional

import networkx as nx
import pytest

SCRUB = Path(__file__).resolve().parents[1] / "scrub"

# From the ground up. "scrub.x" places that module; "scrub.x.*" places the package scrub.x and every
# module under it. A module may import its own layer and the layers below.
LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("errors", ("scrub.errors", "scrub.tlcompat")),
    ("components", ("scrub.components",)),
    ("data", ("scrub.data",)),
    # the zoo's shelf: the shipped models and their recipes (the model loader lists and loads them)
    ("zoo models", ("scrub.zoo", "scrub.zoo.recipes", "scrub.zoo.known", "scrub.zoo.hf")),
    ("model", ("scrub.model.*",)),
    ("metrics", ("scrub.metrics",)),
    ("hypothesis", ("scrub.hypothesis.*",)),
    # the result store: cell addresses (fingerprints) and files; no forward pass, no results
    ("store", ("scrub.store", "scrub.store.keys", "scrub.store.cells", "scrub.store.runs")),
    # the validated run options: may read metrics and hypotheses (a baseline), and are passed
    # down whole to planning and the engines
    ("options", ("scrub.options",)),
    ("plan", ("scrub.plan",)),
    ("engine", ("scrub.engine.*",)),
    ("result", ("scrub.result",)),
    ("api", ("scrub.api",)),
    # exploration before hypotheses: activation, path and attribution patching on the model view
    ("patching", ("scrub.patching.*",)),
    ("reporting", ("scrub.reporting.*",)),
    # search: pruning and coarsening over hypotheses, scored through api; renders its own result
    ("search", ("scrub.search.*",)),
    ("tasks", ("scrub.tasks.*",)),
    # the zoo's workshop: training a recipe, measuring the result, writing its record
    ("zoo training", ("scrub.zoo.train", "scrub.zoo.measure", "scrub.zoo.record")),
    ("hypfile", ("scrub.hypfile",)),
    # studies: sweeps over grids of cells, sharded evaluations, rebuilding results from a store
    ("studies", ("scrub.store.on_ray", "scrub.store.show", "scrub.store.sweep")),
    ("commands", ("scrub.cli_common", "scrub.cli_studies")),
    ("entry points", ("scrub", "scrub.__main__", "scrub.cli", "scrub.demo")),
)

# No exceptions: `Result` draws itself through renderers that the reporting layer registers in
# scrub/result.py when it loads (`register_presenters`), not through an import upward.

# Circles tolerated for now (none): an entry here must name a circle that still occurs.
KNOWN_CIRCLES: tuple[frozenset[str], ...] = ()


class Import(NamedTuple):
    importer: str  # module name
    target: str  # the scrub module imported (resolved to a module file that exists)
    path: Path
    line: int
    function: Optional[str]  # innermost enclosing function, None at module level
    text: str  # the statement as written

    def where(self, root: Path) -> str:
        inside = f" (in {self.function})" if self.function else " (module level)"
        return f"{self.path.relative_to(root.parent)}:{self.line}{inside}: `{self.text}`"


def modules_under(root: Path) -> dict[str, Path]:
    """Module name -> file, for every .py file under ``root`` (a package named like the folder)."""
    found = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def _resolve(name: str, modules: dict[str, Path]) -> Optional[str]:
    """The module that importing ``name`` loads: itself, or the nearest enclosing module."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def imports_of(module: str, path: Path, modules: dict[str, Path], package: str) -> list[Import]:
    """Every import of a ``package`` module in ``path``, with its line and enclosing function."""
    tree = ast.parse(path.read_text(), filename=str(path))
    is_package = path.name == "__init__.py"
    found: list[Import] = []
    seen: set[tuple[str, int]] = set()

    def add(target: str, node: ast.stmt, function: Optional[str]) -> None:
        if target != package and not target.startswith(package + "."):
            return
        resolved = _resolve(target, modules)
        if resolved is not None and resolved != module and (resolved, node.lineno) not in seen:
            seen.add((resolved, node.lineno))
            found.append(Import(module, resolved, path, node.lineno, function, ast.unparse(node)))

    def visit(node: ast.AST, function: Optional[str]) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                visit(child, child.name)
                continue
            if isinstance(child, ast.Import):
                for alias in child.names:
                    add(alias.name, child, function)
            elif isinstance(child, ast.ImportFrom):
                if child.level:
                    base = module.split(".")
                    base = base[: len(base) - child.level + (1 if is_package else 0)]
                    origin = ".".join(base + ([child.module] if child.module else []))
                else:
                    origin = child.module or ""
                for alias in child.names:
                    sub = f"{origin}.{alias.name}"
                    add(sub if sub in modules else origin, child, function)
            visit(child, function)

    visit(tree, None)
    return found


def layer_of(module: str, layers=LAYERS) -> Optional[int]:
    for level, (_, members) in enumerate(layers):
        for member in members:
            if member.endswith(".*"):
                prefix = member[:-2]
                if module == prefix or module.startswith(prefix + "."):
                    return level
            elif module == member:
                return level
    return None


def upward_imports(imports: list[Import], layers=LAYERS) -> list[Import]:
    """Imports of a module from a higher layer than the importer's."""
    return [
        imp for imp in imports
        if layer_of(imp.target, layers) is not None and layer_of(imp.importer, layers) is not None
        and layer_of(imp.target, layers) > layer_of(imp.importer, layers)
    ]


def circles(imports: list[Import]) -> list[tuple[frozenset[str], list[Import]]]:
    """Groups of modules that import each other in a loop, each with the imports of one loop in it."""
    graph = nx.DiGraph()
    for imp in imports:
        graph.add_edge(imp.importer, imp.target)
    found = []
    for group in nx.strongly_connected_components(graph):
        if len(group) > 1:  # name one loop through the group, an import per step
            loop = nx.find_cycle(graph.subgraph(group))
            ties = [next(i for i in imports if (i.importer, i.target) == step) for step in loop]
            found.append((frozenset(group), ties))
    return found


def _order(layers=LAYERS) -> str:
    return " < ".join(name for name, _ in layers)


@functools.lru_cache(maxsize=None)
def _scan(root: Path = SCRUB) -> tuple[dict[str, Path], list[Import]]:
    modules = modules_under(root)
    imports = [imp for name, path in modules.items() for imp in imports_of(name, path, modules, root.name)]
    return modules, imports


# ---- the tests on scrub/ ------------------------------------------------------------------------


def _none_of(found: list, explain) -> None:
    """Fail, one line per item explaining it, unless ``found`` is empty."""
    assert not found, "\n".join(explain(item) for item in found)


def test_every_module_has_a_place_in_the_layering():
    modules, _ = _scan()
    _none_of([name for name in modules if layer_of(name) is None], lambda name: (
        f"{modules[name].relative_to(SCRUB.parent)} ({name}) has no place in the layering: add it to "
        f"LAYERS in tests/test_layering.py, in the lowest layer above everything it imports and below "
        f"everything that imports it (layers: {_order()}), and to the README's layering picture"
    ))


def test_no_import_runs_up_the_layering():
    _, imports = _scan()
    _none_of(upward_imports(imports), lambda imp: (
        f"{imp.where(SCRUB)} imports {imp.target} (layer {LAYERS[layer_of(imp.target)][0]!r}) into "
        f"{imp.importer} (layer {LAYERS[layer_of(imp.importer)][0]!r}); rule: a module imports only "
        f"its own layer and those below ({_order()}); fix: move the code that needs it up a layer, "
        f"or have the caller pass the value down"
    ))


def test_no_import_circle():
    _, imports = _scan()
    found = circles(imports)
    _none_of([(group, ties) for group, ties in found if group not in KNOWN_CIRCLES], lambda item: (
        f"import circle between {sorted(item[0])}: " + "; ".join(imp.where(SCRUB) for imp in item[1])
        + "; rule: modules never import each other in a loop; fix: move what both need into the lower "
        "one (or a new module below both)"
    ))
    stale = [group for group in KNOWN_CIRCLES if group not in {g for g, _ in found}]
    assert not stale, f"KNOWN_CIRCLES entries {stale} no longer occur: delete them from tests/test_layering.py"


def test_the_layering_table_places_each_module_once():
    members = [m for _, group in LAYERS for m in group]
    assert len(members) == len(set(members))
    modules, _ = _scan()
    for name in modules:
        homes = [level for level, (_, group) in enumerate(LAYERS)
                 if any(name == m or (m.endswith(".*") and (name == m[:-2] or name.startswith(m[:-1]))) for m in group)]
        assert len(homes) == 1, f"{name} is placed in layers {homes}"


# ---- the checker itself, on a made-up package -----------------------------------------------------


def _package(tmp_path: Path, files: dict[str, str]) -> Path:
    root = tmp_path / "scrub"
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def test_the_checker_sees_upward_imports_at_any_depth(tmp_path):
    root = _package(tmp_path, {
        "__init__.py": "",
        "errors.py": "",
        "data.py": "from scrub.errors import ScrubError\n",
        "plan.py": "import scrub.data\n",
        "model/__init__.py": "from . import view\n",
        "model/view.py": "def f():\n    from ..plan import plan\n",  # relative, inside a function
        "hypothesis/core.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from scrub import api\n",
        "api.py": "",
        "result.py": "class Result:\n    def plot(self):\n        from scrub.reporting import plot\n"
                     "    def other(self):\n        from scrub.reporting.html import x\n",
        "reporting/__init__.py": "from scrub.result import Result\n",
        "reporting/html.py": "",
        "reporting/plot.py": "",
    })
    modules, imports = _scan(root)
    assert "scrub.model" in modules and "scrub.reporting.plot" in modules
    up = {(i.importer, i.target, i.function, i.line) for i in upward_imports(imports)}
    assert up == {
        ("scrub.model.view", "scrub.plan", "f", 2),
        ("scrub.hypothesis.core", "scrub.api", None, 3),
        ("scrub.result", "scrub.reporting.plot", "plot", 3),
        ("scrub.result", "scrub.reporting.html", "other", 5),
    }
    assert {i.target for i in imports if i.importer == "scrub.model"} == {"scrub.model.view"}
    # no import upward is exempt (Result.plot's is flagged above); none of these closes a loop
    assert circles(imports) == []


def test_the_checker_finds_circles_and_unplaced_modules(tmp_path):
    root = _package(tmp_path, {
        "__init__.py": "",
        "plan.py": "from scrub.engine import run\n",
        "engine/__init__.py": "def run():\n    import scrub.plan\n",
        "engine/batched.py": "",
        "brand_new.py": "import scrub.plan\n",
    })
    modules, imports = _scan(root)
    found = circles(imports)
    assert [group for group, _ in found] == [frozenset({"scrub.plan", "scrub.engine"})]
    assert {i.line for i in found[0][1]} == {1, 2}
    assert [name for name in modules if layer_of(name) is None] == ["scrub.brand_new"]
    assert layer_of("scrub.engine.batched") == layer_of("scrub.engine") > layer_of("scrub.plan")


@pytest.mark.parametrize("module", ["scrub.options", "scrub.model.hf_modules", "scrub.reporting.notebook",
                                    "scrub.reporting.plot", "scrub.engine.backends.hf"])
def test_coming_modules_are_placed(module):
    assert layer_of(module) is not None
