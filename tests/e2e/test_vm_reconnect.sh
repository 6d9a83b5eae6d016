#!/usr/bin/env bash
# The backend is killed with SIGKILL and restarted, twice, while a QEMU
# guest (vhost-user socket with reconnect=1) writes and verifies: QEMU
# reconnects, the I/O that was in flight completes after the pause, and
# fio's crc32c verify of every block written (with the write sequence
# number in each header, so a lost or stale write is caught) finds no
# error.
#
# Each guest job keeps one request in flight on its own queue: the
# backend offers no in-flight tracking (backends.md §3.1), so what QEMU
# resubmits after a reconnect is exact only for in-order completion.
set -u
. "$(dirname "$0")/vm/lib.sh"
vm_setup

make_disk r 16 --encrypted
backend_start r --queues 2 || exit 1

cat >"$dir/guest.sh" <<'EOF'
. /guest-lib.sh
echo "IO-START"
fio_verify reconnect /dev/vda --rw=randwrite --bs=4k --iodepth=1 --numjobs=2 \
	--size=8M --offset_increment=8M --loops=4 \
	--cpus_allowed=0-1 --cpus_allowed_policy=split
echo "IO-DONE"
# Everything again, read back after the restarts: a second pass over the
# whole disk with its own verify headers.
fio_verify after /dev/vda --rw=write --bs=64k --iodepth=4
finish
EOF

vm_start --vhost "$dir/r.sock" --num-queues 2 --reconnect --timeout 120 "$dir/guest.sh"
results=$vm_log/results.log

wait_for() { # pattern seconds
	local n
	for n in $(seq $(($2 * 10))); do
		grep -q "$1" "$results" 2>/dev/null && return 0
		kill -0 "$vm_pid" 2>/dev/null || return 1
		sleep 0.1
	done
	return 1
}

if wait_for '^IO-START' 60; then
	for round in 1 2; do
		sleep 1
		backend_kill r KILL
		echo "host: backend killed (round $round)"
		sleep 0.5
		if backend_start r; then
			echo "host: backend restarted (round $round)"
		else
			bad "backend restart $round"
		fi
	done
	if grep -q '^IO-DONE' "$results"; then
		bad "the guest's I/O had finished before the last restart: nothing was tested"
	else
		ok "both restarts happened while the guest was writing"
	fi
else
	bad "the guest did not start its I/O"
fi

vm_wait
rc=$?
[ "$rc" -eq 77 ] && exit 77
if [ "$rc" -eq 0 ]; then ok "guest verified all data"; else bad "guest exited $rc"; show_backend_log r; fi
finish
