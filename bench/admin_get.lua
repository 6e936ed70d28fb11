-- GET one admin API path (args: admin token, path), over and over.
function init(args)
  token = args[1]
  path = args[2]
end
request = function()
  return wrk.format("GET", path, {["Authorization"] = "Bearer " .. token})
end

dofile("bench/report.lua")
