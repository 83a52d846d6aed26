"""Deterministic generator of a realistic web-app PostgreSQL database (a fitness app).

Everything comes from seeded ``random.Random`` streams and is loaded with ``COPY``, so the
same ``(scale, seed)`` gives the same rows (and the same pg_dump bytes) on every machine.

Tables: ``users`` (JSON profiles), ``exercises`` (a catalogue), ``workouts``,
``workout_sets`` (numerics), ``invoices`` (bytea PDFs, JSON line items), ``notes`` (free
text, tag arrays), with uuids, timestamps, indexes and foreign keys. Text is drawn from a
few-thousand-word invented vocabulary with a Zipf-like frequency, mixed with hex, uuids,
numbers and dates: it compresses like real application data (gzip 3-5x), not like
repeated filler.

One simulated day of activity (``churn_day``) and the table sizes are in
``datagen_churn.py``.
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
from datagen_schema import POST_LOAD_SQL, SCHEMA_SQL

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
