"""review22 (session 17): users' directories as copies (98f5c59, 0535034), attacked.

A defect found and not fixed yet is an xfail(strict=True) test naming its finding in
/work/plan/review22.md; a guard that passes is a plain test."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import pytest

import sapwood
from tests.helpers import IS_ROOT
from tests.sysroot.conftest import commit, small_tree

pytestmark = pytest.mark.skipif(not IS_ROOT, reason="a sysroot's bare repository needs root")

FILES = {
    "usr/etc/motd": "1\n",
    "root/.profile": "# root's profile\n",
    "srv/www/index.html": "<p>hi</p>\n",
    "opt/app/bin/tool": "#!/bin/sh\necho tool\n",
    "usr/bin/tool": "#!/bin/sh\necho tool\n",  # the same object as opt/app/bin/tool
}


def _deploy(sysroot: sapwood.Sysroot, tree: Path) -> Path:
    commit(sysroot, tree)
    return sysroot.deployment_path(sysroot.deploy("debian/main").deployment)


def _drop(sysroot: sapwood.Sysroot, tmp_path: Path, first: Path) -> None:
    """Two more releases deployed: the first deployment is no longer listed."""
    for version in ("2", "3"):
        commit(sysroot, small_tree(tmp_path / f"v{version}", {**FILES, "usr/etc/v": version}))
        sysroot.deploy("debian/main")
    assert first.name not in {d.name for d in sysroot.deployments()}


def _xattrs(path: Path) -> dict[str, bytes]:
    return {n: os.getxattr(path, n, follow_symlinks=False) for n in os.listxattr(path)}


def test_a_setuid_file_with_capabilities_in_opt_is_copied_as_the_object_is(
    sysroot: sapwood.Sysroot, tmp_path: Path
) -> None:
    """The copy of /opt/app/bin/tool has exactly the owner, mode (setuid, setgid kept: the
    kernel clears them on chown, so the chown must come first) and xattrs (a capability)
    that the object, linked at /usr/bin/tool, has."""
    tree = small_tree(tmp_path / "v1", FILES)
    for path in ("opt/app/bin/tool", "usr/bin/tool"):
        os.chown(tree / path, 0, 50)
        os.chmod(tree / path, 0o6755)
        subprocess.run(["setcap", "cap_net_raw+ep", str(tree / path)], check=True)
    deployment = _deploy(sysroot, tree)
    copy, linked = deployment / "opt/app/bin/tool", deployment / "usr/bin/tool"
    made, held = copy.stat(), linked.stat()
    assert (made.st_dev, made.st_ino) != (held.st_dev, held.st_ino)
    assert stat.S_IMODE(held.st_mode) == 0o6755 and (held.st_uid, held.st_gid) == (0, 50)
    assert (made.st_mode, made.st_uid, made.st_gid) == (held.st_mode, held.st_uid, held.st_gid)
    assert "security.capability" in _xattrs(linked)
    assert _xattrs(copy) == _xattrs(linked)


def test_one_object_twice_in_opt_becomes_two_copies_and_both_go_with_the_deployment(
    sysroot: sapwood.Sysroot, tmp_path: Path
) -> None:
    tree = small_tree(tmp_path / "v1", FILES)
    os.link(tree / "opt/app/bin/tool", tree / "opt/app/bin/tool2")
    first = _deploy(sysroot, tree)
    one, two = (first / "opt/app/bin/tool").stat(), (first / "opt/app/bin/tool2").stat()
    assert one.st_ino != two.st_ino and one.st_nlink == two.st_nlink == 1
    with (first / "opt/app/bin/tool").open("a") as edited:  # the other copy is not touched
        edited.write("# mine\n")
    assert (first / "opt/app/bin/tool2").read_text() == FILES["opt/app/bin/tool"]
    (first / "opt/app/bin/tool").unlink()  # edit undone by removal: nothing of a user's left
    _drop(sysroot, tmp_path, first)
    assert not first.exists()


@pytest.mark.parametrize("shape", ["file", "symlink out"])
def test_a_users_dir_that_is_no_directory_is_left_as_checked_out(
    sysroot: sapwood.Sysroot, tmp_path: Path, shape: str
) -> None:
    """A commit whose /home is a file, /root, /srv, /opt, /mnt symlinks to a directory out
    of the tree: deploy copies none of them and writes nothing outside the deployment."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "sentinel").write_text("mine\n")
    before = sorted(os.listdir(outside)), outside.stat().st_mtime_ns
    files = {k: v for k, v in FILES.items() if k.split("/")[0] not in ("root", "srv", "opt")}
    if shape == "file":
        files |= {"home": "a file\n", "root": "a file\n"}
    else:
        files |= {name: f"->{outside}" for name in ("home", "root", "srv", "opt", "mnt")}
    deployment = _deploy(sysroot, small_tree(tmp_path / "v1", files))
    for name in ("home", "root") if shape == "file" else ("home", "root", "srv", "opt", "mnt"):
        st = os.lstat(deployment / name)
        assert stat.S_ISREG(st.st_mode) if shape == "file" else stat.S_ISLNK(st.st_mode)
    assert (sorted(os.listdir(outside)), outside.stat().st_mtime_ns) == before
    assert not [n for n in os.listdir(deployment) if n.startswith(".sapwood-")]


def test_a_renamed_commit_directory_keeps_the_deployment(
    sysroot: sapwood.Sysroot, tmp_path: Path
) -> None:
    """mv /srv/www /srv/site: the same bytes, mtime 0, under names the commit lacks."""
    first = _deploy(sysroot, small_tree(tmp_path / "v1", FILES))
    os.rename(first / "srv/www", first / "srv/site")
    _drop(sysroot, tmp_path, first)
    assert (first / "srv/site/index.html").read_text() == FILES["srv/www/index.html"]
    assert [d.name for d in sysroot.kept_on_disk()] == [first.name]


@pytest.mark.parametrize("change", ["chown", "chmod", "xattr"])
def test_a_copy_whose_owner_mode_or_xattrs_alone_changed_goes_with_the_deployment(
    sysroot: sapwood.Sysroot, tmp_path: Path, change: str
) -> None:
    """review22 5, kept by design (docs/deployments.md): an owner, a mode or an xattr
    changed alone (bytes and mtime 0 untouched) is not users' data: no byte a user wrote
    is lost, and the next deployment starts from the commit's file all the same."""
    first = _deploy(sysroot, small_tree(tmp_path / "v1", FILES))
    page = first / "srv/www/index.html"
    if change == "chown":
        os.chown(page, 33, 33)  # chown -R www-data /srv/www
    elif change == "chmod":
        os.chmod(page, 0o600)
    else:
        os.setxattr(page, "user.mime_type", b"text/html")
    assert page.stat().st_mtime_ns == 0  # none of these changes the mtime
    _drop(sysroot, tmp_path, first)
    assert not first.exists()
    assert sysroot.kept_on_disk() == []


def test_a_name_that_is_not_utf8_in_opt_is_copied_and_goes_with_the_deployment(
    sysroot: sapwood.Sysroot, tmp_path: Path
) -> None:
    """copy_entry walks str paths (surrogate escapes), users_data decodes the commit's
    names with os.fsdecode: a Latin-1 name is the commit's file both ways."""
    tree = small_tree(tmp_path / "v1", FILES)
    name = os.fsencode(tree / "opt/app") + b"/caf\xe9.txt"
    with open(name, "wb") as made:
        made.write(b"latin-1\n")
    first = _deploy(sysroot, tree)
    copied = os.fsencode(first / "opt/app") + b"/caf\xe9.txt"
    st = os.stat(copied)
    assert (st.st_nlink, st.st_mtime_ns) == (1, 0)
    with open(copied, "rb") as read:
        assert read.read() == b"latin-1\n"
    _drop(sysroot, tmp_path, first)
    assert not first.exists()
