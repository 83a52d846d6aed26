"""Create (or grow) the demo's sample SQLite database: a small web shop."""

from __future__ import annotations

import json
import random
import sqlite3
import sys

SCHEMA = """
CREATE TABLE IF NOT EXISTS users (
  id INTEGER PRIMARY KEY, email TEXT UNIQUE NOT NULL, name TEXT NOT NULL,
  profile TEXT NOT NULL, created_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS orders (
  id INTEGER PRIMARY KEY, user_id INTEGER NOT NULL REFERENCES users(id),
  total_cents INTEGER NOT NULL, note TEXT, created_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS orders_user ON orders(user_id);
"""

WORDS = [
    "alpha",
    "bravo",
    "charlie",
    "delta",
    "echo",
    "foxtrot",
    "golf",
    "hotel",
    "india",
    "juliet",
    "kilo",
    "lima",
    "mike",
]


def grow(path: str, users: int, orders: int, seed: int) -> None:
    rng = random.Random(seed)
    db = sqlite3.connect(path)
    db.executescript(SCHEMA)
    start = db.execute("SELECT coalesce(max(id), 0) FROM users").fetchone()[0]
    db.executemany(
        "INSERT INTO users VALUES (?, ?, ?, ?, ?)",
        [
            (
                start + i,
                f"user{start + i}@example.com",
                " ".join(rng.choice(WORDS).title() for _ in range(2)),
                json.dumps(
                    {
                        "bio": " ".join(rng.choice(WORDS) for _ in range(rng.randint(5, 40))),
                        "score": rng.randint(0, 999),
                    }
                ),
                f"2026-{rng.randint(1, 11):02d}-{rng.randint(1, 28):02d}",
            )
            for i in range(1, users + 1)
        ],
    )
    top = start + users
    db.executemany(
        "INSERT INTO orders (user_id, total_cents, note, created_at) VALUES (?, ?, ?, ?)",
        [
            (
                rng.randint(1, top),
                rng.randint(100, 99999),
                " ".join(rng.choice(WORDS) for _ in range(rng.randint(0, 12))),
                f"2026-{rng.randint(1, 11):02d}-{rng.randint(1, 28):02d}",
            )
            for _ in range(orders)
        ],
    )
    db.commit()
    db.close()


if __name__ == "__main__":
    target = sys.argv[1]
    scale = int(sys.argv[2]) if len(sys.argv) > 2 else 20000
    grow(target, users=scale, orders=scale * 3, seed=scale + len(target))
