# The system tools the test suite runs, and how ./scripts/test gets them onto a fresh machine.
# Sourced by scripts/test (and by scripts/tools, its stand-alone entry point); not run.
#
# Each line of TEST_TOOLS is "command package why": the command a test runs, the Debian/Ubuntu
# package that provides it, and which tests need it. Detection is `command -v` on the PATH, so
# a second run finds everything and installs nothing.
TEST_TOOLS=(
  "chromium chromium the demo's status page is rendered in headless Chromium"
  "wrk wrk the bench harness's smoke test drives the wrk load generator"
  "redis-server redis-server the Redis Cluster and TLS tests start their own redis-server"
  "redis-cli redis-tools the Redis Cluster tests join their nodes with redis-cli --cluster create"
  "ip iproute2 the partition tests cut links between network namespaces (ip netns, veth, routes)"
  "ss iproute2 bench table1 (and its tests) reads each connection's TCP byte counters with ss"
  "nginx nginx-light the rolling-restart tests run behind a real nginx (deploy/nginx.conf's settings)"
  "runuser util-linux the PostgreSQL TLS test runs initdb and pg_ctl as the postgres user"
  "chown coreutils the PostgreSQL TLS test hands its data directory to the postgres user"
  "callgrind_control valgrind bench instructions (instructions per request under callgrind)"
  "perf linux-perf bench table1 --profile (and its tests) samples the nodes with perf record"
)

# Prints the packages whose command is missing from the PATH, one per line (deduplicated).
missing_tool_packages() {
  local line cmd pkg seen=" "
  for line in "${TEST_TOOLS[@]}"; do
    read -r cmd pkg _ <<<"$line"
    if ! command -v "$cmd" >/dev/null 2>&1 && [[ "$seen" != *" $pkg "* ]]; then
      seen+="$pkg "
      echo "$pkg"
    fi
  done
}

# Makes sure every tool of TEST_TOOLS is on the PATH.
#   ensure_test_tools            install what is missing (apt-get, as root), or fail clearly
#   ensure_test_tools --dry-run  only say what would be installed
# Exits non-zero (with apt-get's own message above it) when an install fails, so a broken
# install never hides behind a later, more confusing test failure.
ensure_test_tools() {
  local dry_run=false
  if [ "${1:-}" = "--dry-run" ]; then dry_run=true; fi
  local missing=()
  mapfile -t missing < <(missing_tool_packages)
  if [ ${#missing[@]} -eq 0 ]; then
    local names=() line
    for line in "${TEST_TOOLS[@]}"; do names+=("${line%% *}"); done
    echo "tools: all present (${names[*]})"
    return 0
  fi
  if $dry_run; then
    echo "would install: ${missing[*]}"
    return 0
  fi
  if ! command -v apt-get >/dev/null 2>&1 || [ "${EUID:-$(id -u)}" -ne 0 ]; then
    local line cmd pkg why
    echo "error: the test suite needs tools that are not installed:" >&2
    for line in "${TEST_TOOLS[@]}"; do
      read -r cmd pkg why <<<"$line"
      if ! command -v "$cmd" >/dev/null 2>&1; then
        echo "  - $cmd (package $pkg): $why" >&2
      fi
    done
    echo "  Install them with:  sudo apt-get install -y ${missing[*]}" >&2
    echo "  (./scripts/test installs them itself when it runs as root on Debian/Ubuntu.)" >&2
    return 1
  fi
  echo "==> installing: ${missing[*]}"
  local start=$SECONDS
  export DEBIAN_FRONTEND=noninteractive
  # -qq keeps the log short; apt-get still prints its errors, and a failure stops the run.
  apt-get update -qq || { echo "error: apt-get update failed (see above)" >&2; return 1; }
  # Packages such as nginx start a system service on install (nginx on port 80); the tests
  # start what they need themselves, on loopback ports. Keep invoke-rc.d from starting
  # anything during this install, as Docker images do, unless the machine already has a policy.
  local policy=/usr/sbin/policy-rc.d made_policy=false rc=0
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\n# installed by scripts/test for the duration of one apt-get install\nexit 101\n' >"$policy"
    chmod +x "$policy"
    made_policy=true
  fi
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null || rc=$?
  if $made_policy; then rm -f "$policy"; fi
  if [ "$rc" -ne 0 ]; then
    echo "error: apt-get install ${missing[*]} failed (see above)" >&2
    return 1
  fi
  local still
  still="$(missing_tool_packages | tr '\n' ' ')"
  if [ -n "$still" ]; then
    echo "error: installed, but these packages' commands are still not on PATH: $still" >&2
    return 1
  fi
  echo "tools: installed ${missing[*]} in $((SECONDS - start)) s"
}
