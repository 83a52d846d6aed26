#!/usr/bin/env bash
# Install what the tests need from Debian when it is missing: the PostgreSQL server and
# client tools (initdb, pg_dump, pg_restore), the MariaDB server and client tools, and the stock age and zstd tools (the tests
# decrypt a chunk with them, as docs/design.md shows users how to), and Chromium for the
# web UI tests (Playwright drives /usr/bin/chromium; it never downloads a browser).
set -euo pipefail
need=()
if ! command -v initdb >/dev/null 2>&1 && ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  need+=(postgresql postgresql-client)
fi
command -v mariadbd >/dev/null 2>&1 || [ -x /usr/sbin/mariadbd ] || need+=(mariadb-server)
command -v mariadb-dump >/dev/null 2>&1 || command -v mysqldump >/dev/null 2>&1 || need+=(mariadb-client)
command -v age >/dev/null 2>&1 || need+=(age)
command -v zstd >/dev/null 2>&1 || need+=(zstd)
[ -x /usr/bin/chromium ] || need+=(chromium)   # the web UI tests drive Debian's Chromium
[ ${#need[@]} -eq 0 ] && exit 0
echo "installing Debian packages: ${need[*]}" >&2
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq "${need[@]}" >/dev/null
