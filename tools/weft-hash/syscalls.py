#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Count weft-hash's syscalls (strace -f -c) against its serial loop's.

Usage: syscalls.py [--weft-hash PATH] [--modes --serial,-j1,-j2] [TREE...]

Default tree: /usr/include. Each mode runs once untimed (a warm page cache), then
once under `strace -f -c`. The table groups the syscalls by what they do:

  open   openat, openat2, open          stat   newfstatat, fstat, statx, ...
  read   read, pread64, preadv2, readv  close  close
  dir    getdents64                     mem    mmap, munmap, mprotect, brk, madvise
  ring   io_uring_*                     sync   futex, sched_yield, membarrier, ...

The promise checked (issue 13, "warm cache: no tax"): weft-hash with workers makes
no more file syscalls (open + stat + read + close + dir) than --serial, within
1% + 50 (pages the kernel evicted meanwhile send a few reads to the ring), and no
more than 64 mem syscalls beyond --serial's. Counts, not times: they repeat on a
shared machine. Exit status 1 if the promise is broken, 2 if strace is missing.
"""
import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile

GROUPS = {
    "open": {"open", "openat", "openat2", "creat"},
    "stat": {"newfstatat", "fstat", "stat", "lstat", "statx", "fstatat64"},
    "read": {"read", "pread64", "preadv", "preadv2", "readv"},
    "close": {"close", "close_range"},
    "dir": {"getdents64", "getdents"},
    "mem": {"mmap", "munmap", "mprotect", "brk", "madvise", "mremap"},
    "ring": {"io_uring_enter", "io_uring_setup", "io_uring_register"},
    "sync": {"futex", "sched_yield", "membarrier", "rt_sigprocmask", "clone3", "clone"},
}
FILE_GROUPS = ["open", "stat", "read", "close", "dir"]


def default_weft_hash():
    here = os.path.dirname(os.path.abspath(__file__))
    root = os.path.dirname(os.path.dirname(here))
    for b in ("build", "build-demo", "build-bench-run"):
        p = os.path.join(root, b, "tools", "weft-hash")
        if os.access(p, os.X_OK):
            return p
    return shutil.which("weft-hash") or "weft-hash"


def count(cmd):
    """{syscall: calls} of one run of cmd under strace -f -c."""
    with tempfile.NamedTemporaryFile(prefix="weft-syscalls-", suffix=".txt") as f:
        p = subprocess.run(["strace", "-f", "-c", "-o", f.name] + cmd,
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        if p.returncode != 0:
            sys.exit("syscalls: %s exited with %d:\n%s" % (" ".join(cmd), p.returncode,
                                                           p.stderr))
        calls = {}
        for line in open(f.name):
            m = re.match(r"^\s*[\d.]+\s+[\d.]+\s+\d+\s+(\d+)\s+(?:\d+\s+)?(\w+)\s*$", line)
            if m and m.group(2) != "total":
                calls[m.group(2)] = calls.get(m.group(2), 0) + int(m.group(1))
        return calls


def grouped(calls):
    g = {k: 0 for k in list(GROUPS) + ["other"]}
    for name, n in calls.items():
        for k, names in GROUPS.items():
            if name in names:
                g[k] += n
                break
        else:
            g["other"] += n
    g["total"] = sum(calls.values())
    return g


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--weft-hash", dest="wh", default=None)
    ap.add_argument("--modes", default="--serial,-j1,-j2")
    ap.add_argument("trees", nargs="*")
    a = ap.parse_args()
    if not shutil.which("strace"):
        print("syscalls: strace not found (Debian: apt-get install strace)", file=sys.stderr)
        return 2
    wh = a.wh or default_weft_hash()
    trees = a.trees or ["/usr/include"]
    modes = [m for m in a.modes.split(",") if m]
    if "--serial" not in modes:
        modes.insert(0, "--serial")
    rows = {}
    for m in modes:
        cmd = [wh, m] + trees
        subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # warm
        rows[m] = grouped(count(cmd))
    keys = FILE_GROUPS + ["mem", "ring", "sync", "other", "total"]
    print("weft-hash syscalls over %s (strace -f -c, page cache warm)" % " ".join(trees))
    print("%-10s" % "mode" + "".join("%9s" % k for k in keys))
    for m in modes:
        print("%-10s" % m + "".join("%9d" % rows[m][k] for k in keys))
    base = rows["--serial"]
    bfile = sum(base[k] for k in FILE_GROUPS)
    ok = True
    for m in modes:
        if m == "--serial":
            continue
        f = sum(rows[m][k] for k in FILE_GROUPS)
        limit = bfile * 1.01 + 50
        mem_ok = rows[m]["mem"] <= base["mem"] + 64
        good = f <= limit and mem_ok
        ok &= good
        print("%s: %d file syscalls against --serial's %d (limit %d), mem %d against %d: %s"
              % (m, f, bfile, limit, rows[m]["mem"], base["mem"], "ok" if good else "TAX"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
