"""Every module's DOCUMENTATION, RETURN and EXAMPLES are YAML that loads, and
every option of its argument spec is documented: caught here in a second
rather than by ansible-test's validate-modules minutes into make test."""

from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path

import pytest
import yaml

from ansible_collections.restorekeeper.postgresql.plugins import modules
from ansible_collections.restorekeeper.postgresql.plugins.doc_fragments.postgres import ModuleDocFragment
from ansible_collections.restorekeeper.postgresql.plugins.module_utils.pg.postgres import connection_argument_spec

NAMES = sorted(info.name for info in pkgutil.iter_modules(modules.__path__))


@pytest.mark.parametrize("name", NAMES)
def test_module_documentation_loads_and_covers_the_spec(name):
    module = importlib.import_module("%s.%s" % (modules.__name__, name))
    documentation = yaml.safe_load(module.DOCUMENTATION)
    yaml.safe_load(module.RETURN)
    yaml.safe_load(module.EXAMPLES)
    assert documentation["module"] == name
    spec = module.argument_spec() if hasattr(module, "argument_spec") else None
    if callable(spec):
        spec = spec()
    if isinstance(spec, dict):
        documented = set(documentation.get("options") or {})
        fragments = documentation.get("extends_documentation_fragment") or []
        if not any("postgres" in fragment for fragment in fragments):
            assert set(spec) <= documented, sorted(set(spec) - documented)


# ------------------------------------------- the shared connection options

def _module(name):
    return importlib.import_module("%s.%s" % (modules.__name__, name))


def _spec(name):
    module = _module(name)
    return module.argument_spec() if hasattr(module, "argument_spec") else {}


CONNECTION_OPTIONS = set(connection_argument_spec())
CONNECTING = sorted(name for name in NAMES if CONNECTION_OPTIONS <= set(_spec(name)))


def test_modules_that_connect_take_every_connection_option():
    # restore and recovery_target do not connect to a server the user names (restore reaches only the
    # server it starts itself, through its own socket_dir and port); the others need no server at all.
    assert CONNECTING == ["backup_info", "base_backup", "logical_backup", "logical_restore", "restore_drill",
                          "wal_archiving"]
    for name in NAMES:
        partial = CONNECTION_OPTIONS & set(_spec(name))
        assert not partial or partial == CONNECTION_OPTIONS, (name, sorted(CONNECTION_OPTIONS - partial))


@pytest.mark.parametrize("name", CONNECTING)
def test_connecting_module_documents_the_options_as_its_spec_says(name):
    """What validate-modules compares: the fragment's entries, each updated key by key with the module's
    own (as ansible-core's add_fragments merges them), against the argument spec: types, defaults,
    choices, aliases."""
    documentation = yaml.safe_load(_module(name).DOCUMENTATION)
    assert "restorekeeper.postgresql.postgres" in documentation["extends_documentation_fragment"]
    options = dict(yaml.safe_load(ModuleDocFragment.DOCUMENTATION)["options"])
    for option, entry in documentation["options"].items():
        options[option] = dict(options.get(option, {}), **entry)
    spec = _spec(name)
    assert set(options) == set(spec), sorted(set(options) ^ set(spec))
    for option, opts in spec.items():
        entry = options[option]
        assert entry.get("description"), option
        for key, absent in (("type", "str"), ("default", None), ("choices", None), ("aliases", None)):
            assert entry.get(key, absent) == opts.get(key, absent), (option, key)


@pytest.mark.parametrize("name", NAMES)
def test_no_alias_clashes_with_another_option(name):
    spec = _spec(name)
    seen = {}
    for option, opts in spec.items():
        for label in [option] + list(opts.get("aliases") or []):
            assert label not in seen, "%s: %s is both %s and %s" % (name, label, seen[label], option)
            seen[label] = option


def test_action_group_lists_exactly_the_connecting_modules():
    runtime = yaml.safe_load((Path(__file__).resolve().parents[3] / "meta" / "runtime.yml").read_text())
    groups = runtime["action_groups"]
    assert sorted(groups["postgresql"]) == CONNECTING
