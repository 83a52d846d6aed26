"""Deterministic generator of a realistic web-app PostgreSQL database (a fitness app).

Everything comes from seeded ``random.Random`` streams and is loaded with ``COPY``, so the
same ``(scale, seed)`` gives the same rows (and the same pg_dump bytes) on every machine.

Tables: ``users`` (JSON profiles), ``exercises`` (a catalogue), ``workouts``,
``workout_sets`` (numerics), ``invoices`` (bytea PDFs, JSON line items), ``notes`` (free
text, tag arrays), with uuids, timestamps, indexes and foreign keys. Text is drawn from a
few-thousand-word invented vocabulary with a Zipf-like frequency, mixed with hex, uuids,
numbers and dates: it compresses like real application data (gzip 3-5x), not like
repeated filler.

``churn_day`` applies one simulated day of activity: about 1 % new rows in every growing
table, about 0.5 % of recent rows updated, and a few rows deleted.
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
import random
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import psycopg

# Row counts at --scale 1.0 (about 500 MB of pg_database_size with indexes).
BASE_USERS = 62_000
BASE_WORKOUTS = 246_000
BASE_NOTES = 160_000
BASE_INVOICES = 62_000
EXERCISES = 600  # a fixed catalogue: does not scale
VOCABULARY_SIZE = 4_000

EPOCH = dt.datetime(2021, 1, 1, tzinfo=dt.UTC)
TODAY = dt.datetime(2024, 6, 1, tzinfo=dt.UTC)  # "now" on simulated day 0
SPAN_SECONDS = int((TODAY - EPOCH).total_seconds())
BLOCK_ROWS = 5_000  # rows per COPY write

Log = Callable[[str], None]

SCHEMA_SQL = """
CREATE TABLE users (
    id              bigint PRIMARY KEY,
    public_id       uuid NOT NULL,
    email           text NOT NULL,
    display_name    text NOT NULL,
    password_hash   text NOT NULL,
    created_at      timestamptz NOT NULL,
    last_login_at   timestamptz,
    plan            text NOT NULL,
    profile         jsonb NOT NULL
);
CREATE TABLE exercises (
    id              integer PRIMARY KEY,
    slug            text NOT NULL,
    name            text NOT NULL,
    category        text NOT NULL,
    muscle_groups   text[] NOT NULL,
    description     text NOT NULL
);
CREATE TABLE workouts (
    id              bigint PRIMARY KEY,
    public_id       uuid NOT NULL,
    user_id         bigint NOT NULL,
    started_at      timestamptz NOT NULL,
    ended_at        timestamptz,
    title           text NOT NULL,
    notes           text,
    perceived_effort smallint,
    calories        integer,
    device          text
);
CREATE TABLE workout_sets (
    id              bigint PRIMARY KEY,
    workout_id      bigint NOT NULL,
    exercise_id     integer NOT NULL,
    position        smallint NOT NULL,
    reps            smallint NOT NULL,
    weight_kg       numeric(6,2) NOT NULL,
    rpe             numeric(3,1),
    rest_seconds    integer,
    completed_at    timestamptz NOT NULL
);
CREATE TABLE invoices (
    id              bigint PRIMARY KEY,
    public_id       uuid NOT NULL,
    user_id         bigint NOT NULL,
    number          text NOT NULL,
    issued_at       timestamptz NOT NULL,
    due_at          timestamptz NOT NULL,
    status          text NOT NULL,
    currency        char(3) NOT NULL,
    amount          numeric(12,2) NOT NULL,
    tax             numeric(12,2) NOT NULL,
    line_items      jsonb NOT NULL,
    pdf             bytea
);
CREATE TABLE notes (
    id              bigint PRIMARY KEY,
    user_id         bigint NOT NULL,
    workout_id      bigint,
    created_at      timestamptz NOT NULL,
    updated_at      timestamptz NOT NULL,
    title           text NOT NULL,
    body            text NOT NULL,
    tags            text[] NOT NULL
);
"""

POST_LOAD_SQL = """
CREATE UNIQUE INDEX users_email_key ON users (email);
CREATE UNIQUE INDEX users_public_id_key ON users (public_id);
CREATE INDEX users_last_login_idx ON users (last_login_at);
CREATE UNIQUE INDEX exercises_slug_key ON exercises (slug);
CREATE UNIQUE INDEX workouts_public_id_key ON workouts (public_id);
CREATE INDEX workouts_user_started_idx ON workouts (user_id, started_at);
CREATE INDEX workout_sets_workout_idx ON workout_sets (workout_id);
CREATE INDEX workout_sets_exercise_idx ON workout_sets (exercise_id);
CREATE UNIQUE INDEX invoices_number_key ON invoices (number);
CREATE INDEX invoices_user_idx ON invoices (user_id);
CREATE INDEX invoices_status_idx ON invoices (status) WHERE status <> 'paid';
CREATE INDEX notes_user_created_idx ON notes (user_id, created_at);
CREATE INDEX notes_tags_idx ON notes USING gin (tags);
ALTER TABLE workouts ADD CONSTRAINT workouts_user_fk
    FOREIGN KEY (user_id) REFERENCES users (id) ON DELETE CASCADE;
ALTER TABLE workout_sets ADD CONSTRAINT workout_sets_workout_fk
    FOREIGN KEY (workout_id) REFERENCES workouts (id) ON DELETE CASCADE;
ALTER TABLE workout_sets ADD CONSTRAINT workout_sets_exercise_fk
    FOREIGN KEY (exercise_id) REFERENCES exercises (id);
ALTER TABLE invoices ADD CONSTRAINT invoices_user_fk
    FOREIGN KEY (user_id) REFERENCES users (id) ON DELETE CASCADE;
ALTER TABLE notes ADD CONSTRAINT notes_user_fk
    FOREIGN KEY (user_id) REFERENCES users (id) ON DELETE CASCADE;
ALTER TABLE notes ADD CONSTRAINT notes_workout_fk
    FOREIGN KEY (workout_id) REFERENCES workouts (id) ON DELETE SET NULL;
CREATE VIEW weekly_volume AS
    SELECT w.user_id, date_trunc('week', w.started_at) AS week,
           sum(s.reps * s.weight_kg) AS volume_kg, count(*) AS sets
    FROM workouts w JOIN workout_sets s ON s.workout_id = w.id
    GROUP BY 1, 2;
"""

TABLES = ("users", "exercises", "workouts", "workout_sets", "invoices", "notes")

_SYLLABLE_TEXT = (
    "ka ri to mo sa ne lu vi an el or in us ba de fi go ha jo ke la me no pa qui ro se "
    "ta ul va we xi yo za bra cle dri fro gla pre sti tro ple ska ment tion ver ster lin "
    "dor gan mar tel vor sen kal mir pol rus nix tas bel cor dun fen hil jas kor lem"
)
_SYLLABLES = tuple(_SYLLABLE_TEXT.split(" "))
_DOMAINS = (
    "gmail.com",
    "outlook.com",
    "yahoo.com",
    "icloud.com",
    "proton.me",
    "hotmail.com",
    "gmx.de",
    "web.de",
    "orange.fr",
    "free.fr",
    "libero.it",
    "mail.ru",
    "fastmail.com",
    "hey.com",
    "aol.com",
)
_TIMEZONES = (
    "Europe/Berlin",
    "Europe/London",
    "Europe/Paris",
    "America/New_York",
    "America/Chicago",
    "America/Los_Angeles",
    "Asia/Tokyo",
    "Australia/Sydney",
    "America/Sao_Paulo",
    "Asia/Kolkata",
)
_CATEGORIES = ("strength", "cardio", "mobility", "plyometrics", "olympic", "core", "stretching")
_MUSCLES = (
    "chest",
    "back",
    "shoulders",
    "biceps",
    "triceps",
    "quads",
    "hamstrings",
    "glutes",
    "calves",
    "abs",
    "forearms",
    "traps",
)
_DEVICES = ("ios", "android", "web", "watchos", "wearos", None)
_PLANS = ("free", "free", "free", "basic", "pro", "team")
_CURRENCIES = ("EUR", "USD", "GBP", "CHF", "SEK")
_INVOICE_STATUS = ("paid", "paid", "paid", "paid", "paid", "open", "void", "refunded")
_GOALS = ("strength", "hypertrophy", "endurance", "weight_loss", "mobility", "health")


def _rng(seed: int, stream: str) -> random.Random:
    return random.Random(f"strongroom-bench:{seed}:{stream}")


class Vocabulary:
    """A few thousand invented words with Zipf-like frequencies (rank ** -1.1)."""

    def __init__(self, seed: int, size: int = VOCABULARY_SIZE) -> None:
        rng = _rng(seed, "vocabulary")
        words: list[str] = []
        seen: set[str] = set()
        while len(words) < size:
            word = "".join(rng.choice(_SYLLABLES) for _ in range(rng.choice((1, 2, 2, 2, 3, 3, 4))))
            if word not in seen:
                seen.add(word)
                words.append(word)
        self.words = words
        self.cum_weights = list(itertools.accumulate(1.0 / (r**1.1) for r in range(1, size + 1)))

    def words_of(self, rng: random.Random, count: int) -> list[str]:
        return rng.choices(self.words, cum_weights=self.cum_weights, k=count)

    def sentence(self, rng: random.Random, low: int = 4, high: int = 16) -> str:
        words = self.words_of(rng, rng.randint(low, high))
        if rng.random() < 0.15:  # numbers, units, times: real notes have them
            words.insert(
                rng.randrange(len(words)),
                rng.choice(
                    (
                        f"{rng.randint(1, 250)}kg",
                        f"{rng.randint(1, 42)}.{rng.randint(0, 9)}km",
                        f"{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}",
                        f"#{rng.randint(1, 9999)}",
                        f"{rng.randint(1, 100)}%",
                    )
                ),
            )
        text = " ".join(words)
        return text[0].upper() + text[1:] + rng.choice(".....!?")

    def paragraph(self, rng: random.Random, sentences: int) -> str:
        return " ".join(self.sentence(rng) for _ in range(sentences))

    def title(self, rng: random.Random, low: int = 2, high: int = 5) -> str:
        return " ".join(w.capitalize() for w in self.words_of(rng, rng.randint(low, high)))


@dataclass(frozen=True)
class Sizes:
    users: int
    workouts: int
    notes: int
    invoices: int

    @classmethod
    def at(cls, scale: float) -> Sizes:
        def n(base: int) -> int:
            return max(10, round(base * scale))

        return cls(n(BASE_USERS), n(BASE_WORKOUTS), n(BASE_NOTES), n(BASE_INVOICES))


# --- COPY text-format helpers ---------------------------------------------------------------


def _ts(moment: dt.datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S.%f+00")


def _at(seconds: float) -> dt.datetime:
    return EPOCH + dt.timedelta(seconds=seconds)


def _uuid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def _text(value: str | None) -> str:
    if value is None:
        return "\\N"
    return value.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n")


def _array(items: Sequence[str]) -> str:
    return "{" + ",".join(items) + "}"


def _copy(
    conn: psycopg.Connection[Any], table: str, columns: Sequence[str], rows: Iterable[str]
) -> int:
    """COPY text-format lines into ``table``; return the row count."""
    count = 0
    statement = f"COPY {table} ({', '.join(columns)}) FROM STDIN"
    with conn.cursor() as cur, cur.copy(statement) as copy:
        block: list[str] = []
        for line in rows:
            block.append(line)
            if len(block) >= BLOCK_ROWS:
                copy.write("".join(block))
                count += len(block)
                block.clear()
        if block:
            copy.write("".join(block))
            count += len(block)
    return count


# --- row generators ---------------------------------------------------------------------------

USER_COLUMNS = (
    "id",
    "public_id",
    "email",
    "display_name",
    "password_hash",
    "created_at",
    "last_login_at",
    "plan",
    "profile",
)
EXERCISE_COLUMNS = ("id", "slug", "name", "category", "muscle_groups", "description")
WORKOUT_COLUMNS = (
    "id",
    "public_id",
    "user_id",
    "started_at",
    "ended_at",
    "title",
    "notes",
    "perceived_effort",
    "calories",
    "device",
)
SET_COLUMNS = (
    "id",
    "workout_id",
    "exercise_id",
    "position",
    "reps",
    "weight_kg",
    "rpe",
    "rest_seconds",
    "completed_at",
)
INVOICE_COLUMNS = (
    "id",
    "public_id",
    "user_id",
    "number",
    "issued_at",
    "due_at",
    "status",
    "currency",
    "amount",
    "tax",
    "line_items",
    "pdf",
)
NOTE_COLUMNS = ("id", "user_id", "workout_id", "created_at", "updated_at", "title", "body", "tags")

_B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789./"


def _user_line(
    rng: random.Random, vocab: Vocabulary, user_id: int, created: dt.datetime, now: dt.datetime
) -> str:
    first, last = (w.capitalize() for w in vocab.words_of(rng, 2))
    email = (
        f"{first.lower()}.{last.lower()}{user_id}@"
        f"{_DOMAINS[min(len(_DOMAINS) - 1, int(rng.expovariate(0.6)))]}"
    )
    salt_hash = "".join(rng.choices(_B64, k=53))
    password_hash = f"$2b$12${salt_hash}"
    last_login = (
        None
        if rng.random() < 0.05
        else created + (now - created) * (1 - rng.random() ** 3)
        if now > created
        else created
    )
    profile: dict[str, object] = {
        "bio": vocab.paragraph(rng, rng.randint(0, 3)),
        "timezone": rng.choice(_TIMEZONES),
        "units": rng.choice(("metric", "metric", "imperial")),
        "height_cm": rng.randint(150, 205),
        "birth_year": rng.randint(1950, 2007),
        "goals": rng.sample(_GOALS, rng.randint(1, 3)),
        "weekly_target": rng.randint(1, 7),
        "notifications": {
            "email": rng.random() < 0.6,
            "push": rng.random() < 0.8,
            "digest": rng.choice(("daily", "weekly", "never")),
        },
        "avatar": f"https://cdn.example.com/a/{rng.getrandbits(64):016x}.jpg",
        "referral_code": f"{rng.getrandbits(40):010X}",
    }
    if rng.random() < 0.3:
        profile["one_rep_max"] = {
            "squat": round(rng.uniform(40, 250), 1),
            "bench": round(rng.uniform(30, 180), 1),
            "deadlift": round(rng.uniform(50, 300), 1),
        }
    return (
        "\t".join(
            (
                str(user_id),
                _uuid(rng),
                email,
                f"{first} {last}",
                password_hash,
                _ts(created),
                "\\N" if last_login is None else _ts(last_login),
                rng.choice(_PLANS),
                _text(json.dumps(profile, separators=(", ", ": "))),
            )
        )
        + "\n"
    )


def _exercise_lines(seed: int, vocab: Vocabulary) -> Iterator[str]:
    rng = _rng(seed, "exercises")
    for i in range(1, EXERCISES + 1):
        name = vocab.title(rng, 1, 3)
        slug = f"{name.lower().replace(' ', '-')}-{i}"
        muscles = rng.sample(_MUSCLES, rng.randint(1, 3))
        yield (
            "\t".join(
                (
                    str(i),
                    slug,
                    name,
                    rng.choice(_CATEGORIES),
                    _array(muscles),
                    _text(vocab.paragraph(rng, rng.randint(2, 6))),
                )
            )
            + "\n"
        )


@dataclass
class _Cursor:
    """Next ids while generating (also used by the daily churn)."""

    user: int = 1
    workout: int = 1
    set: int = 1
    note: int = 1
    invoice: int = 1


def _workout_lines(
    rng: random.Random,
    vocab: Vocabulary,
    ids: _Cursor,
    count: int,
    users: Sequence[int],
    start_s: float,
    end_s: float,
    sets_out: list[str],
) -> Iterator[str]:
    """``count`` workouts spread over [start_s, end_s), appending their sets to ``sets_out``."""
    step = (end_s - start_s) / max(count, 1)
    for i in range(count):
        workout_id = ids.workout
        ids.workout += 1
        started = _at(start_s + step * (i + rng.random()))
        minutes = rng.randint(20, 110)
        user_id = users[min(len(users) - 1, int(len(users) * rng.random() ** 1.6))]
        notes = vocab.paragraph(rng, rng.randint(1, 3)) if rng.random() < 0.35 else None
        effort = rng.randint(1, 10) if rng.random() < 0.8 else None
        calories = rng.randint(80, 1200) if rng.random() < 0.7 else None
        device = rng.choice(_DEVICES)
        yield (
            "\t".join(
                (
                    str(workout_id),
                    _uuid(rng),
                    str(user_id),
                    _ts(started),
                    _ts(started + dt.timedelta(minutes=minutes, seconds=rng.randint(0, 59))),
                    _text(vocab.title(rng, 1, 4)),
                    _text(notes),
                    "\\N" if effort is None else str(effort),
                    "\\N" if calories is None else str(calories),
                    "\\N" if device is None else device,
                )
            )
            + "\n"
        )
        moment = started
        exercise = rng.randint(1, EXERCISES)
        weight = rng.uniform(5, 160)
        for position in range(1, rng.randint(2, 9) + 1):
            if rng.random() < 0.4:
                exercise = rng.randint(1, EXERCISES)
                weight = rng.uniform(5, 160)
            rest = rng.randint(30, 300)
            moment += dt.timedelta(seconds=rest + rng.randint(15, 90))
            kg = round(weight * rng.uniform(0.9, 1.1) / 1.25) * 1.25
            rpe = "\\N" if rng.random() < 0.3 else f"{rng.randint(12, 20) / 2:.1f}"
            sets_out.append(
                f"{ids.set}\t{workout_id}\t{exercise}\t{position}\t{rng.randint(1, 20)}\t"
                f"{kg:.2f}\t{rpe}\t{rest}\t{_ts(moment)}\n"
            )
            ids.set += 1


def _pdf(rng: random.Random, number: str, amount: str) -> str:
    """A small PDF-like blob: a text header and a compressed-looking (random) stream."""
    head = (
        f"%PDF-1.7\n1 0 obj << /Type /Catalog /Pages 2 0 R >> endobj\n"
        f"3 0 obj << /Title (Invoice {number}) /Total ({amount}) >> endobj\n"
        f"4 0 obj << /Filter /FlateDecode /Length {{n}} >> stream\n"
    )
    body = rng.randbytes(int(rng.lognormvariate(6.2, 0.5)))
    data = head.replace("{n}", str(len(body))).encode() + body + b"\nendstream endobj\n%%EOF\n"
    return "\\\\x" + data.hex()


def _invoice_lines(
    rng: random.Random,
    vocab: Vocabulary,
    ids: _Cursor,
    count: int,
    users: Sequence[int],
    start_s: float,
    end_s: float,
) -> Iterator[str]:
    step = (end_s - start_s) / max(count, 1)
    for i in range(count):
        invoice_id = ids.invoice
        ids.invoice += 1
        issued = _at(start_s + step * (i + rng.random()))
        number = f"INV-{issued.year}-{invoice_id:07d}"
        items = [
            {
                "sku": f"{rng.choice(('PLAN', 'ADDON', 'COACH', 'SHOP'))}-{rng.randint(100, 999)}",
                "description": vocab.title(rng, 2, 4),
                "quantity": rng.randint(1, 3),
                "unit_price": round(rng.choice((4.99, 9.99, 14.99, 29.0)) * rng.uniform(1, 3), 2),
            }
            for _ in range(rng.randint(1, 4))
        ]
        amount = sum(item["quantity"] * item["unit_price"] for item in items)  # type: ignore[operator]
        amount_text = f"{amount:.2f}"
        status = rng.choice(_INVOICE_STATUS)
        pdf = _pdf(rng, number, amount_text) if status != "void" else "\\N"
        yield (
            "\t".join(
                (
                    str(invoice_id),
                    _uuid(rng),
                    str(users[rng.randrange(len(users))]),
                    number,
                    _ts(issued),
                    _ts(issued + dt.timedelta(days=14)),
                    status,
                    rng.choice(_CURRENCIES),
                    amount_text,
                    f"{amount * 0.19:.2f}",
                    _text(json.dumps(items, separators=(", ", ": "))),
                    pdf,
                )
            )
            + "\n"
        )


def _note_lines(
    rng: random.Random,
    vocab: Vocabulary,
    ids: _Cursor,
    count: int,
    users: Sequence[int],
    workouts: Sequence[int],
    start_s: float,
    end_s: float,
) -> Iterator[str]:
    step = (end_s - start_s) / max(count, 1)
    for i in range(count):
        note_id = ids.note
        ids.note += 1
        created = _at(start_s + step * (i + rng.random()))
        updated = created + dt.timedelta(seconds=int(rng.expovariate(1 / 86_400)))
        paragraphs = [vocab.paragraph(rng, rng.randint(1, 5)) for _ in range(rng.randint(1, 4))]
        tags = sorted(set(vocab.words_of(rng, rng.randint(0, 4))))
        workout = str(workouts[rng.randrange(len(workouts))]) if rng.random() < 0.4 else "\\N"
        yield (
            "\t".join(
                (
                    str(note_id),
                    str(users[min(len(users) - 1, int(len(users) * rng.random() ** 1.4))]),
                    workout,
                    _ts(created),
                    _ts(updated),
                    _text(vocab.title(rng, 2, 7)),
                    _text("\n\n".join(paragraphs)),
                    _array(tags),
                )
            )
            + "\n"
        )


# --- the initial load ---------------------------------------------------------------------------


def generate(
    conn: psycopg.Connection[Any], *, scale: float, seed: int, log: Log = print
) -> dict[str, int]:
    """Create the schema and load the data (into an empty database); return row counts."""
    sizes = Sizes.at(scale)
    vocab = Vocabulary(seed)
    conn.execute(SCHEMA_SQL)
    rows: dict[str, int] = {}
    ids = _Cursor()
    end_s = float(SPAN_SECONDS)

    rng = _rng(seed, "users")
    # Sign-ups accelerate over time (a growing app): created_at ~ span * sqrt(u).
    offsets = sorted(SPAN_SECONDS * rng.random() ** 0.5 for _ in range(sizes.users))
    user_lines = (_user_line(rng, vocab, i + 1, _at(offsets[i]), TODAY) for i in range(sizes.users))
    rows["users"] = _copy(conn, "users", USER_COLUMNS, user_lines)
    ids.user = sizes.users + 1
    user_ids = range(1, sizes.users + 1)
    log(f"  users         {rows['users']:>10,}")

    rows["exercises"] = _copy(conn, "exercises", EXERCISE_COLUMNS, _exercise_lines(seed, vocab))

    rng = _rng(seed, "workouts")
    sets: list[str] = []
    workouts_done = 0
    sets_done = 0
    batch = 20_000
    while workouts_done < sizes.workouts:
        n = min(batch, sizes.workouts - workouts_done)
        span_from = end_s * workouts_done / sizes.workouts
        span_to = end_s * (workouts_done + n) / sizes.workouts
        workouts_done += _copy(
            conn,
            "workouts",
            WORKOUT_COLUMNS,
            _workout_lines(rng, vocab, ids, n, user_ids, span_from, span_to, sets),
        )
        sets_done += _copy(conn, "workout_sets", SET_COLUMNS, sets)
        sets.clear()
    rows["workouts"], rows["workout_sets"] = workouts_done, sets_done
    log(f"  workouts      {workouts_done:>10,}   sets {sets_done:,}")

    rng = _rng(seed, "invoices")
    rows["invoices"] = _copy(
        conn,
        "invoices",
        INVOICE_COLUMNS,
        _invoice_lines(rng, vocab, ids, sizes.invoices, user_ids, 0.0, end_s),
    )
    log(f"  invoices      {rows['invoices']:>10,}")

    rng = _rng(seed, "notes")
    rows["notes"] = _copy(
        conn,
        "notes",
        NOTE_COLUMNS,
        _note_lines(
            rng, vocab, ids, sizes.notes, user_ids, range(1, sizes.workouts + 1), 0.0, end_s
        ),
    )
    log(f"  notes         {rows['notes']:>10,}")
    conn.execute(POST_LOAD_SQL)
    conn.execute("ANALYZE")
    return rows


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
