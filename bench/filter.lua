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
-- Prints one machine-readable line after a run.
done = function(summary, latency, requests)
  local errors = summary.errors.status + summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout
  io.write(string.format("RESULT rps=%.1f p50_ms=%.3f p99_ms=%.3f requests=%d errors=%d\n",
    summary.requests / (summary.duration / 1e6), latency:percentile(50) / 1000, latency:percentile(99) / 1000, summary.requests, errors))
end
