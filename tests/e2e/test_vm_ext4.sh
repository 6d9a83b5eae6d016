#!/usr/bin/env bash
# ext4 on an encrypted disk served by vhost-backend, across two boots of
# a QEMU guest with the same backend process: the first boot makes the
# file system, writes files, syncs, unmounts and finds it clean with
# `e2fsck -fn`; the second boot (a new vhost-user connection) finds it
# clean again, mounts it and checks every file's sha256.
set -u
. "$(dirname "$0")/vm/lib.sh"
vm_setup

make_disk x 64 --encrypted
backend_start x --queues 2 || exit 1

cat >"$dir/boot1.sh" <<'EOF'
. /guest-lib.sh
run "mkfs.ext4" mkfs.ext4 -q -F /dev/vda
run "mount" mount -t ext4 /dev/vda /mnt
mkdir -p /mnt/dir/sub
head -c 3145728 /dev/urandom >/mnt/big
head -c 100000 /dev/urandom >/mnt/dir/medium
i=0
while [ "$i" -lt 40 ]; do
	echo "small file $i $(head -c 16 /dev/urandom | od -An -tx1)" >/mnt/dir/sub/small.$i
	i=$((i + 1))
done
run "sync" sync
(cd /mnt && find . -type f | sort | xargs sha256sum) >/tmp/sums
expect_eq 42 "$(wc -l </tmp/sums)" "files written"
run "umount" umount /mnt
run "e2fsck -fn after unmount" e2fsck -fn /dev/vda
sed 's/^/SUM /' /tmp/sums
finish
EOF

cat >"$dir/boot2.sh" <<'EOF'
. /guest-lib.sh
run "e2fsck -fn on the second boot" e2fsck -fn /dev/vda
run "mount" mount -t ext4 -o ro /dev/vda /mnt
if (cd /mnt && sha256sum -c /sums) >/tmp/check 2>&1; then
	ok "sha256 of all $(wc -l </sums) files"
else
	bad "sha256 check"
	grep -v ': OK$' /tmp/check | head -n 20
fi
run "umount" umount /mnt
finish
EOF

vm_run --vhost "$dir/x.sock" --num-queues 2 --timeout 90 "$dir/boot1.sh"
rc=$?
[ "$rc" -eq 77 ] && exit 77
if [ "$rc" -eq 0 ]; then ok "first boot"; else bad "first boot exited $rc"; show_backend_log x; finish; fi
sed -n 's/^SUM //p' "$vm_log/results.log" >"$dir/sums"

backend_alive x && ok "backend still running after the first guest left" || bad "backend died"
# The backend serves the next connection once it has reopened its
# socket; reconnect=1 makes QEMU wait for that.
vm_run --vhost "$dir/x.sock" --num-queues 2 --reconnect --timeout 90 \
	--file "$dir/sums=/sums" "$dir/boot2.sh"
rc=$?
if [ "$rc" -eq 0 ]; then ok "second boot"; else bad "second boot exited $rc"; show_backend_log x; fi
finish
