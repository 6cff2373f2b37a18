#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Time weft-hash against its serial baseline and against xxhsum on a file tree.

Usage: compare.py [--reps N] [--weft-hash PATH] [--cold [--drop-caches]] [TREE...]

Default tree: /usr/include, plus /usr/share/perl (then other trees) while the files
add up to less than 64 MiB. Variants, each run as a whole command (wall time from
start to exit, output to /dev/null):

  serial          weft-hash --serial: one thread, plain open/read (the baseline)
  weft-hash       weft-hash -j1 and -j2
  xxhsum          find TREE -type f -print0 | xargs -0 xxhsum -H3
  xxhsum -P2      find TREE -type f -print0 | xargs -0 -P2 -n256 xxhsum -H3
  b3sum           find TREE -type f -print0 | xargs -0 b3sum --num-threads 1
  b3sum -P2       find TREE -type f -print0 | xargs -0 -P2 -n256 b3sum --num-threads 1
                  (BLAKE3, Debian's b3sum, one thread per process so that -P2 is
                  its two cores; skipped where b3sum is missing)

Before timing, every variant runs once untimed, so the page cache is warm for all
of them; the timed runs then go round-robin (the variants share any drift of the
machine) and each variant's median is reported. --cold: before every timed run,
every file of the trees is posix_fadvise(POSIX_FADV_DONTNEED)'d (no root needed),
and with --drop-caches "3" is written to /proc/sys/vm/drop_caches too when it is
writable (dentries and inodes as well; it drops every process's caches). The weft-hash listing is compared
with `find | sort -z | xargs -0 xxhsum -H3`'s, byte for byte.

Output: one `RESULT weft-hash-compare ...` line per variant, then a table.
Exit status 1 if a run fails or the listings differ.
"""
import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import time

EXTRA_TREES = ["/usr/share/perl", "/usr/lib/python3", "/usr/share/perl5", "/usr/lib/x86_64-linux-gnu/perl"]
MIN_BYTES = 64 << 20


def default_weft_hash():
    here = os.path.dirname(os.path.abspath(__file__))
    root = os.path.dirname(os.path.dirname(here))
    for b in ("build-demo", "build-bench-run", "build"):
        p = os.path.join(root, b, "tools", "weft-hash")
        if os.access(p, os.X_OK):
            return p
    return shutil.which("weft-hash") or "weft-hash"


def run_summary(cmd):
    """Run a weft-hash command with --summary; return its RESULT fields."""
    p = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                       errors="replace")
    m = re.search(r"^RESULT weft-hash (.*)$", p.stderr, re.M)
    if p.returncode not in (0, 1) or not m:
        sys.exit("compare: %s failed (exit %d):\n%s" % (" ".join(cmd), p.returncode, p.stderr))
    fields = dict(kv.split("=", 1) for kv in m.group(1).split())
    fields["rc"] = p.returncode
    return fields


def tree_files(trees):
    """Every regular file under the trees (links not followed), for eviction."""
    files = []
    for t in trees:
        for d, _, names in os.walk(t):
            for n in names:
                p = os.path.join(d, n)
                if os.path.isfile(p) and not os.path.islink(p):
                    files.append(p)
    return files


def evict(files, drop_caches):
    """Drop the files' pages from the page cache (and, if asked, all caches)."""
    for p in files:
        try:
            fd = os.open(p, os.O_RDONLY)
        except OSError:
            continue
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)
    if drop_caches:
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")


def timed(cmd, shell_args=None):
    t0 = time.perf_counter_ns()
    p = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    t = time.perf_counter_ns() - t0
    return t, p.returncode


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--reps", type=int, default=9, help="timed runs per variant (default 9)")
    ap.add_argument("--weft-hash", dest="wh", default=None, help="the weft-hash binary")
    ap.add_argument("--cold", action="store_true",
                    help="evict the trees from the page cache before every timed run")
    ap.add_argument("--drop-caches", action="store_true",
                    help="with --cold: also write 3 to /proc/sys/vm/drop_caches")
    ap.add_argument("trees", nargs="*")
    a = ap.parse_args()
    wh = a.wh or default_weft_hash()
    if not shutil.which("xxhsum"):
        sys.exit("compare: xxhsum not found (Debian: apt-get install xxhash)")

    trees = a.trees or ["/usr/include"]
    trees = [t for t in trees if os.path.isdir(t)]
    if not trees:
        sys.exit("compare: no tree to hash")
    # Warm-up (also sizes the trees): read everything once, so every variant below
    # sees a warm page cache.
    info = run_summary([wh, "--summary"] + trees)
    if not a.trees:
        for extra in EXTRA_TREES:
            if int(info["bytes"]) >= MIN_BYTES:
                break
            if os.path.isdir(extra) and extra not in trees:
                trees.append(extra)
                info = run_summary([wh, "--summary"] + trees)
    files, nbytes = int(info["files"]), int(info["bytes"])
    mib = nbytes / 1048576

    find = "find \"$@\" -type f -print0 | "
    variants = [
        ("serial", "weft-hash --serial", 1, [wh, "--serial", "--summary"] + trees),
        ("weft", "weft-hash -j1", 1, [wh, "-j1", "--summary"] + trees),
        ("weft", "weft-hash -j2", 2, [wh, "-j2", "--summary"] + trees),
        ("xxhsum", "find | xargs xxhsum", 1,
         ["bash", "-c", find + "xargs -0 xxhsum -H3", "_"] + trees),
        ("xxhsum", "find | xargs -P2 -n256 xxhsum", 2,
         ["bash", "-c", find + "xargs -0 -P2 -n256 xxhsum -H3", "_"] + trees),
    ]
    if shutil.which("b3sum"):
        variants += [
            ("tool", "find | xargs b3sum", 1,
             ["bash", "-c", find + "xargs -0 b3sum --num-threads 1", "_"] + trees),
            ("tool", "find | xargs -P2 -n256 b3sum", 2,
             ["bash", "-c", find + "xargs -0 -P2 -n256 b3sum --num-threads 1", "_"] + trees),
        ]
    else:
        print("compare: note: b3sum not found (Debian: apt-get install b3sum): no b3sum rows",
              file=sys.stderr)

    # Same listing as xxhsum's?
    env = dict(os.environ, LC_ALL="C")
    ours = subprocess.run([wh, "-j2"] + trees, capture_output=True).stdout
    theirs = subprocess.run(["bash", "-c", "find \"$@\" -type f -print0 | sort -z | "
                             "xargs -0 xxhsum -H3", "_"] + trees,
                            capture_output=True, env=env).stdout
    identical = ours == theirs

    drop = a.cold and a.drop_caches and os.access("/proc/sys/vm/drop_caches", os.W_OK)
    if a.cold and a.drop_caches and not drop:
        print("compare: note: /proc/sys/vm/drop_caches is not writable: fadvise only",
              file=sys.stderr)
    files_list = tree_files(trees) if a.cold else []
    for _, _, _, cmd in variants:  # one untimed run each
        timed(cmd)
    times = {i: [] for i in range(len(variants))}
    phases = []
    for _ in range(max(1, a.reps)):
        for i, (impl, _, workers, cmd) in enumerate(variants):
            if a.cold:
                evict(files_list, drop)
            if impl in ("xxhsum", "tool"):
                t, rc = timed(cmd)
            else:
                t0 = time.perf_counter_ns()
                f = run_summary(cmd)
                t, rc = time.perf_counter_ns() - t0, f["rc"]
                if workers == 2 and impl == "weft":
                    phases.append(f)
            if rc not in (0, 1) or (impl not in ("xxhsum", "tool") and rc != 0):
                sys.exit("compare: %s exited with %d" % (" ".join(cmd), rc))
            times[i].append(t)

    med = {i: statistics.median(v) for i, v in times.items()}
    base = med[0]
    for i, (impl, label, workers, _) in enumerate(variants):
        print("RESULT weft-hash-compare impl=%s workers=%d cache=%s files=%d bytes=%d "
              "median_ns=%d speedup_vs_serial=%.3f reps=%d"
              % (impl, workers, "cold" if a.cold else "warm", files, nbytes, med[i],
                 base / med[i], len(times[i])))
    load = os.getloadavg()[0]
    print()
    print("weft-hash: %s -- %d files, %.1f MiB" % (" ".join(trees), files, mib))
    if a.cold:
        print("page cache cold (the trees evicted before every run: posix_fadvise%s); "
              "median of %d runs of each whole command;"
              % (" + drop_caches" if drop else "", a.reps))
    else:
        print("page cache warm (one untimed pass of every variant first); median of %d "
              "runs of each whole command;" % a.reps)
    print("%d CPUs, load average %.2f when done; speedup = serial time / time"
          % (os.cpu_count() or 0, load))
    print()
    print("%-32s %7s %7s %8s %9s %8s %8s" % ("variant", "workers", "files", "MiB", "time ms",
                                          "MiB/s", "speedup"))
    for i, (impl, label, workers, _) in enumerate(variants):
        s = med[i] / 1e9
        label += " (cold)" if a.cold else ""
        print("%-32s %7d %7d %8.1f %9.1f %8.0f %7.2fx" % (label, workers, files, mib,
                                                        s * 1e3, mib / s, base / med[i]))
    if phases:
        keys = ["start", "walk", "sort", "hash", "print"]
        parts = ", ".join("%s %.1f" % (k, statistics.median(int(p[k + "_ns"]) for p in phases) / 1e6)
                          for k in keys)
        print("weft-hash -j2 phases, ms (medians): %s" % parts)
    print("weft-hash listing identical to find | sort -z | xargs xxhsum -H3: %s"
          % ("yes" if identical else "NO"))
    return 0 if identical else 1


if __name__ == "__main__":
    sys.exit(main())
