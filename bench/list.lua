-- GET /Users?startIndex=K&count=100 for random pages.
function init(args)
  token = args[1]
  n = tonumber(args[2])
  math.randomseed(os.time())
end
request = function()
  local start = math.random(0, math.floor(n / 100) - 1) * 100 + 1
  return wrk.format("GET", "/scim/v2/Users?count=100&startIndex=" .. start, {["Authorization"] = "Bearer " .. token})
end

-- The summary line run.sh reads (shared by every scenario).
dofile("bench/report.lua")
