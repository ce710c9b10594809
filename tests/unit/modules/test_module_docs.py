"""Every module's DOCUMENTATION, RETURN and EXAMPLES are YAML that loads, and
every option of its argument spec is documented: caught here in a second
rather than by ansible-test's validate-modules minutes into make test."""

from __future__ import annotations

import importlib
import pkgutil

import pytest
import yaml

from ansible_collections.restorekeeper.postgresql.plugins import modules

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
