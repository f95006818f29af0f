"""Progress where there was none: admin cleanup shows its prune's phases, static-delta
generate a timer and then what it wrote; on a pipe both print exactly what they did."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.cli.test_progress import (
    QUIET_BOOT,
    SUMMARY_TIME,
    in_terminal,
    on_a_pipe,
    os_sysroot,
    summary,
)
from tests.helpers import IS_ROOT, write_tree


def test_static_delta_generate_says_what_it_wrote(tmp_path: Path) -> None:
    repo = tmp_path / "archive"
    tree = write_tree(tmp_path / "t", {f"d/f{n}": f"file {n}\n" for n in range(50)})
    assert on_a_pipe("--repo", repo, "init", "--mode", "archive").returncode == 0
    for branch in ("a", "b"):
        assert on_a_pipe("--repo", repo, "commit", "-b", branch, tree).returncode == 0
    piped = on_a_pipe("--repo", repo, "static-delta", "generate", "--to", "a")
    shown = in_terminal("--repo", repo, "static-delta", "generate", "--to", "b")
    assert piped.returncode == shown.code == 0 and piped.stderr == b""
    assert re.fullmatch(rb"[0-9a-f]{64}\n", piped.stdout) and re.fullmatch(
        rb"[0-9a-f]{64}\n", shown.out
    )
    line = summary(shown, "static-delta")
    assert re.fullmatch(rf"static-delta: generated 1 part, [\d.]+ \w+ {SUMMARY_TIME}", line), line


@pytest.mark.skipif(not IS_ROOT, reason="a sysroot's bare repository needs root")
def test_admin_cleanup_shows_its_prune(tmp_path: Path) -> None:
    env = QUIET_BOOT
    sysroot, repo, tree = os_sysroot(tmp_path, {"usr/share/f": "f\n"})
    extra = write_tree(tmp_path / "extra", {f"x/{n}": f"only here {n}\n" for n in range(30)})
    assert on_a_pipe("--repo", repo, "commit", "-b", "deb/main", tree).returncode == 0
    assert on_a_pipe("admin", "--sysroot", sysroot, "deploy", "deb/main", env=env).returncode == 0
    assert on_a_pipe("--repo", repo, "commit", "-b", "tmp", extra).returncode == 0
    assert on_a_pipe("--repo", repo, "refs", "--delete", "tmp").returncode == 0
    shown = in_terminal("admin", "--sysroot", sysroot, "cleanup", env=env)
    assert shown.code == 0, shown.terminal[-2000:]
    assert shown.out.startswith(b"pruned 33 objects, ")  # 30 files, 2 trees, the commit
    line = summary(shown, "cleanup")
    assert line.startswith("cleanup: deleting 30/30 files (100%) in "), line
    again = on_a_pipe("admin", "--sysroot", sysroot, "cleanup", env=env)
    assert again.stdout == b"pruned 0 objects, 0 bytes freed\n" and again.stderr == b""
