"""A listed deployment whose commit left the sysroot's repository (attack23's remark,
session 14): its ref deleted by hand and the repository pruned. It no longer blocks
deploy, rollback and cleanup; a warning says to undeploy it, once per command."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

import sapwood
from fs.sysroot import pending, retention
from tests.helpers import IS_ROOT, cli, run
from tests.sysroot.conftest import commit, small_tree

pytestmark = pytest.mark.skipif(not IS_ROOT, reason="a sysroot's bare repository needs root")


def _admin(sysroot: sapwood.Sysroot, *args: str) -> tuple[str, str]:
    result = cli("admin", "--sysroot", sysroot.path, *args)
    assert result.code == 0, result.err
    return result.out, result.err


def test_a_deployment_whose_commit_is_gone_is_skipped_with_a_warning(
    sysroot: sapwood.Sysroot, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    gone = commit(sysroot, small_tree(tmp_path / "a", {"usr/etc/a": "a\n"}), "debian/a")
    kept = commit(sysroot, small_tree(tmp_path / "b", {"usr/etc/b": "b\n"}), "debian/b")
    _admin(sysroot, "deploy", gone)
    _admin(sysroot, "deploy", kept)
    sysroot.pin(1)  # the deployment of "gone" survives the next deploy
    broken = sysroot.deployments()[1]
    with sysroot.open_repository() as repo:  # what a careless administrator does
        repo.delete_ref("debian/a")
        repo.delete_ref(f"sapwood/deploy/debian/{broken.name}")
        sapwood.prune(repo, refs_only=True, depth=0)
        assert not repo.has_object(sapwood.from_hex(gone))

    new = commit(sysroot, small_tree(tmp_path / "c", {"usr/etc/c": "c\n"}), "debian/c")
    done = run("admin", "--sysroot", sysroot.path, "deploy", new, text=True)  # its stderr
    assert done.returncode == 0, done.stderr
    err = done.stderr
    assert [d.commit for d in sysroot.deployments()] == [new, kept, gone]
    warned = [line for line in err.splitlines() if "not in the repository" in line]
    assert len(warned) == 1, err
    assert "deployment 2 " in warned[0] and "undeploy" in warned[0], warned
    assert sysroot.deployment_path(sysroot.deployments()[2]).is_dir()  # never removed here

    caplog.clear()
    _admin(sysroot, "cleanup")  # works, and says it again
    assert [r.message.split(" (")[0] for r in caplog.records] == ["deployment 2"]
    _admin(sysroot, "rollback")
    assert [d.commit for d in sysroot.deployments()] == [kept, new, gone]

    _admin(sysroot, "undeploy", "2")
    assert [d.commit for d in sysroot.deployments()] == [kept, new]
    _admin(sysroot, "cleanup")
    assert not (sysroot.path / "sapwood/deploy/debian/deploy" / broken.name).exists()
    with sysroot.open_repository() as repo:
        assert sorted(r for r in repo.refs() if r.startswith("sapwood/deploy/")) == sorted(
            f"sapwood/deploy/debian/{d.name}" for d in sysroot.deployments()
        )
        assert sapwood.fsck(repo).problems == []


# attack23 11's last sentences: SAPWOOD_CMDLINE overrode /proc/cmdline even for the
# sysroot /, so a variable left in an administrator's environment hid which deployment
# runs (and retention could remove it). It now applies to other sysroots only.
def test_sapwood_cmdline_is_ignored_for_the_real_root(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    proc = Path("/proc/cmdline").read_text()
    monkeypatch.setenv("SAPWOOD_CMDLINE", "ro sapwood=/sapwood/deploy/debian/deploy/X.0")
    assert retention.kernel_cmdline(tmp_path) == "ro sapwood=/sapwood/deploy/debian/deploy/X.0"
    assert "SAPWOOD_CMDLINE" not in caplog.text
    for root in (Path("/"), tmp_path / ".." / ".." / ".." / ".." / ".." / ".."):
        assert retention.kernel_cmdline(root) == proc
    assert sapwood.Sysroot("/")._cmdline() == proc
    assert sapwood.Sysroot("/", cmdline="quiet")._cmdline() == "quiet"  # the API's own
    # said on stderr, once per process (the cache of a previous test may hold it)
    retention._said_ignored.cache_clear()
    caplog.clear()
    retention.kernel_cmdline(Path("/"))
    retention.kernel_cmdline(Path("/"))
    assert [r.message.split(":")[0] for r in caplog.records] == [
        "SAPWOOD_CMDLINE is ignored for the sysroot /"
    ]


# attack23's design remark: /etc changed between a deploy and the reboot is lost;
# status says so, naming a changed path.
def test_status_warns_when_the_booted_etc_changed_after_the_pending_deploy(
    sysroot: sapwood.Sysroot,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    one = commit(sysroot, small_tree(tmp_path / "a", {"usr/etc/passwd": "root:x:0:0\n"}))
    running = sysroot.deploy(one).deployment
    monkeypatch.setenv("SAPWOOD_CMDLINE", f"ro sapwood={running.boot_path}")
    assert sysroot.etc_changed_since_pending() is None  # nothing pending
    two = commit(sysroot, small_tree(tmp_path / "b", {"usr/etc/passwd": "root:x:0:0\n"}))
    sysroot.deploy(two)
    booted = sysroot.booted()
    assert booted is not None and booted.key() == running.key()
    caplog.clear()
    _admin(sysroot, "status")
    assert "changed after deployment 0" not in caplog.text
    assert sysroot.etc_changed_since_pending() is None

    time.sleep(0.05)  # past the coarse clock's tick
    passwd = sysroot.deployment_path(running) / "etc/passwd"
    passwd.write_text("root:x:0:0\nalice:x:1000:1000\n")
    assert sysroot.etc_changed_since_pending() == "passwd"
    caplog.clear()
    out, _ = _admin(sysroot, "status")
    assert "/etc changed after deployment 0 was made (/etc/passwd)" in caplog.text
    assert "changed" not in out  # stdout stays the list

    sysroot.deploy(two)  # deployed again: the merge carried it over
    assert sysroot.etc_changed_since_pending() is None
    pending = sysroot.deployment_path(sysroot.deployments()[0])
    assert "alice" in (pending / "etc/passwd").read_text()


def test_the_etc_walk_of_status_stops_at_its_bound(tmp_path: Path) -> None:
    etc = tmp_path / "etc"
    (etc / "a/sub").mkdir(parents=True)
    for n in range(20):
        (etc / "a" / f"f{n:02}").write_text("x\n")
    (etc / "a/sub/late").write_text("x\n")
    time.sleep(0.05)  # past the coarse clock's tick
    made = tmp_path / "made"
    made.mkdir()
    time.sleep(0.05)
    os.chmod(etc / "a/sub/late", 0o600)  # its ctime changes, no directory's does
    assert pending.etc_changed_after(etc, made) == "a/sub/late"  # after a's 21 entries
    assert pending.etc_changed_after(etc, made, limit=5) is None  # not that far
