-- rotate_ids.lua - wrk script: /reconstruct over several slices (nginx hashes on the id, so
-- one id would reach one replica only). env: SLICE_IDS (comma-separated), KMAX (default 100),
-- COMPUTE=1 sends Cache-Control: no-cache (every request computed), else k is fixed per id
-- (the response-cache path).
local ids = {}
for id in string.gmatch(os.getenv("SLICE_IDS") or "x", "[^,]+") do table.insert(ids, id) end
local kmax = tonumber(os.getenv("KMAX") or "100")
local compute = os.getenv("COMPUTE") == "1"
local counter = 0
tid = 0
local threads = {}
non200 = 0

function setup(thread)
  thread:set("tid", #threads)
  table.insert(threads, thread)
end

function init(args)
  counter = tid * 37
  if compute then wrk.headers["Cache-Control"] = "no-cache" end
end

function request()
  counter = counter + 1
  local id = ids[(counter % #ids) + 1]
  local k = compute and ((counter * 7) % kmax) + 1 or 20
  return wrk.format("GET", "/reconstruct?id=" .. id .. "&k=" .. k)
end

function response(status, headers, body)
  if status ~= 200 then non200 = non200 + 1 end
end

function done(summary, latency, requests)
  local bad = 0
  for _, t in ipairs(threads) do bad = bad + (t:get("non200") or 0) end
  io.write(string.format(
    "RESULT {\"requests\": %d, \"duration_s\": %.3f, \"rps\": %.1f, \"p50_ms\": %.3f, \"p99_ms\": %.3f, " ..
    "\"socket_errors\": %d, \"non200\": %d}\n",
    summary.requests, summary.duration / 1e6, summary.requests / (summary.duration / 1e6),
    latency:percentile(50) / 1000, latency:percentile(99) / 1000,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout, bad))
end
