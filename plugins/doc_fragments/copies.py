# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Shared documentation of a copy declaration (the copies option).

Kept in step with ``COPY_SPEC`` in plugins/module_utils/copies/policy.py and with
the keys of ``[copy NAME]`` in plugins/module_utils/config/config.py (ansible-test
validate-modules compares the spec with this text).
"""

from __future__ import annotations


class ModuleDocFragment:
    DOCUMENTATION = r"""
options:
  copies:
    description:
      - Copies of the repository, each a C([copy NAME]) section of the configuration. Values not given are left
        out, so the engine's defaults apply.
    type: list
    elements: dict
    suboptions:
      name:
        description: Name of the copy (letters, digits, C(.), C(_), C(-)); C(--source NAME) reads from it.
        type: str
        required: true
      type:
        description: Storage backend of the copy.
        type: str
        choices: [posix, s3, ssh]
        default: posix
      path:
        description: Directory (posix, or on the remote host for ssh), or key prefix in the bucket (s3).
        type: str
      medium:
        description:
          - What stores the copy; the 3-2-1 rule wants two media.
          - Default V(disk) for posix and ssh, V(object-store) for s3.
        type: str
        choices: [disk, object-store, tape, other]
      offsite:
        description:
          - Whether the copy is at another site.
          - An offsite copy must be encrypted (O(copies[].encryption_key_file)) unless O(copies[].allow_plaintext).
        type: bool
      immutable:
        description: Whether the copy is immutable; needs an s3 copy with O(copies[].object_lock_mode).
        type: bool
      failure_domain:
        description:
          - What the copy is lost together with (a disk, a host, a site). Copies with the same failure domain count once.
          - Default the path (posix), C(s3://<bucket>) (s3) or C(ssh://<host>) (ssh).
        type: str
      required:
        description: Whether the copy counts; a copy that is not required is shipped to but never waited for.
        type: bool
      encryption_key_file:
        description:
          - Key file (C(<key id> <base64 key>) lines, mode 0600) to encrypt the copy with before data leaves the host.
        type: path
      allow_plaintext:
        description: Accept an offsite copy without encryption.
        type: bool
      bucket:
        description: Bucket of an s3 copy.
        type: str
      endpoint_url:
        description: Endpoint of an S3-compatible store; default AWS.
        type: str
      region:
        description: Region of the bucket.
        type: str
      path_style:
        description: Path-style addressing (most S3-compatible stores).
        type: bool
      access_key_id:
        description: Access key id; default the environment, profile or instance role.
        type: str
      secret_access_key:
        description: Secret access key; never shown in results or diffs.
        type: str
      session_token:
        description: Session token of temporary credentials; never shown in results or diffs.
        type: str
      profile:
        description: Profile of the AWS shared configuration.
        type: str
      ca_bundle:
        description: CA certificates to verify the endpoint with.
        type: path
      sse:
        description: Server-side encryption (C(AES256) or C(aws:kms)).
        type: str
      kms_key_id:
        description: KMS key of C(aws:kms) server-side encryption.
        type: str
      storage_class:
        description: Storage class of uploaded objects.
        type: str
      object_lock_mode:
        description: Object Lock retention mode of uploaded objects (the bucket must have Object Lock enabled).
        type: str
        choices: [GOVERNANCE, COMPLIANCE]
      object_lock_days:
        description: Days each object is retained under Object Lock.
        type: int
      max_attempts:
        description: Attempts per request before the store is reported unreachable.
        type: int
      synchronous:
        description: Make C(wal-push) return only once this copy holds the segment too (an RPO of zero for it).
        type: bool
      retention_full:
        description:
          - This copy's own retention (C(restorekeeper expire --copy NAME), module
            M(restorekeeper.postgresql.backup_retention)); keep the newest N full backups and their incrementals.
          - A copy without any retention_* key keeps everything; C(restorekeeper ship) does not send a copy what its
            retention would expire.
        type: int
      retention_window:
        description: This copy's recovery window, a duration such as V(90d); see O(copies[].retention_full).
        type: str
      retention_min_restorable:
        description: Fewest restorable backups expire may leave on this copy (default 1).
        type: int
      retention_dumps:
        description: Keep the newest N logical dumps of each database on this copy.
        type: int
      retention_incomplete_age:
        description: Age after which an incomplete set on this copy (an interrupted ship) is removed (default V(1d)).
        type: str
      host:
        description: Host of an ssh copy.
        type: str
      user:
        description: User on the host of an ssh copy; default ssh's own.
        type: str
      port:
        description: SSH port of an ssh copy.
        type: int
      identity_file:
        description: Private key an ssh copy is reached with.
        type: path
      known_hosts_file:
        description: Known hosts file that authenticates the host of an ssh copy.
        type: path
      remote_tool:
        description: Path of the C(restorekeeper) command on the host of an ssh copy.
        type: path
"""
