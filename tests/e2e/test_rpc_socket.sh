#!/usr/bin/env bash
# The RPC socket of a running vhost-backend, driven by real clients (socat,
# nc -U, jq) while the vhost-client test front end does I/O:
#   - socket mode 0600; version; status of a lazy disk (agrees with
#     dump-metadata) and of a plain one (null); stats count the front end's
#     requests per queue (bytes = ops x 4 KiB); queues shows reads in
#     flight during a QD32 run; replies in request order on one
#     connection; bad input answered with an error on a connection that
#     stays usable (invalid JSON, unknown command, wrong type, a 100 KiB
#     line); the client limit; a client that never reads its replies does
#     not slow the I/O; start-up errors (missing directory, a directory at
#     the path) exit 1 with the reason; SIGTERM removes the socket.
set -u
build=${UBIBLK_BUILD:?}
bin=$build/src/bin
client=$build/tests/vhost-client/vhost-client
for b in "$bin/vhost-backend" "$bin/init-metadata" "$bin/dump-metadata" "$client"; do
	[ -x "$b" ] || { echo "FAILED: $b is not built"; exit 1; }
done
for c in socat nc jq; do
	command -v "$c" >/dev/null || { echo "SKIP: '$c' is not installed (scripts/install-deps)"; exit 77; }
done

dir=$(mktemp -d "${TMPDIR:-/tmp}/ubiblk-rpc.XXXXXX")
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

# rpc SOCK LINE...: the lines on one connection, the replies on stdout.
rpc() {
	local s=$1
	shift
	printf '%s\n' "$@" | socat -t 3 - "UNIX-CONNECT:$s"
}

# 64-byte XTS key with distinct halves.
while :; do
	head -c 32 /dev/urandom >"$dir/k1"
	head -c 32 /dev/urandom >"$dir/k2"
	cmp -s "$dir/k1" "$dir/k2" || break
done
cat "$dir/k1" "$dir/k2" | base64 -w0 >"$dir/key"
chmod 600 "$dir/key"
head -c $((8 << 20)) /dev/urandom >"$dir/image.raw"

# config NAME LAZY(yes/no) RPC_PATH
config() {
	{
		echo '[device]'
		echo "data_path = \"$1.raw\""
		[ "$2" = yes ] && echo "metadata_path = \"$1.meta\""
		echo "vhost_socket = \"$1.sock\""
		echo "rpc_socket = \"$3\""
		echo '[tuning]'
		echo 'num_queues = 2'
		echo 'queue_size = 64'
		echo '[encryption]'
		echo 'xts_key.ref = "k"'
		echo '[secrets.k]'
		echo 'source.file = "key"'
		echo 'encoding = "base64"'
		if [ "$2" = yes ]; then
			echo '[stripe_source]'
			echo 'type = "raw"'
			echo 'image_path = "image.raw"'
			echo 'copy_on_read = true'
		fi
		echo '[danger_zone]'
		echo 'enabled = true'
		echo 'allow_secret_over_regular_file = true'
	} >"$dir/$1.toml"
	chmod 600 "$dir/$1.toml"
	truncate -s 32M "$dir/$1.raw"
}

start() { # NAME -> $pid
	rm -f "$dir/$1.sock"
	"$bin/vhost-backend" -f "$dir/$1.toml" 2>"$dir/$1.log" &
	pid=$!
	pids+=("$pid")
	for _ in $(seq 100); do
		[ -S "$dir/$1.sock" ] && return 0
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.05
	done
	bad "backend $1 did not start"
	cat "$dir/$1.log"
	return 1
}

# --- a lazy disk ---------------------------------------------------------
config lazy yes "$dir/lazy.rpc"
"$bin/init-metadata" -f "$dir/lazy.toml" -s 9 || bad "init-metadata"
start lazy || exit 1
s=$dir/lazy.rpc
expect 600 "$(stat -c %a "$s")" "RPC socket mode 0600"
expect "{\"version\":\"$("$bin/vhost-backend" --version | awk '{print $NF}')\"}" \
	"$(rpc "$s" '{"command":"version"}')" "version (socat)"
expect '{"version"' "$(printf '{"command":"version"}\n' | nc -U -N "$s" | cut -c1-10)" "version (nc -U)"

st=$(rpc "$s" '{"command":"status"}')
expect 128 "$(jq .status.stripes.total <<<"$st")" "status: 32 MiB / 256 KiB stripes = 128 total"
expect 32 "$(jq .status.stripes.source <<<"$st")" "status: 8 MiB image = 32 source stripes"
expect 0 "$(jq .status.stripes.fetched <<<"$st")" "status: nothing fetched yet"
expect 0 "$(jq .status.stripes.failed <<<"$st")" "status: no failed stripes"
expect true "$(jq '.status.fetch | has("bytes_per_sec") and has("eta_sec")' <<<"$st")" "status: fetch rate and ETA"
expect '{"stats":{"queues":[{"bytes_read":0,"bytes_written":0,"flush_ops":0,"read_ops":0,"write_ops":0},{"bytes_read":0,"bytes_written":0,"flush_ops":0,"read_ops":0,"write_ops":0}]}}' \
	"$(rpc "$s" '{"command":"stats"}')" "stats of an idle disk, members sorted"
expect '{"queues":[[],[]]}' "$(rpc "$s" '{"command":"queues"}')" "queues of an idle disk"

# I/O from the test front end: 2 queues, QD32 random reads over the image
# area, while a second client samples `queues`.
"$client" --socket "$dir/lazy.sock" bench --rw randread --qd 32 --queues 2 \
	--seconds 2 --size $((8 << 20)) >"$dir/bench1.out" 2>&1 &
bpid=$!
seen=0
for _ in $(seq 40); do
	q=$(rpc "$s" '{"command":"queues"}')
	if jq -e '[.queues[][] | select(.[0] == "read" and .[2] == 8)] | length > 0' <<<"$q" >/dev/null 2>&1; then
		seen=1
		break
	fi
	sleep 0.05
done
wait "$bpid" || bad "bench run: $(cat "$dir/bench1.out")"
expect 1 "$seen" "queues lists 4 KiB reads in flight (8 sectors) during the run"
stats=$(rpc "$s" '{"command":"stats"}')
expect true "$(jq '[.stats.queues[] | .read_ops > 0] | all' <<<"$stats")" "stats: reads counted on both queues"
expect true "$(jq '[.stats.queues[] | .bytes_read == .read_ops * 4096] | all' <<<"$stats")" "stats: bytes_read = read_ops x 4096"
expect 0 "$(jq '[.stats.queues[] | .write_ops] | add' <<<"$stats")" "stats: no writes"
st=$(rpc "$s" '{"command":"status"}')
f=$(jq .status.stripes.fetched <<<"$st")
[ "$f" -gt 0 ] && ok "status: reads fetched $f stripes (copy_on_read)" || bad "status: nothing fetched after reads"
expect '{"queues":[[],[]]}' "$(rpc "$s" '{"command":"queues"}')" "queues empty again after the run"

# One connection, many requests: replies in order; errors keep it open.
big=$(head -c 102400 /dev/zero | tr '\0' 'x')
out=$(rpc "$s" '{"command":"version"}' '' '   ' '{ not json' '{"command":"destroy_world"}' \
	'{"command":5}' '[1,2]' "{\"command\":\"$big\"}" '  {"command":"stats"}  ')
mapfile -t r <<<"$out"
expect '{"version"' "${r[0]:0:10}" "reply 1: version"
[[ ${r[1]} == '{"error":"invalid request: '* ]] && ok "reply 2: invalid JSON -> invalid request" || bad "reply 2: ${r[1]}"
expect '{"error":"unknown command: destroy_world"}' "${r[2]}" "reply 3: unknown command"
[[ ${r[3]} == '{"error":"invalid request: '* ]] && ok "reply 4: non-string command -> invalid request" || bad "reply 4: ${r[3]}"
[[ ${r[4]} == '{"error":"invalid request: '* ]] && ok "reply 5: not an object -> invalid request" || bad "reply 5: ${r[4]}"
[[ ${r[5]} == '{"error":"invalid request: line exceeds'* ]] && ok "reply 6: 100 KiB line rejected" || bad "reply 6: ${r[5]:0:200}"
expect '{"stats"' "${r[6]:0:8}" "reply 7: the connection still answers after all that"
[ "${#r[@]}" -eq 7 ] && ok "7 replies for 7 non-empty lines" || bad "${#r[@]} replies for 7 non-empty lines"

# The client limit (16): 16 idle connections held open, the 17th refused,
# and after they go a new one is served.
holders=()
for _ in $(seq 16); do
	sleep 4 | socat - "UNIX-CONNECT:$s" >/dev/null 2>&1 &
	holders+=($!)
done
sleep 0.5
expect '{"error":"too many clients"}' "$(rpc "$s" '{"command":"version"}')" "17th client refused"
kill "${holders[@]}" 2>/dev/null
pkill -f "UNIX-CONNECT:$s" 2>/dev/null
wait "${holders[@]}" 2>/dev/null
sleep 0.3
expect '{"version"' "$(rpc "$s" '{"command":"version"}' | cut -c1-10)" "served again once the others left"

# A client that sends thousands of requests and never reads its replies
# must not slow the I/O threads down: a write run completes normally.
python3 - "$s" <<'EOF' &
import socket, sys, time
c = socket.socket(socket.AF_UNIX)
c.connect(sys.argv[1])
c.setblocking(False)
end = time.time() + 3
while time.time() < end:
    try:
        c.send(b'{"command":"queues"}\n{"command":"stats"}\n' * 64)
    except BlockingIOError:
        time.sleep(0.01)
time.sleep(1)
EOF
hog=$!
pids+=("$hog")
"$client" --socket "$dir/lazy.sock" bench --rw randwrite --qd 16 --queues 2 \
	--seconds 2 --offset $((16 << 20)) --size $((8 << 20)) >"$dir/bench2.out" 2>&1
rc=$?
expect 0 "$rc" "write run next to a client that never reads its replies"
iops=$(grep -o '"iops":[0-9.]*' "$dir/bench2.out" | head -n 1 | cut -d: -f2)
[ -n "$iops" ] && awk -v i="$iops" 'BEGIN { exit !(i > 100) }' &&
	ok "the write run did $iops IOPS" || bad "write run: $(cat "$dir/bench2.out")"
wait "$hog" 2>/dev/null
stats=$(rpc "$s" '{"command":"stats"}')
expect true "$(jq '[.stats.queues[] | .bytes_written == .write_ops * 4096 and .write_ops > 0] | all' <<<"$stats")" "stats: writes counted"

# dump-metadata agrees with status once the backend is stopped.
f=$(rpc "$s" '{"command":"status"}' | jq .status.stripes.fetched)
kill -TERM "$pid"
wait "$pid"
expect 0 "$?" "SIGTERM: exit 0"
[ -e "$s" ] && bad "RPC socket left behind" || ok "RPC socket removed at exit"
n=$("$bin/dump-metadata" -f "$dir/lazy.toml" | sed -n 's/^fetched stripes: //p' | tr ',' '\n' |
	awk -F- 'NF == 2 { n += $2 - $1 + 1 } NF == 1 && $1 ~ /[0-9]/ { n++ } END { print n + 0 }')
expect "$f" "$n" "status fetched = dump-metadata's fetched stripes"

# --- a plain disk: status null --------------------------------------------
config plain no "$dir/plain.rpc"
start plain || exit 1
expect '{"status":null}' "$(rpc "$dir/plain.rpc" '{"command":"status"}')" "status without metadata: null"
kill -TERM "$pid"
wait "$pid"

# --- start-up errors ------------------------------------------------------
config bad1 no "$dir/missing/dir/x.rpc"
"$bin/vhost-backend" -f "$dir/bad1.toml" 2>"$dir/bad1.err"
expect 1 "$?" "RPC socket in a missing directory: exit 1"
grep -q 'failed to bind RPC socket' "$dir/bad1.err" && ok "... says 'failed to bind RPC socket'" ||
	bad "missing dir message: $(cat "$dir/bad1.err")"
mkdir "$dir/isadir"
config bad2 no "$dir/isadir"
"$bin/vhost-backend" -f "$dir/bad2.toml" 2>"$dir/bad2.err"
expect 1 "$?" "a directory at the RPC path: exit 1"
grep -q 'failed to remove existing RPC socket' "$dir/bad2.err" && ok "... says 'failed to remove existing RPC socket'" ||
	bad "directory message: $(cat "$dir/bad2.err")"
[ -e "$dir/bad1.sock" ] || [ -e "$dir/bad2.sock" ] && bad "vhost socket created despite the RPC error" ||
	ok "no vhost socket after an RPC start-up error"

grep -h 'runtime error\|AddressSanitizer' "$dir"/*.log "$dir"/*.err 2>/dev/null && bad "sanitizer report"
if [ "$fails" -eq 0 ]; then
	echo "all checks passed"
	exit 0
fi
echo "$fails check(s) failed"
exit 1
