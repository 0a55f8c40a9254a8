"""The scheduler alone: window, lanes, ready queue and outbox, with plain jobs and no HTTP."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from bulkpatch.scheduler import Outbox, Window


@dataclass(frozen=True)
class Job:
    key: str
    n: int


def _take(window: Window[Job]) -> list[Job]:
    """Every job the ready queue holds now (what idle workers would start)."""
    out: list[Job] = []
    while window.ready.jobs:
        job = window.ready.jobs.popleft()
        assert job is not None
        out.append(job)
    return out


def test_one_job_per_entity_is_ready_and_the_rest_follow_in_input_order() -> None:
    window: Window[Job] = Window(held_max=100)
    jobs = [Job(k, n) for n, k in enumerate("abacab")]
    for job in jobs:
        window.admit(job)
    first = _take(window)
    assert first == [Job("a", 0), Job("b", 1), Job("c", 3)]  # one per entity, in order
    done: list[Job] = list(first)
    while window.held:
        job = done.pop(0)
        window.release(job)
        ready = _take(window)
        assert all(r.key != o.key for r in ready for o in done)  # never two of one entity
        done.extend(ready)
    # Each entity's jobs started in input order.
    started = first + [j for j in jobs if j not in first]
    for key in "abc":
        ns = [j.n for j in started if j.key == key]
        assert ns == sorted(ns)


def test_release_says_when_an_entity_has_nothing_more_held() -> None:
    window: Window[Job] = Window(held_max=10)
    a0, a1 = Job("a", 0), Job("a", 1)
    window.admit(a0)
    window.admit(a1)
    _take(window)
    assert window.release(a0) is False  # a1 is next
    assert _take(window) == [a1]
    assert window.release(a1) is True


async def test_the_producer_waits_for_a_quarter_of_the_window() -> None:
    window: Window[Job] = Window(held_max=8)
    for n in range(8):
        window.admit(Job(str(n), n))
    assert window.full
    waiting = asyncio.create_task(window.room())
    jobs = _take(window)
    for job in jobs[:1]:
        window.release(job)
    await asyncio.sleep(0)
    assert not waiting.done()  # one free is not enough: it would wake per job
    for job in jobs[1:2]:
        window.release(job)
    await asyncio.wait_for(waiting, 1)  # two of eight: a quarter
    assert not window.full


async def test_drained_returns_once_nothing_is_held() -> None:
    window: Window[Job] = Window(held_max=4)
    job = Job("a", 0)
    window.admit(job)
    drained = asyncio.create_task(window.drained())
    await asyncio.sleep(0)
    assert not drained.done()
    window.release(job)
    await asyncio.wait_for(drained, 1)


async def test_outcomes_go_to_the_consumer_in_batches_and_a_full_outbox_waits() -> None:
    outbox: Outbox[int] = Outbox(limit=3)
    assert all(outbox.offer(n) for n in range(3))
    assert outbox.offer(3) is False  # full: the worker must wait
    late = asyncio.create_task(outbox.put(3))
    await asyncio.sleep(0)
    assert not late.done()
    assert await outbox.take() == [0, 1, 2]  # one wake-up, three outcomes
    await asyncio.wait_for(late, 1)
    assert await outbox.take() == [3]
    outbox.close()
    assert await outbox.take() is None


async def test_a_stopped_worker_gets_none() -> None:
    window: Window[Job] = Window(held_max=4)
    waiting = asyncio.create_task(window.ready.wait())
    await asyncio.sleep(0)
    window.stop_workers(1)
    assert await asyncio.wait_for(waiting, 1) is None
