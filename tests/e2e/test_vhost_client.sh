#!/usr/bin/env bash
# vhost-backend against the vhost-client test front end (no VM): the
# conformance checks and every hostile case, on a plain and on an encrypted
# disk. After each run the backend must still be alive, answer SIGTERM with
# exit status 0 and have no sanitizer report on stderr.
set -u
build=${UBIBLK_BUILD:?}
backend=$build/src/bin/vhost-backend
client=$build/tests/vhost-client/vhost-client
for b in "$backend" "$client"; do
	[ -x "$b" ] || { echo "FAILED: $b is not built"; exit 1; }
done

dir=$(mktemp -d "${TMPDIR:-/tmp}/ubiblk-vhost-client.XXXXXX")
pid=
cleanup() {
	[ -n "$pid" ] && kill -KILL "$pid" 2>/dev/null
	rm -rf "$dir"
}
trap cleanup EXIT

fails=0
failed() {
	echo "FAILED: $*"
	fails=$((fails + 1))
}

# A 64-byte XTS key whose halves differ (key1 != key2).
while :; do
	head -c 32 /dev/urandom >"$dir/k1"
	head -c 32 /dev/urandom >"$dir/k2"
	cmp -s "$dir/k1" "$dir/k2" || break
done
cat "$dir/k1" "$dir/k2" | base64 -w0 >"$dir/xts_key"
chmod 600 "$dir/xts_key"

write_config() { # name encrypted(yes/no)
	{
		echo '[device]'
		echo "data_path = \"$1.raw\""
		echo "vhost_socket = \"$1.sock\""
		if [ "$2" = yes ]; then
			echo '[encryption]'
			echo 'xts_key.ref = "k"'
			echo '[secrets.k]'
			echo 'source.file = "xts_key"'
			echo 'encoding = "base64"'
		fi
		echo '[tuning]'
		echo 'num_queues = 2'
		echo 'queue_size = 128'
		echo '[danger_zone]'
		echo 'enabled = true'
		echo 'allow_unencrypted_disk = true'
		echo 'allow_secret_over_regular_file = true'
	} >"$dir/$1.toml"
	chmod 600 "$dir/$1.toml"
	truncate -s 64M "$dir/$1.raw"
}

# Waits up to 10 s for the socket; 1 when the backend died or never
# listened.
wait_socket() {
	local i
	for i in $(seq 1 200); do
		[ -S "$1" ] && return 0
		kill -0 "$pid" 2>/dev/null || return 1
		sleep 0.05
	done
	return 1
}

run_disk() { # name encrypted(yes/no)
	local name=$1 log=$dir/$1.log rc
	write_config "$name" "$2"
	(cd "$dir" && exec "$backend" -f "$name.toml") 2>"$log" &
	pid=$!
	if ! wait_socket "$dir/$name.sock"; then
		failed "$name: vhost-backend does not listen"
		sed 's/^/  | /' "$log" | tail -n 20
		kill -KILL "$pid" 2>/dev/null
		wait "$pid" 2>/dev/null
		pid=
		return
	fi
	for cmd in conform hostile; do
		if "$client" --socket "$dir/$name.sock" "$cmd" \
			>"$dir/$name.$cmd.out" 2>&1; then
			echo "$name: $cmd: $(tail -n 1 "$dir/$name.$cmd.out")"
		else
			failed "$name: vhost-client $cmd"
			grep -v '^ok ' "$dir/$name.$cmd.out" | sed 's/^/  | /'
		fi
	done
	if kill -0 "$pid" 2>/dev/null; then
		kill -TERM "$pid"
		wait "$pid"
		rc=$?
		[ "$rc" -eq 0 ] || failed "$name: exit status $rc after SIGTERM"
	else
		wait "$pid"
		failed "$name: vhost-backend died (status $?)"
	fi
	pid=
	if grep -Eq 'AddressSanitizer|LeakSanitizer|UndefinedBehaviorSanitizer|runtime error:' "$log"; then
		failed "$name: sanitizer report"
		grep -E -A 15 'Sanitizer|runtime error:' "$log" | head -n 40 |
			sed 's/^/  | /'
	fi
	[ -S "$dir/$name.sock" ] &&
		failed "$name: socket left behind after SIGTERM"
	echo "$name: backend log: $(wc -l <"$log") lines"
}

run_disk plain no
run_disk encrypted yes

[ "$fails" -eq 0 ] || exit 1
echo "vhost-client conform and hostile pass on a plain and an encrypted disk"
