"""Read archived WAL with pg_waldump to answer questions a restore must ask
before it touches anything: when did the last transaction commit, where is
a named restore point, where did a transaction commit."""

from __future__ import annotations

import datetime
import os
import re
import shutil
import subprocess
import tempfile
from typing import Iterator, List, NamedTuple, Optional

from ..pg import wal
from ..pg.pgclient import PgClient
from .walarchive import WalArchive
from ..common.errors import WalNotFound

_RECORD = re.compile(r"tx:\s*(\d+), lsn: ([0-9A-F]+/[0-9A-F]+), prev [^,]+, desc: (.*)$")
_COMMIT = re.compile(r"^(COMMIT|ABORT) (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(?:\.\d+)?) UTC")
_RESTORE_POINT = re.compile(r"^RESTORE_POINT (.*)$")


class WalRecord(NamedTuple):
    xid: int
    lsn: int
    desc: str


class TransactionEnd(NamedTuple):
    xid: int
    lsn: int
    time: datetime.datetime
    committed: bool


class WalInspector:
    """Fetches archived segments into a private scratch directory and runs
    pg_waldump on them. Use as a context manager."""

    def __init__(self, archive: WalArchive, client: PgClient) -> None:
        self.archive = archive
        self.client = client
        self._scratch = tempfile.mkdtemp(prefix="restorekeeper-waldump-")

    def __enter__(self) -> "WalInspector":
        return self

    def __exit__(self, *exc_info) -> None:
        shutil.rmtree(self._scratch, ignore_errors=True)

    def records(self, segment: str, rmgr: str) -> Iterator[WalRecord]:
        """Records of one resource manager that start in one archived segment."""
        path = os.path.join(self._scratch, segment)
        try:
            self.archive.fetch(segment, path)
        except WalNotFound:
            return
        env = dict(self.client.env(), TZ="UTC")
        # pg_waldump exits non-zero at the end of the last record it can read
        # (a record continuing into a segment not fetched): the records printed
        # before that are complete, so its exit code is not an error here.
        result = subprocess.run(
            [self.client.program("pg_waldump"), "-p", self._scratch, "-r", rmgr, segment, segment],
            capture_output=True, text=True, env=env, check=False,
        )
        os.unlink(path)
        for line in result.stdout.splitlines():
            match = _RECORD.search(line)
            if match:
                yield WalRecord(int(match.group(1)), wal.parse_lsn(match.group(2)), match.group(3).strip())

    def last_transaction_end(self, segments: List[str]) -> Optional[TransactionEnd]:
        """The last commit or abort in the given segments (searched newest first)."""
        for segment in reversed(segments):
            ends = [end for end in (self._transaction_end(r) for r in self.records(segment, "Transaction")) if end]
            if ends:
                return ends[-1]
        return None

    def find_restore_point(self, name: str, segments: List[str]) -> Optional[int]:
        """LSN of the newest restore point called name in the given segments."""
        for segment in reversed(segments):
            found = [r.lsn for r in self.records(segment, "XLOG") if _restore_point_name(r.desc) == name]
            if found:
                return found[-1]
        return None

    def find_transaction_end(self, xid: int, segments: List[str]) -> Optional[TransactionEnd]:
        for segment in reversed(segments):
            for record in self.records(segment, "Transaction"):
                end = self._transaction_end(record)
                if end and end.xid == xid:
                    return end
        return None

    @staticmethod
    def _transaction_end(record: WalRecord) -> Optional[TransactionEnd]:
        match = _COMMIT.match(record.desc)
        if not match:
            return None
        moment = datetime.datetime.fromisoformat(match.group(2)).replace(tzinfo=datetime.timezone.utc)
        return TransactionEnd(record.xid, record.lsn, moment, match.group(1) == "COMMIT")


def _restore_point_name(desc: str) -> Optional[str]:
    match = _RESTORE_POINT.match(desc)
    return match.group(1).strip() if match else None
