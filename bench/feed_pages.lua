-- wrk script: pages of 1000 events from random places in a seeded feed (TX, LO, HI from bench/feed.py).
local tx = os.getenv("TX")
local lo = tonumber(os.getenv("LO"))
local hi = tonumber(os.getenv("HI"))

function init(args)
  math.randomseed(os.time() + math.floor(os.clock() * 1000000))
end

request = function()
  return wrk.format("GET", "/events?limit=1000&after=" .. tx .. "-" .. math.random(lo, hi - 1000))
end
