"""What is decided about an input line before it joins the window: whether this shard
runs it, whether an earlier run of the journal ended it already, and whether it repeats
a create key of this run.

``Admission`` asks the journal (when the run keeps one) and answers ``Run`` (with the
line's journal identity), ``Skip`` (done and reported before: nothing to say) or
``Report`` (an outcome to give now, without sending anything).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import orjson

from bulkpatch import lifecycle, outcomes
from bulkpatch.config import JobRules
from bulkpatch.errors import ErrorKind
from bulkpatch.jobs import BadLine, Job
from bulkpatch.journal import DONE, DONE_FAILED, Failed, Identity, Journal, Landed, Pending
from bulkpatch.outcomes import Outcome
from bulkpatch.perform import Performer
from bulkpatch.summary import RunStats


def shard_of(key: tuple[str, str, str], shards: int) -> int:
    """The slice of ``shards`` an entity's jobs belong to: stable across runs and machines.

    BLAKE2b (8-byte digest) of ``entity + "\\x1f" + offer type ("" outside offers) +
    "\\x1f" + id`` in UTF-8, read as a big-endian integer, modulo ``shards``. All jobs of
    one entity fall in one slice, so per-entity order holds inside each.
    """
    digest = hashlib.blake2b("\x1f".join(key).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % shards


@dataclass(frozen=True, slots=True)
class Report:
    """An outcome to give at admission; ``final``: to be put on record in the journal
    first (an outcome the journal holds already is not)."""

    outcome: Outcome
    final: bool


class Admission:
    """The journal's and the create keys' side of admitting a line (module docstring)."""

    def __init__(
        self,
        journal: Journal | None,
        rules: JobRules,
        stats: RunStats,
        perf: Performer,
        *,
        shard: tuple[int, int] | None = None,
    ) -> None:
        self.journal = journal
        self.shard = shard  # (K, N): this run runs slice K of N (``shard_of``)
        self.rules = rules
        self.stats = stats
        self.perf = perf
        self._create_keys: set[bytes] = set()  # keys of this run's creates: two is an error

    def duplicate(self, item: Job | BadLine) -> Outcome | None:
        """The refusal of a create whose key an earlier create of this run has.

        The create key is what finds a create's entity after an unknown outcome: two
        creates with one key in a run could each find the other's. A create without its
        key fails on its own (it could never be found again).
        """
        if not isinstance(item, Job) or item.create is None:
            return None
        name = self.rules.create_key
        value = lifecycle.key_of(name, item.create)  # a member's name, or a JSON Pointer
        marker = orjson.dumps(value)
        if value is None or marker not in self._create_keys:
            self._create_keys.add(marker)
            return None
        return outcomes.refused(
            item,
            f"line {item.line}, field 'create': another create in this run has the same "
            f"{name} {value!r}",
            field="create",
        )

    def journaled(self, item: Job | BadLine) -> Identity | Report | None:
        """The item's identity if it is to run (or, a bad line, be reported); a
        ``Report`` when an earlier run ended it but did not report it, or a later line
        of its entity was applied; None when it was ended and reported (skipped)."""
        journal = self.journal
        assert journal is not None
        identity = journal.identify(item)
        state = journal.lookup(identity)
        if state in (DONE, DONE_FAILED):
            self.stats.skipped += 1
            self.stats.skipped_failed += state == DONE_FAILED
            return None
        if isinstance(state, Landed | Failed):
            # Ended in an earlier run that stopped before reporting it.
            return Report(outcomes.from_journal(item, identity, state), final=False)
        if state is None and isinstance(item, Job):
            later = journal.applied_after(identity)
            if later is not None:
                refusal = outcomes.refused(
                    item,
                    f"line {item.line} was changed after line {later} of the same entity was "
                    "applied: run it on its own to apply it out of order",
                )
                refusal.identity = identity
                return Report(refusal, final=True)
        if isinstance(state, Pending):
            self.perf.unsettled[item.line] = state
        if isinstance(item, Job):
            self.perf.identities[item.line] = identity
        return identity

    def mine(self, item: Job | BadLine) -> bool:
        """Whether this shard runs the item: bad lines are shard 0's to report."""
        if self.shard is None:
            return True
        index, count = self.shard
        if isinstance(item, BadLine):
            return index == 0
        return shard_of(item.key, count) == index

    def runs_here(self, job: Job) -> bool:
        """Whether this run will run ``job``: its shard's, and not ended by an earlier run
        of the journal (what the engine admits)."""
        return self.mine(job) and (self.journal is None or self.will_run(job))

    def will_run(self, job: Job) -> bool:
        """Whether ``job`` is to run, as far as the journal says (``journaled`` without
        its effects): never sent, or sent with an outcome still to settle."""
        journal = self.journal
        assert journal is not None
        state = journal.lookup(journal.identify(job))
        return state is None or isinstance(state, Pending)

    def record(self, outcome: Outcome) -> None:
        """Record a final outcome: ok, or failed with any kind but ``aborted`` (which is
        not an end: the job runs again on resume)."""
        journal = self.journal
        assert journal is not None
        if outcome.ok:
            journal.landed(
                outcome.identity,
                outcome.status,
                outcome.etag,
                line=outcome.line,
                entity_id=outcome.id,
            )
        elif outcome.error is not None and outcome.kind != ErrorKind.ABORTED:
            journal.failed(outcome.identity, outcome.status, outcome.error, outcome.id)
