#!/usr/bin/python
# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Read-only view of the continuous WAL stream of a cluster (restorekeeper stream run)."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: wal_stream_info
short_description: Report the continuous WAL stream of a cluster - lag, synchronous state, age of its status
version_added: 0.1.0
description:
  - Reads the status that C(restorekeeper stream run) (role M(restorekeeper.postgresql.walstream)) writes into the
    repository every C(status_interval) seconds, C(<cluster>/stream/status.json), and reports it with its age.
  - Needs no connection to PostgreSQL; any host with the configuration file and access to the repository (or one of
    its copies, O(source)) can run it.
  - Never changes anything; always reports C(changed=false).
options:
  config_path:
    description: Path of the restorekeeper configuration file.
    type: path
    default: /etc/restorekeeper/main.conf
  source:
    description: Read the status from this copy (C([copy NAME]) of the configuration) instead of the repository.
    type: str
  stale_after:
    description:
      - Seconds after which the status counts as stale (RV(stale)), meaning the stream stopped reporting.
      - Default is three times the stream's own C(status_interval).
    type: float
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
attributes:
  check_mode:
    support: full
    details: The module never changes anything, so check mode returns the same report.
  diff_mode:
    support: none
  platform:
    platforms: posix
notes:
  - Run it as a user that can read the configuration file and the repository (the server's OS user, for example).
seealso:
  - module: restorekeeper.postgresql.backup_info
author:
  - Restorekeeper maintainers (@restorekeeper)
"""

EXAMPLES = r"""
- name: Read the stream status
  become: true
  become_user: postgres
  restorekeeper.postgresql.wal_stream_info:
    config_path: /etc/restorekeeper/main.conf
  register: stream

- name: RPO zero needs a live, synchronous stream
  ansible.builtin.assert:
    that:
      - stream.found
      - not stream.stale
      - stream.state == 'streaming'
      - stream.synchronous
    fail_msg: "stream {{ stream.state }}, synchronous {{ stream.synchronous }}, status {{ stream.age_seconds }} s old"
"""

RETURN = r"""
changed:
  description: Always false.
  returned: always
  type: bool
  sample: false
found:
  description: Whether a stream ever reported for this cluster. When false, every other value is null.
  returned: always
  type: bool
  sample: true
age_seconds:
  description: Seconds since the stream wrote its status.
  returned: always
  type: float
  sample: 4.2
stale:
  description: Whether RV(age_seconds) exceeds O(stale_after); a stale status means the stream is not running.
  returned: always
  type: bool
  sample: false
state:
  description: C(streaming) when pg_receivewal streams; otherwise what it does (C(connecting), C(restarting),
    C(catchup), C(conflict), C(stopped)).
  returned: always
  type: str
  sample: streaming
synchronous:
  description: Whether the primary treats the stream as a synchronous standby right now (C(sync_state) sync or quorum).
  returned: always
  type: bool
  sample: true
lag_bytes:
  description: Bytes of WAL the primary wrote that the stream has not flushed yet; null when unknown.
  returned: always
  type: int
  sample: 0
lag_seconds:
  description: The primary's C(flush_lag) of the stream in seconds; 0 when caught up; null when unknown.
  returned: always
  type: float
  sample: 0.0
slot:
  description: The replication slot the stream uses.
  returned: always
  type: str
  sample: restorekeeper_main
status:
  description:
    - The whole status as written, with at least C(updated_at), C(synchronous), C(lag_bytes), C(lag_seconds), C(slot)
      and C(state), plus C(application_name), C(synchronous_configured), C(sync_state), C(received_lsn),
      C(flushed_lsn), C(primary_lsn), C(partial_segment), C(partial_uploaded_lsn), C(partial_uploaded_at),
      C(last_pushed), C(pushed_count), C(restarts), C(last_error), C(primary_error), C(host), C(pid),
      C(status_interval). Null when RV(found) is false.
  returned: always
  type: dict
  sample:
    updated_at: "2026-11-21T20:14:03.120031Z"
    state: streaming
    synchronous: true
    synchronous_configured: true
    sync_state: sync
    slot: restorekeeper_main
    application_name: restorekeeper_main
    lag_bytes: 0
    lag_seconds: 0.0
    received_lsn: 0/5A3B2C8
    flushed_lsn: 0/5A3B2C8
    primary_lsn: 0/5A3B2C8
"""

from typing import Any, Dict

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.restorekeeper.postgresql.plugins.module_utils.config.config import DEFAULT_PATH, Config
from ansible_collections.restorekeeper.postgresql.plugins.module_utils.frontends.modulerun import config_needs, run_module
from ansible_collections.restorekeeper.postgresql.plugins.module_utils.repo.repository import open_repository_storage
from ansible_collections.restorekeeper.postgresql.plugins.module_utils.archive.walstream import (
    load_stream_status,
    status_age_seconds,
)


def argument_spec() -> Dict[str, Any]:
    return dict(
        config_path=dict(type="path", default=DEFAULT_PATH),
        source=dict(type="str"),
        stale_after=dict(type="float"),
    )


def run(params: Dict[str, Any]) -> Dict[str, Any]:
    config = Config.load(params["config_path"]).for_source(params["source"] or "")
    status = load_stream_status(open_repository_storage(config.repository), config.cluster)
    result: Dict[str, Any] = dict(changed=False, found=status is not None, status=status, age_seconds=None,
                                  stale=True, state=None, synchronous=False, lag_bytes=None, lag_seconds=None,
                                  slot=None)
    if status is None:
        return result
    age = status_age_seconds(status)
    limit = params["stale_after"] or 3.0 * float(status.get("status_interval") or config.stream.status_interval)
    result.update(age_seconds=age, stale=age is None or age > limit, state=status.get("state"),
                  synchronous=bool(status.get("synchronous")), lag_bytes=status.get("lag_bytes"),
                  lag_seconds=status.get("lag_seconds"), slot=status.get("slot"))
    return result


def main() -> None:
    module = AnsibleModule(argument_spec=argument_spec(), supports_check_mode=True)
    module.exit_json(**run_module(module, "wal_stream_info", lambda: run(module.params),
                                  needs=config_needs(module.params["config_path"])))


if __name__ == "__main__":
    main()
