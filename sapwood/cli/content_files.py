"""The files ``sapwood commit`` reads for its content options, as OSTree's commit does.

statoverride file: one ``+MODE PATH`` (OR these bits in) or ``=MODE PATH`` (set the
permission bits) per line, MODE decimal as in OSTree (``+2048 /usr/bin/x`` adds
setuid) or with a 0o prefix (``=0o644 /etc/x``). skip-list file: one path a line.
Paths are absolute inside the tree; empty lines and lines starting with # are ignored.
"""

from __future__ import annotations

from pathlib import Path

from sapwood import StatOverride, UsageError


def _tree_path(text: str, source: Path, lineno: int) -> bytes:
    if not text.startswith("/"):
        raise UsageError(f"{source}:{lineno}: path {text!r} must be absolute inside the tree")
    return b"/" + text.strip("/").encode("utf-8", "surrogateescape")


def parse_statoverride(source: Path) -> dict[bytes, StatOverride]:
    """The overrides of a --statoverride file, by absolute path inside the tree."""
    overrides: dict[bytes, StatOverride] = {}
    for lineno, line in enumerate(_read_lines(source), 1):
        op_mode, _, path = line.partition(" ")
        if op_mode[:1] not in ("+", "=") or not path:
            raise UsageError(f"{source}:{lineno}: expected '+MODE PATH' or '=MODE PATH'")
        try:
            bits = int(op_mode[1:], 0)
        except ValueError:
            raise UsageError(f"{source}:{lineno}: bad mode {op_mode[1:]!r}") from None
        if bits < 0 or bits > 0o7777:
            raise UsageError(f"{source}:{lineno}: mode {bits:o} out of range")
        overrides[_tree_path(path, source, lineno)] = StatOverride(op_mode[0] == "=", bits)
    return overrides


def parse_skip_list(source: Path) -> frozenset[bytes]:
    """The paths of a --skip-list file."""
    return frozenset(_tree_path(line, source, n) for n, line in enumerate(_read_lines(source), 1))


def _read_lines(source: Path) -> list[str]:
    try:
        text = source.read_text(encoding="utf-8", errors="surrogateescape")
    except OSError as exc:
        raise UsageError(f"cannot read {source}: {exc.strerror}") from None
    return [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]
