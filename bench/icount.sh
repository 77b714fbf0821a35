#!/usr/bin/env bash
# Instructions per request, counted by callgrind: the repeatable twin of
# run.sh. Wall-clock numbers move with whatever else the machine runs;
# instruction counts of the same binary and inputs do not, so this is the
# measure to compare two commits with on a busy box. Each variant of
# variants.sh runs under callgrind (all its threads) in front of the mock
# (not counted); one keep-alive client sends 200 warm-up requests, then N
# counted ones, chat and streaming.
#
# usage: bench/icount.sh BUILD_DIR [VARIANT...]   (make bench-icount)
# env:   ICOUNT_REQUESTS (default 1000), ICOUNT_STREAM=0 to skip streams
set -uo pipefail

BUILD=${1:?usage: bench/icount.sh BUILD_DIR [VARIANT...]}
BUILD=$(cd "$BUILD" && pwd)
shift
HERE=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=bench/variants.sh
. "$HERE/variants.sh"
N=${ICOUNT_REQUESTS:-1000}
STREAM=${ICOUNT_STREAM:-1}
VARIANTS=("$@")
[ ${#VARIANTS[@]} -gt 0 ] || read -r -a VARIANTS <<<"$BENCH_VARIANTS"
CHAT_BODY='{"model":"bench","messages":[{"role":"user","content":"hello from the benchmark"}]}'
STREAM_BODY='{"model":"bench","stream":true,"messages":[{"role":"user","content":"one two three four five six seven eight"}]}'

for t in valgrind callgrind_control callgrind_annotate python3; do
    command -v $t >/dev/null || { echo "icount: $t is missing (apt-get install valgrind python3)" >&2; exit 1; }
done
TMP=$(mktemp -d /tmp/sluice-icount.XXXXXX)
MOCK_PID=""
trap '[ -n "$MOCK_PID" ] && kill $MOCK_PID 2>/dev/null; rm -rf "$TMP"' EXIT

"$BUILD/tests/mock/sluice-mock" --port 0 --threads 1 >"$TMP/mock.out" 2>&1 &
MOCK_PID=$!
for _ in $(seq 100); do grep -q READY "$TMP/mock.out" && break; sleep 0.05; done
MOCK_PORT=$(awk '/READY/ {print $2; exit}' "$TMP/mock.out")
[ -n "$MOCK_PORT" ] || { echo "icount: the mock did not start" >&2; exit 1; }

# count NAME BODY: instructions per request of variant NAME, or "-".
count() {
    local name=$1 body=$2 key="" pid port total=0 f t
    rm -rf "$TMP/data-$name" "$TMP"/cg.*
    if [ "$BENCH_KEYED" = 1 ]; then
        key=$("$BUILD/core/sluice" keys create --name bench -c "$TMP/sluice-$name.json" 2>/dev/null) ||
            { echo -; return; }
    fi
    valgrind --tool=callgrind --callgrind-out-file="$TMP/cg.%p" \
        "$BUILD/core/sluice" -c "$TMP/sluice-$name.json" >"$TMP/$name.out" 2>&1 &
    pid=$!
    for _ in $(seq 200); do
        grep -q 'listening on' "$TMP/$name.out" && break
        sleep 0.1
    done
    port=$(grep -o 'listening on 127\.0\.0\.1:[0-9]*' "$TMP/$name.out" | head -1 | sed 's/.*://')
    if [ -z "$port" ] ||
        ! python3 "$HERE/icount_client.py" "$port" "$N" "$key" "$body" "$pid" >&2; then
        kill $pid 2>/dev/null
        wait $pid 2>/dev/null
        echo -
        return
    fi
    kill $pid
    wait $pid 2>/dev/null
    for f in "$TMP"/cg.$pid.*; do # the dump made after the counted requests
        t=$(callgrind_annotate "$f" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1}')
        total=$((total + ${t:-0}))
    done
    echo $((total / N))
}

printf '%-9s %12s %12s\n' variant 'chat instr' 'stream instr'
for name in "${VARIANTS[@]}"; do
    bench_config "$name" "$TMP" "$MOCK_PORT" "$BUILD" || { printf '%-9s %12s\n' "$name" "not built"; continue; }
    chat=$(count "$name" "$CHAT_BODY")
    stream=-
    [ "$STREAM" = 1 ] && [ "$name" != cachehit ] && stream=$(count "$name" "$STREAM_BODY")
    printf '%-9s %12s %12s\n' "$name" "$chat" "$stream"
done
echo "(instructions per request, all gateway threads, $N requests after 200 warm-up; $(git -C "$HERE" rev-parse --short HEAD 2>/dev/null || echo '?'))"
