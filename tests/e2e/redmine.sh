#!/usr/bin/env bash
# A real Redmine 5.0 for the connector tests: Debian's package on sqlite, bound to loopback, REST API on,
# a fixed admin API key. Needs root. Idempotent: every command can be repeated.
#
#   bash tests/e2e/redmine.sh install     apt packages redmine redmine-sqlite thin (~35 s once), configure
#   bash tests/e2e/redmine.sh configure   make the configured snapshot: REST API on, the admin API key set
#   bash tests/e2e/redmine.sh start       start on 127.0.0.1:$REDMINE_PORT, wait until the API answers
#   bash tests/e2e/redmine.sh stop        stop the server this script started on $REDMINE_PORT (PID file)
#   bash tests/e2e/redmine.sh reset       stop, put a fresh copy of the snapshot in $REDMINE_STATE_DIR
#   bash tests/e2e/redmine.sh status      print whether it is installed, configured and running
#   bash tests/e2e/redmine.sh all         install configure start
#
# Environment: REDMINE_PORT (3300), REDMINE_API_KEY (40 hex chars), REDMINE_STATE_DIR (/tmp/redmine-local).
#
# One database per state folder. Debian's package keeps one system-wide sqlite file; two Redmines on it (a test
# run and a person, or two suites) lock each other ("SQLite3::BusyException"). So that file is only ever read:
# "configure" snapshots it (sqlite's backup API, consistent even while something writes it) and configures the
# snapshot; "start" runs on $REDMINE_STATE_DIR/db.sqlite3, a copy of the snapshot, through
# DATABASE_URL=sqlite3:<path>, which Rails honours over database.yml. Attachments go to
# $REDMINE_STATE_DIR/files (Redmine's configuration.yml reads REDMINE_ATTACHMENTS_DIR). A test run passes a
# folder of its own, so it starts on a fresh database and shares nothing with anybody.
set -euo pipefail
# Rails reads DATABASE_URL (and REDIS_URL) from the environment: the node's must not reach Redmine.
unset DATABASE_URL REDIS_URL

REDMINE_PORT="${REDMINE_PORT:-3300}"
REDMINE_API_KEY="${REDMINE_API_KEY:-0123456789abcdef0123456789abcdef01234567}"
STATE_DIR="${REDMINE_STATE_DIR:-${TMPDIR:-/tmp}/redmine-local}"
SNAPSHOT_DIR="${REDMINE_SNAPSHOT_DIR:-${TMPDIR:-/tmp}/redmine-snapshot}"
APP=/usr/share/redmine
SYSTEM_DB=/var/lib/dbconfig-common/sqlite3/redmine/instances/default/redmine_default
SITE_CONFIG=/etc/redmine/default/configuration.yml
SNAPSHOT="$SNAPSHOT_DIR/configured-$REDMINE_API_KEY.sqlite3"
DB="$STATE_DIR/db.sqlite3"
FILES="$STATE_DIR/files"
PIDFILE="$STATE_DIR/redmine-$REDMINE_PORT.pid"
LOG="$STATE_DIR/server-$REDMINE_PORT.log"
BASE="http://127.0.0.1:$REDMINE_PORT"

mkdir -p "$STATE_DIR" "$SNAPSHOT_DIR"

installed() { dpkg-query -W -f='${Status}' redmine 2>/dev/null | grep -q "install ok installed" && [ -d "$APP" ]; }

install() {
  if installed && dpkg-query -W -f='${Status}' thin 2>/dev/null | grep -q "install ok installed"; then
    echo "redmine already installed"
  else
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    # dbconfig-common creates the sqlite database, migrates it and loads the default data (trackers,
    # statuses, priorities, admin/admin) without questions. "thin" is the app server Redmine's Gemfile uses.
    apt-get install -y -qq --no-install-recommends redmine redmine-sqlite thin curl >/dev/null
    echo "redmine installed"
  fi
  configure
}

site_config() {
  # Attachments in each Redmine's own folder. Redmine reads configuration.yml through ERB; with the variable
  # unset the value is empty and Redmine keeps its default folder. A file someone else wrote is left alone.
  if [ -f "$SITE_CONFIG" ] && ! grep -q "REDMINE_ATTACHMENTS_DIR" "$SITE_CONFIG"; then
    echo "note: $SITE_CONFIG exists; attachments stay where it says" >&2
    return 0
  fi
  [ -f "$SITE_CONFIG" ] && return 0
  cat >"$SITE_CONFIG" <<'YAML'
# Written by exalate-node's tests/e2e/redmine.sh: each Redmine it starts keeps attachments in its own folder.
default:
  attachments_storage_path: <%= ENV["REDMINE_ATTACHMENTS_DIR"] %>
YAML
  chmod 644 "$SITE_CONFIG"
}

configure() {
  installed || { echo "redmine is not installed: run '$0 install'" >&2; return 1; }
  [ -f "$SNAPSHOT" ] && { echo "redmine already configured"; return 0; }
  site_config
  # One configure at a time (two test runs may start together); the second finds the snapshot made.
  exec 9>"$SNAPSHOT_DIR/.lock"
  flock 9
  if [ -f "$SNAPSHOT" ]; then echo "redmine already configured"; exec 9>&-; return 0; fi
  local work="$SNAPSHOT_DIR/configuring-$$.sqlite3"
  python3 - "$SYSTEM_DB" "$work" <<'PY'
import sqlite3, sys
source, target = sqlite3.connect(f"file:{sys.argv[1]}?mode=ro", uri=True), sqlite3.connect(sys.argv[2])
with target:
    source.backup(target)
PY
  (
    cd "$APP"
    DATABASE_URL="sqlite3:$work" RAILS_ENV=production REDMINE_API_KEY="$REDMINE_API_KEY" bin/rails runner '
      Setting.rest_api_enabled = "1"
      u = User.find_by_login("admin")
      Token.where(user_id: u.id, action: "api").delete_all
      t = Token.create!(user: u, action: "api")
      t.update_column(:value, ENV["REDMINE_API_KEY"])
      puts "rest_api_enabled=#{Setting.rest_api_enabled?} admin=#{u.login}"
    '
  ) || { rm -f "$work"; exec 9>&-; return 1; }
  mv "$work" "$SNAPSHOT"
  exec 9>&-
}

running() { [ -f "$PIDFILE" ] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null; }

start() {
  if running; then echo "already running at $BASE, pid $(cat "$PIDFILE")"; return 0; fi
  configure
  [ -f "$DB" ] || cp "$SNAPSHOT" "$DB"
  mkdir -p "$FILES"
  cd "$APP"
  DATABASE_URL="sqlite3:$DB" REDMINE_ATTACHMENTS_DIR="$FILES" \
    setsid nohup bin/rails server -e production -b 127.0.0.1 -p "$REDMINE_PORT" \
    -P "$STATE_DIR/rails-$REDMINE_PORT.pid" >"$LOG" 2>&1 </dev/null &
  echo $! >"$PIDFILE"
  for _ in $(seq 1 240); do
    if curl -fs -o /dev/null "$BASE/issue_statuses.json" -H "X-Redmine-API-Key: $REDMINE_API_KEY"; then
      echo "redmine up at $BASE (pid $(cat "$PIDFILE"), database $DB)"; return 0
    fi
    running || { tail -30 "$LOG" >&2; echo "redmine died" >&2; rm -f "$PIDFILE"; return 1; }
    sleep 0.5
  done
  echo "redmine did not answer in 120 s" >&2; tail -20 "$LOG" >&2; stop; return 1
}

stop() {
  [ -f "$PIDFILE" ] || { echo "not running on $REDMINE_PORT"; return 0; }
  local pid; pid="$(cat "$PIDFILE")"
  if kill -0 "$pid" 2>/dev/null; then
    kill "$pid"
    for _ in $(seq 1 40); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
    if kill -0 "$pid" 2>/dev/null; then kill -9 "$pid" || true; fi
  fi
  rm -f "$PIDFILE" "$STATE_DIR/rails-$REDMINE_PORT.pid"
  echo "stopped $pid"
}

reset() {
  stop
  configure
  cp "$SNAPSHOT" "$DB"
  rm -rf "$FILES"
  echo "database restored ($DB)"
}

status() {
  if installed; then echo "installed: yes"; else echo "installed: no"; fi
  if [ -f "$SNAPSHOT" ]; then echo "configured: yes ($SNAPSHOT)"; else echo "configured: no"; fi
  if running; then echo "running: $BASE (pid $(cat "$PIDFILE"), database $DB)"; else echo "running: no"; fi
}

case "${1:-}" in
  install | configure | start | stop | reset | status) "$1" ;;
  all) install; start ;;
  *) sed -n 2,13p "$0"; exit 2 ;;
esac
