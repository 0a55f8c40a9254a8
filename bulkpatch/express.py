"""The fast path: the usual write sent before a job's machine exists.

A patch job that needs no read, in a run with nothing to wait for (no journal, backup,
pace or pause, a token in hand), is sent here without the machine's preparations (about
1 % of a job's instructions against a fast server). A 2xx with its receipt is the job's
outcome; any other answer is handed to the machine (``answered``) exactly as if the
machine had sent the write itself.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import orjson

from bulkpatch.api import receipt
from bulkpatch.errors import TransportError
from bulkpatch.jobs import Job
from bulkpatch.machine import Finish, PatchMachine, Step, Write
from bulkpatch.outcomes import Outcome
from bulkpatch.repeat import Exchange, Given
from bulkpatch.retry import Verdict, classify_status, classify_transport

if TYPE_CHECKING:
    from bulkpatch.perform import Attempt, Performer

# The fast path's write, answered: the exchange, the If-Match sent (None: none), the
# request id and the time with the server (seconds).
Sent = tuple[Exchange, int | None, str, float]


async def fast(p: Performer, job: Job, started: float) -> Outcome | Sent | None:
    """The fast path's write of ``job``: its outcome on a 2xx; else what was sent and
    answered, for the machine to take up (``answered``); None when the job cannot take
    this path (no token in hand, or ``--guard always`` and no etag known)."""
    gateway = p.gateway
    if gateway is None or (token := gateway.express_token()) is None:
        return None
    known = job.etag if job.etag is not None else p.etags.get(job.key)
    if known is None and p.guard_always:
        return None
    headers = p.write_headers[job.type].copy()
    if known is not None:
        headers["If-Match"] = p.dialect.if_match(known)
    if p.prefetch is not None:
        p.prefetch.written(job)
    request_id = gateway.stamp("PATCH", headers, token)
    clock = p.clock
    sent = clock.time()
    try:
        reply = await gateway.client.send(
            "PATCH", p.dialect.entity_url(job), headers, orjson.dumps(job.patch)
        )
    except TransportError as exc:
        return Exchange(exc, classify_transport(exc), token), known, request_id, clock.time() - sent
    server_s = clock.time() - sent
    gateway.heard(reply, token)
    if 200 <= reply.status < 300:
        proof = receipt(p.dialect, "PATCH", reply.status, reply.body, job.id)
        if proof is not None and (etag := proof[0]) is not None:
            if known is not None and etag != known + 1:
                p.heard_etag(known, etag)
            p.remember(job, etag)
            return p.succeeded(job, started, request_id, reply.status, etag, server_s=server_s)
        # No receipt of this write: the machine takes it as an unknown outcome.
    return Exchange(reply, classify_status(reply.status), token), known, request_id, server_s


async def answered(p: Performer, st: Attempt, machine: PatchMachine, exchange: Exchange) -> Step:
    """Feed the machine the fast path's answer; one the gateway absorbs (a 429, a 401,
    a 503 with Retry-After) is no attempt, and a 429 or 401 means the write again."""
    gateway = p.gateway
    assert gateway is not None
    try:
        absorbed = await gateway.absorb(exchange, st)
    except Given as exc:
        return Finish(exc.kind, str(exc), exc.status)
    if absorbed:
        machine.attempts -= 1
        if exchange.verdict in (Verdict.THROTTLED, Verdict.UNAUTHORIZED):
            return Write(machine.known, machine.pre)
    if exchange.verdict is Verdict.CONFLICT:
        p.etags.pop(st.job.key, None)
    return machine.answered(p.answer(exchange, st.job, "PATCH"))
