"""Pacing: when each request may leave (``Schedule``), and at what rate (``RateControl``).

Every mode runs the same controller; they differ only in where it starts and its ceiling:

=================  ==========================  =======================================
``--rate``         starts at                   ceiling (never above)
=================  ==========================  =======================================
``R``              R                           R
``auto``           10/s, doubling each tick    ``--max-rate``
``0``              unpaced                     none: only the server's throttle
=================  ==========================  =======================================

What the controller watches is the server's grant: the answers it accepts per second.

- **On a refusal** (a 429; or a tick where 500/502/503/504 answers are a rising share, the
  congestion some gateways show instead, API notes §3), the grant is measured over the
  time since the previous refusal (1 s to 12 s; over two windows once they are known to
  be longer: a throttle counting in 6 s windows refuses once per window, so a 1 s measure
  would see only the window's burst), and the
  rate drops to ``HOLD`` of it. When the refusal meets a probe (a rate above the last
  measured grant, or the first climb; or above ``HOLD`` of it, a window after the last
  refusal: a grant read a little high), the grant stands (at most the rate refused,
  and ``HOLD`` of it when that was under the grant; when it stands on a long window's
  reading, the window is read again at the middle of the lengths its wait allowed:
  ``LongWindow.mid_window``), and the limit lies between it and the rate refused: the rate
  steps back to ``HOLD`` of it (never below ``HOLD`` of the grant), and the next probe
  goes halfway (a bisection, on windows of a second).
  Refusals within a tick of a decrease (within a window, once the server is known to
  count in longer ones) were counted before the decrease reached it and change nothing.
- **A window of a second that refuses everything** (``shut``, until the gateway reports
  the next accepted answer: ``reopened``): requests leave at a quarter of the rate. A
  server that takes one to three requests between refusals lets a trickle through (a spent
  sliding-window counter before it turns): requests leave at twice what it takes, no more
  than that quarter, until it takes more (``_Trickle``). When the window of a second turns
  after 0.2 s to 0.8 s of refusals, what it accepted in the second before the last of them
  is its allowance, and the grant when that is less.
- **A long window's allowance** (``longwindow.LongWindow``): when the server takes
  nothing for more than a second beyond any ``Retry-After`` it gave (or the climb is
  told to wait longer than ``LONG_WAIT_S``), a long window turned, and what it accepted
  since the window last turned (the start, or the end of an earlier stretch of
  refusals), over the time until it takes requests again, is the grant (and that time
  the window's length). A climb slow enough to fill the window late is refused for less
  than that; the second after tells: refusals going on while the server takes a trickle
  are the window's echo. While refusals go on after it, requests leave as the window
  frees (``_paced``). A sliding-window counter lets a trickle through a spent window
  before it turns: a later reading with under half the allowance is no turn
  (``LongWindow.taken``), and a steady pace under the rate, refused in the calm after a
  reading or a cut, is the grant (``LongWindow.steady_grant``); refused later, at least
  that pace is. Known long, a window's refusal lowers the grant by at most 30 % at once,
  as a second's does.
- **The window's length** is learned from a ``Retry-After`` longer than ``LONG_WAIT_S``,
  from a stretch with nothing accepted, and from refusals going on for more than 1.5 s
  with 0.75 s of nothing accepted among them (up to 32 s; ``longwindow.RefusalRun``: a
  window that turns among them, taking a quarter of the server's busiest second, ends
  them), and from a long window's reading (up to 6 s: ``_at_least``). Refusals that go on
  while a rate far above a one-second limit comes down say nothing of the window: taken
  for a long one, they made every later step wait that long (0.53x of a limit that had
  doubled).
- **Between refusals** the rate comes back to ``HOLD`` x the grant within a second, holds
  there, then probes past it: +2 %, +4 %, ... per clean window, at most +25 % (halfway to
  a rate refused, after a refused probe), so a raised limit is found in seconds; each
  window held clean above the grant raises the grant.
- Only a rate that is used is raised: while the client sends less than 80 % of it (too
  few jobs, too little concurrency), it stays where it is.

The gateway counts answers and calls ``refused``, ``tick`` and ``reopened``; when ``pace``
moves it books every waiting request's slot again (``Schedule.set_rate``).

A refused request itself waits what its ``Retry-After`` says (``gateway.Gateway``); the
run as a whole slows to the grant instead of stopping: a throttle limits a rate, and
sending under it is what it asks. A 503 with ``Retry-After`` (an outage) pauses every
request; ``Schedule.hold`` makes every request wait for its end, and the requests that
come after it leave one slot apart, never as a burst.

Several processes sharing one server's limit (``--shard``) each run this controller on the
refusals they see and settle on shares of the limit, as TCP flows share a link.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Final

from bulkpatch.accepted import BIN_S, AcceptedLog
from bulkpatch.longwindow import (
    KEPT_AT_LEAST,
    LONG_WAIT_S,
    LONGEST_WINDOW_S,
    READ_WINDOW_S,
    LongWindow,
    Reading,
    RefusalRun,
    WindowLength,
)

TICK_S: Final = 0.5
HORIZON_S: Final = TICK_S  # how far ahead a request may book its slot
HOLD: Final = 0.97  # the rate held, as a share of the measured grant
_MIN_SPAN_S: Final = 1.0  # the grant is measured over the time since the last refusal,
_MAX_SPAN_S: Final = 12.0  # within these bounds
_BIN_S: Final = BIN_S  # the shortest time a rate is measured over
_PROBE_WAIT_S: Final = 2.0  # from a refusal (or a reading) to the next probe
_CONGESTED_SHARE: Final = 0.05  # 5xx answers in a tick above which the server is congested
_CONGESTED_MIN: Final = 3
_FIRST_STEP: Final = 0.02  # probing past the grant: +2 %, then doubling each window
_MAX_STEP: Final = 0.25
# While a window of a second refuses everything, requests leave at this share of the rate:
# a quarter of the refusals, and the window is seen to turn within 4 / rate seconds.
_SHUT_SHARE: Final = 0.25
# A stretch of refusals that ends in an accepted answer, at most this many more, and a new
# stretch within a tick: the server lets a trickle through; requests then leave at
# ``_TRICKLE_HEADROOM`` times what it takes.
_TRICKLE_TAKEN: Final = 2
_TRICKLE_HEADROOM: Final = 2.0


@dataclass
class _Trickle:
    """A server that takes one to three requests between refusals, as a spent sliding-window
    counter does before it turns, or a moving window as the first requests of a climb age
    out of it. Each accepted answer ends a stretch of refusals, and requests left at the
    full rate until the next refusal came back: in the climb's first seconds against a 6 s
    counter, 75 requests answered 429 in 1.5 s, while the server took 50/s.

    Times are seconds on the gateway's ``Clock``; counts, the gateway's ``accepted``.
    """

    opened: tuple[float, int] = (-math.inf, 0)  # the last stretch's end, and the count then
    began: tuple[float, int] | None = None  # where the trickle began, and the count before

    def shut(self, now: float, accepted: int) -> None:
        """A stretch of refusals begins at ``now``: a trickle when the last one ended less
        than a tick ago and the server took at most ``_TRICKLE_TAKEN`` since."""
        at, count = self.opened
        if now - at >= TICK_S or accepted - count > _TRICKLE_TAKEN:
            self.began = None
        elif self.began is None:
            self.began = (at, count - 1)

    def pace(self, now: float, accepted: int) -> float | None:
        """What requests leave at while it goes on (requests/s), or None: none began, or
        the server took more than ``_TRICKLE_TAKEN`` since the last stretch ended."""
        if self.began is None or accepted - self.opened[1] > _TRICKLE_TAKEN:
            return None
        at, count = self.began
        return _TRICKLE_HEADROOM * (accepted - count) / max(_BIN_S, now - at)


class Schedule:
    """When each request may leave: one slot every ``1 / rate`` seconds, none before a
    hold ends, and no credit saved up while idle (so nothing leaves in a burst).

    ``reserve(now)`` books a request's departure time (``now`` when unpaced), at most
    ``HORIZON_S`` ahead. Times are seconds on the gateway's ``Clock``. ``version`` changes with every rate
    or hold: a request that booked before it books again.
    """

    def __init__(self, rate: float | None) -> None:
        self.interval = 0.0
        self.next_at = -math.inf
        self.held_until = -math.inf
        self.version = 0
        if rate is not None:
            self.interval = 1.0 / rate

    @property
    def paced(self) -> bool:
        return self.interval > 0.0

    def set_rate(self, rate: float, now: float) -> None:
        """Space the next slots at ``rate`` requests/s (> 0). The slots booked at the old
        spacing are booked again at the new one: slower, each request keeps waiting at
        least until its old slot; faster, the new rate applies at once (slots booked half
        a second ahead at a quarter of the rate, while the server refused everything,
        held the run back after it took requests again: 0.81x of a one-second limit)."""
        interval = 1.0 / rate
        if interval > self.interval:
            self.next_at = now + interval
            self.version += 1
        elif interval < self.interval:
            self.next_at = min(self.next_at, now + interval)
            self.version += 1
        self.interval = interval

    def hold(self, until: float) -> None:
        """No request leaves before ``until``; after it, one per slot."""
        if until > self.held_until:
            self.held_until = until
            self.next_at = max(self.next_at, until)
            self.version += 1

    def reserve(self, now: float) -> tuple[float, bool]:
        """The next slot and True once it is booked; while it is more than ``HORIZON_S``
        away, a time to ask again and False (a slot booked far ahead would keep a rate
        that has since risen, and the tick would take it for a rate the client can't use)."""
        at = max(now, self.next_at, self.held_until)
        if at - now > HORIZON_S:
            return at - HORIZON_S, False
        if self.interval:
            self.next_at = at + self.interval
        return at, True


@dataclass
class RateControl:
    """The rate of every request together (requests/s; None: unpaced).

    The gateway counts what it sees in ``sent``, ``accepted`` (answers the throttle let
    through: any status but 429 and 5xx) and ``errors`` (500, 502, 503 or 504 without
    ``Retry-After``): an increment each, the whole cost on the hot path. It calls
    ``refused`` on a 429 (and a throttle's 503) and ``tick`` every ``TICK_S``; both
    return True when ``pace`` moved: what requests leave at (requests/s), ``rate``
    except in the echo of a long window (``_paced``).

    ``ceiling``: never above it (``math.inf``: none of our own). ``rate`` starts at
    ``start`` (None: unpaced until the first refusal); ``doubling``: double each clean
    tick until the first refusal (``--rate auto``).
    """

    ceiling: float
    start: float | None
    doubling: bool = False
    min_rate: float = 0.5
    sent: int = 0
    accepted: int = 0
    errors: int = 0
    # Refusals, nothing accepted since: the gateway calls ``reopened`` at the next accepted.
    shut: bool = field(init=False, default=False)
    rate: float | None = field(init=False)
    pace: float | None = field(init=False)  # what requests leave at: see ``_paced``
    grant: float | None = field(init=False, default=None)
    _ticked: tuple[int, int, int] = field(init=False, default=(0, 0, 0))  # at the last tick
    _history: AcceptedLog = field(init=False, default_factory=lambda: AcceptedLog(2 * LONGEST_WINDOW_S))
    _refused: bool = field(init=False, default=False)  # since the last tick
    _calm_until: float = field(init=False, default=-math.inf)
    _last_refusal: float | None = field(init=False, default=None)
    _accepted_then: int = field(init=False, default=0)  # ``accepted`` at the last refusal
    # A stretch of refusals with nothing accepted: (first, last, ``accepted`` then).
    _stretch: tuple[float, float, int] | None = field(init=False, default=None)
    _length: WindowLength = field(init=False, default_factory=WindowLength)
    _refusing: RefusalRun = field(init=False)
    _congested: bool = field(init=False, default=False)  # the last refusal was of 5xx answers
    _raised_at: float = field(init=False, default=-math.inf)
    _asked: float = field(init=False, default=0.0)  # the longest Retry-After yet (s)
    _long: LongWindow = field(init=False)
    _refused_at: float = field(init=False, default=-math.inf)  # the last refusal
    _turn_read_at: float = field(init=False, default=-math.inf)  # ``_one_second_turn``'s
    _opened_at: float = field(init=False, default=-math.inf)  # the last ``reopened``
    _trickle: _Trickle = field(init=False, default_factory=_Trickle)
    # Taking requests again after waiting out a Retry-After: the grant is measured from then.
    _held_until: float = field(init=False, default=-math.inf)
    _probe_at: float = field(init=False, default=-math.inf)
    _probe_step: float = field(init=False, default=_FIRST_STEP)
    _refused_at_rate: float | None = field(init=False, default=None)  # a refused probe's
    # The lowest pace in each of the two tick intervals before this one, and in this one.
    _slowest: tuple[float, float, float] = field(init=False, default=(math.inf,) * 3)

    def __post_init__(self) -> None:
        self._long = LongWindow(self._history)
        self._refusing = RefusalRun(self._history)
        self.rate = None if self.start is None else min(self.start, self.ceiling)
        self.pace = self.rate

    def reopened(self, now: float) -> bool:
        """The first answer accepted while ``shut``: the window turned; it is read at once
        (at the next tick, half the new window went at the old rate, and was refused) and
        requests leave at ``rate`` again. True when ``pace`` moved."""
        self.shut = False
        self._opened_at = now
        self._trickle.opened = (now, self.accepted)
        before = self.pace
        stretch = self._stretch
        if stretch is not None:
            if now - stretch[1] > TICK_S:  # nothing sent for a tick: every request waited
                self._held_until = now
            self._one_second_turn(now, stretch)
        return self._set_pace(now, before)

    def _stretch_now(self, now: float) -> tuple[float, float, int] | None:
        """The stretch of refusals still going on (nothing accepted since it began); one
        that ended tells how long the server's window is at least."""
        stretch = self._stretch
        if stretch is not None and self.accepted > stretch[2]:
            self.shut = False
            # It ended when the gateway saw the next answer accepted, not at this tick: a
            # window of a second refused to its turn, read half a second late, took 1.01 s
            # for a long window, and its grant halved (0.52x).
            end = self._opened_at if self._opened_at > stretch[1] else now
            # 5xx answers for longer than a window is read: an outage, no window's turn
            # (read as one, a 20 s outage held the rate to 0.2x for a minute after it).
            outage = self._congested and end - stretch[0] > READ_WINDOW_S
            if self.grant is not None and not outage:
                self._take(end, self._long.ended(end, stretch, self._asked))
            # A trickle ``LongWindow.taken`` turned down still marks where grants are measured
            # from: measured back across it, an 8 s sliding counter ran at 0.73x.
            if end - stretch[0] >= 2 * _BIN_S:  # shorter: a one-second window's edge
                self._long.turned = (end, stretch[2])
                self._one_second_turn(end, stretch)
            # The server refused everything it was sent for this long: it counts in
            # windows at least as long, and a grant is measured over two of them.
            if not outage:
                self._at_least(stretch[1] - stretch[0])
            stretch = self._stretch = None
        return stretch

    def _one_second_turn(self, now: float, stretch: tuple[float, float, int]) -> None:
        """A window of a second that refused everything for 0.2 s to 0.8 s turned as the
        refusals ended: what it accepted in the second before the last of them (a fixed
        window's all, a moving window's count) is the grant when less; at most half of
        it at once, once in two seconds (a 6 s window that trickles looks the same: read
        turn after turn, it took the rate to 0.4x). Before, a halved limit was followed
        30 % a window at a time: 3 % of a run's requests answered 429."""
        grant, rate = self.grant, self.rate
        if grant is None or rate is None or self._length.long:
            return
        if not 2 * _BIN_S <= stretch[1] - stretch[0] <= _MIN_SPAN_S - 2 * _BIN_S:
            return
        if now - self._turn_read_at < 2 * _MIN_SPAN_S:
            return
        allowance = stretch[2] - self._history.near(stretch[1] - _MIN_SPAN_S)
        if allowance >= grant:
            return
        self.grant = max(allowance, 0.5 * grant)
        self._turn_read_at = now
        self.rate = max(self.min_rate, min(self.ceiling, rate, HOLD * self.grant))
        self._raised_at = now
        # The window that began at the turn was sent at the rate before: its refusals
        # say nothing of this one.
        self._calm_until = max(self._calm_until, now + TICK_S)
        self._refused_at_rate = None
        self._probe_at = now + _PROBE_WAIT_S

    def _take(self, now: float, reading: Reading | None) -> None:
        """A long window read: its allowance over its length is the grant (or no turn)."""
        reading = self._long.taken(reading)
        if reading is None:
            return
        self._at_least(reading.window, inferred=True)
        # Refusals in the window's echo were sent into counts this rate has not reached.
        self._calm_until = now + self._length.seconds
        self._granted(now, reading.grant)

    def _granted(self, now: float, grant: float) -> None:
        """The server grants ``grant`` (requests/s), read from what it accepted: hold under
        it, and probe past it only after a while."""
        self.grant = grant
        self.rate = max(self.min_rate, min(self.ceiling, HOLD * grant))
        self._raised_at = self._last_refusal = now
        self._accepted_then = self.accepted
        self._probe_at = now + _PROBE_WAIT_S
        self._refused_at_rate = None

    def holds_everyone(self, now: float, asked: float | None) -> bool:
        """Whether a 429's ``Retry-After`` (``asked``, seconds) holds every request, not
        only the one refused: when it asks for more than ``LONG_WAIT_S`` and the server
        has refused everything it answered for a tick (its window ran out). A shorter one
        is the throttle's own granularity, for which the lower pace is the remedy."""
        return asked is not None and asked > LONG_WAIT_S and self.refusing_for(now) >= TICK_S

    def refusing_for(self, now: float) -> float:
        """How long the server has refused everything it answered (s; 0.0: it takes some)."""
        stretch = self._stretch_now(now)
        return 0.0 if stretch is None else now - stretch[0]

    def unavailable(self) -> None:
        """An outage (every request held): its refusals are no window's, to read or measure."""
        self._stretch, self._refusing = None, RefusalRun(self._history)

    def refused(self, now: float, wait: float | None = None) -> bool:
        """A 429 (or congestion), with the ``Retry-After`` it gave (seconds, if any): drop
        below what the server grants. True when ``rate`` moved."""
        before = self.pace
        self._cut(now, wait)
        return self._set_pace(now, before)

    def _cut(self, now: float, wait: float | None = None, *, congested: bool = False) -> bool:
        self._refused, self._refused_at = True, now
        self._congested = congested
        if wait is not None:
            self._asked = max(self._asked, wait)
        if wait is not None and wait > LONG_WAIT_S:
            # Told to wait longer than that: the server counts in windows that long.
            self._at_least(wait, inferred=True)
        stretch = self._stretch_now(now)
        if stretch is None:
            stretch, self.shut = (now, now, self.accepted), True
            self._trickle.shut(now, self.accepted)
        self._stretch = (stretch[0], now, stretch[2])
        length = self._refusing.refused(now, self.accepted, stretch[0])
        if length is not None and not congested:
            self._at_least(length)
        if not self.accepted:
            # Refused before anything was accepted: nothing says what the server grants.
            return self._halved(now)
        heard_since = self.accepted > self._accepted_then
        if now < self._calm_until and self._cut_to_steady_pace(now):
            return True
        if now < self._calm_until or not (heard_since or self._last_refusal is None):
            # Sent before the last decrease, or the server refuses everything for now (a
            # window that ran out): the rate is not what it answers.
            return False
        last = None if self._last_refusal is None else max(self._last_refusal, self._held_until)
        since = None if last is None else now - last
        self._last_refusal, self._accepted_then = now, self.accepted
        # A cut shows in a window's count only as the window moves on: until a known long
        # window has, refusals were sent into the count the cut has not yet reached.
        self._calm_until = now + (self._length.seconds if self._length.long else TICK_S)
        rate = self.rate
        probing = self._probing(rate, since)
        self.grant = self._regranted(now, since, rate, probing)
        # A probe (or the first climb) refused at this rate: the limit lies between the
        # grant and it, and the next probes halve that gap. Any other refusal says the
        # limit fell: nothing is known above it.
        self._refused_at_rate = rate if probing else None
        self._probe_at = now + _PROBE_WAIT_S
        self._probe_step = _FIRST_STEP
        lowered = HOLD * self.grant
        if rate is not None:
            # A refused probe goes back below the grant the server held for a window (0.9x
            # the probe gave up some of it); a limit that fell: at least 10 % down.
            lowered = min(lowered, (HOLD if probing else 0.9) * rate)
        self.rate = max(self.min_rate, min(self.ceiling, lowered))
        self._raised_at = now
        return True

    def _cut_to_steady_pace(self, now: float) -> bool:
        """Refused in a long window's calm after its reading or a cut: True when the server
        holds to a steady pace under ours (``LongWindow.steady_grant``) and the rate was
        cut. Only after a reading, a sliding-window counter met 2 s before its edge was
        read 1.7x high, and each cut after it waited out a calm refused 12 % of the time:
        2.7 % of the run's requests answered 429."""
        rate, pace, grant = self.rate, self.pace, self.grant
        if rate is None or pace is None or grant is None:
            return False
        # Three ticks after the grant was set: the pace is measured over the last two.
        if self._last_refusal is None or now - self._last_refusal < 3 * TICK_S:
            return False
        # What the server took while requests left slower than it allowed is no grant.
        took = self._long.steady_grant(grant, HOLD * min(rate, pace, *self._slowest))
        if took is None:
            return False
        self._granted(now, took)
        return True

    def _halved(self, now: float) -> bool:
        if self.rate is None or now < self._calm_until:
            return False
        self._calm_until = now + TICK_S
        self.rate = max(self.min_rate, self.rate / 2)
        return True

    def _probing(self, rate: float | None, since: float | None) -> bool:
        """Whether a refusal at ``rate``, ``since`` s after the last one, met a probe: a rate
        above the grant (the first climb, a step past it, halfway to a rate refused), or
        above the rate held under it and refused over a window after the last refusal: the
        grant was read a little high (taken for a fallen limit, it was measured back into
        the climb's refusals: 0.67x). Refused sooner, the limit fell."""
        grant = self.grant
        if rate is None:
            return False
        if grant is None or rate > grant:
            return True
        held = since is not None and since >= self._length.seconds
        return held and rate > HOLD * grant * (1 + 1e-9)

    def _regranted(self, now: float, since: float | None, rate: float | None, probing: bool) -> float:
        """The grant after a refusal at ``rate``, ``since`` seconds after the last one."""
        grant = self.grant
        if probing and grant is not None and rate is not None:
            # A probe failed: what the server accepted meanwhile is granted (no less than
            # before, no more than the rate refused).
            # After a long climb the last window says most; after a short probe, two
            # windows (a window's count seen across its edge can exceed its limit).
            climbed = self._probe_step > 4 * _FIRST_STEP
            span = (1 if climbed else 2) * self._length.span
            reading = self._long.mid_window() if rate <= grant else None
            if reading is not None:
                self._at_least(reading.window, inferred=True)
                return min(HOLD * rate, reading.grant)
            granted = max(grant, self._history.per_second(self.accepted, now, span))
            # Refused at ``rate``: the server grants less; under the grant, no more than
            # the rate held below the one refused.
            return min(granted, rate if rate > grant else HOLD * rate)
        self._long.left()
        measured = self._measured(now, since)
        if rate is not None and not self._length.long:
            # Measured over a second, a trickle at the end of a longer window is not the
            # limit: until the window is known, lower the rate by at most 30 % at once
            # (by half at the first refusal: the rate before the last doubling ran clean).
            measured = max(measured, (0.5 if grant is None else KEPT_AT_LEAST) * rate)
        elif grant is not None and rate is not None:
            measured = max(measured, self._long.cut_floor(grant, rate, HOLD * rate))
        return measured or 0.5 * (rate or self.min_rate)

    def _measured(self, now: float, since: float | None) -> float:
        """The grant: accepted per second over two of the server's windows, or since the last
        refusal when less; never from before the window last turned (measured across the
        wait before it, a 6 s moving window's grant came out at 0.86x)."""
        span = self._length.span
        turned = self._long.turned[0]
        if turned is not None and now - turned >= _MIN_SPAN_S:
            span = min(span, now - turned)
        recent = self._history.per_second(self.accepted, now, span)
        if since is None or since <= self._length.span:
            return recent
        return min(recent, self._history.per_second(self.accepted, now, min(_MAX_SPAN_S, since)))

    def _at_least(self, seconds: float, *, inferred: bool = False) -> None:
        """``WindowLength.at_least``; 5xx answers are no window, and set at most as much."""
        self._length.at_least(seconds, inferred=inferred or self._congested)

    def tick(self, now: float) -> bool:
        """Called every ``TICK_S``: raise a rate that ran clean and was used."""
        before = self.pace
        self._ticked_once(now)
        self._slowest = (*self._slowest[1:], math.inf)
        return self._set_pace(now, before)

    def _set_pace(self, now: float, before: float | None) -> bool:
        """``pace`` from ``_paced``, kept as the tick's lowest when it is; True when it
        moved from ``before``."""
        self.pace = pace = self._paced(now)
        if pace is not None and pace < self._slowest[2]:
            self._slowest = (*self._slowest[:2], pace)
        return pace != before

    def _paced(self, now: float) -> float | None:
        """``rate``, or less while the server takes nothing (one request a tick at least, to
        see it open). In the echo of the climb's first long window, which a moving window
        frees as the climb's requests age out: ``LongWindow.echo_pace``. While the server
        lets a trickle through: twice what it takes (``_Trickle``), at most ``_SHUT_SHARE``
        of the rate. While ``shut``, that share (at the rate, 2.5 % to 3.3 % of requests
        met a spent fixed window, and workers waiting out ``Retry-After`` stalled the run:
        0.82x)."""
        rate = self.rate
        if rate is None:
            return None
        refusing = now - self._refused_at <= TICK_S
        if refusing and self._long.allowance:
            echo = self._long.echo_pace(now, self.accepted, self._length.seconds, TICK_S)
            return max(1 / TICK_S, min(rate, echo))
        trickle = self._trickle.pace(now, self.accepted) if refusing else None
        if trickle is not None:
            return min(_SHUT_SHARE * rate, max(trickle, 1 / TICK_S))
        if self.shut and self.grant is not None and not self._length.long:
            return min(rate, max(_SHUT_SHARE * rate, 1 / TICK_S))
        return rate

    def _ticked_once(self, now: float) -> bool:
        sent0, accepted0, errors0 = self._ticked
        sent, answers = self.sent - sent0, self.accepted - accepted0 + self.errors - errors0
        errors = self.errors - errors0
        self._ticked = (self.sent, self.accepted, self.errors)
        self._take(now, self._long.heard(now, self.accepted, self._refused_at, self._asked))
        if self._long.turned[0] is None:
            self._long.turned = (now, self.accepted)
        self._history.record(now, self.accepted)
        self._stretch_now(now)
        refused, self._refused = self._refused, False
        if errors >= _CONGESTED_MIN and errors > _CONGESTED_SHARE * answers:
            return self._cut(now, congested=True)
        rate = self.rate
        if refused or rate is None or now < self._calm_until or rate >= self.ceiling:
            return False
        if sent < 0.8 * rate * TICK_S:
            return False  # the rate is not what holds the client back
        raised = min(self.ceiling, self._raised(rate, now))
        if raised == rate:
            return False
        self.rate, self._raised_at = raised, now
        return True

    def _raised(self, rate: float, now: float) -> float:
        grant = self.grant
        if grant is None:
            return rate * 2 if self.doubling else self.ceiling
        if rate < HOLD * grant:
            return min(HOLD * grant, rate * 1.25)
        if now - self._raised_at < self._length.seconds - TICK_S / 2:  # ticks drift: a window of them
            return rate  # not yet held for a whole window: no evidence either way
        self.grant = max(grant, rate)  # held clean for a window: granted
        reading = self._long.reading
        if reading is not None and rate > reading.grant:
            self._long.left()  # the server grants more than the window was read at
        if now < self._probe_at:
            return rate
        refused_at = self._refused_at_rate
        gap = refused_at is not None and refused_at > (1 + 2 * _FIRST_STEP) * self.grant
        if refused_at is not None and gap and not self._length.long:
            return (self.grant + refused_at) / 2  # halfway to where the last probe was refused
        self._refused_at_rate = None
        step = self._probe_step
        self._probe_step = min(_MAX_STEP, 2 * step)
        return rate * (1 + step)
