"""Create and delete jobs: a POST found again after an unknown outcome, a DELETE that
tells "gone because of us" from "never there".

A create is looked up by its create key (``--create-key``, the list API's ``property``
filter) before it is sent and after any unknown outcome, so it is sent at most once as
far as the API allows. A delete reads the entity first: aiohttp sends a DELETE again by
itself when a kept-alive connection drops under it, so a 404 cannot tell "never there"
from "deleted by this job a moment ago"; the read that found it there can.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import orjson
from multidict import CIMultiDict
from yarl import URL

from bulkpatch.api import XcoreDialect
from bulkpatch.client import Response
from bulkpatch.errors import ErrorKind
from bulkpatch.gateway import Exchange, Given
from bulkpatch.outcomes import Outcome
from bulkpatch.retry import Verdict

if TYPE_CHECKING:
    from bulkpatch.perform import Attempt, Performer


async def _send(p: Performer, st: Attempt, method: str, url: URL, headers: CIMultiDict[str], body: bytes | None = None
) -> Exchange | Outcome:
    """One request of a create's or delete's loop, a 429 or 401 dealt with (then the
    caller sends it again, as no attempt); the outcome that ends the job instead when
    the gateway gives up."""
    assert p.gateway is not None
    exchange = await p.gateway.exchange(st, method, url, headers.copy(), body)
    try:
        await p.gateway.absorb(exchange, st)
    except Given as exc:
        return p.failure(st, exc.kind, str(exc), exc.status)
    answer = exchange.answer
    if exchange.verdict in (Verdict.TRANSIENT, Verdict.UNKNOWN) and isinstance(answer, Response):
        st.last_error = f"HTTP {answer.status}: {answer.message()}"
    return exchange

async def find(p: Performer, st: Attempt, value: Any) -> list[str] | Outcome:
    """Ids of the entities whose create key equals ``value`` (the list API's filter)."""
    assert p.gateway is not None
    query = "limit=2&property=" + quote(f"{p.job_rules.create_key}=={value}", safe="")
    url = p.dialect.collection_url(st.job, query)
    try:
        answer = await p.gateway.read(
            st, url, p.read_headers[st.job.type], "looking the entity up"
        )
    except Given as exc:
        return p.failure(st, exc.kind, str(exc), exc.status)
    finally:
        p.stats.reads += 1
    body = answer.json()
    results = body.get("results") if isinstance(body, dict) else None
    if not isinstance(results, list):
        return p.failure(st, ErrorKind.HTTP, "the list API answered no results", answer.status)
    return [r["id"] for r in results if isinstance(r, dict) and isinstance(r.get("id"), str)]

async def create(p: Performer, st: Attempt, entity: dict[str, Any]) -> Outcome:
    """POST a new entity, exactly once as far as the API allows (see the README)."""
    job = st.job
    if isinstance(p.dialect, XcoreDialect):
        return p.failure(st, ErrorKind.INPUT, "create jobs need the dps dialect")
    key = entity.get(p.job_rules.create_key)
    if not isinstance(key, str | int | float) or isinstance(key, bool) or key == "":
        return p.failure(
            st, ErrorKind.INPUT, f"the entity to create has no {p.job_rules.create_key!r} to find it by"
        )
    resumed = p.unsettled.pop(job.line, None) is not None
    found = await find(p, st, key)
    if isinstance(found, Outcome):
        return found
    if found and resumed:
        # Created by the run that stopped before it could say so.
        return _created(p, st, found[0], key, recovered=True)
    if found:
        if p.job_rules.adopt_existing:
            return _created(p, st, found[0], key, extra={"adopted": True})
        return p.failure(
            st,
            ErrorKind.CONFLICT,
            f"an entity with {p.job_rules.create_key} {key!r} exists already ({found[0]}); "
            "--adopt-existing reports it instead",
        )
    return await _post(p, st, entity, key)


async def _post(p: Performer, st: Attempt, entity: dict[str, Any], key: Any) -> Outcome:
    """Send the create until it is answered, found after an unknown outcome, or given up."""
    job = st.job
    identity = p.identities.get(job.line)
    body = orjson.dumps(entity)
    while True:
        if p.journal is not None and identity is not None and st.attempts == 0:
            await p.journal.intent(identity, job, None, None)
        st.attempts += 1
        exchange = await _send(
            p, st, "POST", p.dialect.collection_url(job), p.write_headers[job.type], body
        )
        if isinstance(exchange, Outcome):
            return exchange
        answer, verdict = exchange.answer, exchange.verdict
        if verdict is Verdict.DONE:
            assert isinstance(answer, Response)
            receipt = answer.json()
            new_id = p.dialect.receipt_id(receipt)
            if new_id is None:
                return p.failure(st, ErrorKind.HTTP, "the create's receipt has no id", answer.status)
            etag = p.dialect.receipt_etag(receipt)
            return _created(p, st, new_id, key, status=answer.status, etag=etag)
        if verdict in (Verdict.THROTTLED, Verdict.UNAUTHORIZED):
            st.attempts -= 1
            continue
        if verdict in (Verdict.PERMANENT, Verdict.CONFLICT):
            assert isinstance(answer, Response)
            return p.failure(st, ErrorKind.HTTP, answer.message(), answer.status)
        if verdict is Verdict.UNKNOWN:
            # It may have been created: look before asking again.
            found = await find(p, st, key)
            if isinstance(found, Outcome):
                return found
            if found:
                return _created(p, st, found[0], key, recovered=True)
        if st.attempts >= p.retry_policy.max_attempts:
            message = f"gave up after {st.attempts} attempts; last: {st.last_error}"
            return p.failure(st, ErrorKind.EXHAUSTED, message)
        assert p.gateway is not None
        await p.gateway.back_off(st.attempts)


def _created(p: Performer, st: Attempt, new_id: str, key: Any, **fields: Any) -> Outcome:
    if p.on_created is not None:
        p.on_created(key, new_id)
    if p.backup is not None:
        p.backup.created(st.job, new_id)
    return p.finish(st, True, id=new_id, **fields)

async def delete(p: Performer, st: Attempt) -> Outcome:
    """DELETE the entity; gone after an unknown outcome is done, not a failure.

    The entity is read first. aiohttp sends a DELETE again by itself when a kept-alive
    connection drops under it, so a 404 cannot tell "never there" from "deleted by
    this job a moment ago"; the read that found it there can.
    """
    job = st.job
    if not p.job_rules.allow_delete:
        return p.failure(st, ErrorKind.INPUT, "a delete job needs --allow-delete")
    resumed = p.unsettled.pop(job.line, None) is not None
    current = await p.read(st)
    if isinstance(current, Outcome):
        if resumed and current.status == 404:
            # The run that stopped had sent this delete: it landed.
            return _deleted(p, st, 404, recovered=True)
        return current
    backup = p.backup
    if backup is not None and backup.needs(job):
        backup.before(job, current)
    identity = p.identities.get(job.line)
    while True:
        if p.journal is not None and identity is not None and st.attempts == 0:
            await p.journal.intent(identity, job, current["etag"], None)
        st.attempts += 1
        exchange = await _send(p,
            st, "DELETE", p.dialect.entity_url(job), p.read_headers[job.type]
        )
        if isinstance(exchange, Outcome):
            return exchange
        answer, verdict = exchange.answer, exchange.verdict
        if verdict is Verdict.DONE:
            assert isinstance(answer, Response)
            return _deleted(p, st, answer.status)
        if isinstance(answer, Response) and answer.status == 404:
            # It was there when read: this job's own delete (or a retry of it) took it.
            return _deleted(p, st, 404, recovered=st.attempts > 1 or None)
        if verdict in (Verdict.THROTTLED, Verdict.UNAUTHORIZED):
            st.attempts -= 1
            continue
        if verdict in (Verdict.PERMANENT, Verdict.CONFLICT):
            assert isinstance(answer, Response)
            return p.failure(st, ErrorKind.HTTP, answer.message(), answer.status)
        if st.attempts >= p.retry_policy.max_attempts:
            return p.failure(
                st, ErrorKind.EXHAUSTED, f"gave up after {st.attempts} attempts; last: {st.last_error}"
            )
        assert p.gateway is not None
        await p.gateway.back_off(st.attempts)

def _deleted(p: Performer, st: Attempt, status: int, recovered: bool | None = None) -> Outcome:
    if p.backup is not None:
        p.backup.deleted(st.job)
    fields: dict[str, Any] = {"status": status, "extra": {"deleted": True}}
    if recovered:
        fields["recovered"] = True
    return p.finish(st, True, **fields)
