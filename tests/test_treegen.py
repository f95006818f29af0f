"""benchmarks/treegen.py: the same seed gives a byte-identical tree; a tree cut short is
generated again, a complete one is reused."""

from __future__ import annotations

import hashlib
import os
import stat
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
import treegen

FILES = 400
# path, st_mode, st_size, st_mtime_ns, st_nlink, (content hash, first path) or target, xattrs
Row = tuple[str, int, int, int, int, object, list[tuple[str, bytes]]]


def manifest(root: Path) -> list[Row]:
    """Every entry's path, type, bits, size, mtime, content hash or link target, xattrs,
    and which earlier path it is a hardlink of."""
    rows: list[Row] = []
    first_name: dict[int, str] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(dirnames + filenames):
            path = Path(dirpath) / name
            rel = str(path.relative_to(root))
            st = path.lstat()
            if stat.S_ISLNK(st.st_mode):
                detail: object = os.readlink(path)
            elif stat.S_ISREG(st.st_mode):
                detail = hashlib.sha256(path.read_bytes()).hexdigest()
                detail = (detail, first_name.setdefault(st.st_ino, rel))
            else:
                detail = None
            xattrs = sorted(
                (key, os.getxattr(path, key, follow_symlinks=False))
                for key in os.listxattr(path, follow_symlinks=False)
            )
            rows.append((rel, st.st_mode, st.st_size, st.st_mtime_ns, st.st_nlink, detail, xattrs))
    return rows


def test_the_same_seed_gives_the_same_tree_and_another_seed_another(tmp_path: Path) -> None:
    a = treegen.ensure_tree(FILES, 7, tmp_path / "a")
    b = treegen.ensure_tree(FILES, 7, tmp_path / "b")
    c = treegen.ensure_tree(FILES, 8, tmp_path / "c")
    ours = manifest(a)
    assert ours == manifest(b)
    assert ours != manifest(c)
    kinds = {stat.S_IFMT(row[1]) for row in ours}
    assert kinds == {stat.S_IFDIR, stat.S_IFREG, stat.S_IFLNK}
    assert sum(not stat.S_ISDIR(row[1]) for row in ours) == FILES
    assert any(row[4] > 1 for row in ours), "no hardlinks"
    assert any(row[6] for row in ours), "no xattrs"
    assert len(list((a / "big").iterdir())) == FILES // 10


def test_a_complete_tree_is_reused_and_a_cut_short_one_regenerated(tmp_path: Path) -> None:
    tree = treegen.ensure_tree(FILES, 3, tmp_path)
    expected = manifest(tree)
    (tree / "left-by-a-test").write_text("x")
    assert treegen.ensure_tree(FILES, 3, tmp_path) == tree
    assert (tree / "left-by-a-test").exists(), "a complete tree was generated again"
    (tree.parent / treegen.MARKER).unlink()  # as if the generator had been killed
    assert treegen.ensure_tree(FILES, 3, tmp_path) == tree
    assert manifest(tree) == expected
    assert (tree.parent / treegen.MARKER).exists()
