# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Shared documentation of the PostgreSQL connection options.

Kept in step with ``connection_argument_spec()`` in
plugins/module_utils/pg/postgres.py: same names, types, defaults, aliases and
choices (ansible-test validate-modules compares them).
"""

from __future__ import annotations


class ModuleDocFragment:
    DOCUMENTATION = r"""
options:
  login_user:
    description:
      - PostgreSQL role the module logs in as.
      - Changing server settings needs a superuser (or a role granted C(ALTER SYSTEM) on the parameters).
    type: str
    default: postgres
    aliases: [login]
  login_password:
    description:
      - Password of O(login_user).
      - Passed to libpq as a connection parameter only; it never appears in the module's
        output, in the returned queries or in a log line written by the module.
      - Leave empty for peer or trust authentication over the Unix socket.
    type: str
    default: ''
  login_host:
    description:
      - Host name or IP address of the server.
      - When set it wins over O(login_unix_socket).
      - When both are empty, libpq's default applies (its compiled-in Unix socket directory, or E(PGHOST)).
    type: str
    default: ''
  login_port:
    description:
      - TCP port of the server, which is also the number in the Unix socket file name.
      - When not given, the E(PGPORT) environment variable on the managed host is used, then 5432.
    type: int
    default: 5432
  login_unix_socket:
    description:
      - Directory holding the server's Unix socket, for example V(/var/run/postgresql).
      - Used only when O(login_host) is empty.
    type: str
    default: ''
  login_db:
    description:
      - Database to connect to. The settings the modules manage are cluster-wide, so any database works.
    type: str
    default: postgres
    aliases: [db]
  ssl_mode:
    description:
      - Whether and how strictly TLS is negotiated with the server, as libpq's C(sslmode).
      - See U(https://www.postgresql.org/docs/current/libpq-ssl.html#LIBPQ-SSL-PROTECTION).
    type: str
    default: prefer
    choices: [disable, allow, prefer, require, verify-ca, verify-full]
  ca_cert:
    description:
      - File with the certificate authorities that sign the server's certificate (libpq's C(sslrootcert)).
      - Needed with O(ssl_mode=verify-ca) or O(ssl_mode=verify-full) unless the libpq default file exists.
    type: str
    aliases: [ssl_rootcert]
  connect_timeout:
    description:
      - Seconds to wait for the connection to be established before failing.
    type: int
    default: 10
notes:
  - The module connects with psycopg2 from the Python interpreter Ansible uses on the managed host.
  - Errors name the problem and its fix; for example an unreachable server names the host, port or socket
    tried, and a refused login says which credentials were refused without showing the password.
requirements:
  - psycopg2 (for example the psycopg2-binary package) in the Python that runs the module on the managed host
"""
