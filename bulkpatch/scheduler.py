"""Which job runs when: the window, per-entity lanes, the ready queue, outcome batches.

::

    admit ─► lane of its entity ─► ready queue ─► a worker takes it ─► release ─► next in lane
                                                                  └──► outbox ─► the consumer

- The window: at most ``held_max`` jobs are held (queued, waiting in a lane or in
  flight); the producer stops reading at that and starts again once a quarter of them
  are done, so it wakes once per batch of jobs, not per job. Memory is bounded by it.
- Per-entity order: a job waits in its entity's lane until the job before it is
  released, so two jobs for one entity are never in flight together and take effect in
  input order; jobs for other entities pass it.
- Outcomes pass to the consumer in batches: one wake-up of the consumer per batch, not
  one per outcome. Bounded by the window (every held job has at most one outcome
  waiting), so a slow consumer stops the producer, not memory.

No HTTP and no job logic here: tests drive it with plain jobs.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Hashable
from typing import Generic, Protocol, TypeVar


class Laned(Protocol):
    """A job as the scheduler sees it: the entity it writes."""

    @property
    def key(self) -> Hashable: ...


J = TypeVar("J", bound=Laned)
T = TypeVar("T")


class Ready(Generic[J]):
    """Jobs ready to start, and workers waiting for one; both first come, first served.

    An ``asyncio.Queue`` without what the engine does not use (bounds, task counting),
    and with a way to take a job without a coroutine when one is waiting (``jobs``).
    ``None`` tells a worker to stop.
    """

    def __init__(self) -> None:
        self.jobs: deque[J | None] = deque()
        self._waiting: deque[asyncio.Future[J | None]] = deque()

    def put(self, job: J | None) -> None:
        waiting = self._waiting
        while waiting:
            worker = waiting.popleft()
            if not worker.done():  # not cancelled while it waited
                worker.set_result(job)
                return
        self.jobs.append(job)

    async def wait(self) -> J | None:
        """The next job, once there is one (``jobs`` is empty)."""
        worker: asyncio.Future[J | None] = asyncio.get_running_loop().create_future()
        self._waiting.append(worker)
        return await worker


class Window(Generic[J]):
    """The jobs held: the ready queue, the lanes behind the jobs in flight, the count.

    With a ``clock`` (seconds), the time each job waited in its entity's lane is kept in
    ``waited`` (by ``id(job)``) from its release to the ready queue until taken out.
    """

    def __init__(self, held_max: int, *, clock: Callable[[], float] | None = None) -> None:
        self.held_max = held_max
        self.held = 0
        self.ready: Ready[J] = Ready()
        self._low_water = held_max - max(1, held_max // 4)
        # Per entity with a job held: None while only its job in flight is held (most
        # entities: no deque), else the jobs waiting behind it.
        self._lanes: dict[Hashable, deque[J] | None] = {}
        self._room = asyncio.Event()
        self._room.set()
        self._idle = asyncio.Event()
        self._clock = clock
        self._since: dict[int, float] = {}  # id(job) -> when it went into a lane
        self.waited: dict[int, float] = {}  # id(job) -> seconds it spent in its lane

    @property
    def full(self) -> bool:
        return self.held >= self.held_max

    def admit(self, job: J) -> None:
        """Hold the job: ready at once, or behind its entity's job in flight."""
        self.held += 1
        lanes = self._lanes
        key = job.key
        if key not in lanes:
            lanes[key] = None
            self.ready.put(job)
        else:
            if (lane := lanes[key]) is None:
                lanes[key] = deque((job,))
            else:
                lane.append(job)
            if self._clock is not None:
                self._since[id(job)] = self._clock()

    def release(self, job: J) -> bool:
        """The job has its outcome: the next of its entity is ready. True when that was
        its entity's last job held."""
        lane = self._lanes[job.key]
        last = not lane
        if lane:
            nxt = lane.popleft()
            if self._clock is not None:
                self.waited[id(nxt)] = self._clock() - self._since.pop(id(nxt))
            self.ready.put(nxt)
        else:
            del self._lanes[job.key]
        self.held -= 1
        if self.held <= self._low_water:
            self._room.set()
        if self.held == 0:
            self._idle.set()
        return last

    async def room(self) -> None:
        """Wait until room is made (a quarter of the window freed) or ``wake`` is called;
        call while ``full``, and look again after."""
        self._room.clear()
        await self._room.wait()

    def wake(self) -> None:
        """Wake a producer waiting for room (the run is stopping)."""
        self._room.set()

    async def drained(self) -> None:
        """Wait until no job is held."""
        if self.held:
            self._idle.clear()
            await self._idle.wait()

    def stop_workers(self, count: int) -> None:
        for _ in range(count):
            self.ready.put(None)


class Outbox(Generic[T]):
    """Outcomes waiting for the consumer, handed over in batches."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.items: list[T] = []
        self._ready = asyncio.Event()
        self.closed = False

    def offer(self, outcome: T) -> bool:
        """Put without waiting when there is room (the usual case): False when full."""
        items = self.items
        if len(items) >= self.limit:
            return False
        items.append(outcome)
        if len(items) == 1:
            self._ready.set()  # the consumer may be waiting for a first one
        return True

    async def put(self, outcome: T) -> None:
        """Put, waiting while the outbox is full (the consumer is behind)."""
        while len(self.items) >= self.limit and not self.closed:
            self._ready.clear()
            await self._ready.wait()
        self.items.append(outcome)
        self._ready.set()

    async def take(self) -> list[T] | None:
        """The outcomes waiting (at least one), or None once closed and empty."""
        while not self.items:
            if self.closed:
                return None
            self._ready.clear()
            await self._ready.wait()
        batch, self.items = self.items, []
        self._ready.set()  # room again, for a worker waiting on a full outbox
        return batch

    def close(self) -> None:
        self.closed = True
        self._ready.set()
