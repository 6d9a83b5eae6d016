#!/usr/bin/env bash
# vhost-backend with device.metadata_path (storage.md §5.10, backends.md
# §2): what start-up accepts and refuses, and that the lazy device serves
# the image's data. Each refusal exits 1 with its message and creates no
# socket.
#
#   - a data file that grew after init-metadata;
#   - an image larger than the data file (the reference's error chain
#     "Failed to run bgworker thread: Failed to build bgworker: ...");
#   - archive and remote sources (not in this build);
#   - a missing metadata file, and metadata encrypted with another key;
#   - accepted: no stripe source (every stripe NoSource); everything
#     fetched with the image gone (it is not opened); autofetch with a
#     progress log ending in "All stripes fetched"; the guest reads the
#     image's bytes through the lazy device, copy_on_read on and off.
set -u

build=${UBIBLK_BUILD:?UBIBLK_BUILD must name a build directory}
bin=$build/src/bin
vc=$build/tests/vhost-client/vhost-client
for p in "$bin/vhost-backend" "$bin/init-metadata" "$bin/dump-metadata" "$vc"; do
	[ -x "$p" ] || { echo "FAILED: $p is not built"; exit 1; }
done
dir=$(mktemp -d "${TMPDIR:-/tmp}/ubiblk-lazybe.XXXXXX")
pid=""
cleanup() {
	[ -z "$pid" ] || { kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; }
	rm -rf "$dir"
}
trap cleanup EXIT
fails=0
ok() { echo "ok: $*"; }
bad() { echo "FAILED: $*"; fails=$((fails + 1)); }

# config NAME [extra [device] lines] -- [stripe_source lines]
config() {
	local name=$1 dev="" src="" enc=""
	shift
	while [ $# -gt 0 ] && [ "$1" != -- ]; do dev="$dev$1"$'\n'; shift; done
	[ $# -gt 0 ] && shift
	while [ $# -gt 0 ]; do src="$src$1"$'\n'; shift; done
	if [ -f "$dir/$name.key" ]; then
		enc="[encryption]
xts_key.ref = \"k\"
[secrets.k]
source.file = \"$dir/$name.key\"
encoding = \"base64\""
	fi
	cat >"$dir/$name.toml" <<EOF
[device]
data_path = "$dir/$name.img"
metadata_path = "$dir/$name.meta"
vhost_socket = "$dir/$name.sock"
$dev
$enc
$([ -n "$src" ] && printf '[stripe_source]\n%s' "$src")
[danger_zone]
enabled = true
allow_unencrypted_disk = true
allow_secret_over_regular_file = true
EOF
	chmod 600 "$dir/$name.toml"
}

# refuse NAME MESSAGE WHAT
refuse() {
	rm -f "$dir/$1.sock"
	timeout 20 "$bin/vhost-backend" -f "$dir/$1.toml" >"$dir/out" 2>"$dir/err"
	local rc=$?
	if [ "$rc" -eq 1 ] && grep -qF -- "$2" "$dir/err" && [ ! -e "$dir/$1.sock" ]; then
		ok "$3"
	else
		bad "$3: exit $rc, stderr: $(head -c 400 "$dir/err")"
	fi
}

start() { # NAME
	rm -f "$dir/$1.sock"
	UBIBLK_LOG=info "$bin/vhost-backend" -f "$dir/$1.toml" >"$dir/$1.log" 2>&1 &
	pid=$!
	local n
	for n in $(seq 200); do
		[ -S "$dir/$1.sock" ] && return 0
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.025
	done
	bad "$1: the backend did not start: $(tail -n 3 "$dir/$1.log")"
	pid=""
	return 1
}

stop() {
	[ -n "$pid" ] || return 0
	kill "$pid" 2>/dev/null
	wait "$pid" 2>/dev/null
	local rc=$?
	pid=""
	return "$rc"
}

head -c $((4 << 20)) /dev/urandom >"$dir/image4.raw"

# --- refusals ------------------------------------------------------------
truncate -s 4M "$dir/grown.img"
config grown -- 'type = "raw"' "image_path = \"$dir/image4.raw\""
"$bin/init-metadata" -f "$dir/grown.toml" -s 11 || bad "init-metadata"
truncate -s 8M "$dir/grown.img"
refuse grown "needs 8 stripes of 1048576 bytes but the metadata $dir/grown.meta has 4 stripes" \
	"a data file that grew after init-metadata is refused"

truncate -s 2M "$dir/small.img"
config small -- 'type = "raw"' "image_path = \"$dir/image4.raw\""
"$bin/init-metadata" -f "$dir/small.toml" -s 9 2>/dev/null
# init-metadata refuses the image too; write the metadata from a smaller
# image, then point the configuration at the larger one.
head -c $((2 << 20)) "$dir/image4.raw" >"$dir/image2.raw"
config small -- 'type = "raw"' "image_path = \"$dir/image2.raw\""
"$bin/init-metadata" -f "$dir/small.toml" -s 9 || bad "init-metadata (small)"
config small -- 'type = "raw"' "image_path = \"$dir/image4.raw\""
refuse small "Failed to run bgworker thread: Failed to build bgworker: " \
	"an image larger than the data file: the bgworker error chain"
grep -qF "Source stripe count 16 exceeds metadata stripe count 8" "$dir/err" ||
	bad "bgworker cause: $(cat "$dir/err")"

config arch -- 'type = "archive"' 'storage = "filesystem"' "path = \"$dir\""
truncate -s 4M "$dir/arch.img"
cp "$dir/grown.meta" "$dir/arch.meta"
refuse arch "stripe source type 'archive' is not supported by this build yet" \
	"an archive source is refused"

config nometa --
truncate -s 4M "$dir/nometa.img"
refuse nometa "Failed to build backend environment" "a missing metadata file is refused"

truncate -s 4M "$dir/keyed.img"
head -c 64 /dev/urandom | base64 -w0 >"$dir/keyed.key"
config keyed -- 'type = "raw"' "image_path = \"$dir/image4.raw\""
"$bin/init-metadata" -f "$dir/keyed.toml" -s 11 || bad "init-metadata (keyed)"
head -c 64 /dev/urandom | base64 -w0 >"$dir/keyed.key"
refuse keyed "Metadata header CRC32 mismatch" "metadata under another key is refused"

# --- accepted ------------------------------------------------------------
truncate -s 16M "$dir/plain.img"
config plain
"$bin/init-metadata" -f "$dir/plain.toml" -s 11 || bad "init-metadata (no source)"
if start plain; then
	"$vc" --socket "$dir/plain.sock" conform >"$dir/conform.out" 2>&1 &&
		ok "no stripe source: the lazy device passes conform" ||
		bad "conform without a source: $(grep '^not ok' "$dir/conform.out")"
	stop || bad "no stripe source: shutdown"
fi

for cor in false true; do
	name=lz$cor
	truncate -s 6M "$dir/$name.img"
	config "$name" -- 'type = "raw"' "image_path = \"$dir/image4.raw\"" \
		"copy_on_read = $cor"
	"$bin/init-metadata" -f "$dir/$name.toml" -s 7 || bad "init-metadata ($name)"
	start "$name" || continue
	# Read the whole disk in stripe-sized requests: with an empty
	# journal the crash verifier accepts only the image's data (past the
	# image nothing is constrained).
	: >"$dir/empty.journal"
	if "$vc" --socket "$dir/$name.sock" crash-verify --seed 1 \
		--journal "$dir/empty.journal" --image "$dir/image4.raw" \
		--shift 7 >"$dir/v.out" 2>&1; then
		ok "copy_on_read=$cor: every sector reads as the image ($(grep -o '[0-9]* source data' "$dir/v.out"))"
	else
		bad "copy_on_read=$cor: $(head -n 5 "$dir/v.out")"
	fi
	stop || bad "$name: shutdown"
	fetched=$("$bin/dump-metadata" -f "$dir/$name.toml" | sed -n 's/^fetched stripes: //p')
	if [ "$cor" = true ]; then
		[ "$fetched" = "0-63" ] && ok "copy_on_read=true: the reads fetched every image stripe" ||
			bad "copy_on_read=true: fetched '$fetched'"
	else
		[ -z "$fetched" ] && ok "copy_on_read=false: single-stripe reads fetched nothing" ||
			bad "copy_on_read=false: fetched '$fetched'"
	fi
done

# Autofetch to the end, then a start without the image.
truncate -s 4M "$dir/af.img"
config af -- 'type = "raw"' "image_path = \"$dir/image4.raw\"" 'autofetch = true'
"$bin/init-metadata" -f "$dir/af.toml" -s 8 || bad "init-metadata (af)"
if start af; then
	for n in $(seq 200); do
		grep -q 'Fetch complete' "$dir/af.log" && break
		sleep 0.025
	done
	grep -q 'All stripes fetched, disconnected from source device' "$dir/af.log" &&
		grep -q 'Fetch complete: 32 stripes local, 4.0 MiB fetched' "$dir/af.log" &&
		ok "autofetch: 'All stripes fetched' and the totals are logged" ||
		bad "autofetch log: $(grep -i fetch "$dir/af.log")"
	stop || bad "af: shutdown"
fi
cmp -s "$dir/af.img" "$dir/image4.raw" && ok "autofetch copied the image byte for byte" ||
	bad "the data file differs from the image after autofetch"
mv "$dir/image4.raw" "$dir/image4.gone"
if start af; then
	grep -q 'every stripe is already fetched; the image .* is not opened' "$dir/af.log" &&
		grep -q 'All stripes fetched: the 32 stripes with a source were local at start' "$dir/af.log" &&
		ok "everything fetched: the image is not opened (it is gone)" ||
		bad "all-fetched start: $(tail -n 5 "$dir/af.log")"
	stop || bad "af (no image): shutdown"
fi
mv "$dir/image4.gone" "$dir/image4.raw"

if [ "$fails" -eq 0 ]; then
	echo "all lazy backend checks passed"
	exit 0
fi
echo "$fails check(s) failed"
exit 1
