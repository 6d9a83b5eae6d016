#!/usr/bin/env bash
# A QEMU guest on a plain disk served by vhost-backend over vhost-user:
# 4 virtqueues reach the guest (/sys/block/vda/mq) and all carry I/O,
# GET_ID gives the configured device_id as the disk's serial, the
# capacity is the file's, and fio with crc32c verify (sequential 64 KiB
# fill, then 4 KiB random read/write from 4 CPUs) finds no corruption.
# Also the control for test_vm_encrypted.sh: on a plain disk the host
# does find the pattern the guest wrote.
set -u
. "$(dirname "$0")/vm/lib.sh"
vm_setup

make_disk d 16
backend_start d --queues 4 --id ubiblk-test || exit 1

cat >"$dir/guest.sh" <<'EOF'
. /guest-lib.sh
expect_eq 4 "$(ls /sys/block/vda/mq | wc -l)" "hardware queues of vda"
expect_eq "$WANT_SERIAL" "$(cat /sys/block/vda/serial)" "serial (GET_ID)"
expect_eq 32768 "$(cat /sys/block/vda/size)" "capacity in sectors"
fio_verify fill /dev/vda --rw=write --bs=64k --iodepth=4
fio_verify randrw /dev/vda --rw=randrw --bs=4k --iodepth=8 --numjobs=4 \
	--size=4M --offset_increment=4M --cpus_allowed=0-3 --cpus_allowed_policy=split
# Every virtqueue carried requests: each has its own interrupt.
grep -- '-req\.' /proc/interrupts >/tmp/irqs
expect_eq 4 "$(wc -l </tmp/irqs)" "request virtqueue interrupts"
while read -r line; do
	n=$(echo "$line" | awk '{s = 0; for (i = 2; i <= NF; i++) if ($i ~ /^[0-9]+$/) s += $i; print s}')
	q=$(echo "$line" | awk '{print $NF}')
	if [ "$n" -gt 0 ]; then ok "$q: $n completions"; else bad "$q carried no I/O"; fi
done </tmp/irqs
# A recognisable pattern at 8 MiB, for the host to find in the file.
yes UBIBLK-PLAINTEXT-CANARY | head -c 65536 >/tmp/pattern
run "pattern written" dd if=/tmp/pattern of=/dev/vda bs=65536 seek=128 oflag=direct
finish
EOF

vm_run --vhost "$dir/d.sock" --num-queues 4 --smp 4 --timeout 90 \
	--env WANT_SERIAL="$(device_id ubiblk-test)" "$dir/guest.sh"
rc=$?
[ "$rc" -eq 77 ] && exit 77
if [ "$rc" -eq 0 ]; then ok "guest checks"; else bad "guest exited $rc"; show_backend_log d; fi
if grep -q UBIBLK-PLAINTEXT-CANARY "$dir/d.img"; then
	ok "plain disk: the host sees the guest's pattern (control for the encrypted test)"
else
	bad "plain disk: the guest's pattern is not in the host file"
fi
backend_alive d && ok "backend still running after the guest left" || bad "backend died"
finish
