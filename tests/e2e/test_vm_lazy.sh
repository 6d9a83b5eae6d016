#!/usr/bin/env bash
# Lazy stripe fetching under a real guest: an ext4 image made on the host
# (mke2fs -d from files of known sha256) is the raw stripe source of an
# encrypted disk whose data file starts empty (sparse, larger than the
# image) with metadata from init-metadata (stripes of 256 KiB). Two runs:
#
#   A: copy_on_read = true, autofetch off: guest reads fetch stripes;
#   B: copy_on_read = false: reads of unfetched stripes come from the
#      image; autofetch is off until the restart and on after it (it
#      copies the whole image in well under a second, long before the
#      guest has booted, if it runs from the start), so the background
#      worker copies the rest while the guest reads and checks.
#
# In each, the guest mounts /dev/vda, checks every file's sha256, writes
# new files, syncs and unmounts, then reads the whole disk with direct
# I/O; meanwhile the host SIGKILLs the backend and restarts it on the
# same files (reconnect=1: QEMU resumes the I/O), printing how many
# stripes were fetched at the kill (dump-metadata). The guest then drops
# its caches, finds the file system clean with `e2fsck -fn` and checks
# the sha256 of every old and new file. The host prints the fetch state
# at the end.
set -u
. "$(dirname "$0")/vm/lib.sh"
if [ "$backend" != ours ]; then
	echo "SKIP: lazy stripe fetching is a feature of our backend only"
	exit 77
fi
vm_setup
command -v mke2fs >/dev/null || { echo "SKIP: mke2fs is not installed (package e2fsprogs)"; exit 77; }
bin=$UBIBLK_BUILD/src/bin

# The source image: an ext4 file system holding known files.
mkdir -p "$dir/files/dir/sub"
head -c 3145728 /dev/urandom >"$dir/files/big"
head -c 700000 /dev/urandom >"$dir/files/dir/medium"
for i in $(seq 0 39); do
	echo "small file $i $(head -c 16 /dev/urandom | od -An -tx1)" >"$dir/files/dir/sub/small.$i"
done
(cd "$dir/files" && find . -type f | sort | xargs sha256sum) >"$dir/sums"
mke2fs -q -t ext4 -F -d "$dir/files" "$dir/image.img" 48M ||
	{ echo "FAILED: mke2fs -d"; exit 1; }
ok "ext4 image of 48 MiB with $(wc -l <"$dir/sums") files"

# lazy_backend NAME COPY_ON_READ AUTOFETCH: (re)start the backend of disk
# NAME (data, metadata and key under $dir/NAME.*).
lazy_config() {
	local name=$1
	cat >"$dir/$name.toml" <<EOF
[device]
data_path = "$dir/$name.img"
metadata_path = "$dir/$name.meta"
vhost_socket = "$dir/$name.sock"
device_id = "ubiblk-lazy"
[tuning]
num_queues = 2
queue_size = 128
[encryption]
xts_key.ref = "k"
[secrets.k]
source.file = "$dir/$name.key"
encoding = "base64"
[stripe_source]
type = "raw"
image_path = "$dir/image.img"
copy_on_read = $2
autofetch = $3
[danger_zone]
enabled = true
allow_secret_over_regular_file = true
EOF
	chmod 600 "$dir/$name.toml"
}

lazy_backend() {
	local name=$1 n
	rm -f "$dir/$name.sock"
	echo "--- start $(date +%T.%N)" >>"$dir/$name.backend.log"
	UBIBLK_LOG=info "$ours_bin" -f "$dir/$name.toml" >>"$dir/$name.backend.log" 2>&1 &
	backend_pid[$name]=$!
	for n in $(seq 100); do
		[ -S "$dir/$name.sock" ] && return 0
		kill -0 "${backend_pid[$name]}" 2>/dev/null || break
		sleep 0.1
	done
	echo "backend of $name did not start:"
	cat "$dir/$name.backend.log"
	return 1
}

cat >"$dir/guest.sh" <<'EOF'
. /guest-lib.sh
run "mount the lazily fetched file system" mount -t ext4 /dev/vda /mnt
if (cd /mnt && sha256sum -c /sums) >/tmp/check 2>&1; then
	ok "sha256 of the $(wc -l </sums) files of the image"
else
	bad "sha256 of the image's files"
	grep -v ': OK$' /tmp/check | head -n 20
fi
mkdir -p /mnt/new
head -c 2097152 /dev/urandom >/mnt/new/big
head -c 300000 /dev/urandom >/mnt/dir/medium2
i=0
while [ "$i" -lt 20 ]; do
	echo "new file $i $(head -c 16 /dev/urandom | od -An -tx1)" >/mnt/new/small.$i
	i=$((i + 1))
done
run "sync" sync
(cd /mnt && find . -type f | sort | xargs sha256sum) >/tmp/allsums
run "umount" umount /mnt
echo "SYNCED"
# The host kills and restarts the backend during this read.
run "read the whole disk (direct I/O) across the restart" \
	fio --name=readall --filename=/dev/vda --rw=read --bs=256k --direct=1 \
	--ioengine=psync
echo 3 >/proc/sys/vm/drop_caches
run "e2fsck -fn after the backend restart" e2fsck -fn /dev/vda
run "mount read-only" mount -t ext4 -o ro /dev/vda /mnt
if (cd /mnt && sha256sum -c /tmp/allsums) >/tmp/check 2>&1; then
	ok "sha256 of all $(wc -l </tmp/allsums) old and new files"
else
	bad "sha256 after the restart"
	grep -v ': OK$' /tmp/check | head -n 20
fi
run "umount" umount /mnt
finish
EOF

# Stripes in a dump-metadata list ("0-3, 5, 7, 8").
count_list() {
	tr ',' '\n' | awk -F- 'NF == 2 { n += $2 - $1 + 1 } NF == 1 && $1 ~ /[0-9]/ { n++ } END { print n + 0 }'
}

fetched_count() { # NAME
	"$bin/dump-metadata" -f "$dir/$1.toml" 2>/dev/null |
		sed -n 's/^fetched stripes: //p' | count_list
}

# lazy_run NAME COPY_ON_READ AUTOFETCH AUTOFETCH_AFTER_RESTART
lazy_run() {
	local name=$1 cor=$2 af=$3 af2=$4 t0=$SECONDS rc n results
	echo "== run $name: copy_on_read=$cor autofetch=$af, after the restart $af2"
	truncate -s 64M "$dir/$name.img"
	head -c 64 /dev/urandom | base64 -w0 >"$dir/$name.key"
	chmod 600 "$dir/$name.key"
	lazy_config "$name" "$cor" "$af"
	if ! "$bin/init-metadata" -f "$dir/$name.toml" -s 9; then
		bad "$name: init-metadata"
		return
	fi
	lazy_backend "$name" || { bad "$name: backend start"; return; }
	vm_start --vhost "$dir/$name.sock" --num-queues 2 --reconnect --timeout 90 \
		--file "$dir/sums=/sums" "$dir/guest.sh"
	results=$vm_log/results.log
	for n in $(seq 600); do
		grep -q '^SYNCED' "$results" 2>/dev/null && break
		kill -0 "$vm_pid" 2>/dev/null || break
		sleep 0.1
	done
	if grep -q '^SYNCED' "$results" 2>/dev/null; then
		sleep 0.$((RANDOM % 8 + 1))
		backend_kill "$name" KILL
		echo "host: backend killed with $(fetched_count "$name") of 192 image stripes fetched"
		lazy_config "$name" "$cor" "$af2"
		if lazy_backend "$name"; then
			echo "host: backend restarted"
			ok "$name: backend killed and restarted during the guest's reads"
		else
			bad "$name: backend restart"
		fi
	else
		bad "$name: the guest did not get to its sync"
	fi
	vm_wait
	rc=$?
	[ "$rc" -eq 77 ] && exit 77
	if [ "$rc" -eq 0 ]; then
		ok "$name: guest checks passed ($((SECONDS - t0)) s)"
	else
		bad "$name: guest exited $rc"
		show_backend_log "$name"
	fi
	backend_kill "$name" TERM
	grep -h 'All stripes fetched\|Fetching stripes' "$dir/$name.backend.log" | tail -n 3
	n=$(fetched_count "$name")
	echo "host: $n of 192 image stripes fetched at the end"
	[ "$af2" = false ] || [ "$n" = 192 ] || bad "$name: autofetch did not finish"

}

lazy_run a true false false
lazy_run b false false true
finish
