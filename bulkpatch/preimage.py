"""Where a job reads its entity: a GET through the run's gateway.

Every read of one entity (a pre-image before a write, a rebase after a conflict, the
settling read after an unknown outcome, a plan's or a restore's) comes through here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from bulkpatch import entities
from bulkpatch.errors import ErrorKind
from bulkpatch.outcomes import Outcome
from bulkpatch.repeat import Given

if TYPE_CHECKING:
    from bulkpatch.perform import Attempt, Performer


async def fetch(p: Performer, st: Attempt) -> dict[str, Any] | Given:
    """GET the entity: its document, or why it could not be had (a 404, a 4xx, out of
    attempts; an entity of the other kind on a shared path is an ``input`` failure)."""
    assert p.gateway is not None
    job = st.job
    p.stats.reads += 1
    try:
        headers = (
            p.headers_for(job, write=False)
            if job.entity in p.slow_kinds
            else p.read_headers[job.type]
        )
        answer = await p.gateway.read(st, p.dialect.entity_url(job), headers, "reading the entity")
    except Given as exc:
        if exc.status == 404:
            return Given(ErrorKind.HTTP, "the entity does not exist (404)", 404)
        return exc
    doc = p.dialect.document(answer.json())
    if doc is None:
        return Given(ErrorKind.HTTP, "the entity read back has no etag", answer.status)
    if (other := entities.other_kind(job.entity, doc)) is not None:
        return Given(
            ErrorKind.INPUT,
            f"{job.id} is one of the {other}, not of the {job.entity} (both live on "
            f"/{entities.collection(job.entity)}): name entity {other!r}",
        )
    return doc


async def read(p: Performer, st: Attempt) -> dict[str, Any] | Outcome:
    """GET the entity: its document, or the outcome that ends the job."""
    current = await fetch(p, st)
    if isinstance(current, Given):
        return p.failure(st, current.kind, str(current), current.status)
    return current
