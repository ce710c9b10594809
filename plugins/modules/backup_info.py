#!/usr/bin/python
# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Read-only view of what a restorekeeper repository can restore, and how far archiving lags."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: backup_info
short_description: Report restorekeeper backups, WAL archive ranges, gaps, recoverable windows and archive lag
version_added: 0.1.0
description:
  - Reads the restorekeeper repository named by the configuration file and reports its complete backups and
    their chains, interrupted (never restorable) backup sets, the archived WAL per timeline, gaps in the WAL
    sequence, and the recoverable windows (earliest and latest point in time a restore can reach).
  - Everything is derived from the repository's own objects, so the report cannot drift from what is stored.
  - With O(server_status=true) it also asks the running server how far archiving lags behind
    (RV(archive)), including the RPO exposure right now.
  - Never changes anything; always reports C(changed=false).
  - Lists are lists of dictionaries, so C(community.general.json_query) or C(selectattr) can slice them.
  - When the configuration declares copies, also reports each copy's holdings and lag (RV(copies)), which copies
    hold each backup (RV(backups[].held_by), RV(backups[].restorable_from)) and each timeline's WAL
    (RV(wal.timelines[].held_by)). A copy that cannot be reached is reported, not a failure.
options:
  config_path:
    description:
      - Path of the restorekeeper configuration file on the database host (or any host that mounts the
        repository and has the file).
    type: path
    default: /etc/restorekeeper/main.conf
  server_status:
    description:
      - Also report the server's archiving state (RV(archive)). Needs the server to be reachable.
      - V(false) reads the repository only; the server may then be stopped or absent.
    type: bool
    default: true
  ignore_unreachable_server:
    description:
      - With O(server_status=true), report RV(archive) as null with a warning, instead of failing, when the
        server does not answer (stopped, or not reachable at the configured address). Other connection
        errors (a refused login, for example) still fail.
    type: bool
    default: false
  targets:
    description:
      - Check whether the current layout provably meets these recovery targets, and return the verdict with
        one finding per piece of evidence in RV(recovery_plan) (the same check as C(restorekeeper plan)).
      - Unusable targets (an unparsable duration, an RTO below a minute, no target at all) fail the module
        before anything is read.
      - With O(server_status=false) the server's checks (C(archive_timeout), archiver health) are unproven.
    type: dict
    suboptions:
      tier:
        description:
          - V(critical) (RPO 0, RTO 15min), V(important) (RPO 5min, RTO 1h) or V(standard) (RPO 24h, RTO 4h);
            supplies the targets not given explicitly.
        type: str
        choices: [critical, important, standard]
      rpo_target:
        description:
          - Recovery point objective, a duration such as V(5min) or V(0). Below 60 seconds only WAL streaming
            (role walstream) can meet it; RPO 0 only synchronous streaming.
        type: str
      rto_target:
        description:
          - Recovery time objective, a duration such as V(1h); at least one minute.
        type: str
      backup_interval:
        description:
          - Interval of the backup schedule, a duration such as V(12h). Default is the longest interval observed
            between the last backups.
        type: str
      require_offsite:
        description:
          - The plan requires an offsite copy whose lag stays within the RPO.
        type: bool
        default: false
  pgdata:
    description:
      - Data directory of the local cluster whose layout to report in RV(cluster_layout).
      - When neither this nor O(debian_cluster) is given, C(pgdata), C(debian_cluster) or C(port) of the
        configuration file's C([postgres]) section name the cluster; a cluster named there that cannot be
        discovered gives a warning and a null RV(cluster_layout), one named here fails the module.
    type: path
  debian_cluster:
    description:
      - The local Debian/Ubuntu C(postgresql-common) cluster, as C(VERSION/NAME) (for example V(15/main)),
        whose layout to report in RV(cluster_layout). See O(pgdata).
    type: str
  bindir:
    description:
      - Directory of the server's PostgreSQL programs (C(psql), C(pg_isready)).
      - Default is C(bindir) of the configuration file's C([postgres]) section, then E(PATH).
    type: path
  login_user:
    description:
      - PostgreSQL role to connect as for RV(archive). Any role can read C(pg_stat_archiver);
        RV(archive.ready_backlog) needs a superuser or C(pg_monitor) and is null otherwise.
      - When not given, C(user) of the configuration file's C([postgres]) section, then libpq's default.
    default: null
  login_port:
    description:
      - TCP port of the server, which is also the number in the Unix socket file name.
      - When not given, C(port) of the configuration file's C([postgres]) section, then E(PGPORT), then 5432.
    default: null
  login_db:
    description:
      - Database to connect to; any works.
      - When not given, C(database) of the configuration file's C([postgres]) section, then libpq's default.
    default: null
  login_host:
    description:
      - Host name or IP address of the server. When set it wins over O(login_unix_socket).
      - When both are empty, C(host) of the configuration file's C([postgres]) section, then libpq's default.
  login_password:
    description:
      - Password of O(login_user), handed to C(psql) in a temporary 0600 pgpass file, never on a command line
        or in the environment.
extends_documentation_fragment:
  - restorekeeper.postgresql.postgres
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
  - This module runs C(psql) from O(bindir); it does not need psycopg2, whatever the shared connection
    options say.
  - RV(archive.rpo_exposure_seconds) is an approximation; see its description.
seealso:
  - module: restorekeeper.postgresql.base_backup
  - module: restorekeeper.postgresql.wal_archiving
author:
  - Restorekeeper maintainers (@restorekeeper)
"""

EXAMPLES = r"""
- name: What can be restored right now?
  become: true
  become_user: postgres
  restorekeeper.postgresql.backup_info:
    config_path: /etc/restorekeeper/main.conf
  register: info

- name: Fail when the WAL archive has a gap or archiving lags more than 15 minutes
  ansible.builtin.assert:
    that:
      - info.wal.gaps | length == 0
      - info.archive.rpo_exposure_seconds is not none
      - info.archive.rpo_exposure_seconds < 900
    fail_msg: "gaps {{ info.wal.gaps }}; archive lag {{ info.archive.rpo_exposure_seconds }} s"

- name: Labels of the restorable full backups
  ansible.builtin.debug:
    msg: "{{ info.backups | selectattr('type', 'equalto', 'full') | selectattr('restorable') | map(attribute='label') | list }}"

- name: Latest moment a restore can reach (needs community.general for json_query)
  ansible.builtin.debug:
    msg: "{{ info | community.general.json_query('recoverable_windows[-1].latest_time') }}"

- name: Does the layout provably meet the tier's targets?
  become: true
  become_user: postgres
  restorekeeper.postgresql.backup_info:
    config_path: /etc/restorekeeper/main.conf
    targets:
      tier: important
  register: info

- name: Fail with every finding that is not met, and its fix
  ansible.builtin.assert:
    that: info.recovery_plan.met
    fail_msg: "{{ info.recovery_plan.findings | rejectattr('status', 'equalto', 'met')
                  | map(attribute='reason') | zip(info.recovery_plan.findings
                  | rejectattr('status', 'equalto', 'met') | map(attribute='fix')) | list }}"

- name: Read the repository only, for example while the server is down
  restorekeeper.postgresql.backup_info:
    server_status: false
"""

RETURN = r"""
changed:
  description: Always false.
  returned: always
  type: bool
  sample: false
cluster:
  description: The cluster name (C([cluster] name) of the configuration).
  returned: always
  type: str
  sample: main
cluster_layout:
  description:
    - How the local cluster is laid out, discovered from its files and C(/proc) without connecting (the server
      may be down). Null when no cluster is named (see O(pgdata)) or it could not be discovered.
  returned: always
  type: dict
  contains:
    layout:
      description: V(debian) (C(postgresql-common)), V(pgdg) (C(/usr/pgsql-N)) or V(initdb) (a plain directory).
      type: str
    major_version:
      description: PostgreSQL major version, from C(PG_VERSION) of the data directory.
      type: int
    data_directory:
      description: The data directory.
      type: str
    config_file:
      description: The C(postgresql.conf) in use.
      type: str
    hba_file:
      description: The C(pg_hba.conf) in use.
      type: str
    ident_file:
      description: The C(pg_ident.conf) in use.
      type: str
    config_directory:
      description: Directory of RV(cluster_layout.config_file).
      type: str
    split_config:
      description: Whether the configuration lives outside the data directory (as on Debian).
      type: bool
    includes:
      description: Files and C(include_dir) directories the configuration includes, in order.
      type: list
      elements: str
    bindir:
      description: The server's bin directory (C(postgres), C(pg_ctl), C(pg_waldump)); empty when not found.
      type: str
    bindir_problem:
      description: Where binaries were looked for in vain, when RV(cluster_layout.bindir) is empty.
      type: str
    port:
      description: Port of the server (the running one's, else the configured one).
      type: int
    socket_directory:
      description: First Unix socket directory; empty for libpq's default.
      type: str
    log_file:
      description: Where the server logs, when known.
      type: str
    service:
      description: The systemd unit of this one cluster (V(postgresql@15-main), V(postgresql-15)); empty for none.
      type: str
    debian_cluster:
      description: C(VERSION/NAME) of a C(postgresql-common) cluster, else empty.
      type: str
    owner:
      description: OS user owning the data directory.
      type: str
    running_pid:
      description: Process id of the running postmaster; null when stopped.
      type: int
    ha_manager:
      description: V(patroni) when Patroni manages this data directory, else empty.
      type: str
    ha_detail:
      description: How the HA manager was detected.
      type: str
  sample:
    layout: debian
    major_version: 15
    data_directory: /var/lib/postgresql/15/main
    config_file: /etc/postgresql/15/main/postgresql.conf
    hba_file: /etc/postgresql/15/main/pg_hba.conf
    ident_file: /etc/postgresql/15/main/pg_ident.conf
    config_directory: /etc/postgresql/15/main
    split_config: true
    includes: [/etc/postgresql/15/main/conf.d]
    bindir: /usr/lib/postgresql/15/bin
    bindir_problem: ""
    port: 5432
    socket_directory: /var/run/postgresql
    log_file: /var/log/postgresql/postgresql-15-main.log
    service: postgresql@15-main
    debian_cluster: 15/main
    owner: postgres
    running_pid: 812
    ha_manager: ""
    ha_detail: ""
repository:
  description: Where the repository is.
  returned: always
  type: str
  sample: /var/lib/restorekeeper/repository
system_identifier:
  description: PostgreSQL system identifier of the cluster archived under this name; null before any WAL arrived.
  returned: always
  type: str
  sample: "7364028177049276418"
backups:
  description: Complete (verified, published) backups, oldest first.
  returned: always
  type: list
  elements: dict
  contains:
    label:
      description: Label of the backup.
      type: str
    type:
      description: V(full) or V(incremental).
      type: str
    parent:
      description: Label of the parent of an incremental backup; null for a full one.
      type: str
    chain:
      description: Labels of every backup a restore of this one needs, the full backup first, this one last.
      type: list
      elements: str
    start_time:
      description: When the backup started (UTC, ISO 8601).
      type: str
    stop_time:
      description: When the copy finished (UTC, ISO 8601).
      type: str
    start_lsn:
      description: WAL position where the backup starts.
      type: str
    stop_lsn:
      description: WAL position where the backup ends (the earliest point a restore from it reaches).
      type: str
    timeline:
      description: Timeline of the backup.
      type: int
    wal_start:
      description: First WAL segment the backup needs.
      type: str
    wal_stop:
      description: Last WAL segment the backup needs.
      type: str
    database_size:
      description: Bytes of cluster files copied.
      type: int
    stored_size:
      description: Bytes stored in the repository.
      type: int
    duration_seconds:
      description: Wall time the backup took.
      type: float
    server_version_num:
      description: Version of the server backed up.
      type: int
    restorable:
      description: Whether every WAL segment from RV(backups[].wal_start) to RV(backups[].wal_stop) is archived.
      type: bool
    recovery:
      description:
        - V(point in time) when a restore from this backup can stop at any moment after it (the WAL after it is
          archived), V(consistency point) when only its own WAL is (what archive retention leaves older backups, see
          RV(wal.retention_gaps)); null when it is not restorable.
      type: str
    reason:
      description: Why the backup is not restorable; null when it is.
      type: str
    keep:
      description:
        - Whether the backup is kept (pinned) beyond the retention policy, set with C(restorekeeper keep).
          A backup never kept has RV(backups[].keep.kept=false) and nulls.
      type: dict
      contains:
        kept:
          description: Retention keeps it whatever the policy says (also when its marks are unreadable).
          type: bool
        forever:
          description: Kept until released (C(restorekeeper keep LABEL --release)).
          type: bool
        until:
          description: Kept until this instant (UTC ISO 8601); null when forever or not kept.
          type: str
        expired:
          description: A keep date was set and has passed (retention decides again).
          type: bool
        set_at:
          description: When the keep was set (UTC ISO 8601).
          type: str
        reason:
          description: Why retention keeps it, as expire reports it; null when not kept.
          type: str
    annotations:
      description:
        - KEY=VALUE annotations set at backup time (C(backup --annotate), the O(restorekeeper.postgresql.base_backup#module:annotations)
          option) or later (C(restorekeeper annotate)); empty when none.
      type: dict
    held_by:
      description:
        - Copies (C([copy NAME]) of the configuration) that hold this backup. The repository holds every backup
          listed here. Only when copies are declared.
      type: list
      elements: str
      returned: when the configuration declares copies
    restorable_from:
      description:
        - Copies that can restore this backup on their own (C(restore --source COPY)) - they hold it, every backup
          of its chain, and the WAL from RV(backups[].wal_start) to RV(backups[].wal_stop).
      type: list
      elements: str
      returned: when the configuration declares copies
  sample:
    - label: 20260510-020000F
      type: full
      parent: null
      chain: [20260510-020000F]
      start_time: "2026-05-10T02:00:00.102334Z"
      stop_time: "2026-05-10T02:00:04.981200Z"
      start_lsn: 0/5000028
      stop_lsn: 0/5000158
      timeline: 1
      wal_start: "000000010000000000000005"
      wal_stop: "000000010000000000000005"
      database_size: 23150617
      stored_size: 3012544
      duration_seconds: 4.879
      server_version_num: 180001
      restorable: true
      recovery: point in time
      reason: null
      keep: {kept: true, forever: false, until: "2027-01-31T00:00:00Z", expired: false,
             set_at: "2026-05-11T09:12:00Z", reason: "kept until 2027-01-31T00:00:00Z (restorekeeper keep)"}
      annotations: {ticket: CHG-1234}
    - label: 20260510-140000I
      type: incremental
      parent: 20260510-020000F
      chain: [20260510-020000F, 20260510-140000I]
      start_time: "2026-05-10T14:00:00.021002Z"
      stop_time: "2026-05-10T14:00:01.700311Z"
      start_lsn: 0/9000028
      stop_lsn: 0/9000120
      timeline: 1
      wal_start: "000000010000000000000009"
      wal_stop: "000000010000000000000009"
      database_size: 2315061
      stored_size: 301254
      duration_seconds: 1.679
      server_version_num: 180001
      restorable: true
      recovery: point in time
      reason: null
incomplete_backups:
  description: Labels of backup sets without their record (interrupted, or running now). Never restorable.
  returned: always
  type: list
  elements: str
  sample: [20260509-020000F]
wal:
  description: The archived WAL.
  returned: always
  type: dict
  contains:
    segment_size:
      description: WAL segment size in bytes.
      type: int
    timelines:
      description: Per timeline, the first and last archived segment and how many are archived.
      type: list
      elements: dict
      contains:
        timeline:
          description: Timeline number.
          type: int
        first:
          description: First archived segment.
          type: str
        last:
          description: Last archived segment.
          type: str
        segments:
          description: Number of archived segments (fewer than the range holds when there are gaps).
          type: int
        held_by:
          description: Copies that hold every segment of this timeline the repository holds.
          type: list
          elements: str
          returned: when the configuration declares copies
        missing_by_copy:
          description: For each reachable copy that lacks some, how many of this timeline's segments it lacks.
          type: dict
          returned: when the configuration declares copies
    gaps:
      description:
        - Runs of segments missing between archived ones on the same timeline. A restore cannot cross a gap.
        - Gaps that archive retention made (see RV(wal.retention_gaps)) are not listed here, so an empty list
          still means no WAL is damaged or lost.
      type: list
      elements: dict
      contains:
        timeline:
          description: Timeline number.
          type: int
        after:
          description: Last archived segment before the gap.
          type: str
        before:
          description: First archived segment after the gap.
          type: str
        missing:
          description: Number of missing segments.
          type: int
        first_missing:
          description: First missing segment.
          type: str
        last_missing:
          description: Last missing segment.
          type: str
    retention_gaps:
      description:
        - Gaps that archive retention (C(archive), C(archive_window) of C([retention])) made on purpose, with the
          keys of RV(wal.gaps) and a C(reason). Such a gap lies before the start of the backup point-in-time
          recovery starts from (RV(wal.pitr_from)) and touches no backup's own WAL from start to stop, so every
          backup stays restorable; the older ones to their consistency point only.
        - A gap the policy cannot explain (after RV(wal.pitr_from), or inside a backup's WAL) stays in RV(wal.gaps).
      type: list
      elements: dict
    pitr_from:
      description: The oldest backup archive retention keeps point-in-time recovery after; null without archive
        retention.
      type: str
    history_files:
      description: Archived timeline history files.
      type: list
      elements: str
    unreadable_history_files:
      description:
        - One message per archived history file that fails verification (name, problem and fix). The timelines
          it leads to get no recoverable window, and a restore along them is refused until the file is restored
          from another copy.
      type: list
      elements: str
    partial_files:
      description: Archived partial segments (written when a standby was promoted).
      type: list
      elements: str
    last_archived:
      description: Last segment of the last run of archived segments; null when none.
      type: str
  sample:
    segment_size: 16777216
    timelines:
      - {timeline: 1, first: "000000010000000000000001", last: "00000001000000000000000C", segments: 11}
    gaps:
      - {timeline: 1, after: "000000010000000000000006", before: "000000010000000000000008", missing: 1,
         first_missing: "000000010000000000000007", last_missing: "000000010000000000000007"}
    history_files: []
    unreadable_history_files: []
    partial_files: []
    last_archived: "00000001000000000000000C"
recoverable_windows:
  description:
    - Stretches of time a restore can reach, each from a restorable backup along the unbroken run of WAL
      that follows it. A gap ends a window; a later backup after the gap starts a new one.
    - After a point-in-time recovery, a backup also has a window along each later timeline that forked off
      its own timeline after the backup ended (the timeline history PostgreSQL follows); a timeline that
      forked before the backup ended is not reachable from it.
  returned: always
  type: list
  elements: dict
  contains:
    from_backup:
      description: Label of the backup the window starts from.
      type: str
    timeline:
      description: Timeline of the window (the recovery target timeline that reaches it).
      type: int
    timeline_path:
      description: The timelines replay follows from the backup, with the switch points between them.
      type: str
    earliest_lsn:
      description: Earliest reachable WAL position (the backup's stop LSN).
      type: str
    earliest_time:
      description: Earliest reachable moment (the backup's stop time, UTC).
      type: str
    kind:
      description:
        - V(point in time) when replay can go on past the backup's stop segment, V(consistency point) when the
          archived WAL ends in it and resumes only after a gap (what archive retention leaves older backups);
          the backup restores to its consistency point only, and RV(recoverable_windows[].latest_lsn) and
          RV(recoverable_windows[].latest_time) are its stop LSN and time.
      type: str
      choices: [point in time, consistency point]
    latest_segment:
      description: Last archived segment replay can reach without a gap.
      type: str
    latest_lsn:
      description: WAL position at the end of RV(recoverable_windows[].latest_segment).
      type: str
    latest_time:
      description: When that segment reached the repository (UTC), an upper bound of the latest reachable moment.
      type: str
  sample:
    - from_backup: 20260510-020000F
      timeline: 1
      timeline_path: timeline 1
      kind: point in time
      earliest_lsn: 0/5000158
      earliest_time: "2026-05-10T02:00:04.981200Z"
      latest_segment: "000000010000000000000006"
      latest_lsn: 0/7000000
      latest_time: "2026-05-10T09:12:40.000000Z"
copies:
  description:
    - Each declared copy (C([copy NAME]) of the configuration and its drop-ins), what it holds and how far it lags
      behind the repository. Empty when no copy is declared.
  returned: always
  type: list
  elements: dict
  contains:
    name:
      description: Name of the copy.
      type: str
    type:
      description: Storage backend (V(posix) or V(s3)).
      type: str
    medium:
      description: Declared medium.
      type: str
    offsite:
      description: Whether it is declared offsite.
      type: bool
    immutable:
      description: Whether it is declared immutable (Object Lock).
      type: bool
    failure_domain:
      description: Its failure domain.
      type: str
    encrypted:
      description: Whether it is encrypted client-side.
      type: bool
    reachable:
      description: Whether the copy could be read; when not, RV(copies[].error) says why and the holdings are absent.
      type: bool
    error:
      description: Why the copy could not be read.
      type: str
      returned: when not reachable
    wal_files_missing:
      description: WAL files of the repository the copy does not hold yet.
      type: int
    last_wal_held:
      description: Newest WAL file the copy holds.
      type: str
    lag_seconds:
      description: Age of the oldest WAL file the copy lacks (0 when it lacks none) - the copy's RPO right now.
      type: float
    backups_held:
      description: Labels of the repository's backups the copy holds.
      type: list
      elements: str
    backups_missing:
      description: Labels of the repository's backups the copy does not hold yet.
      type: list
      elements: str
  sample:
    - name: offsite
      type: s3
      medium: object-store
      offsite: true
      immutable: true
      failure_domain: s3://db-backups-eu
      encrypted: true
      reachable: true
      wal_files_missing: 0
      last_wal_held: "00000001000000000000000C"
      lag_seconds: 0.0
      backups_held: [20260510-020000F]
      backups_missing: []
measured:
  description:
    - Rates measured in this repository, the inputs role restorekeeper.postgresql.backups derives its schedule
      from. Null where nothing was measured yet.
  returned: always
  type: dict
  contains:
    replay_rate_mb_s:
      description: WAL replay rate of the slowest of the last five passed drills, MB/s.
      type: float
    restore_rate_mb_s:
      description: Fetch, decompress and unpack rate of the slowest of the last five passed drills, MB/s.
      type: float
    wal_rate_mb_per_hour:
      description: WAL archived per hour over the last seven days (whole segments), MB/h.
      type: float
    drills:
      description: Passed drills the rates come from (at most five).
      type: int
  sample: {replay_rate_mb_s: 61.2, restore_rate_mb_s: 143.0, wal_rate_mb_per_hour: 512.0, drills: 3}
recovery_plan:
  description:
    - With O(targets), whether the current layout provably meets them. Null without O(targets).
    - The layout provably meets the targets only when every finding is V(met); an estimate from assumed rates,
      or a drill too old to count, is V(unproven) and its fix says what to measure.
  returned: always
  type: dict
  contains:
    status:
      description: V(met), V(not_met) (some finding is not met) or V(unproven) (none fails, some are not proven).
      type: str
    met:
      description: Whether every finding is met.
      type: bool
    summary:
      description: One line with the targets and the verdict.
      type: str
    targets:
      description: The targets checked, C(tier), C(rpo_seconds), C(rto_seconds) and C(description).
      type: dict
    backup_interval_seconds:
      description: The backup interval used for the worst case (given or observed); null when unknown.
      type: float
    rates:
      description:
        - Rates used, C(replay_bytes_per_second), C(unpack_bytes_per_second) (measured by drills or assumed,
          C(replay_measured), C(unpack_measured)), C(drills), C(wal_bytes_per_hour) and C(wal_hours_observed).
      type: dict
    findings:
      description: One per piece of evidence.
      type: list
      elements: dict
      contains:
        target:
          description: V(RPO) or V(RTO).
          type: str
        check:
          description:
            - V(archive_timeout), V(archiving), V(streaming), V(offsite_copy), V(copy:NAME), V(drill),
              V(worst_case) or V(backup_age).
          type: str
        status:
          description: V(met), V(not_met) or V(unproven).
          type: str
        measured:
          description: What was measured (seconds for times; null when unknown).
          type: raw
        limit:
          description: What it is held against (seconds).
          type: raw
        reason:
          description: Why, in words.
          type: str
        fix:
          description: What would make it met; null when it is met.
          type: str
  sample:
    status: not_met
    met: false
    summary: "tier important, RPO 5min, RTO 1h: NOT met (3 of 5 checks met)"
    findings:
      - target: RPO
        check: archive_timeout
        status: not_met
        measured: 3600
        limit: 300
        reason: "archive_timeout 1h is above 5min: a quiet server can lose up to 1h of committed work"
        fix: "set archive_timeout to 150s (role archiving: archiving_rpo_target: 300s, ...)"
archive:
  description:
    - The server's archiving state against the repository. Null when O(server_status=false), or when the
      server did not answer and O(ignore_unreachable_server=true).
    - Times are UTC ISO 8601 strings; ages are computed by the server's clock.
  returned: always
  type: dict
  contains:
    in_recovery:
      description: Whether the server is a standby.
      type: bool
    current_wal_segment:
      description: Segment the primary is writing now; null on a standby.
      type: str
    wal_segment_size:
      description: The server's WAL segment size in bytes.
      type: int
    archived_count:
      description: Segments archived since the statistics were reset (C(pg_stat_archiver)).
      type: int
    last_archived_wal:
      description: Last segment the archiver reported archived.
      type: str
    last_archived_time:
      description: When that happened.
      type: str
    seconds_since_last_archive:
      description: Seconds since the last successful archive; null when none since the statistics reset.
      type: float
    failed_count:
      description: Failed archive attempts.
      type: int
    last_failed_wal:
      description: Segment of the last failed attempt.
      type: str
    last_failed_time:
      description: When the last attempt failed.
      type: str
    last_in_repository:
      description: Newest segment in the repository (any timeline).
      type: str
    segments_behind:
      description:
        - Completed segments on the current timeline that are not in the repository yet (between its newest
          segment of that timeline and the current one). The current segment is still being written and is
          not counted, so 0 means fully caught up.
        - Null on a standby, or when the repository holds no segment of the current timeline yet.
      type: int
    rpo_exposure_seconds:
      description:
        - The archive lag, that is how much committed work a loss of the server right now would lose beyond
          the current segment. Approximated as RV(archive.seconds_since_last_archive) while
          RV(archive.segments_behind) is above 0, and 0 when it is 0 (PostgreSQL does not record when a
          segment was completed).
        - Changes in the current, unfinished segment are not counted; C(archive_timeout) bounds their age.
        - Null when RV(archive.segments_behind) is null, or when segments are missing and nothing was ever
          archived.
      type: float
    ready_backlog:
      description:
        - Segments waiting for the archiver (C(.ready) files in C(pg_wal/archive_status)).
        - Null when the login role may not list that directory (needs a superuser or C(pg_monitor)).
      type: int
  sample:
    in_recovery: false
    current_wal_segment: "00000001000000000000000D"
    wal_segment_size: 16777216
    archived_count: 12
    last_archived_wal: "00000001000000000000000C"
    last_archived_time: "2026-05-10T09:12:39.912311Z"
    seconds_since_last_archive: 41.2
    failed_count: 0
    last_failed_wal: null
    last_failed_time: null
    last_in_repository: "00000001000000000000000C"
    segments_behind: 0
    rpo_exposure_seconds: 0.0
    ready_backlog: 0
"""

from typing import Any, Dict, Optional, Set

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.restorekeeper.postgresql.plugins.module_utils.archive.archivestatus import archive_status
from ansible_collections.restorekeeper.postgresql.plugins.module_utils.pg.postgres import (
    connection_options_spec,
    module_client,
)
from ansible_collections.restorekeeper.postgresql.plugins.module_utils.repo.catalog import Catalog
from ansible_collections.restorekeeper.postgresql.plugins.module_utils.repo.layout import key_basename, wal_prefix
from ansible_collections.restorekeeper.postgresql.plugins.module_utils.config.config import DEFAULT_PATH, Config, CopyConfig
from ansible_collections.restorekeeper.postgresql.plugins.module_utils.pg.discovery import layout_named
from ansible_collections.restorekeeper.postgresql.plugins.module_utils.common.errors import RestorekeeperError
from ansible_collections.restorekeeper.postgresql.plugins.module_utils.frontends.modulerun import config_needs, run_module
from ansible_collections.restorekeeper.postgresql.plugins.module_utils.repo.repository import (
    Repository,
    open_repository_storage,
)
from ansible_collections.restorekeeper.postgresql.plugins.module_utils.objectives.plan import (
    check_targets,
    evaluate,
    gather,
    measured_for_schedule,
)
from ansible_collections.restorekeeper.postgresql.plugins.module_utils.copies.ship import copy_status
from ansible_collections.restorekeeper.postgresql.plugins.module_utils.retention.expire import pitr_from
from ansible_collections.restorekeeper.postgresql.plugins.module_utils.objectives.targets import ObjectiveError, parse_target

# pg_isready: 2 = no response (server down or address wrong), as opposed to
# 0 (accepting) and 1 (rejecting, e.g. starting up) and 3 (bad parameters).
PG_ISREADY_NO_RESPONSE = 2


def argument_spec() -> Dict[str, Any]:
    spec = connection_options_spec()
    spec.update(
        config_path={"type": "path", "default": DEFAULT_PATH},
        server_status={"type": "bool", "default": True},
        ignore_unreachable_server={"type": "bool", "default": False},
        bindir={"type": "path"},
        pgdata={"type": "path"},
        debian_cluster={"type": "str"},
        targets={"type": "dict", "options": {
            "tier": {"type": "str", "choices": ["critical", "important", "standard"]},
            "rpo_target": {"type": "str"},
            "rto_target": {"type": "str"},
            "backup_interval": {"type": "str"},
            "require_offsite": {"type": "bool", "default": False},
        }},
    )
    return spec


def held_wal(config: Config, copy: CopyConfig) -> Optional[Set[str]]:
    """Names of the WAL files a copy holds; None when it cannot be read."""
    try:
        storage = open_repository_storage(copy.repository)
        return {key_basename(info.key) for info in storage.list(wal_prefix(config.cluster))}
    except RestorekeeperError:
        return None


def add_copy_holdings(result: Dict[str, Any], config: Config, repository: Repository) -> None:
    """Which copies hold each backup and each timeline's WAL, and each copy's lag
    (copy_status). A copy holds a backup when it holds its record (shipped
    last, after the set's data); it can restore it on its own when it also
    holds the backup's chain and the WAL the backup needs."""
    result["copies"] = copy_status(config)
    reachable = {c["name"] for c in result["copies"] if c.get("reachable")}
    wal_names = sorted(key_basename(info.key) for info in repository.storage.list(wal_prefix(config.cluster)))
    held = {copy.name: held_wal(config, copy) for copy in config.copies if copy.name in reachable}
    held = {name: names for name, names in held.items() if names is not None}
    backups_held = {c["name"]: set(c.get("backups_held", [])) for c in result["copies"] if c["name"] in held}
    for backup in result["backups"]:
        needed = [n for n in wal_names if backup["wal_start"] <= n[:24] <= backup["wal_stop"] and len(n) == 24]
        backup["held_by"] = [name for name in held if backup["label"] in backups_held[name]]
        backup["restorable_from"] = [
            name for name in backup["held_by"]
            if set(backup["chain"]) <= backups_held[name] and held[name].issuperset(needed)]
    for timeline in result["wal"]["timelines"]:
        names = [n for n in wal_names if len(n) == 24 and timeline["first"] <= n <= timeline["last"]]
        missing = {name: len([n for n in names if n not in held[name]]) for name in held}
        timeline["held_by"] = [name for name, count in missing.items() if count == 0]
        timeline["missing_by_copy"] = {name: count for name, count in missing.items() if count}


def cluster_layout(module: AnsibleModule, config: Config) -> Optional[Dict[str, Any]]:
    """The discovered layout of the cluster the options (an error when it
    cannot be found) or the configuration (a warning) name; None for none."""
    layout, problem = layout_named(config.postgres, module.params["pgdata"] or "", module.params["debian_cluster"] or "")
    if problem:
        module.warn("the cluster the configuration names was not discovered: %s" % problem)
    return layout


def run(module: AnsibleModule) -> Dict[str, Any]:
    params = module.params
    wanted = params["targets"]
    if wanted:
        # Unusable targets fail before anything is read.
        targets = check_targets(wanted["tier"], wanted["rpo_target"], wanted["rto_target"])
        interval = parse_target("backup_interval", wanted["backup_interval"])
    config = Config.load(params["config_path"])
    repository = Repository.from_config(config)
    repository.require_initialised()
    catalog = Catalog(repository, config.cluster)
    pitr_start = pitr_from(config.retention, {b.label: b.record for b in catalog.backups()})
    result: Dict[str, Any] = dict(catalog.describe(pitr_from=pitr_start))
    result.update(changed=False, archive=None, copies=[], recovery_plan=None,
                  cluster_layout=cluster_layout(module, config),
                  measured=measured_for_schedule(repository.storage, config.cluster, catalog.segment_size()))
    if config.copies:
        add_copy_holdings(result, config, repository)
    client = None
    with module_client(params, config.postgres) as connection:
        if params["server_status"]:
            client = connection
            if params["ignore_unreachable_server"]:
                probe = connection.run("pg_isready", ["-q"], capture_output=True, text=True)
                if probe.returncode == PG_ISREADY_NO_RESPONSE:
                    module.warn("the PostgreSQL server did not answer; archive status (archive) not reported")
                    client = None
            if client is not None:
                result["archive"] = archive_status(client, catalog)
        if wanted:
            facts = gather(config, client, description=result, copies=result["copies"], archive=result["archive"])
            result["recovery_plan"] = evaluate(targets, facts, backup_interval=interval,
                                               require_offsite=wanted["require_offsite"])
    return result


def main() -> None:
    module = AnsibleModule(argument_spec=argument_spec(), supports_check_mode=True)
    module.exit_json(**run_module(module, "backup_info", lambda: run(module), expected=(ObjectiveError,),
                                  needs=config_needs(module.params["config_path"])))


if __name__ == "__main__":
    main()
