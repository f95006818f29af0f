"""Users' data in deployments (attack23 21): a dropped deployment whose /home, /root,
/srv, /opt, /mnt or /usr/local holds a file its commit does not have stays on disk,
with a warning naming the file, its commit protected by its ref, until the
administrator moves the data and runs cleanup. A deployment holding only its commit's
files goes as before, and the walk that tells the two apart never follows a symlink
out of the deployment."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import sapwood
from fs.sysroot import users_data
from tests.helpers import IS_ROOT, run
from tests.sysroot.conftest import commit, small_tree

pytestmark = pytest.mark.skipif(not IS_ROOT, reason="a sysroot's bare repository needs root")

FILES = {"usr/etc/motd": "1\n", "home": "/", "root/.profile": "# root\n", "usr/local/bin": "/"}


def _update_twice(sysroot: sapwood.Sysroot, tmp_path: Path, first: sapwood.Deployment) -> None:
    """Deploy, boot into it, deploy again: ``first`` is dropped by the second deploy."""
    booted = first
    for version in ("2", "3"):
        commit(sysroot, small_tree(tmp_path / f"v{version}", {**FILES, "usr/etc/v": version}))
        cmdline = f"root=/dev/vda sapwood={booted.boot_path}"
        result = sapwood.Sysroot(sysroot.path, cmdline=cmdline).deploy("debian/main")
        booted = result.deployment
    assert first.key() not in {d.key() for d in sysroot.deployments()}


def _refs(sysroot: sapwood.Sysroot) -> list[str]:
    with sysroot.open_repository() as repo:
        return sorted(repo.refs())


def test_a_dropped_deployment_with_a_users_file_stays_on_disk_until_it_is_moved(
    sysroot: sapwood.Sysroot, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    commit(sysroot, small_tree(tmp_path / "v1", FILES))
    first = sysroot.deploy("debian/main").deployment
    running = sysroot.deployment_path(first)
    (running / "home/alice").mkdir()
    (running / "home/alice/thesis.tex").write_text("three years of work\n")
    _update_twice(sysroot, tmp_path, first)
    assert (running / "home/alice/thesis.tex").read_text() == "three years of work\n"
    assert any("home/alice/thesis.tex" in r.getMessage() for r in caplog.records)
    assert f"sapwood/deploy/debian/{first.name}" in _refs(sysroot)  # its objects stay
    assert [d.key() for d in sysroot.kept_on_disk()] == [first.key()]
    status = run("admin", "--sysroot", sysroot.path, "status", text=True)
    assert f"- debian {first.name} (not listed: kept on disk for users' data)" in status.stdout
    sysroot.cleanup()  # still there: kept again, its commit not pruned
    assert (running / "root/.profile").read_text() == "# root\n"
    (running / "home/alice/thesis.tex").rename(tmp_path / "thesis.tex")  # moved away
    sysroot.cleanup()
    assert not running.exists()
    assert f"sapwood/deploy/debian/{first.name}" not in _refs(sysroot)
    assert sysroot.kept_on_disk() == []


def test_a_commit_with_files_in_root_is_deployed_with_one_warning(
    sysroot: sapwood.Sysroot, tmp_path: Path
) -> None:
    commit(sysroot, small_tree(tmp_path / "v1", FILES))
    [warning] = sysroot.deploy("debian/main").warnings
    assert "keeps files in /root:" in warning and "prepare-tree" in warning  # not /home
    commit(sysroot, small_tree(tmp_path / "v2", {"usr/etc/motd": "2\n", "root": "/"}))
    assert sysroot.deploy("debian/main").warnings == []  # an empty /root: nothing to edit


def test_a_dropped_deployment_with_only_its_commits_files_is_removed(
    sysroot: sapwood.Sysroot, tmp_path: Path
) -> None:
    commit(sysroot, small_tree(tmp_path / "v1", FILES))
    first = sysroot.deploy("debian/main").deployment
    running = sysroot.deployment_path(first)
    (running / "home/alice").mkdir()  # an empty directory and a link hold no data
    (running / "home/alice/link").symlink_to("/etc/passwd")
    (running / "tmp/scratch").parent.mkdir(exist_ok=True)
    (running / "tmp/scratch").write_text("not users' data: /tmp\n")
    _update_twice(sysroot, tmp_path, first)
    assert not running.exists()


@pytest.mark.parametrize("where", ["root/notes", "srv/www/index.html", "usr/local/bin/tool"])
def test_each_users_directory_counts(sysroot: sapwood.Sysroot, tmp_path: Path, where: str) -> None:
    commit(sysroot, small_tree(tmp_path / "v1", FILES))
    first = sysroot.deploy("debian/main").deployment
    written = sysroot.deployment_path(first) / where
    written.parent.mkdir(parents=True, exist_ok=True)
    written.write_text("kept\n")
    _update_twice(sysroot, tmp_path, first)
    assert written.read_text() == "kept\n"


def test_the_walk_never_follows_a_symlink_out_of_the_deployment(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    (outside / "deep").mkdir(parents=True)
    (outside / "deep/secret").write_text("not the deployment's\n")
    deployment = tmp_path / "deployment"
    (deployment / "srv").mkdir(parents=True)
    (deployment / "home").symlink_to(outside)  # as a prepared tree: home -> var/home
    (deployment / "srv/www").symlink_to(outside / "deep")
    (deployment / "usr").mkdir()
    (deployment / "usr/local").symlink_to(outside)
    assert users_data.users_file(deployment, _no_commit) is None
    (deployment / "srv/mine").write_text("mine\n")
    assert users_data.users_file(deployment, _no_commit) == "srv/mine"


def _no_commit(directory: str) -> dict[str, users_data.CommitFile]:
    return {}


def test_only_the_commits_very_inodes_are_taken_for_its_files(tmp_path: Path) -> None:
    deployment = tmp_path / "deployment"
    (deployment / "root").mkdir(parents=True)
    (tmp_path / "object").write_text("of the commit\n")
    os.utime(tmp_path / "object", ns=(0, 0))  # as every object (store/content.py)
    os.link(tmp_path / "object", deployment / "root/.profile")
    st = os.stat(tmp_path / "object")

    def never_read() -> int:  # its very inode: the bytes are not compared
        raise AssertionError("the object's file was opened")

    profile = users_data.CommitFile(st.st_dev, st.st_ino, st.st_size, never_read)
    objects = {"root": {".profile": profile}}

    def commit_files(directory: str) -> dict[str, users_data.CommitFile]:
        return objects.get(directory, {})

    assert users_data.users_file(deployment, commit_files) is None
    assert users_data.users_file(deployment, _no_commit) == "root/.profile"  # not its name
    os.link(deployment / "root/.profile", deployment / "root/profile-copy")  # a user's link
    assert users_data.users_file(deployment, commit_files) == "root/profile-copy"
    os.unlink(deployment / "root/profile-copy")
    (deployment / "root/.bash_history").write_text("ls\n")
    assert users_data.users_file(deployment, commit_files) == "root/.bash_history"
    os.unlink(deployment / "root/.bash_history")
    with open(deployment / "root/.profile", "a") as edited:  # through the object's link
        edited.write("alias ll='ls -l'\n")
    assert users_data.users_file(deployment, commit_files) == "root/.profile"


def test_a_tree_too_deep_to_walk_is_kept(tmp_path: Path) -> None:
    deployment = tmp_path / "deployment"
    deep = deployment / "mnt"
    deep.mkdir(parents=True)
    for _ in range(users_data.MAX_DEPTH + 2):
        deep = deep / "d"
        deep.mkdir()
    assert (users_data.users_file(deployment, _no_commit) or "").endswith("(too deep to look into)")
    assert users_data.users_file(tmp_path / "absent", _no_commit) is None


def test_undeploy_by_the_command_keeps_the_data_and_says_so_in_one_line(
    sysroot: sapwood.Sysroot, tmp_path: Path
) -> None:
    commit(sysroot, small_tree(tmp_path / "v1", FILES))
    old = sysroot.deploy("debian/main").deployment
    commit(sysroot, small_tree(tmp_path / "v2", {**FILES, "usr/etc/v": "2"}))
    sysroot.deploy("debian/main")
    (sysroot.deployment_path(old) / "root/notes").write_text("the admin's notes\n")
    proc = run("admin", "--sysroot", sysroot.path, "undeploy", "1", text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.count("\n") == 1 and "root/notes is not of its commit" in proc.stderr
    assert [d.key() for d in sysroot.deployments()] != [] and old.key() not in {
        d.key() for d in sysroot.deployments()
    }
    assert (sysroot.deployment_path(old) / "root/notes").read_text() == "the admin's notes\n"
