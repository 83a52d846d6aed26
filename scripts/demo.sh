#!/usr/bin/env bash
# The demo: back up a sample SQLite database into a local, encrypted repository,
# back it up again after a change (deduplication), verify, and restore it.
set -euo pipefail
cd "$(dirname "$0")/.."
out="$PWD/demo-output"
rm -rf "$out"
mkdir -p "$out"
export STRONGROOM_REPO="$out/repo"
export STRONGROOM_KEY_FILE="$out/demo.key"
sr() { echo; echo "\$ strongroom $*"; .venv/bin/strongroom "$@"; }

.venv/bin/python scripts/make_sample_db.py "$out/shop.db" 20000
sr init
sr backup "$out/shop.db" --tag daily
.venv/bin/python scripts/make_sample_db.py "$out/shop.db" 200   # ~1% more rows
sr backup "$out/shop.db" --tag daily
sr list
sr show latest
sr verify --all
sr restore latest --to "$out/restored.db"
echo
echo "\$ strongroom cat latest > $out/dump.db   # the raw SQLite file, no strongroom needed to read it"
.venv/bin/strongroom cat latest > "$out/dump.db"
.venv/bin/python - "$out/dump.db" <<'PY'
import sqlite3, sys
db = sqlite3.connect(sys.argv[1])
print("users in the raw dump:", db.execute("select count(*) from users").fetchone()[0])
PY
echo
echo "Demo done: repository in $out/repo, key in $out/demo.key, restored copy in $out/restored.db"
