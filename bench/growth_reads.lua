-- wrk script: reads over what bench/growth.py seeded, chosen by QUERY, spread over every day stored.
-- MESSAGES: how many seeded messages there are (ids g000000001 ...); DAYS and CAMPAIGNS: days of traffic
-- stored and campaigns per day (campaign d<day>-<k>).
local kind = os.getenv("QUERY") or "one"
local total = tonumber(os.getenv("MESSAGES") or "1000000")
local days = tonumber(os.getenv("DAYS") or "1")
local campaigns = tonumber(os.getenv("CAMPAIGNS") or "100")

function init(args)
  math.randomseed(os.time() + math.floor(os.clock() * 1000000))
end

local function campaign()
  return "d" .. math.random(0, days - 1) .. "-" .. math.random(0, campaigns - 1)
end

request = function()
  if kind == "one" then
    return wrk.format("GET", string.format("/messages/g%09d", math.random(1, total)))
  elseif kind == "page" then
    return wrk.format("GET", "/messages?campaign=" .. campaign() .. "&status=DELIVRD&limit=50")
  else
    return wrk.format("GET", "/campaigns/" .. campaign())
  end
end
