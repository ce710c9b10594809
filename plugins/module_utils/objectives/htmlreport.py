"""The one HTML page skeleton of the reports people read: a drill's page (drillreport.py) and the fleet
summary of drills (fleetsummary.py).

Self-contained pages (inline style, no scripts, nothing fetched), every text
escaped with escape(), and the look both share: page width, font, tables.
"""

from __future__ import annotations

import html
from typing import Any, Sequence

# Rules every report page starts its style with; {width} is the page's maximum width in pixels.
BASE_STYLE = (
    "body{{font-family:system-ui,sans-serif;max-width:{width}px;margin:2em auto;color:#222}}",
    "table{{border-collapse:collapse;width:100%}}td,th{{border-bottom:1px solid #ddd;padding:4px 8px;"
    "text-align:left;vertical-align:top}}",
)
PASS_COLOR = "#2e7d32"
FAIL_COLOR = "#c62828"
FAIL_BACKGROUND = "#fdecea"


def escape(value: Any) -> str:
    """Any value as HTML text (quotes escaped too, so it may stand in an attribute)."""
    return html.escape(str(value))


def page(title: str, width: int, style: Sequence[str], body: str) -> str:
    """A complete page: title (plain text, escaped here), the base style at width pixels plus this page's
    own rules (one per line), and body (HTML, already escaped by the caller)."""
    rules = [rule.format(width=width) for rule in BASE_STYLE] + list(style)
    return ('<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>%s</title>\n'
            "<style>\n%s\n</style></head><body>\n%s</body></html>\n" % (escape(title), "\n".join(rules), body))
