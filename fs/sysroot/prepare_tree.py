"""Laying a tree out for deployment as OSTree's trees are (``sapwood admin prepare-tree``).

Only /etc (merged) and /var (shared) outlive a deployment (docs/deployments.md "/var").
So, before a tree is committed:

- /home -> var/home, /root -> var/roothome, /opt -> var/opt, /srv -> var/srv,
  /mnt -> var/mnt, /usr/local -> ../var/usrlocal: each directory, with what it holds,
  moved to its place in var/ and a relative symlink left where it was (a missing one
  is made empty). The shared /var is seeded from the first deployment's, so what
  users write there is the OS's, kept through every update.
- var/lib/dpkg -> ../../usr/lib/sysimage/dpkg (a Debian tree): the package database
  moved into /usr, so that each deployment's dpkg describes its own release (rpm-ostree
  keeps the rpm database in /usr for this reason); the relative link, seeded into the
  shared /var, resolves inside whichever deployment runs.
- usr/lib/tmpfiles.d/sapwood-var.conf: systemd-tmpfiles makes the var/ places missing
  at boot (a shared /var seeded before the tree was laid out so has none of them).

Every change is planned and checked before the first is made: a refusal
(TreeLayoutError, one line) leaves the tree as it was. What a plan cannot see (an
immutable directory, a mount point, another filesystem under var/, a full disk) fails
midway, in one line that says what was done and that a second run, once it is fixed,
finishes: a step whose link cannot be made is put back (the directory moved back and
the empty place it replaced renamed back from aside, the place made removed, the
directories made on the way removed), and the snippet's temporary file is removed, so
the tree holds what the line lists and nothing half-written. Symlinks
inside the tree are never followed (every directory is opened component by component
with O_NOFOLLOW), so nothing is written outside it. Running it again changes nothing; a
run killed midway is finished by the next: a place is made under a temporary name and
renamed to its own once it has its mode, since a later run must never change the mode
of a directory there (it may be a users' one, moved there).
"""

from __future__ import annotations

import errno
import logging
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from fs.sysroot.nofollow import (
    NEW,
    failed_midway,
    listdir_below,
    lstat_below,
    make_dir,
    make_dirs_below,
    open_below,
    read_below,
    readlink_below,
    temporary_name,
    write_below,
)
from store import SapwoodError, TreeLayoutError

log = logging.getLogger(__name__)

# (where the directory is, where it goes): OSTree's layout, and Debian's package database
MOVES: tuple[tuple[str, str], ...] = (
    ("home", "var/home"),
    ("root", "var/roothome"),
    ("opt", "var/opt"),
    ("srv", "var/srv"),
    ("mnt", "var/mnt"),
    ("usr/local", "var/usrlocal"),
    ("var/lib/dpkg", "usr/lib/sysimage/dpkg"),
)
_ONLY_IF_THERE = {"var/lib/dpkg"}  # no package database: no link to one
_PRIVATE = {"var/roothome"}  # made 0700, as /root is
TMPFILES = "usr/lib/tmpfiles.d/sapwood-var.conf"
ASIDE = ".sapwood-aside"  # an empty place a move replaces, until its link is made


@dataclass(frozen=True)
class _Step:
    link: str  # relative to the tree
    place: str
    action: str  # "move"; "make": an empty place and the link; "place" or "link" alone

    @property
    def target(self) -> str:
        """What the symlink holds: the place, relative to the link's directory."""
        return os.path.relpath(self.place, os.path.dirname(self.link) or ".")


def prepare_tree(tree: str | os.PathLike[str]) -> list[str]:
    """Lay ``tree`` out for deployment (see the module's docstring); returns what was
    done, one line each ("home -> var/home: moved"), empty when it was laid out so."""
    root_path = Path(tree)
    _refuse_a_live_root(root_path)
    try:
        root = os.open(root_path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as exc:
        raise TreeLayoutError(
            f"{root_path}: not a directory ({exc.strerror}): nothing was changed",
            path=str(root_path),
        ) from None
    try:
        steps = [s for s in (_plan(root, root_path, link, place) for link, place in MOVES) if s]
        tmpfiles = _tmpfiles_text()
        _check_dirs(root, root_path, os.path.dirname(TMPFILES))
        there = lstat_below(root, TMPFILES)
        if there is not None and not stat.S_ISREG(there.st_mode):
            raise _refused(root_path, TMPFILES, "is not a regular file")
        write_tmpfiles = there is None or read_below(root, TMPFILES) != tmpfiles
        if write_tmpfiles:
            _check_snippet_temporary(root, root_path)
        _check_ways(root, root_path, steps, write_tmpfiles)
        done: list[str] = []
        _remove_leftovers(root, root_path)
        try:
            for step in steps:
                done.append(_apply(root, root_path, step))
            if write_tmpfiles:
                _write_snippet(root, tmpfiles)
                done.append(f"{TMPFILES}: written")
        except OSError as exc:  # what the plan cannot see: an immutable directory, EXDEV
            raise _failed_midway(root_path, done, exc) from None
    finally:
        os.close(root)
    for line in done:
        log.info("%s: %s", root_path, line)
    return done


def _write_snippet(root: int, text: str) -> None:
    """The tmpfiles snippet written; the directories made on its way removed again if
    it cannot be (review24 5)."""
    made = _missing(root, os.path.dirname(TMPFILES))
    try:
        write_below(root, TMPFILES, text)  # its directories made 0755, whatever the umask
    except OSError:
        _remove_all(root, made)
        raise


def _refuse_a_live_root(root_path: Path) -> None:
    """TreeLayoutError for the running system's root (``prepare-tree "$TREE/"`` with
    TREE empty would move this machine's /home and its dpkg database) or a deployment of
    a sysroot (its files are the repository's objects, its var/ hidden by the shared
    one at boot): a tree is laid out before it is committed (review21 15)."""
    try:
        running = os.path.samefile(root_path, "/")
        parts = Path(os.path.realpath(root_path)).parts
    except OSError:
        return  # not there: the open below says so
    deployment = len(parts) >= 5 and parts[-5:-3] == ("sapwood", "deploy") and parts[-2] == "deploy"
    if running or deployment:
        what = "the running system's root" if running else "a deployment of a sysroot"
        raise TreeLayoutError(
            f"{root_path}: {what}, not a tree to commit; nothing was changed", path=str(root_path)
        )


def _plan(root: int, root_path: Path, link: str, place: str) -> _Step | None:
    """The step that lays out ``link``, None when there is none to do; TreeLayoutError
    for a shape this does not know."""
    step = _Step(link, place, "")
    _check_dirs(root, root_path, os.path.dirname(link))
    _check_dirs(root, root_path, os.path.dirname(place))
    here = lstat_below(root, link)
    there = lstat_below(root, place)
    if there is not None and not stat.S_ISDIR(there.st_mode):
        raise _refused(root_path, place, "is there and is not a directory")
    if here is None:  # a place there without its link: a run killed midway (review23 6)
        if there is not None:
            return _Step(link, place, "link")
        return None if link in _ONLY_IF_THERE else _making(root, root_path, step, "make")
    if stat.S_ISLNK(here.st_mode):
        held = readlink_below(root, link)
        if held != step.target:
            raise _refused(root_path, link, f"is a link to {held!r}, not to {step.target!r}")
        return None if there is not None else _making(root, root_path, step, "place")
    if not stat.S_ISDIR(here.st_mode):
        raise _refused(root_path, link, "is not a directory")
    if there is not None and listdir_below(root, place):
        raise _refused(root_path, place, f"is there already, with {link} a directory too")
    if there is not None:  # set aside by the move: its name must be free (review24 1)
        why = "is in the way of the name sapwood sets places aside as"
        _check_own_name(root, root_path, _aside(place), why)
    return _Step(link, place, "move")


def _making(root: int, root_path: Path, step: _Step, action: str) -> _Step:
    """The step that makes its place: made under its temporary name, which must be free
    (an empty directory there is a killed run's, removed before the steps)."""
    why = "is in the way of the name sapwood makes places under"
    _check_own_name(root, root_path, _new(step.place), why)
    return _Step(step.link, step.place, action)


def _check_ways(root: int, root_path: Path, steps: list[_Step], write_tmpfiles: bool) -> None:
    """The temporary name of each directory missing on the way to a place, a link or the
    snippet (made under it) is free, or a killed run's empty directory."""
    ways = [os.path.dirname(path) for step in steps for path in (step.place, step.link)]
    if write_tmpfiles:
        ways.append(os.path.dirname(TMPFILES))
    why = "is in the way of the name sapwood makes directories under"
    for directory in _missing_on(root, ways):
        _check_own_name(root, root_path, _new(directory), why)


def _check_own_name(root: int, root_path: Path, name: str, why: str) -> None:
    """TreeLayoutError unless ``name`` (one of sapwood's own) is free or an empty
    directory (a killed run's): anything else there is the user's, never touched."""
    held = lstat_below(root, name)
    if held is not None and not _a_killed_runs(root, name, held):
        raise TreeLayoutError(
            f"{root_path / name}: {why}: remove or rename it; nothing was changed", path=name
        )


def _a_killed_runs(root: int, name: str, held: os.stat_result) -> bool:
    """Whether what is at one of sapwood's names is what a killed run leaves there: an
    empty directory, made by this user (mkdir as root makes it root's; another user's
    is theirs, refused where a step needs the name and left alone otherwise: review25
    5). An empty place set aside keeps its owner, whoever that is."""
    if not stat.S_ISDIR(held.st_mode):
        return False
    try:
        if listdir_below(root, name):
            return False
    except PermissionError:  # not ours to look into: not a killed run's (review27 6)
        return False
    return not name.endswith(NEW) or held.st_uid == os.geteuid()


def _apply(root: int, root_path: Path, step: _Step) -> str:
    place_dir, place_name = os.path.split(step.place)
    link_dir, link_name = os.path.split(step.link)
    # what an undo puts back (review23 3): the directories this step makes on the way,
    # and the empty place a move replaces (set aside under ASIDE, its inode kept)
    made = list(dict.fromkeys([*_missing(root, place_dir), *_missing(root, link_dir)]))
    aside = _aside(place_name) if step.action == "move" and lstat_below(root, step.place) else None
    if step.action in ("move", "make", "place"):
        try:
            _make_place(root, step, aside)
        except OSError:  # the place not made (no inode left, EXDEV): nor its parents (review23 8)
            _remove_all(root, made)
            raise
    if step.action == "place":
        return f"{step.place}: made (the place {step.link} links to)"
    try:
        source = make_dirs_below(root, link_dir)
        try:
            os.symlink(step.target, link_name, dir_fd=source)
        finally:
            os.close(source)
    except OSError:  # no inode left for the link, say: the step is undone, not half done
        if step.action in ("move", "make"):
            _undo(root, step, aside, made)
        else:  # a link alone: only the directories made on its way
            _remove_all(root, made)
        raise
    if aside is not None:
        kept = (
            f"{root_path / place_dir / aside}: kept: files were written into {step.place} "
            "during this run, and moved aside with it; move them where they belong, then "
            "remove it"
        )
        _remove_made(root, os.path.join(place_dir, aside), kept)
    return f"{step.link} -> {step.target}: {'moved' if step.action == 'move' else 'made'}"


def _make_place(root: int, step: _Step, aside: str | None) -> None:
    """The place made, or the directory moved there (an empty place set aside first)."""
    place_dir, place_name = os.path.split(step.place)
    link_dir, link_name = os.path.split(step.link)
    parent = make_dirs_below(root, place_dir)
    try:
        if step.action == "move":  # onto an empty place, if any (the plan checked)
            _move(root, link_dir, link_name, parent, place_name, aside)
        else:  # under its final name only with its mode (session19 d6)
            make_dir(parent, place_name, 0o700 if step.place in _PRIVATE else 0o755)
    finally:
        os.close(parent)


def _remove_all(root: int, made: list[str]) -> None:
    """rmdir the directories a step made on its way, the deepest first."""
    for directory in sorted(made, key=len, reverse=True):
        _remove_made(root, directory)


def _remove_leftovers(root: int, root_path: Path) -> None:
    """Remove the empty places a run killed after a move's link left aside (review23 7),
    and those a run killed while it made them left under their temporary name (session19
    d6): whatever this run's plan, none has a step for them."""
    for directory in _MADE_HERE:
        held = lstat_below(root, _new(directory))
        if held is not None and _a_killed_runs(root, _new(directory), held):
            _remove_made(root, _new(directory))
    for _, place in MOVES:
        aside = _aside(place)
        if lstat_below(root, aside) is not None:
            kept = (
                f"{root_path / aside}: kept from an earlier run: it holds files written into "
                f"{place} while that run moved it; move them where they belong, then remove it"
            )
            _remove_made(root, aside, kept)


def _move(
    root: int, link_dir: str, link_name: str, parent: int, place_name: str, aside: str | None
) -> None:
    """Rename the directory at the link to the place (in ``parent``), an empty place
    there set aside first."""
    source = open_below(root, link_dir)
    try:
        if aside is not None:
            os.rename(place_name, aside, src_dir_fd=parent, dst_dir_fd=parent)
        try:
            os.rename(link_name, place_name, src_dir_fd=source, dst_dir_fd=parent)
        except OSError:
            if aside is not None:
                os.rename(aside, place_name, src_dir_fd=parent, dst_dir_fd=parent)
            raise
    finally:
        os.close(source)


def _undo(root: int, step: _Step, aside: str | None, made: list[str]) -> None:
    """Put back what ``step`` did before its link failed: the directory moved back (and
    the empty place it replaced, set aside, renamed back), or the place made removed,
    and the directories made on the way (no room needed); a failure here leaves it for
    the next run to finish (its plan knows a place without its link) and is only
    logged."""
    place_dir, place_name = os.path.split(step.place)
    link_dir, link_name = os.path.split(step.link)
    try:
        parent = open_below(root, place_dir)
        try:
            if step.action == "move":
                source = open_below(root, link_dir)
                try:
                    os.rename(place_name, link_name, src_dir_fd=parent, dst_dir_fd=source)
                finally:
                    os.close(source)
                if aside is not None:
                    os.rename(aside, place_name, src_dir_fd=parent, dst_dir_fd=parent)
            else:
                os.rmdir(place_name, dir_fd=parent)
        finally:
            os.close(parent)
        _remove_all(root, made)
    except OSError as exc:
        log.warning("%s: not put back (%s): the next run makes its link", step.place, exc)


def _new(place: str) -> str:
    """The name a place is made under until it has its mode."""
    place_dir, place_name = os.path.split(place)
    return os.path.join(place_dir, temporary_name(place_name))


def _aside(place: str) -> str:
    """The name an empty place is set aside as while a move replaces it."""
    place_dir, place_name = os.path.split(place)
    return os.path.join(place_dir, f".{place_name}{ASIDE}")


def _remove_made(root: int, directory: str, kept: str | None = None) -> None:
    """rmdir a directory a step made on its way (or set aside), if it is still empty;
    one that is not is never removed, and said with the warning ``kept`` when given
    (an aside holding files written into its place during a run: review24 2 and 6)."""
    head, name = os.path.split(directory)
    try:
        parent = open_below(root, head)
    except OSError:
        return
    try:
        os.rmdir(name, dir_fd=parent)
    except OSError as exc:  # not empty (something else went there), or gone
        if kept is not None and exc.errno == errno.ENOTEMPTY:
            log.warning("%s", kept)
        else:
            log.debug("%s: left (%s)", directory, exc)
    finally:
        os.close(parent)


def _missing(root: int, relative: str) -> list[str]:
    """The components of the directory ``relative`` (each a prefix of it) not there."""
    return [prefix for prefix in _prefixes(relative) if lstat_below(root, prefix) is None]


def _missing_on(root: int, ways: list[str]) -> list[str]:
    """The directories missing on any of the ways (directories) given, each once."""
    return list(dict.fromkeys(made for way in ways for made in _missing(root, way)))


def _prefixes(relative: str) -> list[str]:
    parts = [part for part in relative.split("/") if part]
    return ["/".join(parts[: n + 1]) for n in range(len(parts))]


# every directory a run may make (each place and the directories on the ways to the
# places, the links and the snippet): what a killed run may leave under its temporary name
_MADE_HERE = tuple(
    dict.fromkeys(
        made
        for link, place in MOVES
        for way in (place, os.path.dirname(link), os.path.dirname(TMPFILES))
        for made in _prefixes(way)
    )
)


def _tmpfiles_text() -> str:
    lines = ["# sapwood admin prepare-tree: the places in /var that the tree links to"]
    for _, place in MOVES:
        if place.startswith("var/"):
            mode = "0700" if place in _PRIVATE else "0755"
            lines.append(f"d /{place} {mode} root root -")
    return "\n".join(lines) + "\n"


# ----- directories opened without following a symlink ------------------------------------
def _check_dirs(root: int, root_path: Path, relative: str) -> None:
    """Each existing component of ``relative`` is a real directory (no symlink to
    follow out of the tree, no file in the way)."""
    walked = ""
    for part in filter(None, relative.split("/")):
        walked = f"{walked}/{part}".lstrip("/")
        st = lstat_below(root, walked)
        if st is None:
            return
        if stat.S_ISLNK(st.st_mode):
            raise _refused(root_path, walked, "is a symbolic link (never followed)")
        if not stat.S_ISDIR(st.st_mode):
            raise _refused(root_path, walked, "is not a directory")


def _failed_midway(root_path: Path, done: list[str], exc: OSError) -> SapwoodError:
    """The one line of a failure midway (TreeLayoutError, or OutOfSpaceError)."""
    so_far = "; ".join(done) if done else "nothing"
    return failed_midway(
        root_path,
        f"done before it: {so_far}",
        exc,
        lambda message: TreeLayoutError(message, path=str(root_path)),
    )


def _check_snippet_temporary(root: int, root_path: Path) -> None:
    """The snippet is written under its temporary name, where write_below unlinks
    whatever a killed run left (a file, a symlink: never followed, a FIFO: never
    opened); a directory there cannot be unlinked, and no run of sapwood makes one
    there: refused before any change, not a failure halfway for every run after
    (review25 1)."""
    temporary = os.path.join(os.path.dirname(TMPFILES), temporary_name(os.path.basename(TMPFILES)))
    found = lstat_below(root, temporary)
    if found is not None and stat.S_ISDIR(found.st_mode):
        raise _refused(root_path, temporary, "is a directory in the way of the snippet")


def _refused(root_path: Path, relative: str, why: str) -> TreeLayoutError:
    return TreeLayoutError(
        f"{root_path / relative}: {why}: the tree is laid out otherwise; nothing was changed",
        path=relative,
    )
