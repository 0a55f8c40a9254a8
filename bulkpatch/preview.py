"""Jobs that write nothing: a plan (each entity read once, its jobs applied locally in
input order, what would change reported) and a dry run (what would be sent)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from bulkpatch import preimage, verify
from bulkpatch.errors import ErrorKind
from bulkpatch.lifecycle import find, key_of
from bulkpatch.outcomes import Outcome
from bulkpatch.repeat import Given

if TYPE_CHECKING:
    from bulkpatch.perform import Attempt, Performer


async def plan(p: Performer, st: Attempt) -> Outcome:
    """What the job would do to the entity as the jobs before it leave it."""
    job = st.job
    if job.create is not None:
        key = key_of(p.job_rules.create_key, job.create)
        found = await find(p, st, key)
        if isinstance(found, Given):
            outcome = p.failure(st, found.kind, str(found), found.status)
            outcome.extra["plan"] = "fail"
            return outcome
        if found:
            outcome = p.failure(
                st, ErrorKind.CONFLICT, f"an entity with {p.job_rules.create_key} {key!r} exists ({found[0]})"
            )
            outcome.extra["plan"] = "fail"
            return outcome
        return p.finish(st, True, extra={"plan": "create", "create": job.create})
    doc = p.plan_docs.get(job.key)
    if doc is None:
        current = await preimage.read(p, st)
        if isinstance(current, Outcome):
            current.extra["plan"] = "fail"
            return current
        doc = current
    if job.delete:
        return p.finish(st, True, etag=doc.get("etag"), extra={"plan": "delete"})
    try:
        new = verify.apply(job.patch, doc)
    except verify.PatchDoesNotApply as exc:
        p.plan_docs[job.key] = doc
        outcome = p.failure(st, ErrorKind.CONFLICT, f"the patch does not apply: {exc}")
        outcome.extra["plan"] = "fail"
        return outcome
    p.plan_docs[job.key] = new
    changes = verify.changes(doc, new)
    extra: dict[str, Any] = {"plan": "change" if changes else "noop"}
    if changes:
        extra["changes"] = changes
    return p.finish(st, True, etag=doc.get("etag"), extra=extra)


def dry_run(p: Performer, st: Attempt) -> Outcome:
    job = st.job
    method = {"create": "POST", "delete": "DELETE"}.get(job.action, "PATCH")
    url = p.dialect.collection_url(job) if job.create is not None else p.dialect.entity_url(job)
    extra: dict[str, Any] = {"dry_run": True, "method": method, "url": str(url)}
    if job.etag is not None:
        extra["if_match"] = job.etag
    return p.finish(st, True, extra=extra)
