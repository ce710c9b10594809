"""Install the on-host `restorekeeper` command (the layout role `archiving` builds).

    python tools/install_tool.py --prefix P [--packages distribution|pip] [--python /usr/bin/python3] [--owner USER]

Layout (see docs and notes):
    P/lib/restorekeeper_engine/     copy of plugins/module_utils/ (its packages) plus an empty __init__.py
    P/bin/restorekeeper             launcher run by archive_command / restore_command
    P/bin/restorekeeper-archive     POSIX sh archive_command of a cluster with the resident WAL pusher
                                    (roles/archiving/files/restorekeeper-archive, copied as it is)

--packages distribution (the default): the launcher runs --python itself, the
interpreter the Ansible modules use, with the packages of the host's
distribution (README, Host prerequisites). One set of packages serves both the
modules and the command, so they can never differ; no pip, no PyPI.
--packages pip: P is also a virtualenv (made with --system-site-packages, so it
never sees less than the modules do) holding the pins of
roles/archiving/files/requirements-onhost.txt; the launcher runs its python.

Idempotent: the venv and pip install are skipped when the venv already has the
pinned versions; the engine copy and launcher are rewritten every time (cheap),
each file atomically so a running archive_command never sees a half file.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import pwd
import re
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import List, Optional, Sequence

REPO_ROOT = Path(__file__).resolve().parent.parent
ENGINE_SOURCE = REPO_ROOT / "plugins" / "module_utils"
REQUIREMENTS = REPO_ROOT / "roles" / "archiving" / "files" / "requirements-onhost.txt"
FALLBACK_PINS = ("zstandard==0.25.0", "crc32c==2.9.post0")
ENGINE_PACKAGE = "restorekeeper_engine"
LAUNCHER_NAME = "restorekeeper"
ARCHIVE_SCRIPT = REPO_ROOT / "roles" / "archiving" / "files" / "restorekeeper-archive"

DISTRIBUTION = "distribution"
PIP = "pip"
PACKAGE_MODES = (DISTRIBUTION, PIP)
# Without these the command cannot do its default work (zstd is the default compression);
# the others (hostdeps.DEPENDENCIES) are reported when missing, as they serve only some configurations.
REQUIRED_MODULES = ("zstandard",)

# -S (in -IS: a shebang passes one argument) skips the site module (a third of the interpreter's start-up; the
# archive command starts once per WAL segment): the launcher puts the engine
# and the interpreter's site directories, found at install time (SITE_PROBE), on sys.path itself.
# roles/archiving/templates/restorekeeper.j2 writes the same text.
LAUNCHER_TEMPLATE = """#!{interpreter} -IS
import sys
sys.path[0:0] = {engine_path}
sys.path += {site_dirs}
from restorekeeper_engine.frontends.cli import main
sys.exit(main())
"""

# Run with -IS: what the site module would add to sys.path (site-packages, dist-packages,
# .pth entries; no user site), in its order. roles/archiving/vars/main.yml has the same probe.
SITE_PROBE = (
    "import json, site, sys; before = list(sys.path); site.main(); "
    "print(json.dumps([p for p in sys.path if p not in before]))"
)

# Run with -I, engine directory and import names as arguments: prints hostdeps' message for what is missing.
DEPENDENCY_PROBE = """
import json, sys
sys.path[0:0] = [sys.argv[1]]
from restorekeeper_engine.common import hostdeps
names = [d.import_name for d in hostdeps.DEPENDENCIES]
missing = hostdeps.missing(names)
required = [n for n in missing if n in sys.argv[2:]]
print(json.dumps({"missing": missing,
                  "required": str(hostdeps.missing_error(required, "the restorekeeper command")) if required else "",
                  "optional": str(hostdeps.missing_error(missing, "some configurations")) if missing else ""}))
"""


def default_python() -> str:
    """Debian's interpreter is world-readable; a pyenv one under /root is not."""
    return "/usr/bin/python3" if os.access("/usr/bin/python3", os.X_OK) else sys.executable


def read_pins(path: Path = REQUIREMENTS) -> list[str]:
    """The `name==version` requirement lines (comments and blanks dropped)."""
    if not path.is_file():
        return list(FALLBACK_PINS)
    pins = []
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            pins.append(line)
    return pins


def atomic_write(path: Path, data: bytes, mode: int) -> None:
    """Write via a temp file in the same directory, fsync, then rename over `path`."""
    fd, temp = tempfile.mkstemp(prefix=".%s." % path.name, dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temp, mode)
        os.replace(temp, path)
    except BaseException:
        if os.path.exists(temp):
            os.unlink(temp)
        raise


def venv_python(prefix: Path) -> Path:
    return prefix / "bin" / "python"


def tool_interpreter(prefix: Path, packages: str, python: str) -> Path:
    """The interpreter the launcher runs: the given one, or the venv's in pip mode."""
    return venv_python(prefix) if packages == PIP else Path(python)


def site_directories(interpreter: Path) -> list[str]:
    """The directories the site module adds for `interpreter` (the launcher skips site with -S)."""
    result = subprocess.run([str(interpreter), "-IS", "-c", SITE_PROBE], capture_output=True, text=True,
                            check=False)
    if result.returncode != 0:
        raise SystemExit("cannot ask %s for its site directories: %s" % (interpreter, result.stderr.strip()))
    return [str(entry) for entry in json.loads(result.stdout)]


def check_host_packages(interpreter: Path, engine_parent: Path) -> None:
    """Fail naming the distribution packages when a required module is missing; report optional ones."""
    result = subprocess.run([str(interpreter), "-I", "-c", DEPENDENCY_PROBE, str(engine_parent), *REQUIRED_MODULES],
                            capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise SystemExit("cannot check the packages of %s: %s" % (interpreter, result.stderr.strip()))
    report = json.loads(result.stdout)
    if report["required"]:
        raise SystemExit(report["required"])
    if report["optional"]:
        print("note: " + report["optional"], file=sys.stderr)


def installed_versions(prefix: Path, names: Sequence[str]) -> dict[str, Optional[str]]:
    """Versions of `names` inside the venv, None for missing ones."""
    probe = (
        "import importlib.metadata as m, sys\n"
        "for n in sys.argv[1:]:\n"
        "    try: print(n, m.version(n))\n"
        "    except m.PackageNotFoundError: print(n, '-')\n"
    )
    result = subprocess.run(
        [str(venv_python(prefix)), "-I", "-c", probe, *names], capture_output=True, text=True, check=False
    )
    found: dict[str, Optional[str]] = {name: None for name in names}
    if result.returncode != 0:
        return found
    for line in result.stdout.splitlines():
        name, _sep, version = line.partition(" ")
        found[name] = None if version == "-" else version
    return found


def pins_satisfied(prefix: Path, pins: Sequence[str]) -> bool:
    """True when every `name==version` pin is installed at exactly that version."""
    if not venv_python(prefix).exists():
        return False
    exact = [re.match(r"^([A-Za-z0-9_.\-]+)==([^\s;]+)$", pin) for pin in pins]
    if not all(exact):  # a pin we cannot check: let pip decide
        return False
    wanted = {m.group(1): m.group(2) for m in exact if m}
    have = installed_versions(prefix, list(wanted))
    return all(have.get(name) == version for name, version in wanted.items())


def include_system_site_packages(prefix: Path) -> None:
    """Turn on include-system-site-packages in a venv made before it was the rule (rewrites pyvenv.cfg once)."""
    config = prefix / "pyvenv.cfg"
    text = config.read_text(encoding="utf-8")
    fixed = re.sub(r"(?m)^include-system-site-packages\s*=.*$", "include-system-site-packages = true", text)
    if fixed != text:
        atomic_write(config, fixed.encode("utf-8"), 0o644)


def ensure_venv(prefix: Path, python: str, pins: Sequence[str]) -> None:
    if not venv_python(prefix).exists():
        # --system-site-packages: the venv never has less than the host's Python, which runs the modules.
        subprocess.run([python, "-m", "venv", "--system-site-packages", str(prefix)], check=True)
    include_system_site_packages(prefix)
    if pins_satisfied(prefix, pins):
        return
    requirement_args: list[str] = []
    if REQUIREMENTS.is_file():
        requirement_args = ["-r", str(REQUIREMENTS)]
    else:
        requirement_args = list(pins)
    subprocess.run(
        [str(prefix / "bin" / "pip"), "install", "--disable-pip-version-check", "--no-input", *requirement_args],
        check=True,
    )


def install_engine(prefix: Path, interpreter: Path) -> Path:
    """Copy the engine's package tree; modules of an older version that this one no longer ships are removed."""
    target = prefix / "lib" / ENGINE_PACKAGE
    target.mkdir(parents=True, exist_ok=True)
    os.chmod(prefix / "lib", 0o755)
    os.chmod(target, 0o755)
    sources = engine_sources()
    if not sources:
        raise SystemExit("no engine modules found in %s" % ENGINE_SOURCE)
    wanted = set(sources) | {Path("__init__.py")}
    for relative in sources:
        destination = target / relative
        for directory in reversed(relative.parents[:-1]):
            (target / directory).mkdir(exist_ok=True)
            os.chmod(target / directory, 0o755)
        atomic_write(destination, (ENGINE_SOURCE / relative).read_bytes(), 0o644)
    atomic_write(target / "__init__.py", b"", 0o644)
    for stale in target.rglob("*.py"):
        if stale.relative_to(target) not in wanted:
            stale.unlink()
    # Byte-compile as the installer: the server user usually cannot write
    # __pycache__ here, and every archive_command run would recompile otherwise.
    subprocess.run([str(interpreter), "-I", "-m", "compileall", "-q", str(target)], check=True)
    return target


def engine_sources() -> List[Path]:
    """The engine's modules, relative to plugins/module_utils (its packages and their __init__.py)."""
    return sorted(path.relative_to(ENGINE_SOURCE) for path in ENGINE_SOURCE.rglob("*.py")
                  if "__pycache__" not in path.parts and path.parent != ENGINE_SOURCE)


def launcher_text(interpreter: Path, engine_parent: Path, site_dirs: Sequence[str]) -> str:
    return LAUNCHER_TEMPLATE.format(interpreter=interpreter, engine_path=json.dumps([str(engine_parent)]),
                                    site_dirs=json.dumps(list(site_dirs)))


def install_launcher(prefix: Path, interpreter: Path) -> Path:
    launcher = prefix / "bin" / LAUNCHER_NAME
    launcher.parent.mkdir(parents=True, exist_ok=True)
    os.chmod(launcher.parent, 0o755)
    text = launcher_text(interpreter, prefix / "lib", site_directories(interpreter))
    atomic_write(launcher, text.encode("utf-8"), 0o755)
    # The shell quick path of archive_command; it runs the launcher next to it.
    atomic_write(launcher.parent / ARCHIVE_SCRIPT.name, ARCHIVE_SCRIPT.read_bytes(), 0o755)
    return launcher


def chown_tree(prefix: Path, owner: str) -> None:
    entry = pwd.getpwnam(owner)
    for dirpath, dirnames, filenames in os.walk(prefix):
        os.chown(dirpath, entry.pw_uid, entry.pw_gid)
        for name in filenames:
            os.chown(os.path.join(dirpath, name), entry.pw_uid, entry.pw_gid, follow_symlinks=False)


def install(prefix: Path, python: str, owner: Optional[str] = None, packages: str = DISTRIBUTION) -> Path:
    """Build or refresh the layout under `prefix`; returns the launcher path."""
    if not prefix.is_absolute():
        raise SystemExit("--prefix must be an absolute path: the launcher embeds it")
    if packages not in PACKAGE_MODES:
        raise SystemExit("--packages must be one of %s" % ", ".join(PACKAGE_MODES))
    if not os.path.isabs(python) or not os.access(python, os.X_OK):
        raise SystemExit("--python %s is not an absolute path to an executable interpreter" % python)
    os.umask(0o022)  # the server OS user must be able to read and run everything
    prefix.mkdir(parents=True, exist_ok=True)
    # Serialise concurrent installs into one prefix (parallel test sessions).
    with open(prefix / ".install.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if packages == PIP:
            ensure_venv(prefix, python, read_pins())
        interpreter = tool_interpreter(prefix, packages, python)
        install_engine(prefix, interpreter)
        if packages == DISTRIBUTION:
            check_host_packages(interpreter, prefix / "lib")
        launcher = install_launcher(prefix, interpreter)
        if owner:
            chown_tree(prefix, owner)
    return launcher


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--prefix", required=True, type=Path, help="install root (a virtualenv with --packages pip)")
    parser.add_argument("--packages", choices=PACKAGE_MODES, default=DISTRIBUTION,
                        help="distribution: run --python with the host's packages (default); "
                        "pip: a virtualenv of --python with the pinned packages")
    parser.add_argument("--python", default=default_python(),
                        help="the interpreter the modules use (ansible_python_interpreter); "
                        "in pip mode the base of the venv")
    parser.add_argument("--owner", help="OS user to own the installed files (default: leave as is)")
    return parser.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    launcher = install(args.prefix, args.python, args.owner, args.packages)
    print(launcher)
    return 0


if __name__ == "__main__":
    sys.exit(main())
