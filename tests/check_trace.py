#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Check a weft trace (lib/trace.c) for the properties DESIGN.md promises.

Always: the file is JSON of the form {"traceEvents": [...], "displayTimeUnit": "ns"};
every event has the fields its phase needs; pid is one process; "X" slices on one
thread never overlap (exact decimal arithmetic: the writer prints integer
nanoseconds as microseconds); every flow id has exactly one "s" and one "f", and
every async wait one "b" and one "e"; every worker has a thread_name "weft-N".
Options add expectations. Exit status 0: all hold; 1: something failed (printed).

Usage: check_trace.py TRACE [--busy-workers N] [--min-flows N] [--has-name NAME]
       [--has-wait NAME] [--split-task] [--truncated | --not-truncated]
       [--max-bytes N]
"""
import argparse
import collections
import decimal
import json
import os
import sys


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("trace")
    ap.add_argument("--busy-workers", type=int, default=0,
                    help="at least this many workers have task slices of nonzero time")
    ap.add_argument("--min-flows", type=int, default=0)
    ap.add_argument("--has-name", action="append", default=[])
    ap.add_argument("--has-wait", action="append", default=[])
    ap.add_argument("--split-task", action="store_true",
                    help="some task has more than one slice (it suspended)")
    ap.add_argument("--truncated", action="store_true")
    ap.add_argument("--not-truncated", action="store_true")
    ap.add_argument("--max-bytes", type=int, default=0)
    a = ap.parse_args()

    bad = []
    size = os.path.getsize(a.trace)
    if a.max_bytes and size > a.max_bytes:
        bad.append("file has %d bytes, more than %d" % (size, a.max_bytes))
    with open(a.trace, "rb") as f:
        doc = json.loads(f.read(), parse_float=decimal.Decimal)
    if not isinstance(doc, dict) or doc.get("displayTimeUnit") != "ns" \
            or not isinstance(doc.get("traceEvents"), list):
        print("FAIL: not {\"traceEvents\":[...],\"displayTimeUnit\":\"ns\"}", file=sys.stderr)
        return 1
    events = doc["traceEvents"]

    pids = set()
    slices = collections.defaultdict(list)      # tid -> [(ts, end, name)]
    task_slices = collections.Counter()          # task id -> slices
    flows = collections.defaultdict(lambda: {"s": 0, "f": 0})
    waits = collections.defaultdict(lambda: {"b": 0, "e": 0})
    wait_names = set()
    names = set()
    thread_names = {}
    truncated = False
    need = {"X": ("ts", "dur", "tid", "name"), "s": ("ts", "tid", "id"),
            "f": ("ts", "tid", "id"), "b": ("ts", "id", "name"), "e": ("ts", "id"),
            "C": ("ts", "name", "args"), "M": ("name", "args")}
    for e in events:
        ph = e.get("ph")
        if ph not in need:
            bad.append("unknown phase %r in %r" % (ph, e))
            continue
        missing = [k for k in need[ph] if k not in e]
        if missing or "pid" not in e:
            bad.append("event %r lacks %s" % (e, missing or ["pid"]))
            continue
        pids.add(e["pid"])
        if ph == "X":
            if e["dur"] < 0:
                bad.append("negative duration: %r" % e)
            slices[e["tid"]].append((e["ts"], e["ts"] + e["dur"], e["name"]))
            names.add(e["name"])
            if e.get("cat") == "task":
                task_slices[e["args"]["task"]] += 1
        elif ph in "sf":
            flows[(e.get("cat"), e["id"])][ph] += 1
        elif ph in "be":
            waits[(e.get("cat"), e["id"], e.get("name"))][ph] += 1
            wait_names.add(e.get("name"))
        elif ph == "M":
            if e["name"] == "thread_name":
                thread_names[e["tid"]] = e["args"].get("name")
            elif e["name"] == "weft_trace_truncated":
                truncated = True

    if len(pids) > 1:
        bad.append("more than one pid: %s" % sorted(pids))
    for tid, name in thread_names.items():
        if name != "weft-%d" % tid:
            bad.append("thread %r is named %r" % (tid, name))
    for tid, sl in slices.items():
        if tid not in thread_names:
            bad.append("slices on tid %r, which has no thread_name" % tid)
        sl.sort()
        for (t0, e0, n0), (t1, e1, n1) in zip(sl, sl[1:]):
            if t1 < e0:
                bad.append("tid %r: slice %s [%s, %s] overlaps %s [%s, %s]"
                           % (tid, n0, t0, e0, n1, t1, e1))
                break
    for key, c in flows.items():
        if c["s"] != 1 or c["f"] != 1:
            bad.append("flow %r has %d starts and %d ends" % (key, c["s"], c["f"]))
    # Async waits: b/e pairs per (cat, id, name); one task waits for one thing at a
    # time, so its waits come in sequence and the counts must match.
    for key, c in waits.items():
        if c["b"] != c["e"]:
            bad.append("wait %r has %d begins and %d ends" % (key, c["b"], c["e"]))

    busy = [tid for tid, sl in slices.items()
            if sum(e - t for t, e, n in sl if n != "park") > 0]
    if len(busy) < a.busy_workers:
        bad.append("%d workers with busy slices (%s), want %d"
                   % (len(busy), sorted(busy), a.busy_workers))
    if len(flows) < a.min_flows:
        bad.append("%d flows, want at least %d" % (len(flows), a.min_flows))
    for n in a.has_name:
        if n not in names:
            bad.append("no slice named %r (names: %s)" % (n, sorted(names)[:20]))
    for n in a.has_wait:
        if n not in wait_names:
            bad.append("no wait named %r (waits: %s)" % (n, sorted(wait_names)))
    if a.split_task and not any(c > 1 for c in task_slices.values()):
        bad.append("no task has more than one slice")
    if a.truncated and not truncated:
        bad.append("no weft_trace_truncated event")
    if a.not_truncated and truncated:
        bad.append("unexpected weft_trace_truncated event")

    for b in bad[:20]:
        print("FAIL:", b, file=sys.stderr)
    if not bad:
        print("ok: %d events, %d threads, %d slices, %d flows, %d waits%s"
              % (len(events), len(thread_names), sum(len(s) for s in slices.values()),
                 len(flows), len(waits), ", truncated" if truncated else ""),
              file=sys.stderr)  # stderr: the suites' stdout is TAP
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
