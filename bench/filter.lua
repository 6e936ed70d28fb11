-- GET /Users?filter=userName eq "<name>" for random N among the seeded users. The name is
-- seed<N>@bench.example, or args[4] with %d for N (user%d@t0.example.com for scale seeds).
function init(args)
  token = args[1]
  n = tonumber(args[2])
  math.randomseed(os.time() + (tonumber(args[3]) or 0))
  pattern = args[4] or "seed%d@bench.example"
end
request = function()
  local k = math.random(0, n - 1)
  local name = string.format(pattern, k):gsub("@", "%%40")
  local path = '/scim/v2/Users?filter=userName%20eq%20%22' .. name .. '%22'
  return wrk.format("GET", path, {["Authorization"] = "Bearer " .. token})
end

-- The summary line run.sh reads (shared by every scenario).
dofile("bench/report.lua")
