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

-- DELAY_MS paces each connection (a steady offered load rather than as fast as the server answers).
local pause = tonumber(os.getenv("DELAY_MS") or "0")
if pause > 0 then
  delay = function() return pause end
end
