# Shared by scripts/test and friends: make sure the services the tests need are up.
# Sourced, not run.

# "scheme://user@host:port/db" -> sets URL_HOST and URL_PORT (default port $2).
parse_host_port() {
  local url="$1" default_port="$2" rest hostport
  rest="${url#*://}"
  rest="${rest#*@}"
  hostport="${rest%%/*}"
  hostport="${hostport%%\?*}"
  URL_HOST="${hostport%:*}"
  URL_PORT="${hostport##*:}"
  if [ "$URL_HOST" = "$hostport" ]; then URL_PORT="$default_port"; fi
  URL_HOST="${URL_HOST#[}"; URL_HOST="${URL_HOST%]}"
}

# True when something accepts TCP connections at host:port.
tcp_open() {
  (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null
}

is_local() {
  case "$1" in 127.0.0.1|localhost|::1) return 0 ;; *) return 1 ;; esac
}

wait_for() { # host port seconds
  local i
  for ((i = 0; i < $3 * 10; i++)); do
    tcp_open "$1" "$2" && return 0
    sleep 0.1
  done
  return 1
}

ensure_postgres() {
  parse_host_port "$1" 5432
  if tcp_open "$URL_HOST" "$URL_PORT"; then
    echo "postgres: up at $URL_HOST:$URL_PORT"
    return 0
  fi
  if is_local "$URL_HOST" && command -v pg_ctlcluster >/dev/null 2>&1 && [ -d /etc/postgresql ]; then
    echo "postgres: not answering at $URL_HOST:$URL_PORT; starting the installed cluster"
    local v
    for v in $(ls /etc/postgresql); do
      pg_ctlcluster --skip-systemctl-redirect "$v" main start || true
    done
    if wait_for "$URL_HOST" "$URL_PORT" 30; then
      echo "postgres: started"
      return 0
    fi
  fi
  cat >&2 <<MSG
error: PostgreSQL is not reachable at $URL_HOST:$URL_PORT (DATABASE_URL=$1).
  The SQL backend's tests need a real PostgreSQL. Either:
    - start the local one:  pg_ctlcluster --skip-systemctl-redirect \$(ls /etc/postgresql) main start
    - or with Docker:       docker compose up -d postgres
    - or point DATABASE_URL at a reachable server (trust or password auth in the URL).
MSG
  exit 1
}

ensure_redis() {
  parse_host_port "$1" 6379
  if tcp_open "$URL_HOST" "$URL_PORT"; then
    echo "redis: up at $URL_HOST:$URL_PORT"
    return 0
  fi
  if is_local "$URL_HOST" && command -v redis-server >/dev/null 2>&1; then
    echo "redis: not answering at $URL_HOST:$URL_PORT; starting the installed server"
    redis-server --daemonize yes --bind 127.0.0.1 --port "$URL_PORT" --save "" --appendonly no >/dev/null
    if wait_for "$URL_HOST" "$URL_PORT" 15; then
      echo "redis: started"
      return 0
    fi
  fi
  cat >&2 <<MSG
error: Redis is not reachable at $URL_HOST:$URL_PORT (REDIS_URL=$1).
  The Redis backend's tests need a real Redis. Either:
    - start the local one:  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no
    - or with Docker:       docker compose up -d redis
    - or point REDIS_URL at a reachable server.
MSG
  exit 1
}

# The Redis Cluster tests start (and stop) their own throwaway 3-master cluster on free loopback
# ports with redis-server --cluster-enabled yes and redis-cli --cluster create, unless
# REDIS_CLUSTER_NODES names an existing cluster. Check for the tools up front.
check_redis_cluster_tools() {
  if [ -n "${REDIS_CLUSTER_NODES:-}" ]; then
    echo "redis cluster: using REDIS_CLUSTER_NODES=$REDIS_CLUSTER_NODES"
    return 0
  fi
  if command -v redis-server >/dev/null 2>&1 && command -v redis-cli >/dev/null 2>&1; then
    echo "redis cluster: tests start their own 3-master cluster on loopback ports"
    return 0
  fi
  cat >&2 <<MSG
error: the Redis Cluster tests need redis-server and redis-cli on PATH (Debian: apt-get install
  redis-server), or REDIS_CLUSTER_NODES pointing at an existing cluster (comma-separated host:port).
MSG
  exit 1
}

# The status-page test renders the demo's page in headless Chromium.
check_chromium() {
  local c
  for c in chromium chromium-browser google-chrome; do
    if command -v "$c" >/dev/null 2>&1; then
      echo "chromium: $(command -v "$c")"
      return 0
    fi
  done
  cat >&2 <<MSG
error: the demo's status-page test needs headless Chromium, which is not installed.
  Debian/Ubuntu: apt-get install chromium
MSG
  exit 1
}

# wrk: the load generator the bench harness drives (its smoke test measures a real server).
check_wrk() {
  if command -v wrk >/dev/null 2>&1; then
    echo "wrk: $(command -v wrk)"
    return 0
  fi
  cat >&2 <<MSG
error: the bench harness's tests drive the wrk load generator, which is not installed.
  Debian/Ubuntu: apt-get install wrk
MSG
  exit 1
}
