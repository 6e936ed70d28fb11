"""Writes hourly usage history straight into a SQLite file (as a server running for that long
would have written it, every hour a change).

Usage: seed_history.py DB_PATH TENANT PRODUCT[,PRODUCT…] DAYS
"""
import sqlite3
import sys
import time

path, tenant, products, days = sys.argv[1], sys.argv[2], sys.argv[3].split(","), int(sys.argv[4])
now = int(time.time())
hour = now - now % 3600
db = sqlite3.connect(path, timeout=30)
rows = []
for p in products:
    for h in range(days * 24, 0, -1):
        at = hour - h * 3600
        active = 2 + (h * 7919) % 3
        rows.append((tenant, p, at, 4, active, 0, max(0, active - 4), h % 2))
db.executemany("INSERT OR REPLACE INTO usage_points (tenant_id, product, at, seats, active, waitlisted, overage, idle) "
               "VALUES (?, ?, ?, ?, ?, ?, ?, ?)", rows)
db.commit()
print(len(rows))
