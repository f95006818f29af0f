"""Users' directories of trees not laid out by prepare-tree (review21 12): a deployment's
real /home, /root, /srv, /opt and /mnt are copies of the commit's (as /etc is), never
hardlinks of the repository's objects, so that an edit in place leaves the repository
and every other deployment alone. A dropped deployment is removed when those copies are
the commit's (name, mtime 0, size and bytes: read once), kept when one was edited; a
deployment made before the copies (hardlinks) still counts its objects' very inodes."""

from __future__ import annotations

import errno
import os
import stat
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

import sapwood
from fs.sysroot import retention, users_data
from store import from_hex, lookup
from tests.helpers import IS_ROOT, run, small_tmpfs
from tests.sysroot.conftest import commit, small_tree

pytestmark = pytest.mark.skipif(not IS_ROOT, reason="a sysroot's bare repository needs root")

PROFILE = "# root's profile\n"
FILES = {
    "usr/etc/motd": "1\n",
    "home": "/",
    "root/.profile": PROFILE,
    "root/.bashrc": "# bashrc\n",
    "srv/www/index.html": "<p>hi</p>\n",
    "usr/local/bin": "/",
}
REPO_ROOT = Path(__file__).resolve().parents[2]


def _deploy_v1(sysroot: sapwood.Sysroot, tmp_path: Path, files: dict[str, str] = FILES) -> Path:
    commit(sysroot, small_tree(tmp_path / "v1", files))
    return sysroot.deployment_path(sysroot.deploy("debian/main").deployment)


def _drop(sysroot: sapwood.Sysroot, tmp_path: Path, first: Path) -> None:
    """Two more releases deployed (nothing booted: the merge deployment, the previous
    default, stays listed): the first deployment is dropped by the second."""
    for version in ("2", "3"):
        commit(sysroot, small_tree(tmp_path / f"v{version}", {**FILES, "usr/etc/v": version}))
        sysroot.deploy("debian/main")
    assert first.name not in {d.name for d in sysroot.deployments()}


def _object_of(sysroot: sapwood.Sysroot, deployment: Path, path: str) -> tuple[str, bytes]:
    """The object file of ``path`` in the deployment's commit, and its bytes."""
    with sysroot.open_repository() as repo:
        node = lookup(repo, from_hex(deployment.name.split(".")[0]), path)
        assert node.file is not None
        return repo.object_path(node.file), repo.read_file(node.file)


def test_a_deployed_users_file_is_a_copy_with_the_objects_metadata(
    sysroot: sapwood.Sysroot, tmp_path: Path
) -> None:
    tree = small_tree(tmp_path / "v1", FILES)
    os.chmod(tree / "root", 0o700)
    os.chmod(tree / "root/.profile", 0o640)
    os.chown(tree / "srv/www/index.html", 1000, 1001)
    try:
        os.setxattr(tree / "root/.profile", "user.d4", b"kept")
        xattr = True
    except OSError:
        xattr = False  # a filesystem without user xattrs
    commit(sysroot, tree)
    deployment = sysroot.deployment_path(sysroot.deploy("debian/main").deployment)
    profile = deployment / "root/.profile"
    object_path, content = _object_of(sysroot, deployment, "/root/.profile")
    st, held = profile.stat(), os.stat(object_path)
    assert (st.st_nlink, st.st_mtime_ns) == (1, 0)
    assert (st.st_dev, st.st_ino) != (held.st_dev, held.st_ino)
    assert profile.read_bytes() == content == PROFILE.encode()
    assert stat.S_IMODE(st.st_mode) == 0o640
    assert stat.S_IMODE((deployment / "root").stat().st_mode) == 0o700
    assert (deployment / "root").stat().st_mtime_ns == 0
    www = (deployment / "srv/www/index.html").stat()
    assert (www.st_uid, www.st_gid, www.st_nlink, www.st_mtime_ns) == (1000, 1001, 1, 0)
    if xattr:
        assert os.getxattr(profile, "user.d4") == b"kept"
    assert (deployment / "usr/bin/true").stat().st_nlink > 1  # /usr: the objects
    assert not [n for n in os.listdir(deployment) if n.startswith(".sapwood-")]


def test_an_edit_in_place_leaves_the_repository_whole(
    sysroot: sapwood.Sysroot, tmp_path: Path
) -> None:
    first = _deploy_v1(sysroot, tmp_path)
    with (first / "root/.profile").open("a") as edited:
        edited.write("alias ll='ls -l'\n")
    _, content = _object_of(sysroot, first, "/root/.profile")
    assert content == PROFILE.encode()
    proc = run("fsck", repo=sysroot.repo_path, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    again = sysroot.deployment_path(sysroot.deploy("debian/main").deployment)  # same commit
    assert (again / "root/.profile").read_text() == PROFILE
    assert "alias ll" in (first / "root/.profile").read_text()


def test_a_dropped_deployment_of_untouched_copies_is_removed_reading_each_once(
    sysroot: sapwood.Sysroot, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = _deploy_v1(sysroot, tmp_path)
    compared: list[int] = []
    real = users_data._equal

    def counted(fd: int, other: int, size: int) -> bool:
        compared.append(size)
        return real(fd, other, size)

    monkeypatch.setattr(users_data, "_equal", counted)
    _drop(sysroot, tmp_path, first)
    assert not first.exists()
    assert sysroot.kept_on_disk() == []
    # root/.profile, root/.bashrc, srv/www/index.html of the dropped one: by the look,
    # not again by the removal's check
    assert sorted(compared) == sorted(
        len(FILES[p]) for p in ("root/.profile", "root/.bashrc", "srv/www/index.html")
    )


@pytest.mark.parametrize("edit", ["appended", "same size, mtime put back to 0"])
def test_a_dropped_deployment_with_an_edited_copy_is_kept(
    sysroot: sapwood.Sysroot, tmp_path: Path, caplog: pytest.LogCaptureFixture, edit: str
) -> None:
    first = _deploy_v1(sysroot, tmp_path)
    profile = first / "root/.profile"
    if edit == "appended":
        with profile.open("a") as edited:
            edited.write("export EDITOR=vi\n")
    else:
        with profile.open("r+") as edited:  # in place: the same inode, the same size
            edited.write("#")
            edited.write("ROOT")
        os.utime(profile, ns=(0, 0))
        assert profile.stat().st_size == len(PROFILE) and profile.read_text() != PROFILE
    written = profile.read_text()
    _drop(sysroot, tmp_path, first)
    assert profile.read_text() == written
    assert [d.name for d in sysroot.kept_on_disk()] == [first.name]
    assert any("root/.profile is not of its commit" in r.getMessage() for r in caplog.records)


def test_a_copy_edited_after_the_look_is_not_removed(
    sysroot: sapwood.Sysroot, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The look read the copy and found the commit's bytes; it is rewritten (same size,
    mtime put back to 0) before the removal reaches it: the removal's check asks again
    (its ctime changed) and keeps it."""
    first = _deploy_v1(sysroot, tmp_path)
    profile = first / "root/.profile"
    real = users_data.users_file  # what retention calls

    def looked_then_edited(path: Path, *args: Any) -> str | None:
        found = real(path, *args)
        if path == first:
            assert found is None
            with profile.open("r+") as edited:
                edited.write("#ROOT")
            os.utime(profile, ns=(0, 0))
        return found

    monkeypatch.setattr(retention, "users_file", looked_then_edited)
    _drop(sysroot, tmp_path, first)
    assert profile.read_text() == "#ROOT" + PROFILE[5:]


def test_a_deployment_made_before_the_copies_still_counts_the_objects_inodes(
    sysroot: sapwood.Sysroot, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Deployed before session 17, its users' files are the objects themselves: counted
    as the commit's without reading them."""

    def never(fd: int, other: int, size: int) -> bool:
        raise AssertionError("an object's own inode was read")

    monkeypatch.setattr(users_data, "_equal", never)
    first = _deploy_v1(sysroot, tmp_path)
    for path in ("root/.profile", "root/.bashrc", "srv/www/index.html"):
        object_path, _ = _object_of(sysroot, first, "/" + path)
        (first / path).unlink()
        os.link(object_path, first / path)  # as deploy checked it out then
        assert (first / path).stat().st_nlink > 1
    _drop(sysroot, tmp_path, first)
    assert not first.exists()


def test_a_prepared_trees_links_into_var_stay_links(
    sysroot: sapwood.Sysroot, tmp_path: Path
) -> None:
    files = {
        "usr/etc/motd": "1\n",
        "var/roothome/.profile": PROFILE,
        "root": "->var/roothome",
        "home": "->var/home",
        "srv": "->/etc",  # absolute, out of the tree: never followed
        "opt": "->var/opt",
        "mnt": "->var/mnt",
        "usr/local": "->../var/usrlocal",
    }
    deployment = _deploy_v1(sysroot, tmp_path, files)
    for name in ("root", "home", "srv", "opt", "mnt", "usr/local"):
        assert (deployment / name).is_symlink()
        assert os.readlink(deployment / name) == files[name][2:]
    assert not [n for n in os.listdir(deployment) if n.startswith(".sapwood-")]


def test_a_symlink_out_of_the_tree_in_opt_is_copied_as_a_symlink(
    sysroot: sapwood.Sysroot, tmp_path: Path
) -> None:
    files = {
        **FILES,
        "opt/app/shadow": "->../../../etc/shadow",
        "opt/abs": "->/etc/shadow",
        "opt/passwd-dir": "->/etc",
    }
    deployment = _deploy_v1(sysroot, tmp_path, files)
    for path in ("opt/app/shadow", "opt/abs", "opt/passwd-dir"):
        assert (deployment / path).is_symlink()
        assert os.readlink(deployment / path) == files[path][2:]
    assert sorted(os.listdir(deployment / "opt")) == ["abs", "app", "passwd-dir"]
    assert os.listdir(deployment / "opt/app") == ["shadow"]


def test_a_full_disk_while_copying_deploys_nothing(tmp_path: Path) -> None:
    """The checkout's hardlinks take no room; the copy of /opt does not fit."""
    big = os.urandom(12 << 20)
    with small_tmpfs(tmp_path / "disk", "40m") as disk:
        sysroot = sapwood.Sysroot.init_fs(disk / "sysroot")
        sysroot.os_init("debian")
        tree = small_tree(tmp_path / "v1", FILES)
        (tree / "opt").mkdir()
        (tree / "opt/big").write_bytes(big)
        commit(sysroot, tree)
        filler = disk / "filler"
        room = os.statvfs(disk).f_bavail * os.statvfs(disk).f_frsize
        filler.write_bytes(b"\0" * max(room - (6 << 20), 0))  # room for less than opt/big
        with pytest.raises(sapwood.OutOfSpaceError, match="nothing was deployed"):
            sapwood.Sysroot(disk / "sysroot", cmdline="quiet").deploy("debian/main")
        assert sysroot.deployments() == []
        assert os.listdir(disk / "sysroot/sapwood/deploy/debian/deploy") == []
        filler.unlink()
        deployment = sysroot.deploy("debian/main").deployment
        assert (sysroot.deployment_path(deployment) / "opt/big").read_bytes() == big


_KILLED_DEPLOY = """
import os, sys
from pathlib import Path
import sapwood
from fs.sysroot import copying, deploy

where = sys.argv[2]
real_copy, real_remove = copying._copy_file, deploy.remove_own_tree

def copy_then_die(src, dst, size):
    real_copy(src, dst, size)
    if where == "copying" and dst.name == ".bashrc":
        os._exit(9)  # root/.bashrc copied, .profile not yet

def remove_then_die(path, *args):
    found = real_remove(path, *args)
    if where == "removed" and path.name == "root":
        os._exit(9)  # the hardlinked /root gone, its copy not renamed in
    return found

copying._copy_file = copy_then_die
deploy.remove_own_tree = remove_then_die
sapwood.Sysroot(Path(sys.argv[1]), cmdline="quiet").deploy("debian/main")
"""


@pytest.mark.parametrize("where", ["copying", "removed"])
def test_a_deploy_killed_while_copying_leaves_nothing_for_ever(
    sysroot: sapwood.Sysroot, tmp_path: Path, caplog: pytest.LogCaptureFixture, where: str
) -> None:
    commit(sysroot, small_tree(tmp_path / "v1", FILES))
    script = textwrap.dedent(_KILLED_DEPLOY)
    proc = subprocess.run(
        [sys.executable, "-c", script, str(sysroot.path), where],
        cwd=REPO_ROOT,
        env={**os.environ, "SAPWOOD_CMDLINE": "quiet"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 9, proc.stderr
    deploy_dir = sysroot.path / "sapwood/deploy/debian/deploy"
    (left,) = [p for p in deploy_dir.iterdir() if p.is_dir()]  # ID.0, not listed
    assert [p.name for p in left.iterdir() if p.name.startswith(".sapwood-copying-root-")]
    assert sysroot.deployments() == []
    sysroot.cleanup()
    assert not left.exists()  # removed whole, not kept for users' data
    assert not any("stays on disk" in r.getMessage() for r in caplog.records)
    deployment = sysroot.deploy("debian/main").deployment
    assert (sysroot.deployment_path(deployment) / "root/.profile").read_text() == PROFILE


def test_the_deploy_warning_no_longer_speaks_of_hardlinks(
    sysroot: sapwood.Sysroot, tmp_path: Path
) -> None:
    commit(sysroot, small_tree(tmp_path / "v1", FILES))
    warnings = sysroot.deploy("debian/main").warnings
    (said,) = [w for w in warnings if "keeps files in" in w]
    assert "/root" in said and "/srv" in said and "prepare-tree" in said
    assert "hardlink" not in said
    links_only = {
        **FILES,
        "root": "/",
        "srv/www": "->/var/www",
        "usr/local/man": "->share/man",  # as Debian's: nothing to edit nor to keep
        "opt/app/bin/tool": "->/usr/bin/true",
    }
    del links_only["root/.profile"], links_only["root/.bashrc"], links_only["srv/www/index.html"]
    commit(sysroot, small_tree(tmp_path / "v2", links_only))
    assert sysroot.deploy("debian/main").warnings == []
    commit(sysroot, small_tree(tmp_path / "v3", {**links_only, "opt/app/README": "r\n"}))
    (said,) = sysroot.deploy("debian/main").warnings
    assert "keeps files in /opt:" in said


def test_copying_errors_are_not_space_errors_unless_the_disk_is_full(
    sysroot: sapwood.Sysroot, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another error while copying /srv (EIO): the deploy fails with it and leaves
    nothing (the copies of /home and /root made, /srv's half made)."""
    from fs.sysroot import copying
    from fs.sysroot import deploy as deploy_module

    commit(sysroot, small_tree(tmp_path / "v1", FILES))
    real = copying.copy_entry  # what deploy calls

    def broken(src: Path, dst: Path) -> None:
        if not dst.name.startswith(".sapwood-copying-srv-"):
            real(src, dst)
            return
        dst.mkdir()
        (dst / "half").write_text("half\n")
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(deploy_module, "copy_entry", broken)
    with pytest.raises(OSError, match="Input/output error"):
        sysroot.deploy("debian/main")
    assert sysroot.deployments() == []
    assert os.listdir(sysroot.path / "sapwood/deploy/debian/deploy") == []
