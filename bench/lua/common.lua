-- Shared by the wrk scripts: POST a chat completion with the bearer key from $BENCH_API_KEY,
-- and print one JSON line (prefixed "BENCH_JSON ") with latency percentiles and errors in
-- done(), which bench/run.py parses. Latencies are in microseconds.
local M = {}

function M.setup(body)
  wrk.method = "POST"
  wrk.path = os.getenv("BENCH_PATH") or "/v1/chat/completions"
  wrk.body = body
  wrk.headers["Content-Type"] = "application/json"
  local key = os.getenv("BENCH_API_KEY")
  if key and key ~= "" then
    wrk.headers["Authorization"] = "Bearer " .. key
  end
end

function M.done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests":%d,"duration_us":%d,"bytes":%d,'
    .. '"p50_us":%d,"p90_us":%d,"p99_us":%d,"max_us":%d,"mean_us":%.1f,'
    .. '"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d}\n',
    summary.requests, summary.duration, summary.bytes,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.max, latency.mean,
    e.connect, e.read, e.write, e.status, e.timeout))
end

return M
