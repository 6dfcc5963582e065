"""GroupCommit: concurrent callers share flushes, each gets its own result or the flush's error."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from store_server.batching import GroupCommit


def test_a_lone_caller_flushes_its_item_at_once() -> None:
    calls: list[list[int]] = []
    gc = GroupCommit(lambda items: calls.append(list(items)) or [i * 10 for i in items])
    assert gc.submit(1) == 10
    assert gc.submit(2) == 20
    assert calls == [[1], [2]]


def test_callers_arriving_during_a_flush_share_the_next_one() -> None:
    first_running, release = threading.Event(), threading.Event()
    calls: list[list[int]] = []

    def flush(items: list[int]) -> list[int]:
        calls.append(list(items))
        if items == [0]:
            first_running.set()
            release.wait(10)
        return [-i for i in items]

    gc: GroupCommit[int, int] = GroupCommit(flush)
    with ThreadPoolExecutor(8) as pool:
        first = pool.submit(gc.submit, 0)
        assert first_running.wait(10)
        waiting = [pool.submit(gc.submit, i) for i in range(1, 6)]
        # Every later caller is queued behind the running flush before it is let go (polled:
        # queueing is internal and has no event to wait on).
        while len(gc._group.items) < 5:
            threading.Event().wait(0.001)
        release.set()
        assert first.result(10) == 0
        assert [f.result(10) for f in waiting] == [-1, -2, -3, -4, -5]
    assert calls[0] == [0]
    assert sorted(calls[1]) == [1, 2, 3, 4, 5] and len(calls) == 2


def test_every_caller_of_a_failed_group_gets_the_error_and_the_next_group_still_runs() -> None:
    def flush(items: list[int]) -> list[int]:
        if 13 in items:
            raise ValueError("unlucky")
        return items

    gc: GroupCommit[int, int] = GroupCommit(flush)
    with pytest.raises(ValueError, match="unlucky"):
        gc.submit(13)
    assert gc.submit(7) == 7


def test_a_flush_returning_the_wrong_count_is_an_error_not_a_wrong_answer() -> None:
    gc: GroupCommit[int, int] = GroupCommit(lambda items: [])
    with pytest.raises(RuntimeError, match="result count"):
        gc.submit(1)


def test_many_threads_each_get_their_own_result() -> None:
    sizes: list[int] = []

    def flush(items: list[int]) -> list[int]:
        sizes.append(len(items))
        return [i + 1000 for i in items]

    gc: GroupCommit[int, int] = GroupCommit(flush)
    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(gc.submit, range(2000)))
    assert results == [i + 1000 for i in range(2000)]
    assert sum(sizes) == 2000
