-- wrk script: read requests chosen by the QUERY environment variable, over the seeded ids.
local kind = os.getenv("QUERY") or "one"
local total = tonumber(os.getenv("MESSAGES") or "1000000")
local campaigns = tonumber(os.getenv("CAMPAIGNS") or "1000")

function init(args)
  math.randomseed(os.time() + math.floor(os.clock() * 1000000))
end

local function id() return "q" .. math.random(1, total) end

request = function()
  if kind == "one" then
    return wrk.format("GET", "/messages/" .. id())
  elseif kind == "ids" then
    local ids = {}
    for i = 1, 100 do ids[i] = id() end
    return wrk.format("GET", "/messages?ids=" .. table.concat(ids, ","))
  elseif kind == "page" then
    return wrk.format("GET", "/messages?campaign=c" .. math.random(1, campaigns) .. "&status=DELIVRD&limit=50")
  else
    return wrk.format("GET", "/campaigns/big")
  end
end
