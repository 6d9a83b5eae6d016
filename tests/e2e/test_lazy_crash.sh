#!/usr/bin/env bash
# Crash consistency of lazy stripe fetching: an encrypted disk whose
# metadata points at a raw image (random 32-64 MiB, stripes of 2^7-2^9
# sectors so there are many), autofetch on (off in one round in four, so
# that only guest requests fetch), copy_on_read on or off per round. Each
# round:
#
#   1. with no backend running: dump-metadata lists the fetched stripes,
#      xts decodes the data file, and `vhost-client crash-verify --plain`
#      checks every sector of every fetched stripe (source data or a
#      journaled write, never older than its last durable write) and that
#      every durable write lies in a fetched stripe;
#   2. a backend with copy_on_read = false (reads fetch nothing) serves
#      `crash-verify` over the whole disk; in some rounds it has autofetch
#      on and is SIGKILLed at a random moment after the verify (a crash
#      with no guest I/O at all), otherwise it gets SIGTERM;
#   3. the round's backend is started and `vhost-client crash-run` writes
#      seeded patterns with regular FLUSHes, journaling what each FLUSH
#      made durable; the backend is SIGKILLed at a random moment, half
#      the time within 250 ms (while autofetch still runs), sometimes the
#      client first.
#
# Every 1-3 rounds a new epoch starts: new image, fresh sparse data file,
# new stripe size, init-metadata, new journal. Seeded: the seed is printed
# and UBIBLK_CRASH_SEED=N replays the same choices (timing still varies).
# UBIBLK_CRASH_ROUNDS (default 100; the test insists on at least 50 unless
# it is set lower) and UBIBLK_CRASH_BUDGET (seconds, default 210: no new
# round starts after that).
set -u

build=${UBIBLK_BUILD:?UBIBLK_BUILD must name a build directory}
bin=$build/src/bin
vc=$build/tests/vhost-client/vhost-client
for p in "$bin/vhost-backend" "$bin/init-metadata" "$bin/dump-metadata" \
	"$bin/xts" "$vc"; do
	[ -x "$p" ] || { echo "FAILED: $p is not built"; exit 1; }
done

seed=${UBIBLK_CRASH_SEED:-$(od -An -N4 -tu4 /dev/urandom | tr -d ' ')}
rounds=${UBIBLK_CRASH_ROUNDS:-100}
min_rounds=$((rounds < 50 ? rounds : 50))
budget=${UBIBLK_CRASH_BUDGET:-210}
echo "seed: $seed (replay with UBIBLK_CRASH_SEED=$seed)"
RANDOM=$seed

dir=$(mktemp -d "${TMPDIR:-/tmp}/ubiblk-crash.XXXXXX")
be_pid=""
cl_pid=""
keep=${UBIBLK_CRASH_KEEP:-0}
cleanup() {
	[ -z "$cl_pid" ] || kill -9 "$cl_pid" 2>/dev/null
	[ -z "$be_pid" ] || kill -9 "$be_pid" 2>/dev/null
	wait 2>/dev/null
	if [ "$keep" = 1 ]; then
		echo "kept for inspection: $dir"
	else
		rm -rf "$dir"
	fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

fail() {
	echo "FAILED: $* (seed $seed, epoch $epoch, round $round)"
	echo "---- backend log (last lines) ----"
	tail -n 30 "$dir/backend.log" 2>/dev/null
	echo "----"
	keep=1
	exit 1
}

# Deterministic bytes from the seed: AES-CTR keystream.
prng_bytes() { # label bytes
	openssl enc -aes-128-ctr -nosalt -pass "pass:ubiblk-$seed-$1" -pbkdf2 \
		-iter 1 </dev/zero 2>/dev/null | head -c "$2"
}

write_config() { # cfg copy_on_read autofetch
	cat >"$1" <<EOF
[device]
data_path = "$dir/data.img"
metadata_path = "$dir/meta.bin"
vhost_socket = "$dir/vhost.sock"
[tuning]
num_queues = 1
queue_size = 128
[encryption]
xts_key.ref = "k"
[secrets.k]
source.file = "$dir/key.b64"
encoding = "base64"
[stripe_source]
type = "raw"
image_path = "$dir/image.img"
autofetch = $3
copy_on_read = $2
[danger_zone]
enabled = true
allow_secret_over_regular_file = true
EOF
	chmod 600 "$1"
}

backend_start() { # cfg
	rm -f "$dir/vhost.sock"
	echo "--- start $(date +%T.%N) $(basename "$1")" >>"$dir/backend.log"
	UBIBLK_LOG=info "$bin/vhost-backend" -f "$1" >>"$dir/backend.log" 2>&1 &
	be_pid=$!
	local n
	for n in $(seq 200); do
		[ -S "$dir/vhost.sock" ] && return 0
		kill -0 "$be_pid" 2>/dev/null || { wait "$be_pid"; be_pid=""; fail "the backend exited at start-up"; }
		sleep 0.025
	done
	fail "the backend created no socket within 5 s"
}

backend_stop() { # signal
	[ -n "$be_pid" ] || return 0
	kill -s "$1" "$be_pid" 2>/dev/null
	wait "$be_pid" 2>/dev/null
	be_pid=""
}

# A random delay of MIN..MAX milliseconds, as seconds for sleep.
rand_delay() { # min max
	local ms=$(($1 + RANDOM % ($2 - $1 + 1)))
	printf '%d.%03d' $((ms / 1000)) $((ms % 1000))
}

new_epoch() {
	epoch=$((epoch + 1))
	size_mib=$((32 + RANDOM % 33))
	shift_s=$((7 + RANDOM % 3))
	pseed=$((seed * 1000 + epoch))
	rm -f "$dir/data.img" "$dir/meta.bin" "$dir/journal" "$dir/plain.img"
	prng_bytes "image-$epoch" $((size_mib << 20)) >"$dir/image.img"
	[ "$(stat -c %s "$dir/image.img")" = $((size_mib << 20)) ] || fail "cannot make the image"
	truncate -s "${size_mib}M" "$dir/data.img"
	prng_bytes "key-$epoch" 64 | base64 -w0 >"$dir/key.b64"
	chmod 600 "$dir/key.b64"
	write_config "$dir/init.toml" false false
	"$bin/init-metadata" -f "$dir/init.toml" -s "$shift_s" || fail "init-metadata"
	fetched_now=""
	echo "epoch $epoch: image ${size_mib} MiB, stripes of $((512 << shift_s)) bytes ($(((size_mib << 20) / (512 << shift_s))) stripes), pattern seed $pseed"
}

# Step 1: the files at rest.
verify_at_rest() {
	[ -s "$dir/journal" ] || return 0
	"$bin/dump-metadata" -f "$dir/init.toml" >"$dir/dump.txt" 2>"$dir/dump.err" ||
		{ cat "$dir/dump.err"; fail "dump-metadata"; }
	sed -n 's/^fetched stripes: //p' "$dir/dump.txt" >"$dir/fetched.txt"
	"$bin/xts" -f "$dir/init.toml" --action decode "$dir/data.img" "$dir/plain.img" ||
		fail "xts decode"
	"$vc" crash-verify --seed "$pseed" --journal "$dir/journal" \
		--image "$dir/image.img" --plain "$dir/plain.img" \
		--fetched "$dir/fetched.txt" --shift "$shift_s" >"$dir/verify.out" 2>&1 ||
		{ cat "$dir/verify.out"; fail "fetched stripes at rest"; }
	fetched_now=$(grep -o '[0-9]* fetched stripes of [0-9]*' "$dir/verify.out")
}

# Step 2: through a restarted backend.
verify_online() {
	local af=false crash=0
	[ $((RANDOM % 3)) -eq 0 ] && { af=true; crash=1; }
	write_config "$dir/verify.toml" false "$af"
	backend_start "$dir/verify.toml"
	if [ -s "$dir/journal" ]; then
		"$vc" --socket "$dir/vhost.sock" crash-verify --seed "$pseed" \
			--journal "$dir/journal" --image "$dir/image.img" \
			--shift "$shift_s" >"$dir/verify.out" 2>&1 ||
			{ cat "$dir/verify.out"; fail "verify through the restarted backend"; }
		checked=$((checked + 1))
	fi
	if [ "$crash" = 1 ]; then
		sleep "$(rand_delay 0 150)"
		backend_stop KILL
		verify_kills=$((verify_kills + 1))
	else
		backend_stop TERM
	fi
}

# Step 3: writes, then SIGKILL.
crash_round() {
	local cor=false af=true kill_client=0 rc delay
	[ $((RANDOM % 2)) -eq 0 ] && cor=true
	[ $((RANDOM % 4)) -eq 0 ] && af=false
	[ $((RANDOM % 4)) -eq 0 ] && kill_client=1
	# Autofetch copies a 64 MiB image in a fraction of a second: half the
	# kills land while it runs.
	if [ $((RANDOM % 2)) -eq 0 ]; then
		delay=$(rand_delay 10 250)
	else
		delay=$(rand_delay 250 1200)
	fi
	write_config "$dir/run.toml" "$cor" "$af"
	backend_start "$dir/run.toml"
	"$vc" --socket "$dir/vhost.sock" crash-run --seed "$pseed" \
		--journal "$dir/journal" --image "$dir/image.img" \
		--seconds 30 >"$dir/run.out" 2>&1 &
	cl_pid=$!
	for _ in $(seq 200); do
		grep -q '^crash-run: run' "$dir/run.out" 2>/dev/null && break
		kill -0 "$cl_pid" 2>/dev/null || break
		sleep 0.025
	done
	sleep "$delay"
	if [ "$kill_client" = 1 ]; then
		{ kill -9 "$cl_pid"; wait "$cl_pid"; } 2>/dev/null
		rc=$?
		sleep "$(rand_delay 0 300)"
		client_kills=$((client_kills + 1))
		backend_stop KILL
	else
		backend_stop KILL
		{ wait "$cl_pid"; } 2>/dev/null
		rc=$?
	fi
	cl_pid=""
	# 3: the backend went away; 137: killed; 0: time up (unlikely).
	case "$rc" in
	0 | 3 | 137) ;;
	*) cat "$dir/run.out"; fail "crash-run exited $rc (copy_on_read $cor)" ;;
	esac
	grep -q '^FAIL' "$dir/run.out" && { cat "$dir/run.out"; fail "crash-run found bad data"; }
	writes=$((writes + $(sed -n 's/.* \([0-9]*\) writes.*/\1/p' "$dir/run.out" | tail -n 1 | grep . || echo 0)))
	[ "$cor" = true ] && cor_rounds=$((cor_rounds + 1))
	[ "$af" = false ] && af_off=$((af_off + 1))
	round_info="copy_on_read $cor, autofetch $af, kill after ${delay}s$([ "$kill_client" = 1 ] && echo ', client first')"
}

start=$SECONDS
epoch=0
round=0
checked=0
verify_kills=0
client_kills=0
cor_rounds=0
writes=0
fetched_now=""
round_info=""
af_off=0
epoch_left=0
while [ "$round" -lt "$rounds" ]; do
	if [ $((SECONDS - start)) -ge "$budget" ]; then
		echo "time budget of $budget s used up"
		break
	fi
	if [ "$epoch_left" -eq 0 ]; then
		# Check the last epoch's final state before leaving it.
		[ "$epoch" -eq 0 ] || { verify_at_rest; verify_online; }
		new_epoch
		epoch_left=$((1 + RANDOM % 3))
	fi
	round=$((round + 1))
	epoch_left=$((epoch_left - 1))
	verify_at_rest
	verify_online
	crash_round
	echo "round $round (epoch $epoch, $round_info): ok; before it: ${fetched_now:-nothing written yet}; $((SECONDS - start)) s"
done
verify_at_rest
verify_online

# Self-check: the verifier must catch lost fetch state. init-metadata
# forgets every FETCHED bit, so the stripes holding durable guest writes
# would be served from the image again.
if [ "$(sed -n 's/.*(\([0-9]*\) at their durable gen.*/\1/p' "$dir/verify.out")" -gt 0 ] 2>/dev/null; then
	"$bin/init-metadata" -f "$dir/init.toml" -s "$shift_s" || fail "init-metadata (self-check)"
	if (verify_at_rest) >/dev/null 2>&1; then
		fail "self-check: the at-rest verify missed a metadata reset"
	fi
	write_config "$dir/verify.toml" false false
	backend_start "$dir/verify.toml"
	if "$vc" --socket "$dir/vhost.sock" crash-verify --seed "$pseed" \
		--journal "$dir/journal" --image "$dir/image.img" \
		--shift "$shift_s" >"$dir/verify.out" 2>&1; then
		fail "self-check: the online verify missed a metadata reset"
	fi
	backend_stop TERM
	echo "self-check: a metadata reset is caught ($(grep -c '^FAIL' "$dir/verify.out") failures reported)"
else
	echo "self-check skipped: no durable write in the last epoch"
fi

echo "$round rounds in $((SECONDS - start)) s over $epoch epochs: $checked online verifies," \
	"$verify_kills kills during verify/autofetch, $client_kills client kills first," \
	"$cor_rounds rounds with copy_on_read, $af_off with autofetch off, ~$writes writes completed"
if [ "$round" -lt "$min_rounds" ]; then
	echo "FAILED: only $round rounds ran (at least $min_rounds wanted; seed $seed)"
	exit 1
fi
echo "all checks passed"
exit 0
