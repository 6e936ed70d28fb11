#!/usr/bin/env python3
"""SQLite and PostgreSQL side by side, in one run (bench/postgres.sh builds and calls this).

For each backend: a server with rate limits lifted, 4 tenants of USERS users (seeded through
SCIM Bulk by the scale driver), then wrk runs of create, get by id, PATCH and filter — on one
tenant with 64 connections, and on 4 tenants at once with 16 connections each. For every run
it reports throughput, p50/p99, the CPU each process spent per request (from /proc: the
seatkeeper node(s), and every PostgreSQL process), and PostgreSQL round trips per request
(seatkeeper_database_round_trips_total). Then a plan change for one tenant's USERS users,
and on PostgreSQL a run with two seatkeeper nodes on the same database, after which the
invariants are checked: every node agrees, seat counts equal the license rows, the audit
chains verify.

Usage: bench/postgres.py PG_URL [--seconds S] [--users U] [--max-connections N]
"""

import json
import os
import re
import subprocess
import sys
import tempfile
import time
import urllib.request

BIN = os.environ.get("BIN", "target/release/seatkeeper")
SCALE = "target/release/examples/scale"
ADMIN = "pg-bench-admin-token"
LIFT = ["--rate-limit", "100000000", "--rate-burst", "100000000",
        "--app-rate-limit", "100000000", "--app-rate-burst", "100000000"]
HZ = os.sysconf("SC_CLK_TCK")


def arg(name, default):
    if name in sys.argv:
        return type(default)(sys.argv[sys.argv.index(name) + 1])
    return default


SECONDS = arg("--seconds", 10)
USERS = arg("--users", 10000)
MAXCONN = arg("--max-connections", 0)


def cpu_seconds(pids):
    total = 0
    for p in pids:
        try:
            with open(f"/proc/{p}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        except (FileNotFoundError, ProcessLookupError, IndexError):
            pass
    return total / HZ


def postgres_cpu():
    """CPU seconds of every PostgreSQL process so far: the live ones' own, and through the
    postmaster's cutime/cstime, the ones that have exited (backends of closed connections,
    autovacuum workers), so the figure never goes down."""
    pids = postgres_pids()
    total = cpu_seconds(pids)
    for p in pids:
        try:
            with open(f"/proc/{p}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            if int(fields[1]) not in pids:  # the postmaster: its parent is not postgres
                total += (int(fields[13]) + int(fields[14])) / HZ
        except (OSError, IndexError):
            pass
    return total


def postgres_pids():
    out = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/comm") as f:
                    if f.read().strip() == "postgres":
                        out.append(int(d))
            except OSError:
                pass
    return out


def http(base, method, path, token=ADMIN, body=None):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(base + path, data=data, method=method,
                                 headers={"Authorization": f"Bearer {token}",
                                          "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=600) as r:
        raw = r.read()
        return json.loads(raw) if raw and r.headers.get_content_type().endswith("json") else raw.decode()


def round_trips(bases):
    total = 0.0
    for b in bases:
        text = http(b, "GET", "/metrics")
        for line in text.splitlines():
            if line.startswith("seatkeeper_database_round_trips_total"):
                total += float(line.rsplit(" ", 1)[1])
    return total


class Node:
    def __init__(self, db, work, name, extra=()):
        self.log = os.path.join(work, f"{name}.log")
        env = dict(os.environ, SEATKEEPER_ADMIN_TOKEN=ADMIN, SEATKEEPER_LOG="warn,seatkeeper=info")
        self.proc = subprocess.Popen([BIN, "serve", "--listen", "127.0.0.1:0", "--database", db, *LIFT, *extra],
                                     stdout=open(self.log, "w"), stderr=subprocess.STDOUT, env=env)
        for _ in range(300):
            m = re.search(r"listening on (http://[0-9.:]+)", open(self.log).read())
            if m:
                self.base = m.group(1)
                break
            time.sleep(0.1)
        else:
            sys.exit(f"the server did not start: {open(self.log).read()[-2000:]}")

    def stop(self):
        self.proc.terminate()
        self.proc.wait()


def measure(nodes, runs, pg):
    """Runs the wrk jobs at once; returns the summed throughput, the worst p99, CPU per request."""
    bases = [n.base for n in nodes]
    node_pids = [n.proc.pid for n in nodes]
    trips0 = round_trips(bases)
    sk0, pg0 = cpu_seconds(node_pids), (postgres_cpu() if pg else 0.0)
    procs = []
    for base, script, conns, args in runs:
        procs.append(subprocess.Popen(
            ["wrk", "-t1", f"-c{conns}", f"-d{SECONDS}s", "--timeout", "10s", "-s", f"bench/{script}", base, "--", *args],
            stdout=subprocess.PIPE, text=True))
    results = []
    for p in procs:
        out = p.communicate()[0]
        m = re.search(r"RESULT rps=([\d.]+) p50_ms=([\d.]+) p99_ms=([\d.]+) requests=(\d+) errors=(-?\d+)", out)
        results.append(dict(rps=float(m[1]), p50=float(m[2]), p99=float(m[3]), requests=int(m[4]),
                            errors=int(m[5])) if m else dict(rps=0, p50=0, p99=0, requests=0, errors=-1))
    sk1 = cpu_seconds(node_pids)
    pg1 = postgres_cpu() if pg else 0.0
    trips1 = round_trips(bases)
    requests = max(1, sum(r["requests"] for r in results))
    return dict(
        rps=sum(r["rps"] for r in results),
        p50=max(r["p50"] for r in results),
        p99=max(r["p99"] for r in results),
        errors=sum(r["errors"] for r in results),
        sk_us=(sk1 - sk0) * 1e6 / requests,
        pg_us=(pg1 - pg0) * 1e6 / requests if pg else 0.0,
        trips=(trips1 - trips0) / requests if pg else 0.0,
    )


def ids_of(base, token, n, work, name):
    ids = []
    start = 1
    while len(ids) < n:
        page = http(base, "GET", f"/scim/v2/Users?count=1000&startIndex={start}&attributes=id", token)
        got = [r["id"] for r in page.get("Resources", [])]
        if not got:
            break
        ids += got
        start += len(got)
    path = os.path.join(work, f"{name}.ids")
    with open(path, "w") as f:
        f.write("\n".join(ids[:n]) + "\n")
    return path


def seed(node, work, tenants):
    keys = os.path.join(work, "keys")
    subprocess.run([SCALE, "seed", "--base", node.base, "--admin", ADMIN, "--tenants", str(tenants),
                    "--users", str(USERS), "--out", keys], check=True, stdout=subprocess.DEVNULL)
    out = []
    for line in open(keys):
        i, t, token, key = line.split()
        out.append(dict(index=int(i), id=t, token=token, key=key))
    return out


def scenario_runs(base, tenants, op, conns_each, idfiles, tag):
    runs = []
    for t in tenants:
        token = t["token"]
        if op == "create":
            runs.append((base, "create.lua", conns_each, [token, f"{tag}-{t['index']}"]))
        elif op == "get":
            runs.append((base, "get.lua", conns_each, [token, idfiles[t["id"]]]))
        elif op == "patch":
            runs.append((base, "patch.lua", conns_each, [token, idfiles[t["id"]]]))
        elif op == "filter":
            runs.append((base, "filter.lua", conns_each, [token, str(USERS), str(t["index"]),
                                                         f"user%d@t{t['index']}.example.com"]))
    return runs


def invariants(nodes, tenant, db):
    """Nodes agree on the tenant; every license and seat count is what deciding again gives
    (`seatkeeper reconcile --check`); the audit chains verify."""
    problems = []
    totals = {http(n.base, "GET", "/scim/v2/Users?count=0", tenant["token"])["totalResults"] for n in nodes}
    if len(totals) != 1:
        problems.append(f"nodes disagree on the tenant's user count: {sorted(totals)}")
    check = subprocess.run([BIN, "reconcile", "--check", "--database", db], capture_output=True, text=True)
    if "no differences" not in check.stdout:
        problems.append("reconcile --check: " + (check.stdout + check.stderr)[-500:])
    verify = subprocess.run([BIN, "audit", "verify", "--database", db], capture_output=True, text=True)
    if verify.returncode != 0 or "BROKEN" in verify.stdout:
        problems.append("audit verify: " + (verify.stdout + verify.stderr)[-500:])
    return totals.pop() if len(totals) == 1 else None, problems


def backend(name, db, work, pg):
    rows = []
    extra = ["--max-connections", str(MAXCONN)] if (pg and MAXCONN) else []
    node = Node(db, work, f"{name}-1", extra)
    # Four tenants for the runs, a fifth, untouched by them, for the plan change.
    tenants = seed(node, work, 5)
    spare, tenants = tenants[4], tenants[:4]
    # PATCH flips `active` (Entra's deprovisioning call) thousands of times a second: the
    # mass-deprovision brake would rightly hold them. Off, to measure the writes themselves.
    for t in tenants:
        http(node.base, "PUT", f"/api/v1/tenants/{t['id']}/settings", body={"deprovision_brake": None})
    idfiles = {t["id"]: ids_of(node.base, t["token"], 5000, work, t["id"]) for t in tenants}
    for op in ["create", "get", "patch", "filter"]:
        for label, ts, conns in [("1 tenant", tenants[:1], 64), ("4 tenants", tenants, 16)]:
            tag = f"{op}{len(ts)}"
            r = measure([node], scenario_runs(node.base, ts, op, conns, idfiles, tag), pg)
            rows.append((name, op, label, r))
            print(f"  {name:10} {op:7} {label:9} {r['rps']:9.0f}/s p99 {r['p99']:7.2f} ms "
                  f"seatkeeper {r['sk_us']:6.0f} µs/req, postgres {r['pg_us']:6.0f} µs/req, "
                  f"round trips {r['trips']:.2f}/req, errors {r['errors']}", file=sys.stderr, flush=True)
    uncached = None
    if pg:
        # Gets with the rendered-user cache off: every one a read of PostgreSQL.
        bare = Node(db, work, f"{name}-uncached", [*extra, "--user-cache-mb", "0"])
        uncached = measure([bare], scenario_runs(bare.base, tenants[:1], "get", 64, idfiles, "g"), pg)
        bare.stop()
        print(f"  {name:10} get, cache off: {uncached['rps']:.0f}/s p99 {uncached['p99']:.2f} ms "
              f"seatkeeper {uncached['sk_us']:.0f} µs/req, postgres {uncached['pg_us']:.0f} µs/req, "
              f"round trips {uncached['trips']:.2f}/req", file=sys.stderr, flush=True)
    # A plan change for every user of one tenant (the rule's plan moves pro → enterprise).
    t = spare
    t0 = time.monotonic()
    http(node.base, "PUT", f"/api/v1/tenants/{t['id']}/rules/everyone",
         body={"filter": "active eq true", "product": "scale", "plan": "enterprise", "priority": 1})
    change_ms = (time.monotonic() - t0) * 1000
    print(f"  {name:10} plan change for {USERS} users: {change_ms:.0f} ms", file=sys.stderr, flush=True)
    two = None
    if pg:
        second = Node(db, work, f"{name}-2", extra)
        nodes = [node, second]
        runs = []
        for i, n in enumerate(nodes):
            runs += [(n.base, "create.lua", 32, [tenants[1]["token"], f"two{i}"])]
        one = measure([node], [(node.base, "create.lua", 64, [tenants[1]["token"], "one"])], pg)
        two = measure(nodes, runs, pg)
        # The same over the 4 tenants: each node takes all four, 8 connections each.
        spread_one = measure([node], [(node.base, "create.lua", 16, [t["token"], f"s1-{t['index']}"])
                                      for t in tenants], pg)
        spread_two = measure(nodes, [(n.base, "create.lua", 8, [t["token"], f"s2-{i}-{t['index']}"])
                                     for i, n in enumerate(nodes) for t in tenants], pg)
        users, problems = invariants(nodes, tenants[1], db)
        print(f"  two nodes: {two['rps']:.0f}/s p99 {two['p99']:.2f} ms (one node {one['rps']:.0f}/s); "
              f"over 4 tenants {spread_two['rps']:.0f}/s (one node {spread_one['rps']:.0f}/s); "
              f"the tenant holds {users} users; problems: {problems or 'none'}", file=sys.stderr, flush=True)
        two = dict(one=one, two=two, spread_one=spread_one, spread_two=spread_two, problems=problems)
        second.stop()
    node.stop()
    return rows, change_ms, two, uncached


def main():
    pg_url = sys.argv[1]
    work = tempfile.mkdtemp(prefix="pg-bench-")
    print(f"== SQLite ({USERS} users × 4 tenants, {SECONDS} s per run)", file=sys.stderr)
    sq_rows, sq_change, _, _ = backend("SQLite", f"sqlite://{work}/bench.db", work, False)
    if "--sqlite-only" in sys.argv:
        for _, op, label, r in sq_rows:
            print(f"| {op} | {label} | {r['rps']:,.0f} | {r['p99']:.2f} | {r['sk_us']:.0f} | {r['errors']} |")
        print(f"| plan change for {USERS:,} users | {sq_change:.0f} ms |")
        return
    print(f"== PostgreSQL", file=sys.stderr)
    pg_rows, pg_change, two, uncached = backend("PostgreSQL", pg_url, work, True)
    sq = {(op, label): r for _, op, label, r in sq_rows}
    print()
    print(f"SQLite and PostgreSQL — {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {os.cpu_count()} cores, "
          f"release build, loopback, wrk {SECONDS} s per run, tenants of {USERS} users")
    print()
    print("| operation | tenants | SQLite /s | SQLite p99 ms | PostgreSQL /s | PostgreSQL p99 ms | PG ÷ SQLite "
          "| seatkeeper µs/req (SQLite / PG) | postgres µs/req | round trips/req | errors |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for _, op, label, r in pg_rows:
        s = sq[(op, label)]
        ratio = r["rps"] / s["rps"] if s["rps"] else 0
        print(f"| {op} | {label} | {s['rps']:,.0f} | {s['p99']:.2f} | {r['rps']:,.0f} | {r['p99']:.2f} | {ratio:.2f} "
              f"| {s['sk_us']:.0f} / {r['sk_us']:.0f} | {r['pg_us']:.0f} | {r['trips']:.2f} | {s['errors']} / {r['errors']} |")
    print()
    if uncached:
        print(f"\nPostgreSQL get by id with `--user-cache-mb 0` (every get reads PostgreSQL), 1 tenant, 64 connections: "
              f"{uncached['rps']:,.0f}/s, p99 {uncached['p99']:.2f} ms, seatkeeper {uncached['sk_us']:.0f} µs/req, "
              f"postgres {uncached['pg_us']:.0f} µs/req, {uncached['trips']:.2f} round trips/req.\n")
    print(f"| plan change for {USERS:,} users | SQLite {sq_change:.0f} ms | PostgreSQL {pg_change:.0f} ms |")
    print("|---|---|---|")
    if two:
        print()
        print(f"Two nodes on one PostgreSQL, creates on one tenant (32 connections each): "
              f"{two['two']['rps']:,.0f}/s in total, p99 {two['two']['p99']:.2f} ms, "
              f"seatkeeper {two['two']['sk_us']:.0f} µs/req, postgres {two['two']['pg_us']:.0f} µs/req; "
              f"one node alone with 64 connections: {two['one']['rps']:,.0f}/s, p99 {two['one']['p99']:.2f} ms. "
              f"Creates over the 4 tenants (each node 8 connections per tenant): two nodes "
              f"{two['spread_two']['rps']:,.0f}/s, p99 {two['spread_two']['p99']:.2f} ms; one node (16 per tenant) "
              f"{two['spread_one']['rps']:,.0f}/s, p99 {two['spread_one']['p99']:.2f} ms. "
              f"Invariants: {'all hold' if not two['problems'] else '; '.join(two['problems'])}.")
    sys.exit(1 if two and two["problems"] else 0)


if __name__ == "__main__":
    main()
