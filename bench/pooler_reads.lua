-- wrk script: GET /messages/{id} over the first 100 messages a warm-up run of ingest_realistic.lua stored
-- (its ids are <RUN_ID>-t0-<n>).
local run = os.getenv("RUN_ID") or "r"

function init(args)
  math.randomseed(os.time() + math.floor(os.clock() * 1000000))
end

request = function()
  return wrk.format("GET", "/messages/" .. run .. "-t0-" .. math.random(1, 100))
end
