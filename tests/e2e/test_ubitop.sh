#!/usr/bin/env bash
# ubitop end to end (backends.md §7, docs/ubitop.md):
#   - command line: --help, --version, usage errors exit 2;
#   - exact figures against a scripted fake RPC server: first sample 0,
#     rates = delta / interval, IOPS without flushes, in-flight counts,
#     a counter that goes down shows 0, bars and scale growth (never
#     shrinking), the ALL row and the header totals;
#   - a real vhost-backend with 2 queues under a randread bench: both
#     queues show a read rate and IOPS, rate = IOPS x 4 KiB;
#   - nothing listening: Connection error / Retrying, and it keeps trying;
#     Ctrl-C prints "Stopped by user" and exits 0;
#   - the backend killed and restarted under a running ubitop: Connection
#     error, then Connected again and new frames;
#   - hostile servers (garbage, an endless line, a stall, a close, escape
#     sequences, bad shapes, deep nesting) are connection errors, never a
#     crash, and nothing from the server reaches the terminal raw;
#   - in a terminal (script(1)): alternate screen, hidden cursor, q quits
#     and the terminal is restored.
set -u
build=${UBIBLK_BUILD:?}
bin=$build/src/bin
top=$bin/ubitop
client=$build/tests/vhost-client/vhost-client
for b in "$top" "$bin/vhost-backend" "$client"; do
	[ -x "$b" ] || { echo "FAILED: $b is not built"; exit 1; }
done
command -v python3 >/dev/null || { echo "SKIP: python3 is not installed"; exit 77; }
command -v timeout >/dev/null || { echo "SKIP: timeout is not installed"; exit 77; }

dir=$(mktemp -d "${TMPDIR:-/tmp}/ubitop.XXXXXX")
pids=()
cleanup() {
	for p in "${pids[@]}"; do kill -KILL "$p" 2>/dev/null; done
	wait 2>/dev/null
	rm -rf "$dir"
}
trap cleanup EXIT

fails=0
ok() { echo "ok: $*"; }
bad() { echo "FAILED: $*"; fails=$((fails + 1)); }
expect() { # WANT GOT WHAT
	if [ "$1" = "$2" ]; then ok "$3"; else bad "$3: got '$2', wanted '$1'"; fi
}
contains() { # FILE TEXT WHAT
	if grep -qF -- "$2" "$1"; then ok "$3"; else
		bad "$3: '$2' not in output:"
		head -c 3000 "$1"
	fi
}
lacks() { # FILE TEXT WHAT
	if grep -qF -- "$2" "$1"; then bad "$3: '$2' found"; else ok "$3"; fi
}
# Waits up to 10 s for TEXT in FILE.
wait_for() { # FILE TEXT
	for _ in $(seq 200); do
		grep -qF -- "$2" "$1" 2>/dev/null && return 0
		sleep 0.05
	done
	return 1
}
count() { grep -cF -- "$2" "$1"; }
# Runs a command with SIGINT at its default: a shell that started this
# test in the background may have ignored it, and ubitop keeps an ignored
# SIGINT ignored (as nohup expects).
cat >"$dir/dflint" <<'PY'
#!/usr/bin/env python3
import os, signal, sys
signal.signal(signal.SIGINT, signal.SIG_DFL)
os.execv(sys.argv[1], sys.argv[1:])
PY
chmod +x "$dir/dflint"

# ---- command line --------------------------------------------------------
"$top" --help >"$dir/out" 2>&1
expect 0 $? "--help exits 0"
contains "$dir/out" "--socket PATH" "help names --socket"
contains "$dir/out" "--interval SECONDS" "help names --interval"
"$top" --version >"$dir/out" 2>&1
expect 0 $? "--version exits 0"
expect "ubitop $("$bin/vhost-backend" --version | awk '{print $NF}')" "$(cat "$dir/out")" "--version text"
"$top" -V >/dev/null 2>&1
expect 0 $? "-V exits 0"

usage() { # WHAT ARGS...
	local what=$1
	shift
	timeout 5 "$top" "$@" >"$dir/out" 2>"$dir/err"
	local rc=$?
	if [ "$rc" -eq 2 ] && grep -q '^ubitop: ' "$dir/err" && [ ! -s "$dir/out" ]; then
		ok "$what: exit 2 ($(head -n 1 "$dir/err"))"
	else
		bad "$what: exit $rc, stdout '$(cat "$dir/out")', stderr '$(cat "$dir/err")'"
	fi
}
usage "--interval 0" --socket "$dir/x.rpc" --interval 0
usage "--interval -1" --socket "$dir/x.rpc" --interval -1
usage "--interval abc" --socket "$dir/x.rpc" --interval abc
usage "--interval nan" --socket "$dir/x.rpc" --interval nan
usage "--interval inf" --socket "$dir/x.rpc" --interval inf
usage "--interval 1e9" --socket "$dir/x.rpc" --interval 1e9
usage "--interval without a value" --socket "$dir/x.rpc" --interval
usage "no --socket" --interval 1
usage "no arguments"
usage "empty --socket" --socket ""
usage "--count 0" --socket "$dir/x.rpc" --count 0
usage "--count x" --socket "$dir/x.rpc" --count x
usage "unknown option" --socket "$dir/x.rpc" --bogus
usage "stray argument" --socket "$dir/x.rpc" extra
grep -q -- '--interval must be a positive number' <("$top" --socket x --interval 0 2>&1) &&
	ok "--interval 0 says it must be positive" || bad "--interval 0 message"

# ---- a scripted fake server ----------------------------------------------
cat >"$dir/fake.py" <<'EOF'
# fake.py MODE PATH: a Unix socket server answering ubitop's requests.
import json, os, socket, sys, threading, time

mode, path = sys.argv[1], sys.argv[2]
MIB = 1 << 20
# counter mode: bytes_read of queue 0 in MiB at stats request n = 1, 2, ...
READS = [1, 2, 3, 0, 5, 55]


def counter_stats(n):
    r = READS[n - 1] if n <= len(READS) else READS[-1] + n - len(READS)
    return {"stats": {"queues": [
        {"bytes_read": r * MIB, "bytes_written": 0, "read_ops": r * 256,
         "write_ops": 0, "flush_ops": n * 1000},
        {"bytes_read": 0, "bytes_written": n * MIB // 2, "read_ops": 0,
         "write_ops": n * 128, "flush_ops": 0}]}}


QUEUES = {"queues": [[["read", 0, 8], ["flush"], ["write", 8, 8]], [], [["flush"]]]}


def serve(c):
    f = c.makefile("rb")
    n = 0
    try:
        if mode == "reset":
            return  # the request stays unread: the client sees a reset
        for line in f:
            if mode == "close":
                return
            cmd = json.loads(line)["command"]
            if mode == "stall":
                time.sleep(60)
                return
            if mode == "endless":
                chunk = b"x" * 65536
                while True:
                    c.sendall(chunk)
            if mode == "garbage":
                out = b"garbage\n"
            elif mode == "escape":
                out = json.dumps({"error": "\x1b]0;pwned\x07\x1b[2J\x1b[31mred"}).encode() + b"\n"
            elif mode == "negative":
                out = b'{"stats":{"queues":[{"bytes_read":-1,"bytes_written":0,"read_ops":0,"write_ops":0}]}}\n'
            elif mode == "bignum":
                out = b'{"stats":{"queues":[{"bytes_read":18446744073709551615,"bytes_written":0,"read_ops":0,"write_ops":0}]}}\n'
            elif mode == "deep":
                out = b'{"queues":' + b"[" * 200000 + b"]" * 200000 + b"}\n"
            elif mode == "huge":
                q = b'{"bytes_read":1,"bytes_written":1,"read_ops":1,"write_ops":1}'
                out = b'{"stats":{"queues":[' + b",".join([q] * 5000) + b"]}}\n"
            elif mode == "counter":
                if cmd == "stats":
                    n += 1
                    out = json.dumps(counter_stats(n)).encode() + b"\n"
                else:
                    out = json.dumps(QUEUES).encode() + b"\n"
            c.sendall(out)
    except (BrokenPipeError, ConnectionResetError):
        pass
    finally:
        c.close()


s = socket.socket(socket.AF_UNIX)
s.bind(path)
s.listen(8)
while True:
    c, _ = s.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
EOF

fake() { # MODE -> $fsock, $fpid
	fsock=$dir/fake-$1.sock
	rm -f "$fsock"
	python3 "$dir/fake.py" "$1" "$fsock" 2>"$dir/fake-$1.err" &
	fpid=$!
	pids+=("$fpid")
	for _ in $(seq 100); do
		[ -S "$fsock" ] && return 0
		sleep 0.05
	done
	bad "fake server $1 did not start: $(cat "$dir/fake-$1.err")"
	return 1
}

# The row of queue Q (0, 1, ALL) in frame F of a batch output, fields
# separated by spaces.
row() { # FILE F Q
	awk -v f="$2" -v q="$3" '/^ubitop - / { n++ } n == f && $1 == q { print; exit }' "$1"
}
field() { # FILE F Q N
	row "$1" "$2" "$3" | awk -v i="$4" '{ print $i }'
}
# Filled characters of the read bar (field 4) of a row.
filled() { # FILE F Q
	row "$1" "$2" "$3" | awk -v c="▄" '{ print gsub(c, "", $4) }'
}

if fake counter; then
	out=$dir/counter.out
	timeout 20 "$top" --socket "$fsock" --interval 0.5 --batch --count 7 >"$out" 2>"$dir/counter.err"
	expect 0 $? "fake server: --count 7 exits 0"
	expect "Connected to $fsock" "$(head -n 1 "$out")" "first line: Connected to"
	expect 7 "$(count "$out" 'ubitop - 2 queues | Total: ')" "7 frames, each with the header of 2 queues"
	expect 7 "$(grep -c '^  ALL ' "$out")" "an ALL row in every frame"
	expect 7 "$(grep -c '^━━━━━  ━━━' "$out")" "a separator row in every frame"
	grep -q $'\x1b' "$out" && bad "escape sequences in batch output" || ok "batch output has no escape sequences"
	expect "ubitop - 2 queues | Total: ↓   0.00 B/s / ↑   0.00 B/s | Poll: 0.5s" \
		"$(sed -n 2p "$out")" "frame 1 header: first sample shows 0"
	expect "0.00 B/s 0" "$(field "$out" 1 0 2) $(field "$out" 1 0 3) $(field "$out" 1 0 8)" "frame 1 queue 0: rate 0, IOPS 0"
	expect "ubitop - 2 queues | Total: ↓   2.00 MiB/s / ↑   1.00 MiB/s | Poll: 0.5s" \
		"$(grep '^ubitop - ' "$out" | sed -n 2p)" "frame 2 header totals"
	expect "2.00 MiB/s" "$(field "$out" 2 0 2) $(field "$out" 2 0 3)" "frame 2 queue 0: 1 MiB per 0.5 s = 2.00 MiB/s"
	expect 512 "$(field "$out" 2 0 8)" "frame 2 queue 0: IOPS 512 (flushes excluded)"
	expect 3 "$(field "$out" 2 0 9)" "frame 2 queue 0: 3 in flight (flush included)"
	expect "1.00 MiB/s" "$(field "$out" 2 1 5) $(field "$out" 2 1 6)" "frame 2 queue 1: write 1.00 MiB/s"
	expect 256 "$(field "$out" 2 1 8)" "frame 2 queue 1: IOPS 256"
	expect 0 "$(field "$out" 2 1 9)" "frame 2 queue 1: nothing in flight"
	expect "768 3" "$(field "$out" 2 ALL 8) $(field "$out" 2 ALL 9)" "frame 2 ALL: IOPS and in-flight sums"
	expect "2.00 MiB" "$(field "$out" 2 0 10) $(field "$out" 2 0 11)" "frame 2 queue 0: Total Read"
	expect 1 "$(filled "$out" 2 0)" "frame 2: 2 of 50 MiB/s fills 1 of 30"
	expect "0.00 B/s 0" "$(field "$out" 4 0 2) $(field "$out" 4 0 3) $(field "$out" 4 0 8)" \
		"frame 4: a counter that went down shows 0"
	expect "1.00 MiB/s" "$(field "$out" 4 1 5) $(field "$out" 4 1 6)" "frame 4: the other queue is unaffected"
	expect "10.00 MiB/s" "$(field "$out" 5 0 2) $(field "$out" 5 0 3)" "frame 5: rate from the reset value"
	expect "100.00 MiB/s" "$(field "$out" 6 0 2) $(field "$out" 6 0 3)" "frame 6: 100 MiB/s"
	expect 28 "$(filled "$out" 6 0)" "frame 6: the scale grew to 105 MiB/s (28 of 30)"
	expect 28 "$(filled "$out" 6 ALL)" "frame 6: the total scale grew too"
	expect "2.00 MiB/s" "$(field "$out" 7 0 2) $(field "$out" 7 0 3)" "frame 7: 2 MiB/s again"
	expect 0 "$(filled "$out" 7 0)" "frame 7: the scale did not shrink (0 of 30)"
	expect 30 "$(row "$out" 7 0 | awk -v c="▄" -v e="▁" '{ print gsub(c, "", $4) + gsub(e, "", $4) }')" \
		"bars are 30 characters"

	# Output that does not drain (a reader that stopped reading) must not
	# hold off a signal.
	mkfifo "$dir/stuck.fifo"
	exec 4<>"$dir/stuck.fifo"
	"$top" --socket "$fsock" --interval 0.002 --batch >"$dir/stuck.fifo" 2>"$dir/stuck.err" &
	tpid=$!
	pids+=("$tpid")
	sleep 2 # > 64 KiB of frames: the writes block
	kill -TERM "$tpid"
	for _ in $(seq 40); do
		kill -0 "$tpid" 2>/dev/null || break
		sleep 0.05
	done
	if kill -0 "$tpid" 2>/dev/null; then
		bad "SIGTERM did not end ubitop blocked on its output"
	else
		wait "$tpid"
		expect 143 $? "SIGTERM ends ubitop blocked on its output"
	fi
	exec 4>&-
	kill "$fpid" 2>/dev/null
fi

# ---- nothing listening ---------------------------------------------------
out=$dir/none.out
timeout 2 "$top" --socket "$dir/none.rpc" --interval 0.3 --batch >"$out" 2>"$dir/none.err"
expect 124 $? "nothing listening: ubitop keeps retrying until killed"
contains "$out" "Connection error: [Errno 2] No such file or directory" "missing socket: Connection error"
contains "$out" "Retrying in 0.3s..." "missing socket: Retrying in 0.3s..."
n=$(count "$out" "Connection error:")
[ "$n" -ge 3 ] && ok "retried $n times in 2 s" || bad "only $n attempts in 2 s"
lacks "$out" "Connected to" "no Connected to without a server"

python3 -c 'import socket, sys; s = socket.socket(socket.AF_UNIX); s.bind(sys.argv[1])' "$dir/dead.rpc"
timeout 1 "$top" --socket "$dir/dead.rpc" --interval 0.3 --batch --count 1 >"$out" 2>&1
contains "$out" "Connection error: [Errno 111] Connection refused" "a socket nobody listens on: Connection refused"

timeout -s INT --preserve-status 1 "$dir/dflint" "$top" --socket "$dir/none.rpc" --interval 0.3 --batch >"$out" 2>&1
expect 0 $? "Ctrl-C (SIGINT): exit 0"
expect "Stopped by user" "$(tail -n 1 "$out")" "Ctrl-C: Stopped by user"

# ---- a real backend --------------------------------------------------------
{
	echo '[device]'
	echo 'data_path = "disk.raw"'
	echo 'vhost_socket = "disk.sock"'
	echo 'rpc_socket = "disk.rpc"'
	echo '[tuning]'
	echo 'num_queues = 2'
	echo 'queue_size = 64'
	echo '[danger_zone]'
	echo 'enabled = true'
	echo 'allow_unencrypted_disk = true'
} >"$dir/disk.toml"
chmod 600 "$dir/disk.toml"
truncate -s 64M "$dir/disk.raw"
rpc=$dir/disk.rpc

start_backend() {
	rm -f "$dir/disk.sock"
	"$bin/vhost-backend" -f "$dir/disk.toml" 2>>"$dir/backend.log" &
	bpid=$!
	pids+=("$bpid")
	for _ in $(seq 200); do
		[ -S "$dir/disk.sock" ] && [ -S "$rpc" ] && return 0
		kill -0 "$bpid" 2>/dev/null || break
		sleep 0.05
	done
	bad "backend did not start: $(cat "$dir/backend.log")"
	return 1
}

start_backend || exit 1
out=$dir/real.out
"$client" --socket "$dir/disk.sock" bench --rw randread --qd 8 --queues 2 --seconds 3 >"$dir/bench.out" 2>&1 &
cpid=$!
pids+=("$cpid")
sleep 0.3
timeout 20 "$top" --socket "$rpc" --interval 0.5 --batch --count 6 >"$out" 2>"$dir/real.err"
expect 0 $? "real backend: --count 6 exits 0"
wait "$cpid" || bad "bench failed: $(cat "$dir/bench.out")"
contains "$out" "Connected to $rpc" "real backend: Connected to"
expect 6 "$(count "$out" 'ubitop - 2 queues | Total: ↓')" "real backend: 6 frames of 2 queues"
expect 6 "$(grep -c '^  ALL ' "$out")" "real backend: ALL rows"
busy=0
for f in 2 3 4 5 6; do
	r0=$(field "$out" $f 0 2)
	i0=$(field "$out" $f 0 8)
	r1=$(field "$out" $f 1 2)
	i1=$(field "$out" $f 1 8)
	if awk -v a="$r0" -v b="$i0" -v c="$r1" -v d="$i1" 'BEGIN { exit !(a > 0 && b > 0 && c > 0 && d > 0) }'; then
		busy=$((busy + 1))
	fi
done
[ "$busy" -ge 3 ] && ok "real backend: read rate and IOPS on both queues in $busy frames" ||
	bad "real backend: only $busy frames with reads on both queues:$(echo; cat "$out")"
# rate = IOPS x 4096 (every request is 4 KiB)
awk '/^ubitop - / { n++ }
     n > 1 && ($1 == "0" || $1 == "1" || $1 == "ALL") && $8 > 0 {
	m = $3 == "B/s" ? 1 : $3 == "KiB/s" ? 1024 : $3 == "MiB/s" ? 1048576 : 1073741824
	r = $2 * m / ($8 * 4096)
	if (r < 0.99 || r > 1.01) { print "row", $0; bad = 1 }
	checked++
     }
     END { exit bad || checked < 3 }' "$out" &&
	ok "real backend: read rate = IOPS x 4 KiB" || bad "real backend: rate and IOPS disagree"
awk '/^ubitop - / { n++ } ($1 == "0" || $1 == "1") && $9 > 8 { bad = 1 } END { exit bad }' "$out" &&
	ok "real backend: at most 8 (the queue depth) in flight per queue" || bad "more in flight than the queue depth"
expect "0.00" "$(field "$out" 1 ALL 2)" "real backend: the first frame shows 0"

# ---- the backend killed and restarted under a running ubitop -------------
out=$dir/restart.out
"$top" --socket "$rpc" --interval 0.3 --batch >"$out" 2>"$dir/restart.err" &
tpid=$!
pids+=("$tpid")
wait_for "$out" "  ALL " || bad "no frame before the kill"
exec 3>&2 2>/dev/null # no "Killed" job report
kill -KILL "$bpid"
wait "$bpid"
exec 2>&3 3>&-
wait_for "$out" "Connection error:" && ok "backend killed: Connection error" ||
	bad "backend killed: no Connection error: $(tail -n 5 "$out")"
contains "$out" "Retrying in 0.3s..." "backend killed: Retrying"
sleep 0.7
kill -0 "$tpid" 2>/dev/null && ok "ubitop keeps running without a backend" || bad "ubitop exited"
frames_before=$(count "$out" "ubitop - 2 queues")
start_backend || exit 1
for _ in $(seq 100); do
	[ "$(count "$out" "Connected to")" -ge 2 ] && [ "$(count "$out" "ubitop - 2 queues")" -gt "$frames_before" ] && break
	sleep 0.05
done
expect 2 "$(count "$out" "Connected to $rpc")" "backend restarted: Connected to again"
[ "$(count "$out" "ubitop - 2 queues")" -gt "$frames_before" ] && ok "backend restarted: new frames" ||
	bad "backend restarted: no new frames"
kill -TERM "$tpid"
wait "$tpid"
expect 143 $? "SIGTERM ends ubitop with the signal"
kill -TERM "$bpid"
wait "$bpid"
expect 0 $? "backend: SIGTERM exit 0"

# ---- hostile servers -----------------------------------------------------
hostile() { # MODE SECONDS EXPECTED-ERROR
	fake "$1" || return
	local o=$dir/hostile-$1.out
	timeout "$2" "$top" --socket "$fsock" --interval 0.2 --batch >"$o" 2>"$dir/hostile-$1.err"
	local rc=$?
	expect 124 "$rc" "$1: still running at the end (no crash)"
	contains "$o" "Connection error: $3" "$1: Connection error: $3"
	[ "$(count "$o" "Connected to")" -ge 2 ] && ok "$1: reconnects after the error" ||
		bad "$1: did not reconnect: $(head -c 1000 "$o")"
	grep -q $'\x1b' "$o" && bad "$1: an escape character reached the output" || ok "$1: no escape character in the output"
	grep -h 'runtime error\|AddressSanitizer\|LeakSanitizer' "$dir/hostile-$1.err" && bad "$1: sanitizer report"
	kill "$fpid" 2>/dev/null
}
hostile garbage 2 "invalid JSON in reply: "
hostile endless 3 "reply line exceeds 1048576 bytes"
hostile close 2 "RPC socket closed"
hostile reset 2 "[Errno "  # reset by peer, or broken pipe if the close comes first
hostile escape 2 'server error: \x1b]0;pwned\x07\x1b[2J\x1b[31mred'
hostile negative 2 'malformed stats reply: "bytes_read" of queue 0 is not a non-negative integer'
hostile bignum 2 "invalid JSON in reply: "
hostile deep 3 "invalid JSON in reply: "
hostile huge 3 "malformed stats reply: 5000 queues (at most 1024)"
hostile stall 7 "timed out waiting for the RPC server"

# ---- in a terminal ----------------------------------------------------------
if command -v script >/dev/null && fake counter; then
	out=$dir/tty.out
	(sleep 1.5; printf q) | TERM=xterm timeout 10 script -qec \
		"stty cols 150 rows 40; exec '$top' --socket '$fsock' --interval 0.3" /dev/null >"$out" 2>&1
	expect 0 $? "terminal: q quits with exit 0"
	contains "$out" $'\x1b[?1049h\x1b[?25l' "terminal: alternate screen, cursor hidden"
	contains "$out" $'\x1b[?25h\x1b[?1049l' "terminal: cursor shown, alternate screen left"
	contains "$out" $'\x1b[32m\xe2\x95\xad' "terminal: green rounded panel border"
	contains "$out" $'\x1b[34m\xe2\x96\x84' "terminal: blue read bar"
	contains "$out" "Stopped by user" "terminal: q prints Stopped by user"
	(sleep 1; printf '\003') | TERM=xterm timeout 10 script -qec \
		"stty cols 60 rows 10; exec '$dir/dflint' '$top' --socket '$fsock' --interval 0.3" /dev/null >"$out" 2>&1
	expect 0 $? "terminal: Ctrl-C exits 0"
	contains "$out" $'\x1b[?25h\x1b[?1049l' "terminal: Ctrl-C restores the terminal"
	contains "$out" "Stopped by user" "terminal: Ctrl-C prints Stopped by user"
	(sleep 1; printf q) | TERM=xterm timeout 10 script -qec \
		"stty -g >'$dir/before.stty'; '$top' --socket '$fsock' --interval 0.3; stty -g >'$dir/after.stty'" \
		/dev/null >"$out" 2>&1
	[ -s "$dir/before.stty" ] && cmp -s "$dir/before.stty" "$dir/after.stty" &&
		ok "terminal: modes restored (stty -g before = after)" || bad "terminal: modes not restored"
	kill "$fpid" 2>/dev/null
else
	echo "note: script(1) not installed, terminal checks skipped"
fi

grep -h 'runtime error\|AddressSanitizer\|LeakSanitizer' "$dir"/*.err "$dir/backend.log" 2>/dev/null && bad "sanitizer report"
if [ "$fails" -eq 0 ]; then
	echo "all checks passed"
	exit 0
fi
echo "$fails check(s) failed"
exit 1
