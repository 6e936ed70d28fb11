-- GET /Users?filter=userName eq "seedN@bench.example" for random N among the seeded users.
function init(args)
  token = args[1]
  n = tonumber(args[2])
  math.randomseed(os.time() + (tonumber(args[3]) or 0))
end
request = function()
  local k = math.random(0, n - 1)
  local path = string.format('/scim/v2/Users?filter=userName%%20eq%%20%%22seed%d%%40bench.example%%22', k)
  return wrk.format("GET", path, {["Authorization"] = "Bearer " .. token})
end

-- The summary line run.sh reads (shared by every scenario).
dofile("bench/report.lua")
