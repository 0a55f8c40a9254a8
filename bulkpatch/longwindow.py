"""Reading a window longer than a second from the stretches of refusals it causes: whether
the server counts in one, how long it is, and what it accepts in it (``pace.RateControl``
sets its grant from the reading: the allowance over the window, in requests/s).

A throttle counting in 6 s windows (Adobe I/O's "12 requests every 6 seconds", API notes
§3) refuses a climb that spent the window for the rest of it, or, a moving window, until
the climb's requests age out of it; measured over a second or two, either looks like a
trickle. Times are seconds on the gateway's ``Clock``; a stretch is (first refusal, last
refusal, ``accepted`` when it began).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Final

from bulkpatch.accepted import AcceptedLog

# A Retry-After longer than this says the server counts in windows longer than a second:
# a one-second window's reset, given as an HTTP-date and read against a Date that is also
# whole seconds, can come out at up to two.
LONG_WAIT_S: Final = 2.5
# The longest window the server's own refusals can show (a stretch of them, a run of them,
# a Retry-After); the grant is measured over two, and the history kept that long.
LONGEST_WINDOW_S: Final = 32.0
# The longest window a reading's length sets: see ``WindowLength.at_least``.
READ_WINDOW_S: Final = 6.0
# The least share of the grant one refusal keeps (a window of any length): measured over
# a second, or back across a trickle, what a window took is not yet its limit.
KEPT_AT_LEAST: Final = 0.7
_SECOND: Final = 1.0
_ECHO_SHARE: Final = 0.15  # accepted in the echo, as a share of the second before it
# Nothing accepted for this long, refusals going on: more than the rest of a one-second
# window that filled early, as a longer window shows.
_STARVED_S: Final = 0.75
# Accepted since a run of refusals began, as a share of the server's busiest second, above
# which a window turned among them.
_TURN_SHARE: Final = 0.25

Stretch = tuple[float, float, int]


@dataclass
class WindowLength:
    """How long the server's window is known to be (s): a second until it shows longer."""

    seconds: float = _SECOND

    def at_least(self, seconds: float, *, inferred: bool = False) -> None:
        """The server counts in windows at least ``seconds`` long: up to ``LONGEST_WINDOW_S``
        as its 429s show (at 6 s, a 20 s window's echo was refusals of the rate after it:
        2.2 % to 3.2 % of requests answered 429); up to ``READ_WINDOW_S`` ``inferred`` from
        a reading (the climb's begins at the run's start, perhaps in the window before: a 6 s
        window was read 6.71 s long), a ``Retry-After`` (a penalty of 30 s once made every
        later step wait 30 s) or 5xx answers (an outage is no window)."""
        longest = READ_WINDOW_S if inferred else LONGEST_WINDOW_S
        self.seconds = max(self.seconds, min(longest, seconds))

    @property
    def long(self) -> bool:
        """Whether the server is known to count in windows longer than a second (a
        stretch a little over one is a one-second window seen through the network)."""
        return self.seconds > 1.5 * _SECOND

    @property
    def span(self) -> float:
        """What a grant is measured over (s): two windows once they are known long."""
        return 2 * self.seconds if self.long else _SECOND


@dataclass
class RefusalRun:
    """Refusals coming less than a second apart: a moving window refuses until the requests
    sent too fast age out of it, and a long one lets a trickle through before it turns.

    Going on for over 1.5 s with nothing accepted for ``_STARVED_S`` among them, they say
    the window is at least that long. Without the stretch of nothing, a one-second window
    refused a rate coming down from far above its limit. Once the server takes more than
    ``_TURN_SHARE`` of its busiest second among them, a window turned, and a new run
    begins: unpaced against a 1.5 s window, refused at every turn, the refusals were read
    as one window that grew with each, and 13 % of the requests were answered 429.
    """

    history: AcceptedLog
    first: float = -math.inf
    last: float = -math.inf
    accepted: int = 0  # the gateway's count when the run began
    busiest: int = 0  # the most the server accepted in one second, then
    starved: bool = False  # nothing accepted for ``_STARVED_S`` in it

    def refused(self, now: float, accepted: int, stretch_began: float) -> float | None:
        """A refusal at ``now`` (``accepted`` so far; nothing accepted since
        ``stretch_began``): how long the window is at least (s), or None."""
        turned = accepted - self.accepted > _TURN_SHARE * self.busiest
        if now - self.last > _SECOND or turned:
            self.first, self.accepted, self.starved = now, accepted, False
            self.busiest = self.history.busiest(accepted, now)
        self.last = now
        if now - stretch_began >= _STARVED_S:
            self.starved = True
        if self.starved and now - self.first > 1.5 * _SECOND:
            return now - self.first
        return None


@dataclass(frozen=True)
class Reading:
    """A long window's turn: ``allowance`` requests accepted over ``window`` seconds."""

    window: float
    allowance: int
    # No longer than this (s): from the turn before to where the wait for this one ended
    # (a turn is seen when the first answer after it is, so both ends are late alike).
    longest: float

    @property
    def grant(self) -> float:
        """What the server accepts, in requests/s."""
        return self.allowance / self.window


@dataclass
class LongWindow:
    """The server's window, as far as this side can tell, from what ``history`` recorded.

    ``turned``: (time, ``accepted`` then) where the window last turned: the first tick,
    and the end of each stretch of refusals (``pace.RateControl`` sets both); an echo
    read by ``heard`` takes it back to the turn before the climb's stretch.
    """

    history: AcceptedLog
    turned: tuple[float | None, int] = (None, 0)
    read: bool = False  # the climb's first window is read
    allowance: int = 0  # the last reading's taken
    # The reading the grant stands on (None once it stands on something else).
    reading: Reading | None = None
    _turned_before: tuple[float | None, int] = (None, 0)
    # The climb's first short stretch of refusals (its longest, when the server gave a
    # Retry-After: ``ended``): (when it ended, the stretch, (the climb's first refusal,
    # ``accepted`` then)), kept until the second after tells whether a long window turned
    # in it.
    _reopened: tuple[float, Stretch, tuple[float, int]] | None = field(default=None)
    _echo_from: tuple[float, int] | None = None  # (tick, accepted)

    def ended(self, now: float, stretch: Stretch, asked: float) -> Reading | None:
        """The server takes requests again at ``now`` after ``stretch`` (``asked``: the
        longest Retry-After yet, s): if it refused for longer than a one-second window
        can (more than a second beyond any Retry-After it gave), or the climb was told to
        wait longer than ``LONG_WAIT_S``, a long window turned, and what it accepted since
        the last turn, over the time between, is that window's allowance over its length.

        A moving window otherwise echoes the climb for a whole window and a fixed one
        stays shut until it turns: measured over a second or two, either looks like a
        trickle (0.75x over the next 18 s); told to wait, the climb kept the rate the
        window refused. A shorter stretch in the climb is kept for ``heard``."""
        long_stretch = now - stretch[0] - asked > _SECOND
        if long_stretch or (asked > LONG_WAIT_S and not self.read):
            return self._read(now, stretch)
        if self.read:
            return None
        reopened = self._reopened
        if reopened is None:
            self._turned_before = self.turned
            self._reopened = (now, stretch, (stretch[0], stretch[2]))
        elif asked and now - stretch[0] > reopened[0] - reopened[1][0]:
            # Told to wait, refused requests come back when their wait ends, not as the
            # window frees: the longest stretch is the nearest to its turn. Untold, they
            # keep coming, and the first taken is where a moving window began to free
            # (the climb's first request aged out); a later, longer stretch ends at a
            # pace of ours, and a 3 s window was read 3.5 s to 3.9 s long (0.87x of its limit).
            self._reopened = (now, stretch, reopened[2])
        return None

    def taken(self, reading: Reading | None) -> Reading | None:
        """``reading`` as the window's turn, the grant to stand on; None when there is
        none, or it has less than half the allowance read before: no turn but a trickle
        let through. A sliding-window counter lets through, before a spent window turns,
        what the window before it counted, weighted as it leaves (at 10 s, one request
        every 2.5 s, each read as a turn: the grant fell to 0.45/s, 0.012x the limit).
        The first reading comes from the climb, which spent a whole window."""
        if reading is None or reading.allowance < 0.5 * self.allowance:
            return None
        self.allowance = reading.allowance
        self.reading = reading
        return reading

    def left(self) -> None:
        """The grant no longer stands on the last reading."""
        self.reading = None

    def mid_window(self) -> Reading | None:
        """The reading the grant stands on, if any, read again when a rate held under its
        grant is refused: the window is longer than read, and no longer than where the
        wait for its turn ended (``Reading.longest``: a ``Retry-After`` is whole
        seconds); the middle is taken, and the reading moves there (a second refusal
        halves the gap again). Without a ``Retry-After`` the two are the same, and the
        grant stands. Held 3 % lower at each such refusal, a grant read a sixth high took
        three windows to come down, each refusal a second with nothing accepted (0.89x)."""
        reading = self.reading
        if reading is not None:
            self.reading = replace(reading, window=(reading.window + reading.longest) / 2)
        return self.reading

    def steady_grant(self, grant: float, sending: float) -> float | None:
        """Refused while the server took requests at a steady pace (``AcceptedLog.steady``)
        under ``sending`` (what requests leave at, requests/s) and over half ``grant``:
        the grant was read high, and that pace is the grant (None otherwise).

        A sliding-window counter lets a trickle through before a spent window turns; the
        stretch the window was read from ended at the trickle, 4.3 s of 6, and the rate
        ran at 1.36x the limit through the calm (2.9 % of a run's requests answered 429).
        A moving window's echo is no steady pace: it gives back the climb's doubling."""
        took = self.history.steady()
        if took is None or not 0.5 * grant <= took < sending:
            return None
        self.left()
        return took

    def cut_floor(self, grant: float, rate: float, sending: float) -> float:
        """The least a refusal measures the grant at (requests/s), the window known long:
        ``grant`` before it, ``rate`` refused, requests leaving at ``sending``.

        - ``KEPT_AT_LEAST`` of the lower of ``grant`` and ``rate``. A window
          can be read from a stretch a trickle cut short (a sliding-window counter's, over
          10 s): measured since, a grant with nothing accepted in it took the rate to
          0.5/s. Halved, a grant measured across a trickle came back 2 %, 4 %, 8 % a
          window: 0.88x of a 6 s limit over the run.
        - The steady pace the server took under ``sending`` (``steady_grant``): the measure
          reaches back across the trickle, and a 6 s counter was cut to 73/s after the
          server had taken 100/s for three seconds (0.89x of its limit).
        """
        return max(KEPT_AT_LEAST * min(grant, rate), self.steady_grant(grant, sending) or 0.0)

    def echo_pace(self, now: float, accepted: int, window: float, tick: float) -> float:
        """What requests leave at (requests/s) while refusals go on after a reading, when
        ``accepted`` so far and the window is ``window`` s: the allowance less what the
        window holds, over the next ``tick`` s, and no faster than the server took requests
        in the last second. A reading that began in the window before (a counter aligned
        to the clock, met 1 s to 3 s before its edge) or ended at a trickle is seconds
        short, and the room it gives is refused (3.3 % of a run's requests answered 429
        where a 6 s sliding counter took a steady trickle)."""
        room = self.allowance - (accepted - self.history.at(now - window + tick))
        return min(room / tick, self.history.per_second(accepted, now, _SECOND))

    def heard(self, now: float, accepted: int, refused_at: float, asked: float) -> Reading | None:
        """At a tick (``accepted`` so far; the last refusal at ``refused_at``): a second
        after the climb's first refusals ended, the second that followed tells what they
        were. Refusals still coming in it while the server accepts under ``_ECHO_SHARE`` of
        what it took in the second up to the first of them is a long window's echo (long
        windows give back under a tenth of it: a 5 s moving window 9 %, a 6 s counter 4 %;
        at a quarter, more short windows were read long, and 72 of 1,080 model runs
        missed their bar, not 55. A climb slow enough to fill the window late drains it
        in under a second), and the stretch is read as the first long
        window's turn; otherwise the limit counts by the second. Any refusal in that
        second counts: judged by its last tick alone, a client paced to a trickle or
        waiting out a ``Retry-After`` was seen to refuse nothing, and a 5 s moving window
        went unseen (0.89x, 2.6 % answered 429). What the server took before is read
        before the climb's first refusal: a later stretch in the echo has only the echo
        before it (a 6 s moving window went unseen, 0.86x and 3 % answered 429 when it
        sent ``Retry-After: 1``). A ``Retry-After`` over ``LONG_WAIT_S`` already says the
        window is long and held the client through the echo; read as an echo, what came
        at its edge cut a 6 s moving window to 0.88x.

        Missed, the rate fell to a sixth of a 6 s moving window's limit and took 20 s to
        climb back (0.77x over the run)."""
        reopened = self._reopened
        if reopened is None or self.read or asked > LONG_WAIT_S:
            return None
        if self._echo_from is None:
            self._echo_from = (now, accepted)
            return None
        since, count = self._echo_from
        if now < since + _SECOND:
            return None
        self.read = True
        at, stretch, (first, then) = reopened
        # Up to the first refusal itself: read at the tick before it, a climb that doubles
        # each tick showed half its last second (a 6 s counter went unseen: 0.80x).
        before = then - self.history.at(first - _SECOND)
        after = (accepted - count) / (now - since)
        if refused_at <= since or after >= _ECHO_SHARE * before:
            return None
        self.turned = self._turned_before
        return self._read(at, stretch)

    def _read(self, at: float, stretch: Stretch) -> Reading | None:
        """The stretch of refusals that ended at ``at``, as a long window's turn: what was
        accepted since the previous turn over the time between (None when that is not
        over 1.5 s: a window of a second)."""
        self.read = True
        started, counted = self.turned
        if started is None:
            return None
        # The window turned between the last refusal and ``at``; a Retry-After in whole
        # seconds can put ``at`` up to a second past it.
        window = at - min(_SECOND, at - stretch[1]) - started
        if window <= 1.5 * _SECOND:
            return None
        return Reading(window, stretch[2] - counted, max(window, at - started))
