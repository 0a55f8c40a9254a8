"""What the server accepted, as counted at past ticks: the record ``pace.RateControl``
reads the server's grant from."""

from __future__ import annotations

from collections import deque

BIN_S = 0.1  # the shortest time a rate is measured over (s)


class AcceptedLog:
    """``accepted`` (a running count of answers) as it stood at each tick of the last
    ``keep_s`` seconds. Times are seconds on the gateway's ``Clock``."""

    def __init__(self, keep_s: float) -> None:
        self.keep_s = keep_s
        self._ticks: deque[tuple[float, int]] = deque()  # (tick, accepted)

    def record(self, now: float, accepted: int) -> None:
        """The count at the tick ``now``; ticks older than ``keep_s`` are dropped."""
        ticks = self._ticks
        ticks.append((now, accepted))
        while ticks[0][0] < now - self.keep_s:
            ticks.popleft()

    def at(self, moment: float) -> int:
        """The count at the last tick at or before ``moment`` (0 before the first)."""
        count = 0
        for at, then in self._ticks:
            if at > moment:
                break
            count = then
        return count

    def near(self, moment: float) -> float:
        """The count at ``moment``, read between the ticks either side of it (a tick's
        worth of answers is too coarse for a second's count)."""
        before: tuple[float, int] | None = None
        for at, then in self._ticks:
            if at > moment:
                if before is None:
                    return 0.0
                since, count = before
                return count + (then - count) * (moment - since) / (at - since)
            before = (at, then)
        return float(before[1]) if before is not None else 0.0

    def busiest(self, accepted: int, now: float) -> int:
        """The most accepted in one second: between ticks up to a second apart, the last
        of them up to ``now``, when the count is ``accepted``."""
        ticks = [*self._ticks, (now, accepted)]
        most, start = 0, 0
        for at, count in ticks:
            while ticks[start][0] < at - 1.0:
                start += 1
            most = max(most, count - ticks[start][1])
        return most

    def steady(self) -> float | None:
        """Accepted per second over the last two intervals between ticks, when neither
        took less than four fifths of the other (0.0 when both took none); None
        otherwise, or before three ticks: the pace a server holds to."""
        ticks = self._ticks
        if len(ticks) < 3:
            return None
        (first, before), (_, between), (last, after) = ticks[-3], ticks[-2], ticks[-1]
        one, two = between - before, after - between
        if min(one, two) < 0.8 * max(one, two) or last <= first:
            return None
        return (after - before) / (last - first)

    def per_second(self, accepted: int, now: float, span: float) -> float:
        """Accepted per second from the last tick at least ``span`` s before ``now`` (or
        the first) to ``now``, when the count is ``accepted``; over a second before any."""
        ticks = self._ticks
        if not ticks:
            return accepted / 1.0
        start = now - span
        since, count = ticks[0]
        for at, then in ticks:
            if at > start:
                break
            since, count = at, then
        return (accepted - count) / max(BIN_S, now - since)
