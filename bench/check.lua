-- POST /api/v1/check for seeded users (seed<i>@bench.example), a feature or a limit in turn.
function init(args)
  key = args[1]
  users = tonumber(args[2])
  path = args[3] or "/api/v1/check"
  n = 0
  math.randomseed(os.time() + (tonumber(tostring({}):sub(8), 16) or 0))
end
local asks = {'"feature":"export"', '"feature":"sso"', '"limit":"projects"'}
request = function()
  n = n + 1
  local body = string.format('{"user":"seed%d@bench.example",%s}', math.random(0, users - 1), asks[n % 3 + 1])
  return wrk.format("POST", path, {["Authorization"] = "Bearer " .. key, ["Content-Type"] = "application/json"}, body)
end

dofile("bench/report.lua")
