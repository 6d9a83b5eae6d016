#!/usr/bin/env bash
# The VM harness itself, on a plain file disk (no vhost-user backend):
# the guest kernel boots with the disk as vda, the script's output reaches
# the result log, its exit status becomes run-vm's, what it writes lands
# in the host file, and a kernel panic is reported as such (125), not as
# a test result.
set -u
. "$(dirname "$0")/vm/lib.sh"
vm_setup --no-backend

truncate -s 8M "$dir/plain.img"
cat >"$dir/status.sh" <<'EOF'
echo "guest kernel $(uname -r), $(cat /sys/block/vda/size) sectors on vda"
echo UBIBLK-HARNESS-CANARY >/tmp/c
dd if=/tmp/c of=/dev/vda bs=4096 seek=1 conv=sync oflag=direct 2>/dev/null || exit 9
echo "guest: done"
exit 3
EOF
vm_run --disk "$dir/plain.img" --timeout 60 "$dir/status.sh"
rc=$?
[ "$rc" -eq 77 ] && exit 77
if [ "$rc" -eq 3 ]; then ok "the script's exit status 3 is run-vm's"; else bad "run-vm exited $rc, wanted 3"; fi
grep -q '^guest: done$' "$vm_log/results.log" && ok "script output in the result log" ||
	bad "no script output in the result log"
grep -q '^guest kernel .* 16384 sectors on vda$' "$vm_log/results.log" && ok "vda has the file's size" ||
	bad "vda missing or of the wrong size"
grep -q UBIBLK-HARNESS-CANARY "$dir/plain.img" && ok "guest write reached the host file" ||
	bad "guest write not in the host file"

cat >"$dir/panic.sh" <<'EOF'
echo "panicking"
echo c >/proc/sysrq-trigger
sleep 30
EOF
vm_run --quiet --disk "$dir/plain.img" --timeout 60 "$dir/panic.sh" >"$dir/panic.out"
rc=$?
if [ "$rc" -eq 125 ]; then ok "a kernel panic is reported as 125"; else bad "panic: run-vm exited $rc, wanted 125"; cat "$dir/panic.out"; fi
grep -q 'Kernel panic' "$vm_log/console.log" && ok "the panic is on the console log" ||
	bad "no panic message on the console log"
finish
