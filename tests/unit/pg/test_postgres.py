"""Pure helpers of module_utils/pg/postgres.py and the wal_archiving module.

No server here: value normalisation, the connection spec and its
documentation, libpq error translation, and the module's planning helpers.
The behaviour against real servers is in tests/integration/test_module_wal_archiving.py.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import yaml

from ansible_collections.restorekeeper.postgresql.plugins.doc_fragments.postgres import ModuleDocFragment
from ansible_collections.restorekeeper.postgresql.plugins.module_utils.common.errors import Refusal
from ansible_collections.restorekeeper.postgresql.plugins.module_utils.config.config import PostgresConfig
from ansible_collections.restorekeeper.postgresql.plugins.module_utils.pg import postgres
from ansible_collections.restorekeeper.postgresql.plugins.module_utils.pg.postgres import (
    PostgresConnectionError,
    connection_argument_spec,
    connection_error,
    connection_kwargs,
    normalize_setting,
    parse_bool,
)
from ansible_collections.restorekeeper.postgresql.plugins.module_utils.archive import serversettings
from ansible_collections.restorekeeper.postgresql.plugins.modules import wal_archiving

# ------------------------------------------------------------- durations (parsed by common/timefmt.py)


def test_equal_timeouts_normalise_equal():
    assert normalize_setting("archive_timeout", "1min") == normalize_setting("archive_timeout", 60)
    assert normalize_setting("archive_timeout", 60) == normalize_setting("archive_timeout", "60s") == "60"


# -------------------------------------------------------------- settings


@pytest.mark.parametrize(
    "name, value, expected",
    [
        ("archive_mode", "on", "on"),
        ("archive_mode", "ON", "on"),
        ("archive_mode", True, "on"),
        ("archive_mode", "true", "on"),
        ("archive_mode", "yes", "on"),
        ("archive_mode", "off", "off"),
        ("archive_mode", False, "off"),
        ("archive_mode", "always", "always"),
        ("wal_level", "Replica", "replica"),
        ("wal_level", "hot_standby", "replica"),
        ("wal_level", "archive", "replica"),
        ("wal_level", "logical", "logical"),
        ("summarize_wal", "1", "on"),
        ("summarize_wal", "off", "off"),
        ("archive_command", "a 'b' %p", "a 'b' %p"),
        ("archive_command", None, ""),
    ],
)
def test_normalize_setting(name, value, expected):
    assert normalize_setting(name, value) == expected


def test_parse_bool_refuses_nonsense():
    with pytest.raises(ValueError):
        parse_bool("maybe")


# ---------------------------------------------------------- connections


def test_spec_options_and_secrets():
    spec = connection_argument_spec()
    assert set(spec) == {
        "login_user", "login_password", "login_host", "login_port", "login_unix_socket",
        "login_db", "ssl_mode", "ca_cert", "ssl_cert", "ssl_key", "connect_params", "connect_timeout",
    }
    assert spec["login_password"]["no_log"] is True
    # community.postgresql's names, as canonical names or aliases.
    assert spec["login_user"]["aliases"] == ["login"]
    assert spec["login_host"]["aliases"] == ["host"]
    assert spec["login_port"]["aliases"] == ["port"]
    assert spec["login_unix_socket"]["aliases"] == ["unix_socket"]
    assert spec["login_db"]["aliases"] == ["db"]
    assert spec["ca_cert"]["aliases"] == ["ssl_rootcert"]
    assert spec["ssl_cert"]["type"] == spec["ssl_key"]["type"] == "path"
    assert spec["connect_params"] == {"type": "dict", "default": {}}
    assert spec["ssl_mode"]["choices"] == ["disable", "allow", "prefer", "require", "verify-ca", "verify-full"]
    assert "fallback" not in spec["login_port"]


def test_spec_port_falls_back_to_pgport_when_given_the_helper():
    def fake_env_fallback(*names):  # stands in for ansible's env_fallback
        return names

    spec = connection_argument_spec(env_fallback=fake_env_fallback)
    assert spec["login_port"]["fallback"] == (fake_env_fallback, ["PGPORT"])
    assert spec["login_port"]["default"] == 5432


def test_spec_returns_fresh_dicts():
    first = connection_argument_spec()
    first["login_user"]["default"] = "changed"
    assert connection_argument_spec()["login_user"]["default"] == "postgres"


def _defaults(**overrides):
    params = {name: opts.get("default") for name, opts in connection_argument_spec().items()}
    params.update(overrides)
    return params


def test_kwargs_host_wins_over_socket_and_empty_values_are_left_out():
    kwargs = connection_kwargs(_defaults(login_host="db1", login_unix_socket="/run/pg", login_port=5433))
    assert kwargs["host"] == "db1" and kwargs["port"] == 5433
    assert "password" not in kwargs and "sslrootcert" not in kwargs
    kwargs = connection_kwargs(_defaults(login_unix_socket="/run/pg"))
    assert kwargs["host"] == "/run/pg"
    assert "host" not in connection_kwargs(_defaults())


def test_kwargs_pass_password_and_tls_options():
    kwargs = connection_kwargs(_defaults(login_password="s3cret", ca_cert="/ca.pem", ssl_mode="verify-full"))
    assert kwargs["password"] == "s3cret"
    assert kwargs["sslrootcert"] == "/ca.pem"
    assert kwargs["sslmode"] == "verify-full"
    assert kwargs["connect_timeout"] == 10


def test_kwargs_pass_client_certificate_and_connect_params_last():
    kwargs = connection_kwargs(_defaults(ssl_cert="/c.crt", ssl_key="/c.key",
                                         connect_params={"application_name": "nightly", "keepalives": True,
                                                         "keepalives_idle": 30, "sslcrl": "/crl.pem"}))
    assert kwargs["sslcert"] == "/c.crt" and kwargs["sslkey"] == "/c.key"
    # connect_params replace our application_name; values reach libpq as text.
    assert kwargs["application_name"] == "nightly"
    assert kwargs["keepalives"] == "1" and kwargs["keepalives_idle"] == "30" and kwargs["sslcrl"] == "/crl.pem"
    assert "sslcert" not in connection_kwargs(_defaults())


@pytest.mark.parametrize("key, option", sorted(postgres.COVERED_KEYWORDS.items()))
def test_connect_params_refuse_what_an_option_covers_and_name_it(key, option):
    with pytest.raises(Refusal) as caught:
        connection_kwargs(_defaults(connect_params={key: "s3cret"}))
    text = str(caught.value)
    assert "connect_params sets %s" % key in text
    assert "use option %s" % option in text
    assert "s3cret" not in text  # messages name keys, never values


@pytest.mark.parametrize("key", ["sslpassword", "passfile", "service"])
def test_connect_params_refuse_secrets_and_what_fights_the_mapping(key):
    with pytest.raises(Refusal) as caught:
        connection_kwargs(_defaults(connect_params={key: "s3cret"}))
    assert "may not set %s" % key in str(caught.value) and "HINT:" in str(caught.value)
    assert "s3cret" not in str(caught.value)


@pytest.mark.parametrize("given, words", [
    ({"Application-Name": "x"}, ["not a libpq connection keyword"]),
    ({"options": ["-c", "x"]}, ["must be a string or a number, not a list"]),
    ({"application_name": "a\nhost=evil"}, ["line break"]),
    ("application_name=x", ["must be a dictionary"]),
])
def test_connect_params_bad_input(given, words):
    with pytest.raises(Refusal) as caught:
        connection_kwargs(_defaults(connect_params=given))
    for word in words:
        assert word in str(caught.value)


def test_client_programs_get_tls_files_in_the_environment_and_connect_params_in_a_service_file(tmp_path):
    params = _defaults(login_user=None, login_port=None, login_db=None, ssl_mode="verify-full",
                       ca_cert=str(tmp_path / "ca.crt"), ssl_cert=str(tmp_path / "c.crt"), ssl_key=str(tmp_path / "c.key"),
                       connect_params={"application_name": "nightly", "target_session_attrs": "read-write"})
    for name in ("ca.crt", "c.crt", "c.key"):
        (tmp_path / name).write_text("x")
    with postgres.module_client(params, PostgresConfig(host="/run/pg", port=5433)) as client:
        env = client.env()
        assert env["PGSSLMODE"] == "verify-full"
        assert env["PGSSLROOTCERT"] == str(tmp_path / "ca.crt")
        assert env["PGSSLCERT"] == str(tmp_path / "c.crt") and env["PGSSLKEY"] == str(tmp_path / "c.key")
        service_file = Path(env["PGSERVICEFILE"])
        assert env["PGSERVICE"] == postgres.SERVICE_NAME
        assert service_file.read_text() == (
            "[restorekeeper]\napplication_name=nightly\ntarget_session_attrs=read-write\n")
        assert service_file.stat().st_mode & 0o777 == 0o600
        # Programs run with other binaries keep every option.
        other = client.using_bindir("/usr/lib/postgresql/18/bin").env()
        assert other["PGSERVICEFILE"] == env["PGSERVICEFILE"] and other["PGSSLCERT"] == env["PGSSLCERT"]
        assert other["PGHOST"] == "/run/pg" and other["PGPORT"] == "5433"
    assert not service_file.exists()


def test_without_connect_params_no_service_is_named(tmp_path):
    with postgres.module_client(_defaults(login_user=None, login_port=None, login_db=None), PostgresConfig()) as client:
        assert "PGSERVICEFILE" not in client.env() and "PGSSLCERT" not in client.env()


@pytest.mark.parametrize("option", ["ca_cert", "ssl_cert", "ssl_key"])
def test_missing_tls_file_is_refused_before_connecting(tmp_path, option):
    missing = str(tmp_path / "nope.pem")
    with pytest.raises(Refusal) as caught:
        postgres.module_client(_defaults(**{option: missing}), PostgresConfig())
    assert "%s %s is not a file on the managed host" % (option, missing) in str(caught.value)
    with pytest.raises(Refusal):
        postgres.connect(_defaults(**{option: missing}))


def test_ca_cert_system_is_libpqs_own_store():
    postgres.check_ssl_files(_defaults(ca_cert="system"))


@pytest.mark.parametrize(
    "detail, words",
    [
        ('connection to server at "127.0.0.1", port 5433 failed: FATAL:  password authentication failed for user "app"',
         ["password authentication failed", "login_password"]),
        ('connection to server at "127.0.0.1", port 5433 failed: Connection refused\n\tIs the server running',
         ["not reachable", "host 127.0.0.1 port 5433", "running"]),
        ('connection to server on socket "/x/.s.PGSQL.5433" failed: No such file or directory',
         ["not reachable", "login_unix_socket"]),
        ('connection to server at "127.0.0.1", port 5433 failed: fe_sendauth: no password supplied',
         ["asks user", "set login_password"]),
        ('FATAL:  Peer authentication failed for user "postgres"', ["peer authentication", "become_user"]),
        ('FATAL:  database "nope" does not exist', ["database", "login_db"]),
        ('FATAL:  role "nobody" does not exist', ["role", "login_user"]),
        ("something unheard of", ["cannot connect", "something unheard of"]),
    ],
)
def test_connection_errors_name_problem_and_fix(detail, words):
    error = connection_error(_defaults(login_host="127.0.0.1", login_port=5433, login_password="s3cret"), detail)
    assert isinstance(error, PostgresConnectionError)
    text = str(error)
    assert "HINT:" in text
    for word in words:
        assert word in text
    assert "s3cret" not in text


def test_missing_psycopg2_names_the_package_and_the_python(monkeypatch):
    # A None entry makes `import psycopg2` raise ImportError, as on a bare host.
    monkeypatch.setitem(sys.modules, "psycopg2", None)
    with pytest.raises(PostgresConnectionError) as caught:
        postgres.connect(_defaults())
    assert "psycopg2-binary" in str(caught.value)
    assert sys.executable in str(caught.value)


# ------------------------------------------------- docs match the specs


def _doc_options(text: str) -> dict:
    return yaml.safe_load(text)["options"]


def _check_doc_matches_spec(doc: dict, spec: dict) -> None:
    """The checks validate-modules makes: names, types, defaults, choices, aliases."""
    assert set(doc) == set(spec)
    for name, opts in spec.items():
        entry = doc[name]
        assert entry.get("type", "str") == opts.get("type", "str"), name
        assert entry.get("default") == opts.get("default"), name
        assert entry.get("choices") == opts.get("choices"), name
        assert entry.get("aliases") == opts.get("aliases"), name
        assert entry.get("required", False) == opts.get("required", False), name
        assert entry.get("description"), name


def test_doc_fragment_matches_connection_spec():
    _check_doc_matches_spec(_doc_options(ModuleDocFragment.DOCUMENTATION), connection_argument_spec())
    assert "psycopg2" in " ".join(yaml.safe_load(ModuleDocFragment.DOCUMENTATION)["requirements"])


def test_module_documentation_matches_its_spec():
    doc = yaml.safe_load(wal_archiving.DOCUMENTATION)
    options = dict(_doc_options(ModuleDocFragment.DOCUMENTATION))
    options.update(doc["options"])
    _check_doc_matches_spec(options, wal_archiving.argument_spec())
    assert "restorekeeper.postgresql.postgres" in doc["extends_documentation_fragment"]
    assert doc["attributes"]["check_mode"]["support"] == "full"
    assert doc["attributes"]["diff_mode"]["support"] == "full"
    returned = yaml.safe_load(wal_archiving.RETURN)
    for key in ("changed", "restart_required", "reloaded", "queries", "settings", "diff", "archiver"):
        assert key in returned
    yaml.safe_load(wal_archiving.EXAMPLES)


# ---------------------------------------------------- module helpers


def _row(setting, context="sighup", source="default", pending=False, boot=""):
    return {"setting": setting, "context": context, "source": source, "pending_restart": pending,
            "boot_val": boot, "unit": None, "reset_val": setting}


def test_configured_value_prefers_pending_file_entry():
    live = {
        "archive_mode": _row("off", "postmaster", "default", pending=True, boot="off"),
        "archive_timeout": _row("60", source="configuration file", boot="0"),
        "wal_level": _row("replica", "postmaster", boot="replica"),
        "archive_command": _row("bad", source="configuration file"),
    }
    files = {
        "archive_mode": {"setting": "on", "error": "setting could not be applied"},
        "archive_timeout": {"setting": "1min", "error": None},
        # An invalid entry is ignored by the server: the running value counts.
        "archive_command": {"setting": "x", "error": "invalid value"},
    }
    configured = serversettings.configured_values(live, files)
    assert configured == {"archive_mode": "on", "archive_timeout": "1min", "wal_level": "replica",
                          "archive_command": "bad"}
    # Without pg_file_settings access the running values are all we know.
    assert serversettings.configured_values(live, None)["archive_mode"] == "off"


def _module_params(**overrides):
    params = {"state": "enabled", "archive_mode": "on", "allow_archive_mode_always": False,
              "archive_timeout": "60s", "wal_level": "replica", "summarize_wal": None,
              "tool_path": "/opt/rk/bin/restorekeeper", "config_path": "/etc/rk.conf"}
    params.update(overrides)
    return params


def test_desired_values_never_lower_logical():
    desired = serversettings.desired_values(_module_params(), {"wal_level": "logical"}, 180000)
    assert desired["wal_level"] == "logical"
    assert desired["archive_command"].endswith("wal-push --config /etc/rk.conf %p %f")
    assert desired["archive_timeout"] == "60s"


def test_desired_values_refusals():
    with pytest.raises(serversettings.Refusal, match="allow_archive_mode_always"):
        serversettings.desired_values(_module_params(archive_mode="always"), {}, 180000)
    assert serversettings.desired_values(
        _module_params(archive_mode="always", allow_archive_mode_always=True), {}, 180000
    )["archive_mode"] == "always"
    with pytest.raises(serversettings.Refusal, match="PostgreSQL 17 or later"):
        serversettings.desired_values(_module_params(summarize_wal=True), {}, 160004)
    with pytest.raises(serversettings.Refusal, match="archive_timeout"):
        serversettings.desired_values(_module_params(archive_timeout="soon"), {}, 180000)


def test_disabled_sets_archive_mode_off_and_empties_the_command():
    assert serversettings.desired_values(_module_params(state="disabled"), {}, 180000) == {
        "archive_mode": "off", "archive_command": ""}
