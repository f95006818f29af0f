"""Verifications past their deadline take turns, and stop once no one waits for them
(mountd/turns.py, mountd/preparing.py; attack16 2)."""

from __future__ import annotations

import threading
import time

import pytest
import trio

from mountd.preparing import DEADLINE, LONG, Preparer
from mountd.turns import Turns, Verification
from store import ObjectId, ObjectReadError
from tests.mountd.legacy import WaitingView, served_while_held


def _overdue(turns: Turns, n: int) -> Verification:
    verification = Verification(turns, ObjectId(bytes([n]) * 32))
    verification.overdue = True
    return verification


def test_overdue_verifications_run_one_at_a_time_each_in_its_turn() -> None:
    """Three overdue verifications, each calling its pace between "chunks" of 1 ms: never
    two between the same pair of calls at once, and each gets its share."""
    turns = Turns(slice_seconds=0.02)
    running = 0
    most = 0
    chunks = [0, 0, 0]
    lock = threading.Lock()
    stop = time.monotonic() + 0.6

    def verify(n: int) -> None:
        nonlocal running, most
        verification = _overdue(turns, n)
        try:
            while time.monotonic() < stop:
                verification()
                with lock:
                    running += 1
                    most = max(most, running)
                time.sleep(0.001)  # a chunk inflated
                chunks[n] += 1
                with lock:
                    running -= 1
        finally:
            verification.ended()

    threads = [threading.Thread(target=verify, args=(n,)) for n in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    assert most == 1
    assert min(chunks) > max(chunks) // 4, chunks  # turns of 20 ms each, not one alone


def test_an_overdue_verification_alone_never_waits() -> None:
    """Its slice over and no other waiting, it goes on: a legitimate huge file verified
    alone takes no longer for being overdue."""
    turns = Turns(slice_seconds=0.001)
    verification = _overdue(turns, 1)
    started = time.monotonic()
    for _ in range(1000):
        verification()
    assert time.monotonic() - started < 1
    verification.ended()


def test_a_verification_given_up_stops_even_while_it_waits_for_its_turn() -> None:
    turns = Turns(slice_seconds=60)
    holder, waiter = _overdue(turns, 1), _overdue(turns, 2)
    holder()  # its turn, for a minute
    failed: list[BaseException] = []

    def wait_for_a_turn() -> None:
        try:
            waiter()
        except ObjectReadError as exc:
            failed.append(exc)
        finally:
            waiter.ended()

    thread = threading.Thread(target=wait_for_a_turn)
    thread.start()
    time.sleep(0.05)
    assert thread.is_alive() and turns.waiting == 1
    waiter.give_up()
    thread.join(timeout=5)
    assert not thread.is_alive() and len(failed) == 1 and turns.waiting == 0
    holder.give_up()
    with pytest.raises(ObjectReadError, match="no one waits"):
        holder()


def test_a_huge_file_is_served_beside_a_hostile_object_that_takes_its_turns() -> None:
    """attack16 2 with verifications as real ones are (paced): the hostile one (256 GiB
    of zeros: minutes) past its deadline, a 300 MiB file and a 2 MiB one are served,
    and the hostile one goes on, in its turns."""
    view = WaitingView({1: LONG + 1, 2: 300 << 20}, held={1}, paced=True)
    started = time.monotonic()
    assert served_while_held(view, [1], 2, within=DEADLINE + 1)[0] == 2
    print(f"the 300 MiB file served after {time.monotonic() - started - 0.2:.2f} s")
    assert view.chunks[1] > 0
    view = WaitingView({1: LONG + 1, 2: LONG + 1, 3: 300 << 20}, held={1, 2}, paced=True)
    assert served_while_held(view, [1, 2], 3, within=2 * DEADLINE + 1)[0] == 3


def test_a_verification_no_one_waits_for_stops_at_its_next_chunk() -> None:
    """The reads waiting for it cancelled (an unmount): its thread was abandoned and
    verified on for minutes; it stops at its next chunk."""
    view = WaitingView({1: LONG + 1}, held={1}, paced=True)
    preparer = Preparer(view)  # type: ignore[arg-type]

    async def main() -> None:
        with trio.move_on_after(DEADLINE + 0.3):  # overdue, then given up
            await preparer.read(1, 0, 4)

    trio.run(main)
    time.sleep(0.1)
    chunks = view.chunks[1]
    time.sleep(0.3)
    try:
        assert view.chunks[1] == chunks and chunks > 0
        assert preparer.overdue == 0
    finally:
        view.go.set()


def test_many_hostile_objects_at_once_take_a_bounded_number_of_threads(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Ten hostile objects read at once, whose chunks never end (their threads never
    park): OVERDUE of them go on past their deadline, the next keeps the lane, the
    others wait for it without a thread; a 2 MiB file is still served."""
    monkeypatch.setattr("mountd.preparing.DEADLINE", 0.05)
    monkeypatch.setattr("mountd.preparing.OVERDUE", 3)
    hostile = list(range(1, 11))
    view = WaitingView({**dict.fromkeys(hostile, LONG + 1), 11: 2 << 20}, held=set(hostile))
    preparer = Preparer(view)  # type: ignore[arg-type]
    working: list[int] = []

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            for ino in hostile:
                nursery.start_soon(preparer.read, ino, 0, 4)
            await trio.sleep(1)  # 20 deadlines
            working.append(threading.active_count())
            with trio.fail_after(2):
                assert await preparer.read(11, 0, 4) == b"read"
            working.append(preparer.overdue)
            view.go.set()

    before = threading.active_count()
    trio.run(main)
    assert working[0] - before <= 4 and working[1] == 3  # 3 overdue and the lane's one
