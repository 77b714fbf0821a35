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

# Every sluice variant of variants.sh, each on its own port: sluice (the
# pass-through), bare, plugins, lua, pipeline and cachehit. A variant whose
# plugins are not built is left out.
# shellcheck source=bench/variants.sh
. "$HERE/variants.sh"
declare -A VARIANT_PORT VARIANT_KEY VARIANT_LABEL
for name in $BENCH_VARIANTS; do
    if ! bench_config "$name" "$TMP" "$MOCK_PORT" "$BUILD"; then
        echo "bench: the plugins of the $name row are not built: left out" >&2
        continue
    fi
    VARIANT_LABEL[$name]=$BENCH_LABEL
    if [ "$BENCH_KEYED" = 1 ]; then
        VARIANT_KEY[$name]=$("$SLUICE_BIN" keys create --name bench -c "$TMP/sluice-$name.json" 2>"$TMP/keys.err") ||
            { cat "$TMP/keys.err" >&2; die "sluice keys create failed"; }
    fi
    "${SERVER_CPU[@]}" "$SLUICE_BIN" -c "$TMP/sluice-$name.json" >"$TMP/sluice-$name.out" 2>&1 &
    pid=$!
    PIDS+=($pid)
    port=$(wait_for_line "$TMP/sluice-$name.out" 'listening on 127\.0\.0\.1:[0-9]+' "$pid" |
        sed 's/.*://') || { cat "$TMP/sluice-$name.out" >&2; die "sluice ($name) did not start"; }
    VARIANT_PORT[$name]=$port
done
SLUICE_PORT=${VARIANT_PORT[sluice]}

PATH_CHAT=/v1/chat/completions
DIRECT_URL=http://127.0.0.1:$MOCK_PORT$PATH_CHAT
NGINX_URL=http://127.0.0.1:$NGINX_PORT$PATH_CHAT
wait_ok "$DIRECT_URL" "$CHAT_BODY" || die "the mock does not answer"
wait_ok "$NGINX_URL" "$CHAT_BODY" || { cat "$TMP/nginx/error.log" >&2; die "nginx does not answer"; }
TARGETS=(direct nginx)
for name in $BENCH_VARIANTS; do
    [ -n "${VARIANT_PORT[$name]:-}" ] || continue
    if wait_ok "http://127.0.0.1:${VARIANT_PORT[$name]}$PATH_CHAT" "$CHAT_BODY" \
        "${VARIANT_KEY[$name]:-}"; then
        TARGETS+=("$name")
    elif [ "$name" = sluice ]; then
        cat "$TMP/sluice-sluice.out" >&2
        die "sluice does not answer"
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
    *) echo "http://127.0.0.1:${VARIANT_PORT[$1]}$PATH_CHAT" ;;
    esac
}

# auth_of TARGET: the API key its requests carry, if any.
auth_of() {
    echo "${VARIANT_KEY[$1]:-}"
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

# bar TEXT A B OP LIMIT: judges req/s of A over B (chat, 32 connections)
# against LIMIT; silent when either row did not run.
bar() {
    local r verdict
    [ -n "${RPS[chat $2 32]:-}" ] && [ -n "${RPS[chat $3 32]:-}" ] || return 0
    r=$(awk -v a="${RPS[chat $2 32]}" -v b="${RPS[chat $3 32]}" \
        'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }')
    verdict=$(awk -v r="$r" -v l="$5" -v op="$4" \
        'BEGIN { ok = r != "n/a" && (op == ">=" ? r >= l : r <= l); print ok ? "PASS" : "FAIL" }')
    printf '%s req/s, chat, 32 conns: %s   (bar %s %s)  %s\n' "$1" "$r" "$4" "$5" "$verdict"
}

us_to_ms() { awk -v u="$1" 'BEGIN { printf "%.3f", u / 1000 }'; }

report() {
    local key kind target conns
    echo "Sluice benchmark, $(date -u +%Y-%m-%dT%H:%M:%SZ), $(nproc) cores," \
        "$("$SLUICE_BIN" --version), $("$NGINX" -v 2>&1 | sed 's/.*: //')," \
        "1 worker each, $([ ${#SERVER_CPU[@]} -gt 0 ] && echo "wrk on CPU 0, servers on CPU 1" || echo "not pinned")"
    for name in $BENCH_VARIANTS; do
        [ -z "${VARIANT_LABEL[$name]:-}" ] || echo "$name = sluice with ${VARIANT_LABEL[$name]}"
    done
    echo
    printf '%-7s %-8s %6s %10s %10s %10s %7s\n' kind target conns 'req/s' 'p50 ms' 'p99 ms' errors
    for key in "${ROWS[@]}"; do
        read -r kind target conns <<<"$key"
        printf '%-7s %-8s %6s %10s %10s %10s %7s\n' "$kind" "$target" "$conns" \
            "${RPS[$key]}" "$(us_to_ms "${P50[$key]}")" "$(us_to_ms "${P99[$key]}")" \
            "${ERR[$key]}"
    done
    echo

    local added_s added_n lat verdict
    bar "throughput ratio  sluice/nginx" sluice nginx ">=" 0.5
    bar "plugins ratio  sluice+${VARIANT_LABEL[plugins]:-}/nginx" plugins nginx ">=" 0.45
    bar "plugins cost  sluice+${VARIANT_LABEL[plugins]:-}/sluice pass-through" plugins sluice ">=" 0.90
    bar "observability cost  sluice (metrics, request log, ledger)/bare" sluice bare ">=" 0.95
    bar "full pipeline ratio  sluice+${VARIANT_LABEL[pipeline]:-}/nginx" pipeline nginx ">=" 0.4
    bar "cache hit ratio  sluice cache hits/nginx" cachehit nginx ">=" 1.0
    bar "Lua transform ratio  sluice+lua/nginx" lua nginx ">=" 0.4
    bar "Lua transform cost  sluice+lua/sluice pass-through" lua sluice ">=" 0.85

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
