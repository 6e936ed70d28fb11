-- GET /Users/{id} for ids read from a file, round robin.
function init(args)
  token = args[1]
  ids = {}
  for line in io.lines(args[2]) do table.insert(ids, line) end
  i = 0
end
request = function()
  i = i % #ids + 1
  return wrk.format("GET", "/scim/v2/Users/" .. ids[i], {["Authorization"] = "Bearer " .. token})
end

-- The summary line run.sh reads (shared by every scenario).
dofile("bench/report.lua")
