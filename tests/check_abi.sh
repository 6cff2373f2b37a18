#!/bin/sh
# SPDX-License-Identifier: MIT
# ABI check: the shared library exports weft_* names only (STYLE.md, "Tests").
# Usage: check_abi.sh path/to/libweft.so
# Every dynamic symbol the library defines must start with "weft_"; any other name is
# listed and the check fails. The one entry that is not a symbol at all, the absolute
# version-node marker of the version script (WEFT_0.1, type A, value 0), is skipped.
set -eu

lib=${1:?usage: check_abi.sh path/to/libweft.so}
if [ ! -f "$lib" ]; then
    echo "check_abi: no such file: $lib" >&2
    exit 1
fi
NM=${NM:-nm}

out=$("$NM" -D --defined-only "$lib") || {
    echo "check_abi: $NM -D --defined-only $lib failed" >&2
    exit 1
}

total=0
bad=""
# Lines look like "0000000000004080 T weft_run@@WEFT_0.1".
while read -r addr type name rest; do
    [ -n "${addr:-}" ] || continue
    if [ -z "${name:-}" ]; then # no address column
        name=$type
        type=$addr
    fi
    sym=${name%%@*}
    if [ "$type" = A ] && [ "$sym" = "$name" ] && expr "$sym" : 'WEFT_[0-9][0-9.]*$' >/dev/null; then
        continue # version node marker
    fi
    total=$((total + 1))
    case $sym in
    weft_*) ;;
    *) bad="$bad $type:$name" ;;
    esac
done <<EOT
$out
EOT

if [ "$total" -eq 0 ]; then
    echo "check_abi: $lib defines no dynamic symbols at all" >&2
    exit 1
fi
if [ -n "$bad" ]; then
    echo "check_abi: $lib exports symbols outside the weft_ namespace:" >&2
    for s in $bad; do
        echo "  $s" >&2
    done
    exit 1
fi
echo "check_abi: $total symbols, all weft_*"
exit 0
