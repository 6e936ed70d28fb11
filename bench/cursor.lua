-- GET /Users?count=100&cursor=C: RFC 9865 cursor pages starting after random users.
-- The cursor is opaque to clients; this script builds one the way seatkeeper encodes its
-- position (hex of the JSON [sort key, id]) so that every request starts at a random place.
function init(args)
  token = args[1]
  ids = {}
  for line in io.lines(args[2]) do table.insert(ids, line) end
  math.randomseed(os.time())
end
local function hex(s)
  return (s:gsub(".", function(c) return string.format("%02x", string.byte(c)) end))
end
request = function()
  local id = ids[math.random(1, #ids)]
  local cursor = hex('[null,"' .. id .. '"]')
  return wrk.format("GET", "/scim/v2/Users?count=100&cursor=" .. cursor, {["Authorization"] = "Bearer " .. token})
end

-- The summary line run.sh reads (shared by every scenario).
dofile("bench/report.lua")
