"""``restorekeeper``: the on-host command, a thin front end to the engine.

Exit codes matter to PostgreSQL:

* archive_command (wal-push): 0 means "durably archived, you may recycle the
  segment"; anything else makes PostgreSQL keep it and retry.
* restore_command (wal-fetch): 1 means "not in the archive", which ends
  recovery normally. Every other failure exits 255: PostgreSQL aborts
  recovery on exit codes above 125, which is right for a corrupt file or an
  unreachable repository. Returning 1 there would silently end recovery early
  and start the server on a shorter history.
"""

from __future__ import annotations

import argparse
import sys
from typing import List, Optional

from .config import DEFAULT_PATH, Config
from .errors import RestorekeeperError

PROG = "restorekeeper"
EXIT_OK = 0
EXIT_FAILED = 1
EXIT_NOT_FOUND = 1
EXIT_USAGE = 2
EXIT_ABORT_RECOVERY = 255


class UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> "None":  # type: ignore[override]
        raise UsageError("%s\n%s" % (message, self.format_usage().strip()))


def report(command: str, level: str, message: object) -> None:
    """One line on stderr, which PostgreSQL copies into its server log."""
    sys.stderr.write("%s %s: %s: %s\n" % (PROG, command, level, message))
    sys.stderr.flush()


def cmd_wal_push(args: argparse.Namespace) -> int:
    from .walarchive import WalArchive

    outcome = WalArchive(Config.load(args.config)).push(args.path, args.name)
    if args.verbose:
        report("wal-push", "INFO", "%s %s (%d bytes stored)" % (outcome.name, outcome.status, outcome.stored_size))
    return EXIT_OK


def cmd_wal_fetch(args: argparse.Namespace) -> int:
    from .walarchive import WalArchive, WalNotFound

    try:
        WalArchive(Config.load(args.config)).fetch(args.name, args.path)
    except WalNotFound:
        if args.verbose:
            report("wal-fetch", "INFO", "%s is not in the archive" % args.name)
        return EXIT_NOT_FOUND
    return EXIT_OK


def cmd_wal_list(args: argparse.Namespace) -> int:
    from .walarchive import WalArchive

    for name in WalArchive(Config.load(args.config)).names():
        sys.stdout.write(name + "\n")
    return EXIT_OK


def cmd_repo_create(args: argparse.Namespace) -> int:
    from .repository import Repository

    config = Config.load(args.config)
    created = Repository.from_config(config).create()
    sys.stdout.write("%s repository %s\n" % ("created" if created else "already initialised:", config.repository.path))
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog=PROG, description="PostgreSQL backups proven by restores.")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True

    def command(name: str, handler, help_text: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_text, description=help_text)
        sub.add_argument("--config", "-c", default=DEFAULT_PATH, help="configuration file (default %(default)s)")
        sub.add_argument("--verbose", "-v", action="store_true", help="report success too, not only failures")
        sub.set_defaults(handler=handler)
        return sub

    push = command("wal-push", cmd_wal_push, "archive one WAL file durably (archive_command)")
    push.add_argument("path", help="path of the WAL file, %%p")
    push.add_argument("name", help="file name of the WAL file, %%f")
    fetch = command("wal-fetch", cmd_wal_fetch, "restore one WAL file from the archive (restore_command)")
    fetch.add_argument("name", help="file name wanted, %%f")
    fetch.add_argument("path", help="where to write it, %%p")
    command("wal-list", cmd_wal_list, "list the archived WAL files")
    command("repo-create", cmd_repo_create, "initialise the repository (idempotent)")
    return parser


def _failure_code(command: Optional[str]) -> int:
    return EXIT_ABORT_RECOVERY if command == "wal-fetch" else EXIT_FAILED


def main(argv: Optional[List[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = next((arg for arg in argv if not arg.startswith("-")), None)
    try:
        args = build_parser().parse_args(argv)
    except UsageError as exc:
        report(command or "", "ERROR", exc)
        return EXIT_ABORT_RECOVERY if command == "wal-fetch" else EXIT_USAGE
    try:
        return args.handler(args)
    except RestorekeeperError as exc:
        report(args.command, "ERROR", exc)
        return _failure_code(args.command)
    except KeyboardInterrupt:
        report(args.command, "ERROR", "interrupted")
        return _failure_code(args.command)
    except Exception as exc:  # a bug must still fail safely, with a readable line first
        report(args.command, "ERROR", "unexpected %s: %s" % (type(exc).__name__, exc))
        import traceback

        traceback.print_exc()
        return _failure_code(args.command)
