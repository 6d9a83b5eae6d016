#!/usr/bin/env bash
# Every program is a PIE with full RELRO, a non-executable stack and stack
# protection; optimised builds also use _FORTIFY_SOURCE (checked functions).
set -u
build=${UBIBLK_BUILD:?}
command -v readelf >/dev/null || { echo "SKIP: readelf not installed"; exit 77; }
fortify=0
grep -q -- '-D_FORTIFY_SOURCE=3' "$build/compile_commands.json" 2>/dev/null && fortify=1
fails=0
n=0
for bin in "$build"/src/bin/* "$build"/tools/*; do
	[ -f "$bin" ] && [ -x "$bin" ] || continue
	n=$((n + 1))
	name=$(basename "$bin")
	readelf -h "$bin" | grep -q 'DYN (Position-Independent' || { echo "FAILED: $name is not PIE"; fails=$((fails + 1)); }
	readelf -l "$bin" | grep -q GNU_RELRO || { echo "FAILED: $name has no RELRO"; fails=$((fails + 1)); }
	readelf -d "$bin" | grep -q 'BIND_NOW' || { echo "FAILED: $name is not BIND_NOW (partial RELRO)"; fails=$((fails + 1)); }
	readelf -lW "$bin" | grep GNU_STACK | grep -q RWE && { echo "FAILED: $name has an executable stack"; fails=$((fails + 1)); }
	if [ "$fortify" = 1 ]; then
		nm -D "$bin" | grep -q '__stack_chk_fail' || { echo "FAILED: $name lacks stack protection"; fails=$((fails + 1)); }
		nm -D "$bin" | grep -q '_chk@' || { echo "FAILED: $name uses no fortified functions"; fails=$((fails + 1)); }
	fi
	echo "checked $name"
done
[ "$n" -gt 0 ] || { echo "FAILED: no programs found under $build"; exit 1; }
[ "$fails" -eq 0 ] || exit 1
echo "hardening ok for $n programs (fortify checks: $fortify)"
