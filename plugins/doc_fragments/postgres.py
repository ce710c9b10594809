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
    aliases: [host]
  login_port:
    description:
      - TCP port of the server, which is also the number in the Unix socket file name.
      - When not given, the E(PGPORT) environment variable on the managed host is used, then 5432.
    type: int
    default: 5432
    aliases: [port]
  login_unix_socket:
    description:
      - Directory holding the server's Unix socket, for example V(/var/run/postgresql).
      - Used only when O(login_host) is empty.
    type: str
    default: ''
    aliases: [unix_socket]
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
      - Special value V(system) (libpq 16 and later) uses the system's trusted certificate authorities.
      - The file must exist on the managed host, else the module fails before connecting.
    type: str
    aliases: [ssl_rootcert]
  ssl_cert:
    description:
      - File with the client certificate presented to the server (libpq's C(sslcert)), for C(cert)
        authentication in C(pg_hba.conf) or C(clientcert=verify-full).
      - The file must exist on the managed host, else the module fails before connecting (libpq itself would
        silently go on without it).
    type: path
  ssl_key:
    description:
      - File with the private key of O(ssl_cert) (libpq's C(sslkey)). libpq refuses a key file readable by
        group or others, unless it belongs to root and is at most group-readable.
      - Keys protected by a passphrase are not supported (a passphrase in the task would not be hidden).
    type: path
  connect_params:
    description:
      - Further libpq connection keywords as a dictionary, for example C(application_name), C(sslcrl),
        C(target_session_attrs), C(keepalives_idle) or C(options).
      - Keywords the options above set (C(host), C(port), C(user), C(password), C(dbname), C(sslmode),
        C(sslrootcert), C(sslcert), C(sslkey), C(connect_timeout)) are refused with the option to use
        instead; so are C(sslpassword) (a secret here would not be hidden), C(passfile) and C(service).
      - Values are strings, numbers or booleans (V(true) becomes V(1)). C(application_name) replaces the
        default V(restorekeeper).
      - Modules that run the PostgreSQL client programs hand them these keywords in a temporary service file
        (mode 0600, removed afterwards); a keyword the programs' libpq does not know fails with a syntax error
        naming that file.
    type: dict
    default: {}
  connect_timeout:
    description:
      - Seconds to wait for the connection to be established before failing.
    type: int
    default: 10
notes:
  - The connection options are shared by every module that connects to PostgreSQL, with the aliases of
    community.postgresql (V(host), V(port), V(unix_socket), V(db), V(login), V(ssl_rootcert)); set them once for
    all those modules with C(module_defaults) and the action group C(group/restorekeeper.postgresql.postgresql).
  - The module connects with psycopg2 from the Python interpreter Ansible uses on the managed host.
  - Errors name the problem and its fix; for example an unreachable server names the host, port or socket
    tried, and a refused login says which credentials were refused without showing the password.
requirements:
  - psycopg2 (for example the psycopg2-binary package) in the Python that runs the module on the managed host
"""
