#!/usr/bin/env python3
"""Writes a synthetic EO BMF CSV of N rows to stdout, for measuring imports.

    scripts/generate-bmf.py 1000000 > eo_1m.csv
    scripts/generate-bmf.py 1000000 --newer > eo_1m_newer.csv

The same N gives the same rows. `--newer` raises the revenue of every tenth
row that has one (about 8% of rows), as a later release of the file would.
"""

import random
import sys

HEADER = (
    "EIN,NAME,ICO,STREET,CITY,STATE,ZIP,GROUP,SUBSECTION,AFFILIATION,CLASSIFICATION,"
    "RULING,DEDUCTIBILITY,FOUNDATION,ACTIVITY,ORGANIZATION,STATUS,TAX_PERIOD,ASSET_CD,"
    "INCOME_CD,FILING_REQ_CD,PF_FILING_REQ_CD,ACCT_PD,ASSET_AMT,INCOME_AMT,REVENUE_AMT,"
    "NTEE_CD,SORT_NAME"
)
STATES = ["CA", "TX", "NY", "FL", "IL", "PA", "OH", "GA", "NC", "MI", "WA", "AZ", "MA", "CO", "MN"]
NTEE = ["B20", "E32", "K31", "P20", "A20", "X20", "T20", "S20", "N60", "L41", ""]


def main() -> None:
    rows = int(sys.argv[1])
    newer = "--newer" in sys.argv[2:]
    rng = random.Random(1)
    out = sys.stdout
    out.write(HEADER + "\n")
    for i in range(rows):
        revenue = rng.randrange(0, 5_000_000) if rng.random() < 0.8 else ""
        if newer and i % 10 == 0 and revenue != "":
            revenue += 1
        out.write(
            f"{100000000 + i:09d},COMMUNITY ORGANIZATION {i},,{i % 9999} MAIN ST,SPRINGFIELD,"
            f"{rng.choice(STATES)},{rng.randrange(10000, 99999)}-0000,0000,03,3,1000,199001,1,15,"
            f"000000000,1,01,202312,3,3,01,0,12,{revenue},{revenue},{revenue},{rng.choice(NTEE)},\n"
        )


if __name__ == "__main__":
    main()
