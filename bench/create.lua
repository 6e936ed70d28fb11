-- POST /Users with a unique userName per request.
local counter = 0
local threads = {}
function setup(thread)
  thread:set("tid", #threads)
  table.insert(threads, thread)
end
function init(args)
  token = args[1]
  prefix = args[2] or "bench"
end
request = function()
  counter = counter + 1
  local body = string.format('{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"userName":"%s-%d-%d@bench.example","active":true,"name":{"givenName":"Bench","familyName":"User"},"emails":[{"value":"%s-%d-%d@bench.example","type":"work","primary":true}]}', prefix, tid, counter, prefix, tid, counter)
  return wrk.format("POST", "/scim/v2/Users", {["Authorization"] = "Bearer " .. token, ["Content-Type"] = "application/scim+json"}, body)
end

-- The summary line run.sh reads (shared by every scenario).
dofile("bench/report.lua")
