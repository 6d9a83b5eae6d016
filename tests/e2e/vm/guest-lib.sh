# Helpers for guest test scripts (copied into the guest as /guest-lib.sh
# by vm_run; source it from the script). busybox sh.
set -o pipefail
fails=0
ok() { echo "ok: $*"; }
bad() { echo "FAILED: $*"; fails=$((fails + 1)); }
# expect_eq WANT GOT DESCRIPTION
expect_eq() {
	if [ "$1" = "$2" ]; then ok "$3 ($2)"; else bad "$3: got '$2', wanted '$1'"; fi
}
# run DESCRIPTION CMD...: the command must exit 0; its output is shown
# only when it fails.
run() {
	what=$1
	shift
	if "$@" >/tmp/run.out 2>&1; then
		ok "$what"
	else
		rc=$?
		bad "$what (exit $rc)"
		tail -n 30 /tmp/run.out
	fi
}
# fio_verify NAME DEV [fio options...]: direct I/O with crc32c verify
# headers in every block, checked when read back; verify errors are fatal.
fio_verify() {
	name=$1 dev=$2
	shift 2
	run "fio $name" fio --name="$name" --filename="$dev" --direct=1 \
		--ioengine=io_uring --verify=crc32c --verify_fatal=1 \
		--group_reporting "$@"
}
finish() {
	if [ "$fails" -eq 0 ]; then echo "guest: all checks passed"; exit 0; fi
	echo "guest: $fails check(s) failed"
	exit 1
}
