"""The package's layout rules, read from the source with ast: no import cycles between xasr's
modules (function-level imports included), no import of another module's private names, and a
docstring opening every module."""
from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path
from typing import Dict, List, Set, Tuple

PACKAGE = Path(__file__).resolve().parents[1] / "xasr"


def _modules(package: Path = PACKAGE) -> Dict[str, Path]:
    out = {}
    for p in sorted(package.rglob("*.py")):
        parts = list(p.relative_to(package.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = p
    return out


def _imports(mods: Dict[str, Path]) -> Tuple[Dict[str, Set[str]], List[str]]:
    """Module -> the xasr modules it imports; and every 'module imports other.module._private'."""
    edges: Dict[str, Set[str]] = defaultdict(set)
    private = []
    for name, path in mods.items():
        package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[:len(package.split(".")) - (node.level - 1)]
                    source = ".".join(base + ([node.module] if node.module else []))
                else:
                    source = node.module or ""
                if source.split(".")[0] != "xasr":
                    continue
                for alias in node.names:
                    full = f"{source}.{alias.name}"
                    target = full if full in mods else source
                    if target in mods and target != name:
                        edges[name].add(target)
                    if alias.name.startswith("_") and full not in mods and target != name:
                        private.append(f"{name} imports {source}.{alias.name} (line {node.lineno})")
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name in mods and alias.name != name:
                        edges[name].add(alias.name)
    return edges, private


def _cycles(edges: Dict[str, Set[str]]) -> List[List[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: Dict[str, int] = {}
    low: Dict[str, int] = {}
    stack: List[str] = []
    on: Set[str] = set()
    found: List[List[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(set(edges) | {w for ws in edges.values() for w in ws}):
        if v not in index:
            visit(v)
    return found


def test_no_import_cycles():
    edges, _ = _imports(_modules())
    assert edges["xasr.model_dir"] >= {"xasr.config", "xasr.models.model"}  # the walk sees real imports
    assert _cycles(edges) == []


def test_no_private_names_imported_across_modules():
    _, private = _imports(_modules())
    assert private == []


def test_every_module_opens_with_a_docstring():
    missing = [name for name, p in _modules().items()
               if p.name != "__init__.py" and not ast.get_docstring(ast.parse(p.read_text(encoding="utf-8")))]
    assert missing == []


def test_the_rules_catch_a_cycle_and_a_private_import(tmp_path):
    pkg = tmp_path / "xasr"
    (pkg / "a").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "a" / "__init__.py").write_text("")
    (pkg / "a" / "one.py").write_text('"""One."""\nfrom xasr.a.two import _helper\n')
    (pkg / "a" / "two.py").write_text('"""Two."""\ndef f():\n    from xasr.a import one\n')
    edges, private = _imports(_modules(pkg))
    assert _cycles(edges) == [["xasr.a.one", "xasr.a.two"]]
    assert private == ["xasr.a.one imports xasr.a.two._helper (line 2)"]
