"""Merge a fresh ``fastrnn tune`` table of a machine class with the class's packaged one
(measured on other boxes of the class): per point the measurement with the larger
kernel/native ratio, so the kernel stays auto's pick only where every box saw it win; except
for the kinds of call named by ``--fresh``, whose kernel changed since the packaged table was
measured: there the old measurement is of code that no longer runs, and the fresh one alone
counts. Points only one of the two measured are kept as they are (a tune of some points
only, ``fastrnn tune --seq-len T``, adds them to the table).

    python benchmarks/merge_auto_tables.py NEW.json OLD.json --out OUT.json \
        [--fresh KIND:MODE[:T]] ...     (e.g. --fresh cell:inference --fresh sequence:inference:1)
"""
import argparse
import json


def _key(p: dict) -> tuple:
    return (p["kind"], p["cell"], p["dtype"], p["mode"], p["T"], p["B"], p["H"], p["backend"])


def _is_fresh(p: dict, fresh: list[tuple]) -> bool:
    for f in fresh:
        if (p["kind"], p["mode"]) == f[:2] and (len(f) < 3 or p["T"] == int(f[2])):
            return True
    return False


def _ratio(p: dict) -> float:
    return p["kernel_ms"] / p["native_ms"]


def merge(new: dict, old: dict, fresh: list[tuple]) -> dict:
    if new["class"] != old["class"]:
        raise SystemExit(f"classes differ: {new['class']} vs {old['class']}")
    olds = {_key(p): p for p in old["points"]}
    points = []
    for p in new["points"]:
        o = olds.pop(_key(p), None)
        points.append(p if o is None or _is_fresh(p, fresh) or _ratio(p) >= _ratio(o) else o)
    points += olds.values()  # measured by the old table only (a partial tune: --seq-len)
    source = dict(new["source"])
    # a merged new table keeps what it was merged with: its chain goes first, then old's
    earlier = source.pop("merged_with", None)
    source["merged_with"] = old["source"] if earlier is None else [earlier, old["source"]]
    source["merge"] = ("per point, the measurement with the larger kernel/native ratio (kernel "
                       "only where every box of the class saw it win), except the fresh kinds "
                       f"{['/'.join(map(str, f)) for f in fresh]} (kernel changed since: the "
                       "new measurement alone)")
    failed = dict(old.get("failed_checks", {}))
    failed.update(new.get("failed_checks", {}))
    return dict(new, source=source, failed_checks=failed, points=points)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("new")
    parser.add_argument("old")
    parser.add_argument("--out", required=True)
    parser.add_argument("--fresh", action="append", default=[], metavar="KIND:MODE[:T]")
    args = parser.parse_args()
    with open(args.new) as f:
        new = json.load(f)
    with open(args.old) as f:
        old = json.load(f)
    fresh = [tuple(s.split(":")) for s in args.fresh]
    table = merge(new, old, fresh)
    with open(args.out, "w") as f:
        f.write(json.dumps(table, indent=1) + "\n")
    print(f"wrote {args.out}: {len(table['points'])} points")


if __name__ == "__main__":
    main()
