"""The public facade ``import sapwood``: documented, and enough to work end to end."""

from __future__ import annotations

import importlib
import inspect
import logging
import os
import pkgutil
from pathlib import Path

import pytest

import sapwood
from fs.mounts import mounted_at

ROOT = Path(__file__).resolve().parent.parent


def _documented(name: str) -> bool:
    """A class or function has its own docstring (not a dataclass's generated
    signature); any other name (a constant, an alias) is described in the module's."""
    value = getattr(sapwood, name)
    if inspect.isclass(value):
        doc = value.__dict__.get("__doc__") or ""
        return bool(doc.strip()) and not doc.startswith(f"{name}(")
    if inspect.isfunction(value):
        return bool((value.__doc__ or "").strip())
    return f"``{name}``" in (sapwood.__doc__ or "")


@pytest.mark.parametrize("name", sapwood.__all__)
def test_every_public_name_is_documented(name: str) -> None:
    assert _documented(name), f"sapwood.{name} has no docstring"


def test_every_error_class_is_public() -> None:
    for package in ("store", "fs", "mountd", "sapwood"):  # every error class defined
        for module in pkgutil.walk_packages([str(ROOT / package)], f"{package}."):
            importlib.import_module(module.name)
    errors = {
        name
        for name in sapwood.__all__
        if inspect.isclass(getattr(sapwood, name))
        and issubclass(getattr(sapwood, name), sapwood.SapwoodError)
    }
    stack = [sapwood.SapwoodError]
    while stack:
        cls = stack.pop()
        stack += cls.__subclasses__()
        layer = cls.__module__.split(".")[0]
        if layer in {"store", "fs", "mountd", "sapwood"} and "cli" not in cls.__module__:
            assert cls.__name__ in errors, f"{cls.__module__}.{cls.__name__} is not public"


def test_importing_the_facade_loads_no_fuse() -> None:
    """A library user without FUSE can import sapwood: mountd loads on first mount."""
    code = "import sys, sapwood; print('pyfuse3' in sys.modules or 'trio' in sys.modules)"
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def _tree(root: Path) -> None:
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "hostname").write_text("web1\n")
    (root / "etc" / "motd").write_text("hello\n")
    (root / "usr").mkdir()


def test_commit_lookup_diff_checkout_fsck(tmp_path: Path) -> None:
    source = tmp_path / "src"
    _tree(source)
    with sapwood.Repository.init(tmp_path / "repo", sapwood.RepoMode.BARE_USER) as repo:
        first = sapwood.commit(repo, "os/main", source, subject="one")
        assert first.created and sapwood.rev_parse(repo, "os/main") == first.commit_id

        (source / "etc" / "hostname").write_text("web2\n")
        (source / "etc" / "motd").unlink()
        (source / "usr" / "share").mkdir()
        (source / "usr" / "share" / "doc").write_text("doc\n")
        second = sapwood.commit(repo, "os/main", [sapwood.Layer.directory(source)])
        assert sapwood.rev_parse(repo, "os/main^") == first.commit_id
        assert repo.read_commit(second.commit_id).parent == first.commit_id

        node = sapwood.lookup(repo, second.commit_id, "/etc/hostname")
        assert node.file is not None and not node.is_dir
        assert repo.read_file(node.file) == b"web2\n"

        old = sapwood.root_node(repo, first.commit_id)
        new = sapwood.root_node(repo, second.commit_id)
        changes = list(sapwood.diff_trees(repo, old, new))
        assert [(c.kind, c.path) for c in changes] == [
            ("M", b"/etc/hostname"),
            ("D", b"/etc/motd"),
            ("M", b"/usr"),  # the directory's mtime-free meta is equal: its content
            ("A", b"/usr/share"),
        ] or [(c.kind, c.path) for c in changes] == [
            ("M", b"/etc/hostname"),
            ("D", b"/etc/motd"),
            ("A", b"/usr/share"),
        ]
        added = next(c for c in changes if c.kind == "A")
        assert added.old is None and added.new is not None and added.new.is_dir
        assert [n.path for n in sapwood.walk(repo, added.new)] == [
            b"/usr/share",
            b"/usr/share/doc",
        ]
        deleted = next(c for c in changes if c.kind == "D")
        assert deleted.new is None and deleted.old is not None and deleted.old.file is not None
        kind, path, *_ = changes[0]
        assert (kind, path) == ("M", b"/etc/hostname")

        dest = tmp_path / "checkout"
        stats = sapwood.checkout(repo, first.commit_id, dest)
        assert stats.hardlinks + stats.copies == 2
        assert (dest / "etc" / "hostname").read_text() == "web1\n"
        assert list(sapwood.diff_directory(repo, old, dest)) == []
        (dest / "etc" / "motd").write_text("changed\n")
        (dest / "new").write_text("new\n")
        found = list(sapwood.diff_directory(repo, old, dest))
        assert [(c.kind, c.path) for c in found] == [("M", b"/etc/motd"), ("A", b"/new")]
        assert found[0].old == sapwood.lookup(repo, first.commit_id, "/etc/motd")
        assert found[1].old is None and found[1].new is None

        assert sapwood.fsck(repo).problems == []


def test_parent_and_skip_if_unchanged(tmp_path: Path) -> None:
    source = tmp_path / "src"
    _tree(source)
    with sapwood.Repository.init(tmp_path / "repo", sapwood.RepoMode.BARE_USER) as repo:
        first = sapwood.commit(repo, "main", source)
        same = sapwood.commit(repo, "main", source, skip_if_unchanged=True)
        assert not same.created and same.commit_id == first.commit_id
        root = sapwood.commit(repo, "main", source, parent=sapwood.NO_PARENT, subject="r")
        assert repo.read_commit(root.commit_id).parent is None
        child = sapwood.commit(repo, "other", source, parent=first.commit_id, timestamp=7)
        assert repo.read_commit(child.commit_id).parent == first.commit_id
        assert repo.read_commit(child.commit_id).timestamp == 7
        layered = sapwood.commit(
            repo, "layered", [sapwood.Layer.commit("main"), sapwood.Layer.directory(source)]
        )
        assert sapwood.Layer.commit("main").kind is sapwood.LayerKind.REF
        assert repo.read_commit(layered.commit_id).tree == repo.read_commit(first.commit_id).tree
        with pytest.raises(sapwood.ObjectMissingError) as missing:
            sapwood.commit(repo, "main", source, parent=sapwood.ObjectId(b"\x01" * 32))
        assert missing.value.object_id == b"\x01" * 32
        with pytest.raises(sapwood.NothingToCommitError):
            sapwood.commit(repo, "main", [])


def test_errors_carry_their_facts(tmp_path: Path) -> None:
    with pytest.raises(sapwood.RepoNotFoundError):
        sapwood.Repository.open(tmp_path / "nowhere")
    with sapwood.Repository.init(tmp_path / "repo", sapwood.RepoMode.BARE_USER) as repo:
        with pytest.raises(sapwood.RefNotFoundError) as unknown:
            sapwood.rev_parse(repo, "os/main")
        assert unknown.value.rev == "os/main"
        source = tmp_path / "src"
        _tree(source)
        commit_id = sapwood.commit(repo, "main", source).commit_id
        with pytest.raises(sapwood.PathNotFoundError) as absent:
            sapwood.lookup(repo, commit_id, "/no/such")
        assert absent.value.path == "/no/such"


@pytest.mark.skipif(not os.path.exists("/dev/fuse") or os.getuid() != 0, reason="root FUSE")
def test_mount_is_a_context_manager(tmp_path: Path) -> None:
    source = tmp_path / "src"
    _tree(source)
    repo_path, mountpoint = tmp_path / "repo", tmp_path / "mnt"
    mountpoint.mkdir()
    with sapwood.Repository.init(repo_path, sapwood.RepoMode.BARE_USER) as repo:
        commit_id = sapwood.commit(repo, "main", source).commit_id
    with sapwood.mount(repo_path, mountpoint, "main") as mounted:
        assert mounted.commit_id == commit_id
        assert mounted_at(mountpoint) is not None
        assert (mountpoint / "etc" / "hostname").read_text() == "web1\n"
        with pytest.raises(sapwood.MountPointError, match="already a mount point"):
            sapwood.mount(repo_path, mountpoint)
    assert mounted_at(mountpoint) is None
    assert not (mountpoint / "etc").exists()
    with pytest.raises(ChildProcessError):
        os.waitpid(mounted.pid, os.WNOHANG)  # the daemon was collected: no zombie
    with pytest.raises(sapwood.MountPointError, match="would hide the repository"):
        sapwood.mount(repo_path, repo_path)
    with pytest.raises(sapwood.MountPointError, match="not a directory"):
        sapwood.mount(repo_path, source / "etc" / "hostname")


@pytest.mark.skipif(not os.path.exists("/dev/fuse") or os.getuid() != 0, reason="root FUSE")
def test_serve_mount_leaves_the_callers_logging_as_it_was(tmp_path: Path) -> None:
    """logfile= adds a handler for the call only: a failed (or ended) serve_mount
    leaves no handler on the root logger, nor its file open."""
    source = tmp_path / "src"
    _tree(source)
    repo_path, mountpoint = tmp_path / "repo", tmp_path / "mnt"
    mountpoint.mkdir()
    with sapwood.Repository.init(repo_path, sapwood.RepoMode.BARE_USER) as repo:
        sapwood.commit(repo, "main", source)
    before = list(logging.getLogger().handlers)
    with pytest.raises(sapwood.MountError):
        sapwood.serve_mount(
            repo_path,
            mountpoint,
            "main",
            options=[f"logfile={tmp_path / 'log'}", "no_such_fuse_option"],
        )
    assert logging.getLogger().handlers == before


def test_diff_directory_reads_each_tree_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each change's node comes from the walk itself: a directory of many changed files
    is not looked up again per change (that made `sapwood diff REV DIR` quadratic)."""
    source = tmp_path / "src"
    (source / "d").mkdir(parents=True)
    for i in range(200):
        (source / "d" / f"f{i:03d}").write_text(f"{i}\n")
    with sapwood.Repository.init(tmp_path / "repo", sapwood.RepoMode.BARE_USER) as repo:
        commit_id = sapwood.commit(repo, "main", source).commit_id
        for i in range(200):
            (source / "d" / f"f{i:03d}").write_text("changed\n")
        reads = []
        original = sapwood.Repository.read_dirtree

        def counted(self: sapwood.Repository, tree_id: sapwood.ObjectId) -> sapwood.DirTree:
            reads.append(tree_id)
            return original(self, tree_id)

        monkeypatch.setattr(sapwood.Repository, "read_dirtree", counted)
        root = sapwood.root_node(repo, commit_id)
        changes = list(sapwood.diff_directory(repo, root, source))
        assert [c.kind for c in changes] == ["M"] * 200
        assert len(reads) <= 3  # the root and d
        last = changes[-1]
        assert last.path == b"/d/f199" and last.new is None
        assert (
            last.old is not None
            and last.old.file == sapwood.lookup(repo, commit_id, "/d/f199").file
        )


def _undocumented_methods(cls: type) -> list[str]:
    found = []
    for name, value in vars(cls).items():
        function = value.fget if isinstance(value, property) else getattr(value, "__func__", value)
        if name.startswith("_") or not callable(function):
            continue
        if not (getattr(function, "__doc__", None) or "").strip():
            found.append(name)
    return found


@pytest.mark.parametrize(
    "name",
    [
        name
        for name in sapwood.__all__
        if inspect.isclass(getattr(sapwood, name))
        and not issubclass(getattr(sapwood, name), BaseException)
    ],
)
def test_every_public_method_is_documented(name: str) -> None:
    """pdoc's reference shows each method of a public class: none may be blank."""
    assert _undocumented_methods(getattr(sapwood, name)) == [], f"sapwood.{name}"


@pytest.mark.skipif(not os.path.exists("/dev/fuse") or os.getuid() != 0, reason="root FUSE")
def test_a_mount_made_by_relative_path_unmounts_from_anywhere(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _tree(tmp_path / "src")
    (tmp_path / "mnt").mkdir()
    with sapwood.Repository.init(tmp_path / "repo", sapwood.RepoMode.BARE_USER) as repo:
        sapwood.commit(repo, "main", tmp_path / "src")
    monkeypatch.chdir(tmp_path)
    with sapwood.mount(Path("repo"), Path("mnt"), "main") as mounted:
        assert mounted.mountpoint == tmp_path / "mnt"
        monkeypatch.chdir("/")
    assert mounted_at(tmp_path / "mnt") is None
    with pytest.raises(ChildProcessError):
        os.waitpid(mounted.pid, os.WNOHANG)


def test_commit_takes_a_directory_as_str_or_path(tmp_path: Path) -> None:
    """A str is a directory's path (as everywhere in Python), not a sequence of layers."""
    _tree(tmp_path / "src")
    with sapwood.Repository.init(tmp_path / "repo", sapwood.RepoMode.BARE_USER) as repo:
        by_str = sapwood.commit(repo, "a", str(tmp_path / "src"), timestamp=0).commit_id
        by_path = sapwood.commit(repo, "b", tmp_path / "src", timestamp=0).commit_id
        assert by_str == by_path
        assert sapwood.lookup(repo, by_str, "/etc/hostname").file is not None


def test_a_repository_is_named_by_str_or_path(tmp_path: Path) -> None:
    with sapwood.Repository.init(str(tmp_path / "repo"), sapwood.RepoMode.BARE_USER) as made:
        assert made.path == tmp_path / "repo"
    with sapwood.Repository.open(str(tmp_path / "repo")) as opened:
        assert opened.path == tmp_path / "repo" and opened.refs() == {}
    with pytest.raises(sapwood.RepoNotFoundError):
        sapwood.Repository.open(str(tmp_path / "nowhere"))
