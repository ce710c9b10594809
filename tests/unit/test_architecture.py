"""The engine's layers hold (tools/engine_layers.py), the checker catches what it must, and
docs/architecture.svg is what the tool draws from today's imports."""

from __future__ import annotations

import importlib.util
import textwrap
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
ENGINE = REPO_ROOT / "plugins" / "module_utils"
PICTURE = REPO_ROOT / "docs" / "architecture.svg"
PREFIX = "ansible_collections.restorekeeper.postgresql.plugins.module_utils"


def _load():
    spec = importlib.util.spec_from_file_location("engine_layers_tool", REPO_ROOT / "tools" / "engine_layers.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


layers = _load()


# --- the real engine -------------------------------------------------------

def test_engine_has_no_cycle_and_no_upward_import():
    _modules, edges, problems = layers.problems_of(ENGINE)
    assert edges, "the checker found no imports at all: it reads the wrong tree"
    assert problems == [], "\n".join(problems)


def test_every_engine_package_has_a_layer_and_a_caption():
    packages = sorted(path.name for path in ENGINE.iterdir() if path.is_dir() and path.name != "__pycache__")
    placed = sorted(package for layer in layers.LAYERS for package in layer)
    assert packages == placed, "LAYERS in tools/engine_layers.py must place every package of plugins/module_utils"
    assert sorted(layers.OWNS) == placed, "OWNS in tools/engine_layers.py must say what every package owns"
    for package in packages:
        assert (ENGINE / package / "__init__.py").is_file(), "%s has no __init__.py" % package


def test_no_engine_file_outside_a_package():
    assert sorted(path.name for path in ENGINE.glob("*.py")) in ([], ["__init__.py"])


def test_storage_interface_imports_no_backend():
    modules = layers.engine_modules(ENGINE)
    imported = {edge.target for edge in layers.imports_of(modules["storage.base"], modules)}
    assert imported, "storage/base.py imports nothing of the engine: the checker misread it"
    assert all(layers.package_of(target) == "common" for target in imported), imported


def test_lazy_imports_of_the_real_engine_are_counted():
    # The archive command imports walasync only inside cmd_wal_push: a dependency all the same.
    modules = layers.engine_modules(ENGINE)
    targets = {edge.target for edge in layers.imports_of(modules["frontends.cli"], modules)}
    assert "archive.walasync" in targets


def test_picture_is_drawn_from_todays_imports():
    modules, edges, _problems = layers.problems_of(ENGINE)
    expected = layers.svg(modules, edges)
    found = PICTURE.read_text(encoding="utf-8") if PICTURE.exists() else ""
    assert found == expected, "docs/architecture.svg is stale: run `%s`" % layers.REGENERATE


def test_picture_does_not_change_with_line_counts(tmp_path):
    root = _engine(tmp_path, {"common/errors.py": "X = 1\n", "config/config.py": "from ..common.errors import X\n"})
    before = layers.svg(*layers.problems_of(root)[:2])
    (root / "config" / "config.py").write_text("from ..common.errors import X\n\n\nY = X\n")
    assert layers.svg(*layers.problems_of(root)[:2]) == before


# --- the checker itself, on small fake engines -------------------------------

def _engine(tmp_path: Path, files: dict) -> Path:
    """An engine tree under tmp_path: each package gets an __init__.py; files maps paths to source."""
    root = tmp_path / "module_utils"
    for relative, source in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.parent != root:
            (path.parent / "__init__.py").touch()
        path.write_text(textwrap.dedent(source))
    return root


def _problems(root: Path) -> list:
    return layers.problems_of(root)[2]


def test_a_clean_fake_engine_passes(tmp_path):
    root = _engine(tmp_path, {
        "common/errors.py": "class E(Exception):\n    pass\n",
        "pg/wal.py": "from ..common.errors import E\n",
        "repo/layout.py": "from ..pg import wal\nfrom ..common import errors\n",
    })
    assert _problems(root) == []
    assert layers.main(["--root", str(root)]) == 0


def test_upward_import_is_caught(tmp_path):
    root = _engine(tmp_path, {
        "common/errors.py": "from ..repo.layout import KEY\n",
        "repo/layout.py": "KEY = 'k'\n",
    })
    problems = _problems(root)
    assert len(problems) == 1
    assert problems[0].startswith("common.errors:1 imports repo.layout: common (layer 0) may import only from")


def test_import_between_packages_of_one_layer_is_caught(tmp_path):
    root = _engine(tmp_path, {"pg/wal.py": "from ..storage.base import Storage\n", "storage/base.py": "Storage = 1\n"})
    assert [p for p in _problems(root) if "pg (layer 2)" in p and "not storage (layer 2)" in p]


def test_cycle_inside_a_package_is_caught(tmp_path):
    root = _engine(tmp_path, {
        "storage/base.py": "from .posix import PosixStorage\n",
        "storage/posix.py": "from .base import Storage\n",
    })
    assert _problems(root) == ["import cycle: storage.base <-> storage.posix"]
    assert layers.main(["--root", str(root)]) == 1


def test_lazy_import_inside_a_function_is_counted(tmp_path):
    root = _engine(tmp_path, {
        "common/fsutil.py": """
            def write():
                if True:
                    from ..config.config import Config
                    return Config
            """,
        "config/config.py": "Config = 1\n",
    })
    problems = _problems(root)
    assert len(problems) == 1 and problems[0].startswith("common.fsutil:4 imports config.config"), problems


def test_relative_import_of_a_package_member_is_resolved(tmp_path):
    # `from .. import x` names the module x of the engine: here a package, in a higher layer.
    root = _engine(tmp_path, {"common/errors.py": "from .. import frontends\n", "frontends/cli.py": "X = 1\n"})
    problems = _problems(root)
    assert len(problems) == 1 and problems[0].startswith("common.errors:1 imports frontends: common (layer 0)"), problems


def test_relative_from_dot_import_of_a_sibling_is_an_edge(tmp_path):
    root = _engine(tmp_path, {"restore/drill.py": "from . import drillrecord\n", "restore/drillrecord.py": "X = 1\n"})
    modules, edges, problems = layers.problems_of(root)
    assert problems == []
    assert [(e.source, e.target) for e in edges] == [("restore.drill", "restore.drillrecord")]
    assert set(modules) >= {"restore.drill", "restore.drillrecord"}


@pytest.mark.parametrize("statement", [
    "from %s.repo.layout import KEY\n" % PREFIX,
    "from %s.repo import layout\n" % PREFIX,
    "import %s.repo.layout\n" % PREFIX,
    "from restorekeeper_engine.repo.layout import KEY\n",  # the name of the on-host copy
])
def test_absolute_imports_are_counted(tmp_path, statement):
    root = _engine(tmp_path, {"pg/wal.py": statement, "repo/layout.py": "KEY = 'k'\n"})
    problems = _problems(root)
    assert len(problems) == 1 and problems[0].startswith("pg.wal:1 imports repo.layout: pg (layer 2)"), problems


def test_import_of_a_missing_engine_module_is_caught(tmp_path):
    root = _engine(tmp_path, {"config/config.py": "def load():\n    from ..common.nothere import X\n"})
    assert _problems(root) == ["config.config:2 imports common.nothere.X, which is not an engine module"]


def test_imports_from_outside_the_engine_are_ignored(tmp_path):
    root = _engine(tmp_path, {"common/errors.py": "import os\nfrom typing import List\nimport ansible.module_utils.basic\n"})
    assert layers.problems_of(root)[1:] == ([], [])


def test_package_without_a_layer_is_caught(tmp_path):
    root = _engine(tmp_path, {"misc/helpers.py": "X = 1\n"})
    assert _problems(root) == ["package misc has no layer: add it to LAYERS and OWNS in tools/engine_layers.py"]


def test_file_outside_a_package_is_caught(tmp_path):
    root = _engine(tmp_path, {"helpers.py": "X = 1\n"})
    assert _problems(root) == ["helpers.py is not in a package: move it into the package of its layer"]


def test_package_table_of_the_docs_lists_every_file():
    table = {}
    for line in (REPO_ROOT / "docs" / "architecture.md").read_text(encoding="utf-8").splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) == 4 and cells[0].startswith("`"):
            table[cells[0].strip("`")] = sorted(name.strip(" `") for name in cells[2].split(","))
    modules = layers.engine_modules(ENGINE)
    for package in sorted(package for layer in layers.LAYERS for package in layer):
        files = sorted(module.path.name for module in layers.files_of(modules, package))
        assert table.get(package) == files, (
            "docs/architecture.md, table 'What each package owns': the files of %s are %s" % (package, ", ".join(files)))


def test_archiving_role_copies_every_engine_package():
    """The role names the packages (fileglob reads one directory): a new package must be added there too."""
    import yaml

    role_vars = yaml.safe_load((REPO_ROOT / "roles" / "archiving" / "vars" / "main.yml").read_text(encoding="utf-8"))
    packages = sorted(package for layer in layers.LAYERS for package in layer)
    assert sorted(role_vars["archiving__engine_packages"]) == packages, (
        "roles/archiving/vars/main.yml archiving__engine_packages must list every engine package: %s"
        % ", ".join(packages))
