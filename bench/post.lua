-- wrk script: POST a small chat request and print one machine-readable
-- RESULT line at the end (latencies in microseconds), so run.sh need not
-- parse wrk's human-oriented units.
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = os.getenv("BENCH_BODY")
    or '{"model":"bench","messages":[{"role":"user","content":"hello"}]}'
local key = os.getenv("BENCH_AUTH")
if key ~= nil and key ~= "" then
    wrk.headers["Authorization"] = "Bearer " .. key
end

function done(summary, latency, requests)
    local e = summary.errors
    io.write(string.format(
        "RESULT requests=%d duration_us=%d p50_us=%d p99_us=%d "
            .. "errors_connect=%d errors_read=%d errors_write=%d "
            .. "errors_status=%d errors_timeout=%d\n",
        summary.requests, summary.duration,
        latency:percentile(50), latency:percentile(99),
        e.connect, e.read, e.write, e.status, e.timeout))
end
