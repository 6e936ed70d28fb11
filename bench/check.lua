-- POST /api/v1/check for seeded users (seed<i>@bench.example): a feature granted, a feature
-- lacking and a limit in turn; or, with mode "permissions", a permission granted and one
-- lacking in turn.
local asks = {'"feature":"export"', '"feature":"sso"', '"limit":"projects"'}
function init(args)
  key = args[1]
  users = tonumber(args[2])
  path = args[3] or "/api/v1/check"
  if args[4] == "permissions" then
    asks = {'"permission":"billing.manage"', '"permission":"nothing.here"'}
  end
  n = 0
  math.randomseed(os.time() + (tonumber(tostring({}):sub(8), 16) or 0))
end
request = function()
  n = n + 1
  local body = string.format('{"user":"seed%d@bench.example",%s}', math.random(0, users - 1), asks[n % #asks + 1])
  return wrk.format("POST", path, {["Authorization"] = "Bearer " .. key, ["Content-Type"] = "application/json"}, body)
end

dofile("bench/report.lua")
