"""The one quoting of names and values for SQL and postgresql.conf (common/sqlquote.py)."""

from __future__ import annotations

import pytest

from ansible_collections.restorekeeper.postgresql.plugins.module_utils.common import sqlquote
from ansible_collections.restorekeeper.postgresql.plugins.module_utils.common.errors import RestorekeeperError


@pytest.mark.parametrize("name, expected", [
    ("shop", '"shop"'),
    ("My DB", '"My DB"'),
    ('a"b', '"a""b"'),
    ('"', '""""'),
    ("x'; DROP TABLE t; --", '"x\'; DROP TABLE t; --"'),
])
def test_identifier_is_always_double_quoted(name, expected):
    assert sqlquote.identifier(name) == expected


@pytest.mark.parametrize("value, expected", [
    ("it's", "$rk$it's$rk$"),
    ("back\\slash", "$rk$back\\slash$rk$"),
    ("", "$rk$$rk$"),
    ("x$rk$y", "$rkx$x$rk$y$rkx$"),
    ("end$rk", "$rkx$end$rk$rkx$"),
    ("$rk$ and $rkx$", "$rkxx$$rk$ and $rkx$$rkxx$"),
])
def test_literal_uses_a_dollar_tag_the_value_cannot_close(value, expected):
    assert sqlquote.literal(value) == expected


def test_literal_body_is_the_value_unchanged():
    for value in ("a", "$", "$$", "rk$", "$rk", "x$rkx", "'\"\\"):
        quoted = sqlquote.literal(value)
        tag = quoted[:quoted.index("$", 1) + 1]
        assert quoted == tag + value + tag
        assert tag not in value and not value.endswith(tag[:-1])


@pytest.mark.parametrize("value, expected", [
    ("latest", "'latest'"),
    ("it's", "'it''s'"),
    ("C:\\dir", "'C:\\\\dir'"),
    ("", "''"),
])
def test_conf_value_escapes_quotes_and_backslashes(value, expected):
    assert sqlquote.conf_value(value) == expected


@pytest.mark.parametrize("quote, what", [
    (sqlquote.identifier, "name"),
    (sqlquote.literal, "value"),
    (sqlquote.conf_value, "value"),
])
def test_every_form_refuses_a_nul_byte(quote, what):
    with pytest.raises(RestorekeeperError, match="^%s 'a\\\\x00b' contains a NUL byte$" % what):
        quote("a\0b")
