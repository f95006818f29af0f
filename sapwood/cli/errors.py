"""How the command line reports a library error: its exit code and its words.

The library's messages state facts and name no command-line flag; where the command
line has advice of its own (a flag to add), it words it here, as it always has.
"""

from __future__ import annotations

import re

from sapwood import (
    CheckoutConflictError,
    DowngradeError,
    IndexDamagedError,
    ModePolicyError,
    NetworkError,
    NothingToCommitError,
    ObjectMissingError,
    PartialCommitError,
    PermissionDeniedError,
    RemoteError,
    RepoNotFoundError,
    SapwoodError,
    SignatureError,
    SubpathNotADirectoryError,
    UnsupportedFileTypeError,
    UsageError,
)

EXIT_ERROR = 1
EXIT_USAGE = 2  # no repository, or arguments that do not fit together
EXIT_INDEX_DAMAGED = 3  # the index is unreadable (rebuild-index may help)
EXIT_NETWORK = 4  # a pull could not fetch what it needed (timeouts, HTTP errors)
EXIT_SIGNATURE = 5  # a commit or summary lacks a trusted signature
EXIT_INTERNAL = 70  # EX_SOFTWARE of sysexits.h: a bug in sapwood, not a user's error

_EXIT_CODES: tuple[tuple[type[SapwoodError], int], ...] = (
    (IndexDamagedError, EXIT_INDEX_DAMAGED),
    (RepoNotFoundError, EXIT_USAGE),
    (RemoteError, EXIT_USAGE),
    (NetworkError, EXIT_NETWORK),
    (SignatureError, EXIT_SIGNATURE),
    (UsageError, EXIT_USAGE),
)

# (class, the library's words, the command line's): advice phrased with flags. The
# library's words end its message (see _reworded).
FLAG_WORDING: tuple[tuple[type[SapwoodError], str, str], ...] = (
    (
        PermissionDeniedError,
        "use mode bare-user as an unprivileged user",
        "use --mode bare-user as an unprivileged user",
    ),
    (
        ModePolicyError,
        "(commit with canonical permissions)",
        "(commit with --canonical-permissions)",
    ),
    (
        UnsupportedFileTypeError,
        "(remove it, skip its path, or skip special files)",
        "(remove it, list it with --skip-list, or use --skip-special)",
    ),
    (
        ObjectMissingError,
        "(by prune or fsck with delete); nothing was committed",
        "(by prune or fsck --delete); nothing was committed",
    ),
    (
        UsageError,
        "union mode 'identical' needs require_hardlinks",
        "--union-identical needs -H (--require-hardlinks)",
    ),
    (
        UsageError,
        "copy and require_hardlinks contradict each other",
        "-C (copy) and -H (require hardlinks) contradict each other",
    ),
    (
        PermissionDeniedError,
        "needs root; set user_mode",
        "needs root; use -U",
    ),
    (
        UsageError,
        "cannot hardlink in user mode; drop require_hardlinks or user_mode",
        "cannot hardlink in user mode (-U); drop -H or -U",
    ),
    (
        UsageError,
        "hardlinks only in user mode: set user_mode",
        "hardlinks only in user mode: add -U",
    ),
    (UsageError, "and require_hardlinks forbids copying", "and -H forbids copying"),
    (
        DowngradeError,
        "an older commit is taken only when downgrades are allowed",
        "pass --allow-downgrade to take the older commit",
    ),
    (
        CheckoutConflictError,
        "exists; check out with a union mode to write into it",
        "exists; use --union, --union-add or --union-identical",
    ),
    (
        CheckoutConflictError,
        "File exists and differs (union mode 'identical')",
        "File exists and differs (--union-identical)",
    ),
)


def exit_code(error: SapwoodError) -> int:
    """The exit status of a command that failed with ``error``."""
    for cls, code in _EXIT_CODES:
        if isinstance(error, cls):
            return code
    return EXIT_ERROR


def message(error: SapwoodError) -> str:
    """The one line the command line prints for ``error`` (after "sapwood: error: "),
    of a bounded length (see :func:`bounded`)."""
    return bounded(_words(error))


WORD_LIMIT = 300  # characters of one word an error line echoes: any file name (255 bytes) quoted
# (a backslash escape such as \xff counts as one character: _SHOWN_CHARACTER)
LINE_LIMIT = 1000  # characters of a whole error line


def bounded(text: str) -> str:
    """``text`` with each word (between spaces) longer than WORD_LIMIT cut in its
    middle, then the whole cut the same way if it is still longer than LINE_LIMIT: a
    5,000-character argument was echoed whole. A word keeps its start and its end
    (the quote or "}:" that closes it), the line keeps what comes after the input, the
    part that says what is wrong, and the cut says how many characters it left out."""
    words = [_cut(word, WORD_LIMIT) for word in text.split(" ")]
    return _cut(" ".join(words), LINE_LIMIT)


# One character as a message shows it: a backslash escape (\xff, \377, \u202e, \n, \\)
# or any other single character. A name of 255 undecodable bytes is 1,020 characters
# of '\xff' (attack11.md 8): counted so, it passed WORD_LIMIT and was cut, and the cut
# could split an escape ('\xf' ... 'f', read as a letter).
_SHOWN_CHARACTER = re.compile(
    r"\\(?:x[0-9a-fA-F]{2}|u[0-9a-fA-F]{4}|U[0-9a-fA-F]{8}|[0-7]{3}|.)|.", re.DOTALL
)


def _cut(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    shown = _SHOWN_CHARACTER.findall(text)
    if len(shown) <= limit:
        return text
    head, tail = limit // 2, limit // 4  # with the note, shorter than limit
    left_out = len(shown) - head - tail
    return f"{''.join(shown[:head])}[... {left_out:,} characters ...]{''.join(shown[-tail:])}"


def _words(error: SapwoodError) -> str:
    if isinstance(error, NothingToCommitError):
        return "nothing to commit: give a PATH or --tree=dir=|tar=|ref="
    if isinstance(error, SubpathNotADirectoryError):
        return f"--subpath {error.subpath}: is not a directory"
    if isinstance(error, PartialCommitError) and error.commit_id is not None:
        return (
            f"--tree=ref={error.rev}: commit {error.commit_id.hex()} is partial (fsck "
            "--delete removed objects it needs); commit its tree again to repair it"
        )
    return _reworded(error)


def _reworded(error: SapwoodError) -> str:
    """``str(error)``, its advice in the command line's words.

    A phrase counts only where the library puts it, at the end of the message or of
    its last clause before a "; " note: a path or name in the message that merely
    contains it is left as it is. An error that
    added a note to the message of the one it came from (``raise X(f"{exc}; ...") from
    exc``, as a checkout says what it left DEST as) has that message reworded first.
    """
    text = str(error)
    cause = error.__cause__
    if isinstance(cause, SapwoodError) and text.startswith(f"{cause}; "):
        return _reworded(cause) + text[len(str(cause)) :]
    for cls, library, cli in FLAG_WORDING:
        head, found, tail = text.rpartition(library)
        if found and isinstance(error, cls) and (not tail or tail.startswith("; ")):
            return head + cli + tail  # the tail: a note the library put after its advice
    return text
