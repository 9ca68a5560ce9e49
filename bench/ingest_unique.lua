-- wrk script: one generic form report per request, each for a new message id.
local counter = 0
prefix = prefix or ""  -- a global: thread:set reaches globals only

function setup(thread)
  thread:set("prefix", string.format("%x-", math.random(0, 0xffffff)))
end

function init(args)
  -- RUN: a tag per wrk run, for ids new in each run against one database (math.random repeats across runs).
  prefix = (os.getenv("RUN") or "") .. prefix .. string.format("%x-", math.random(0, 0xffffff))
end

request = function()
  counter = counter + 1
  local body = "id=L" .. prefix .. counter .. "&status=DELIVRD"
  return wrk.format("POST", "/dlr/generic", {["Content-Type"] = "application/x-www-form-urlencoded"}, body)
end

-- DELAY_MS pauses each connection that long between its requests (the offered rate then falls as latency
-- grows: bench.retention, sweep and tasks, whose recorded figures were measured so).
local pause = tonumber(os.getenv("DELAY_MS") or "0")
if pause > 0 then
  delay = function() return pause end
end

-- RATE (requests/s, one wrk thread) paces the run: a steady offered load rather than as fast as the server
-- answers. Each request takes the next slot of a schedule kept by the thread's wall clock, so the rate holds
-- whatever the latency (a fixed pause per connection would add to it, and fall short by as much).
local rate = tonumber(os.getenv("RATE") or "0")
if rate > 0 then
  local ffi = require("ffi")
  ffi.cdef[[
    typedef struct { long tv_sec; long tv_nsec; } paced_timespec;
    int clock_gettime(int clock, paced_timespec *now);
  ]]
  local now_ts = ffi.new("paced_timespec")
  local function now_ms()
    ffi.C.clock_gettime(1, now_ts)  -- CLOCK_MONOTONIC
    return tonumber(now_ts.tv_sec) * 1000 + tonumber(now_ts.tv_nsec) / 1e6
  end
  local interval, next_slot = 1000 / rate, nil
  delay = function()
    local t = now_ms()
    -- A connection that was late (the server slow) takes the next free slot, not a burst of missed ones.
    if next_slot == nil or next_slot < t - interval then next_slot = t end
    local slot = next_slot
    next_slot = next_slot + interval
    return math.max(0, math.floor(slot - t))
  end
end
