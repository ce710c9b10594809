#!/usr/bin/python
# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Ansible front end of `restorekeeper drill`: restore into a scratch cluster, verify, measure RTO and RPO."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: restore_drill
short_description: Prove a PostgreSQL backup restores - verify the restored data and measure RTO and RPO
version_added: 0.1.0
description:
  - Restores a backup of the cluster named by O(config_path) plus its archived WAL into a scratch data
    directory on a free port of this host (never the live cluster's directory), starts it, verifies it and
    removes it again, on success and on failure alike (unless O(keep=true)).
  - In O(mode=restore-point) (the default) the drill first takes a snapshot of the source (row counts and
    checksums in one C(REPEATABLE READ) transaction per database), creates a restore point on the source,
    switches WAL so the restore point is archived, and recovers exactly to it, so the restored data can be
    compared with the snapshot. In O(mode=latest) it recovers everything archived and leaves the source's
    WAL alone.
  - Each check is reported separately - consistency and connections, C(pg_amcheck) over every database,
    per-table row counts against the source (tables written during the snapshot are reported with both
    figures, as a warning; with O(verify=sample) the catalog, table sizes and sampled counts instead, see
    O(verify)), content checksums of O(checksum_tables), the spot checks of O(queries), and the
    databases present with their sizes.
  - Measures the RTO (wall time from the start of the restore until the restored server passed
    verification, with each phase's share) and the RPO (what would have been lost had the source died when
    the drill began), and fails the drill when they exceed O(rto_target) or O(rpo_target), saying by how much.
  - Writes a JSON report, a JUnit XML report, a self-contained HTML page (phases chart, history of past
    drills, runbook) and appends to C(history.jsonl) in O(report_dir).
  - Must run on the database host as the PostgreSQL server's OS user (C(become_user=postgres)) - the
    scratch cluster is a PostgreSQL server, which refuses to run as root.
options:
  config_path:
    description:
      - The restorekeeper configuration file (repository, cluster name and how to reach the server in its
        C([postgres]) section), as written by role C(restorekeeper.postgresql.archiving).
    type: path
    default: /etc/restorekeeper/main.conf
  tool_path:
    description:
      - The on-host C(restorekeeper) launcher. The scratch cluster's C(restore_command) runs
        C(<tool_path> wal-fetch), so it must exist and be executable by the server's OS user.
    type: path
    default: /opt/restorekeeper/bin/restorekeeper
  mode:
    description:
      - V(restore-point) creates a restore point on the source (and switches WAL) and recovers to it, so
        the restored data is compared with a snapshot of the source.
      - V(latest) recovers everything archived without touching the source's WAL; row counts are then
        compared with the source as it is during the drill, so busy tables may be reported as changing.
      - V(target) recovers to O(target_time), O(target_xid), O(target_lsn) or O(target_name) (exactly one);
        row counts, checksums and RPO are then not compared with the source, which has moved on since;
        spot-check O(queries) verify the data at that moment.
    type: str
    choices: [restore-point, latest, target]
    default: restore-point
  target_time:
    description: With O(mode=target), the moment to recover to, with a time zone (V(2026-06-14 14:31:59+00)).
    type: str
  target_xid:
    description: With O(mode=target), the transaction to recover to.
    type: str
  target_lsn:
    description: With O(mode=target), the LSN to recover to.
    type: str
  target_name:
    description: With O(mode=target), an existing restore point to recover to.
    type: str
  backup_label:
    description:
      - Restore this backup (as listed by M(restorekeeper.postgresql.backup_info)). Default is the backup
        the target needs, normally the newest.
    type: str
  scratch_dir:
    description:
      - Directory the scratch cluster is created in (a fresh sub-directory is made and removed). It must
        have room for a full restore and be writable by the server's OS user. Default is the system
        temporary directory.
    type: path
  keep:
    description:
      - Leave the scratch cluster running after the drill for inspection; the report's C(kept) tells its
        data directory, port and socket directory. You remove it yourself.
    type: bool
    default: false
  rto_target:
    description:
      - Declared recovery time objective. The drill fails when the restore and its verification take
        longer, and says by how much.
      - Seconds as a number, or a string with a unit, for example V(900), V(15min), V(1h), V(500ms).
    type: raw
  rpo_target:
    description:
      - Declared recovery point objective. The drill fails when more than this would have been lost had
        the source died when the drill began.
      - Seconds as a number, or a string with a unit, for example V(60), V(5min), V(500ms).
    type: raw
  checksum_tables:
    description:
      - Tables whose full content is compared (md5 of every row, in order) between the source's snapshot
        and the restore, each written as V(database:schema.table).
    type: list
    elements: str
    default: []
  queries:
    description:
      - Spot checks run on the restored server. Each result (the first column of every row, as text) must
        equal O(queries[].expected); a query that differs or fails fails the drill, naming both results.
    type: list
    elements: dict
    default: []
    suboptions:
      name:
        description: Name of the check in the report.
        type: str
        required: true
      database:
        description: Database the query runs in.
        type: str
        default: postgres
      sql:
        description: The query.
        type: str
        required: true
      expected:
        description:
          - Expected result - one value (a string or number, compared as text) for a one-row result, or a
            list of values, one per row.
        type: raw
        required: true
  amcheck:
    description:
      - Run C(pg_amcheck --all) (heap and B-tree) on the restored server. It installs the C(amcheck)
        extension in the scratch cluster only.
    type: bool
    default: true
  row_counts:
    description:
      - Compare the row count of every table with the source's (with O(verify=sample), the counts it takes).
    type: bool
    default: true
  verify:
    description:
      - How the restored data is compared with the source, and so the load the drill puts on the source.
      - V(exact) counts the rows of every table in one C(REPEATABLE READ) transaction per database - a full
        scan of the source, holding one snapshot per database for as long as it takes.
      - V(sample) compares the catalog (every table, view, sequence and index, of the same kind) and each
        table's size (C(pg_relation_size), within 25% or 1 MiB) with the source, counts exactly the tables
        up to O(exact_count_max_size) and those in O(count_tables), and counts the others by a
        C(TABLESAMPLE SYSTEM) sample of O(sample_percent) with the same seed on both sides (a table
        physically equal gives the same count); one autocommit statement at a time, so no snapshot spans
        two tables.
      - V(catalog) compares the catalog and table sizes only.
      - V(auto) is V(exact) for a source smaller than O(exact_verify_max_size) (the sum of its databases'
        sizes), else V(sample).
      - The result's RV(verification) says which ran and the load it put on the source.
    type: str
    choices: [auto, exact, sample, catalog]
    default: auto
  sample_percent:
    description:
      - With O(verify=sample), the percent of each large table's pages read (C(TABLESAMPLE SYSTEM)), above 0
        and at most 100.
    type: float
    default: 1.0
  count_tables:
    description:
      - With O(verify=sample) (or V(auto) choosing it), tables counted exactly whatever their size, each
        written as V(database:schema.table). A name that is not a permanent table of the source is refused
        before anything is done.
    type: list
    elements: str
    default: []
  exact_verify_max_size:
    description:
      - With O(verify=auto), sources smaller than this are verified with V(exact), larger ones with V(sample).
      - Bytes as a number, or a size such as V(10GiB), V(500MiB).
    type: raw
    default: 10GiB
  exact_count_max_size:
    description:
      - With O(verify=sample), tables up to this size are counted exactly, larger ones by sample.
      - Bytes as a number, or a size such as V(16MiB).
    type: raw
    default: 16MiB
  report_dir:
    description:
      - Directory of the reports and of the history of drills of this cluster. Made when missing (mode
        0750); must be writable by the server's OS user.
      - Default is C(/var/lib/restorekeeper/drills/<cluster>), with the cluster name from O(config_path).
    type: path
  fail_on_drill_failure:
    description:
      - V(true) fails the task when the drill fails, with every failure reason in C(msg) (the report is
        returned and written all the same).
      - V(false) returns RV(result=fail) with the reasons in RV(failure_reasons) and does not fail the task,
        for a playbook that collects the results of many hosts.
    type: bool
    default: true
  lock_file:
    description:
      - Take an exclusive lock on this file for the duration of the drill, so that drills on one host
        never overlap (role C(restorekeeper.postgresql.drill) locks the same file with C(flock) in its
        scheduled drills). Empty means no lock.
    type: path
  lock_timeout:
    description:
      - Seconds to wait for O(lock_file) when another drill holds it; the task then fails without having
        changed anything.
    type: int
    default: 3600
  wait_timeout:
    description:
      - Seconds to wait for the scratch cluster to reach its recovery target.
    type: int
    default: 3600
  archive_wait_timeout:
    description:
      - Seconds to wait, in O(mode=restore-point), until the WAL segment holding the drill's restore point
        is archived.
    type: int
    default: 120
  source:
    description:
      - Drill from this copy (a C([copy NAME]) of the configuration) instead of the repository, proving that copy
        restores on its own. The backup and the WAL are read from that copy only.
      - In O(mode=restore-point) the segment holding the restore point must reach the copy (the shipper ships it,
        C(restorekeeper ship)) within O(archive_wait_timeout); O(mode=latest) drills the copy as it stands.
      - Not given, the repository is read.
    type: str
  login_user:
    description:
      - PostgreSQL role the drill connects to the source as (snapshot, restore point, WAL switch); a superuser,
        or a role allowed to run C(pg_create_restore_point) and C(pg_switch_wal) and to read every table counted.
      - When not given, C(user) of the configuration file's C([postgres]) section, then libpq's default
        (E(PGUSER), else the OS user name).
      - The restored scratch cluster is always reached over its own Unix socket as the configuration's user.
    default: null
  login_port:
    description:
      - TCP port of the source server, which is also the number in the Unix socket file name.
      - When not given, C(port) of the configuration file's C([postgres]) section, then E(PGPORT), then 5432.
    default: null
  login_db:
    description:
      - Database of the source for the drill's first queries (each database is then visited by name).
      - When not given, C(database) of the configuration file's C([postgres]) section, then libpq's default.
    default: null
  login_host:
    description:
      - Host name or IP address of the source server. When set it wins over O(login_unix_socket).
      - When both are empty, C(host) of the configuration file's C([postgres]) section, then libpq's default.
  login_password:
    description:
      - Password of O(login_user). Handed to the PostgreSQL programs in a temporary pgpass file (mode 0600,
        removed afterwards), never on a command line or in the environment.
      - When empty, the configuration file's C(password_file) (if any), E(PGPASSFILE) or C(~/.pgpass) apply.
attributes:
  check_mode:
    support: full
    details:
      - Changes nothing - no restore point, no WAL switch, no scratch cluster, no report. Reads the
        repository to choose the backup a drill would restore (proving its WAL readable) and asks the source
        whether it can take a restore point, then returns RV(planned=true), the backup and chain, and the
        steps it would take in RV(actions), with C(changed=true).
  diff_mode:
    support: none
  platform:
    platforms: posix
extends_documentation_fragment:
  - restorekeeper.postgresql.postgres
  - ansible.builtin.action_common_attributes
notes:
  - A real drill always reports C(changed=true) - it creates a restore point and switches WAL on the
    source in O(mode=restore-point), and writes reports in either mode.
  - The drill connects to the source as the connection options say, each option not given as the
    configuration's C([postgres]) section says (peer authentication over the socket by default). It runs the
    PostgreSQL client programs; it does not need psycopg2, whatever the shared connection options say.
  - The scratch cluster needs disk space for a full restore in O(scratch_dir), and CPU and I/O while it
    runs. Role C(restorekeeper.postgresql.drill) schedules drills at low CPU and I/O priority and one at
    a time per host.
seealso:
  - module: restorekeeper.postgresql.restore
  - module: restorekeeper.postgresql.backup_info
  - module: restorekeeper.postgresql.drill_summary
author:
  - Restorekeeper maintainers (@restorekeeper)
"""

EXAMPLES = r"""
- name: Restore drill with targets and spot checks
  become: true
  become_user: postgres
  restorekeeper.postgresql.restore_drill:
    config_path: /etc/restorekeeper/main.conf
    rto_target: 15min
    rpo_target: 5min
    checksum_tables:
      - shop:public.orders
    queries:
      - name: customers exist
        database: shop
        sql: SELECT count(*) > 0 FROM customers
        expected: "t"
      - name: currencies
        database: shop
        sql: SELECT code FROM currencies ORDER BY code
        expected: [CHF, EUR, USD]
  register: drill

- name: Show the measured RTO and RPO
  ansible.builtin.debug:
    msg: "{{ drill.msg }}; {{ drill.rto_breakdown.summary }}; report {{ drill.report_files.html }}"

- name: Drill a large source without scanning it, counting two tables exactly
  become: true
  become_user: postgres
  restorekeeper.postgresql.restore_drill:
    config_path: /etc/restorekeeper/main.conf
    verify: sample
    sample_percent: 0.5
    count_tables:
      - shop:public.orders
      - shop:public.payments

- name: Collect a failed drill instead of failing the task
  become: true
  become_user: postgres
  restorekeeper.postgresql.restore_drill:
    config_path: /etc/restorekeeper/main.conf
    fail_on_drill_failure: false
  register: drill

- name: What would a drill restore (changes nothing)
  become: true
  become_user: postgres
  restorekeeper.postgresql.restore_drill:
    config_path: /etc/restorekeeper/main.conf
  check_mode: true
"""

RETURN = r"""
changed:
  description: Always true - a drill creates a restore point on the source and writes reports (check mode says it would).
  returned: always
  type: bool
  sample: true
planned:
  description: True in check mode, where nothing ran and RV(actions) lists what a drill would do.
  returned: always
  type: bool
  sample: false
actions:
  description: What a drill would do, step by step.
  returned: check mode
  type: list
  elements: str
  sample:
    - "read the source for verification exact (auto: the source's databases hold 1.2 GiB, below exact_verify_max_size 10.0 GiB)"
    - create restore point restorekeeper-drill-<time> on the source and switch WAL
    - restore backup 20260614T020000Z into a scratch cluster under /tmp
reason:
  description: Why RV(backup) is the backup a drill would restore.
  returned: check mode
  type: str
  sample: the newest restorable backup
result:
  description: V(pass) or V(fail) (V(planned) in check mode).
  returned: always
  type: str
  sample: pass
failure_reasons:
  description: One line per failed check, the check's name and what went wrong.
  returned: always
  type: list
  elements: str
  sample: ["query: row count: returned ['500'], expected ['499']"]
cluster:
  description: Cluster name from the configuration.
  returned: always
  type: str
  sample: main
mode:
  description: The drill's mode.
  returned: always
  type: str
  sample: restore-point
backup:
  description: Label of the backup restored (the one that would be, in check mode).
  returned: always
  type: str
  sample: 20260614T020000Z
chain:
  description: Labels of the backups combined, full backup first.
  returned: always
  type: list
  elements: str
  sample: [20260614T020000Z]
restore_point:
  description: Name of the restore point the drill created on the source (null in O(mode=latest)).
  returned: when the drill ran (also when it failed)
  type: str
  sample: restorekeeper-drill-20260614T031500Z
rto_seconds:
  description: Measured RTO in seconds; null when the restore failed or did not pass verification (RV(rto_breakdown) says which).
  returned: when the drill ran (also when it failed)
  type: float
  sample: 42.7
rpo_seconds:
  description: Measured RPO in seconds; null when it could not be measured (see C(rpo_basis)).
  returned: when the drill ran (also when it failed)
  type: float
  sample: 3.2
rto_target_seconds:
  description: O(rto_target) in seconds, or null.
  returned: when the drill ran (also when it failed)
  type: float
  sample: 900.0
rpo_target_seconds:
  description: O(rpo_target) in seconds, or null.
  returned: when the drill ran (also when it failed)
  type: float
  sample: 300.0
rpo_basis:
  description: The two commit times the RPO is the difference of, and how each was found.
  returned: when the drill ran (also when it failed)
  type: dict
  sample:
    source_last_commit: "2026-06-14T03:15:00.120000+00:00"
    source_last_commit_method: pg_last_committed_xact()
    recovered_last_commit: "2026-06-14T03:14:57.000000+00:00"
    recovered_last_commit_method: newest commit in the archive when the drill began
phases:
  description:
    - Seconds spent in each phase of the restore (fetch, extract, combine, start, replay, stage, verify).
    - Some overlap (fetch is timed inside extract, stage alongside extract and replay), so they do not add up to
      the RTO; RV(rto_breakdown) says how they do.
  returned: when the drill ran (also when it failed)
  type: dict
  sample: {fetch: 3.0, extract: 12.1, start: 1.2, replay: 8.4, verify: 20.3}
rto_breakdown:
  description:
    - How the phases add up to the RTO. C(critical_path) lists the phases that ran one after another, in order,
      each with C(seconds), C(shown_seconds) (tenths that add up to the RTO shown) and C(description), ending with
      C(other) (what no phase timer covers). C(overlapping) lists phases timed while those ran (C(overlaps) says
      where), C(excluded) what came before the RTO clock started (C(preparation)).
    - C(measured) is false when there is no RTO; C(not_measured) then says why (for example V(the restore failed)).
    - C(summary) is the same as one line, as the report and the command print it.
  returned: when the drill ran (also when it failed)
  type: dict
  sample:
    rto_seconds: 42.7
    measured: true
    not_measured: null
    critical_path_seconds: 42.7
    critical_path:
      - {phase: extract, seconds: 12.1, shown_seconds: 12.1, description: fetching and unpacking the backup}
      - {phase: start, seconds: 1.2, shown_seconds: 1.2, description: starting the restored server}
      - {phase: replay, seconds: 8.4, shown_seconds: 8.4, description: replaying archived WAL up to the target}
      - {phase: verify, seconds: 20.3, shown_seconds: 20.3, description: checking the restored data}
      - {phase: other, seconds: 0.7, shown_seconds: 0.7, description: not timed on its own}
    overlapping:
      - {phase: fetch, seconds: 3.0, overlaps: inside extract, description: waiting on the repository}
    excluded:
      - {phase: preparation, seconds: 3.4, when: before the RTO clock started, description: snapshot of the source}
    summary: "extract 12.1 s + start 1.2 s + replay 8.4 s + verify 20.3 s + other 0.7 s = RTO 42.7 s; not part of the
      RTO: fetch 3.0 s (inside extract: waiting on the repository while extracting); preparation 3.4 s (...)"
preparation_seconds:
  description: Seconds spent on the snapshot of the source and archiving the restore point (not part of the RTO).
  returned: when the drill ran (also when it failed)
  type: float
  sample: 3.4
checks:
  description: Every check with its status (V(pass), V(fail), V(warn), V(skip)), a readable detail and its data.
  returned: when the drill ran (also when it failed)
  type: list
  elements: dict
  sample:
    - {name: pg_amcheck (heap and B-tree, every database), status: pass, detail: no corruption found, data: null}
report_files:
  description: Paths of the reports written on the host (C(json), C(xml), C(html), C(history)).
  returned: when the drill ran (also when it failed)
  type: dict
  sample:
    json: /var/lib/restorekeeper/drills/main/drill-20260614T031500.json
    html: /var/lib/restorekeeper/drills/main/drill-20260614T031500.html
    xml: /var/lib/restorekeeper/drills/main/drill-20260614T031500.xml
    history: /var/lib/restorekeeper/drills/main/history.jsonl
report_dir:
  description: Directory the reports are (or in check mode would be) written to.
  returned: always
  type: str
  sample: /var/lib/restorekeeper/drills/main
runbook:
  description: The steps a person would follow to restore this cluster by hand.
  returned: when the drill ran (also when it failed)
  type: list
  elements: str
kept:
  description: Data directory, port and socket directory of the scratch cluster left running with O(keep=true), else null.
  returned: when the drill ran (also when it failed)
  type: dict
started_at:
  description: When the drill began (UTC, ISO 8601).
  returned: when the drill ran (also when it failed)
  type: str
finished_at:
  description: When the drill ended (UTC, ISO 8601).
  returned: when the drill ran (also when it failed)
  type: str
source:
  description: The copy the drill restored from, or an empty string for the repository itself.
  returned: when the drill ran (also when it failed)
  type: str
verification:
  description:
    - What the drill compared with the source and the load that put on the source.
    - C(requested) and C(mode) are the O(verify) asked for and the one that ran (V(none) when restored to a
      chosen target), C(reason) why; C(sample_percent) and C(sample_seed) (verify sample), the tables counted
      exactly and sampled, C(relations_compared) (verify sample and catalog).
    - C(source_load) has C(statements) run on the source for verification, their C(seconds), C(bytes_read_estimate)
      (from relation sizes - the sampled share of each sampled table), C(longest_snapshot_seconds) and
      C(snapshot_scope) (one transaction per database, or one statement at a time, where the figure is an
      upper bound).
  returned: when the drill ran
  type: dict
  sample:
    requested: auto
    mode: sample
    reason: "auto: the source's 1.2 TiB is at least 10.0 GiB"
    sample_percent: 1.0
    sample_seed: 1804289383
    tables_counted_exactly: 212
    tables_sampled: 14
    relations_compared: 961
    source_load: {statements: 230, seconds: 41.7, bytes_read_estimate: 13190000000, longest_snapshot_seconds: 38.2,
                  snapshot_scope: "one autocommit statement at a time: no snapshot spans two tables"}
record:
  description:
    - Where the drill's summary record was kept in the cluster's home repository (C(<cluster>/drills/)).
    - The recovery-plan check and monitoring read these records on any host.
    - A repository that refuses the record does not fail the drill; its C(error) says why.
  returned: when the drill ran (also when it failed)
  type: dict
  sample: {key: main/drills/20260614T031500123456Z.json, stored: true, error: null}
"""

from typing import Any, Dict

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.restorekeeper.postgresql.plugins.module_utils.objectives.drillrun import DrillRun
from ansible_collections.restorekeeper.postgresql.plugins.module_utils.frontends.modulerun import config_needs, run_module
from ansible_collections.restorekeeper.postgresql.plugins.module_utils.pg.postgres import connection_options_spec


def argument_spec() -> Dict[str, Any]:
    spec = connection_options_spec()
    spec.update({
        "config_path": {"type": "path", "default": "/etc/restorekeeper/main.conf"},
        "tool_path": {"type": "path", "default": "/opt/restorekeeper/bin/restorekeeper"},
        "mode": {"type": "str", "choices": ["restore-point", "latest", "target"], "default": "restore-point"},
        "target_time": {"type": "str"},
        "target_xid": {"type": "str"},
        "target_lsn": {"type": "str"},
        "target_name": {"type": "str"},
        "backup_label": {"type": "str"},
        "scratch_dir": {"type": "path"},
        "keep": {"type": "bool", "default": False},
        "rto_target": {"type": "raw"},
        "rpo_target": {"type": "raw"},
        "checksum_tables": {"type": "list", "elements": "str", "default": []},
        "queries": {
            "type": "list",
            "elements": "dict",
            "default": [],
            "options": {
                "name": {"type": "str", "required": True},
                "database": {"type": "str", "default": "postgres"},
                "sql": {"type": "str", "required": True},
                "expected": {"type": "raw", "required": True},
            },
        },
        "amcheck": {"type": "bool", "default": True},
        "row_counts": {"type": "bool", "default": True},
        "verify": {"type": "str", "choices": ["auto", "exact", "sample", "catalog"], "default": "auto"},
        "sample_percent": {"type": "float", "default": 1.0},
        "count_tables": {"type": "list", "elements": "str", "default": []},
        "exact_verify_max_size": {"type": "raw", "default": "10GiB"},
        "exact_count_max_size": {"type": "raw", "default": "16MiB"},
        "report_dir": {"type": "path"},
        "fail_on_drill_failure": {"type": "bool", "default": True},
        "lock_file": {"type": "path"},
        "lock_timeout": {"type": "int", "default": 3600},
        "wait_timeout": {"type": "int", "default": 3600},
        "archive_wait_timeout": {"type": "int", "default": 120},
        "source": {"type": "str"},
    })
    return spec


def main() -> None:
    module = AnsibleModule(argument_spec=argument_spec(), supports_check_mode=True,
                           mutually_exclusive=[["target_time", "target_xid", "target_lsn", "target_name"]])
    run = DrillRun(module.params, module.check_mode, module.warn)
    # Before the drill: a refusal, nothing done. During it: the source may
    # already carry the drill's restore point and a switched WAL segment.
    result = run_module(module, "restore_drill", run, changed=run.changed, needs=config_needs(module.params["config_path"]))
    if run.failed(result):
        module.fail_json(**result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
