"""Running sapwood as a real unprivileged user (uid 65534, 'nobody').

The project's .venv may live where that user cannot enter (root's home, say), so a
world-readable copy is made in /var/tmp: a venv of Debian's python3 with the
installed dependencies and the four packages copied in.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

NOBODY = 65534
ROOT = Path(__file__).resolve().parent.parent
USER_VENV = Path("/var/tmp/sapwood-user-venv")


@functools.cache
def user_python() -> str:
    """A python that uid 65534 can run, with sapwood importable."""
    shutil.rmtree(USER_VENV, ignore_errors=True)
    subprocess.run(["/usr/bin/python3", "-m", "venv", "--without-pip", str(USER_VENV)], check=True)
    source = (
        Path(sys.prefix)
        / "lib"
        / f"python{sys.version_info.major}.{sys.version_info.minor}"
        / "site-packages"
    )
    target = (
        USER_VENV
        / "lib"
        / f"python{sys.version_info.major}.{sys.version_info.minor}"
        / "site-packages"
    )
    shutil.copytree(
        source,
        target,
        dirs_exist_ok=True,
        ignore=shutil.ignore_patterns(
            "__editable__*", "sapwood*", "pip*", "_pytest", "hypothesis*", "mypy*"
        ),
    )
    for package in ("sapwood", "store", "fs", "mountd"):
        shutil.copytree(
            ROOT / package, target / package, ignore=shutil.ignore_patterns("__pycache__")
        )
    subprocess.run(["chmod", "-R", "a+rX", str(USER_VENV)], check=True)
    return str(USER_VENV / "bin" / "python")


def user_dir() -> Path:
    """A fresh directory owned by the unprivileged user, in a place it can reach."""
    path = Path(tempfile.mkdtemp(prefix="sapwood-user-", dir="/tmp"))
    os.chown(path, NOBODY, NOBODY)
    return path


def run_as_user(*args: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``sapwood ARGS`` as uid/gid 65534 with no supplementary groups."""
    argv = [
        "setpriv",
        f"--reuid={NOBODY}",
        f"--regid={NOBODY}",
        "--clear-groups",
        user_python(),
        "-m",
        "sapwood.cli.main",
        *map(str, args),
    ]
    env = {"PATH": "/usr/bin:/bin", "HOME": "/tmp", "LANG": "C.UTF-8"}
    return subprocess.run(
        argv, capture_output=True, text=True, env=env, cwd=cwd or "/tmp", timeout=600
    )
