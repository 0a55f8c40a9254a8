"""Create, delete and restore jobs: a POST found again after an unknown outcome, a DELETE
that tells "gone because of us" from "never there", a rollback's restore.

A create is looked up by its create key (``--create-key``, the list API's ``property``
filter) before it is sent and after any unknown outcome, so it is sent at most once as
far as the API allows. A delete reads the entity first: aiohttp sends a DELETE again by
itself when a kept-alive connection drops under it, so a 404 cannot tell "never there"
from "deleted by this job a moment ago"; the read that found it there can. A restore
reads the entity and becomes a patch job pinned to the etag just read, so a change in
between fails it as a conflict instead of being overwritten; an exd-placement a run
created, which the API cannot delete, is archived by a restore of its status. Each runs through the
performer's one loop (``Performer.drive``) as a ``machine`` case.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import jsonpatch

from bulkpatch import pointer, preimage, verify
from bulkpatch.api import XcoreDialect
from bulkpatch.errors import ErrorKind
from bulkpatch.jobs import Restore
from bulkpatch.machine import CreateMachine, DeleteMachine
from bulkpatch.outcomes import Outcome
from bulkpatch.repeat import Given

if TYPE_CHECKING:
    from bulkpatch.perform import Attempt, Performer


async def find(p: Performer, st: Attempt, value: Any, *, live: bool = False) -> list[str] | Given:
    """Ids of the entities whose create key equals ``value`` (the list API's filter): from
    the run's listing of the whole collection when there is one (matched exactly, as the
    filter's ``==``), unless ``live`` (after an unknown outcome: only the API can say
    whether this job's POST landed)."""
    if p.prefetch is not None and not live:
        listed = await p.prefetch.find(st.job, value)
        if listed is not None:
            return listed
    assert p.gateway is not None
    query = "limit=2&property=" + quote(f"{key_field(p.job_rules.create_key)}=={value}", safe="")
    url = p.dialect.collection_url(st.job, query)
    p.stats.reads += 1
    try:
        answer = await p.gateway.read(st, url, p.headers_for(st.job, write=False), "looking the entity up")
    except Given as exc:
        return exc
    body = answer.json()
    results = body.get("results") if isinstance(body, dict) else None
    if not isinstance(results, list):
        return Given(ErrorKind.HTTP, "the list API answered no results", answer.status)
    return [r["id"] for r in results if isinstance(r, dict) and isinstance(r.get("id"), str)]


def key_field(create_key: str) -> str:
    """The list filter's name of a create key: a member's name as is, a JSON Pointer
    (``/_experience/decisioning/decisionitem/itemName``) as its dotted path
    (``_experience.decisioning.decisionitem.itemName``, Decisioning notes §7.18)."""
    if not create_key.startswith("/"):
        return create_key
    return ".".join(pointer.tokens(create_key))


def key_of(create_key: str, entity: dict[str, Any]) -> Any:
    """The value of the create key in ``entity`` (a name, or a JSON Pointer); None if absent."""
    if not create_key.startswith("/"):
        return entity.get(create_key)
    value = verify.resolve(entity, create_key)
    return None if value is verify.ABSENT else value


async def create(p: Performer, st: Attempt, entity: dict[str, Any]) -> Outcome:
    """POST a new entity, exactly once as far as the API allows (see the module docstring)."""
    if isinstance(p.dialect, XcoreDialect):
        return p.failure(st, ErrorKind.INPUT, "create jobs need the dps dialect")
    name = p.job_rules.create_key
    key = key_of(name, entity)
    if not isinstance(key, str | int | float) or isinstance(key, bool) or key == "":
        return p.failure(st, ErrorKind.INPUT, f"the entity to create has no {name!r} to find it by")
    machine = CreateMachine(
        rules=p.rules,
        key_name=name,
        key=key,
        resumed=p.unsettled.pop(st.job.line, None) is not None,
        adopt=p.job_rules.adopt_existing,
    )
    return await p.drive(st, machine, machine.start())


async def delete(p: Performer, st: Attempt) -> Outcome:
    """DELETE the entity; gone after an unknown outcome is done, not a failure."""
    if not p.job_rules.allow_delete:
        return p.failure(st, ErrorKind.INPUT, "a delete job needs --allow-delete")
    machine = DeleteMachine(rules=p.rules, resumed=p.unsettled.pop(st.job.line, None) is not None)
    return await p.drive(st, machine, machine.start())


async def restore(p: Performer, st: Attempt, restore: Restore) -> Outcome:
    """A rollback job: put back the fields a run changed, if nobody changed them since.
    An archive (``Restore.archive``) that ends ok says so: ``"archived": true``."""
    outcome = await _restore(p, st, restore)
    if restore.archive and outcome.ok:
        outcome.extra["archived"] = True
        p.warn_once(
            "rollback.archived",
            entity=st.job.entity,
            detail=f"{st.job.entity} the run created cannot be deleted through the API: archived "
            'instead; their outcome lines say "archived": true',
        )
    return outcome


async def _restore(p: Performer, st: Attempt, restore: Restore) -> Outcome:
    job = st.job
    current = await preimage.read(p, st)
    if isinstance(current, Outcome):
        return current
    now = {f: current[f] for f in restore.fields if f in current}
    then = {f: restore.doc[f] for f in restore.fields if f in restore.doc}
    patch = jsonpatch.make_patch(now, then).patch
    if not patch:
        # Every field the run changed is as the backup has it already (a rollback done
        # before, say): whatever the etag, there is nothing to restore.
        return p.finish(st, True, etag=current["etag"], extra={"noop": True})
    # A restore an earlier (stopped) rollback sent may have moved the etag itself: then
    # the comparison below is not the test; the pending write is settled instead.
    pending = job.line in p.unsettled
    if restore.etag is not None and current["etag"] != restore.etag and not pending:
        return p.failure(
            st,
            ErrorKind.CONFLICT,
            f"changed since the run left it (etag {restore.etag}, now {current['etag']}): "
            "not restored (--force restores it anyway)",
        )
    # The write itself is an ordinary job pinned to the etag just read: a change in
    # between fails it as a conflict instead of overwriting it.
    pinned = None if p.mode.force else current["etag"]
    return await p.patch_on(st, dataclasses.replace(job, patch=patch, restore=None, etag=pinned), current)
