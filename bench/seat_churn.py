"""Changes seat counts of random tenants while a benchmark reads: the writes a busy vendor's
console sees (seats bought and cut, each one transaction re-deciding a tenant's licenses).

Usage: seat_churn.py BASE ADMIN SECONDS RATE
Every 1/RATE s for SECONDS s, PUTs a subscription of a random tenant (bench-a or bench-b,
seats 2–6, as bench/seed_tenants.py made them). Prints the writes made and their rate.
"""
import http.client
import json
import random
import sys
import time
import urllib.parse

base, admin, seconds, rate = sys.argv[1], sys.argv[2], float(sys.argv[3]), float(sys.argv[4])
u = urllib.parse.urlparse(base)
conn = http.client.HTTPConnection(u.hostname, u.port)


def call(method, path, body=None):
    conn.request(method, path, body=json.dumps(body) if body is not None else None,
                 headers={"Authorization": f"Bearer {admin}", "Content-Type": "application/json"})
    r = conn.getresponse()
    data = r.read()
    if r.status >= 300:
        raise SystemExit(f"{method} {path}: {r.status} {data[:300]!r}")
    return json.loads(data) if data else None


ids = [t["id"] for t in call("GET", "/api/v1/tenants")["tenants"]]
random.seed(7)
done, start = 0, time.monotonic()
while time.monotonic() - start < seconds:
    t, p = random.choice(ids), random.choice(["bench-a", "bench-b"])
    i = random.randrange(12)
    call("PUT", f"/api/v1/tenants/{t}/subscriptions/{p}", {
        "plan": "pro", "seats": random.randint(2, 6), "enforcement": "soft",
        "starts_at": "2026-01-01T00:00:00Z", "ends_at": f"2027-{1 + i:02d}-15T00:00:00Z"})
    done += 1
    next_at = start + done / rate
    time.sleep(max(0.0, next_at - time.monotonic()))
print(f"CHURN writes={done} rate={done / (time.monotonic() - start):.1f}")
