-- fixed.lua - wrk script: one repeated URL (the response-cache path of /reconstruct).
-- env: FIXED_PATH (default "/"), e.g. "/reconstruct?id=ID&k=50".
local path = os.getenv("FIXED_PATH") or "/"
local threads = {}
non200 = 0  -- global: done() reads it per thread with t:get

function setup(thread)
  table.insert(threads, thread)
end

function request()
  return wrk.format("GET", path)
end

function response(status, headers, body)
  if status ~= 200 then non200 = non200 + 1 end
end

function done(summary, latency, requests)
  local bad = 0
  for _, t in ipairs(threads) do bad = bad + (t:get("non200") or 0) end
  io.write(string.format(
    "RESULT {\"requests\": %d, \"duration_s\": %.3f, \"rps\": %.1f, \"p50_ms\": %.3f, \"p99_ms\": %.3f, " ..
    "\"max_ms\": %.3f, \"socket_errors\": %d, \"non200\": %d}\n",
    summary.requests, summary.duration / 1e6, summary.requests / (summary.duration / 1e6),
    latency:percentile(50) / 1000, latency:percentile(99) / 1000, latency.max / 1000,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout, bad))
end
