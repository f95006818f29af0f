"""`sapwood admin prepare-tree` (attack23 21, 22): a tree laid out as OSTree's before it
is committed keeps users' data in the OS's shared /var through updates, and each
deployment's dpkg describes its own release. It refuses, changing nothing, a tree of
another shape, and never writes outside the tree through a symlink."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

import sapwood
from fs.sysroot.prepare_tree import TMPFILES
from tests.debian import debian_tree
from tests.helpers import IS_ROOT, cli, run
from tests.sysroot.conftest import commit, small_tree, tree_state

LINKS = {
    "home": "var/home",
    "root": "var/roothome",
    "opt": "var/opt",
    "srv": "var/srv",
    "mnt": "var/mnt",
    "usr/local": "../var/usrlocal",
}
DPKG = ("var/lib/dpkg", "../../usr/lib/sysimage/dpkg")


def _unprepared(root: Path, extra: dict[str, str] | None = None) -> Path:
    files = {"root/.profile": "# root\n", "home": "/", "usr/local/bin": "/", "srv": "/"}
    files |= {"var/lib/dpkg/status": "Package: openssl\nVersion: 1\n", "usr/lib/os": "/"}
    return small_tree(root, files | (extra or {}))


def test_a_tree_is_laid_out_as_ostrees_and_a_second_run_changes_nothing(tmp_path: Path) -> None:
    tree = _unprepared(tmp_path / "t")
    os.chmod(tree / "root", 0o750)
    done = sapwood.prepare_tree(tree)
    assert "home -> var/home: moved" in done and "opt -> var/opt: made" in done
    for link, target in [*LINKS.items(), DPKG]:
        assert os.readlink(tree / link) == target, link
        assert (tree / link).resolve().is_dir(), link  # the link does not dangle
    assert (tree / "var/roothome/.profile").read_text() == "# root\n"
    assert os.stat(tree / "var/roothome").st_mode & 0o777 == 0o750  # moved as it was
    assert (tree / "usr/lib/sysimage/dpkg/status").read_text().endswith("Version: 1\n")
    assert "d /var/home 0755 root root -" in (tree / TMPFILES).read_text()
    state = tree_state(tree)
    assert sapwood.prepare_tree(tree) == []
    assert tree_state(tree) == state


def test_a_run_killed_between_its_move_and_its_link_is_finished_by_the_next(
    tmp_path: Path,
) -> None:
    tree = _unprepared(tmp_path / "t")
    (tree / "home").rename(tree / "var/home")  # moved, then killed before the link
    (tree / "var/home/alice").mkdir()
    sapwood.prepare_tree(tree)
    assert os.readlink(tree / "home") == "var/home"
    assert (tree / "home/alice").is_dir()


def test_a_tree_without_a_root_directory_gets_a_private_one(tmp_path: Path) -> None:
    tree = small_tree(tmp_path / "t", {"usr/lib/os": "/"})
    assert "root -> var/roothome: made" in sapwood.prepare_tree(tree)
    assert os.stat(tree / "var/roothome").st_mode & 0o777 == 0o700
    assert not os.path.lexists(tree / "var/lib/dpkg")  # no package database: no link


@pytest.mark.parametrize(
    ("shape", "says"),
    [
        ({"home": "->/elsewhere"}, "home: is a link to '/elsewhere', not to 'var/home'"),
        ({"var/home/bob/x": "x\n"}, "var/home: is there already, with home a directory"),
        ({"opt": "a file\n"}, "opt: is not a directory"),
        ({"var/srv": "a file\n"}, "var/srv: is there and is not a directory"),
        ({"usr/lib/sysimage": "->../../outside"}, "usr/lib/sysimage: is a symbolic link"),
    ],
)
def test_a_tree_of_another_shape_is_refused_and_left_as_it_was(
    tmp_path: Path, shape: dict[str, str], says: str
) -> None:
    tree = _unprepared(tmp_path / "t", shape)
    state = tree_state(tree)
    result = cli("admin", "prepare-tree", tree)
    assert result.code == 1
    assert says in result.err and result.err.count("\n") == 1, result.err
    assert "nothing was changed" in result.err and "Traceback" not in result.err
    assert tree_state(tree) == state


@pytest.mark.parametrize("link", ["var", "usr", "usr/lib"])
def test_a_symlink_out_of_the_tree_is_never_written_through(tmp_path: Path, link: str) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "kept").write_text("the host's\n")
    tree = _unprepared(tmp_path / "t")
    real = tree / link
    subprocess.run(["rm", "-rf", str(real)], check=True)
    real.symlink_to(outside)
    before, state = tree_state(outside), tree_state(tree)
    with pytest.raises(sapwood.TreeLayoutError, match="is a symbolic link"):
        sapwood.prepare_tree(tree)
    assert tree_state(outside) == before
    assert tree_state(tree) == state


def test_bad_trees_get_one_line_and_no_change(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("not a tree\n")
    for where in (tmp_path / "absent", tmp_path / "file"):
        proc = run("admin", "prepare-tree", where, text=True)
        assert proc.returncode == 1
        assert proc.stderr.startswith("sapwood: error: ") and proc.stderr.count("\n") == 1
        assert "not a directory" in proc.stderr
    assert (tmp_path / "file").read_text() == "not a tree\n"
    assert not (tmp_path / "absent").exists()


needs_root = pytest.mark.skipif(not IS_ROOT, reason="a sysroot's bare repository needs root")


@needs_root
def test_users_data_and_the_package_database_of_a_prepared_tree_through_two_updates(
    sysroot: sapwood.Sysroot, tmp_path: Path
) -> None:
    def release(version: str) -> Path:
        status = f"Package: openssl\nVersion: {version}\n"
        tree = _unprepared(tmp_path / f"v{version}", {"var/lib/dpkg/status": status})
        sapwood.prepare_tree(tree)
        return tree

    commit(sysroot, release("1"))
    result = sysroot.deploy("debian/main")
    assert result.warnings == []  # nothing of the commit's in /root, /home, ...
    booted = result.deployment
    shared = sysroot.path / "sapwood/deploy/debian/var"
    (shared / "home/alice").mkdir()  # booted: /home -> var/home, the shared /var
    (shared / "home/alice/thesis.tex").write_text("three years of work\n")
    for version in ("2", "3"):
        commit(sysroot, release(version))
        cmdline = f"root=/dev/vda sapwood={booted.boot_path}"
        booted = sapwood.Sysroot(sysroot.path, cmdline=cmdline).deploy("debian/main").deployment
        root = sysroot.deployment_path(booted)
        # booted, /var/lib/dpkg is the shared /var's link, resolved in the running tree
        target = os.readlink(shared / "lib/dpkg")
        status = (root / "var/lib" / target / "status").read_text()
        assert status.endswith(f"Version: {version}\n"), "dpkg would report another release"
    assert len(sysroot.deployments()) == 2  # the first went, nothing of alice's with it
    assert (shared / "home/alice/thesis.tex").read_text() == "three years of work\n"


@needs_root
def test_the_debian_tree_prepared_deploys_with_its_layout(
    sysroot: sapwood.Sysroot, tmp_path: Path
) -> None:
    tree = tmp_path / "debian"
    subprocess.run(["cp", "-a", str(debian_tree()), str(tree)], check=True)
    done = sapwood.prepare_tree(tree)
    assert "root -> var/roothome: moved" in done
    assert "var/lib/dpkg -> ../../usr/lib/sysimage/dpkg: moved" in done
    assert (tree / "usr/lib/sysimage/dpkg/status").stat().st_size > 0
    commit(sysroot, tree)
    deployed = sysroot.deployment_path(sysroot.deploy("debian/main").deployment)
    shared = sysroot.path / "sapwood/deploy/debian/var"
    for link, target in LINKS.items():
        assert os.readlink(deployed / link) == target
    assert (shared / "roothome/.bashrc").is_file()  # seeded from the tree's /root
    assert os.readlink(shared / "lib/dpkg") == DPKG[1]
