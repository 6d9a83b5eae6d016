# Host side of the VM tests (sourced by tests/e2e/test_vm_*.sh and
# bench/run-vm): scratch directory, disks, backends, guest runs.
#
# UBIBLK_VM_KEEP=1 keeps the scratch directory (logs, images).
# Backends: UBIBLK_VM_BACKEND=ours (default: $UBIBLK_BUILD/src/bin/
# vhost-backend) or qsd (qemu-storage-daemon, the reference peer; an
# encrypted disk is then a LUKS image with AES-256-XTS).
#
#   vm_setup [--no-backend]         scratch dir $dir, cleanup trap, skips
#                                   (exit 77) when QEMU cannot run here or
#                                   the guest kernel cannot be fetched
#   make_disk NAME MIB [--encrypted]  $dir/NAME.img (plus its key)
#   disk_offset NAME                where guest byte 0 is in NAME.img
#   backend_start NAME [--queues N] [--queue-size N] [--id ID]
#                 [--tuning 'KEY = VALUE']...
#                                   serve disk NAME at $dir/NAME.sock
#                                   (--tuning: extra [tuning] lines, ours)
#   backend_kill NAME [SIGNAL]      (SIGKILL by default) and wait
#   vm_run [run-vm options] SCRIPT  boot with the guest helpers, result
#                                   log in $vm_log/results.log
#   vm_start ... / vm_wait          the same in the background ($vm_pid)
#   ok / bad / finish               verdicts; finish exits 0 or 1

vm_here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
vm_top=$(cd "$vm_here/../../.." && pwd)
backend=${UBIBLK_VM_BACKEND:-ours}
fails=0
vm_runs=0
declare -A backend_pid=()
declare -A backend_args=()

ok() { echo "ok: $*"; }
bad() { echo "FAILED: $*"; fails=$((fails + 1)); }
finish() {
	if [ "$fails" -eq 0 ]; then
		echo "all checks passed (backend: $backend)"
		exit 0
	fi
	echo "$fails check(s) failed (backend: $backend)"
	exit 1
}

vm_cleanup() {
	local n
	[ -z "${vm_pid:-}" ] || { kill "$vm_pid" 2>/dev/null; wait "$vm_pid" 2>/dev/null; }
	for n in "${!backend_pid[@]}"; do
		kill "${backend_pid[$n]}" 2>/dev/null
		wait "${backend_pid[$n]}" 2>/dev/null
	done
	[ -n "${dir:-}" ] || return
	if [ -n "${UBIBLK_VM_KEEP:-}" ]; then
		echo "kept: $dir"
	else
		rm -rf "$dir"
	fi
}

vm_setup() {
	if ! command -v qemu-system-x86_64 >/dev/null; then
		echo "SKIP: qemu-system-x86_64 is not installed (package qemu-system-x86)"
		exit 77
	fi
	[ "${1:-}" = --no-backend ] && backend=none
	case "$backend" in
	none) ;;
	ours)
		ours_bin=${UBIBLK_BUILD:?UBIBLK_BUILD must name a build directory}/src/bin/vhost-backend
		[ -x "$ours_bin" ] || { echo "FAILED: vhost-backend not built at $ours_bin"; exit 1; }
		;;
	qsd)
		command -v qemu-storage-daemon >/dev/null ||
			{ echo "FAILED: qemu-storage-daemon not installed (package qemu-system-common)"; exit 1; }
		;;
	*) echo "FAILED: UBIBLK_VM_BACKEND must be ours or qsd, not '$backend'"; exit 1 ;;
	esac
	local rc
	"$vm_here/build-guest" --quiet
	rc=$?
	[ "$rc" -eq 77 ] && exit 77
	[ "$rc" -eq 0 ] || { echo "FAILED: build-guest exited $rc"; exit 1; }
	dir=$(mktemp -d "${TMPDIR:-/tmp}/ubiblk-vmtest.XXXXXX")
	trap vm_cleanup EXIT
	trap 'exit 130' INT TERM
	echo "backend: $backend, scratch: $dir"
}

# make_disk NAME MIB [--encrypted]: a zeroed disk of MIB MiB as the guest
# sees it. Ours: a raw file (encrypted: plus a 64-byte XTS key with two
# different halves, base64 in $dir/NAME.key). qsd: a raw file or a LUKS
# image whose payload is MIB MiB.
make_disk() {
	local name=$1 mib=$2 enc=0
	[ "${3:-}" = --encrypted ] && enc=1
	echo "$enc" >"$dir/$name.enc"
	if [ "$enc" = 1 ] && [ "$backend" = qsd ]; then
		# LUKS1 (what QEMU reads), AES-256-XTS; a 2 MiB header before the
		# payload. cryptsetup writes it with a fixed PBKDF2 iteration
		# count: qemu-img's own iteration benchmark fails in this sandbox.
		command -v cryptsetup >/dev/null ||
			{ echo "make_disk: cryptsetup not installed (package cryptsetup-bin)"; return 1; }
		truncate -s "$((mib + 2))M" "$dir/$name.img" || return 1
		printf ubiblk-test >"$dir/$name.pass"
		cryptsetup luksFormat -q --type luks1 --cipher aes-xts-plain64 --key-size 512 \
			--hash sha256 --pbkdf-force-iterations 1000 --key-file "$dir/$name.pass" \
			"$dir/$name.img" || return 1
		return 0
	fi
	truncate -s "${mib}M" "$dir/$name.img" || return 1
	if [ "$enc" = 1 ]; then
		local key
		while :; do
			head -c 64 /dev/urandom >"$dir/$name.keybin"
			cmp -s <(head -c 32 "$dir/$name.keybin") <(tail -c 32 "$dir/$name.keybin") || break
		done
		base64 -w0 "$dir/$name.keybin" >"$dir/$name.key"
		rm -f "$dir/$name.keybin"
		chmod 600 "$dir/$name.key"
	fi
}

disk_offset() {
	if [ "$backend" = qsd ] && [ "$(cat "$dir/$1.enc")" = 1 ]; then
		echo $((2 * 1048576))
	else
		echo 0
	fi
}

# The device id our backend serves (GET_ID, the guest's serial);
# qemu-storage-daemon always answers with its own fixed string.
device_id() {
	if [ "$backend" = qsd ]; then echo vhost_user_blk; else echo "${1:-ubiblk-test}"; fi
}

# backend_start NAME [--queues N] [--queue-size N] [--id ID] [--tuning L]:
# (re)start the backend of disk NAME; returns when its socket exists. The
# arguments are remembered, so backend_start NAME alone restarts it the
# same way.
backend_start() {
	local name=$1 queues=4 qsize=128 id=ubiblk-test tuning=()
	shift
	[ $# -gt 0 ] || eval "set -- ${backend_args[$name]:-}"
	backend_args[$name]="$(printf '%q ' "$@")"
	while [ $# -gt 0 ]; do
		case "$1" in
		--queues) queues=$2; shift 2 ;;
		--queue-size) qsize=$2; shift 2 ;;
		--id) id=$2; shift 2 ;;
		--tuning) tuning+=("$2"); shift 2 ;;
		*) echo "backend_start: unknown option $1" >&2; return 1 ;;
		esac
	done
	local img=$dir/$name.img sock=$dir/$name.sock log=$dir/$name.backend.log
	local enc
	enc=$(cat "$dir/$name.enc")
	rm -f "$sock"
	echo "--- start $(date +%T.%N)" >>"$log"
	if [ "$backend" = ours ]; then
		{
			echo "[device]"
			echo "data_path = \"$img\""
			echo "vhost_socket = \"$sock\""
			echo "device_id = \"$id\""
			echo "[tuning]"
			echo "num_queues = $queues"
			echo "queue_size = $qsize"
			[ ${#tuning[@]} -eq 0 ] || printf '%s\n' "${tuning[@]}"
			if [ "$enc" = 1 ]; then
				echo "[encryption]"
				echo "xts_key.ref = \"k\""
				echo "[secrets.k]"
				echo "source.file = \"$dir/$name.key\""
				echo "encoding = \"base64\""
			fi
			echo "[danger_zone]"
			echo "enabled = true"
			echo "allow_unencrypted_disk = true"
			[ "$enc" = 0 ] || echo "allow_secret_over_regular_file = true"
		} >"$dir/$name.toml"
		chmod 600 "$dir/$name.toml"
		(cd "$dir" && exec "$ours_bin" -f "$dir/$name.toml") >>"$log" 2>&1 &
	else
		local blk=(--blockdev "driver=file,node-name=f0,filename=$img,aio=io_uring,cache.direct=on")
		local node=f0
		if [ "$enc" = 1 ]; then
			blk=(--object secret,id=sec0,data=ubiblk-test "${blk[@]}"
				--blockdev driver=luks,node-name=l0,file=f0,key-secret=sec0)
			node=l0
		fi
		qemu-storage-daemon "${blk[@]}" \
			--export "type=vhost-user-blk,id=e0,node-name=$node,addr.type=unix,addr.path=$sock,writable=on,num-queues=$queues" \
			>>"$log" 2>&1 &
	fi
	backend_pid[$name]=$!
	local n
	for n in $(seq 100); do
		[ -S "$sock" ] && return 0
		if ! kill -0 "${backend_pid[$name]}" 2>/dev/null; then
			echo "backend of $name exited before creating its socket:"
			cat "$log"
			return 1
		fi
		sleep 0.1
	done
	echo "backend of $name: no socket after 10 s"
	cat "$log"
	return 1
}

backend_kill() {
	local name=$1 sig=${2:-KILL}
	[ -n "${backend_pid[$name]:-}" ] || return 0
	kill -s "$sig" "${backend_pid[$name]}" 2>/dev/null
	wait "${backend_pid[$name]}" 2>/dev/null
	unset "backend_pid[$name]"
}

# Is the backend of NAME still running? (It must survive every boot.)
backend_alive() {
	[ -n "${backend_pid[$1]:-}" ] && kill -0 "${backend_pid[$1]}" 2>/dev/null
}

# vm_run [run-vm options] SCRIPT: one boot; the guest script can source
# /guest-lib.sh. Status of run-vm; its output is printed as it comes.
vm_run() {
	vm_runs=$((vm_runs + 1))
	vm_log=$dir/vm-$vm_runs
	"$vm_here/run-vm" --log-dir "$vm_log" --file "$vm_here/guest-lib.sh=/guest-lib.sh" "$@"
}

vm_start() {
	vm_runs=$((vm_runs + 1))
	vm_log=$dir/vm-$vm_runs
	"$vm_here/run-vm" --log-dir "$vm_log" --file "$vm_here/guest-lib.sh=/guest-lib.sh" "$@" &
	vm_pid=$!
}
vm_wait() {
	local rc
	wait "$vm_pid"
	rc=$?
	vm_pid=""
	return "$rc"
}

# Print a backend's log (after a failure).
show_backend_log() {
	echo "---- backend log of $1 ----"
	tail -n 40 "$dir/$1.backend.log" 2>/dev/null
	echo "----"
}
