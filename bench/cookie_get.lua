-- GET one console path with a session cookie (args: cookie, path), over and over.
function init(args)
  cookie = args[1]
  path = args[2]
end
request = function()
  return wrk.format("GET", path, {["Cookie"] = cookie})
end

dofile("bench/report.lua")
