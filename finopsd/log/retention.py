"""Retention: whole sessions whose last turn is older than the cutoff go, with the content only they used.

Runs on the writer's connection in a worker thread, fifty sessions per
transaction so live batches never wait long behind it. A piece of content is deleted
when no remaining request refers to it; its index entries go with it (a contentless
FTS5 table forgets a row only when told the text it indexed, so that is re-read first).
"""

from __future__ import annotations

import sqlite3
from typing import Final

from finopsd.log.content import index_text, unpack

SESSIONS_PER_STEP: Final = 50


def prune_step(db: sqlite3.Connection, cutoff: float) -> tuple[int, list[int]]:
    """Delete up to SESSIONS_PER_STEP sessions last active before ``cutoff``, in one transaction;
    return (requests deleted, session ids deleted)."""
    db.execute("begin immediate")
    try:
        sessions = [r[0] for r in db.execute(
            "select id from sessions where last_ts < ? limit ?", (cutoff, SESSIONS_PER_STEP))]
        if not sessions:
            db.execute("commit")
            return 0, []
        db.execute("create temp table if not exists pruned_requests (id integer primary key)")
        db.execute("create temp table if not exists pruned_content (id integer primary key)")
        db.execute("delete from pruned_requests")
        db.execute("delete from pruned_content")
        marks = ", ".join("?" * len(sessions))
        db.execute(f"insert into pruned_requests select id from requests where session in ({marks})", sessions)
        db.execute("insert or ignore into pruned_content select content from request_content"
                   " where request in (select id from pruned_requests)")
        db.execute("delete from request_content where request in (select id from pruned_requests)")
        deleted = db.execute("delete from requests where id in (select id from pruned_requests)").rowcount
        db.execute(f"delete from sessions where id in ({marks})", sessions)
        orphans = db.execute(
            "select c.id, c.kind, c.size, c.body from content c join pruned_content p on p.id = c.id"
            " where not exists (select 1 from request_content rc where rc.content = c.id)"
        ).fetchall()
        for cid, kind, size, body in orphans:
            prompt, answer = index_text(kind, unpack(size, body))
            if prompt or answer:
                db.execute("insert into content_fts (content_fts, rowid, prompt_text, response_text)"
                           " values ('delete', ?, ?, ?)", (cid, prompt, answer))
        db.executemany("delete from content where id = ?", [(o[0],) for o in orphans])
        db.execute("commit")
    except BaseException:
        if db.in_transaction:
            db.execute("rollback")
        raise
    return deleted, sessions
