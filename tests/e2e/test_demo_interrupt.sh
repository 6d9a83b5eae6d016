#!/usr/bin/env bash
# `make demo` must leave nothing behind when interrupted: scripts/demo gets
# a Ctrl-C (SIGINT to its whole process group, as a terminal sends it)
# while it builds the image, while vhost-backend runs, and while the QEMU
# guest runs; each time it must exit 130 at once, with no process of its
# run left (backend, QEMU, run-vm, socat) and its temporary directory
# removed. A SIGTERM during the guest run must clean up the same way.
set -u
top=$(cd "$(dirname "$0")/../.." && pwd)
build=${UBIBLK_BUILD:?}
command -v qemu-system-x86_64 >/dev/null ||
	{ echo "SKIP: qemu-system-x86_64 is not installed (package qemu-system-x86)"; exit 77; }

fails=0
ok() { echo "ok: $*"; }
bad() { echo "FAILED: $*"; fails=$((fails + 1)); }
out=$(mktemp "${TMPDIR:-/tmp}/ubiblk-demo-int.XXXXXX")
trap 'rm -f "$out"' EXIT

# interrupt SIGNAL MARKER DELAY: start the demo in its own session with
# default signal dispositions (a background job of a script would inherit
# SIGINT ignored), wait until MARKER appears in its output, wait DELAY s,
# signal the group; prints "rc=N work=DIR".
interrupt() {
	python3 - "$top/scripts/demo" "$build" "$out" "$1" "$2" "$3" <<'EOF'
import os, re, signal, subprocess, sys, time
demo, build, out, sig, marker, delay = sys.argv[1:]
with open(out, "w") as f:
    p = subprocess.Popen([demo, "--build", build], stdout=f, stderr=subprocess.STDOUT,
                         preexec_fn=lambda: (os.setsid(), signal.signal(signal.SIGINT, signal.SIG_DFL)))
deadline = time.time() + 120
while time.time() < deadline and p.poll() is None:
    if marker in open(out).read():
        break
    time.sleep(0.05)
time.sleep(float(delay))
if p.poll() is None:
    os.killpg(p.pid, getattr(signal, "SIG" + sig))
t0 = time.time()
try:
    rc = p.wait(timeout=60)
except subprocess.TimeoutExpired:
    rc = "hang"
text = open(out).read()
m = re.search(r"(/tmp/ubiblk-demo\.[A-Za-z0-9]+)", text)
print(f"rc={rc} work={m.group(1) if m else ''} took={time.time() - t0:.1f}")
EOF
}

check() { # WHAT SIGNAL MARKER DELAY WANT_RC
	local r rc work left
	r=$(interrupt "$2" "$3" "$4")
	rc=$(sed -n 's/.*rc=\([^ ]*\).*/\1/p' <<<"$r")
	work=$(sed -n 's/.*work=\([^ ]*\).*/\1/p' <<<"$r")
	if [ "$rc" = "$5" ]; then ok "$1: exit $rc ($r)"; else
		bad "$1: exit $rc, wanted $5 ($r)"
		tail -n 15 "$out"
	fi
	grep -q 'interrupted, cleaning up' "$out" && ok "$1: says it cleans up" ||
		bad "$1: no clean-up message"
	if [ -z "$work" ]; then
		bad "$1: the demo never named its directory"
		return
	fi
	sleep 0.5
	left=$(pgrep -af -- "$work" | grep -v pgrep)
	[ -z "$left" ] && ok "$1: no process of the run left" || { bad "$1: left running:"; echo "$left"; }
	[ -e "$work" ] && bad "$1: $work still exists" || ok "$1: $work removed"
	rm -rf "$work"
}

check "Ctrl-C while the image is made" INT "== 1/6" 0 130
check "Ctrl-C while vhost-backend runs" INT "== 3/6" 0.2 130
check "Ctrl-C during the guest run" INT "== 4/6" 1.5 130
check "SIGTERM during the guest run" TERM "== 4/6" 1.5 130

if [ "$fails" -eq 0 ]; then
	echo "all checks passed"
	exit 0
fi
echo "$fails check(s) failed"
exit 1
