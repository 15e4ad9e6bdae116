-- wrk script for `make soak`: multipart POST of one audio file to
-- /v1/audio/transcriptions, latency recorded per HTTP status.
--
-- Run with as many threads as connections (-t N -c N): each wrk thread then
-- owns one connection, so request() and response() strictly alternate and
-- the time between them is that request's latency (clock_gettime through
-- LuaJIT's ffi, monotonic, ns resolution). wrk's own latency histogram does
-- not split by status; this one does.
--
-- Environment:
--   SOAK_FILE           the audio file to upload (required)
--   SOAK_OUT            where done() writes the JSON summary (required)
--   SOAK_BUSY_DELAY_MS  pause of a connection after a 429/503 answer before
--                       its next request (default 0: retry at once)
--   SOAK_FIELDS         extra form fields, "k=v&k2=v2" (optional)
--
-- Latencies go into log-spaced buckets (1 % wide) per status; done() merges
-- the threads' buckets and writes counts, p50/p90/p99/p99.9/max per status.

local ffi = require("ffi")
ffi.cdef [[
  typedef struct { long tv_sec; long tv_nsec; } soak_timespec;
  int clock_gettime(int clk_id, soak_timespec *tp);
]]
local ts = ffi.new("soak_timespec")
local function now_us()
  ffi.C.clock_gettime(1, ts) -- CLOCK_MONOTONIC
  return tonumber(ts.tv_sec) * 1e6 + tonumber(ts.tv_nsec) / 1e3
end

local LOG_STEP = math.log(1.01)
local function bucket(us)
  if us < 1 then us = 1 end
  return math.floor(math.log(us) / LOG_STEP)
end
local function bucket_value(b)
  return math.exp((b + 0.5) * LOG_STEP)
end

-- main state: keep the threads to read their tables in done()
local threads = {}
function setup(thread)
  thread:set("id", #threads + 1)
  table.insert(threads, thread)
end

-- per-thread state (globals of each thread's Lua state)
hist = {}    -- "status:bucket" -> count
counts = {}  -- "status" -> count
maxes = {}   -- "status" -> max latency us
sums = {}    -- "status" -> sum of latencies us
sent = 0
local req
local t0 = 0
local last_status = 0
local busy_delay = 0

function init(args)
  local path = os.getenv("SOAK_FILE")
  local f = assert(io.open(path, "rb"), "cannot open SOAK_FILE " .. tostring(path))
  local data = f:read("*a")
  f:close()
  busy_delay = tonumber(os.getenv("SOAK_BUSY_DELAY_MS") or "0") or 0
  local boundary = "----soak" .. tostring(math.random(1e9))
  local parts = {}
  local fields = os.getenv("SOAK_FIELDS") or ""
  for k, v in string.gmatch(fields, "([^&=]+)=([^&]*)") do
    table.insert(parts, "--" .. boundary .. "\r\nContent-Disposition: form-data; name=\"" .. k .. "\"\r\n\r\n" .. v .. "\r\n")
  end
  local name = string.match(path, "([^/]+)$")
  table.insert(parts, "--" .. boundary .. "\r\nContent-Disposition: form-data; name=\"file\"; filename=\"" .. name ..
    "\"\r\nContent-Type: application/octet-stream\r\n\r\n" .. data .. "\r\n")
  table.insert(parts, "--" .. boundary .. "--\r\n")
  local body = table.concat(parts)
  req = wrk.format("POST", "/v1/audio/transcriptions",
    { ["Content-Type"] = "multipart/form-data; boundary=" .. boundary }, body)
end

function request()
  sent = sent + 1
  t0 = now_us()
  return req
end

function response(status, headers, body)
  local us = now_us() - t0
  local s = tostring(status)
  local key = s .. ":" .. bucket(us)
  hist[key] = (hist[key] or 0) + 1
  counts[s] = (counts[s] or 0) + 1
  sums[s] = (sums[s] or 0) + us
  if us > (maxes[s] or 0) then maxes[s] = us end
  last_status = status
end

function delay()
  if busy_delay > 0 and (last_status == 429 or last_status == 503) then
    return busy_delay
  end
  return 0
end

local function percentile(buckets, total, q)
  local target = q * total
  local acc = 0
  for _, e in ipairs(buckets) do
    acc = acc + e[2]
    if acc >= target then return bucket_value(e[1]) end
  end
  return 0
end

function done(summary, latency, requests)
  local merged, cnt, mx, sm, total_sent = {}, {}, {}, {}, 0
  for _, t in ipairs(threads) do
    for k, n in pairs(t:get("hist") or {}) do merged[k] = (merged[k] or 0) + n end
    for k, n in pairs(t:get("counts") or {}) do cnt[k] = (cnt[k] or 0) + n end
    for k, n in pairs(t:get("sums") or {}) do sm[k] = (sm[k] or 0) + n end
    for k, n in pairs(t:get("maxes") or {}) do if n > (mx[k] or 0) then mx[k] = n end end
    total_sent = total_sent + (t:get("sent") or 0)
  end
  local per = {}
  for k, n in pairs(merged) do
    local s, b = string.match(k, "^(%d+):(-?%d+)$")
    per[s] = per[s] or {}
    table.insert(per[s], { tonumber(b), n })
  end
  local out = {}
  table.insert(out, "{")
  table.insert(out, string.format('"duration_us": %d, "requests_sent": %d, "responses": %d, "bytes": %d,',
    summary.duration, total_sent, summary.requests, summary.bytes))
  table.insert(out, string.format('"errors": {"connect": %d, "read": %d, "write": %d, "timeout": %d, "status": %d},',
    summary.errors.connect, summary.errors.read, summary.errors.write, summary.errors.timeout, summary.errors.status))
  table.insert(out, '"by_status": {')
  local first = true
  for s, list in pairs(per) do
    table.sort(list, function(a, b) return a[1] < b[1] end)
    local n = cnt[s]
    if not first then table.insert(out, ",") end
    first = false
    table.insert(out, string.format(
      '"%s": {"count": %d, "mean_ms": %.3f, "p50_ms": %.3f, "p90_ms": %.3f, "p99_ms": %.3f, "p999_ms": %.3f, "max_ms": %.3f}',
      s, n, sm[s] / n / 1e3, percentile(list, n, 0.50) / 1e3, percentile(list, n, 0.90) / 1e3,
      percentile(list, n, 0.99) / 1e3, percentile(list, n, 0.999) / 1e3, mx[s] / 1e3))
  end
  table.insert(out, "}}")
  local path = os.getenv("SOAK_OUT")
  local f = assert(io.open(path, "w"))
  f:write(table.concat(out, "\n"), "\n")
  f:close()
end
