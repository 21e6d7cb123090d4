"""Helpers of scripts/demo (run with the local stack's venv, which has boto3).

  demo.py seed ORDERS EVENTS      create and fill the two sample tables (dynalite)
  demo.py wire BUCKET QUEUE       S3 bucket + SQS queue with DLQ + bucket notification (moto),
                                  prints the queue URL
  demo.py summary WORKDIR         prints the per-table summary, exits 1 on any mismatch

The sample tables:
demo_orders: customer (S) + order_id (N) keys, a GSI by_status → relational target.
demo_events: event_id (S) key, no index → wide-column target.
Every DynamoDB type appears (S N B BOOL NULL SS NS BS L M), plus 38-digit numbers,
unicode, empty strings and attribute names with awkward characters.
"""
import json
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import boto3

REGION = os.environ.get("AWS_REGION", "us-east-1")
ddb = boto3.client("dynamodb", endpoint_url=os.environ["AWS_ENDPOINT_URL_DYNAMODB"], region_name=REGION)


def create(name, keys, attrs, gsis=None, rcu=200):
    try:
        ddb.delete_table(TableName=name)
        ddb.get_waiter("table_not_exists").wait(TableName=name, WaiterConfig={"Delay": 0.2})
    except ddb.exceptions.ResourceNotFoundException:
        pass
    args = dict(
        TableName=name,
        KeySchema=[{"AttributeName": k, "KeyType": t} for k, t in keys],
        AttributeDefinitions=[{"AttributeName": a, "AttributeType": t} for a, t in attrs],
        ProvisionedThroughput={"ReadCapacityUnits": rcu, "WriteCapacityUnits": 1000},
    )
    if gsis:
        args["GlobalSecondaryIndexes"] = gsis
    ddb.create_table(**args)
    ddb.get_waiter("table_exists").wait(TableName=name, WaiterConfig={"Delay": 0.2})


def order(i):
    item = {
        "customer": {"S": f"customer#{i % 5000:05d}"},
        "order_id": {"N": str(i)},
        "status": {"S": ["placed", "paid", "shipped", "delivered", "returned"][i % 5]},
        "total": {"N": f"{(i * 37) % 100000}.{i % 100:02d}"},
        "placed_at": {"S": f"2026-{1 + i % 12:02d}-{1 + i % 28:02d}T{i % 24:02d}:00:00Z"},
        "lines": {"L": [{"M": {"sku": {"S": f"sku-{(i + j) % 997}"}, "qty": {"N": str(1 + j)}}} for j in range(1 + i % 3)]},
        "tags": {"SS": sorted({"web", f"promo-{i % 7}", "été"})},
        "gift": {"BOOL": i % 9 == 0},
        "note": {"NULL": True} if i % 4 == 0 else {"S": "" if i % 4 == 1 else f"Leave at door — 門 {i}"},
        "receipt": {"B": (i.to_bytes(4, "big") + b"\x00\xff")},
        "scores": {"NS": [str(i % 10), "2.5", "-1E-5"]},
        "chunks": {"BS": [b"\x01", i.to_bytes(3, "big")]},
    }
    return item


def event(i):
    return {
        "event_id": {"S": f"evt-{i:07d}"},
        "ts": {"N": str(1_760_000_000_000 + i * 137)},
        "kind": {"S": ["click", "view", "buy"][i % 3]},
        "big": {"N": "1234567890123456789012345678901234567" + str(i % 10)},
        "payload": {"M": {"a.b": {"S": "dotted name"}, "nested": {"M": {"deep": {"L": [{"N": "1"}, {"NULL": True}, {"BOOL": False}]}}}, "": {"S": "empty name"}}},
        "raw": {"B": bytes([i % 256]) * 16},
        "labels": {"SS": ["x", f"y{i % 13}"]},
    }


def fill(name, make, count, workers=4):
    def batch(start):
        reqs = [{"PutRequest": {"Item": make(i)}} for i in range(start, min(start + 25, count))]
        while reqs:
            out = ddb.batch_write_item(RequestItems={name: reqs})
            reqs = out.get("UnprocessedItems", {}).get(name, [])

    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(batch, range(0, count, 25)))


def seed(orders, events):
    t0 = time.time()
    create(
        "demo_orders",
        [("customer", "HASH"), ("order_id", "RANGE")],
        [("customer", "S"), ("order_id", "N"), ("status", "S")],
        gsis=[{
            "IndexName": "by_status",
            "KeySchema": [{"AttributeName": "status", "KeyType": "HASH"}],
            "Projection": {"ProjectionType": "KEYS_ONLY"},
            "ProvisionedThroughput": {"ReadCapacityUnits": 10, "WriteCapacityUnits": 1000},
        }],
    )
    create("demo_events", [("event_id", "HASH")], [("event_id", "S")])
    fill("demo_orders", order, orders)
    fill("demo_events", event, events)
    print(f"seeded demo_orders={orders} demo_events={events} in {time.time() - t0:.1f}s", file=sys.stderr)


def summary(work):
    """One row per table from the phases' --output json files; 1 if anything mismatches."""
    def load(name):
        path = os.path.join(work, name)
        return json.load(open(path)) if os.path.exists(path) else None

    times = load("times.json") or {}
    plan = {t["table"]: t for t in (load("plan.json") or {}).get("tables", [])}
    problems = []
    rows = []
    for table in ("demo_orders", "demo_events"):
        exp, marker, ld, ver = (load(f"{k}-{table}.json") for k in ("export", "marker", "load", "verify"))
        totals = (marker or {}).get("totals", {})
        row = {
            "table": table,
            "exported": (exp or {}).get("items"),
            "files": totals.get("files"),
            "raw MB": round(totals.get("raw_bytes", 0) / 1e6, 1) if marker else None,
            "stored MB": round(totals.get("stored_bytes", 0) / 1e6, 1) if marker else None,
            "target": (ld or {}).get("target"),
            "rows": (ld or {}).get("rows_in_target"),
            "verified": None if ver is None else ("ok" if ver.get("ok", ver.get("missing", 1) == 0 and ver.get("different", 1) == 0 and ver.get("extra", 1) == 0) else "MISMATCH"),
            "export s": times.get(f"export-{table}"),
            "planned s": round(plan[table]["export_secs"], 1) if table in plan else None,
            "load s": times.get(f"load-{table}"),
        }
        rows.append(row)
        if exp is None or marker is None or ld is None or ver is None:
            problems.append(f"{table}: a phase produced no result (export={exp is not None}, marker={marker is not None}, load={ld is not None}, verify={ver is not None})")
            continue
        if not (exp["items"] == totals.get("items") == ld.get("rows_in_target")):
            problems.append(f"{table}: exported {exp['items']}, marker {totals.get('items')}, loaded {ld.get('rows_in_target')}")
        if table in plan and row["export s"]:
            ratio = row["export s"] / max(plan[table]["export_secs"], 0.1)
            if not 0.5 <= ratio <= 2.0:
                print(f"note: {table} export took {ratio:.1f}x the planned time", file=sys.stderr)
        if row["verified"] != "ok":
            problems.append(f"{table}: verification found differences: {ver}")
    cols = list(rows[0].keys())
    widths = {c: max(len(c), *(len(str(r[c])) for r in rows)) for c in cols}
    print("  ".join(c.rjust(widths[c]) for c in cols))
    for r in rows:
        print("  ".join(str(r[c]).rjust(widths[c]) for c in cols))
    if "relay" in times:
        print(f"relay fleet (2 processes, until idle): {times['relay']} s")
    for p in problems:
        print(f"MISMATCH {p}", file=sys.stderr)
    print("demo: OK, every table exported, relayed, loaded and verified" if not problems else "demo: FAILED")
    return 1 if problems else 0


def main():
    cmd = sys.argv[1]
    if cmd == "seed":
        seed(int(sys.argv[2]), int(sys.argv[3]))
    elif cmd == "summary":
        sys.exit(summary(sys.argv[2]))
    else:
        sys.exit(f"unknown command {cmd}")


if __name__ == "__main__":
    main()
