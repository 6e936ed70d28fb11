#!/usr/bin/env python3
"""PostgreSQL round trips per SCIM request of the soak's Entra-like mix, one request at a time
(bench/round_trips.sh builds the server, starts PostgreSQL and calls this).

A tenant set up as the soak sets up each of its own (one product, a rule giving it to every
active user, 20 users, a group), then for each operation: N requests, one after another, and
the node's seatkeeper_database_round_trips_total before and after. Run twice: without an
entitlement snapshot loaded, and with one (an application checked the tenant first, so every
commit also catches the node's snapshot up, as in the soak).

Usage: bench/round_trips.py PG_URL [--requests N]
"""

import sys
import tempfile
import urllib.parse

import postgres as b

URL = sys.argv[1]
N = b.arg("--requests", 50)
USER = "urn:ietf:params:scim:schemas:core:2.0:User"
GROUP = "urn:ietf:params:scim:schemas:core:2.0:Group"
PATCH = "urn:ietf:params:scim:api:messages:2.0:PatchOp"


def tenant(base, i):
    t = b.http(base, "POST", "/api/v1/tenants", body={"name": f"trips-{i}"})
    tid = t["id"]
    token = b.http(base, "POST", f"/api/v1/tenants/{tid}/scim-tokens", body={"name": "entra"})["token"]
    key = b.http(base, "POST", f"/api/v1/tenants/{tid}/app-keys", body={"name": "app"})
    key = key.get("key") or key.get("token")
    product = f"trips{i}"
    b.http(base, "PUT", "/api/v1/model", body={
        "products": [{"key": product, "name": "Trips", "plans": [{"key": "pro", "rank": 1, "features": ["write"]}]}],
        "tenants": [{"id": tid, "subscriptions": [{"product": product, "plan": "pro", "seats": 1000000,
                                                   "starts_at": "2026-01-01T00:00:00Z", "enforcement": "hard"}],
                     "rules": [{"name": "everyone", "filter": "active eq true", "product": product,
                                "plan": "pro", "priority": 1}]}]})
    users = []
    for u in range(20 + 2 * N):
        v = b.http(base, "POST", "/scim/v2/Users", token, {"schemas": [USER], "userName": f"seed{u}@t{i}.example.com"})
        users.append((v["id"], v["userName"]))
    group = b.http(base, "POST", "/scim/v2/Groups", token, {"schemas": [GROUP], "displayName": "g0"})["id"]
    return dict(token=token, key=key, users=users, group=group, tag=i)


def operations(base, t):
    tok, users, g = t["token"], t["users"], t["group"]
    lookup = lambda i: b.http(base, "GET", "/scim/v2/Users?filter=" + urllib.parse.quote(f'userName eq "{users[i][1]}"'), tok)
    create = lambda i: b.http(base, "POST", "/scim/v2/Users", tok,
                              {"schemas": [USER], "userName": f"new{i}@t{t['tag']}.example.com", "active": True})
    patch = lambda i: b.http(base, "PATCH", f"/scim/v2/Users/{users[i][0]}", tok,
                             {"schemas": [PATCH], "Operations": [{"op": "replace", "path": "displayName", "value": f"User {i}"}]})
    add = lambda i: b.http(base, "PATCH", f"/scim/v2/Groups/{g}", tok,
                           {"schemas": [PATCH], "Operations": [{"op": "add", "path": "members", "value": [{"value": users[i][0]}]}]})
    remove = lambda i: b.http(base, "PATCH", f"/scim/v2/Groups/{g}", tok,
                              {"schemas": [PATCH], "Operations": [{"op": "remove", "path": f'members[value eq "{users[i][0]}"]'}]})
    return [("lookup by filter", lookup), ("create", create), ("PATCH displayName", patch),
            ("member add", add), ("member remove", remove)]


def measure(base, t):
    out = {}
    for name, op in operations(base, t):
        op(0)  # warm the statement cache and the tenant's model
        before = b.round_trips([base])
        for i in range(1, N + 1):
            op(i)
        # The /metrics read itself is not a round trip.
        out[name] = (b.round_trips([base]) - before) / N
    return out


def main():
    work = tempfile.mkdtemp()
    node = b.Node(URL, work, "trips")
    try:
        cold = measure(node.base, tenant(node.base, 0))
        warm_tenant = tenant(node.base, 1)
        b.http(node.base, "POST", "/api/v1/check", warm_tenant["key"],
               {"user": warm_tenant["users"][0][1], "feature": "write"})
        warm = measure(node.base, warm_tenant)
    finally:
        node.stop()
    print(f"\nPostgreSQL round trips per request, one at a time ({N} each)\n")
    print("| operation | without a snapshot loaded | with the tenant's snapshot loaded |")
    print("|---|---|---|")
    for name in cold:
        print(f"| {name} | {cold[name]:.2f} | {warm[name]:.2f} |")


if __name__ == "__main__":
    main()
