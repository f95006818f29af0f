"""The dates of ``REV@{DATE}``: text to seconds since the epoch, pure and bounded.

Accepted (ASCII only; words in any case; surrounding spaces ignored):

    2026-11-01                      00:00:00 UTC of that day
    2026-11-01 12:00                a time of day, UTC (a space or a 'T' between;
                                    an hour alone, 2026-11-01 12, is 12:00)
    2026-11-01T12:00:00+02:00       with a zone: Z, +HH, +HHMM or +HH:MM (also '-')
    2026-11-01 12:00:00 +0000       (a space before the zone: the date log and show print)
    2026-11-01T120000Z              the compact time of the mount's history/ names
    @1730000000                     seconds since the epoch (as ``date -d @N``)
    3 days ago                      N second(s), minute(s), hour(s), day(s) or week(s)
    3.days.ago                      (dots for spaces, as git; handy in file names)
    now, yesterday                  yesterday is 24 hours ago, as git's

A bare number is refused (git reads ``REV@{5}`` as the fifth previous value of a ref,
which sapwood does not keep): seconds are written ``@N``. Months and years are not
units (their length varies); dates without a zone are UTC, as everywhere in sapwood,
never the local zone. Every refusal is an InvalidDateError saying what is accepted,
raised after at most a regular-expression match of a bounded string.
"""

from __future__ import annotations

import datetime
import re
import time

from store.errors import InvalidDateError

MAX_DATE_CHARS = 64  # the longest accepted form is 26 characters
I64_MIN, I64_MAX = -(2**63), 2**63 - 1  # the times a commit can hold (store.objects)
_EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)
_SECOND = datetime.timedelta(seconds=1)

_FLAGS = re.ASCII | re.IGNORECASE
_CALENDAR = re.compile(
    r"(?P<year>[0-9]+)-(?P<month>[0-9]{2})-(?P<day>[0-9]{2})"
    r"(?:[T ](?P<hour>[0-9]{2})(?::?(?P<minute>[0-9]{2})(?::?(?P<second>[0-9]{2}))?)?"
    r" ?(?P<zone>Z|[+-][0-9]{2}(?::?[0-9]{2})?)?)?",  # ' +0000': as log and show print it
    _FLAGS,
)
_SECONDS = re.compile(r"@(?P<sign>-?)(?P<digits>[0-9]+)", _FLAGS)
_UNITS = {"second": 1, "minute": 60, "hour": 3600, "day": 86400, "week": 7 * 86400}
_RELATIVE = re.compile(
    r"(?P<count>[0-9]+)[ .]+(?P<unit>second|minute|hour|day|week)s?[ .]+ago", _FLAGS
)
_WORDS = {"now": 0, "yesterday": 86400}
_MAX_COUNT_DIGITS = 16  # 10**16 weeks is already far past any 64-bit time

ACCEPTED = (
    "use YYYY-MM-DD, YYYY-MM-DD HH:MM[:SS] (UTC, or with a zone as +02:00), @SECONDS, "
    "'N days ago' (seconds, minutes, hours, days, weeks), yesterday or now"
)


def parse_date(text: str, now: int | None = None) -> int:
    """Seconds since the epoch that ``text`` names (the forms in the module's doc).

    ``now`` (seconds; default the clock) is what relative forms count back from.
    Raises InvalidDateError for anything else, and for a time a commit cannot hold.
    """
    if len(text) > MAX_DATE_CHARS:
        raise InvalidDateError(
            f"not a date: {text[:20]!r}... is longer than {MAX_DATE_CHARS} characters",
            date=text,
        )
    stripped = text.strip(" \t")
    seconds = _parse(stripped, int(time.time()) if now is None else now)
    if not I64_MIN <= seconds <= I64_MAX:
        raise InvalidDateError(f"not a date: {text!r} is out of range (64-bit seconds)", date=text)
    return seconds


def _parse(text: str, now: int) -> int:
    word = _WORDS.get(text.lower())
    if word is not None:
        return now - word
    if match := _RELATIVE.fullmatch(text):
        count = match["count"]
        if len(count.lstrip("0")) > _MAX_COUNT_DIGITS:
            raise InvalidDateError(f"not a date: {text!r} is too far back", date=text)
        return now - int(count) * _UNITS[match["unit"].lower()]
    if match := _SECONDS.fullmatch(text):
        digits = match["digits"]
        if len(digits.lstrip("0")) > len(str(I64_MAX)):  # int() of 4300+ digits refuses
            raise InvalidDateError(
                f"not a date: {text[:30]!r} is out of range (64-bit seconds)", date=text
            )
        return -int(digits) if match["sign"] else int(digits)
    if match := _CALENDAR.fullmatch(text):
        return _calendar(text, match)
    if text.isascii() and text.isdigit():
        raise InvalidDateError(
            f"not a date: {text!r}; write seconds since the epoch as @{text} "
            "(a bare number would be git's N-th previous ref value, which sapwood does not keep)",
            date=text,
        )
    raise InvalidDateError(f"not a date: {text!r}; {ACCEPTED}", date=text)


def _calendar(text: str, match: re.Match[str]) -> int:
    year = match["year"]
    if len(year) > 4 or not 1 <= int(year) <= 9999:
        raise InvalidDateError(
            f"not a date: {text!r}: the year must be between 0001 and 9999", date=text
        )
    try:
        moment = datetime.datetime(
            int(year),
            int(match["month"]),
            int(match["day"]),
            int(match["hour"] or 0),
            int(match["minute"] or 0),
            int(match["second"] or 0),
            tzinfo=_zone(text, match["zone"]),
        )
    except ValueError as exc:  # month 13, February 30, hour 24, second 60
        raise InvalidDateError(f"not a date: {text!r}: {exc}", date=text) from None
    return (moment - _EPOCH) // _SECOND


def _zone(text: str, zone: str | None) -> datetime.timezone:
    if zone is None or zone.upper() == "Z":
        return datetime.UTC
    digits = zone[1:].replace(":", "")
    hours, minutes = int(digits[:2]), int(digits[2:] or 0)
    if hours > 23 or minutes > 59:
        raise InvalidDateError(f"not a date: {text!r}: no time zone is {zone}", date=text)
    offset = datetime.timedelta(hours=hours, minutes=minutes)
    return datetime.timezone(-offset if zone[0] == "-" else offset)


def format_time(seconds: int) -> str:
    """``2026-11-01 12:00:00 UTC``, or ``@SECONDS`` for a time outside the calendar."""
    try:
        moment = _EPOCH + seconds * _SECOND
    except OverflowError:
        return f"@{seconds}"
    return f"{moment:%Y-%m-%d %H:%M:%S} UTC"
