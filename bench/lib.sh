# Shared by the benchmark scripts (sourced, not run).

# Installs wrk with apt-get if it is missing.
need_wrk() {
  command -v wrk >/dev/null && return
  local sudo=""
  [ "$(id -u)" = 0 ] || sudo=sudo
  $sudo apt-get install -y -qq wrk >/dev/null || { $sudo apt-get update -qq && $sudo apt-get install -y -qq wrk >/dev/null; }
}

# Waits until the server logging to $1 listens, then sets BASE to its URL.
wait_listen() {
  for _ in $(seq 1 200); do grep -q "listening on" "$1" 2>/dev/null && break; sleep 0.1; done
  BASE="http://$(grep -o 'listening on http://[0-9.:]*' "$1" | head -1 | sed 's|listening on http://||')"
}
