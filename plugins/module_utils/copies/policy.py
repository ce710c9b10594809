"""The 3-2-1 rule over a cluster's declared copies: does the layout hold?

At least 3 independent copies, on at least 2 media, at least 1 offsite, and
every copy declared immutable really under Object Lock. "Independent" means
in distinct failure domains: copies that share one (the same bucket, the same
path or a path inside another, the same ssh host - the database host itself
included - or the same declared ``failure_domain``) are lost together, so
they count once.

The copies are the repository itself (copy one: ``wal-push`` writes it
durably before PostgreSQL may recycle a segment) and every ``[copy NAME]``.
The live cluster counts as a copy only when asked (``count_live_cluster``):
it is off by default because the live data is not a backup - ransomware, a
bad ``DELETE`` or a corrupting bug reach it at once, and a restore cannot
take anything from it. Some auditors count it (the classic "production plus
two backups"); the option is there for them, named in every report.

A copy with ``required = false`` is listed but not counted: nothing waits
for it, so it may lag without bound.

``evaluate`` is a pure function of the configuration and of facts a caller
may have measured (see ``Facts``); it reads and writes nothing.
"""

from __future__ import annotations

import configparser
import os
import posixpath
from typing import Any, Dict, List, NamedTuple, Optional, Tuple
from urllib.parse import urlsplit

from ..config.config import Config, CopyConfig, RepositoryConfig
from ..common.errors import ConfigError, RestorekeeperError

MIN_COPIES = 3
MIN_MEDIA = 2
MIN_OFFSITE = 1
LOCK_MODES = ("GOVERNANCE", "COMPLIANCE")
REPOSITORY = "repository"
LIVE_CLUSTER = "live-cluster"
# Names of the database host itself, as an ssh copy could name it.
_LOOPBACK = ("localhost", "127.0.0.1", "::1")


class Facts(NamedTuple):
    """What a caller measured on the host; every field is optional.

    object_lock: per copy name, whether its bucket has Object Lock enabled
        (None: could not be checked).
    devices: per copy name (REPOSITORY for the repository), the st_dev of its
        posix directory (or of its nearest existing parent).
    errors: per copy name, why a measurement failed.
    """

    object_lock: Optional[Dict[str, Optional[bool]]] = None
    devices: Optional[Dict[str, int]] = None
    errors: Optional[Dict[str, str]] = None


class _Member(NamedTuple):
    name: str
    kind: str               # repository, live-cluster or copy
    type: str
    location: str
    medium: str
    offsite: bool
    immutable: bool
    encrypted: bool
    required: bool
    failure_domain: str
    keys: Tuple[str, ...]   # physical identities: same key, same failure domain
    repository: Optional[RepositoryConfig]


def evaluate(config: Config, count_live_cluster: bool = False, host: str = "", facts: Facts = Facts(),
             min_copies: int = MIN_COPIES, min_media: int = MIN_MEDIA, min_offsite: int = MIN_OFFSITE) -> Dict[str, Any]:
    """The verdict on config's layout, with what is missing and how to fix it.

    host names the database host (the default failure domain of the
    repository is "<host>:<path>"). The minimums can be raised, never lowered
    below 3-2-1."""
    if min_copies < MIN_COPIES or min_media < MIN_MEDIA or min_offsite < MIN_OFFSITE:
        raise ConfigError("the 3-2-1 rule cannot be weakened (asked for %d copies, %d media, %d offsite)"
                          % (min_copies, min_media, min_offsite),
                          "minimums may only be raised above 3 copies, 2 media and 1 offsite")
    members = _members(config, count_live_cluster, host or "this host")
    groups, reasons = _group(members)
    counted = _counted(members, groups)
    problems: List[str] = []
    warnings: List[str] = []
    media = sorted({members[i].medium for i in counted})
    offsite = [members[i].name for i in counted
               if all(members[j].offsite for j in _members_of(groups, _root_of(groups, i)))]
    problems += _copies_problems(members, reasons, counted, count_live_cluster, min_copies)
    if len(media) < min_media:
        problems.append(
            "%d %s (%s) among the counted copies, %d needed: a fault of one technology (a firmware bug, a "
            "file system bug, a failing batch of disks) can take every copy. Fix: add a copy on another medium, "
            "for example an s3 bucket (medium object-store) or tape"
            % (len(media), "medium" if len(media) == 1 else "media", ", ".join(media) or "none", min_media))
    if len(offsite) < min_offsite:
        problems.append(_offsite_problem(members, groups, counted, min_offsite, len(offsite)))
    immutable, lock_problems, lock_warnings = _immutability(members, facts)
    problems += lock_problems
    warnings += lock_warnings + _plaintext_offsite(members) + _device_warnings(members, groups, facts)
    if not any(m.immutable for m in members):
        warnings.append("no copy is immutable: whoever holds this host's credentials (ransomware included) can "
                        "delete every copy; declare an s3 copy with immutable = true and Object Lock")
    compliant = not problems
    report = {
        "compliant": compliant,
        "cluster": config.cluster,
        "count_live_cluster": count_live_cluster,
        "rule": {"copies": min_copies, "media": min_media, "offsite": min_offsite},
        "copies": [_describe(m, i, members, groups, reasons, counted) for i, m in enumerate(members)],
        "counted": len(counted),
        "media": media,
        "offsite": offsite,
        "immutable": immutable,
        "failure_domains": _domains(members, groups),
        "problems": problems,
        "warnings": warnings,
    }
    report["explanation"] = explain(report)
    return report


def explain(report: Dict[str, Any]) -> str:
    """One paragraph a person can act on."""
    rule = report["rule"]
    head = "%d copies, %d media, %d offsite" % (rule["copies"], rule["media"], rule["offsite"])
    counted = [c["name"] for c in report["copies"] if c["counted"]]
    live = "the live cluster counted" if report["count_live_cluster"] else "the live cluster not counted"
    if report["compliant"]:
        return ("The storage layout of cluster %s meets the rule (%s): %d independent copies (%s; %s), "
                "%d media (%s), offsite: %s, immutable: %s."
                % (report["cluster"], head, len(counted), ", ".join(counted), live, len(report["media"]),
                   ", ".join(report["media"]), ", ".join(report["offsite"]), ", ".join(report["immutable"]) or "none"))
    return ("The storage layout of cluster %s breaks the rule (%s; %s). Missing:\n%s"
            % (report["cluster"], head, live, "\n".join("- " + p for p in report["problems"])))


# --------------------------------------------------------------- the copies
def _members(config: Config, count_live_cluster: bool, host: str) -> List[_Member]:
    repo = config.repository
    members = [_Member(
        REPOSITORY, "repository", repo.type, _location(repo), "object-store" if repo.type == "s3" else "disk",
        False, bool((repo.options or {}).get("object_lock_mode")), bool(repo.encryption_key_file), True,
        _bucket_label(repo) if repo.type == "s3" else "%s:%s" % (host, repo.path),
        _keys(repo, host if repo.type == "posix" else ""), repo)]
    if count_live_cluster:
        members.append(_Member(LIVE_CLUSTER, "live-cluster", "postgresql", "%s (data directory)" % host, "disk",
                               False, False, False, True, "%s:live cluster" % host, ("live:%s" % host,), None))
    members += [_copy_member(copy) for copy in config.copies]
    return members


def _copy_member(copy: CopyConfig) -> _Member:
    repo = copy.repository
    return _Member(copy.name, "copy", repo.type, _location(repo), copy.medium, copy.offsite, copy.immutable,
                   bool(repo.encryption_key_file), copy.required, copy.failure_domain, _keys(repo), repo)


def _location(repo: RepositoryConfig) -> str:
    options = repo.options or {}
    if repo.type == "s3":
        where = " at %s" % options["endpoint_url"] if options.get("endpoint_url") else ""
        return "s3://%s/%s%s" % (options.get("bucket", ""), repo.path.strip("/"), where)
    if repo.type == "ssh":
        return "ssh://%s%s" % (options.get("host", ""), repo.path)
    return repo.path


def _bucket_label(repo: RepositoryConfig) -> str:
    return "s3://%s" % (repo.options or {}).get("bucket", "")


def _keys(repo: RepositoryConfig, local_host: str = "") -> Tuple[str, ...]:
    """Physical identities of a storage location. local_host is given for the
    repository: an ssh copy on the database host itself is on the same host."""
    options = repo.options or {}
    if repo.type == "s3":
        endpoint = urlsplit(options.get("endpoint_url", "")).netloc.lower() or "aws"
        return ("bucket:%s/%s" % (endpoint, options.get("bucket", "")),)
    if repo.type == "ssh":
        return ("host:%s" % options.get("host", "").lower(),)
    keys = ("path:%s" % posixpath.normpath(repo.path),)
    if local_host:
        keys += tuple("host:%s" % name for name in (local_host.lower(),) + _LOOPBACK)
    return keys


# ------------------------------------------------------- failure domains
def _shared(a: _Member, b: _Member) -> str:
    """Why a and b would be lost together, or "" when nothing says so."""
    for key in a.keys:
        if key in b.keys:
            kind, _sep, value = key.partition(":")
            return {"bucket": "the same bucket (%s)" % value, "path": "the same directory (%s)" % value,
                    "host": "the same host (%s)" % value}.get(kind, "the same place (%s)" % value)
    for key_a in a.keys:
        for key_b in b.keys:
            if key_a.startswith("path:") and key_b.startswith("path:"):
                inner, outer = sorted((key_a[5:], key_b[5:]), key=len, reverse=True)
                if inner.startswith(outer.rstrip("/") + "/"):
                    return "one directory inside the other (%s in %s)" % (inner, outer)
    if a.failure_domain == b.failure_domain:
        return "the same declared failure_domain (%s)" % a.failure_domain
    return ""


def _group(members: List[_Member]) -> Tuple[List[int], Dict[int, Tuple[int, str]]]:
    """Union-find over members; reasons[j] = (i, why j shares i's failure domain)."""
    parent = list(range(len(members)))
    reasons: Dict[int, Tuple[int, str]] = {}
    for j, b in enumerate(members):
        for i in range(j):
            why = _shared(members[i], b)
            if why:
                reasons.setdefault(j, (i, why))
                parent[_root_of(parent, j)] = _root_of(parent, i)
    return parent, reasons


def _root_of(parent: List[int], i: int) -> int:
    while parent[i] != i:
        i = parent[i]
    return i


def _members_of(parent: List[int], root: int) -> List[int]:
    return [i for i in range(len(parent)) if _root_of(parent, i) == root]


def _counted(members: List[_Member], parent: List[int]) -> List[int]:
    """Per failure domain, its first required member (the repository first)."""
    counted, seen = [], set()
    for i, member in enumerate(members):
        root = _root_of(parent, i)
        if member.required and root not in seen:
            seen.add(root)
            counted.append(i)
    return counted


def _domains(members: List[_Member], parent: List[int]) -> Dict[str, List[str]]:
    domains: Dict[str, List[str]] = {}
    for i, member in enumerate(members):
        root = _root_of(parent, i)
        domains.setdefault(members[root].failure_domain, []).append(member.name)
    return domains


# ------------------------------------------------------------------ rules
def _copies_problems(members: List[_Member], reasons: Dict[int, Tuple[int, str]], counted: List[int],
                     count_live_cluster: bool, min_copies: int) -> List[str]:
    if len(counted) >= min_copies:
        return []
    notes = []
    for j, (i, why) in sorted(reasons.items()):
        if j not in counted:
            notes.append("%s shares a failure domain with %s: %s" % (members[j].name, members[i].name, why))
    notes += ["%s is not counted: required = false, so nothing waits for it and it may lag without bound"
              % m.name for m in members if not m.required]
    if not count_live_cluster:
        notes.append("the live cluster is not counted (count_live_cluster is false: it is not a backup)")
    return ["%d independent %s (%s), %d needed%s. Fix: declare another copy in a failure domain of its own - "
            "another disk, host, site or bucket - with a distinct failure_domain"
            % (len(counted), "copy" if len(counted) == 1 else "copies",
               ", ".join(members[i].name for i in counted), min_copies,
               ("; " + "; ".join(notes)) if notes else "")]


def _offsite_problem(members: List[_Member], parent: List[int], counted: List[int], needed: int, have: int) -> str:
    notes = []
    for i, member in enumerate(members):
        if not member.offsite:
            continue
        onsite = [members[j].name for j in _members_of(parent, _root_of(parent, i)) if not members[j].offsite]
        if onsite:
            notes.append("%s is declared offsite but shares a failure domain with %s, which is on site"
                         % (member.name, ", ".join(onsite)))
        elif i not in counted:
            notes.append("%s is offsite but not counted (required = false)" % member.name)
    return ("%d offsite %s, %d needed: a fire, flood or site outage would take every copy%s. Fix: declare a copy "
            "at another site with offsite = true - an s3 bucket in another region or provider, or a disk in "
            "another building - encrypted with encryption_key_file"
            % (have, "copy" if have == 1 else "copies", needed, ("; " + "; ".join(notes)) if notes else ""))


def _immutability(members: List[_Member], facts: Facts) -> Tuple[List[str], List[str], List[str]]:
    """Every copy declared immutable must be an s3 copy written under Object
    Lock with a retention, into a bucket that has Object Lock enabled."""
    holding, problems, warnings = [], [], []
    object_lock = facts.object_lock or {}
    errors = facts.errors or {}
    for member in members:
        if not member.immutable or member.repository is None:
            continue
        options = member.repository.options or {}
        mode = options.get("object_lock_mode", "").upper()
        days = options.get("object_lock_days", "").strip()
        reason = ""
        if member.type != "s3":
            reason = "it is a %s location; only s3 buckets with Object Lock are immutable" % member.type
        elif mode not in LOCK_MODES:
            reason = "object_lock_mode %r is not GOVERNANCE or COMPLIANCE" % mode
        elif not days.isdigit() or int(days) < 1:
            reason = "object_lock_days %r is not a number of days of at least 1" % days
        elif object_lock.get(member.name) is False:
            reason = "its bucket does not have Object Lock enabled (it can only be enabled when the bucket is made)"
        if reason:
            problems.append("%s is declared immutable but %s. Fix: make it an s3 copy in a bucket created with Object "
                            "Lock enabled, with object_lock_mode (COMPLIANCE cannot be lifted, GOVERNANCE by "
                            "privileged accounts) and object_lock_days covering the retention" % (member.name, reason))
            continue
        holding.append(member.name)
        if object_lock.get(member.name, True) is None:
            warnings.append("could not confirm that the bucket of %s has Object Lock enabled%s"
                            % (member.name, ": %s" % errors[member.name] if member.name in errors else ""))
        if mode == "GOVERNANCE":
            warnings.append("%s uses GOVERNANCE retention: an account with s3:BypassGovernanceRetention can still "
                            "delete its objects; COMPLIANCE cannot be lifted by anyone" % member.name)
    return holding, problems, warnings


def _plaintext_offsite(members: List[_Member]) -> List[str]:
    warnings = []
    for member in members:
        if member.offsite and not member.encrypted:
            warnings.append("%s is offsite but not encrypted (allow_plaintext): its data leaves the host readable"
                            % member.name)
    return warnings


def _device_warnings(members: List[_Member], parent: List[int], facts: Facts) -> List[str]:
    """Distinct declared failure domains on one file system are one disk."""
    devices = facts.devices or {}
    by_device: Dict[int, List[int]] = {}
    for i, member in enumerate(members):
        if member.name in devices:
            by_device.setdefault(devices[member.name], []).append(i)
    warnings = []
    for indexes in by_device.values():
        roots = {_root_of(parent, i) for i in indexes}
        if len(roots) > 1:
            warnings.append("%s are declared in different failure domains but are on the same file system: one "
                            "disk failure takes them together unless that file system is itself replicated"
                            % " and ".join(members[i].name for i in indexes))
    return warnings


def _describe(member: _Member, index: int, members: List[_Member], parent: List[int],
              reasons: Dict[int, Tuple[int, str]], counted: List[int]) -> Dict[str, Any]:
    shares = reasons.get(index)
    return {
        "name": member.name,
        "kind": member.kind,
        "type": member.type,
        "location": member.location,
        "medium": member.medium,
        "offsite": member.offsite,
        "immutable": member.immutable,
        "encrypted": member.encrypted,
        "required": member.required,
        "failure_domain": members[_root_of(parent, index)].failure_domain,
        "counted": index in counted,
        "same_failure_domain_as": members[shares[0]].name if shares else None,
        "why": shares[1] if shares else None,
    }


# ------------------------------------------------- a proposed set of copies
def with_copies(config: Config, copies_text: str, replaced_names: List[str]) -> Config:
    """config with the copies of a drop-in replaced: the copies named in
    replaced_names (those of the drop-in's current version) leave, those
    declared in copies_text (rendered by config.render_copies) come in. Lets a
    layout be judged before it is written."""
    parser = configparser.ConfigParser(interpolation=None)
    parser.read_string(copies_text)
    sections = {"cluster": {"name": config.cluster}, REPOSITORY: {"type": "posix", "path": "/"}}
    sections.update({name: dict(parser[name]) for name in parser.sections()})
    proposed = Config.from_sections("<copies>", sections).copies
    kept = tuple(c for c in config.copies if c.name not in replaced_names)
    clash = sorted({c.name for c in kept} & {c.name for c in proposed})
    if clash:
        raise ConfigError("copy %s is already declared in %s or another drop-in" % (", ".join(clash), config.path),
                          "declare each copy once: remove it there, or give it another name here")
    return config._replace(copies=tuple(sorted(kept + proposed, key=lambda c: c.name)))


def copy_names(text: str) -> List[str]:
    """Names of the [copy NAME] sections of a drop-in's text."""
    parser = configparser.ConfigParser(interpolation=None)
    try:
        parser.read_string(text)
    except configparser.Error:
        return []
    return [name[len("copy "):].strip() for name in parser.sections() if name.startswith("copy ")]


# The declaration of one copy as the storage_copies and storage_policy modules
# take it (an Ansible argument spec; plain data, kept here so both modules and
# their documentation name the same keys as [copy NAME] of config.py).
COPY_SPEC: Dict[str, Any] = {
    "name": {"type": "str", "required": True},
    "type": {"type": "str", "choices": ["posix", "s3", "ssh"], "default": "posix"},
    "path": {"type": "str"},
    "medium": {"type": "str", "choices": ["disk", "object-store", "tape", "other"]},
    "offsite": {"type": "bool"},
    "immutable": {"type": "bool"},
    "failure_domain": {"type": "str"},
    "required": {"type": "bool"},
    "encryption_key_file": {"type": "path"},
    "allow_plaintext": {"type": "bool"},
    "bucket": {"type": "str"},
    "endpoint_url": {"type": "str"},
    "region": {"type": "str"},
    "path_style": {"type": "bool"},
    "access_key_id": {"type": "str", "no_log": False},
    "secret_access_key": {"type": "str", "no_log": True},
    "session_token": {"type": "str", "no_log": True},
    "profile": {"type": "str"},
    "ca_bundle": {"type": "path"},
    "sse": {"type": "str"},
    "kms_key_id": {"type": "str", "no_log": False},
    "storage_class": {"type": "str"},
    "object_lock_mode": {"type": "str", "choices": ["GOVERNANCE", "COMPLIANCE"]},
    "object_lock_days": {"type": "int"},
    "max_attempts": {"type": "int"},
    "synchronous": {"type": "bool"},
    "retention_full": {"type": "int"},
    "retention_window": {"type": "str"},
    "retention_min_restorable": {"type": "int"},
    "retention_dumps": {"type": "int"},
    "retention_incomplete_age": {"type": "str"},
    "host": {"type": "str"},
    "user": {"type": "str"},
    "port": {"type": "int"},
    "identity_file": {"type": "path"},
    "known_hosts_file": {"type": "path"},
    "remote_tool": {"type": "path"},
}


# ---------------------------------------------------------------- measuring
def object_lock_enabled(repository: RepositoryConfig) -> Optional[bool]:
    """Whether the bucket has Object Lock enabled; raises when it cannot be asked."""
    from ..storage.factory import open_storage

    storage = open_storage("s3", repository.path, repository.options)  # no key needed to ask the bucket
    # Any exception: botocore's error classes come with boto3, which the engine imports lazily.
    try:
        answer = storage.client.get_object_lock_configuration(Bucket=storage.settings.bucket)
    except Exception as exc:  # pylint: disable=broad-exception-caught
        code = (getattr(exc, "response", None) or {}).get("Error", {}).get("Code", "")
        if code == "ObjectLockConfigurationNotFoundError":
            return False
        raise RestorekeeperError("cannot read the Object Lock configuration of bucket %s: %s"
                                 % (storage.settings.bucket, code or exc)) from None
    return answer.get("ObjectLockConfiguration", {}).get("ObjectLockEnabled") == "Enabled"


def device_of(path: str) -> Optional[int]:
    """st_dev of path, or of its nearest existing parent (a copy not made yet
    will be made on that file system)."""
    current = os.path.abspath(path)
    while True:
        try:
            return os.stat(current).st_dev
        except FileNotFoundError:
            if current == os.path.dirname(current):
                return None
            current = os.path.dirname(current)
        except OSError:
            return None


def probe(config: Config) -> Facts:
    object_lock: Dict[str, Optional[bool]] = {}
    devices: Dict[str, int] = {}
    errors: Dict[str, str] = {}
    locations = [(REPOSITORY, config.repository, False)] + [(c.name, c.repository, c.immutable) for c in config.copies]
    for name, repository, immutable in locations:
        if repository.type == "posix":
            device = device_of(repository.path)
            if device is not None:
                devices[name] = device
        elif repository.type == "s3" and immutable:
            try:
                object_lock[name] = object_lock_enabled(repository)
            except RestorekeeperError as exc:
                object_lock[name] = None
                errors[name] = str(exc)
    return Facts(object_lock, devices, errors)
