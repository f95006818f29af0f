"""REV@{DATE}: the date parser (store/revdates.py) and rev_parse's use of it."""

from __future__ import annotations

import time

import pytest

from store import (
    Commit,
    CorruptObjectError,
    InvalidDateError,
    NoCommitAtDateError,
    ObjectId,
    ObjectType,
    RefNotFoundError,
    Repository,
    commit_as_of,
    parse_date,
    rev_parse,
)
from store.revdates import format_time
from tests.helpers import cli, delete_record, empty_commit, put_record, run
from tests.history_tree import HistoryTree

NOW = 1_800_000_000  # 2027-01-15T08:00:00Z
DAY = 86400
NOV_1 = 1_793_491_200  # 2026-11-01T00:00:00Z


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("2026-11-01", NOV_1),
        ("  2026-11-01\t", NOV_1),
        ("2026-11-01 12:00", NOV_1 + 12 * 3600),
        ("2026-11-01 12", NOV_1 + 12 * 3600),  # an hour alone
        ("2026-11-01T12:00:00", NOV_1 + 12 * 3600),
        ("2026-11-01T12:00:00Z", NOV_1 + 12 * 3600),
        ("2026-11-01t12:00:00z", NOV_1 + 12 * 3600),
        ("2026-11-01T12:00:00+02:00", NOV_1 + 10 * 3600),
        ("2026-11-01T12:00:00-0130", NOV_1 + 13 * 3600 + 1800),
        ("2026-11-01 12:00+02", NOV_1 + 10 * 3600),
        ("2026-11-01T120005Z", NOV_1 + 12 * 3600 + 5),  # the mount's history/ names
        ("0001-01-01", -62135596800),
        ("9999-12-31T23:59:59", 253402300799),
        ("1969-12-31T23:59:59", -1),
        ("@1730000000", 1730000000),
        ("@-5", -5),
        ("@0009223372036854775807", 2**63 - 1),
        ("@-9223372036854775808", -(2**63)),
        ("now", NOW),
        ("yesterday", NOW - DAY),
        ("YESTERDAY", NOW - DAY),
        ("3 days ago", NOW - 3 * DAY),
        ("1 day ago", NOW - DAY),
        ("3.days.ago", NOW - 3 * DAY),
        ("10   Seconds  AGO", NOW - 10),
        ("90 minutes ago", NOW - 90 * 60),
        ("2 hours ago", NOW - 7200),
        ("2 weeks ago", NOW - 14 * DAY),
        ("0 weeks ago", NOW),
    ],
)
def test_accepted_forms(text: str, seconds: int) -> None:
    assert parse_date(text, now=NOW) == seconds


def test_relative_dates_count_back_from_the_clock_by_default() -> None:
    before = int(time.time())
    parsed = parse_date("1 hour ago")
    assert before - 3600 <= parsed <= int(time.time()) - 3600


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("", "not a date: ''"),
        ("tomorrow", "use YYYY-MM-DD"),
        ("3 months ago", "use YYYY-MM-DD"),
        ("3 days", "use YYYY-MM-DD"),
        ("-3 days ago", "use YYYY-MM-DD"),
        ("2026-13-01", "month must be in 1..12"),
        ("2026-02-30", "day is out of range"),
        ("2026-11-01T24:00", "hour must be in 0..23"),
        ("2026-11-01T23:59:60", "second must be in 0..59"),
        ("2026-11-01T12:00+24:00", "no time zone is +24:00"),
        ("2026-11-01T12:00+02:60", "no time zone is +02:60"),
        ("0000-01-01", "year must be between 0001 and 9999"),
        ("10000-01-01", "year must be between 0001 and 9999"),
        ("2026-1-1", "use YYYY-MM-DD"),
        ("2026-11-01T12:00:00.5", "use YYYY-MM-DD"),
        ("1730000000", "write seconds since the epoch as @1730000000"),
        ("5", "git's N-th previous ref value"),
        ("@9223372036854775808", "out of range"),
        ("@" + "9" * 60, "out of range"),
        ("@" + "9" * 4400, "longer than 64 characters"),
        ("9" * 17 + " weeks ago", "too far back"),
        ("9" * 15 + " weeks ago", "out of range"),
        ("\u0662\u0660\u0662\u0666-11-01", "use YYYY-MM-DD"),  # Arabic-Indic digits
        ("2026-11-0\uff11", "use YYYY-MM-DD"),  # a full-width 1
        ("\u0663 days ago", "use YYYY-MM-DD"),
        ("3\u00a0days ago", "use YYYY-MM-DD"),  # no-break space
        ("3 wee\u212as ago", "use YYYY-MM-DD"),  # a Kelvin sign, which folds to k
        ("x" * 10_000, "longer than 64 characters"),
        ("2026-11-01" + " " * 10_000, "longer than 64 characters"),
        ("2026-11-01\n", "use YYYY-MM-DD"),
    ],
)
def test_refused_forms_say_why_quickly(text: str, says: str) -> None:
    started = time.perf_counter()
    with pytest.raises(InvalidDateError) as info:
        parse_date(text, now=NOW)
    assert time.perf_counter() - started < 0.5  # one bounded match (slack for a busy machine)
    assert says in str(info.value)
    assert info.value.date == text
    assert len(str(info.value)) < 400  # one line of reasonable length, whatever came in
    assert "\n" not in str(info.value).replace(repr(text), "")


def test_a_relative_date_out_of_the_64_bit_range_is_refused() -> None:
    with pytest.raises(InvalidDateError, match="out of range"):
        parse_date("2 weeks ago", now=-(2**63) + 5)


@pytest.mark.parametrize(
    ("seconds", "shown"),
    [
        (NOV_1, "2026-11-01 00:00:00 UTC"),
        (-1, "1969-12-31 23:59:59 UTC"),
        (2**63 - 1, "@9223372036854775807"),
    ],
)
def test_format_time(seconds: int, shown: str) -> None:
    assert format_time(seconds) == shown


# ----- rev_parse ---------------------------------------------------------------------


def _history(repo: Repository, times: list[int], branch: str = "main") -> list[ObjectId]:
    """Commits on ``branch`` with these timestamps, oldest first."""
    ids: list[ObjectId] = []
    for n, timestamp in enumerate(times):
        ids.append(empty_commit(repo, branch, timestamp, f"{branch} {n}", ids[-1] if ids else None))
    return ids


def _daily(repo: Repository) -> list[ObjectId]:
    """Five commits at noon of 2026-11-01 .. 2026-11-05."""
    return _history(repo, [NOV_1 + n * DAY + 12 * 3600 for n in range(5)])


def test_a_ref_at_a_date_is_its_newest_commit_as_old(user_repo: Repository) -> None:
    ids = _daily(user_repo)
    assert rev_parse(user_repo, "main@{2026-11-03}") == ids[1]
    assert rev_parse(user_repo, "main@{2026-11-03 12:00}") == ids[2]  # at, not only before
    assert rev_parse(user_repo, "main@{2026-11-03T11:59:59}") == ids[1]
    assert rev_parse(user_repo, "main@{2026-11-03T14:00:00+02:00}") == ids[2]
    assert rev_parse(user_repo, "main@{2027-01-01}") == ids[4]
    assert rev_parse(user_repo, f"main@{{@{NOV_1 + 12 * 3600}}}") == ids[0]
    now = NOV_1 + 5 * DAY  # 2026-11-06T00:00Z
    assert rev_parse(user_repo, "main@{yesterday}", now=now) == ids[3]
    assert rev_parse(user_repo, "main@{3 days ago}", now=now) == ids[1]
    assert rev_parse(user_repo, "main@{36 hours ago}", now=now) == ids[3]


def test_suffixes_apply_after_the_date(user_repo: Repository) -> None:
    ids = _daily(user_repo)
    assert rev_parse(user_repo, "main@{2026-11-04}~2") == ids[0]
    assert rev_parse(user_repo, "main@{2026-11-04}^") == ids[1]
    assert rev_parse(user_repo, "main@{2026-11-04}~1^") == ids[0]
    with pytest.raises(RefNotFoundError, match="has no parent"):
        rev_parse(user_repo, "main@{2026-11-04}~3")
    for rev in ("main~2@{2026-11-04}", "main^@{2026-11-04}"):
        with pytest.raises(RefNotFoundError, match="goes right after the ref"):
            rev_parse(user_repo, rev)


def test_a_date_before_the_first_commit_names_the_earliest(user_repo: Repository) -> None:
    ids = _daily(user_repo)
    with pytest.raises(NoCommitAtDateError) as info:
        rev_parse(user_repo, "main@{2026-10-01}")
    error = info.value
    assert error.rev == "main@{2026-10-01}"
    assert error.earliest == ids[0] and error.earliest_time == NOV_1 + 12 * 3600
    assert error.time == NOV_1 - 31 * DAY
    assert "2026-11-01 12:00:00 UTC" in str(error) and ids[0].hex()[:12] in str(error)
    assert "2026-10-01 00:00:00 UTC" in str(error)


def test_a_malformed_date_is_an_invalid_date_error(user_repo: Repository) -> None:
    _daily(user_repo)
    for rev, date in (("main@{someday}", "someday"), ("main@{}", ""), ("main@{2026", "2026")):
        with pytest.raises(InvalidDateError) as info:
            rev_parse(user_repo, rev)
        assert info.value.rev == rev and info.value.date == date
        assert str(info.value).startswith(f"{rev}: ")
    with pytest.raises(RefNotFoundError, match="no such ref or commit"):
        rev_parse(user_repo, "nosuch@{2026-11-01}")  # the ref is checked first


def test_a_commit_id_at_a_date_is_itself_or_an_error(user_repo: Repository) -> None:
    ids = _daily(user_repo)
    for text in (ids[2].hex(), ids[2].hex()[:10]):
        assert rev_parse(user_repo, f"{text}@{{2026-11-04}}") == ids[2]  # not ids[3]
        assert rev_parse(user_repo, f"{text}@{{2026-11-03 12:00}}") == ids[2]
        with pytest.raises(NoCommitAtDateError, match="no ref history") as info:
            rev_parse(user_repo, f"{text}@{{2026-11-02}}")  # ids[1] is not searched for
        assert info.value.earliest == ids[2]
    assert rev_parse(user_repo, f"{ids[2].hex()}@{{2026-11-04}}~2") == ids[0]


def test_time_that_goes_back_stops_at_the_first_old_enough(user_repo: Repository) -> None:
    # a hostile or clock-skewed history: times 10, 30, 20, 40 (oldest first)
    ids = _history(user_repo, [NOV_1 + 10, NOV_1 + 30, NOV_1 + 20, NOV_1 + 40])
    assert rev_parse(user_repo, f"main@{{@{NOV_1 + 25}}}") == ids[2]
    assert rev_parse(user_repo, f"main@{{@{NOV_1 + 35}}}") == ids[2]  # not ids[1], at 30
    assert rev_parse(user_repo, f"main@{{@{NOV_1 + 15}}}") == ids[0]
    with pytest.raises(NoCommitAtDateError) as info:
        rev_parse(user_repo, f"main@{{@{NOV_1 + 5}}}")
    assert info.value.earliest == ids[0]


def test_commit_as_of_is_the_library_walk(user_repo: Repository) -> None:
    ids = _daily(user_repo)
    assert commit_as_of(user_repo, ids[4], NOV_1 + 2 * DAY) == ids[1]
    with pytest.raises(NoCommitAtDateError, match=ids[4].hex()):
        commit_as_of(user_repo, ids[4], 0)


def test_a_looping_history_is_an_error_not_a_hang(user_repo: Repository) -> None:
    """Commit ids cover their parents: only a tampered index loops (the first commit
    made a child of the second here), and the walk says so instead of spinning."""
    ids = _daily(user_repo)
    first = user_repo.read_commit(ids[0])
    forged = Commit(first.tree, first.meta, ids[1], first.timestamp, first.subject)
    user_repo.close()
    put_record(user_repo.path, ids[0], ObjectType.COMMIT, forged.encode())
    with Repository.open(user_repo.path) as repo:
        started = time.perf_counter()
        with pytest.raises(CorruptObjectError, match="loops"):
            rev_parse(repo, "main@{1970-01-01}")
        assert time.perf_counter() - started < 5
        assert rev_parse(repo, "main@{2026-11-02}") == ids[0]  # found before the loop


# ----- the command line, on the shared 24-commit history -------------------------------


def test_every_command_takes_rev_at_date(history_tree: HistoryTree) -> None:
    repo, ref, commits = history_tree.repo_path, history_tree.ref, history_tree.commits
    for commit in commits:
        at = format_time(commit.timestamp).removesuffix(" UTC")  # 2026-01-05 00:00:00
        for date in (at, f"@{commit.timestamp + DAY - 1}"):
            result = cli("--repo", repo, "rev-parse", f"{ref}@{{{date}}}")
            assert (result.code, result.out) == (0, f"{commit.commit_id}\n"), date
    fifth = commits[4]
    shown = cli("--repo", repo, "show", f"{ref}@{{2026-01-05T12:00}}")
    assert shown.code == 0 and fifth.commit_id in shown.out
    back = cli("--repo", repo, "rev-parse", f"{ref}@{{2026-01-05}}~2")
    assert back.out.strip() == commits[2].commit_id
    cat = cli("--repo", repo, "cat", f"{ref}@{{2026-01-05}}", "/etc/ssh/sshd_config")
    assert cat.raw == cli("--repo", repo, "cat", fifth.commit_id, "/etc/ssh/sshd_config").raw
    assert (
        cli("--repo", repo, "diff", f"{ref}@{{2026-01-05}}", f"{ref}~{len(commits) - 5}").out == ""
    )


@pytest.mark.parametrize(
    ("rev", "says"),
    [
        ("os/main@{2025-12-31}", "no commit at or before 2025-12-31 00:00:00 UTC; the earliest"),
        ("os/main@{someday}", "not a date: 'someday'; use YYYY-MM-DD"),
        ("os/main@{2026-01-05", "'@{' is not closed"),
        ("os/main~1@{2026-01-05}", "goes right after the ref"),
        ("os/main@{1767225600}", "write seconds since the epoch as @1767225600"),
    ],
)
def test_bad_dates_are_one_line_and_exit_1(history_tree: HistoryTree, rev: str, says: str) -> None:
    result = run("rev-parse", rev, repo=history_tree.repo_path, text=True)
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr.startswith("sapwood: error: ") and result.stderr.count("\n") == 1
    assert says in result.stderr, result.stderr
    if "earliest" in says:
        assert "2026-01-01 00:00:00 UTC" in result.stderr
        assert history_tree.commits[0].commit_id[:12] in result.stderr


def test_a_commit_id_at_a_date_on_the_command_line(history_tree: HistoryTree) -> None:
    tenth = history_tree.commits[9]
    ok = cli("--repo", history_tree.repo_path, "rev-parse", f"{tenth.commit_id[:12]}@{{now}}")
    assert ok.out.strip() == tenth.commit_id
    early = cli("--repo", history_tree.repo_path, "rev-parse", f"{tenth.commit_id}@{{2026-01-02}}")
    assert early.code == 1 and "no ref history" in early.err


def test_a_truncated_history_names_the_oldest_commit_it_holds(user_repo: Repository) -> None:
    """A history pulled with a depth, or pruned: the walk ends at the missing parent."""
    ids = _daily(user_repo)
    user_repo.close()
    delete_record(user_repo.path, ids[1])
    with Repository.open(user_repo.path) as repo:
        assert rev_parse(repo, "main@{2026-11-03T12:00}") == ids[2]
        with pytest.raises(NoCommitAtDateError) as info:
            rev_parse(repo, "main@{2026-11-02T12:00}")  # ids[1] is gone, ids[0] unreachable
        assert info.value.earliest == ids[2]
