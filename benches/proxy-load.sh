#!/usr/bin/env bash
# Run: bash benches/proxy-load.sh [ROUNDS] [SECONDS]
#
# The proxy load benchmark (method, current figures: docs/performance.md): abgate
# against a bare pingora passthrough (examples/passthrough.rs), the backend directly,
# and — when installed — nginx split_clients and haproxy cookie hashing, interleaved
# over ROUNDS (default 3) rounds of SECONDS (default 10) measured after a 2 s warm-up.
#
# Layout: the proxy under test alone on CPU 1 (one worker thread); wrk and the backend
# (nginx `return 200`, one worker) on CPU 0. Requests are keep-alive POSTs with a
# realistic Cookie header whose abgate_uid rotates over 1,000 users (wrk Lua script).
# Primary figure: the proxy's CPU µs per request (utime+stime of the process over the
# measured window ÷ requests), also split into user and system time and, for each
# proxy, by thread (abgate: its worker against its event writer). Reported as ratios
# to pingora_pass of the same round: median with min–max. Also req/s, and p50/p99 and
# CPU µs per request at two fixed rates (15% and 65% of the passthrough's capacity) with
# oha when it is installed (`cargo install oha --locked`).
# The split of distinct units per variant is checked against the weights by chi-square
# (scipy, installed with pip when missing; skipped with a message if it cannot be).
# Then (optional phases, after the table):
# - BENCH_CALLGRIND=N: user-space instructions per request of pingora_pass and abgate
#   under valgrind's callgrind over N requests (deterministic, unlike CPU time on a
#   shared VM);
# - BENCH_RSS_SECS (default 60, 0 skips): abgate's RSS every 5 s under that long a load
#   whose user ids rotate over 1,000,000 distinct values.
# HTTP/2 rows (`pingora_h2c`, `abgate_h2c`): the same proxies with clients speaking h2c
# (HTTP/2 with prior knowledge, as gRPC clients do), driven by h2load (Debian's
# nghttp2-client: -c64 connections, 10 streams each, one user's cookie) against the same
# HTTP/1.1 backend; `abgate_h2c` is reported as a ratio to `pingora_h2c`, the bare
# passthrough with pingora's h2c enabled.
# Fleet row (`abgate_fleet`): abgate with `[fleet]` shipping every event to a real
# `nats-server -js` on CPU 0 (Debian's package); its CPU per request includes the
# shipper's thread. After each of its rounds the script reports the events shipped per
# second during the load, the backlog at its end and how long the stream took to hold
# every event (the end-to-end lag at that load). BENCH_SHIP_SECS (default 10, 0 skips):
# the shipper's sustained rate — that many seconds of load with the broker down, then
# the time to ship the backlog once it is back.
# Environment: BENCH_CONFIGS (a subset, e.g. "pingora_pass abgate"; `*_je` rows are
# the jemalloc builds, only run when named), BENCH_SKIP_OHA=1,
# BENCH_OUT (default target/bench-load). ROUNDS=0 runs only the optional phases.
# Every load loop is bounded in time and targets 127.0.0.1 only.
set -uo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-3}
SECS=${2:-10}
WARM=2
OUT=${BENCH_OUT:-target/bench-load}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
# The split check reads the experiment snapshots of this run only.
rm -f "$OUT"/*-experiments-*.json
export PATH="$HOME/.cargo/bin:$PATH"

need() { command -v "$1" >/dev/null 2>&1; }
if ! need wrk; then echo "installing wrk"; apt-get install -y -qq wrk >/dev/null 2>&1 || true; fi
need wrk || { echo "wrk is required (apt-get install wrk)"; exit 1; }
need nginx || { echo "installing nginx (backend)"; apt-get install -y -qq nginx >/dev/null 2>&1 || true; }
need nginx || { echo "nginx is required as the backend (apt-get install nginx)"; exit 1; }
need haproxy || apt-get install -y -qq haproxy >/dev/null 2>&1 || true
need h2load || apt-get install -y -qq nghttp2-client >/dev/null 2>&1 || true
need taskset || { echo "taskset (util-linux) is required"; exit 1; }
# scipy for the chi-square check of the split (optional: skipped with a message if missing)
has_scipy() { python3 -c 'import scipy.stats' >/dev/null 2>&1; }
has_scipy || { echo "installing scipy (split check)"; python3 -m pip install -q scipy >/dev/null 2>&1 || true; }

echo "== building release binaries (mimalloc and system allocator)"
cargo build --release -q --bin abgate --example passthrough
case "${BENCH_CONFIGS:-_sys}" in
  *_sys*) CARGO_TARGET_DIR=target/sysalloc cargo build --release -q --no-default-features --bin abgate --example passthrough ;;
esac
case "${BENCH_CONFIGS:-}" in
  *_je*) CARGO_TARGET_DIR=target/jemalloc cargo build --release -q --no-default-features --features jemalloc --bin abgate --example passthrough ;;
esac

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }
TCK=$(getconf CLK_TCK)
# user and system ticks of a process (all its threads)
cpu_ticks() { awk '{print $14, $15}' "/proc/$1/stat"; }
# user and system ticks per thread name: "name utime stime" lines, threads of one name
# summed (a name's spaces become _; the fields after the parenthesized name are counted
# from its end)
thread_ticks() {
  local t
  for t in /proc/"$1"/task/*; do
    printf '%s %s\n' "$(tr ' ' _ < "$t/comm")" "$(sed 's/.*) //' "$t/stat" | awk '{print $12, $13}')"
  done | awk '{u[$1] += $2; s[$1] += $3} END {for (n in u) print n, u[n], s[n]}'
}
# per_req_us T0 T1 REQS -> "total user sys" CPU µs per request between two cpu_ticks readings
per_req_us() { python3 -c "u0,s0='$1'.split(); u1,s1='$2'.split(); k=1e6/$TCK/$3; u=(int(u1)-int(u0))*k; s=(int(s1)-int(s0))*k; print(f'{u+s:.3f} {u:.3f} {s:.3f}')"; }

PIDS=()
cleanup() { for p in "${PIDS[@]:-}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

# ---- backend: nginx return 200, one worker, CPU 0
BPORT=$(free_port)
cat > "$OUT/backend.conf" <<EOF
worker_processes 1; daemon off; master_process off; pid $OUT/backend.pid; error_log stderr error;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 10000000; keepalive_timeout 300s;
  server { listen 127.0.0.1:$BPORT; location / { return 200 "ok\n"; } } }
EOF
taskset -c 0 nginx -c "$OUT/backend.conf" -p "$OUT" &
PIDS+=($!)

printf '{"prompt":"hello"}' > "$OUT/body.json"

# ---- broker for the fleet row: nats-server with JetStream on CPU 0
NPORT=$(free_port)
NATS_BIN=$(command -v nats-server || echo /usr/sbin/nats-server)
NATS_PID=""
start_nats() {
  taskset -c 0 "$NATS_BIN" -js -a 127.0.0.1 -p "$NPORT" -sd "$OUT/nats" >"$OUT/nats.log" 2>&1 &
  NATS_PID=$!; PIDS+=($NATS_PID)
  for _ in $(seq 1 100); do (echo > "/dev/tcp/127.0.0.1/$NPORT") 2>/dev/null && return 0; sleep 0.1; done
  echo "nats-server did not start"; cat "$OUT/nats.log"; return 1
}
stop_nats() { [ -n "$NATS_PID" ] && kill -KILL "$NATS_PID" 2>/dev/null; wait "$NATS_PID" 2>/dev/null; NATS_PID=""; }

# ---- wrk script: rotating users in a realistic Cookie header
cat > "$OUT/users.lua" <<'EOF'
local n = 0
request = function()
  n = n + 1
  local uid = "bench-user-" .. (n % 1000)
  return wrk.format("POST", "/v1/chat", {
    ["Cookie"] = "_ga=GA1.2.1234567890.1700000000; _gid=GA1.2.987654321.1700000000; locale=en-US; abgate_uid=" .. uid .. "; theme=dark",
    ["Content-Type"] = "application/json", ["x-platform"] = "ios" }, '{"prompt":"hello"}')
end
EOF

# ---- abgate config: 3 layers, 2-4 variants, targeting, events, metrics, guardrails
abgate_config() { # $1 port, $2 admin port, $3 dir, $4 extra [admin] line, $5 extra [events] line, $6 extra tables
cat <<EOF
[server]
listen = ["127.0.0.1:$1"]
threads = 1
[admin]
listen = "127.0.0.1:$2"
${4:-}
[identity]
cookie = "abgate_uid"
[events]
dir = "$3/events"
${5:-}
[state]
dir = "$3/state"
[upstream.model_a]
addrs = ["127.0.0.1:$BPORT"]
[upstream.model_b]
addrs = ["127.0.0.1:$BPORT"]
[routing]
default_upstream = "model_a"
[[metric]]
name = "conversion"
kind = "binomial"
[[layer]]
name = "model"
  [[layer.experiment]]
  name = "ranker_v2"
  traffic = 1.0
  primary_metric = "conversion"
  targeting = { path_prefix = "/v1/" }
    [[layer.experiment.variant]]
    name = "control"
    weight = 50
    upstream = "model_a"
    [[layer.experiment.variant]]
    name = "treatment"
    weight = 50
    upstream = "model_b"
    headers = { "x-model-version" = "v2" }
    [layer.experiment.guardrails]
    min_requests = 300
    error_rate = { max_increase = 0.02 }
    latency_p99 = { max_ratio = 1.5, min_increase_ms = 20 }
[[layer]]
name = "prompt"
  [[layer.experiment]]
  name = "system_prompt"
  traffic = 1.0
    [[layer.experiment.variant]]
    name = "control"
    weight = 1
    headers = { "x-prompt" = "v1" }
    [[layer.experiment.variant]]
    name = "concise"
    weight = 1
    headers = { "x-prompt" = "concise" }
    [[layer.experiment.variant]]
    name = "friendly"
    weight = 1
    headers = { "x-prompt" = "friendly" }
[[layer]]
name = "sampling"
  [[layer.experiment]]
  name = "temperature"
  traffic = 1.0
    [[layer.experiment.variant]]
    name = "t07"
    weight = 1
    headers = { "x-temperature" = "0.7" }
    [[layer.experiment.variant]]
    name = "t05"
    weight = 1
    headers = { "x-temperature" = "0.5" }
    [[layer.experiment.variant]]
    name = "t03"
    weight = 1
    headers = { "x-temperature" = "0.3" }
    [[layer.experiment.variant]]
    name = "t00"
    weight = 1
    headers = { "x-temperature" = "0.0" }
${6:-}
EOF
}

# start_proxy NAME -> sets PPORT and PPID_ (the process whose CPU is measured)
start_proxy() {
  local name=$1
  PPORT=$(free_port)
  local dir="$OUT/$name"
  rm -rf "$dir"; mkdir -p "$dir"
  case $name in
    pingora_h2c)
      PASS_H2C=1 taskset -c 1 ${PROXY_PREFIX:-} target/release/examples/passthrough "127.0.0.1:$PPORT" "127.0.0.1:$BPORT" >"$dir/log" 2>&1 &
      PPID_=$! ;;
    pingora_pass|pingora_pass_sys|pingora_pass_je)
      local bin=target/release/examples/passthrough
      [ "$name" = pingora_pass_sys ] && bin=target/sysalloc/release/examples/passthrough
      [ "$name" = pingora_pass_je ] && bin=target/jemalloc/release/examples/passthrough
      taskset -c 1 ${PROXY_PREFIX:-} "$bin" "127.0.0.1:$PPORT" "127.0.0.1:$BPORT" >"$dir/log" 2>&1 &
      PPID_=$! ;;
    abgate|abgate_sys|abgate_je|abgate_noevents|abgate_nometrics|abgate_h2c|abgate_fleet)
      local bin=target/release/abgate
      [ "$name" = abgate_sys ] && bin=target/sysalloc/release/abgate
      [ "$name" = abgate_je ] && bin=target/jemalloc/release/abgate
      APORT=$(free_port)
      local admin_extra="" events_extra=""
      [ "$name" = abgate_noevents ] && events_extra="enabled = false"
      [ "$name" = abgate_nometrics ] && admin_extra="request_metrics = false"
      local tables=""
      [ "$name" = abgate_fleet ] && tables=$(printf '[fleet]\nnats_url = "nats://127.0.0.1:%s"\ninstance = "bench"\nstream = "ABGATE_BENCH"\n' "$NPORT")
      abgate_config "$PPORT" "$APORT" "$dir" "$admin_extra" "$events_extra" "$tables" > "$dir/abgate.toml"
      taskset -c 1 ${PROXY_PREFIX:-} "$bin" serve --config "$dir/abgate.toml" >"$dir/log" 2>&1 &
      PPID_=$! ;;
    nginx_split)
      cat > "$dir/nginx.conf" <<EOF
worker_processes 1; daemon off; master_process off; pid $dir/nginx.pid; error_log stderr error;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 10000000;
  upstream be { server 127.0.0.1:$BPORT; keepalive 64; }
  split_clients "\${cookie_abgate_uid}model" \$variant { 50% "control"; * "treatment"; }
  server { listen 127.0.0.1:$PPORT;
    location / { proxy_http_version 1.1; proxy_set_header Connection ""; proxy_set_header x-variant \$variant; proxy_pass http://be; } } }
EOF
      taskset -c 1 nginx -c "$dir/nginx.conf" -p "$dir" &
      PPID_=$! ;;
    haproxy_hash)
      cat > "$dir/haproxy.cfg" <<EOF
global
  nbthread 1
defaults
  mode http
  timeout connect 1s
  timeout client 30s
  timeout server 30s
  option http-keep-alive
frontend f
  bind 127.0.0.1:$PPORT
  http-request set-header x-variant %[req.cook(abgate_uid),crc32(1),mod(2)]
  default_backend b
backend b
  http-reuse always
  server s1 127.0.0.1:$BPORT
EOF
      taskset -c 1 haproxy -db -f "$dir/haproxy.cfg" >"$dir/log" 2>&1 &
      PPID_=$! ;;
    direct)
      PPORT=$BPORT; PPID_="" ;;
  esac
  for _ in $(seq 1 300); do
    (echo > "/dev/tcp/127.0.0.1/$PPORT") 2>/dev/null && return 0
    sleep 0.1
  done
  echo "$name did not start"; cat "$dir/log" 2>/dev/null; return 1
}

stop_proxy() {
  if [ -n "${PPID_:-}" ]; then
    kill -TERM "$PPID_" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$PPID_" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$PPID_" 2>/dev/null || true
    wait "$PPID_" 2>/dev/null || true
  fi
  PPID_=""
}

# run_one NAME ROUND -> appends "name round rps cpu_us requests non2xx" to results
# load SECONDS OUTFILE: the measured load on the proxy of `name` (wrk over HTTP/1.1,
# or h2load over h2c for the *_h2c rows)
load() {
  case $name in
    *_h2c)
      taskset -c 0 h2load -t1 -c64 -m10 -D "$1" \
        -H "cookie: _ga=GA1.2.1234567890.1700000000; locale=en-US; abgate_uid=bench-user-7; theme=dark" \
        -H "x-platform: ios" -H "content-type: application/json" -d "$OUT/body.json" \
        "http://127.0.0.1:$PPORT/v1/chat" ;;
    *) taskset -c 0 wrk -t1 -c64 -d"${1}s" -s "$OUT/users.lua" "http://127.0.0.1:$PPORT/" ;;
  esac
}

# metric NAME: the value of an unlabelled metric of the abgate under test
metric() { curl -s "http://127.0.0.1:$APORT/metrics" | awk -v m="$1" '$1 == m {print $2}'; }

# After an abgate_fleet round: events shipped per second during the load (SHIP0 and
# SHIP_T0 are read when it starts), the backlog at its end, and the time until the
# stream holds every event (bounded: 60 s).
ship_report() {
  local shipped backlog t_end waited=0
  shipped=$(metric abgate_events_shipped_total); backlog=$(metric abgate_events_ship_backlog_bytes)
  t_end=$(date +%s.%N)
  while [ "$(metric abgate_events_ship_backlog_bytes)" != "0" ] && [ "$waited" -lt 600 ]; do
    sleep 0.1; waited=$((waited + 1))
  done
  local t_drained; t_drained=$(date +%s.%N)
  python3 -c "
s0, s1, t0, t1, t2, b = map(float, '$SHIP0 $shipped $SHIP_T0 $t_end $t_drained $backlog'.split())
print(f'      shipper, round $1: {(s1 - s0) / (t1 - t0):,.0f} events/s shipped during the load; backlog at its end {b:,.0f} bytes; every event in the stream {t2 - t1:.2f} s after the load stopped')
" | tee -a "$OUT/ship.txt"
}

run_one() {
  local name=$1 round=$2
  start_proxy "$name" || return 0
  load "$WARM" >/dev/null 2>&1 || true
  local t0="0 0" th0=""; [ -n "$PPID_" ] && t0=$(cpu_ticks "$PPID_") && th0=$(thread_ticks "$PPID_")
  if [ "$name" = abgate_fleet ]; then SHIP0=$(metric abgate_events_shipped_total); SHIP_T0=$(date +%s.%N); fi
  load "$SECS" > "$OUT/wrk-$name-$round.txt" 2>&1 || true
  local t1="0 0" th1=""; [ -n "$PPID_" ] && t1=$(cpu_ticks "$PPID_") && th1=$(thread_ticks "$PPID_")
  local reqs rps non2xx errs
  case $name in
    *_h2c)
      reqs=$(awk '/^requests:/ {print $8}' "$OUT/wrk-$name-$round.txt")
      rps=$(awk '/^finished in/ {gsub(",",""); print $4}' "$OUT/wrk-$name-$round.txt")
      non2xx=$(awk '/^status codes:/ {gsub(",",""); print $5+$7+$9}' "$OUT/wrk-$name-$round.txt")
      errs=$(awk '/^requests:/ {print $10+$12+$14}' "$OUT/wrk-$name-$round.txt") ;;
    *)
      reqs=$(awk '/requests in/ {print $1}' "$OUT/wrk-$name-$round.txt")
      rps=$(awk '/Requests\/sec/ {print $2}' "$OUT/wrk-$name-$round.txt")
      non2xx=$(awk '/Non-2xx/ {print $5}' "$OUT/wrk-$name-$round.txt")
      errs=$(awk '/Socket errors/ {gsub(",",""); print $4+$6+$8+$10}' "$OUT/wrk-$name-$round.txt") ;;
  esac
  non2xx=${non2xx:-0}; errs=${errs:-0}
  local cpu_us=nan user_us=nan sys_us=nan
  if [ -n "$PPID_" ] && [ "${reqs:-0}" -gt 0 ]; then
    read -r cpu_us user_us sys_us <<< "$(per_req_us "$t0" "$t1" "$reqs")"
  fi
  if [ "$name" = abgate ] || [ "$name" = abgate_sys ]; then
    curl -s "http://127.0.0.1:$APORT/admin/experiments" > "$OUT/$name-experiments-$round.json" || true
  fi
  [ "$name" = abgate_fleet ] && ship_report "$round"
  stop_proxy
  # name round req/s cpu_us requests errors user_us sys_us
  echo "$name $round ${rps:-0} $cpu_us ${reqs:-0} $((non2xx + errs)) $user_us $sys_us" >> "$OUT/results.txt"
  printf "  %-17s round %d: %10s req/s  %8s CPU µs/req (user %s, system %s)  errors %s\n" "$name" "$round" "${rps:-0}" "$cpu_us" \
    "$user_us" "$sys_us" "$((non2xx + errs))"
  # Where a proxy's CPU goes, by thread (name round thread user_us sys_us in threads.txt):
  # for abgate, its worker against its event writer.
  if [ -n "$th1" ] && [ "${reqs:-0}" -gt 0 ]; then
    local comm u1 s1 before
    while read -r comm u1 s1; do
      before=$(awk -v n="$comm" '$1 == n {print $2, $3}' <<< "$th0")
      read -r _ u s <<< "$(per_req_us "${before:-0 0}" "$u1 $s1" "$reqs")"
      echo "$name $round $comm $u $s"
    done <<< "$th1" | awk '$4 + $5 >= 0.01' | sort -k4,4gr | tee -a "$OUT/threads.txt" |
      awk '{printf "      thread %-16s user %6.2f  system %6.2f µs/req\n", $3, $4, $5}'
  fi
}

CONFIGS=(${BENCH_CONFIGS:-pingora_pass abgate pingora_pass_sys abgate_sys direct})
if [ -z "${BENCH_CONFIGS:-}" ]; then
  need nginx && CONFIGS+=(nginx_split)
  need haproxy && CONFIGS+=(haproxy_hash)
  need h2load && CONFIGS+=(pingora_h2c abgate_h2c)
  [ -x "$NATS_BIN" ] && CONFIGS+=(abgate_fleet)
fi
: > "$OUT/ship.txt"
if [ -x "$NATS_BIN" ]; then
  rm -rf "$OUT/nats"; start_nats || CONFIGS=(${CONFIGS[@]/abgate_fleet})
fi
: > "$OUT/results.txt"; : > "$OUT/threads.txt"
echo "== $ROUNDS rounds x ${SECS}s, configurations: ${CONFIGS[*]}"
for r in $(seq 1 "$ROUNDS"); do
  n=${#CONFIGS[@]}
  for i in $(seq 0 $((n - 1))); do
    run_one "${CONFIGS[$(((i + r - 1) % n))]}" "$r"
  done
done

# ---- the shipper's sustained rate: a backlog built with the broker down, shipped
# once it is back (BENCH_SHIP_SECS of load; 0 skips)
SHIP_SECS=${BENCH_SHIP_SECS:-10}
if [ "$SHIP_SECS" != 0 ] && [ -n "$NATS_PID" ]; then
  name=abgate_fleet
  if start_proxy abgate_fleet; then
    load "$WARM" >/dev/null 2>&1 || true
    for _ in $(seq 1 100); do [ "$(metric abgate_events_ship_backlog_bytes)" = 0 ] && break; sleep 0.1; done
    stop_nats
    load "$SHIP_SECS" > "$OUT/wrk-ship.txt" 2>&1 || true
    s0=$(metric abgate_events_shipped_total); backlog=$(metric abgate_events_ship_backlog_bytes)
    start_nats
    t_first=""; t_done=""
    for _ in $(seq 1 1200); do
      now=$(date +%s.%N)
      [ -z "$t_first" ] && [ "$(metric abgate_events_shipped_total)" != "$s0" ] && t_first=$now
      if [ -n "$t_first" ] && [ "$(metric abgate_events_ship_backlog_bytes)" = 0 ]; then t_done=$now; break; fi
      sleep 0.05
    done
    s1=$(metric abgate_events_shipped_total)
    if [ -n "$t_done" ]; then
      python3 -c "
s0, s1, a, b, bl = map(float, '$s0 $s1 $t_first $t_done $backlog'.split())
print(f'shipper sustained: a backlog of {s1 - s0:,.0f} events ({bl / 1e6:.1f} MB, {$SHIP_SECS} s of load with the broker down) shipped in {b - a:.2f} s after the first acknowledgement: {(s1 - s0) / (b - a):,.0f} events/s')
" | tee -a "$OUT/ship.txt"
    else
      echo "shipper sustained: the backlog did not drain within 60 s"
    fi
    stop_proxy
  fi
fi

# ---- latency at two fixed rates with oha (optional): rates are shares of the
# passthrough's capacity measured in the rounds above
cap=$(awk '$1=="pingora_pass" {print $3}' "$OUT/results.txt" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')
if need oha && [ -z "${BENCH_SKIP_OHA:-}" ] && [ -n "$cap" ]; then
  for pct in 15 65; do
    rate=$(python3 -c "print(int(float('$cap')*$pct/100))")
    for name in pingora_pass abgate; do
      start_proxy "$name" || continue
      # The proxy's CPU over the same window: at a fixed rate both proxies see the same
      # arrivals, so this compares cost per request without the feedback of saturation
      # (a slower proxy leaves CPU 0 idle more often, and waking it costs the proxy more).
      # A warm-up first, as for the wrk rounds, so start-up work is not counted.
      taskset -c 0 oha -z "${WARM}s" -q "$rate" -c 32 --no-tui -m POST -H "Cookie: abgate_uid=bench-user-7" \
        -d '{"prompt":"hello"}' "http://127.0.0.1:$PPORT/v1/chat" > /dev/null 2>&1 || true
      t0=$(cpu_ticks "$PPID_")
      taskset -c 0 oha -z "${SECS}s" -q "$rate" --latency-correction -c 32 --no-tui --output-format json \
        -m POST -H "Cookie: _ga=GA1.2.1; abgate_uid=bench-user-7; theme=dark" -d '{"prompt":"hello"}' \
        "http://127.0.0.1:$PPORT/v1/chat" > "$OUT/oha-$name-$pct.json" 2>/dev/null || true
      t1=$(cpu_ticks "$PPID_")
      stop_proxy
      n=$(python3 -c "import json; print(sum(json.load(open('$OUT/oha-$name-$pct.json'))['statusCodeDistribution'].values()))" 2>/dev/null || echo 0)
      cpu="nan nan nan"; [ "$n" -gt 0 ] && cpu=$(per_req_us "$t0" "$t1" "$n")
      python3 - "$OUT/oha-$name-$pct.json" "$name" "$pct" "$rate" $cpu <<'EOF' | tee -a "$OUT/latency.txt"
import json, sys
try:
    d = json.load(open(sys.argv[1]))
    p = d["latencyPercentiles"]
    cpu = f"CPU {sys.argv[5]} µs/req (user {sys.argv[6]}, system {sys.argv[7]})"
    print(f"{sys.argv[2]} at {sys.argv[3]}% ({sys.argv[4]} req/s): p50 {p['p50']*1000:.3f} ms  p99 {p['p99']*1000:.3f} ms  {cpu}")
except Exception as e:
    print(f"{sys.argv[2]} at {sys.argv[3]}%: no result ({e})")
EOF
    done
  done
elif [ -n "${BENCH_SKIP_OHA:-}" ]; then
  echo "fixed-rate latency skipped (BENCH_SKIP_OHA)"
elif [ -z "$cap" ]; then
  echo "fixed-rate latency skipped: its rates come from pingora_pass's capacity in the rounds (ROUNDS ≥ 1, pingora_pass among BENCH_CONFIGS)"
else
  echo "oha not installed: skipping fixed-rate latency (cargo install oha --locked)"
fi

# ---- summary: ratios to the same-allocator passthrough of the same round
[ -s "$OUT/results.txt" ] && python3 - "$OUT/results.txt" <<'EOF'
import sys, statistics, collections
rows = [l.split() for l in open(sys.argv[1]) if l.strip()]
by = collections.defaultdict(dict)
for name, rnd, rps, cpu, reqs, errs, user, sys_ in rows:
    by[name][int(rnd)] = (float(rps), float(cpu), int(errs), float(user), float(sys_))
def ref(name):
    if name.endswith("_h2c"):
        return "pingora_h2c"
    if name.endswith("_sys"):
        return "pingora_pass_sys"
    return "pingora_pass_je" if name.endswith("_je") else "pingora_pass"
print()
print("| configuration | CPU µs/req (median) | user / system µs/req (medians) | ratio to pingora_pass (median, min–max) | ratio to default-allocator pingora_pass | req/s (median) | errors |")
print("|---|---|---|---|---|---|---|")
for name in by:
    rounds = sorted(by[name])
    cpu = [by[name][r][1] for r in rounds]
    rps = [by[name][r][0] for r in rounds]
    errs = sum(by[name][r][2] for r in rounds)
    def ratios(refname):
        out = []
        for r in rounds:
            if r in by.get(refname, {}) and by[refname][r][1] == by[refname][r][1] and by[name][r][1] == by[name][r][1]:
                out.append(by[name][r][1] / by[refname][r][1])
        return out
    med_cpu = statistics.median(cpu) if all(c == c for c in cpu) else float("nan")
    med = lambda i: statistics.median(by[name][r][i] for r in rounds)
    split = f"{med(3):.1f} / {med(4):.1f}" if med_cpu == med_cpu else "-"
    r1, r2 = ratios(ref(name)), ratios("pingora_pass_sys")
    fmt = lambda rs: f"{statistics.median(rs):.2f} ({min(rs):.2f}–{max(rs):.2f})" if rs else "-"
    print(f"| {name} | {med_cpu:.1f} | {split} | {fmt(r1)} | {fmt(r2)} | {statistics.median(rps):.0f} | {errs} |")
EOF
# ---- by thread: medians over the rounds
[ -s "$OUT/threads.txt" ] && python3 - "$OUT/threads.txt" <<'EOF'
import sys, statistics, collections
by = collections.defaultdict(lambda: ([], []))
for l in open(sys.argv[1]):
    name, _, thread, u, s = l.split()
    by[(name, thread)][0].append(float(u)); by[(name, thread)][1].append(float(s))
print("CPU µs/request by thread (medians of user / system):")
for (name, thread), (u, s) in sorted(by.items()):
    print(f"  {name:<17} {thread:<16} {statistics.median(u):6.2f} / {statistics.median(s):6.2f}")
EOF
has_scipy || echo "scipy missing (python3 -m pip install scipy): skipping the split check"
for f in "$OUT"/abgate-experiments-*.json; do
  [ -f "$f" ] && has_scipy || continue
  python3 -c "
import json,sys
d=json.load(open('$f'))
# 1,000 users rotate, so check distinct units (not requests) against the weights.
from scipy.stats import chisquare
for e in d['experiments']:
    units = [v['units'] for v in e['variants']]
    w = [v['weight'] for v in e['variants']]
    exp = [sum(units) * x / sum(w) for x in w]
    print('split check', '$(basename "$f")', e['name'], dict(zip([v['name'] for v in e['variants']], units)), 'units; chi-square p=%.3f' % chisquare(units, exp).pvalue)
" || true
done

# ---- instructions per request (deterministic, user space): BENCH_CALLGRIND=N requests
# under valgrind's callgrind, after 2,000 warm-up requests; one user cookie.
if [ -n "${BENCH_CALLGRIND:-}" ]; then
  if need valgrind && need callgrind_control; then
    echo "== instructions per request (callgrind, ${BENCH_CALLGRIND} requests)"
    : > "$OUT/callgrind.txt"; : > "$OUT/callgrind-summary.txt"
    for name in pingora_pass abgate; do
      PROXY_PREFIX="valgrind --tool=callgrind --callgrind-out-file=$OUT/callgrind-$name.out" start_proxy "$name" || continue
      # Exactly N requests over 8 keep-alive connections: oha when installed, else a
      # Python client (the count, not the client's speed, is what matters here).
      hit() {
        if need oha; then
          oha -n "$1" -c 8 --no-tui -m POST -H "Cookie: _ga=GA1.2.1; locale=en-US; abgate_uid=bench-user-7; theme=dark" \
            -H "x-platform: ios" -d '{"prompt":"hello"}' "http://127.0.0.1:$PPORT/v1/chat" > /dev/null 2>&1
        else
          python3 - "$PPORT" "$1" <<'PY'
import http.client, sys, threading
port, n = int(sys.argv[1]), int(sys.argv[2])
def worker(k):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    for _ in range(k):
        c.request("POST", "/v1/chat", body='{"prompt":"hello"}', headers={
            "Cookie": "_ga=GA1.2.1; locale=en-US; abgate_uid=bench-user-7; theme=dark",
            "x-platform": "ios", "Content-Type": "application/json"})
        c.getresponse().read()
ts = [threading.Thread(target=worker, args=(n // 8,)) for _ in range(8)]
[t.start() for t in ts]; [t.join() for t in ts]
PY
        fi
      }
      hit 2000
      callgrind_control -z "$PPID_" > /dev/null 2>&1
      hit "$BENCH_CALLGRIND"
      callgrind_control -d "$PPID_" > /dev/null 2>&1
      ir=$(callgrind_annotate "$OUT/callgrind-$name.out.1" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",","",$1); print $1}')
      stop_proxy
      rm -f "$OUT/callgrind-$name.out"
      echo "$name $ir" >> "$OUT/callgrind.txt"
      python3 -c "print(f'  {\"$name\":<13} {int(\"$ir\")/$BENCH_CALLGRIND:>9,.0f} instructions per request')" | tee -a "$OUT/callgrind-summary.txt"
    done
  else
    echo "valgrind missing (apt-get install valgrind): skipping instruction counts"
  fi
fi

# ---- memory: RSS under BENCH_RSS_SECS (default 60) of load from 1,000,000 distinct users
RSS_SECS=${BENCH_RSS_SECS:-60}
if [ "$RSS_SECS" -gt 0 ]; then
  cat > "$OUT/million.lua" <<'LUA'
local n = 0
request = function()
  n = n + 1
  return wrk.format("POST", "/v1/chat", {
    ["Cookie"] = "_ga=GA1.2.1234567890.1700000000; locale=en-US; abgate_uid=m-" .. (n % 1000000) .. "; theme=dark",
    ["Content-Type"] = "application/json" }, '{"prompt":"hello"}')
end
LUA
  echo "== RSS of abgate under ${RSS_SECS}s of load, user ids rotating over 1,000,000"
  if start_proxy abgate; then
    rss() { awk '/VmRSS/ {print $2}' "/proc/$PPID_/status"; }
    : > "$OUT/rss.txt"
    taskset -c 0 wrk -t1 -c64 -d${RSS_SECS}s -s "$OUT/million.lua" "http://127.0.0.1:$PPORT/" > "$OUT/wrk-rss.txt" 2>&1 &
    WRK=$!
    for t in $(seq 5 5 "$RSS_SECS"); do
      sleep 5
      echo "$t $(rss)" >> "$OUT/rss.txt"
    done
    wait "$WRK"
    reqs=$(awk '/requests in/ {print $1}' "$OUT/wrk-rss.txt")
    stop_proxy
    python3 - "$OUT/rss.txt" "${reqs:-0}" <<'PY' | tee "$OUT/rss-summary.txt"
import sys
pts = [tuple(map(int, l.split())) for l in open(sys.argv[1]) if len(l.split()) == 2]
reqs = int(sys.argv[2])
print("t (s):    " + " ".join(f"{t:>6}" for t, _ in pts))
print("RSS (MB): " + " ".join(f"{r/1024:6.1f}" for _, r in pts))
base = next((r for t, r in pts if t >= 10), pts[0][1])
last = pts[-1][1]
print(f"{reqs} requests, {min(reqs, 1000000)} distinct users; RSS at 10 s {base/1024:.1f} MB, "
      f"at the end {last/1024:.1f} MB ({(last-base)/base*100:+.1f}%), peak {max(r for _, r in pts)/1024:.1f} MB")
PY
  fi
fi
