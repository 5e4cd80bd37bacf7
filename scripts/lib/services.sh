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
