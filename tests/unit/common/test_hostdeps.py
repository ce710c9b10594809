"""hostdeps: the one table of the engine's third-party packages, the messages
naming what is missing (with the distribution package), and what a configuration
needs. The modules' preflight on it (modulerun.run_module needs=...) is tested
in tests/unit/frontends/test_modulerun.py."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import yaml

from ansible_collections.restorekeeper.postgresql.plugins.module_utils.common import hostdeps
from ansible_collections.restorekeeper.postgresql.plugins.module_utils.config.config import Config
from ansible_collections.restorekeeper.postgresql.plugins.module_utils.common.errors import RestorekeeperError
from ansible_collections.restorekeeper.postgresql.plugins.module_utils.frontends.modulerun import Refusal

REPO_ROOT = Path(__file__).resolve().parents[3]
ROLE_VARS = REPO_ROOT / "roles" / "archiving" / "vars"
ABSENT = "restorekeeper_absent_module_for_tests"


# ------------------------------------------------------------------ the table
def test_the_table_names_every_package_once_with_its_sources() -> None:
    names = [d.import_name for d in hostdeps.DEPENDENCIES]
    assert names == ["psycopg2", "zstandard", "crc32c", "cryptography", "boto3"]
    for entry in hostdeps.DEPENDENCIES:
        assert entry.needed_for and entry.pip and entry.debian == "python3-%s" % entry.import_name
    assert {d.import_name for d in hostdeps.DEPENDENCIES if d.rhel is None} == {"crc32c"}


def test_the_table_agrees_with_the_pins_and_the_roles_package_lists() -> None:
    pins = (REPO_ROOT / "roles" / "archiving" / "files" / "requirements-onhost.txt").read_text()
    pinned = {line.split("==")[0] for line in pins.splitlines() if "==" in line and not line.startswith("#")}
    assert {d.pip for d in hostdeps.DEPENDENCIES} - pinned == {"psycopg2-binary"}  # the modules', not the command's
    for family, column in (("Debian", "debian"), ("RedHat", "rhel")):
        listed = yaml.safe_load((ROLE_VARS / ("%s.yml" % family)).read_text())
        entries = listed["archiving__os_host_packages"] + listed["archiving__os_host_packages_s3"]
        table = {d.import_name: getattr(d, column) for d in hostdeps.DEPENDENCIES if getattr(d, column)}
        assert {e["module"]: e["package"] for e in entries} == table, family


# --------------------------------------------------------------- missing/require
def test_missing_finds_without_importing_and_honours_alternatives(monkeypatch) -> None:
    assert hostdeps.missing(["json", ABSENT]) == [ABSENT]
    assert hostdeps.missing([]) == []
    # A None entry in sys.modules makes the module unimportable, as on a bare host.
    monkeypatch.setitem(sys.modules, "crc32c", None)
    monkeypatch.setitem(sys.modules, "google_crc32c", None)
    assert hostdeps.missing(["crc32c"]) == ["crc32c"]


def test_missing_lists_table_order_then_the_rest(monkeypatch) -> None:
    for name in ("boto3", "zstandard"):
        monkeypatch.setitem(sys.modules, name, None)
    assert hostdeps.missing([ABSENT, "boto3", "zstandard"]) == ["zstandard", "boto3", ABSENT]


def test_require_names_every_missing_package_the_interpreter_and_both_families(monkeypatch) -> None:
    for name in ("zstandard", "crc32c", "google_crc32c"):
        monkeypatch.setitem(sys.modules, name, None)
    with pytest.raises(RestorekeeperError) as caught:
        hostdeps.require(["zstandard", "crc32c", "json"], "module base_backup")
    text = str(caught.value)
    assert text.startswith("module base_backup needs the Python modules zstandard (for zstd compression")
    assert "crc32c (for CRC-32C backup manifests" in text
    assert "which the Python at %s cannot import" % sys.executable in text
    assert "apt-get install python3-zstandard python3-crc32c" in text
    assert "dnf install python3-zstandard;" in text  # crc32c is not packaged there...
    assert "crc32c is not packaged for the RHEL family" in text
    assert "instead of crc32c: set [backup] manifest_checksums = sha256" in text  # ...and this is what to do
    assert "%s -m pip install zstandard crc32c" % sys.executable in text
    assert "json" not in text


def test_require_returns_quietly_and_raises_the_callers_error_class() -> None:
    assert hostdeps.require(["json", "os"], "anything") is None
    with pytest.raises(Refusal, match="needs the Python module %s" % ABSENT) as caught:
        hostdeps.require([ABSENT], "module x", Refusal)
    assert "%s is not a distribution package" % ABSENT in str(caught.value)


# --------------------------------------------------- what a configuration needs
def load_config(tmp_path: Path, text: str) -> Config:
    path = tmp_path / "main.conf"
    path.write_text("[cluster]\nname = main\n\n[repository]\ntype = posix\npath = %s\n\n%s" % (tmp_path / "r", text))
    path.chmod(0o600)
    return Config.load(str(path))


@pytest.mark.parametrize(
    "text, needs",
    [
        ("", {"zstandard"}),  # zstd is the default compression
        ("[archive]\ncompression = none\n[backup]\ncompression = none\n", set()),
        ("[archive]\ncompression = none\n", {"zstandard"}),  # backups still zstd
        ("[archive]\ncompression = none\n[backup]\ncompression = none\nmanifest_checksums = crc32c\n", {"crc32c"}),
        ("[archive]\ncompression = none\n[backup]\ncompression = none\nmanifest_checksums = auto\n", set()),
        ("[archive]\ncompression = none\n[backup]\ncompression = none\n\n"
         "[copy offsite]\ntype = s3\nbucket = b\npath = p\nencryption_key_file = /etc/rk.keys\noffsite = true\n",
         {"boto3", "cryptography"}),
        ("[copy second]\ntype = posix\npath = /srv/second\n", {"zstandard"}),
    ],
)
def test_needs_for_config(tmp_path: Path, text: str, needs: set) -> None:
    assert hostdeps.needs_for_config(load_config(tmp_path, text)) == needs


def test_needs_for_config_counts_the_repository_when_reading_from_a_copy(tmp_path: Path) -> None:
    config = load_config(tmp_path, "[copy cloud]\ntype = s3\nbucket = b\npath = p\n")
    assert "boto3" in hostdeps.needs_for_config(config.for_source("cloud"))
    assert hostdeps.needs_for_repository("posix", "/k") == {"cryptography"}
    assert hostdeps.needs_for_repository("ssh") == set()


# ---------------------------------------------- the engine's lazy imports say it
def test_lazy_imports_name_the_distribution_package(monkeypatch) -> None:
    from ansible_collections.restorekeeper.postgresql.plugins.module_utils.common import compression
    from ansible_collections.restorekeeper.postgresql.plugins.module_utils.storage import crypto
    from ansible_collections.restorekeeper.postgresql.plugins.module_utils.pg import postgres
    from ansible_collections.restorekeeper.postgresql.plugins.module_utils.storage.s3 import S3Settings, S3Storage
    from ansible_collections.restorekeeper.postgresql.plugins.module_utils.common.errors import StorageError

    # Absent, as on a bare host: the packages and any of their submodules an
    # earlier test imported (`from a.b import c` finds a.b in sys.modules first).
    packages = ("zstandard", "cryptography", "boto3", "botocore", "psycopg2")
    for name in [loaded for loaded in sys.modules if loaded.split(".")[0] in packages] + list(packages):
        monkeypatch.setitem(sys.modules, name, None)
    with pytest.raises(RestorekeeperError, match="apt-get install python3-zstandard"):
        compression._zstandard()  # pylint: disable=protected-access
    with pytest.raises(RestorekeeperError, match="apt-get install python3-cryptography"):
        crypto._aesgcm(b"k" * 32)  # pylint: disable=protected-access
    with pytest.raises(StorageError, match="apt-get install python3-boto3"):
        S3Storage(S3Settings(bucket="b"))
    with pytest.raises(postgres.PostgresConnectionError, match="apt-get install python3-psycopg2"):
        postgres.connect({"login_user": "postgres"})
