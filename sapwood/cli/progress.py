"""Progress of long commands on a terminal: a tqdm bar on stderr, then one summary line.

Nothing at all is written when stderr is not a terminal, and tqdm is imported only
when it is (every command's start-up pays for what it imports). The library reports
through callbacks, and :class:`Progress` offers one for each shape: :meth:`count`
(a number of files: commit), :meth:`task` (a ``TaskProgress``: fsck, prune,
checkout, deploy) and :meth:`pull` (a ``PullProgress``, from any thread).

A phase ("reading trees", "checking", ...) with a new total or unit gets a bar of
its own (one that only renames its phase keeps the bar and its count): percentage,
rate and time left where the total is known, count and rate where it is not. When
the command ends well, the bar gives way to one line: the last count (of its total),
the command's time and the rate of the phase counted, e.g.
``fsck: checking 1234/1234 files (100%) in 2.1 s, 587 files/s``. On an error the bar is only
cleared (the error line follows).
"""

from __future__ import annotations

import sys
import threading
import time
from types import TracebackType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sapwood import PullProgress, TaskProgress

_PULL_UNIT = "content object"


class Progress:
    """Bars and a summary line on stderr for the command ``name``, if a terminal."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._active = sys.stderr.isatty()
        self._lock = threading.Lock()
        self._bar: Any = None  # the tqdm bar of the current phase
        self._logs: Any = None  # while bars are drawn, log lines go through tqdm.write
        self._started = time.monotonic()
        # the last count: phase, done, total, unit, extra, and its phase's time so far
        self._last: tuple[str, int, int | None, str, str, float] | None = None
        self._phase_started = self._started
        self._summary: str | None = None  # said at the end instead of the last count

    def __enter__(self) -> Progress:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.close(success=kind is None)

    # ----- the callbacks ----------------------------------------------------------------
    def count(self, files: int) -> None:
        """A count without a total (commit: files scanned so far)."""
        if self._active:
            self._show("committing", files, None, "file")

    def task(self, status: TaskProgress) -> None:
        """A ``TaskProgress`` of fsck, prune, checkout or deploy."""
        if self._active:
            self._show(status.phase, status.done, status.total, status.unit)

    def pull(self, status: PullProgress) -> None:
        """A ``PullProgress``: content objects out of the total once the trees are
        walked (every object before), with the bytes read and their rate."""
        if not self._active:
            return
        counted = status.content_total is not None
        done = status.content_done if counted else status.objects
        unit = _PULL_UNIT if counted else "object"
        rate = status.bytes / status.elapsed if status.elapsed > 0 else 0.0
        extra = f"{size_text(status.bytes)}, {size_text(int(rate))}/s" if status.bytes else ""
        total = status.content_total
        if total is not None:
            done = min(done, total)  # objects that came in deltas are counted as done too
        phase = status.phase if status.phase != "done" or self._bar is None else ""
        self._show(phase, done, total, unit, extra)

    # ----- drawing --------------------------------------------------------------------
    def _show(self, phase: str, done: int, total: int | None, unit: str, extra: str = "") -> None:
        with self._lock:
            bar = self._bar
            fresh = bar is None or bar.total != total or bar.unit != f" {unit}s"
            if fresh:
                bar = self._open(phase, total, unit, _format(done, total))
            elif phase and phase != bar.desc:
                bar.set_description_str(phase, refresh=False)
            bar.bar_format = _format(done, total)
            if extra:
                bar.set_postfix_str(extra, refresh=False)
            bar.update(done - bar.n)
            finished = total is not None and done >= total
            if (fresh or finished) and bar.last_print_n < done:
                bar.refresh()  # drawn at once: a first count, and the 100% of the last
                bar.last_print_n = done
            if done or total is not None:
                counting = time.monotonic() - self._phase_started
                self._last = (bar.desc, done, total, unit, extra, counting)

    def _open(self, phase: str, total: int | None, unit: str, form: str | None) -> Any:
        from tqdm import tqdm  # only on a terminal: importing it costs every command time

        if self._bar is not None:
            self._bar.close()
        self._phase_started = time.monotonic()
        if self._logs is None:
            from tqdm.contrib.logging import logging_redirect_tqdm

            self._logs = logging_redirect_tqdm()  # a warning clears the bar, then redraws it
            self._logs.__enter__()
        self._bar = tqdm(
            desc=phase,
            total=total,
            unit=f" {unit}s",
            file=sys.stderr,
            leave=False,
            dynamic_ncols=True,
            mininterval=0.1,
            smoothing=0.1,
            bar_format=form,
        )
        return self._bar

    def _line(
        self, phase: str, done: int, total: int | None, unit: str, extra: str, counting: float
    ) -> str:
        """The summary: the last count, the command's time, and the rate of the phase
        counted (``counting``: its seconds; a walk of the trees before it counts nothing
        of its files, review7.md 22)."""
        elapsed = time.monotonic() - self._started
        if total is not None:
            counted = f"{done}/{total} {unit}s ({100 * done // total if total else 100}%)"
        else:
            counted = f"{done} {unit}{'' if done == 1 else 's'}"
        seconds = counting if counting > 0 else elapsed
        rate = f"{done / seconds:.0f} {unit}s/s" if seconds > 0 else ""
        tail = f", {extra}" if extra else (f", {rate}" if rate else "")
        return f"{self._name}: {phase} {counted} in {elapsed:.1f} s{tail}"

    def finish(self, what: str, transferred: int | None = None) -> None:
        """Say ``what`` was done in the summary line (instead of the last count), with
        the average rate of ``transferred`` bytes if given."""
        elapsed = time.monotonic() - self._started
        rate = f", {size_text(int(transferred / elapsed))}/s" if transferred and elapsed else ""
        self._summary = f"{self._name}: {what} in {elapsed:.1f} s{rate}"

    def close(self, success: bool = True) -> None:
        """Clear the bar; after a success, write the summary line."""
        with self._lock:
            if self._bar is not None:
                self._bar.close()
                self._bar = None
            if self._logs is not None:
                self._logs.__exit__(None, None, None)
                self._logs = None
            summary = self._summary or (self._line(*self._last) if self._last else None)
            if self._active and success and summary is not None:
                sys.stderr.write(summary + "\n")
                sys.stderr.flush()
            self._summary = self._last = None


def _format(done: int, total: int | None) -> str | None:
    """tqdm's own bar, but for a phase that counts nothing (yet): its name and time."""
    return None if total is not None or done else "{desc} [{elapsed}]"


def size_text(count: int) -> str:
    """Bytes for people: 512 B, 3.0 MiB."""
    size = float(count)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{count} B"
