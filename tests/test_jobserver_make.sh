#!/bin/sh
# SPDX-License-Identifier: MIT
# The real make (Debian 12: GNU make 4.3, pipe-style jobserver): recipes marked '+'
# run several weft programs (tests/js_probe.c, 4 workers each) at once under
# `make -j3`. A counter they share (a MAP_SHARED file) must never see more than 3
# items running at once across all of them, and make must not complain about the
# tokens at the end. Then a recipe without '+' (make closes the fds): one warning,
# and the program runs without a jobserver.
#   test_jobserver_make.sh PROBE
set -eu
probe=$1
if ! command -v make > /dev/null 2>&1; then
    echo "make not found: skipped"
    exit 77
fi
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
: > "$dir/counter"

cat > "$dir/Makefile" <<MK
JOBS = j1 j2 j3 j4 j5
all: \$(JOBS)
\$(JOBS):
	+@$probe $dir/counter 4 150 2000 > $dir/\$@.out 2> $dir/\$@.err
plain:
	@$probe $dir/plain.counter 2 20 100 > $dir/plain.out 2> $dir/plain.err
MK

# Under WEFT_SCHED=random (tools/test's sched run) each pool prints its seed to
# stderr (lib/noise.c): not a warning, so not counted.
drop_seeds() { for f in "$dir"/*.err; do [ ! -f "$f" ] || sed -i '/^weft: WEFT_SCHED=random:/d' "$f"; done; }

status=0
make -s -C "$dir" -j3 all > "$dir/make.log" 2>&1 || status=$?
drop_seeds
cat "$dir/make.log"
for j in j1 j2 j3 j4 j5; do
    echo "$j: $(cat "$dir/$j.out")"
    if [ -s "$dir/$j.err" ]; then
        echo "FAIL: $j wrote to stderr:"; cat "$dir/$j.err"; exit 1
    fi
done
[ "$status" -eq 0 ] || { echo "FAIL: make exited $status"; exit 1; }
if grep -q "jobserver tokens available; should be" "$dir/make.log"; then
    echo "FAIL: make lost or gained tokens"; exit 1
fi
# struct shared { int running, max; }: the second int.
max=$(od -An -t d4 -j 4 -N 4 "$dir/counter" | tr -d ' ')
running=$(od -An -t d4 -j 0 -N 4 "$dir/counter" | tr -d ' ')
echo "most items running at once across all probes: $max (make -j3)"
[ "$running" -eq 0 ] || { echo "FAIL: counter says $running still running"; exit 1; }
[ "$max" -ge 1 ] && [ "$max" -le 3 ] || { echo "FAIL: $max > 3 items at once"; exit 1; }

: > "$dir/plain.counter"
make -s -C "$dir" -j3 plain > "$dir/make2.log" 2>&1 || { cat "$dir/make2.log" "$dir/plain.err"; echo "FAIL: plain"; exit 1; }
drop_seeds
n=$(grep -c "weft: " "$dir/plain.err" || true)
cat "$dir/plain.err"
[ "$n" -eq 1 ] || { echo "FAIL: want one warning from a recipe without '+', got $n"; exit 1; }
grep -q "running without a jobserver" "$dir/plain.err" || { echo "FAIL: warning text"; exit 1; }
echo OK
