"""Retention on PostgreSQL: SQLite's rule (``finopsd.log.retention``), whole sessions and the content only they used.

Another instance may be writing meanwhile: sessions a writer holds are skipped (``skip
locked``: the next run gets them), and a piece is deleted only under its row lock and only
if, after that lock, no request refers to it. A writer reuses a stored piece under ``for key
share`` (``PostgreSQL.stored_pieces``), so either it waits for this delete and stores the
piece anew, or this delete waits for its commit and then sees its reference.
"""

from __future__ import annotations

from typing import Final

from finopsd.log.pg.dialect import PostgreSQL

SESSIONS_PER_STEP: Final = 50


def prune_step(sql: PostgreSQL, cutoff: float) -> tuple[int, list[int]]:
    """Delete up to SESSIONS_PER_STEP sessions last active before ``cutoff``, in one transaction;
    return (requests deleted, session ids deleted)."""
    db = sql.db
    with db.transaction():
        sessions = [r[0] for r in db.execute(
            "select id from sessions where last_ts < %s order by id limit %s for update skip locked",
            (cutoff, SESSIONS_PER_STEP))]  # fmt: skip
        if not sessions:
            return 0, []
        requests = [r[0] for r in db.execute("delete from requests where session = any(%s) returning id", (sessions,))]
        pieces = sorted({r[0] for r in db.execute(
            "delete from request_content where request = any(%s) returning content", (requests,))})
        db.execute("delete from sessions where id = any(%s)", (sessions,))
        if pieces:
            locked = [r[0] for r in db.execute(
                "select id from content where id = any(%s) order by id for update", (pieces,))]
            # a new statement: it sees what a writer that held a piece committed meanwhile
            db.execute("delete from content c where c.id = any(%s) and not exists"
                       " (select 1 from request_content rc where rc.content = c.id)", (locked,))
    return len(requests), sessions
