"""A strict reader of the Prometheus text exposition format, for tests of the textfile."""

from __future__ import annotations

import re
from typing import Dict

# The text exposition format, as Prometheus' own parser reads it.
_NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
_SAMPLE = re.compile(r'^(%s)\{((?:[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\[\\"n])*",?)*)\} (\S+)$' % _NAME)
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\[\\"n])*)"')


def parse_exposition(text: str) -> Dict[str, Dict]:
    """Strict reader: HELP and TYPE once per family, before its samples; the
    samples of one family together; label values unescaped; values floats."""
    assert text.endswith("\n")
    families: Dict[str, Dict] = {}
    current = None
    for line in text.splitlines():
        if line.startswith("# HELP "):
            name, _sep, help_text = line[7:].partition(" ")
            assert name not in families, "family %s repeated" % name
            families[name] = {"help": help_text, "type": None, "samples": []}
            current = name
        elif line.startswith("# TYPE "):
            name, kind = line[7:].split(" ")
            assert name == current and families[name]["type"] is None and kind in ("gauge", "counter")
            families[name]["type"] = kind
        else:
            match = _SAMPLE.match(line)
            assert match, "not a sample line: %r" % line
            name, labels, value = match.groups()
            assert name == current, "%s outside its family" % name
            parsed = {k: v.replace("\\n", "\n").replace('\\"', '"').replace("\\\\", "\\")
                      for k, v in _LABEL.findall(labels)}
            families[name]["samples"].append((parsed, float(value)))
    return families


def value(families, name: str, **labels: str) -> float:
    found = [v for l, v in families[name]["samples"] if all(l.get(k) == x for k, x in labels.items())]
    assert len(found) == 1, (name, labels, families.get(name))
    return found[0]
