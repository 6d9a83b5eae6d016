#!/usr/bin/env bash
# A guest reboot (`reboot -f`: the virtio device is reset and set up
# again on the same vhost-user connection): the guest writes random data
# and a marker with its sha256, reboots, and on the second boot (it sees
# the marker) finds the data unchanged and the disk fully usable.
set -u
. "$(dirname "$0")/vm/lib.sh"
vm_setup

make_disk b 16 --encrypted
backend_start b --queues 2 --id ubiblk-reboot || exit 1

cat >"$dir/guest.sh" <<'EOF'
. /guest-lib.sh
# The marker lives in the last 4 KiB of the 16 MiB disk.
marker=$(dd if=/dev/vda bs=4096 skip=4095 count=1 iflag=direct 2>/dev/null | tr -d '\000' | head -n 1)
case "$marker" in
UBIBLK-REBOOT-MARKER\ *)
	echo "BOOT 2"
	want=${marker#UBIBLK-REBOOT-MARKER }
	got=$(dd if=/dev/vda bs=1048576 count=8 iflag=direct 2>/dev/null | sha256sum | cut -d' ' -f1)
	expect_eq "$want" "$got" "sha256 of the 8 MiB written before the reboot"
	expect_eq "$WANT_SERIAL" "$(cat /sys/block/vda/serial)" "serial after the reboot"
	expect_eq 2 "$(ls /sys/block/vda/mq | wc -l)" "queues after the reboot"
	fio_verify after-reboot /dev/vda --rw=randrw --bs=4k --iodepth=8 --size=8M --offset=8M
	finish
	;;
esac
echo "BOOT 1"
run "random data written" dd if=/dev/urandom of=/tmp/data bs=1048576 count=8
run "data on the disk" dd if=/tmp/data of=/dev/vda bs=1048576 oflag=direct
sum=$(sha256sum /tmp/data | cut -d' ' -f1)
echo "UBIBLK-REBOOT-MARKER $sum" >/tmp/marker
run "marker written" dd if=/tmp/marker of=/dev/vda bs=4096 seek=4095 conv=sync oflag=direct
[ "$fails" -eq 0 ] || finish
sync
echo "rebooting"
reboot -f
sleep 30
bad "still running after reboot -f"
finish
EOF

vm_run --vhost "$dir/b.sock" --num-queues 2 --reboot --timeout 90 \
	--env WANT_SERIAL="$(device_id ubiblk-reboot)" "$dir/guest.sh"
rc=$?
[ "$rc" -eq 77 ] && exit 77
if [ "$rc" -eq 0 ]; then ok "guest checks"; else bad "guest exited $rc"; show_backend_log b; fi
expect_boots=$(grep -c '^UBIBLK-VM-START' "$vm_log/results.log")
if [ "$expect_boots" -eq 2 ] && grep -q '^BOOT 1' "$vm_log/results.log" &&
	grep -q '^BOOT 2' "$vm_log/results.log"; then
	ok "the guest booted twice"
else
	bad "the guest booted $expect_boots time(s), wanted 2"
fi
backend_alive b && ok "backend still running" || bad "backend died"
finish
