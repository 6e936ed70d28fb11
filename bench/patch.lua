-- PATCH active on ids read from a file, alternating false/true (Entra's deprovisioning call).
function init(args)
  token = args[1]
  ids = {}
  for line in io.lines(args[2]) do table.insert(ids, line) end
  i = 0
  flip = 0
end
request = function()
  i = i % #ids + 1
  if i == 1 then flip = 1 - flip end
  local v = (flip == 1) and "False" or "True"
  local body = '{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],"Operations":[{"op":"Replace","path":"active","value":"' .. v .. '"}]}'
  return wrk.format("PATCH", "/scim/v2/Users/" .. ids[i] .. "?attributes=id", {["Authorization"] = "Bearer " .. token, ["Content-Type"] = "application/scim+json"}, body)
end

-- The summary line run.sh reads (shared by every scenario).
dofile("bench/report.lua")
