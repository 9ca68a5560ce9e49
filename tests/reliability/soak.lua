-- wrk script for the soak test: a steady, paced mix of generic delivery reports and reads.
--
-- wrk 4 has no -R (rate) option, so delay() paces the requests: every call claims the next slot of one
-- schedule shared by the thread's connections (RATE requests per second per wrk thread: run it with -t1),
-- so the rate does not drift with
-- latency. Every READ_EVERY-th request is a read: a seeded message by id, a campaign's statistics, or a
-- campaign's first page. Reports: unique ids, ACCEPTD then a final status, one message in ten in two parts,
-- one report in four as JSON. Environment: RATE, READ_EVERY, RUN_ID (keeps ids unique per window),
-- SEEDS (how many seeded messages `soak-seed-<n>` exist), CAMPAIGNS.
-- `ingested`, `acked`, `non2xx`, `reads` and `prefix` are globals on purpose: thread:get/set reach globals only.
local ffi = require("ffi")
ffi.cdef [[
typedef struct { long tv_sec; long tv_nsec; } dlr_soak_timespec;
int clock_gettime(int clock_id, dlr_soak_timespec *tp);
]]
local CLOCK_MONOTONIC = 1
local now_ts = ffi.new("dlr_soak_timespec")
local function now_ms()
  ffi.C.clock_gettime(CLOCK_MONOTONIC, now_ts)
  return tonumber(now_ts.tv_sec) * 1000 + tonumber(now_ts.tv_nsec) / 1e6
end

local threads = {}
local rate = tonumber(os.getenv("RATE") or "330")
local read_every = tonumber(os.getenv("READ_EVERY") or "11")
local seeds = tonumber(os.getenv("SEEDS") or "1000")
local campaigns = tonumber(os.getenv("CAMPAIGNS") or "10")
local interval, next_at = nil, nil
local counter, sent, queue = 0, 0, {}
ingested, acked, non2xx, reads = 0, 0, 0, 0
prefix = prefix or ""

function setup(thread)
  thread:set("prefix", string.format("soak-%s-t%d-", os.getenv("RUN_ID") or "r", #threads))
  table.insert(threads, thread)
end

function init(args)
  interval = 1000 / rate
  math.randomseed(os.time() + #prefix)
end

function delay()
  local now = now_ms()
  -- After a stall, catch up at most one second's worth: a burst would measure the burst, not the service.
  if next_at == nil or next_at < now - 1000 then next_at = now end
  local wait = next_at - now
  next_at = next_at + interval
  if wait < 0 then wait = 0 end
  return wait
end

local function next_message()
  counter = counter + 1
  local id = prefix .. counter
  local tail = "&campaign=soak-" .. (counter % campaigns) .. "&to=38073" .. string.format("%07d", counter)
  if counter % 10 == 0 then
    return {
      "id=" .. id .. "&status=ACCEPTD&segment=1&segments=2" .. tail,
      "id=" .. id .. "&status=ACCEPTD&segment=2&segments=2" .. tail,
      "id=" .. id .. "&status=DELIVRD&segment=1&segments=2" .. tail,
      "id=" .. id .. "&status=DELIVRD&segment=2&segments=2" .. tail,
    }
  end
  local final = (counter % 7 == 0) and "UNDELIV" or "DELIVRD"
  return { "id=" .. id .. "&status=ACCEPTD" .. tail, "id=" .. id .. "&status=" .. final .. tail }
end

local function as_json(form)
  local fields = {}
  for key, value in string.gmatch(form, "([^&=]+)=([^&]*)") do
    table.insert(fields, string.format('"%s":"%s"', key, value))
  end
  return "{" .. table.concat(fields, ",") .. "}"
end

local function read_request()
  local kind = reads % 3
  reads = reads + 1
  if kind == 0 then
    return wrk.format("GET", "/messages/soak-seed-" .. math.random(0, seeds - 1))
  elseif kind == 1 then
    return wrk.format("GET", "/campaigns/soak-" .. math.random(0, campaigns - 1))
  end
  return wrk.format("GET", "/messages?campaign=soak-" .. math.random(0, campaigns - 1) .. "&limit=50")
end

request = function()
  sent = sent + 1
  if sent % read_every == 0 then return read_request() end
  if #queue == 0 then queue = next_message() end
  local body = table.remove(queue, 1)
  if sent % 4 == 0 then
    return wrk.format("POST", "/dlr/generic", {["Content-Type"] = "application/json"}, as_json(body))
  end
  return wrk.format("POST", "/dlr/generic", {["Content-Type"] = "application/x-www-form-urlencoded"}, body)
end

response = function(status, headers, body)
  if status >= 200 and status < 300 then
    acked = acked + 1
    -- Only an ingest answer says whether the report was applied: that tells reports from reads.
    if string.find(body, '"applied":', 1, true) then ingested = ingested + 1 end
  else
    non2xx = non2xx + 1
  end
end

function done(summary, latency, requests)
  local ok, bad, read, reports = 0, 0, 0, 0
  for _, thread in ipairs(threads) do
    ok = ok + thread:get("acked")
    reports = reports + thread:get("ingested")
    bad = bad + thread:get("non2xx")
    read = read + thread:get("reads")
  end
  local e = summary.errors
  io.write(string.format(
    'SOAK {"requests": %d, "duration_us": %d, "ok": %d, "reports_acked": %d, "non2xx": %d, "reads": %d, ' ..
    '"socket_errors": %d, "timeouts": %d, "p50_us": %d, "p99_us": %d, "max_us": %d}\n',
    summary.requests, summary.duration, ok, reports, bad, read,
    e.connect + e.read + e.write, e.timeout,
    latency:percentile(50), latency:percentile(99), latency.max))
end
