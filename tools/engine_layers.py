"""The engine's layers, read from its real imports: check them, count them, draw them.

    python3 tools/engine_layers.py                               report: packages, files, lines, problems (exit 1 on any)
    python3 tools/engine_layers.py --svg docs/architecture.svg   also draw the layers and the imports between packages

Every import in plugins/module_utils counts, including those inside functions
(the lazy imports that keep the archive command's start-up cheap are still
dependencies). The rules, checked by tests/unit/test_architecture.py:

* no cycle between modules;
* a package imports only from itself and from packages of a lower layer
  (LAYERS, lowest first; packages sharing a layer do not import each other);
* every engine file lives in a package that has a layer, and every engine
  import names a module that exists (a lazy import is otherwise found broken
  only when its function first runs).

The picture holds only what changes with the structure (packages, their files,
which package imports which), never line or import counts, so the committed
docs/architecture.svg changes only when the structure does.

Standard library only: it runs before any virtualenv exists.
"""

from __future__ import annotations

import argparse
import ast
import html
import sys
import textwrap
from pathlib import Path
from typing import Dict, Iterable, List, NamedTuple, Optional, Sequence, Set, Tuple

ENGINE = Path(__file__).resolve().parent.parent / "plugins" / "module_utils"
ABSOLUTE_PREFIXES = ("ansible_collections.restorekeeper.postgresql.plugins.module_utils", "restorekeeper_engine")
REGENERATE = "python3 tools/engine_layers.py --svg docs/architecture.svg"

# Lowest first. Each row is one layer; a package may import from the rows below its own.
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
    "common": "errors, files and locks, waits and deadlines, time, SQL quoting, host packages, compression, user access",
    "config": "the configuration file: parse, validate, render",
    "pg": "PostgreSQL: WAL names and arithmetic, timelines, manifests, client, settings, discovery, services",
    "storage": "object stores: interface, factory, posix, s3, ssh, encryption, object format, marker, transfer",
    "repo": "the repository: layout of keys, initialisation, identity, catalog of backups, dumps and WAL",
    "archive": "wal-push, wal-fetch, asynchronous push, streaming, archive status, server settings",
    "backup": "physical base backups and logical dumps",
    "restore": "restores, point-in-time recovery, restore preflight, logical restores, drills and their records",
    "retention": "what the policy keeps, and expiring the rest",
    "copies": "shipping to copies, the 3-2-1 rule",
    "objectives": "RTO/RPO targets, plans, schedules, module restore_drill's run, drill reports, the fleet summary, HTML pages",
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


class Unresolved(NamedTuple):
    source: str
    line: int
    imported: str


def package_of(module: str) -> str:
    return module.split(".")[0]


def rank_of(package: str) -> Optional[int]:
    for rank, layer in enumerate(LAYERS):
        if package in layer:
            return rank
    return None


def is_file(module: Module) -> bool:
    """A module of a package (not a package's __init__.py)."""
    return module.path.name != "__init__.py"


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


def _engine_relative(dotted: str) -> Optional[List[str]]:
    """The engine-relative parts of an absolute module name; None when it is not the engine's."""
    for prefix in ABSOLUTE_PREFIXES:
        if dotted == prefix:
            return []
        if dotted.startswith(prefix + "."):
            return dotted[len(prefix) + 1:].split(".")
    return None


def _from_base(node: ast.ImportFrom, module: Module) -> Optional[List[str]]:
    """Where a `from X import ...` starts inside the engine; None for an import from outside it."""
    if not node.level:
        return _engine_relative(node.module or "")
    is_package = module.path.name == "__init__.py"
    own_package = module.name.split(".") if is_package else module.name.split(".")[:-1]
    if node.level - 1 > len(own_package):
        raise ValueError("%s:%d imports above the engine" % (module.path, node.lineno))
    base = own_package[:len(own_package) - (node.level - 1)]
    return base + (node.module.split(".") if node.module else [])


def _targets(node: ast.AST, module: Module, modules: Dict[str, Module]) -> Tuple[List[str], List[str]]:
    """The engine modules one import statement reaches, and the engine names it imports that do not exist."""
    if isinstance(node, ast.ImportFrom):
        base = _from_base(node, module)
        if base is None:
            return [], []
        names = [alias.name for alias in node.names]
        found = _resolve(base, names, modules)
        return found, [] if found else [".".join(base + names[:1])]
    if isinstance(node, ast.Import):
        found, missing = [], []
        for alias in node.names:
            base = _engine_relative(alias.name)
            if base is None:
                continue
            (found if ".".join(base) in modules else missing).append(".".join(base))
        return found, missing
    return [], []


def scan(module: Module, modules: Dict[str, Module]) -> Tuple[List[Edge], List[Unresolved]]:
    """Every engine import of one module, wherever it is written (ast.walk also enters functions)."""
    tree = ast.parse(module.path.read_text(encoding="utf-8"), str(module.path))
    edges, unresolved = [], []
    for node in ast.walk(tree):
        found, missing = _targets(node, module, modules)
        edges.extend(Edge(module.name, target, node.lineno) for target in found if target != module.name)
        unresolved.extend(Unresolved(module.name, node.lineno, name) for name in missing)
    return edges, unresolved


def imports_of(module: Module, modules: Dict[str, Module]) -> List[Edge]:
    return scan(module, modules)[0]


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
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
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
                group = _pop_group(stack, on_stack, node)
                if len(group) > 1:
                    groups.append(sorted(group))
    return sorted(groups)


def _pop_group(stack: List[str], on_stack: Set[str], root: str) -> List[str]:
    group = []
    while True:
        member = stack.pop()
        on_stack.discard(member)
        group.append(member)
        if member == root:
            return group


def layer_violations(edges: Sequence[Edge]) -> List[str]:
    problems = []
    for edge in edges:
        source, target = package_of(edge.source), package_of(edge.target)
        if source == target:
            continue
        source_rank, target_rank = rank_of(source), rank_of(target)
        if source_rank is None or target_rank is None:
            continue  # reported once per package by unplaced()
        if target_rank >= source_rank:
            problems.append("%s:%d imports %s: %s (layer %d) may import only from layers below it, not %s (layer %d)"
                            % (edge.source, edge.line, edge.target, source, source_rank, target, target_rank))
    return problems


def unplaced(modules: Dict[str, Module], root: Path) -> List[str]:
    """Engine files outside a package, and packages LAYERS does not place."""
    problems = ["%s is not in a package: move it into the package of its layer" % module.path.relative_to(root)
                for module in modules.values() if "." not in module.name and is_file(module)]
    packages = sorted({package_of(name) for name in modules if "." in name})
    problems += ["package %s has no layer: add it to LAYERS and OWNS in tools/engine_layers.py" % package
                 for package in packages if rank_of(package) is None]
    return problems


def problems_of(root: Path = ENGINE) -> Tuple[Dict[str, Module], List[Edge], List[str]]:
    modules = engine_modules(root)
    edges: List[Edge] = []
    problems = unplaced(modules, root)
    for module in modules.values():
        found, unresolved = scan(module, modules)
        edges += found
        problems += ["%s:%d imports %s, which is not an engine module" % item for item in unresolved]
    problems += layer_violations(edges)
    problems += ["import cycle: %s" % " <-> ".join(group) for group in cycles(list(modules), edges)]
    return modules, edges, problems


def package_edges(edges: Sequence[Edge]) -> Dict[Tuple[str, str], int]:
    counts: Dict[Tuple[str, str], int] = {}
    for edge in edges:
        pair = (package_of(edge.source), package_of(edge.target))
        if pair[0] != pair[1]:
            counts[pair] = counts.get(pair, 0) + 1
    return counts


def files_of(modules: Dict[str, Module], package: str) -> List[Module]:
    return [m for m in modules.values() if package_of(m.name) == package and "." in m.name and is_file(m)]


def summary(modules: Dict[str, Module], edges: Sequence[Edge]) -> List[str]:
    files = [m for m in modules.values() if is_file(m) or m.lines]
    largest = max(files, key=lambda m: m.lines)
    lines = ["%d packages, %d files, %d lines; largest %s (%d lines); %d imports between modules"
             % (len([m for m in modules if "." not in m]), len(files), sum(m.lines for m in files),
                largest.name.replace(".", "/") + ".py", largest.lines, len(edges))]
    for layer in reversed(LAYERS):
        for package in layer:
            members = files_of(modules, package)
            lines.append("  %-11s %2d files %6d lines  %s"
                         % (package, len(members), sum(m.lines for m in members), OWNS.get(package, "")))
    return lines


# --- the picture -----------------------------------------------------------
# Layers are bands, highest on top; each package is a box with what it owns and
# its files. Every importing package has its own coloured lane right of the
# boxes: a line leaves the package's box, runs down its lane and ends in an
# arrow at each package it imports. Lanes of higher layers lie further right and
# arrows enter a box in lane order, so lines cross as little as they can.

MARGIN, LABEL_WIDTH, BOX_WIDTH, BOX_GAP, BAND_GAP, PADDING = 20, 70, 470, 8, 10, 8
LANE_GAP, SLOT_GAP, FIRST_SLOT = 15, 7, 26
CAPTION_CHARS, FILES_CHARS = 82, 72  # characters per line that fit BOX_WIDTH at their font sizes
NAME_HEIGHT, CAPTION_HEIGHT, FILES_HEIGHT = 18, 14, 13
PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf",
           "#7f7f7f", "#bcbd22", "#393b79", "#637939", "#843c39")
TITLE = ("The engine's layers, lowest at the bottom, and which package imports which",
         "A package imports only from the layers below its own (imports inside functions count).",
         "Each coloured lane is one importing package. Drawn from the real imports by tools/engine_layers.py.")


class Box(NamedTuple):
    package: str
    top: float
    height: float
    caption: List[str]
    files: List[str]


def _box(modules: Dict[str, Module], package: str, top: float, arrivals: int) -> Box:
    caption = textwrap.wrap(OWNS.get(package, ""), CAPTION_CHARS)
    names = ", ".join(m.name.split(".", 1)[1] + ".py" for m in files_of(modules, package))
    files = textwrap.wrap(names, FILES_CHARS)
    text = PADDING + NAME_HEIGHT + CAPTION_HEIGHT * len(caption) + FILES_HEIGHT * len(files) + PADDING
    slots = FIRST_SLOT + SLOT_GAP * max(arrivals - 1, 0) + PADDING
    return Box(package, top, max(text, slots), caption, files)


def _layout(modules: Dict[str, Module], arrivals: Dict[str, int]) -> Tuple[Dict[str, Box], List[Tuple[int, float, float]]]:
    """The package boxes, and each layer's band (rank, top, bottom), from the top of the picture down."""
    boxes: Dict[str, Box] = {}
    bands = []
    top = float(MARGIN + 16 * len(TITLE) + 14)
    for rank in reversed(range(len(LAYERS))):
        band_top = top
        top += BAND_GAP / 2
        for package in LAYERS[rank]:
            boxes[package] = _box(modules, package, top, arrivals.get(package, 0))
            top += boxes[package].height + BOX_GAP
        top += BAND_GAP / 2 - BOX_GAP
        bands.append((rank, band_top, top))
    return boxes, bands


def _text(x: float, y: float, text: str, style: str = "") -> str:
    return '<text x="%.0f" y="%.0f"%s>%s</text>' % (x, y, " " + style if style else "", html.escape(text))


def _draw_box(box: Box) -> List[str]:
    left = MARGIN + LABEL_WIDTH
    parts = ['<rect x="%d" y="%.0f" width="%d" height="%.0f" rx="5" fill="#ffffff" stroke="#35577d"/>'
             % (left, box.top, BOX_WIDTH, box.height),
             _text(left + PADDING, box.top + PADDING + 12, box.package, 'font-size="13" font-weight="bold"')]
    y = box.top + PADDING + NAME_HEIGHT
    for line in box.caption:
        parts.append(_text(left + PADDING, y + 10, line, 'fill="#333333"'))
        y += CAPTION_HEIGHT
    for line in box.files:
        parts.append(_text(left + PADDING, y + 10, line, 'font-family="monospace" font-size="10" fill="#35577d"'))
        y += FILES_HEIGHT
    return parts


def _draw_bands(bands: Sequence[Tuple[int, float, float]], width: int) -> List[str]:
    parts = []
    for rank, top, bottom in bands:
        fill = "#eef2f7" if rank % 2 == 0 else "#f8f9fb"
        parts.append('<rect x="%d" y="%.0f" width="%d" height="%.0f" fill="%s"/>'
                     % (MARGIN, top, width - 2 * MARGIN, bottom - top, fill))
        parts.append(_text(MARGIN + 8, (top + bottom) / 2 + 4, "layer %d" % rank, 'fill="#556677"'))
    return parts


def _draw_lanes(boxes: Dict[str, Box], pairs: Sequence[Tuple[str, str]]) -> List[str]:
    sources = sorted({pair[0] for pair in pairs}, key=lambda p: (rank_of(p), p))
    lane = {source: MARGIN + LABEL_WIDTH + BOX_WIDTH + 22 + LANE_GAP * index for index, source in enumerate(sources)}
    arriving: Dict[str, List[str]] = {}
    for source, target in sorted(pairs, key=lambda pair: lane[pair[0]]):
        arriving.setdefault(target, []).append(source)
    slot = {(source, target): boxes[target].top + FIRST_SLOT + SLOT_GAP * position
            for target, ordered in arriving.items() for position, source in enumerate(ordered)}
    edge_x = MARGIN + LABEL_WIDTH + BOX_WIDTH
    parts = []
    for index, source in enumerate(sources):
        colour = PALETTE[index % len(PALETTE)]
        targets = sorted((target for s, target in pairs if s == source), key=lambda t, s=source: slot[(s, t)])
        start = boxes[source].top + PADDING + 8
        end = slot[(source, targets[-1])]
        parts.append('<g stroke="%s" fill="none" stroke-width="1.4"><title>%s imports %s</title>'
                     % (colour, source, ", ".join(targets)))
        parts.append('<path d="M %d %.0f H %d V %.0f"/>' % (edge_x, start, lane[source], end))
        parts.append('<circle cx="%d" cy="%.0f" r="2.5" fill="%s"/>' % (edge_x + 3, start, colour))
        for target in targets:
            parts.append('<path d="M %d %.0f H %d" marker-end="url(#head%d)"/>'
                         % (lane[source], slot[(source, target)], edge_x + 1, index))
        parts.append('</g>')
    return parts


def _markers(count: int) -> str:
    return "<defs>%s</defs>" % "".join(
        '<marker id="head%d" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="6" markerHeight="6" '
        'orient="auto"><path d="M 0 0 L 10 5 L 0 10 z" fill="%s"/></marker>' % (index, PALETTE[index % len(PALETTE)])
        for index in range(count))


def svg(modules: Dict[str, Module], edges: Sequence[Edge]) -> str:
    """The picture as SVG text: the same structure always gives the same bytes."""
    pairs = sorted(pair for pair in package_edges(edges) if rank_of(pair[0]) is not None and rank_of(pair[1]) is not None)
    arrivals: Dict[str, int] = {}
    for pair in pairs:
        arrivals[pair[1]] = arrivals.get(pair[1], 0) + 1
    boxes, bands = _layout(modules, arrivals)
    sources = len({pair[0] for pair in pairs})
    width = MARGIN + LABEL_WIDTH + BOX_WIDTH + 22 + LANE_GAP * max(sources - 1, 0) + 12 + MARGIN
    height = int(bands[-1][2] + MARGIN) if bands else 2 * MARGIN
    parts = ['<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" '
             'font-family="sans-serif" font-size="11">' % (width, height, width, height),
             _markers(sources),
             '<rect width="100%" height="100%" fill="white"/>',
             _text(MARGIN, MARGIN + 12, TITLE[0], 'font-size="14" font-weight="bold"')]
    parts += [_text(MARGIN, MARGIN + 12 + 16 * line, TITLE[line], 'fill="#444444"') for line in range(1, len(TITLE))]
    parts += _draw_bands(bands, width)
    for box in boxes.values():
        parts += _draw_box(box)
    parts += _draw_lanes(boxes, pairs)
    return "\n".join(parts + ["</svg>", ""])


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", maxsplit=1)[0])
    parser.add_argument("--svg", type=Path, help="write the picture of the layers here (docs/architecture.svg)")
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
