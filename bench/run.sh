#!/usr/bin/env bash
# Benchmarks sluice side by side with nginx in one run: the mock upstream
# directly, nginx as a bare reverse proxy to it, and sluice routing to it,
# each driven by wrk with the same small chat request. Prints a table and
# judges the bars from the project's issue; always exits 0 once it has run,
# because a benchmark on a shared box is a measurement, not a test.
#
# usage: bench/run.sh BUILD_DIR      (make bench passes the build dir)
# env:   BENCH_DURATION (s per row, default 8), BENCH_ROUNDS (default 4),
#        BENCH_WARMUP (s, default 2),
#        BENCH_STREAM=0 to skip the streaming rows, BENCH_PIN=0 not to pin
#        CPUs, NGINX, WRK
set -uo pipefail

BUILD=${1:?usage: bench/run.sh BUILD_DIR}
BUILD=$(cd "$BUILD" && pwd)
HERE=$(cd "$(dirname "$0")" && pwd)
DURATION=${BENCH_DURATION:-8}
WARMUP=${BENCH_WARMUP:-2}
STREAM=${BENCH_STREAM:-1}
PIN=${BENCH_PIN:-1}
ROUNDS=${BENCH_ROUNDS:-4}
NGINX=${NGINX:-/usr/sbin/nginx}
WRK=${WRK:-wrk}
MOCK_BIN=$BUILD/tests/mock/sluice-mock
SLUICE_BIN=$BUILD/core/sluice
LUA=$HERE/post.lua

CHAT_BODY='{"model":"bench","messages":[{"role":"user","content":"hello from the benchmark"}]}'
STREAM_BODY='{"model":"bench","stream":true,"messages":[{"role":"user","content":"one two three four five six seven eight"}]}'

die() {
    echo "bench: $*" >&2
    exit 1
}

for f in "$MOCK_BIN" "$SLUICE_BIN"; do
    [ -x "$f" ] || die "$f is missing: build first (make, or make bench)"
done
[ -x "$NGINX" ] || die "$NGINX is missing: apt-get install nginx"
command -v "$WRK" >/dev/null || die "wrk is missing: apt-get install wrk"
command -v curl >/dev/null || die "curl is missing: apt-get install curl"

# With two or more CPUs, wrk gets CPU 0 and the servers CPU 1: the client
# and the server side then never steal each other's cycles, which makes runs
# repeatable, and every proxy pays the same for sharing a core with the mock.
SERVER_CPU=()
CLIENT_CPU=()
if [ "$PIN" = 1 ] && [ "$(nproc)" -ge 2 ] && command -v taskset >/dev/null; then
    SERVER_CPU=(taskset -c 1)
    CLIENT_CPU=(taskset -c 0)
fi

TMP=$(mktemp -d /tmp/sluice-bench.XXXXXX)
PIDS=()
# shellcheck disable=SC2317  # called by the EXIT trap
cleanup() {
    local p
    for p in "${PIDS[@]}"; do
        kill -TERM "$p" 2>/dev/null
    done
    for p in "${PIDS[@]}"; do
        wait "$p" 2>/dev/null
    done
    rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() {
    /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Waits until FILE contains a line matching the extended regex RE and prints
# the first capture-less match; fails after ~10 s or if PID died.
wait_for_line() {
    local file=$1 re=$2 pid=$3
    for _ in $(seq 1 200); do
        if grep -Eo "$re" "$file" 2>/dev/null | head -n1 | grep .; then
            return 0
        fi
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.05
    done
    echo "bench: no '$re' from pid $pid; its output:" >&2
    cat "$file" >&2
    return 1
}

# Waits until a POST of BODY to URL answers 200.
wait_ok() {
    local url=$1 body=$2 key=${3:-} code
    for _ in $(seq 1 100); do
        code=$(curl -s -o /dev/null -w '%{http_code}' -H 'Content-Type: application/json' \
            ${key:+-H "Authorization: Bearer $key"} --data-binary "$body" "$url")
        [ "$code" = 200 ] && return 0
        sleep 0.05
    done
    echo "bench: $url never answered 200 (last: $code)" >&2
    return 1
}

# ---- start the three servers ----------------------------------------------

"${SERVER_CPU[@]}" "$MOCK_BIN" --port 0 --threads 1 >"$TMP/mock.out" 2>&1 &
PIDS+=($!)
MOCK_PID=$!
MOCK_PORT=$(wait_for_line "$TMP/mock.out" 'READY [0-9]+' "$MOCK_PID" | awk '{print $2}') ||
    die "the mock upstream did not start"

NGINX_PORT=$(free_port)
mkdir -p "$TMP/nginx"
NGINX_USER=""
[ "$(id -u)" = 0 ] && NGINX_USER="user root root;"
cat >"$TMP/nginx/nginx.conf" <<EOF
# A bare reverse proxy: the baseline a gateway is measured against.
$NGINX_USER
daemon off;
worker_processes 1;
pid $TMP/nginx/nginx.pid;
error_log $TMP/nginx/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path $TMP/nginx/body;
    proxy_temp_path $TMP/nginx/proxy;
    fastcgi_temp_path $TMP/nginx/fastcgi;
    uwsgi_temp_path $TMP/nginx/uwsgi;
    scgi_temp_path $TMP/nginx/scgi;
    upstream mock {
        server 127.0.0.1:$MOCK_PORT;
        keepalive 64;
    }
    server {
        listen 127.0.0.1:$NGINX_PORT;
        location / {
            proxy_pass http://mock;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;
        }
    }
}
EOF
"${SERVER_CPU[@]}" "$NGINX" -p "$TMP/nginx" -c "$TMP/nginx/nginx.conf" -e "$TMP/nginx/error.log" \
    >"$TMP/nginx/out" 2>&1 &
PIDS+=($!)

cat >"$TMP/sluice.json" <<EOF
{
  "listen": [{"addr": "127.0.0.1:0"}],
  "workers": 1,
  "data_dir": "$TMP/data",
  "providers": {
    "mock": {"type": "openai", "base_url": "http://127.0.0.1:$MOCK_PORT/v1"}
  },
  "models": {"bench": {"targets": [{"provider": "mock", "model": "bench"}]}},
  "access_log": "off"
}
EOF
"${SERVER_CPU[@]}" "$SLUICE_BIN" -c "$TMP/sluice.json" >"$TMP/sluice.out" 2>&1 &
PIDS+=($!)
SLUICE_PID=$!
SLUICE_PORT=$(wait_for_line "$TMP/sluice.out" 'listening on 127\.0\.0\.1:[0-9]+' "$SLUICE_PID" |
    sed 's/.*://') || die "sluice did not start"

# The same gateway with the bundled plugins on its chat route: auth (an
# API key made with `sluice keys create`) and ratelimit when the auth
# plugin is built, else ratelimit alone; limits far above what the run
# sends, so every request is counted and none is refused.
PLUGINS_LABEL=""
PLUGINS_KEY=""
if [ -f "$BUILD/plugins/ratelimit.so" ]; then
    PLUGINS_LIST='"ratelimit"'
    PLUGINS_LABEL="ratelimit"
    AUTH_ENTRY=""
    if [ -f "$BUILD/plugins/auth.so" ]; then
        PLUGINS_LIST='"auth", "ratelimit"'
        PLUGINS_LABEL="auth + ratelimit"
        AUTH_ENTRY='"auth": {"path": "auth.so", "config": {}},'
    fi
    cat >"$TMP/sluice-plugins.json" <<EOF
{
  "listen": [{"addr": "127.0.0.1:0"}],
  "workers": 1,
  "data_dir": "$TMP/data-plugins",
  "plugin_dir": "$BUILD/plugins",
  "providers": {
    "mock": {"type": "openai", "base_url": "http://127.0.0.1:$MOCK_PORT/v1"}
  },
  "models": {"bench": {"targets": [{"provider": "mock", "model": "bench"}]}},
  "plugins": {
    $AUTH_ENTRY
    "ratelimit": {"path": "ratelimit.so",
                  "config": {"requests_per_minute": 1000000000,
                             "tokens_per_minute": 1000000000000}}
  },
  "routes": [{"path": "/v1/chat/completions", "plugins": [$PLUGINS_LIST]}],
  "access_log": "off"
}
EOF
    if [ -n "$AUTH_ENTRY" ]; then
        PLUGINS_KEY=$("$SLUICE_BIN" keys create --name bench -c "$TMP/sluice-plugins.json" 2>"$TMP/keys.err") ||
            { cat "$TMP/keys.err" >&2; die "sluice keys create failed"; }
    fi
    "${SERVER_CPU[@]}" "$SLUICE_BIN" -c "$TMP/sluice-plugins.json" >"$TMP/sluice-plugins.out" 2>&1 &
    PIDS+=($!)
    PLUGINS_PID=$!
    PLUGINS_PORT=$(wait_for_line "$TMP/sluice-plugins.out" 'listening on 127\.0\.0\.1:[0-9]+' "$PLUGINS_PID" |
        sed 's/.*://') || die "sluice with plugins did not start"
else
    echo "bench: no $BUILD/plugins/ratelimit.so: no plugins row" >&2
fi

# start_variant NAME: one more sluice from $TMP/sluice-NAME.json; its
# port goes in VARIANT_PORT[NAME]. Returns non-zero when it did not start.
declare -A VARIANT_PORT VARIANT_KEY
start_variant() {
    local name=$1 pid port
    "${SERVER_CPU[@]}" "$SLUICE_BIN" -c "$TMP/sluice-$name.json" >"$TMP/sluice-$name.out" 2>&1 &
    pid=$!
    PIDS+=($pid)
    port=$(wait_for_line "$TMP/sluice-$name.out" 'listening on 127\.0\.0\.1:[0-9]+' "$pid" |
        sed 's/.*://') || { cat "$TMP/sluice-$name.out" >&2; return 1; }
    VARIANT_PORT[$name]=$port
}

# The same gateway with its per-request metrics, usage ledger and request
# log off: the
# pair (sluice, bare) shows what observability costs.
cat >"$TMP/sluice-bare.json" <<EOF
{
  "listen": [{"addr": "127.0.0.1:0"}],
  "workers": 1,
  "data_dir": "$TMP/data-bare",
  "providers": {
    "mock": {"type": "openai", "base_url": "http://127.0.0.1:$MOCK_PORT/v1"}
  },
  "models": {"bench": {"targets": [{"provider": "mock", "model": "bench"}]}},
  "metrics": false,
  "ledger": false,
  "request_log": {"enabled": false},
  "access_log": "off"
}
EOF
start_variant bare || echo "bench: the observability-off variant did not start" >&2

# The "Lua transform": the same gateway with a Lua script on its chat route,
# bench/transform.lua, which edits the prompt on the way in and the answer
# on the way out.
cat >"$TMP/sluice-lua.json" <<EOF
{
  "listen": [{"addr": "127.0.0.1:0"}],
  "workers": 1,
  "data_dir": "$TMP/data-lua",
  "providers": {
    "mock": {"type": "openai", "base_url": "http://127.0.0.1:$MOCK_PORT/v1"}
  },
  "models": {"bench": {"targets": [{"provider": "mock", "model": "bench"}]}},
  "routes": [{"path": "/v1/chat/completions", "lua": "$HERE/transform.lua"}],
  "access_log": "off"
}
EOF
start_variant lua || echo "bench: the Lua transform variant did not start" >&2

# The full pipeline in the documented order -- auth (when built),
# ratelimit, pii, guardrails, cache -- with the cache on its miss path
# (max_entry_bytes 1: every request is keyed and looked up, and its answer
# is never stored), and a gateway whose route has the cache alone, so that
# after the first request every one is a hit that never reaches the mock.
PIPELINE_LABEL=""
if [ -f "$BUILD/plugins/ratelimit.so" ] && [ -f "$BUILD/plugins/pii.so" ] &&
    [ -f "$BUILD/plugins/guardrails.so" ] && [ -f "$BUILD/plugins/cache.so" ]; then
    PIPE_LIST='"ratelimit", "pii", "guardrails", "cache"'
    PIPELINE_LABEL="ratelimit + pii + guardrails + cache (miss)"
    PIPE_AUTH=""
    if [ -f "$BUILD/plugins/auth.so" ]; then
        PIPE_LIST='"auth", '"$PIPE_LIST"
        PIPELINE_LABEL="auth + $PIPELINE_LABEL"
        PIPE_AUTH='"auth": {"path": "auth.so", "config": {}},'
    fi
    for which in pipeline cachehit; do
        if [ "$which" = pipeline ]; then
            entries="$PIPE_AUTH
    \"ratelimit\": {\"path\": \"ratelimit.so\",
                  \"config\": {\"requests_per_minute\": 1000000000,
                             \"tokens_per_minute\": 1000000000000}},
    \"pii\": {\"path\": \"pii.so\", \"config\": {}},
    \"guardrails\": {\"path\": \"guardrails.so\", \"config\": {}},
    \"cache\": {\"path\": \"cache.so\", \"config\": {\"max_entry_bytes\": 1}}"
            list=$PIPE_LIST
        else
            entries='"cache": {"path": "cache.so", "config": {"scope": "shared"}}'
            list='"cache"'
        fi
        cat >"$TMP/sluice-$which.json" <<EOF
{
  "listen": [{"addr": "127.0.0.1:0"}],
  "workers": 1,
  "data_dir": "$TMP/data-$which",
  "plugin_dir": "$BUILD/plugins",
  "providers": {
    "mock": {"type": "openai", "base_url": "http://127.0.0.1:$MOCK_PORT/v1"}
  },
  "models": {"bench": {"targets": [{"provider": "mock", "model": "bench"}]}},
  "plugins": {
    $entries
  },
  "routes": [{"path": "/v1/chat/completions", "plugins": [$list]}],
  "access_log": "off"
}
EOF
        if [ "$which" = pipeline ] && [ -n "$PIPE_AUTH" ]; then
            VARIANT_KEY[pipeline]=$("$SLUICE_BIN" keys create --name bench -c "$TMP/sluice-pipeline.json" 2>"$TMP/keys.err") ||
                { cat "$TMP/keys.err" >&2; die "sluice keys create failed"; }
        fi
        start_variant "$which" || echo "bench: the $which variant did not start" >&2
    done
else
    echo "bench: pii, guardrails, cache or ratelimit not built: no pipeline and cachehit rows" >&2
fi

PATH_CHAT=/v1/chat/completions
DIRECT_URL=http://127.0.0.1:$MOCK_PORT$PATH_CHAT
NGINX_URL=http://127.0.0.1:$NGINX_PORT$PATH_CHAT
SLUICE_URL=http://127.0.0.1:$SLUICE_PORT$PATH_CHAT
wait_ok "$DIRECT_URL" "$CHAT_BODY" || die "the mock does not answer"
wait_ok "$NGINX_URL" "$CHAT_BODY" || { cat "$TMP/nginx/error.log" >&2; die "nginx does not answer"; }
wait_ok "$SLUICE_URL" "$CHAT_BODY" || { cat "$TMP/sluice.out" >&2; die "sluice does not answer"; }
TARGETS=(direct nginx sluice)
if [ -n "$PLUGINS_LABEL" ]; then
    PLUGINS_URL=http://127.0.0.1:$PLUGINS_PORT$PATH_CHAT
    code=$(curl -s -o "$TMP/plugins.body" -w '%{http_code}' -H 'Content-Type: application/json' \
        ${PLUGINS_KEY:+-H "Authorization: Bearer $PLUGINS_KEY"} --data-binary "$CHAT_BODY" "$PLUGINS_URL")
    [ "$code" = 200 ] || { cat "$TMP/plugins.body" "$TMP/sluice-plugins.out" >&2; die "sluice with plugins answers $code"; }
    TARGETS+=(plugins)
fi
for name in "${!VARIANT_PORT[@]}"; do
    if wait_ok "http://127.0.0.1:${VARIANT_PORT[$name]}$PATH_CHAT" "$CHAT_BODY" \
        "${VARIANT_KEY[$name]:-}"; then
        TARGETS+=("$name")
    else
        echo "bench: variant $name does not answer; left out" >&2
    fi
done

# ---- measure ---------------------------------------------------------------
#
# Each row's time is split into ROUNDS slices and the targets take turns, so
# a burst of background load hits all of them alike instead of one run.
# A row reports total requests / total time and the median of the slices'
# p50 and p99.

declare -A RPS P50 P99 ERR
ROWS=()

url_of() {
    case $1 in
    direct) echo "$DIRECT_URL" ;;
    nginx) echo "$NGINX_URL" ;;
    sluice) echo "$SLUICE_URL" ;;
    plugins) echo "$PLUGINS_URL" ;;
    *) echo "http://127.0.0.1:${VARIANT_PORT[$1]}$PATH_CHAT" ;;
    esac
}

# auth_of TARGET: the API key its requests carry (only the plugins one).
auth_of() {
    if [ "$1" = plugins ]; then echo "$PLUGINS_KEY"; else echo "${VARIANT_KEY[$1]:-}"; fi
}

# wrk_once URL CONNS SECONDS BODY [KEY]: prints wrk's RESULT line, or a line that
# counts as one error when wrk gave none.
wrk_once() {
    local out line
    out=$(BENCH_BODY=$4 BENCH_AUTH=${5:-} "${CLIENT_CPU[@]}" "$WRK" -t1 -c"$2" -d"$3s" --timeout 5s \
        -s "$LUA" "$1" 2>&1)
    line=$(grep '^RESULT ' <<<"$out" | tail -n1)
    if [ -z "$line" ]; then
        echo "bench: wrk gave no result for $1:" >&2
        echo "$out" >&2
        line="RESULT requests=0 duration_us=0 p50_us=0 p99_us=0 errors_wrk=1"
    fi
    echo "$line"
}

# aggregate KEY FILE: one row from the RESULT lines in FILE.
aggregate() {
    local key=$1 rps p50 p99 err
    read -r rps p50 p99 err < <(awk '
        function median(a, n,   i, j, t) {
            for (i = 2; i <= n; i++)
                for (j = i; j > 1 && a[j - 1] > a[j]; j--) {
                    t = a[j]; a[j] = a[j - 1]; a[j - 1] = t
                }
            return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
        }
        {
            for (i = 2; i <= NF; i++) {
                split($i, kv, "=")
                if (kv[1] == "requests") req += kv[2]
                else if (kv[1] == "duration_us") dur += kv[2]
                else if (kv[1] == "p50_us") p50[++n50] = kv[2]
                else if (kv[1] == "p99_us") p99[++n99] = kv[2]
                else if (kv[1] ~ /^errors_/) err += kv[2]
            }
        }
        END {
            rps = dur > 0 ? req / (dur / 1e6) : 0
            printf "%.0f %.0f %.0f %d\n", rps, median(p50, n50),
                median(p99, n99), err
        }' "$2")
    RPS[$key]=$rps
    P50[$key]=$p50
    P99[$key]=$p99
    ERR[$key]=$err
    ROWS+=("$key")
}

# measure KIND CONNS SECONDS BODY: one row per target.
measure() {
    local kind=$1 conns=$2 secs=$3 body=$4 per r i t
    local targets=("${TARGETS[@]}") n=${#TARGETS[@]}
    per=$((secs / ROUNDS))
    [ "$per" -ge 1 ] || per=1
    echo "bench: $kind, $conns connection(s), $ROUNDS x ${per}s per target" >&2
    for ((r = 0; r < ROUNDS; r++)); do
        for ((i = 0; i < n; i++)); do
            t=${targets[$(((i + r) % n))]}
            wrk_once "$(url_of "$t")" "$conns" "$per" "$body" "$(auth_of "$t")" \
                >>"$TMP/$kind-$t-$conns.res"
        done
    done
    for t in "${targets[@]}"; do
        aggregate "$kind $t $conns" "$TMP/$kind-$t-$conns.res"
    done
}

echo "bench: mock :$MOCK_PORT, nginx :$NGINX_PORT, sluice :$SLUICE_PORT;" \
    "${DURATION}s per row in $ROUNDS rounds after a ${WARMUP}s warm-up, wrk -t1"
for t in "${TARGETS[@]}"; do
    wrk_once "$(url_of "$t")" 32 "$WARMUP" "$CHAT_BODY" "$(auth_of "$t")" >/dev/null
done
measure chat 1 "$DURATION" "$CHAT_BODY"
measure chat 32 "$DURATION" "$CHAT_BODY"
if [ "$STREAM" = 1 ]; then
    measure stream 32 $((DURATION / 2 > ROUNDS ? DURATION / 2 : ROUNDS)) "$STREAM_BODY"
fi

# ---- report ----------------------------------------------------------------

us_to_ms() { awk -v u="$1" 'BEGIN { printf "%.3f", u / 1000 }'; }

report() {
    local key kind target conns
    echo "Sluice benchmark, $(date -u +%Y-%m-%dT%H:%M:%SZ), $(nproc) cores," \
        "$("$SLUICE_BIN" --version), $("$NGINX" -v 2>&1 | sed 's/.*: //')," \
        "1 worker each, $([ ${#SERVER_CPU[@]} -gt 0 ] && echo "wrk on CPU 0, servers on CPU 1" || echo "not pinned")"
    [ -z "$PLUGINS_LABEL" ] || echo "plugins = sluice with $PLUGINS_LABEL on the chat route"
    [ -z "${VARIANT_PORT[lua]:-}" ] ||
        echo "lua = sluice with a Lua transform on the chat route (bench/transform.lua edits the prompt and the answer)"
    [ -z "$PIPELINE_LABEL" ] || echo "pipeline = sluice with $PIPELINE_LABEL; cachehit = sluice with the cache alone, every request a hit"
    echo
    printf '%-7s %-8s %6s %10s %10s %10s %7s\n' kind target conns 'req/s' 'p50 ms' 'p99 ms' errors
    for key in "${ROWS[@]}"; do
        read -r kind target conns <<<"$key"
        printf '%-7s %-8s %6s %10s %10s %10s %7s\n' "$kind" "$target" "$conns" \
            "${RPS[$key]}" "$(us_to_ms "${P50[$key]}")" "$(us_to_ms "${P99[$key]}")" \
            "${ERR[$key]}"
    done
    echo

    local rr added_s added_n lat verdict pr ps
    rr=$(awk -v s="${RPS[chat sluice 32]:-0}" -v n="${RPS[chat nginx 32]:-0}" \
        'BEGIN { if (n > 0) printf "%.2f", s / n; else print "n/a" }')
    verdict=$(awk -v r="$rr" 'BEGIN { print (r != "n/a" && r >= 0.5) ? "PASS" : "FAIL" }')
    printf 'throughput ratio  sluice/nginx req/s, chat, 32 conns: %s   (bar >= 0.5)  %s\n' \
        "$rr" "$verdict"

    if [ -n "$PLUGINS_LABEL" ]; then
        pr=$(awk -v s="${RPS[chat plugins 32]:-0}" -v n="${RPS[chat nginx 32]:-0}" \
            'BEGIN { if (n > 0) printf "%.2f", s / n; else print "n/a" }')
        verdict=$(awk -v r="$pr" 'BEGIN { print (r != "n/a" && r >= 0.45) ? "PASS" : "FAIL" }')
        printf 'plugins ratio  sluice+%s/nginx req/s, chat, 32 conns: %s   (bar >= 0.45)  %s\n' \
            "$PLUGINS_LABEL" "$pr" "$verdict"
        ps=$(awk -v p="${RPS[chat plugins 32]:-0}" -v s="${RPS[chat sluice 32]:-0}" \
            'BEGIN { if (s > 0) printf "%.2f", p / s; else print "n/a" }')
        verdict=$(awk -v r="$ps" 'BEGIN { print (r != "n/a" && r >= 0.90) ? "PASS" : "FAIL" }')
        printf 'plugins cost  sluice+%s/sluice pass-through req/s, chat, 32 conns: %s   (bar >= 0.90)  %s\n' \
            "$PLUGINS_LABEL" "$ps" "$verdict"
    fi

    if [ -n "${RPS[chat bare 32]:-}" ]; then
        local ob
        ob=$(awk -v s="${RPS[chat sluice 32]:-0}" -v b="${RPS[chat bare 32]:-0}" \
            'BEGIN { if (b > 0) printf "%.2f", s / b; else print "n/a" }')
        verdict=$(awk -v r="$ob" 'BEGIN { print (r != "n/a" && r >= 0.95) ? "PASS" : "FAIL" }')
        printf 'observability cost  sluice (metrics, request log, ledger)/bare req/s, chat, 32 conns: %s   (bar >= 0.95)  %s\n' \
            "$ob" "$verdict"
    fi

    if [ -n "${RPS[chat pipeline 32]:-}" ]; then
        pr=$(awk -v s="${RPS[chat pipeline 32]:-0}" -v n="${RPS[chat nginx 32]:-0}" \
            'BEGIN { if (n > 0) printf "%.2f", s / n; else print "n/a" }')
        verdict=$(awk -v r="$pr" 'BEGIN { print (r != "n/a" && r >= 0.4) ? "PASS" : "FAIL" }')
        printf 'full pipeline ratio  sluice+%s/nginx req/s, chat, 32 conns: %s   (bar >= 0.4)  %s\n' \
            "$PIPELINE_LABEL" "$pr" "$verdict"
    fi
    if [ -n "${RPS[chat cachehit 32]:-}" ]; then
        pr=$(awk -v s="${RPS[chat cachehit 32]:-0}" -v n="${RPS[chat nginx 32]:-0}" \
            'BEGIN { if (n > 0) printf "%.2f", s / n; else print "n/a" }')
        verdict=$(awk -v r="$pr" 'BEGIN { print (r != "n/a" && r >= 1.0) ? "PASS" : "FAIL" }')
        printf 'cache hit ratio  sluice cache hits/nginx req/s, chat, 32 conns: %s   (bar >= 1.0)  %s\n' \
            "$pr" "$verdict"
    fi

    if [ -n "${RPS[chat lua 32]:-}" ]; then
        local lr ls
        lr=$(awk -v s="${RPS[chat lua 32]:-0}" -v n="${RPS[chat nginx 32]:-0}" \
            'BEGIN { if (n > 0) printf "%.2f", s / n; else print "n/a" }')
        verdict=$(awk -v r="$lr" 'BEGIN { print (r != "n/a" && r >= 0.4) ? "PASS" : "FAIL" }')
        printf 'Lua transform ratio  sluice+lua/nginx req/s, chat, 32 conns: %s   (bar >= 0.4)  %s\n' \
            "$lr" "$verdict"
        ls=$(awk -v p="${RPS[chat lua 32]:-0}" -v s="${RPS[chat sluice 32]:-0}" \
            'BEGIN { if (s > 0) printf "%.2f", p / s; else print "n/a" }')
        verdict=$(awk -v r="$ls" 'BEGIN { print (r != "n/a" && r >= 0.85) ? "PASS" : "FAIL" }')
        printf 'Lua transform cost  sluice+lua/sluice pass-through req/s, chat, 32 conns: %s   (bar >= 0.85)  %s\n' \
            "$ls" "$verdict"
    fi

    added_s=$((${P50[chat sluice 1]:-0} - ${P50[chat direct 1]:-0}))
    added_n=$((${P50[chat nginx 1]:-0} - ${P50[chat direct 1]:-0}))
    if [ "$added_n" -gt 0 ]; then
        lat=$(awk -v s="$added_s" -v n="$added_n" 'BEGIN { printf "%.2f", s / n }')
        verdict=$(awk -v r="$lat" 'BEGIN { print (r <= 2.0) ? "PASS" : "FAIL" }')
    else
        lat="n/a (nginx added no measurable p50)"
        verdict=$([ "$added_s" -le 0 ] && echo PASS || echo FAIL)
    fi
    printf 'added latency ratio  (sluice p50 - direct p50) / (nginx p50 - direct p50), 1 conn: %s   (bar <= 2.0)  %s\n' \
        "$lat" "$verdict"
    printf '  added p50: sluice +%s us, nginx +%s us over the mock directly\n' "$added_s" "$added_n"

    local bad=0
    for key in "${ROWS[@]}"; do
        [ "${ERR[$key]}" = 0 ] || bad=1
    done
    [ "$bad" = 0 ] || echo "WARNING: some runs had errors (non-2xx, timeouts or socket errors); their numbers are suspect"
}

OUT=$HERE/out
mkdir -p "$OUT" 2>/dev/null && [ -w "$OUT" ] || OUT=$BUILD/bench-out
mkdir -p "$OUT"
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
report | tee "$OUT/bench-$STAMP.txt"
cp "$OUT/bench-$STAMP.txt" "$OUT/latest.txt"
echo "bench: results written to $OUT/bench-$STAMP.txt" >&2
exit 0
