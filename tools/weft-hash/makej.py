#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Run two weft-hash trees at once under `make -jJ` and measure the oversubscription.

Usage: makej.py [--weft-hash PATH] [--jobs J] [--reps N] [TREE...]

A Makefile in a temporary directory has two targets, each `+weft-hash -jJ TREE`
(the `+` lets make hand its jobserver to the recipe), and make runs them with -jJ:
so each weft-hash wants J workers and the two together 2J, on a machine where make
was told J jobs may run. Two variants, alternated, --reps runs each:

  jobserver     as is: weft's jobserver client takes a token before a second worker
                runs (lib/jobserver.c), so at most J workers run across both
  WEFT_JOBSERVER=0
                the client switched off: each process runs its J workers

While make runs, a sampler reads /proc every millisecond and counts the weft worker
threads (named weft-N) of the two processes that are running or runnable (state R);
their peak and mean over the run say how many workers competed for the J CPUs.
Reported per variant: median wall time, mean and peak runnable workers, the most
tokens each weft-hash held (its --summary), and whether make complained
("jobserver tokens available; should be"). Output: RESULT lines, then a table.
"""
import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time


def runnable_workers():
    n = 0
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            for tid in os.listdir("/proc/%s/task" % pid):
                with open("/proc/%s/task/%s/stat" % (pid, tid)) as f:
                    st = f.read()
                name = st[st.index("(") + 1:st.rindex(")")]
                state = st[st.rindex(")") + 2]
                if re.fullmatch(r"weft-\d+", name) and state == "R":
                    n += 1
        except (FileNotFoundError, ProcessLookupError, ValueError):
            continue
    return n


def one_run(tmp, jobs, env):
    samples = []
    done = threading.Event()

    def sample():
        while not done.is_set():
            samples.append(runnable_workers())
            time.sleep(0.001)

    th = threading.Thread(target=sample)
    t0 = time.perf_counter_ns()
    th.start()
    p = subprocess.run(["make", "-s", "-j%d" % jobs, "-C", tmp], env=env,
                       capture_output=True, text=True, errors="replace")
    t = time.perf_counter_ns() - t0
    done.set()
    th.join()
    if p.returncode != 0:
        sys.exit("makej: make failed (exit %d):\n%s" % (p.returncode, p.stderr))
    tokens = [int(x) for x in re.findall(r"jobserver tokens held at most (\d+)", p.stderr)]
    complained = "jobserver tokens available" in p.stderr
    return t, samples, tokens, complained


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--weft-hash", dest="wh", default=None)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("trees", nargs="*")
    a = ap.parse_args()
    here = os.path.dirname(os.path.abspath(__file__))
    wh = a.wh or os.path.join(os.path.dirname(os.path.dirname(here)), "build-demo", "tools",
                              "weft-hash")
    wh = os.path.abspath(wh)
    if not shutil.which("make"):
        sys.exit("makej: make not found (Debian: apt-get install make)")
    trees = a.trees or ["/usr/include", "/usr/include"]
    if len(trees) == 1:
        trees = trees * 2
    trees = trees[:2]
    with tempfile.TemporaryDirectory(prefix="weft-makej-") as tmp:
        with open(os.path.join(tmp, "Makefile"), "w") as f:
            f.write(".PHONY: all a b\nall: a b\n")
            for name, tree in zip("ab", trees):
                f.write("%s:\n\t+%s -j%d --summary %s >/dev/null\n" % (name, wh, a.jobs, tree))
        base = dict(os.environ)
        base.pop("MAKEFLAGS", None)
        base.pop("WEFT_JOBSERVER", None)
        variants = [("jobserver", base), ("WEFT_JOBSERVER=0", dict(base, WEFT_JOBSERVER="0"))]
        for _, env in variants:  # warm the page cache and the binaries
            one_run(tmp, a.jobs, env)
        res = {v: [] for v, _ in variants}
        for _ in range(max(1, a.reps)):
            for v, env in variants:
                res[v].append(one_run(tmp, a.jobs, env))
    print()
    print("make -j%d, two weft-hash -j%d at once (%s), %d CPUs; median of %d runs"
          % (a.jobs, a.jobs, " + ".join(trees), os.cpu_count() or 0, a.reps))
    print("%-18s %10s %14s %14s %12s %10s" % ("variant", "wall ms", "runnable mean",
                                             "runnable peak", "tokens max", "make ok"))
    for v, _ in variants:
        runs = res[v]
        wall = statistics.median(r[0] for r in runs) / 1e6
        means = [statistics.mean(r[1]) for r in runs if r[1]]
        mean = statistics.median(means) if means else 0.0
        peak = max((max(r[1]) for r in runs if r[1]), default=0)
        tok = max((max(r[2]) for r in runs if r[2]), default=0)
        ok = not any(r[3] for r in runs)
        print("RESULT makej variant=%s jobs=%d wall_ms=%.1f runnable_mean=%.2f "
              "runnable_peak=%d tokens_max=%d make_ok=%d" % (v.replace(" ", "_"), a.jobs, wall,
                                                             mean, peak, tok, ok))
        print("%-18s %10.1f %14.2f %14d %12d %10s" % (v, wall, mean, peak, tok,
                                                      "yes" if ok else "NO"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
