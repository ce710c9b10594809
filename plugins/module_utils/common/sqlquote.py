"""Quoting text for PostgreSQL: SQL identifiers and literals, and postgresql.conf values.

Every statement and configuration line the engine builds from a name or a
value quotes it here, so any name (quotes, backslashes, dollars, spaces,
letters of any script) is taken literally. Each form refuses a NUL byte:
PostgreSQL text cannot hold one, and psql, libpq and the server would cut the
string there, so what ran would not be what was quoted.
"""

from __future__ import annotations

from .errors import RestorekeeperError

_DOLLAR_TAG = "rk"


def _refuse_nul(text: str, what: str) -> None:
    if "\0" in text:
        raise RestorekeeperError("%s %r contains a NUL byte" % (what, text))


def identifier(name: str) -> str:
    """An SQL identifier, always double-quoted, so any name is taken literally
    (never folded to lower case, never read as a keyword)."""
    _refuse_nul(name, "name")
    return '"%s"' % name.replace('"', '""')


def literal(value: str) -> str:
    """An SQL string literal in dollar quotes: no escaping rule (backslashes,
    standard_conforming_strings) can change its meaning. The tag grows until
    neither the value nor its end can close the quote early."""
    _refuse_nul(value, "value")
    tag = _DOLLAR_TAG
    while "$%s$" % tag in value or value.endswith("$" + tag):
        tag += "x"
    return "$%s$%s$%s$" % (tag, value, tag)


def conf_value(value: str) -> str:
    """A value as a quoted string in postgresql.conf (or postgresql.auto.conf):
    the configuration file reads backslash escapes and a doubled quote."""
    _refuse_nul(value, "value")
    return "'%s'" % value.replace("\\", "\\\\").replace("'", "''")
