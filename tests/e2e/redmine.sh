#!/usr/bin/env bash
# A real Redmine 5.0 for the connector tests: Debian's package on sqlite, bound to loopback, REST API on,
# a fixed admin API key. Needs root. Idempotent: every command can be repeated.
#
#   bash tests/e2e/redmine.sh install     apt packages redmine redmine-sqlite thin (~35 s once), configure
#   bash tests/e2e/redmine.sh configure   enable the REST API, set the admin API key, snapshot the database
#   bash tests/e2e/redmine.sh start       start on 127.0.0.1:$REDMINE_PORT, wait until the API answers
#   bash tests/e2e/redmine.sh stop        stop the server this script started on $REDMINE_PORT (PID file)
#   bash tests/e2e/redmine.sh reset       stop, restore the database snapshot taken by "configure"
#   bash tests/e2e/redmine.sh status      print whether it is installed, configured and running
#   bash tests/e2e/redmine.sh all         install configure start
#
# Environment: REDMINE_PORT (3300), REDMINE_API_KEY (40 hex chars), REDMINE_STATE_DIR (/tmp/redmine-local).
set -euo pipefail
# Rails reads DATABASE_URL (and REDIS_URL) from the environment: the node's must not reach Redmine.
unset DATABASE_URL REDIS_URL

REDMINE_PORT="${REDMINE_PORT:-3300}"
REDMINE_API_KEY="${REDMINE_API_KEY:-0123456789abcdef0123456789abcdef01234567}"
STATE_DIR="${REDMINE_STATE_DIR:-${TMPDIR:-/tmp}/redmine-local}"
APP=/usr/share/redmine
DB=/var/lib/dbconfig-common/sqlite3/redmine/instances/default/redmine_default
PIDFILE="$STATE_DIR/redmine-$REDMINE_PORT.pid"
LOG="$STATE_DIR/server-$REDMINE_PORT.log"
PRISTINE="$STATE_DIR/pristine.sqlite3"
CONFIGURED="$STATE_DIR/configured-$REDMINE_API_KEY"
BASE="http://127.0.0.1:$REDMINE_PORT"

mkdir -p "$STATE_DIR"

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

configure() {
  installed || { echo "redmine is not installed: run '$0 install'" >&2; return 1; }
  if [ -f "$CONFIGURED" ] && [ -f "$PRISTINE" ]; then echo "redmine already configured"; return 0; fi
  cd "$APP"
  RAILS_ENV=production REDMINE_API_KEY="$REDMINE_API_KEY" bin/rails runner '
    Setting.rest_api_enabled = "1"
    u = User.find_by_login("admin")
    Token.where(user_id: u.id, action: "api").delete_all
    t = Token.create!(user: u, action: "api")
    t.update_column(:value, ENV["REDMINE_API_KEY"])
    puts "rest_api_enabled=#{Setting.rest_api_enabled?} admin=#{u.login}"
  '
  cp "$DB" "$PRISTINE"
  touch "$CONFIGURED"
}

running() { [ -f "$PIDFILE" ] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null; }

start() {
  if running; then echo "already running at $BASE, pid $(cat "$PIDFILE")"; return 0; fi
  configure
  cd "$APP"
  setsid nohup bin/rails server -e production -b 127.0.0.1 -p "$REDMINE_PORT" \
    -P "$STATE_DIR/rails-$REDMINE_PORT.pid" >"$LOG" 2>&1 </dev/null &
  echo $! >"$PIDFILE"
  for _ in $(seq 1 240); do
    if curl -fs -o /dev/null "$BASE/issue_statuses.json" -H "X-Redmine-API-Key: $REDMINE_API_KEY"; then
      echo "redmine up at $BASE (pid $(cat "$PIDFILE"))"; return 0
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
  [ -f "$PRISTINE" ] || { echo "no snapshot: run '$0 configure' first" >&2; return 1; }
  cp "$PRISTINE" "$DB"
  chown root:www-data "$DB" 2>/dev/null || true
  chmod 660 "$DB"
  rm -rf /var/lib/redmine/default/files/* 2>/dev/null || true
  echo "database restored"
}

status() {
  if installed; then echo "installed: yes"; else echo "installed: no"; fi
  if [ -f "$CONFIGURED" ]; then echo "configured: yes"; else echo "configured: no"; fi
  if running; then echo "running: $BASE (pid $(cat "$PIDFILE"))"; else echo "running: no"; fi
}

case "${1:-}" in
  install | configure | start | stop | reset | status) "$1" ;;
  all) install; start ;;
  *) sed -n 2,13p "$0"; exit 2 ;;
esac
