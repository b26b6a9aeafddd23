#!/usr/bin/env python3
"""SQLite's own work for the load benchmark's nested page, batched and N+1.

    scripts/sqlite-work.py [DB]   (default: target/bench-results/catalynx-10000x20-seed42.db)

Runs the statements the server sends for scenario 1 (4: the page, its total,
the counts and one `UNION ALL` of the top opportunities) and for scenario 3
(102: the page, its total, then a count and a top-5 per profile), each
prepared once and read in full, in alternating rounds, and prints the median
microseconds per page of each, beside 102 statements of `SELECT ?` (the
module's own cost per statement). What the two differ by is what loaders can
save inside SQLite; what they save in the server on top of it is the cost of
handing each statement to the database and back. Opens the file read-only.
"""

import sqlite3
import statistics
import sys
import time

PAGE = (
    'SELECT "profiles"."id", "profiles"."name", "profiles"."updated_at" FROM "profiles" '
    'WHERE "profiles"."status" <> ? ORDER BY "profiles"."updated_at" DESC, "profiles"."id" ASC LIMIT 51'
)
TOTAL = (
    "SELECT CAST(COALESCE(SUM(CASE WHEN \"status\" <> 'archived' THEN \"n\" END), 0) AS bigint) "
    'AS "n", COUNT(*) AS "rows" FROM "profile_status_counts"'
)
TOP = (
    'SELECT "id", "profile_id", "organization_name", "overall_score" FROM "opportunities" '
    'WHERE "profile_id" = ? ORDER BY "overall_score" DESC, "id" ASC LIMIT 6'
)


def counts(n):
    marks = ", ".join("?" * n)
    return (
        'SELECT "profile_id", COUNT(*) AS "n" FROM "opportunities" '
        f'WHERE "profile_id" IN ({marks}) GROUP BY "profile_id"'
    )


TOPS = " UNION ALL ".join([f"SELECT * FROM ({TOP})"] * 50)


def main():
    path = sys.argv[1] if len(sys.argv) > 1 else "target/bench-results/catalynx-10000x20-seed42.db"
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, cached_statements=512)
    # The server's reader settings at its defaults (32 MiB over 9 connections).
    db.execute("PRAGMA mmap_size = 268435456")
    db.execute("PRAGMA cache_size = -3640")

    def page():
        ids = [row[0] for row in db.execute(PAGE, ("archived",)).fetchall()][:50]
        db.execute(TOTAL).fetchall()
        return ids

    def batched():
        ids = page()
        db.execute(counts(len(ids)), ids).fetchall()
        db.execute(TOPS, ids).fetchall()

    def one_by_one():
        for id in page():
            db.execute(counts(1), (id,)).fetchall()
            db.execute(TOP, (id,)).fetchall()

    def trivial():
        for i in range(102):
            db.execute("SELECT ?", (i,)).fetchall()

    runs = {"scenario 1 (4 statements)": batched, "scenario 3 (102)": one_by_one, "102 x SELECT ?": trivial}
    for run in runs.values():
        for _ in range(50):
            run()
    times = {name: [] for name in runs}
    for _ in range(5):
        for name, run in runs.items():
            start = time.perf_counter()
            for _ in range(200):
                run()
            times[name].append((time.perf_counter() - start) / 200 * 1e6)
    medians = {name: statistics.median(t) for name, t in times.items()}
    for name, median in medians.items():
        print(f"{name:28s} {median:8.1f} µs per page")
    first, third = medians["scenario 1 (4 statements)"], medians["scenario 3 (102)"]
    print(f"scenario 3 / scenario 1: {third / first:.2f}x")


if __name__ == "__main__":
    main()
