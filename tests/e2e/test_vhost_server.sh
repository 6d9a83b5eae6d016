#!/usr/bin/env bash
# vhost-backend as a server (backends.md §3.1, §8.1; §10 criteria 14-16):
# refused configurations (no vhost_socket, metadata_path, missing directory,
# a path that is not a socket), socket mode 0660, stale socket replaced, a
# live one not taken over, raw connect-then-close and bad messages end only
# their connection, SIGTERM/SIGINT exit 0 and remove the socket. Then, when
# QEMU is installed, a real front end (SeaBIOS only, TCG) handshakes over
# an encrypted device, disconnects, and a second QEMU is served.
set -u
bin=${UBIBLK_BUILD:?}/src/bin/vhost-backend
[ -x "$bin" ] || { echo "vhost-backend not built at $bin"; exit 1; }
command -v python3 >/dev/null || { echo "SKIP: python3 not installed"; exit 77; }
dir=$(mktemp -d)
pids=()
cleanup() {
	local p
	for p in "${pids[@]}"; do kill -KILL "$p" 2>/dev/null; done
	rm -rf "$dir"
}
trap cleanup EXIT
fails=0
ok() { echo "ok: $1"; }
bad() { echo "FAILED: $1"; fails=$((fails + 1)); }
contains() { # file text description
	if grep -qF -- "$2" "$1"; then ok "$3"; else
		bad "$3: '$2' not in $1:"; tail -n 40 "$1"; fi
}
lacks() {
	if grep -qF -- "$2" "$1"; then bad "$3: '$2' found in $1"; else ok "$3"; fi
}
# Polls (up to $3 seconds) until file $1, from line ${4:-1} on, contains $2.
wait_for() {
	local i n
	for ((i = 0; i < $3 * 10; i++)); do
		n=$(tail -n +"${4:-1}" "$1" 2>/dev/null | grep -cF -- "$2")
		[ "${n:-0}" -ge 1 ] && return 0
		sleep 0.1
	done
	return 1
}

# Sanitizer builds: a report anywhere is a failure.
check_sanitizers() {
	local f
	for f in "$dir"/*.log "$dir/err"; do
		[ -f "$f" ] || continue
		if grep -qE "runtime error|AddressSanitizer|LeakSanitizer" "$f"; then
			bad "sanitizer report in $(basename "$f")"
			grep -A20 -E "runtime error|Sanitizer" "$f" | head -40
		fi
	done
}
sock=$dir/vhost.sock
truncate -s 16M "$dir/disk.raw"
# write_config FILE SOCKET [extra TOML lines...]
write_config() {
	local f=$1 s=$2
	shift 2
	{
		echo '[device]'
		echo 'data_path = "disk.raw"'
		[ -n "$s" ] && echo "vhost_socket = \"$s\""
		printf '%s\n' "$@"
		echo '[tuning]'
		echo 'num_queues = 2'
		echo '[danger_zone]'
		echo 'enabled = true'
		echo 'allow_unencrypted_disk = true'
	} >"$f"
	chmod 600 "$f"
}

# A raw vhost-user client: close | garbage | features.
client() {
	python3 - "$@" <<'PY'
import socket, struct, sys
path, action = sys.argv[1], sys.argv[2]
s = socket.socket(socket.AF_UNIX)
s.settimeout(10)
s.connect(path)
def recv(n):
    b = b""
    while len(b) < n:
        c = s.recv(n - len(b))
        if not c:
            break
        b += c
    return b
if action == "garbage":
    s.sendall(struct.pack("<III", 99, 1, 0))
    print("closed" if recv(1) == b"" else "open")
elif action == "features":
    s.sendall(struct.pack("<III", 1, 1, 0))
    h = struct.unpack("<III", recv(12))
    v = struct.unpack("<Q", recv(8))[0]
    print("reply %d %d %d 0x%x" % (h + (v,)))
    s.sendall(struct.pack("<III", 15, 1, 0))
    recv(12)
    print("protocol 0x%x" % struct.unpack("<Q", recv(8))[0])
s.close()
PY
}

# A stale socket file: bound, then its owner went away.
make_stale_socket() {
	python3 -c 'import socket,sys; socket.socket(socket.AF_UNIX).bind(sys.argv[1])' "$1"
}

bpid=
# start_backend CONFIG LOG: returns once the socket is listening.
start_backend() {
	UBIBLK_LOG=debug "$bin" -f "$1" >"$2" 2>&1 &
	bpid=$!
	pids+=("$bpid")
	wait_for "$2" "listening on vhost-user socket" 20 && return 0
	echo "backend did not start:"
	cat "$2"
	return 1
}
# stop_backend SIGNAL: echoes the exit status.
stop_backend() {
	kill -"$1" "$bpid"
	wait "$bpid"
}

# --- refused configurations ------------------------------------------------
write_config "$dir/nosock.toml" ""
"$bin" -f "$dir/nosock.toml" >"$dir/out" 2>"$dir/err"
rc=$?
[ "$rc" -eq 1 ] && ok "missing vhost_socket exits 1" || bad "missing vhost_socket: exit $rc"
contains "$dir/err" "socket must be specified for the vhost backend" "missing vhost_socket message (criterion 14)"

write_config "$dir/meta.toml" "vhost.sock" 'metadata_path = "meta.bin"'
"$bin" -f "$dir/meta.toml" >"$dir/out" 2>"$dir/err"
rc=$?
[ "$rc" -eq 1 ] && ok "missing metadata file exits 1" || bad "missing metadata file: exit $rc"
contains "$dir/err" "Failed to build backend environment" "missing metadata file message"
[ ! -e "$sock" ] && ok "no socket created when refusing" || bad "socket created although refused"

write_config "$dir/nodir.toml" "missing/vhost.sock"
"$bin" -f "$dir/nodir.toml" >"$dir/out" 2>"$dir/err"
rc=$?
[ "$rc" -eq 1 ] && ok "socket in a missing directory exits 1 (criterion 16)" || bad "missing directory: exit $rc"
contains "$dir/err" "cannot bind the vhost-user socket" "missing directory message"

write_config "$dir/config.toml" "vhost.sock"
echo "precious" >"$sock"
"$bin" -f "$dir/config.toml" >"$dir/out" 2>"$dir/err"
rc=$?
[ "$rc" -eq 1 ] && ok "a regular file at the socket path is refused" || bad "regular file at socket path: exit $rc"
contains "$dir/err" "is not a socket" "non-socket message"
grep -q precious "$sock" && ok "the regular file is left alone" || bad "the regular file was changed"
rm -f "$sock"

# --- serving -----------------------------------------------------------------
make_stale_socket "$sock"
[ -S "$sock" ] || bad "could not create a stale socket"
if start_backend "$dir/config.toml" "$dir/b1.log"; then
	contains "$dir/b1.log" "Starting vhost-user-blk backend. Process ID: $bpid" "start-up log line"
	contains "$dir/b1.log" "removed stale socket" "stale socket replaced"
	mode=$(stat -c %a "$sock")
	[ "$mode" = 660 ] && ok "socket mode 0660" || bad "socket mode is $mode"
	[ -S "$sock" ] && ok "socket file is a socket" || bad "socket file is not a socket"

	client "$sock" close
	client "$sock" close
	out=$(client "$sock" garbage)
	[ "$out" = closed ] && ok "a bad message closes its connection" || bad "bad message: $out"
	out=$(client "$sock" features)
	echo "$out" | grep -q '^reply 1 5 8 0x17000.e46$' && ok "still serving after raw closes (criterion 15): $(echo $out)" ||
		bad "GET_FEATURES after raw closes: $out"
	echo "$out" | grep -q '^protocol 0x8209$' && ok "protocol features 0x8209" || bad "protocol features: $out"
	contains "$dir/b1.log" "unknown request code 99" "bad message logged"
	n=$(grep -c "Finished serving socket!" "$dir/b1.log")
	[ "$n" -ge 3 ] && ok "each connection was torn down ($n)" || bad "only $n connections finished"
	kill -0 "$bpid" 2>/dev/null && ok "backend alive after bad clients" || bad "backend died"

	# A second backend does not take over a live socket.
	"$bin" -f "$dir/config.toml" >"$dir/out" 2>"$dir/err"
	rc=$?
	[ "$rc" -eq 1 ] && ok "a live socket is not taken over" || bad "second backend: exit $rc"
	contains "$dir/err" "another process is listening" "live socket message"

	stop_backend TERM
	rc=$?
	[ "$rc" -eq 0 ] && ok "SIGTERM exits 0" || bad "SIGTERM: exit $rc"
	[ ! -e "$sock" ] && ok "SIGTERM removes the socket" || bad "socket left after SIGTERM"
	contains "$dir/b1.log" "shutting down" "shutdown logged"
fi

# SIGINT while a front end is connected: drained, flushed, exit 0.
if start_backend "$dir/config.toml" "$dir/b2.log"; then
	python3 - "$sock" <<'PY' &
import socket, sys, time
s = socket.socket(socket.AF_UNIX)
s.connect(sys.argv[1])
s.settimeout(20)
s.recv(1)
PY
	cpid=$!
	pids+=("$cpid")
	wait_for "$dir/b2.log" "front end connected" 10
	stop_backend INT
	rc=$?
	[ "$rc" -eq 0 ] && ok "SIGINT with a connection exits 0" || bad "SIGINT: exit $rc"
	contains "$dir/b2.log" "shutdown requested: closing the vhost-user connection" "connection closed on SIGINT"
	[ ! -e "$sock" ] && ok "SIGINT removes the socket" || bad "socket left after SIGINT"
	wait "$cpid" 2>/dev/null
fi

# --- a real front end -------------------------------------------------------
qemu=$(command -v qemu-system-x86_64)
if [ -z "$qemu" ]; then
	echo "qemu-system-x86_64 not installed: QEMU handshake not checked"
	check_sanitizers
	[ "$fails" -eq 0 ] || { echo "$fails check(s) failed"; exit 1; }
	echo "SKIP: qemu-system-x86_64 not installed (everything else passed)"
	exit 77
fi

key=$(python3 -c 'import base64; print(base64.b64encode(bytes(range(64))).decode())')
cat >"$dir/enc.toml" <<T
[device]
data_path = "disk.raw"
vhost_socket = "vhost.sock"
[tuning]
num_queues = 2
[encryption]
xts_key.ref = "xts"
[secrets.xts]
source.inline = "$key"
encoding = "base64"
[danger_zone]
enabled = true
allow_inline_plaintext_secrets = true
T
chmod 600 "$dir/enc.toml"

qpid=
start_qemu() { # log
	timeout 120 "$qemu" -machine q35,accel=tcg -m 256 \
		-object memory-backend-memfd,id=mem,size=256M,share=on \
		-numa node,memdev=mem \
		-chardev socket,id=c0,path="$sock" \
		-device vhost-user-blk-pci,chardev=c0,num-queues=2 \
		-display none -nodefaults >"$1" 2>&1 &
	qpid=$!
	pids+=("$qpid")
}

if start_backend "$dir/enc.toml" "$dir/q.log"; then
	contains "$dir/q.log" "exposed device: crypt" "encrypted device built"
	start_qemu "$dir/qemu1.log"
	# SeaBIOS finds the disk: QEMU starts the device (memory, rings).
	if wait_for "$dir/q.log" "SET_VRING_ENABLE" 90; then
		ok "QEMU set up the rings"
	else
		bad "QEMU did not set up the rings"
		cat "$dir/qemu1.log"
	fi
	for m in GET_FEATURES GET_PROTOCOL_FEATURES SET_PROTOCOL_FEATURES \
		GET_QUEUE_NUM SET_OWNER GET_CONFIG SET_FEATURES \
		SET_VRING_NUM SET_VRING_BASE SET_VRING_ADDR SET_VRING_KICK \
		SET_VRING_CALL; do
		contains "$dir/q.log" "vhost-user: $m (" "QEMU sent $m"
	done
	if grep -qE "vhost-user: (SET_MEM_TABLE|ADD_MEM_REG) \(" "$dir/q.log"; then
		ok "QEMU sent its memory (SET_MEM_TABLE or ADD_MEM_REG)"
	else
		bad "no memory table from QEMU"
	fi
	sleep 1
	kill -0 "$qpid" 2>/dev/null && ok "QEMU still running" || { bad "QEMU exited"; cat "$dir/qemu1.log"; }
	lacks "$dir/q.log" "Client disconnected" "the connection stayed up"
	lacks "$dir/q.log" "ERROR" "no errors logged"
	kill -TERM "$qpid"
	wait "$qpid" 2>/dev/null
	wait_for "$dir/q.log" "Client disconnected" 20 && ok "QEMU's exit ends the connection" ||
		bad "no disconnect after QEMU exited"
	wait_for "$dir/q.log" "Finished serving socket!" 20

	# The same backend serves the next QEMU.
	mark=$(($(wc -l <"$dir/q.log") + 1))
	start_qemu "$dir/qemu2.log"
	if wait_for "$dir/q.log" "SET_VRING_ENABLE" 90 "$mark" &&
		wait_for "$dir/q.log" "front end connected" 1 "$mark"; then
		ok "a second QEMU is served"
	else
		bad "the second QEMU was not served"
		cat "$dir/qemu2.log"
	fi
	kill -TERM "$qpid"
	wait "$qpid" 2>/dev/null
	stop_backend TERM
	rc=$?
	[ "$rc" -eq 0 ] && ok "SIGTERM after QEMU exits 0" || bad "SIGTERM after QEMU: exit $rc"
	lacks "$dir/q.log" "ERROR" "no errors logged across both QEMU runs"
fi

check_sanitizers

[ "$fails" -eq 0 ] || { echo "$fails check(s) failed"; exit 1; }
echo "all vhost server checks passed"
