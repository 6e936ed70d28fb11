"""Seeds users seed<i>@bench.example through SCIM /Bulk, 1,000 per request.

Usage: python3 bench/seed.py BASE_URL SCIM_TOKEN USERS [--emails] [--external-ids]
Exits non-zero if any operation is not 201.
"""

import json
import sys
import urllib.request


def main() -> None:
    base, token, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    emails, external = "--emails" in sys.argv[4:], "--external-ids" in sys.argv[4:]
    for start in range(0, n, 1000):
        ops = []
        for i in range(start, min(start + 1000, n)):
            user = {"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
                    "userName": f"seed{i}@bench.example", "active": True}
            if emails:
                user["emails"] = [{"value": f"seed{i}@bench.example", "type": "work"}]
            if external:
                user["externalId"] = f"e{i}"
            ops.append({"method": "POST", "path": "/Users", "bulkId": f"b{i}", "data": user})
        body = json.dumps({"schemas": ["urn:ietf:params:scim:api:messages:2.0:BulkRequest"],
                           "Operations": ops}).encode()
        req = urllib.request.Request(f"{base}/scim/v2/Bulk", data=body, method="POST",
                                     headers={"Authorization": f"Bearer {token}",
                                              "Content-Type": "application/scim+json"})
        with urllib.request.urlopen(req) as r:
            bad = [o for o in json.load(r)["Operations"] if o["status"] != "201"]
            if bad:
                sys.exit(f"seed failed: {bad[:2]}")


if __name__ == "__main__":
    main()
