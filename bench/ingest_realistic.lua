-- wrk script: realistic delivery-report traffic against /dlr/generic.
-- Unique message ids; every message gets ACCEPTD then a final report; about 10% are two-part messages
-- reporting per segment. Counts 2xx answers per thread so the benchmark can check each one is stored.
-- `acked` and `prefix` are globals on purpose: wrk's thread:get/set reach globals only.
local threads = {}
local counter, queue = 0, {}
acked = 0
prefix = prefix or ""

function setup(thread)
  -- RUN_ID keeps ids unique across runs against the same database: a repeated id would be a duplicate.
  thread:set("prefix", string.format("%s-t%d-", os.getenv("RUN_ID") or "r", #threads))
  table.insert(threads, thread)
end

function init(args)
  math.randomseed(os.time() + #prefix)
end

local function next_message()
  counter = counter + 1
  local id = prefix .. counter
  if counter % 10 == 0 then
    return {
      "id=" .. id .. "&status=ACCEPTD&segment=1&segments=2",
      "id=" .. id .. "&status=ACCEPTD&segment=2&segments=2",
      "id=" .. id .. "&status=DELIVRD&segment=1&segments=2",
      "id=" .. id .. "&status=DELIVRD&segment=2&segments=2",
    }
  end
  local final = (counter % 7 == 0) and "UNDELIV" or "DELIVRD"
  return { "id=" .. id .. "&status=ACCEPTD", "id=" .. id .. "&status=" .. final }
end

request = function()
  if #queue == 0 then queue = next_message() end
  local body = table.remove(queue, 1)
  return wrk.format("POST", "/dlr/generic", {["Content-Type"] = "application/x-www-form-urlencoded"}, body)
end

response = function(status, headers, body)
  if status >= 200 and status < 300 then acked = acked + 1 end
end

function done(summary, latency, requests)
  local total = 0
  for _, thread in ipairs(threads) do total = total + thread:get("acked") end
  io.write(string.format("ACKED %d\n", total))
end
