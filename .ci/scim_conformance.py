"""Runs the third-party SCIM conformance tester (scim2-tester, PyPI) against a live server.

Usage: python scim_conformance.py BASE_URL TOKEN
Prints every check with its status and exits non-zero if any check is ERROR or CRITICAL,
or if the tester ran too few checks to mean anything.
"""

import sys
from collections import Counter

from httpx2 import Client
from scim2_client.engines.httpx2 import SyncSCIMClient
from scim2_tester import Status, check_server

FAILING = {Status.ERROR, Status.CRITICAL}


def main() -> int:
    base_url, token = sys.argv[1], sys.argv[2]
    http = Client(base_url=base_url, headers={"Authorization": f"Bearer {token}"}, timeout=30)
    client = SyncSCIMClient(http)
    client.discover()
    results = check_server(client)
    counts = Counter()
    for r in results:
        counts[r.status.name] += 1
        marker = "FAIL" if r.status in FAILING else "    "
        rt = getattr(r, "resource_type", None) or "-"
        print(f"{marker} {r.status.name:<10} {rt:<6} {r.title}" + (f" :: {r.reason}" if r.reason and r.status in FAILING | {Status.DEVIATION} else ""))
    failed = sum(counts[s.name] for s in FAILING)
    print()
    print("scim2-tester summary: " + ", ".join(f"{k}={v}" for k, v in sorted(counts.items())) + f", failed={failed}, total={len(results)}")
    if len(results) < 20:
        print("too few checks ran; the server description is probably broken")
        return 1
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
