#!/usr/bin/env python3
"""Counts acknowledged records that never reach `done`.

Reads record ids (one per line) from the files given, then polls the
service's `GET /records?status=done` pages until every id is done or the
timeout passes. Prints `ACKED=n DONE=n LOST=n` and exits 1 if any is lost.
"""

import argparse
import json
import sys
import time
import urllib.error
import urllib.request


def get(url):
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.load(response)


def done_ids(base, lowest):
    """Ids of done records, newest first, down to `lowest`."""
    ids = set()
    before = None
    while True:
        url = f"{base}/records?status=done&limit=500"
        if before is not None:
            url += f"&before={before}"
        page = get(url)
        ids.update(record["id"] for record in page["records"])
        before = page.get("next_before")
        if before is None or before <= lowest:
            return ids


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("base_url")
    parser.add_argument("files", nargs="+")
    parser.add_argument("--timeout", type=float, default=120)
    args = parser.parse_args()

    acked = set()
    for path in args.files:
        with open(path) as ids:
            acked.update(int(line) for line in ids if line.strip().isdigit())
    if not acked:
        print("ACKED=0 DONE=0 LOST=0 (no acknowledged records)")
        return 0

    deadline = time.monotonic() + args.timeout
    missing = set(acked)
    while True:
        try:
            missing -= done_ids(args.base_url, min(missing))
        except (urllib.error.URLError, OSError) as error:
            print(f"service not answering yet: {error}", file=sys.stderr)
        if not missing or time.monotonic() > deadline:
            break
        time.sleep(1)

    unknown = 0
    for record_id in sorted(missing)[:20]:
        try:
            record = get(f"{args.base_url}/records/{record_id}")
            print(f"  not done: record {record_id} status={record['status']} job={record.get('job')}")
        except urllib.error.HTTPError as error:
            unknown += 1
            print(f"  not found: record {record_id} ({error.code})")
    print(f"ACKED={len(acked)} DONE={len(acked) - len(missing)} LOST={len(missing)}")
    return 1 if missing else 0


if __name__ == "__main__":
    sys.exit(main())
