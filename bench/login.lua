-- POST /api/v1/sso/login with ID tokens read from a file (one per line): each thread walks
-- its own share of the file in order, wrapping around.
local tokens = {}
function init(args)
  key = args[1]
  for line in io.lines(args[2]) do tokens[#tokens + 1] = line end
  local threads = tonumber(args[3] or "1")
  n = math.floor(#tokens * (id or 0) / threads)
end
local counter = 0
function setup(thread)
  thread:set("id", counter)
  counter = counter + 1
end
request = function()
  n = n % #tokens + 1
  local body = '{"id_token":"' .. tokens[n] .. '"}'
  return wrk.format("POST", "/api/v1/sso/login", {["Authorization"] = "Bearer " .. key, ["Content-Type"] = "application/json"}, body)
end

dofile("bench/report.lua")
