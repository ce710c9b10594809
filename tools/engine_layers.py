"""The engine's layers, read from its real imports: check them, count them, draw them.

    python tools/engine_layers.py            report: packages, files, lines, edges, problems (exit 1 on any)
    python tools/engine_layers.py --svg F    also draw the layers and the imports between packages as SVG

Every import in plugins/module_utils counts, including those inside functions
(the lazy imports that keep the archive command's start-up cheap are still
dependencies). Two rules, checked by tests/unit/test_architecture.py:

* no cycle between modules;
* a package imports only from itself and from packages of a lower layer
  (LAYERS, lowest first; packages sharing a layer do not import each other).

Standard library only: it runs before any virtualenv exists.
"""

from __future__ import annotations

import argparse
import ast
import html
import sys
from pathlib import Path
from typing import Dict, Iterable, List, NamedTuple, Optional, Sequence, Set, Tuple

ENGINE = Path(__file__).resolve().parent.parent / "plugins" / "module_utils"
ABSOLUTE_PREFIXES = ("ansible_collections.restorekeeper.postgresql.plugins.module_utils", "restorekeeper_engine")

# Lowest first. Each row is one layer; a package may import from the rows above its own.
LAYERS: Tuple[Tuple[str, ...], ...] = (
    ("common",),
    ("config",),
    ("pg", "storage"),
    ("repo",),
    ("archive",),
    ("backup",),
    ("restore",),
    ("retention",),
    ("copies",),
    ("objectives",),
    ("monitoring",),
    ("frontends",),
)

# What each package owns: the picture's captions and docs/architecture.md's table.
OWNS: Dict[str, str] = {
    "common": "errors, files and locks, waits, time, SQL quoting, host packages, compression",
    "config": "the configuration file: parse, validate, render",
    "pg": "PostgreSQL: WAL names and arithmetic, timelines, manifests, client, settings, discovery, services",
    "storage": "object stores: interface, posix, s3, ssh, encryption, object format, registry",
    "repo": "the repository: layout of keys, marker, catalog of backups, dumps and WAL",
    "archive": "wal-push, wal-fetch, asynchronous push, streaming, archive status, server settings",
    "backup": "physical base backups and logical dumps",
    "restore": "restores, point-in-time recovery, restore preflight, drills and their records",
    "retention": "what the policy keeps, and expiring the rest",
    "copies": "shipping to copies, the 3-2-1 rule",
    "objectives": "RTO/RPO targets, plans, schedules, drill reports",
    "monitoring": "metrics, checks",
    "frontends": "the restorekeeper command, the modules' common run",
}


class Module(NamedTuple):
    name: str  # dotted, relative to the engine: "archive.walarchive"
    path: Path
    lines: int


class Edge(NamedTuple):
    source: str
    target: str
    line: int


def package_of(module: str) -> str:
    return module.split(".")[0]


def rank_of(package: str) -> Optional[int]:
    for rank, layer in enumerate(LAYERS):
        if package in layer:
            return rank
    return None


def engine_modules(root: Path = ENGINE) -> Dict[str, Module]:
    modules = {}
    for path in sorted(root.rglob("*.py")):
        if "__pycache__" in path.parts:
            continue
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        if not parts:
            continue
        name = ".".join(parts)
        modules[name] = Module(name, path, len(path.read_text(encoding="utf-8").splitlines()))
    return modules


def _resolve(base: List[str], names: Iterable[str], modules: Dict[str, Module]) -> List[str]:
    """The engine modules a `from <base> import names` reaches: a submodule when a name is one, else base."""
    found = []
    prefix = ".".join(base)
    for name in names:
        candidate = "%s.%s" % (prefix, name) if prefix else name
        if candidate in modules:
            found.append(candidate)
        elif prefix in modules:
            found.append(prefix)
    return found


def imports_of(module: Module, modules: Dict[str, Module]) -> List[Edge]:
    tree = ast.parse(module.path.read_text(encoding="utf-8"), str(module.path))
    is_package = module.path.name == "__init__.py"
    own_package = module.name.split(".") if is_package else module.name.split(".")[:-1]
    edges = []
    for node in ast.walk(tree):
        targets: List[str] = []
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = own_package[:len(own_package) - (node.level - 1)] if node.level > 1 else list(own_package)
                if node.level - 1 > len(own_package):
                    raise ValueError("%s:%d imports above the engine" % (module.path, node.lineno))
                base = base + (node.module.split(".") if node.module else [])
            else:
                base = _engine_relative(node.module or "")
                if base is None:
                    continue
            targets = _resolve(base, [alias.name for alias in node.names], modules)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                base = _engine_relative(alias.name)
                if base is not None and ".".join(base) in modules:
                    targets.append(".".join(base))
        edges.extend(Edge(module.name, target, node.lineno) for target in targets if target != module.name)
    return edges


def _engine_relative(dotted: str) -> Optional[List[str]]:
    for prefix in ABSOLUTE_PREFIXES:
        if dotted == prefix:
            return []
        if dotted.startswith(prefix + "."):
            return dotted[len(prefix) + 1:].split(".")
    return None


def all_edges(modules: Dict[str, Module]) -> List[Edge]:
    return [edge for module in modules.values() for edge in imports_of(module, modules)]


def cycles(modules: Sequence[str], edges: Sequence[Edge]) -> List[List[str]]:
    """Strongly connected groups of more than one module (Tarjan, iterative)."""
    graph: Dict[str, Set[str]] = {name: set() for name in modules}
    for edge in edges:
        graph[edge.source].add(edge.target)
    index: Dict[str, int] = {}
    low: Dict[str, int] = {}
    on_stack: Set[str] = set()
    stack: List[str] = []
    groups = []
    counter = 0
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                group = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    group.append(member)
                    if member == node:
                        break
                if len(group) > 1:
                    groups.append(sorted(group))
    return sorted(groups)


def layer_violations(edges: Sequence[Edge], modules: Dict[str, Module]) -> List[str]:
    problems = []
    for edge in edges:
        source, target = package_of(edge.source), package_of(edge.target)
        if source not in modules or target not in modules:
            problems.append("%s:%d: %s is not in a package" % (edge.source, edge.line,
                                                               edge.source if source not in modules else edge.target))
            continue
        if source == target:
            continue
        source_rank, target_rank = rank_of(source), rank_of(target)
        if source_rank is None or target_rank is None:
            problems.append("%s:%d: package %s has no layer in tools/engine_layers.py LAYERS"
                            % (edge.source, edge.line, source if source_rank is None else target))
        elif target_rank >= source_rank:
            problems.append("%s:%d imports %s: %s (layer %d) may import only from layers below it, not %s (layer %d)"
                            % (edge.source, edge.line, edge.target, source, source_rank, target, target_rank))
    return problems


def problems_of(root: Path = ENGINE) -> Tuple[Dict[str, Module], List[Edge], List[str]]:
    modules = engine_modules(root)
    edges = all_edges(modules)
    problems = layer_violations(edges, modules)
    problems += ["import cycle: %s" % " <-> ".join(group) for group in cycles(list(modules), edges)]
    unplaced = sorted(name for name in modules if "." not in name and rank_of(name) is None)
    problems += ["package %s has no layer in tools/engine_layers.py LAYERS" % name for name in unplaced]
    return modules, edges, problems


def package_edges(edges: Sequence[Edge]) -> Dict[Tuple[str, str], int]:
    counts: Dict[Tuple[str, str], int] = {}
    for edge in edges:
        pair = (package_of(edge.source), package_of(edge.target))
        if pair[0] != pair[1]:
            counts[pair] = counts.get(pair, 0) + 1
    return counts


def summary(modules: Dict[str, Module], edges: Sequence[Edge]) -> List[str]:
    files = [m for m in modules.values() if m.path.name != "__init__.py" or m.lines]
    largest = max(files, key=lambda m: m.lines)
    lines = ["%d packages, %d files, %d lines; largest %s (%d lines); %d imports between modules"
             % (len([m for m in modules if "." not in m]), len(files), sum(m.lines for m in files),
                largest.path.relative_to(ENGINE), largest.lines, len(edges))]
    for layer in reversed(LAYERS):
        for package in layer:
            members = [m for m in files if package_of(m.name) == package and "." in m.name]
            size = sum(m.lines for m in members)
            lines.append("  %-11s %2d files %6d lines  %s" % (package, len(members), size, OWNS.get(package, "")))
    return lines


# --- the picture -----------------------------------------------------------

BOX_WIDTH, BOX_HEIGHT, GAP_X, GAP_Y, MARGIN = 190, 46, 26, 34, 20


def svg(modules: Dict[str, Module], edges: Sequence[Edge]) -> str:
    """Layers as rows (highest on top), one box a package with its file count, and an arrow for each
    package-to-package import, its width growing with the number of imports."""
    rows = list(reversed(LAYERS))
    widest = max(len(row) for row in rows)
    width = MARGIN * 2 + widest * BOX_WIDTH + (widest - 1) * GAP_X + 260
    height = MARGIN * 2 + len(rows) * BOX_HEIGHT + (len(rows) - 1) * GAP_Y
    centre: Dict[str, Tuple[float, float]] = {}
    parts = ['<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" '
             'font-family="sans-serif" font-size="12">' % (width, height, width, height),
             '<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" markerHeight="7" '
             'orient="auto-start-reverse"><path d="M 0 0 L 10 5 L 0 10 z" fill="#667"/></marker></defs>',
             '<rect width="100%" height="100%" fill="white"/>']
    boxes = []
    for row_index, row in enumerate(rows):
        y = MARGIN + row_index * (BOX_HEIGHT + GAP_Y)
        offset = (widest - len(row)) * (BOX_WIDTH + GAP_X) / 2
        for column, package in enumerate(row):
            x = MARGIN + offset + column * (BOX_WIDTH + GAP_X)
            centre[package] = (x + BOX_WIDTH / 2, y + BOX_HEIGHT / 2)
            members = [m for m in modules.values() if package_of(m.name) == package and m.path.name != "__init__.py"]
            boxes.append('<rect x="%.0f" y="%.0f" width="%d" height="%d" rx="6" fill="#eef3fb" stroke="#35577d"/>'
                         % (x, y, BOX_WIDTH, BOX_HEIGHT))
            boxes.append('<text x="%.0f" y="%.0f" text-anchor="middle" font-weight="bold">%s</text>'
                         % (x + BOX_WIDTH / 2, y + 19, html.escape(package)))
            boxes.append('<text x="%.0f" y="%.0f" text-anchor="middle" fill="#445">%d files, %d lines</text>'
                         % (x + BOX_WIDTH / 2, y + 35, len(members), sum(m.lines for m in members)))
        label_x = MARGIN + widest * BOX_WIDTH + (widest - 1) * GAP_X + 16
        owns = "; ".join(OWNS.get(package, "") for package in row)
        boxes.append('<text x="%d" y="%.0f" fill="#556" font-size="10">%s</text>'
                     % (label_x, y + BOX_HEIGHT / 2 + 4, html.escape(_shorten(owns, 44))))
    arrows = []
    for (source, target), count in sorted(package_edges(edges).items()):
        if source not in centre or target not in centre:
            continue
        (x1, y1), (x2, y2) = centre[source], centre[target]
        bend = (x1 - x2) * 0.15 + (y2 - y1) * 0.12
        arrows.append('<path d="M %.0f %.0f Q %.0f %.0f %.0f %.0f" fill="none" stroke="#667" stroke-opacity="0.45" '
                      'stroke-width="%.1f" marker-end="url(#arrow)"><title>%s imports %s (%d)</title></path>'
                      % (x1, y1 + BOX_HEIGHT / 2, (x1 + x2) / 2 + bend, (y1 + y2) / 2, x2, y2 - BOX_HEIGHT / 2,
                         min(0.8 + count / 6.0, 4.0), source, target, count))
    return "\n".join(parts + arrows + boxes + ["</svg>", ""])


def _shorten(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit - 1].rstrip(" ,;") + "…"


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", maxsplit=1)[0])
    parser.add_argument("--svg", type=Path, help="write the picture of the layers here")
    parser.add_argument("--root", type=Path, default=ENGINE, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    modules, edges, problems = problems_of(args.root)
    for line in summary(modules, edges):
        print(line)
    if args.svg:
        args.svg.write_text(svg(modules, edges), encoding="utf-8")
        print("wrote %s" % args.svg)
    for problem in problems:
        print("PROBLEM: %s" % problem)
    print("import check: %s" % ("%d problems" % len(problems) if problems else "no cycles, no upward imports"))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
