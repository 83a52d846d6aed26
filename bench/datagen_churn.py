"""One simulated day of activity on a database ``datagen.generate`` made, and its table
sizes (split from ``datagen.py``, which generates the database).

``churn_day`` applies about 1 % new rows in every growing table, about 0.5 % of recent rows
updated, and a few rows deleted; the same ``(seed, day)`` gives the same changes.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

import psycopg
from datagen import (  # the generator's row makers: a day's new rows look like the rest
    INVOICE_COLUMNS,
    NOTE_COLUMNS,
    SET_COLUMNS,
    SPAN_SECONDS,
    TABLES,
    USER_COLUMNS,
    WORKOUT_COLUMNS,
    Vocabulary,
    _at,
    _copy,
    _Cursor,
    _invoice_lines,
    _note_lines,
    _rng,
    _ts,
    _user_line,
    _workout_lines,
)

# --- one simulated day ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ChurnResult:
    inserted: int
    updated: int
    deleted: int


def _max_id(conn: psycopg.Connection[Any], table: str) -> int:
    row = conn.execute(f"SELECT coalesce(max(id), 0) FROM {table}").fetchone()
    assert row is not None
    return int(row[0])


def _ids(conn: psycopg.Connection[Any], table: str) -> list[int]:
    """Every id of ``table``, ascending (rows may have been deleted)."""
    return [int(r[0]) for r in conn.execute(f"SELECT id FROM {table} ORDER BY id").fetchall()]


def _count(conn: psycopg.Connection[Any], table: str) -> int:
    row = conn.execute(f"SELECT count(*) FROM {table}").fetchone()
    assert row is not None
    return int(row[0])


def _recent_ids(
    conn: psycopg.Connection[Any], rng: random.Random, table: str, share: float
) -> list[int]:
    """About ``share`` of the rows of ``table``, picked among its newest 10 % (by id)."""
    total = _count(conn, table)
    want = max(1, round(total * share))
    window = max(want, total // 10)
    rows = conn.execute(f"SELECT id FROM {table} ORDER BY id DESC LIMIT %s", (window,)).fetchall()
    recent = [int(r[0]) for r in rows]
    return sorted(rng.sample(recent, min(want, len(recent))))


def churn_day(
    conn: psycopg.Connection[Any],
    *,
    day: int,
    seed: int,
    insert_share: float = 0.01,
    update_share: float = 0.005,
    delete_share: float = 0.00005,
) -> ChurnResult:
    """One day of app activity on a generated database (deterministic for ``(seed, day)``)."""
    rng = _rng(seed, f"day-{day}")
    vocab = Vocabulary(seed)
    day_start = float(SPAN_SECONDS + (day - 1) * 86_400)
    day_end = day_start + 86_400
    now = _at(day_end)
    counts = {t: _count(conn, t) for t in ("users", "workouts", "invoices", "notes")}
    ids = _Cursor(
        user=_max_id(conn, "users") + 1,
        workout=_max_id(conn, "workouts") + 1,
        set=_max_id(conn, "workout_sets") + 1,
        note=_max_id(conn, "notes") + 1,
        invoice=_max_id(conn, "invoices") + 1,
    )
    inserted = updated = deleted = 0
    with conn.transaction():
        # --- inserts: about 1 % new rows in each growing table
        n_users = max(1, round(counts["users"] * insert_share))
        first_user = ids.user
        lines = (
            _user_line(rng, vocab, first_user + i, _at(day_start + 86_400 * i / n_users), now)
            for i in range(n_users)
        )
        inserted += _copy(conn, "users", USER_COLUMNS, lines)
        ids.user += n_users
        users = _ids(conn, "users")
        sets: list[str] = []
        inserted += _copy(
            conn,
            "workouts",
            WORKOUT_COLUMNS,
            _workout_lines(
                rng,
                vocab,
                ids,
                max(1, round(counts["workouts"] * insert_share)),
                users,
                day_start,
                day_end,
                sets,
            ),
        )
        inserted += _copy(conn, "workout_sets", SET_COLUMNS, sets)
        inserted += _copy(
            conn,
            "invoices",
            INVOICE_COLUMNS,
            _invoice_lines(
                rng,
                vocab,
                ids,
                max(1, round(counts["invoices"] * insert_share)),
                users,
                day_start,
                day_end,
            ),
        )
        inserted += _copy(
            conn,
            "notes",
            NOTE_COLUMNS,
            _note_lines(
                rng,
                vocab,
                ids,
                max(1, round(counts["notes"] * insert_share)),
                users,
                _ids(conn, "workouts"),
                day_start,
                day_end,
            ),
        )

        # --- updates: about 0.5 % of recent rows
        ts = _ts(now)
        picked = _recent_ids(conn, rng, "users", update_share)
        conn.execute(
            "UPDATE users SET last_login_at = %s::timestamptz - (id %% 3600) * interval '1 s',"
            " profile = jsonb_set(profile, '{weekly_target}', to_jsonb(1 + (id + %s) %% 7))"
            " WHERE id = ANY(%s)",
            (ts, day, picked),
        )
        updated += len(picked)
        picked = _recent_ids(conn, rng, "workout_sets", update_share)
        conn.execute(
            "UPDATE workout_sets SET weight_kg = weight_kg + 2.5, reps = greatest(1, reps - 1)"
            " WHERE id = ANY(%s)",
            (picked,),
        )
        updated += len(picked)
        picked = _recent_ids(conn, rng, "workouts", update_share)
        conn.execute(
            "UPDATE workouts SET perceived_effort = 1 + (id + %s) %% 10,"
            " notes = coalesce(notes || ' ', '') || %s WHERE id = ANY(%s)",
            (day, vocab.sentence(rng), picked),
        )
        updated += len(picked)
        picked = _recent_ids(conn, rng, "invoices", update_share)
        conn.execute(
            "UPDATE invoices SET status = CASE WHEN status = 'open' THEN 'paid' ELSE status END,"
            " due_at = due_at + interval '7 days' WHERE id = ANY(%s)",
            (picked,),
        )
        updated += len(picked)
        picked = _recent_ids(conn, rng, "notes", update_share)
        with conn.cursor() as cur:
            cur.executemany(
                "UPDATE notes SET body = body || %s, updated_at = %s WHERE id = %s",
                [(" " + vocab.paragraph(rng, rng.randint(1, 2)), ts, i) for i in picked],
            )
        updated += len(picked)

        # --- deletes: a few rows (account deletions cascade)
        for table in ("notes", "workouts", "users"):
            n = max(1, round(counts[table] * delete_share / (10 if table == "users" else 1)))
            top = _max_id(conn, table)
            victims = sorted({1 + rng.randrange(top) for _ in range(n)})
            cur = conn.execute(f"DELETE FROM {table} WHERE id = ANY(%s)", (victims,))
            deleted += cur.rowcount
    return ChurnResult(inserted, updated, deleted)


def table_sizes(conn: psycopg.Connection[Any]) -> dict[str, int]:
    """pg_total_relation_size of every generated table."""
    return {
        t: int(conn.execute("SELECT pg_total_relation_size(%s)", (t,)).fetchone()[0])  # type: ignore[index]
        for t in TABLES
    }
