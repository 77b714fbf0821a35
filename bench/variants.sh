# The gateways the benchmarks compare, one config each; sourced by run.sh
# and icount.sh so both measure the same thing.
#
# bench_config NAME DIR MOCK_PORT BUILD writes DIR/sluice-NAME.json (a
# gateway on a free port, one worker, in front of the mock) and sets
# BENCH_LABEL (what the variant adds) and BENCH_KEYED (1: its requests need
# an API key from `sluice keys create`). Returns 1 when the plugins it needs
# are not built.
#
#   sluice    pass-through: metrics, ledger and request log on (the defaults)
#   bare      the same with metrics, ledger and request log off
#   plugins   auth (when built) + ratelimit on the chat route
#   lua       a Lua transform on the chat route (transform.lua)
#   pipeline  auth, ratelimit, pii, guardrails, cache on its miss path
#   cachehit  the cache alone: after the first request every one is a hit
BENCH_VARIANTS="sluice bare plugins lua pipeline cachehit"
BENCH_HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

bench_config() {
    local name=$1 dir=$2 mock=$3 build=$4 extra="" plugins="" list=""
    local auth="" rl='"ratelimit": {"path": "ratelimit.so",
      "config": {"requests_per_minute": 1000000000,
                 "tokens_per_minute": 1000000000000}}'
    BENCH_LABEL="" BENCH_KEYED=0
    have() { local p; for p; do [ -f "$build/plugins/$p.so" ] || return 1; done; }
    if [ -f "$build/plugins/auth.so" ]; then
        auth='"auth": {"path": "auth.so", "config": {}},'
    fi
    case $name in
    sluice) ;;
    bare)
        extra='"metrics": false, "ledger": false,
  "request_log": {"enabled": false},'
        BENCH_LABEL="metrics, request log and ledger off" ;;
    lua)
        extra="\"routes\": [{\"path\": \"/v1/chat/completions\",
              \"lua\": \"$BENCH_HERE/transform.lua\"}],"
        BENCH_LABEL="a Lua transform (bench/transform.lua edits the prompt and the answer)" ;;
    plugins)
        have ratelimit || return 1
        plugins="$auth $rl"
        list='"ratelimit"'
        BENCH_LABEL="ratelimit"
        if [ -n "$auth" ]; then
            list='"auth", "ratelimit"' BENCH_LABEL="auth + ratelimit" BENCH_KEYED=1
        fi ;;
    pipeline)
        have ratelimit pii guardrails cache || return 1
        plugins="$auth $rl,
    \"pii\": {\"path\": \"pii.so\", \"config\": {}},
    \"guardrails\": {\"path\": \"guardrails.so\", \"config\": {}},
    \"cache\": {\"path\": \"cache.so\", \"config\": {\"max_entry_bytes\": 1}}"
        list='"ratelimit", "pii", "guardrails", "cache"'
        BENCH_LABEL="ratelimit + pii + guardrails + cache (miss)"
        if [ -n "$auth" ]; then
            list="\"auth\", $list" BENCH_LABEL="auth + $BENCH_LABEL" BENCH_KEYED=1
        fi ;;
    cachehit)
        have cache || return 1
        plugins='"cache": {"path": "cache.so", "config": {"scope": "shared"}}'
        list='"cache"'
        BENCH_LABEL="the cache alone, every request a hit" ;;
    *) echo "bench: no variant $name" >&2; return 1 ;;
    esac
    if [ -n "$plugins" ]; then
        extra="\"plugin_dir\": \"$build/plugins\",
  \"plugins\": {$plugins},
  \"routes\": [{\"path\": \"/v1/chat/completions\", \"plugins\": [$list]}],"
    fi
    cat >"$dir/sluice-$name.json" <<JSON
{
  "listen": [{"addr": "127.0.0.1:0"}],
  "workers": 1,
  "data_dir": "$dir/data-$name",
  "providers": {
    "mock": {"type": "openai", "base_url": "http://127.0.0.1:$mock/v1"}
  },
  "models": {"bench": {"targets": [{"provider": "mock", "model": "bench"}]}},
  $extra
  "access_log": "off"
}
JSON
}
