"""`log -p`: a commit's changes as a unified diff, in git's layout.

Each changed file gets a ``diff --git a/X b/X`` header, git's extended lines (new or
deleted file mode, old and new mode, an index line of short object ids) and then the
hunks of difflib's unified diff of the two contents, ``--- /dev/null`` for a side that
does not exist. A file holding a NUL byte in its first 8000 bytes (git's test), or
larger than 64 MiB (never read whole into memory) or of more than 2**20 lines (a list
item each), is "Binary files a/X and b/X differ". difflib is quadratic on some inputs;
past a bound on its work (about a second) the lines between the files' common head
and tail are one replacement hunk, as git's xdiff settles for a diff that is not
minimal when one costs too much. A symlink's content is its target. Changes git has
no words for are extra header lines: ``old owner``/``new owner`` (uid:gid) and ``xattrs changed``; a
directory shows only its mode, owner and xattrs lines. A section git apply could not
take (a directory's; a file's whose only change is its owner or xattrs) is headed
``diff --sapwood a/X b/X``, which git apply and patch(1) skip. The diff is bytes: file
contents are written as they are, names quoted as git quotes them (C-style in double
quotes when they hold a control character, a quote, a backslash or a non-ASCII byte;
a ``---``/``+++`` name holding a space ends with a tab), so git apply and patch take it.
"""

from __future__ import annotations

import difflib
import itertools
import re
import stat
from collections.abc import Iterable, Iterator
from typing import BinaryIO, cast

from sapwood import Node, Repository, diff_trees, walk

_BINARY_PROBE = 8000  # git's: a NUL in the first 8000 bytes makes a file binary
_LARGEST_TEXT = 64 << 20  # larger files are not read into memory to be diffed
_NO_ID = "0000000"
_PIECE = 1 << 20  # bytes read at a time from a file too large to diff
_CONTEXT = 3  # lines of context around a hunk (git's default)
_DIFF_WORK = 10_000_000  # difflib's work on one file (about a second) before a coarse hunk
# More lines than this are not diffed either: difflib holds a list item per line and an
# index of them, ~16x the text (a 1 Mi-line file of 31 MB peaked at 521 MB).
_MOST_LINES = 1 << 18

Side = Node | None


def patch(repo: Repository, changes: Iterable[tuple[Side, Side]]) -> bytes:
    """The unified diff of (old, new) node pairs (either None where absent), each file
    once even when the pairs overlap (log -- /etc /etc/ssh)."""
    return b"".join(patch_chunks(repo, changes))


def patch_chunks(repo: Repository, changes: Iterable[tuple[Side, Side]]) -> Iterator[bytes]:
    """patch()'s text a file at a time, to be written as it is made: a commit that adds
    a whole tree holds every file's content in its diff."""
    for old, new in _outermost(changes):
        for pair in _file_pairs(repo, old, new):
            yield _file_patch(repo, *pair)


def _outermost(changes: Iterable[tuple[Side, Side]]) -> list[tuple[Side, Side]]:
    """The changes not inside another (log -- /etc /etc/ssh: /etc's diff holds
    /etc/ssh's), in their order, so each file is shown once without remembering every
    file shown (a set of them was 16 MB for /usr/share's 51,000 files)."""
    pairs = [(pair, _path(*pair)) for pair in changes]
    paths = {path for _, path in pairs}
    kept: list[tuple[Side, Side]] = []
    shown: set[bytes] = set()
    for pair, path in pairs:
        if path not in shown and not any(a in paths for a in _ancestors(path)):
            shown.add(path)
            kept.append(pair)
    return kept


def _path(old: Side, new: Side) -> bytes:
    node = new if new is not None else old
    return b"/" if node is None else node.path


def _ancestors(path: bytes) -> Iterator[bytes]:
    """b"/a/b/c" -> b"/a/b", b"/a", b"/"; nothing for b"/"."""
    while path != b"/":
        path = path.rpartition(b"/")[0] or b"/"
        yield path


def _file_pairs(repo: Repository, old: Side, new: Side) -> Iterator[tuple[bytes, Side, Side]]:
    """(path, old, new) for every file that differs below two nodes, and for every
    directory whose own metadata differs."""
    if old is not None and new is not None and old.dir is not None and new.dir is not None:
        if old.dir.meta != new.dir.meta:
            yield new.path, old, new
        for change in diff_trees(repo, old, new):
            if _both_dirs(change.old, change.new):  # its metadata; diff_trees descends itself
                yield change.path, change.old, change.new
            else:
                yield from _sides(repo, change.old, change.new)
    else:
        yield from _sides(repo, old, new)


def _both_dirs(old: Side, new: Side) -> bool:
    return old is not None and new is not None and old.dir is not None and new.dir is not None


def _sides(repo: Repository, old: Side, new: Side) -> Iterator[tuple[bytes, Side, Side]]:
    """A file against a file of its type is one pair; anything else is the files of
    ``old`` deleted and the files of ``new`` added (a type change is both, as git
    shows a file that became a symlink)."""
    if old is not None and new is not None and old.file is not None and new.file is not None:
        old_type = stat.S_IFMT(repo.read_file_header(old.file)[0].mode)
        if old_type == stat.S_IFMT(repo.read_file_header(new.file)[0].mode):
            yield new.path, old, new
            return
    for node in walk(repo, old) if old is not None else ():
        if node.file is not None:
            yield node.path, node, None
    for node in walk(repo, new) if new is not None else ():
        if node.file is not None:
            yield node.path, None, node


class _Side:
    """What the patch shows of one side of a file or directory."""

    def __init__(self, repo: Repository, node: Side) -> None:
        self.exists = node is not None
        self.mode = self.uid = self.gid = 0
        self.xattrs: tuple[tuple[bytes, bytes], ...] = ()
        self.short_id = _NO_ID
        self.file_id: bytes | None = None  # whole: an abbreviated id can collide
        self.size = 0
        self.target = b""
        self._repo, self._node = repo, node
        if node is not None and node.dir is not None:
            meta = repo.read_dirmeta(node.dir.meta)
            self.mode, self.uid, self.gid, self.xattrs = meta.mode, meta.uid, meta.gid, meta.xattrs
        elif node is not None and node.file is not None:
            header, self.size = repo.read_file_header(node.file)
            self.mode, self.uid, self.gid = header.mode, header.uid, header.gid
            self.xattrs, self.target = header.xattrs, header.symlink_target
            self.short_id = node.file.hex()[:7]
            self.file_id = node.file

    def data(self) -> bytes:
        """The whole content (a symlink's: its target); empty for an absent side."""
        return b"".join(self._chunks())

    def same_data(self, other: _Side) -> bool:
        """Whether two sides hold the same bytes, read a MiB at a time from each (files
        over 64 MiB): stops at the first MiB that differs. Read whole when equal: a
        file object's id covers its mode and owner too, so only the bytes tell a mode
        change from a content change."""
        if self.size != other.size or self.target != other.target:
            return False
        if self.target or self._node is None or other._node is None:
            return True  # the same target (a symlink's content), or both absent
        mine, theirs = self._node.file, other._node.file
        if mine is None or theirs is None:
            return mine is theirs
        with self._repo.open_file(mine) as left, self._repo.open_file(theirs) as right:
            while True:
                piece = _read_full(left, _PIECE)
                if piece != _read_full(right, _PIECE):
                    return False
                if not piece:
                    return True

    def _chunks(self) -> Iterator[bytes]:
        if self.target:
            yield self.target
        elif self._node is not None and self._node.file is not None:
            with self._repo.open_file(self._node.file) as stream:
                while chunk := stream.read(_PIECE):
                    yield chunk


def _read_full(stream: BinaryIO, size: int) -> bytes:
    """``size`` bytes of ``stream`` (fewer only at its end), however its reads split: two
    streams compared piece by piece must cut at the same offsets. A piece is copied
    once at most (the join of one read is that read)."""
    parts: list[bytes] = []
    got = 0
    while got < size and (chunk := stream.read(size - got)):
        parts.append(chunk)
        got += len(chunk)
    return b"".join(parts)


def _file_patch(repo: Repository, path: bytes, old: Side, new: Side) -> bytes:
    before, after = _Side(repo, old), _Side(repo, new)
    a, b = _name(b"a" + path), _name(b"b" + path)
    is_dir = (old is not None and old.dir is not None) or (new is not None and new.dir is not None)
    extended = _mode_lines(before, after)
    large = max(before.size, after.size) > _LARGEST_TEXT
    both = before.exists and after.exists  # else an empty file added or deleted: git's index line
    if (
        is_dir
        or before.file_id == after.file_id
        or (both and (before.same_data(after) if large else before.data() == after.data()))
    ):  # only the mode, owner or xattrs changed
        header = b"diff --git " if _git_applies(before, after, is_dir) else _NOT_GIT
        return header + a + b" " + b + b"\n" + b"".join(extended)
    lines = [b"diff --git " + a + b" " + b + b"\n", *extended]
    same_mode = before.exists and after.exists and _git_mode(before) == _git_mode(after)
    suffix = f" {_git_mode(before):06o}" if same_mode else ""
    lines.append(f"index {before.short_id}..{after.short_id}{suffix}\n".encode())
    from_name = a if before.exists else b"/dev/null"
    to_name = b if after.exists else b"/dev/null"
    old_content = b"" if large else before.data()
    new_content = b"" if large else after.data()
    large = large or max(old_content.count(b"\n"), new_content.count(b"\n")) > _MOST_LINES
    if large or b"\0" in old_content[:_BINARY_PROBE] or b"\0" in new_content[:_BINARY_PROBE]:
        lines.append(b"Binary files " + from_name + b" and " + to_name + b" differ\n")
        return b"".join(lines)
    lines += (
        line if line.endswith(b"\n") else line + b"\n\\ No newline at end of file\n"
        for line in _unified(_lines(old_content), _lines(new_content), from_name, to_name)
    )
    return b"".join(lines)


class _TooCostly(Exception):
    """difflib's matcher has spent its work bound on one file."""


class _BoundedMatcher(difflib.SequenceMatcher):  # type: ignore[type-arg]
    """difflib's matcher, stopped (_TooCostly) after ``budget`` units of work.

    difflib is quadratic on some inputs (every other line changed, a few lines
    repeated throughout): 20,000 lines took 23 to 83 s. Its time goes to
    find_longest_match, which visits, for each line of a[alo:ahi], every position of
    that line in b: the sum of those counts over the range is charged before each call
    (prefix sums make the charge O(1)). git's xdiff bounds its work the same way and
    then settles for a diff that is not minimal.
    """

    def __init__(self, a: list[bytes], b: list[bytes], budget: int) -> None:
        super().__init__(None, a, b)
        self._budget, self._size = budget, len(a)
        # where each line of b is, less the lines difflib junked (typeshed omits b2j)
        positions = cast(dict[bytes, list[int]], getattr(self, "b2j"))  # noqa: B009
        visits = (1 + len(positions.get(line, ())) for line in a)
        self._cost = list(itertools.accumulate(visits, initial=0))

    def find_longest_match(
        self, alo: int = 0, ahi: int | None = None, blo: int = 0, bhi: int | None = None
    ) -> difflib.Match:
        end = self._size if ahi is None else ahi
        self._budget -= self._cost[end] - self._cost[alo]
        if self._budget < 0:
            raise _TooCostly
        return super().find_longest_match(alo, ahi, blo, bhi)


_Opcode = tuple[str, int, int, int, int]


def _unified(a: list[bytes], b: list[bytes], from_name: bytes, to_name: bytes) -> Iterator[bytes]:
    """difflib.unified_diff's lines (3 lines of context) for lines of bytes; past the
    work bound, the lines between the common head and tail are one replacement hunk:
    a valid patch, not a minimal one."""
    try:
        groups = list(_BoundedMatcher(a, b, _DIFF_WORK).get_grouped_opcodes(_CONTEXT))
    except _TooCostly:
        groups = [_replace_middle(a, b)]
    if not groups:
        return
    yield b"--- " + from_name + _tab_after(from_name) + b"\n"
    yield b"+++ " + to_name + _tab_after(to_name) + b"\n"
    for group in groups:
        first, last = group[0], group[-1]
        old_range, new_range = _range(first[1], last[2]), _range(first[3], last[4])
        yield b"@@ -" + old_range + b" +" + new_range + b" @@\n"
        for tag, i1, i2, j1, j2 in group:
            if tag == "equal":
                yield from (b" " + line for line in a[i1:i2])
                continue
            yield from (b"-" + line for line in a[i1:i2])
            yield from (b"+" + line for line in b[j1:j2])


def _replace_middle(a: list[bytes], b: list[bytes]) -> list[_Opcode]:
    """One hunk: the lines between the longest common head and tail replaced."""
    head = 0
    while head < min(len(a), len(b)) and a[head] == b[head]:
        head += 1
    tail = 0
    while tail < min(len(a), len(b)) - head and a[-1 - tail] == b[-1 - tail]:
        tail += 1
    a_end, b_end = len(a) - tail, len(b) - tail
    codes: list[_Opcode] = []
    if head:
        start = max(0, head - _CONTEXT)
        codes.append(("equal", start, head, start, head))
    codes.append(("replace", head, a_end, head, b_end))
    if tail:
        after = min(tail, _CONTEXT)
        codes.append(("equal", a_end, a_end + after, b_end, b_end + after))
    return codes


def _range(start: int, stop: int) -> bytes:
    """A hunk header's range, as difflib (and git) write it: '3', '3,4' or '2,0'."""
    length = stop - start
    if length == 1:
        return b"%d" % (start + 1)
    return b"%d,%d" % (start + 1 if length else start, length)


def _lines(content: bytes) -> list[bytes]:
    """The lines of a text as git cuts them: after each newline, and nowhere else.
    (bytes.splitlines also cuts at a lone carriage return, which put a "No newline at
    end of file" in the middle of a file holding one.)"""
    lines = content.split(b"\n")
    last = lines.pop()
    return [line + b"\n" for line in lines] + ([last] if last else [])


# The header of a change git apply has no words for: a directory's mode, owner or xattrs,
# a file's owner or xattrs alone. Under "diff --git" git apply refused the whole patch
# (a directory is the wrong type; with no line it knows, the header ran on into the next
# file's); git apply and patch(1) skip this one as text between patches (attack8.md 4).
_NOT_GIT = b"diff --sapwood "


def _git_applies(before: _Side, after: _Side, is_dir: bool) -> bool:
    """Whether git apply takes a section of no content change: a file's mode change, or
    a file added or deleted (empty, or of the same id on both sides). A symlink whose
    permission bits alone changed is not one: git has no words for them."""
    if is_dir:
        return False
    return not (before.exists and after.exists) or _git_mode(before) != _git_mode(after)


def _git_mode(side: _Side) -> int:
    """The mode git writes: a symlink's is 120000 (its permission bits mean nothing on
    Linux; 120777 differed from git's text, attack8.md 11). A file's stays whole
    (100600, 104755): sapwood keeps every bit, and git apply and patch take them."""
    return stat.S_IFLNK if stat.S_ISLNK(side.mode) else side.mode


def _mode_lines(before: _Side, after: _Side) -> list[bytes]:
    if not before.exists:
        return [f"new file mode {_git_mode(after):06o}\n".encode()]
    if not after.exists:
        return [f"deleted file mode {_git_mode(before):06o}\n".encode()]
    lines = []
    if before.mode != after.mode:  # a symlink's bits alone: as they are, under diff --sapwood
        old, new = (
            (_git_mode(before), _git_mode(after))
            if _git_mode(before) != _git_mode(after)
            else (before.mode, after.mode)
        )
        lines.append(f"old mode {old:06o}\nnew mode {new:06o}\n".encode())
    if (before.uid, before.gid) != (after.uid, after.gid):
        lines.append(
            f"old owner {before.uid}:{before.gid}\nnew owner {after.uid}:{after.gid}\n".encode()
        )
    if before.xattrs != after.xattrs:
        lines.append(b"xattrs changed\n")
    return lines


def _name(path: bytes) -> bytes:
    """``path`` as git writes it in a diff (quote_c_style, core.quotePath on): as it is,
    or in double quotes with C escapes (``\\t``, ``\\"``, ``\\\\``) and other control
    and non-ASCII bytes as three octal digits; never a raw control byte (no forged line,
    no terminal escape)."""
    if _NEEDS_QUOTES.search(path) is None:
        return path
    return b'"' + _NEEDS_QUOTES.sub(_escape, path) + b'"'


_NEEDS_QUOTES = re.compile(rb'[\x00-\x1f"\\\x7f-\xff]')
_C_ESCAPES = {
    0x07: b"\\a",
    0x08: b"\\b",
    0x09: b"\\t",
    0x0A: b"\\n",
    0x0B: b"\\v",
    0x0C: b"\\f",
    0x0D: b"\\r",
    0x22: b'\\"',
    0x5C: b"\\\\",
}


def _escape(found: re.Match[bytes]) -> bytes:
    byte = found[0][0]
    return _C_ESCAPES.get(byte) or b"\\%03o" % byte


def _tab_after(name: bytes) -> bytes:
    """git ends a ``---``/``+++`` line whose name holds a space with a tab: patch(1)
    would otherwise end the name at the space (a date may follow it there)."""
    return b"\t" if b" " in name else b""
