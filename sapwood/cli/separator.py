"""PATHs after '--' (``diff A B -- PATH...``, ``log REV -- PATH...``), one rule for both.

argparse drops the '--' before a command sees its arguments, so `log REV --` cannot be
told from `log REV`, nor a PATH typed after '--' from a stray word before it. A parser
given to :func:`keep_separator` records what followed the first '--', and
:func:`paths_after_separator` applies the rule: PATHs only after '--', and '--' with
nothing after it is a usage error.
"""

from __future__ import annotations

import argparse
import itertools
from collections.abc import Sequence

from sapwood import UsageError


def keep_separator(parser: argparse.ArgumentParser) -> None:
    """Make ``parser`` record in ``args.after_separator`` what followed the first '--'
    of its arguments (None when there was no '--')."""
    parse = parser.parse_known_args

    def parse_known_args(
        args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        parsed, extras = parse(args, namespace)
        from_separator = list(itertools.dropwhile(lambda arg: arg != "--", args or ()))
        parsed.after_separator = from_separator[1:] if from_separator else None
        if "--" in extras and hasattr(parsed, "paths"):
            # An option between the revisions and '--' (`log main -p -- /etc`): argparse
            # gave the positionals their words before the option, PATHs none, and left
            # '--' and what follows unparsed. Those are the PATHs, as git reads them.
            at = next(i for i, word in enumerate(extras) if word == "--")
            parsed.paths = [*parsed.paths, *extras[at + 1 :]]
            extras = extras[:at]
        return parsed, extras

    parser.parse_known_args = parse_known_args  # type: ignore[method-assign,assignment]


def paths_after_separator(
    args: argparse.Namespace, usage: str, revisions: Sequence[str] = ()
) -> list[str] | None:
    """The PATHs (``args.paths``) typed after '--'; None when none were (no '--', or
    '--' only ended the options before the commits: `diff -- A B`).

    UsageError for a PATH before '--' (`log REV x`, `diff A B x -- y`: a path is never
    taken for a revision, nor a stray word for a path), for a word after '--' read as a
    revision that can only be a path (`log -- /usr`: it starts with '/'), for an empty
    PATH and for '--' with nothing after it; ``usage`` (as "diff A B -- PATH...") names
    the command in the message.
    """
    command = usage.split()[0]
    paths: list[str] = list(args.paths)
    after = args.after_separator
    revs = len(usage.split(" -- ")[0].split()) - 1  # "diff A B -- PATH...": 2
    taken = 0 if after is None else len(after) - len(paths)  # words after '--' taken as REVs
    if after is not None and revisions:
        found = _revisions_taken(after, paths, list(revisions))
        if found is not None:  # else a stray word before '--', said below
            taken, paths = found, after[found:]
    if taken > 0:
        _check_revisions_after(usage, after[:taken], revs)
    if "" in paths:  # git refuses an empty pathspec too; it read as the whole tree here
        raise UsageError(f"{command}: '' is not a PATH (the whole tree is /)")
    before = paths if after is None else paths[: max(0, len(paths) - len(after))]
    if before:
        raise UsageError(
            f"{command}: unrecognized arguments: {' '.join(before)} (PATHs go after --)"
        )
    if after is not None and not after:
        raise UsageError(f"{command}: -- needs at least one PATH after it: {usage}")
    return paths or None


def _check_revisions_after(usage: str, taken: list[str], revs: int) -> None:
    """UsageError unless the words after '--' that argparse gave the revisions can be
    revisions: all of them (`diff -- A B`), none empty (a word after '--' that cannot
    be a revision is a PATH, refused as an empty PATH is), none starting with '/' (no
    ref does)."""
    command = usage.split()[0]
    if "" in taken:  # `log -- ""`: said 'empty revision'; git: not a valid pathspec
        raise UsageError(f"{command}: '' is not a PATH (the whole tree is /)")
    if len(taken) < revs:  # `diff main -- /usr` compared main with the directory /usr
        raise UsageError(
            f"{command}: {' '.join(taken)} after -- is a PATH, and {usage} needs "
            f"{revs} revisions before it"
        )
    pathlike = [rev for rev in taken if rev.startswith("/")]
    if pathlike:  # `log -- /usr`: sapwood has no HEAD, the REV is missing
        raise UsageError(
            f"{command}: {' '.join(pathlike)} after -- is a PATH, and {usage} needs "
            f"{'a revision' if revs == 1 else f'{revs} revisions'} before it "
            "(sapwood has no HEAD to default to)"
        )


def _revisions_taken(after: list[str], paths: list[str], revisions: list[str]) -> int | None:
    """How many words after the first '--' argparse gave the revisions (``revisions``,
    their values in order). argparse also drops a later '--' from the PATHs (Python
    3.11: `diff A B -- x --` gave paths ['x'], so the count of the words left over
    read one as a revision, attack8.md 7); git reads a later '--' as a PATH. The most
    words that end the revisions and leave the PATHs, less some '--', are taken; None
    when no count does (a PATH typed before '--' is among the PATHs)."""
    for taken in range(min(len(revisions), len(after)), -1, -1):
        given = revisions[len(revisions) - taken :]
        if after[:taken] == given and _less_separators(after[taken:], paths):
            return taken
    return None


def _less_separators(words: list[str], paths: list[str]) -> bool:
    """Whether ``paths`` is ``words`` with none or some of its '--' left out."""
    remaining = iter(paths)
    pending = next(remaining, None)
    for word in words:
        if word == pending:
            pending = next(remaining, None)
        elif word != "--":
            return False
    return pending is None
