"""Every configuration example the documentation shows must load.

Examples are taken from README.md, docs/*.md, roles/*/README.md and the
docstring of config.py: every fenced block whose info string is ``ini``, and
every other fenced block holding a restorekeeper section header such as
``[repository]`` or ``[copy NAME]``. Each is written to its own 0600 file in
an empty temporary directory (no drop-ins) and read with Config.load.

Examples may be fragments. The only completion, so that a fragment is judged
as written: when the example declares no ``[cluster]`` section, ``[cluster]
name = main`` is added; when it declares no ``[repository]`` section, a posix
``[repository]`` with a temporary path is added. Nothing else is filled in:
paths are loaded as written (loading never touches them), and an elided
``...`` line is a broken example (write the keys out).
"""

from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import List, NamedTuple

import pytest

from ansible_collections.restorekeeper.postgresql.plugins.module_utils.config.config import _KNOWN, Config

ROOT = Path(__file__).resolve().parents[3]
FENCE = re.compile(r"^\s*(`{3,}|~{3,})\s*([\w+-]*)")
SECTION = re.compile(r"^\s*\[(?P<name>[^\]]+)\]\s*(#.*)?$")


class Example(NamedTuple):
    where: str  # file:line of the block's first line
    text: str


def is_restorekeeper_section(name: str) -> bool:
    return name in _KNOWN or name.startswith("copy ")


def fenced_examples(path: Path) -> List[Example]:
    """INI blocks of a Markdown file (see the module docstring)."""
    found: List[Example] = []
    lines = path.read_text(encoding="utf-8").splitlines()
    index = 0
    while index < len(lines):
        opening = FENCE.match(lines[index])
        if not opening:
            index += 1
            continue
        fence, info = opening.group(1), opening.group(2).lower()
        start = index + 1
        end = start
        while end < len(lines) and not lines[end].strip().startswith(fence):
            end += 1
        body = lines[start:end]
        indent = min((len(line) - len(line.lstrip()) for line in body if line.strip()), default=0)
        body = [line[indent:] for line in body]
        headers = [m.group("name") for m in map(SECTION.match, body) if m]
        if info == "ini" or any(is_restorekeeper_section(name) for name in headers):
            found.append(Example("%s:%d" % (path.relative_to(ROOT), start + 1), "\n".join(body) + "\n"))
        index = end + 1
    return found


def docstring_example() -> Example:
    """The indented example after 'for example::' in config.py's docstring."""
    path = ROOT / "plugins" / "module_utils" / "config" / "config.py"
    docstring = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8")), clean=True) or ""
    block = docstring.split("::", 1)[1]
    lines: List[str] = []
    for line in block.splitlines()[1:]:
        if line.strip() and not line.startswith("    "):
            break
        lines.append(line[4:])
    return Example("plugins/module_utils/config/config.py (docstring)", "\n".join(lines).strip() + "\n")


def all_examples() -> List[Example]:
    documents = [ROOT / "README.md"] + sorted((ROOT / "docs").glob("*.md")) + sorted(ROOT.glob("roles/*/README.md"))
    examples = [example for document in documents for example in fenced_examples(document)]
    return examples + [docstring_example()]


EXAMPLES = all_examples()


def complete(text: str, repository_path: Path) -> str:
    """The example with the two sections a fragment may leave out (see the module docstring)."""
    headers = {m.group("name").strip() for m in map(SECTION.match, text.splitlines()) if m}
    if "cluster" not in headers:
        text = "[cluster]\nname = main\n\n" + text
    if "repository" not in headers:
        text += "\n[repository]\ntype = posix\npath = %s\n" % repository_path
    return text


def load_example(example: Example, directory: Path) -> Config:
    path = directory / "example.conf"
    path.write_text(complete(example.text, directory / "repository"), encoding="utf-8")
    path.chmod(0o600)  # an example may hold a secret: the loader refuses one readable by others
    return Config.load(str(path))


def test_the_documentation_has_examples():
    """The extraction itself works: the known examples are found."""
    places = {example.where.split(":")[0] for example in EXAMPLES}
    assert {"README.md", "docs/repository-format.md", "docs/retention.md"} <= places, places
    assert len(EXAMPLES) >= 5


@pytest.mark.parametrize("example", EXAMPLES, ids=[example.where for example in EXAMPLES])
def test_example_loads(example, tmp_path):
    assert "\n...\n" not in "\n" + example.text, "%s elides keys with '...': write them out" % example.where
    config = load_example(example, tmp_path)
    assert config.cluster


def test_inline_comments_of_the_examples_are_not_values(tmp_path):
    """The S3 example's endpoint_url carries an inline comment; the value is the URL alone."""
    s3 = next(e for e in EXAMPLES if "type = s3" in e.text and "endpoint_url" in e.text)
    config = load_example(s3, tmp_path)
    assert config.repository.options["endpoint_url"] == "https://s3.eu-west-1.amazonaws.com"
    retention = next(e for e in EXAMPLES if e.where.startswith("docs/retention.md"))
    policy = load_example(retention, tmp_path).retention
    assert (policy.full, policy.min_restorable) == (4, 1)
