-- rotate_k.lua - wrk script: /reconstruct with k rotating over 1..KMAX, no response cache.
-- env: SLICE_ID (slice id), KMAX (default 170), BACKEND (optional). Each wrk thread starts
-- at a different k so parallel connections do not ask for the same reconstruction.
-- SLICE_IDS (comma-separated, instead of SLICE_ID) rotates over slices too (a proxy hashing
-- on the id spreads them over replicas); CACHED=1 keeps k at 20 and the response cache on.
local ids = {}
for id in string.gmatch(os.getenv("SLICE_IDS") or os.getenv("SLICE_ID") or "x", "[^,]+") do
  table.insert(ids, id)
end
local kmax = tonumber(os.getenv("KMAX") or "170")
local backend = os.getenv("BACKEND")
local cached = os.getenv("CACHED") == "1"
local counter = 0
tid = 0  -- set per thread by setup()
local threads = {}

function setup(thread)
  thread:set("tid", #threads)
  table.insert(threads, thread)
end

function init(args)
  counter = tid * 37
  if not cached then wrk.headers["Cache-Control"] = "no-cache" end
end

function request()
  counter = counter + 1
  local k = cached and 20 or (counter % kmax) + 1
  local path = "/reconstruct?id=" .. ids[(counter % #ids) + 1] .. "&k=" .. k
  if backend and backend ~= "" then path = path .. "&backend=" .. backend end
  return wrk.format("GET", path)
end

-- status counts per thread, summed in done()
non200 = 0  -- global: done() reads it per thread with t:get
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
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    bad))
end
