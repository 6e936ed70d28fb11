"""Seeds tenants for the report benchmarks through the admin and SCIM APIs.

Usage: seed_tenants.py BASE ADMIN TENANTS USERS_PER_TENANT
Creates TENANTS tenants, gives each two subscriptions (products bench-a and bench-b, soft,
seats 4) in one model, then USERS_PER_TENANT users in each (so each holds two licenses).
"""
import http.client
import json
import sys
import urllib.parse

base, admin, n_tenants, n_users = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
u = urllib.parse.urlparse(base)
conn = http.client.HTTPConnection(u.hostname, u.port)


def call(method, path, body=None, token=admin):
    conn.request(method, path, body=json.dumps(body) if body is not None else None,
                 headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    r = conn.getresponse()
    data = r.read()
    if r.status >= 300:
        raise SystemExit(f"{method} {path}: {r.status} {data[:300]!r}")
    return json.loads(data) if data else None


ids = [call("POST", "/api/v1/tenants", {"name": f"Tenant {i:05d}"})["id"] for i in range(n_tenants)]
plans = [{"key": "pro", "rank": 0, "features": ["x"]}]
sub = lambda p, i: {"product": p, "plan": "pro", "seats": 4, "enforcement": "soft",
                    "starts_at": "2026-01-01T00:00:00Z",
                    "ends_at": f"2027-{1 + i % 12:02d}-15T00:00:00Z"}
call("PUT", "/api/v1/model", {
    "products": [{"key": "bench-a", "name": "A", "plans": plans},
                 {"key": "bench-b", "name": "B", "plans": plans}],
    "tenants": [{"id": t, "rules": [], "subscriptions": [sub("bench-a", i), sub("bench-b", i)]}
                for i, t in enumerate(ids)],
})
for t in ids:
    token = call("POST", f"/api/v1/tenants/{t}/scim-tokens", {"name": "bench"})["token"]
    for j in range(n_users):
        call("POST", "/scim/v2/Users",
             {"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"], "userName": f"u{j}@bench.test"},
             token=token)
print(len(ids))
