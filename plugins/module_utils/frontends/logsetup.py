"""--log-file and --log-level of the restorekeeper command: Python logging, set up once per run.

What the command reports on stderr (cli.report) stays on stderr, where
PostgreSQL and systemd pick it up; the log file receives the same lines,
timestamped, with the command's start, end and exit code. Without --log-file,
an explicit --log-level sends the records stderr does not already show (the
start, the end, debug details) to stderr.

Only commands given either option import logging: the archive command,
started once per WAL segment, does not pay for it.
"""

from __future__ import annotations

import logging
import os
import time
from typing import List, Optional, TextIO

from ..common.fsutil import open_log_file

LOGGER_NAME = "restorekeeper"
LEVELS = ("debug", "info", "warning", "error")
DEFAULT_LEVEL = "info"
LOG_FILE_MODE = 0o640  # lines never hold secrets; the service's group may read them
ON_STDERR = "on_stderr"  # a record's attribute: its line was already written to stderr
_owned_streams: List[TextIO] = []  # the log files configure() opened, closed by close()


class _UtcFormatter(logging.Formatter):
    converter = time.gmtime

    def formatTime(self, record: logging.LogRecord, datefmt: Optional[str] = None) -> str:
        return time.strftime("%Y-%m-%dT%H:%M:%S", self.converter(record.created)) + ".%03dZ" % record.msecs


class _NotYetOnStderr(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not getattr(record, ON_STDERR, False)


def configure(log_file: str, level: str, stderr: TextIO) -> logging.Logger:
    """The command's logger, writing to log_file (appended, created mode 0640,
    never through a symbolic link) or, without one, to stderr the records not
    already shown there. Replaces what an earlier call in this process set up."""
    logger = logging.getLogger(LOGGER_NAME)
    close()
    logger.setLevel((level or DEFAULT_LEVEL).upper())
    logger.propagate = False
    if log_file:
        handler: logging.Handler = logging.StreamHandler(
            os.fdopen(open_log_file(log_file, LOG_FILE_MODE), "a", encoding="utf-8", errors="replace"))
        handler.setFormatter(_UtcFormatter("%(asctime)s restorekeeper[%(process)d] %(levelname)s %(message)s"))
        _owned_streams.append(handler.stream)
    else:
        handler = logging.StreamHandler(stderr)
        handler.addFilter(_NotYetOnStderr())
        handler.setFormatter(logging.Formatter("restorekeeper: %(levelname)s: %(message)s"))
    logger.addHandler(handler)
    return logger


def close() -> None:
    """Flush and close the handlers configure() added."""
    logger = logging.getLogger(LOGGER_NAME)
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
        handler.close()
    while _owned_streams:
        _owned_streams.pop().close()
