#!/usr/bin/env bash
# Builds Sluice twice (release, and ASan+UBSan) and runs every test suite on
# each: the unit tests and fuzz corpus replay (make check), the integration
# tests (pytest), the mock upstream's self-tests and the openai SDK client
# tests (node), and on the release build the dashboard in headless Chromium;
# then make distcheck once. It runs everything even after a
# failure and ends with a summary that repeats each runner's own totals, so
# the last lines of the output tell the whole story (CI reads them).
#
# usage: tests/run-all.sh [SRC] [BUILD_NAME...]
#   SRC         the source tree (default: the tree this script is in)
#   BUILD_NAME  release and/or asan (default: both); builds go to SRC/build/
# Installs missing Debian packages first when run as root.
set -uo pipefail

SRC=$(cd "$(dirname "$0")/.." && pwd)
if [ $# -gt 0 ] && [ -d "$1" ]; then
    SRC=$(cd "$1" && pwd)
    shift
fi
BUILDS=("$@")
[ ${#BUILDS[@]} -gt 0 ] || BUILDS=(release asan)
for b in "${BUILDS[@]}"; do
    case $b in
    release | asan) ;;
    *)
        echo "run-all: unknown build '$b' (release or asan)" >&2
        exit 2
        ;;
    esac
done

JOBS=${JOBS:-2}
LOGS=$SRC/build/logs
START=$SECONDS
# One entry per step, same index in each: name, status, seconds, and the
# runner's own summary lines.
S_NAME=()
S_STATUS=()
S_SECS=()
S_LINES=()
FAILED=()

say() { printf '\n=== %s\n' "$*"; }

# record NAME STATUS SECONDS [RUNNER_LINES]
record() {
    S_NAME+=("$1")
    S_STATUS+=("$2")
    S_SECS+=("$3")
    S_LINES+=("${4:-}")
    [ "$2" = ok ] || FAILED+=("$1")
}

# ---- (a) Debian packages ----------------------------------------------------

# pcre2.h refuses to be included without a code unit width.
have_header() {
    printf '#include <%s>\n' "$1" |
        cpp -DPCRE2_CODE_UNIT_WIDTH=8 -x c - >/dev/null 2>&1
}

have_fuzzer() {
    command -v clang >/dev/null &&
        printf 'int LLVMFuzzerTestOneInput(const unsigned char *d, unsigned long n) { return 0; }\n' |
        clang -fsanitize=fuzzer -x c - -o /dev/null >/dev/null 2>&1
}

missing_packages() {
    local m=()
    { command -v gcc && command -v make && command -v cpp; } >/dev/null || m+=(build-essential)
    command -v autoreconf >/dev/null || m+=(autoconf)
    command -v automake >/dev/null || m+=(automake)
    command -v libtoolize >/dev/null || m+=(libtool)
    command -v pkg-config >/dev/null || m+=(pkg-config)
    have_header event2/thread.h || m+=(libevent-dev)
    have_header cjson/cJSON.h || m+=(libcjson-dev)
    have_header lmdb.h || m+=(liblmdb-dev)
    have_header luajit-2.1/luajit.h || m+=(libluajit2-5.1-dev)
    have_header openssl/ssl.h || m+=(libssl-dev)
    have_header pcre2.h || m+=(libpcre2-dev)
    printf '#include <stdarg.h>\n#include <stddef.h>\n#include <stdint.h>\n#include <setjmp.h>\n#include <cmocka.h>\n' |
        cpp -x c - >/dev/null 2>&1 || m+=(libcmocka-dev)
    /usr/bin/python3 -c 'import pytest' >/dev/null 2>&1 || m+=(python3-pytest)
    command -v node >/dev/null || m+=(nodejs)
    command -v npm >/dev/null || m+=(npm)
    [ -x /usr/sbin/nginx ] || m+=(nginx)
    command -v wrk >/dev/null || m+=(wrk)
    command -v clang >/dev/null || m+=(clang)
    have_fuzzer || m+=(libclang-rt-14-dev)
    command -v curl >/dev/null || m+=(curl)
    # The dashboard's browser test drives Debian's Chromium (no download).
    [ -x /usr/bin/chromium ] || m+=(chromium)
    echo "${m[@]}"
}

say "checking packages"
MISSING=$(missing_packages)
if [ -n "$MISSING" ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        echo "installing: $MISSING"
        export DEBIAN_FRONTEND=noninteractive
        # shellcheck disable=SC2086
        apt-get update -qq && apt-get install -y -qq --no-install-recommends $MISSING >/dev/null
        STILL=$(missing_packages)
        if [ -z "$STILL" ]; then
            record "packages" ok 0
        else
            echo "still missing after apt-get: $STILL"
            record "packages" "FAIL (missing: $STILL)" 0
        fi
    else
        echo "missing (run as root to install): $MISSING"
        record "packages" "FAIL (missing: $MISSING)" 0
    fi
else
    echo "all present"
fi

# ---- (b) autoreconf ---------------------------------------------------------

mkdir -p "$LOGS"
say "autoreconf -fi"
t=$SECONDS
if (cd "$SRC" && autoreconf -fi) >"$LOGS/autoreconf.log" 2>&1; then
    record autoreconf ok $((SECONDS - t))
else
    tail -n 30 "$LOGS/autoreconf.log"
    record autoreconf FAIL $((SECONDS - t))
fi

# ---- (c) builds -------------------------------------------------------------

configure_flags() {
    case $1 in
    release) echo --enable-werror ;;
    asan) echo --enable-werror --enable-sanitizers ;;
    esac
}

declare -A BUILT
for b in "${BUILDS[@]}"; do
    say "[$b] configure $(configure_flags "$b") && make -j$JOBS"
    t=$SECONDS
    dir=$SRC/build/$b
    mkdir -p "$dir"
    # shellcheck disable=SC2046
    if (cd "$dir" && "$SRC/configure" $(configure_flags "$b") &&
        make -j"$JOBS") >"$LOGS/build-$b.log" 2>&1; then
        BUILT[$b]=1
        echo "built in $((SECONDS - t)) s"
        record "[$b] build" ok $((SECONDS - t))
    else
        BUILT[$b]=0
        grep -E 'error|Error' "$LOGS/build-$b.log" | head -n 40
        tail -n 20 "$LOGS/build-$b.log"
        record "[$b] build" FAIL $((SECONDS - t))
    fi
done

# ---- (d) tests, per build ---------------------------------------------------

# Runs "$@" with its output shown and saved in LOG; sets RC.
run_logged() {
    local log=$1
    shift
    "$@" 2>&1 | tee "$log"
    RC=${PIPESTATUS[0]}
}

# The runner lines of a log matching the extended regex, joined by newlines.
lines_of() { grep -E "$2" "$1" | sed 's/^[[:space:]]*//'; }

PYTEST_SUMMARY='(passed|failed|error|skipped|no tests ran).* in [0-9.]+s'

# The status of a pytest run: its exit code 5 (no tests collected) and a run
# where everything was skipped both fail, since nothing was tested.
pytest_status() {
    if [ "$RC" != 0 ]; then
        echo "FAIL (exit $RC)"
    elif ! grep -Eq "[0-9]+ passed.* in [0-9.]+s" "$1"; then
        echo "FAIL (nothing ran)"
    else
        echo ok
    fi
}

CLIENTS=$SRC/tests/clients
E2E=$SRC/tests/e2e
for b in "${BUILDS[@]}"; do
    dir=$SRC/build/$b
    if [ "${BUILT[$b]}" != 1 ]; then
        for step in "make check" pytest "mock self-tests" node; do
            record "[$b] $step" "FAIL (not built)" 0
        done
        [ "$b" = release ] && record "[$b] dashboard e2e" "FAIL (not built)" 0
        continue
    fi
    san_env=()
    if [ "$b" = asan ]; then
        san_env=(ASAN_OPTIONS=detect_leaks=1:abort_on_error=0
            UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1)
    fi
    bin_env=(SLUICE_BIN="$dir/core/sluice"
        SLUICE_MOCK_BIN="$dir/tests/mock/sluice-mock")

    say "[$b] make check"
    t=$SECONDS
    run_logged "$LOGS/check-$b.log" env "${san_env[@]}" make -C "$dir" -j"$JOBS" check
    if [ "$RC" != 0 ] && [ -f "$dir/test-suite.log" ]; then
        echo "--- $dir/test-suite.log"
        cat "$dir/test-suite.log"
    fi
    record "[$b] make check" "$([ "$RC" = 0 ] && echo ok || echo "FAIL (exit $RC)")" \
        $((SECONDS - t)) "$(lines_of "$LOGS/check-$b.log" '^# (TOTAL|PASS|SKIP|XFAIL|FAIL|XPASS|ERROR):')"

    say "[$b] pytest tests/integration"
    t=$SECONDS
    run_logged "$LOGS/pytest-$b.log" env -C "$dir" "${san_env[@]}" "${bin_env[@]}" \
        /usr/bin/python3 -m pytest -q -p no:cacheprovider "$SRC/tests/integration"
    record "[$b] pytest" "$(pytest_status "$LOGS/pytest-$b.log")" \
        $((SECONDS - t)) "$(lines_of "$LOGS/pytest-$b.log" "$PYTEST_SUMMARY")"

    say "[$b] pytest tests/mock (the mock upstream's self-tests)"
    t=$SECONDS
    run_logged "$LOGS/mock-$b.log" env -C "$dir" "${san_env[@]}" \
        SLUICE_MOCK="$dir/tests/mock/sluice-mock" \
        /usr/bin/python3 -m pytest -q -p no:cacheprovider "$SRC/tests/mock"
    record "[$b] mock self-tests" "$(pytest_status "$LOGS/mock-$b.log")" \
        $((SECONDS - t)) "$(lines_of "$LOGS/mock-$b.log" "$PYTEST_SUMMARY")"

    say "[$b] node --test tests/clients/test/ (openai SDK)"
    t=$SECONDS
    if [ ! -d "$CLIENTS/node_modules/openai" ] ||
        [ ! -d "$CLIENTS/node_modules/@anthropic-ai/sdk" ]; then
        echo "npm ci in $CLIENTS"
        (cd "$CLIENTS" && npm ci --no-audit --no-fund) >"$LOGS/npm-ci.log" 2>&1 ||
            tail -n 20 "$LOGS/npm-ci.log"
    fi
    run_logged "$LOGS/node-$b.log" env -C "$SRC" "${san_env[@]}" "${bin_env[@]}" \
        node --test --test-reporter=tap tests/clients/test/
    record "[$b] node" "$([ "$RC" = 0 ] && echo ok || echo "FAIL (exit $RC)")" \
        $((SECONDS - t)) "$(lines_of "$LOGS/node-$b.log" '^# (tests|pass|fail|cancelled) [0-9]+$')"

    # The dashboard in headless Chromium: once, on the release build (a
    # browser under ASan adds minutes and tests nothing more of the page).
    if [ "$b" = release ]; then
        say "[$b] node --test tests/e2e/test/ (dashboard in Chromium)"
        t=$SECONDS
        if [ ! -d "$E2E/node_modules/playwright-core" ]; then
            echo "npm ci in $E2E"
            (cd "$E2E" && npm ci --no-audit --no-fund) >"$LOGS/npm-ci-e2e.log" 2>&1 ||
                tail -n 20 "$LOGS/npm-ci-e2e.log"
        fi
        run_logged "$LOGS/e2e-$b.log" env -C "$SRC" "${bin_env[@]}" \
            SLUICE_ARTIFACTS="$SRC/build/artifacts" \
            node --test --test-reporter=tap tests/e2e/test/
        record "[$b] dashboard e2e" "$([ "$RC" = 0 ] && echo ok || echo "FAIL (exit $RC)")" \
            $((SECONDS - t)) "$(lines_of "$LOGS/e2e-$b.log" '^# (tests|pass|fail|cancelled) [0-9]+$|^# .*screenshot: ')"
    fi
done

# ---- (e) distcheck ----------------------------------------------------------

for b in "${BUILDS[@]}"; do
    [ "$b" = release ] || continue
    say "[release] make distcheck (log: build/logs/distcheck.log)"
    t=$SECONDS
    if [ "${BUILT[release]}" != 1 ]; then
        record "[release] distcheck" "FAIL (not built)" 0
    elif make -C "$SRC/build/release" -j"$JOBS" distcheck >"$LOGS/distcheck.log" 2>&1; then
        record "[release] distcheck" ok $((SECONDS - t)) \
            "$(grep -E 'archives ready for distribution' "$LOGS/distcheck.log")"
    else
        tail -n 40 "$LOGS/distcheck.log"
        record "[release] distcheck" FAIL $((SECONDS - t)) \
            "$(lines_of "$LOGS/distcheck.log" '^# (TOTAL|PASS|FAIL|ERROR):')"
    fi
done

# ---- (f) summary ------------------------------------------------------------

say "summary ($((SECONDS - START)) s; logs in build/logs/)"
for i in "${!S_NAME[@]}"; do
    printf '%-26s %-22s %4ss\n' "${S_NAME[$i]}" "${S_STATUS[$i]}" "${S_SECS[$i]}"
    if [ -n "${S_LINES[$i]}" ]; then
        while IFS= read -r l; do
            printf '    %s\n' "$l"
        done <<<"${S_LINES[$i]}"
    fi
done
if [ ${#FAILED[@]} -eq 0 ]; then
    echo "ALL PASSED"
    exit 0
fi
joined=$(printf '%s, ' "${FAILED[@]}")
echo "FAILED: ${joined%, }"
exit 1
