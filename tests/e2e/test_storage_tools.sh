#!/usr/bin/env bash
# init-metadata, dump-metadata and xts end to end (storage.md §8): the
# seven-line dump, encrypted metadata on disk (storage.md §10.1 vector A
# after decryption), file mode and symlink rules, option ranges and exit
# codes, the run-list format, xts round trips with --start/--len and its
# encode hole, and xts output checked against python3-cryptography.
set -u
bin=${UBIBLK_BUILD:?}/src/bin
for p in init-metadata dump-metadata xts; do
	[ -x "$bin/$p" ] || { echo "$p not built at $bin/$p"; exit 1; }
done
# The system interpreter has the cryptography package (the python3 on
# PATH may not).
pyxts=/usr/bin/python3
have_py=1
"$pyxts" -c 'import cryptography' 2>/dev/null || have_py=0
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
fails=0
ok() { echo "ok: $1"; }
bad() { echo "FAILED: $1"; fails=$((fails + 1)); }
expect_rc() { # want_rc description cmd...
	local want=$1 what=$2
	shift 2
	"$@" >"$dir/out" 2>"$dir/err"
	local rc=$?
	if [ "$rc" -eq "$want" ]; then ok "$what (exit $rc)"; else
		bad "$what: exit $rc, wanted $want"; cat "$dir/out" "$dir/err"; fi
}
contains() { # file text description
	if grep -qF -- "$2" "$1"; then ok "$3"; else
		bad "$3: '$2' not in $1:"; cat "$1"; fi
}
lacks() {
	if grep -qF -- "$2" "$1"; then bad "$3: '$2' found in $1"; else ok "$3"; fi
}
same_file() { # a b description
	if cmp -s "$1" "$2"; then ok "$3"; else bad "$3: $1 and $2 differ"; fi
}
equals() { # got want description
	if [ "$1" = "$2" ]; then ok "$3"; else bad "$3: got '$1', wanted '$2'"; fi
}
sha() { sha256sum "$1" | cut -d' ' -f1; }

# python3-cryptography's AES-256-XTS: key1||key2 from a base64 key file,
# tweak = 8 zero bytes + LE64(sector), sectors start..start+len-1 of the
# input written at their own offsets (the `xts encode` layout).
py_encode() { # keyfile input start len output
	"$pyxts" - "$@" <<'PY'
import base64, sys
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
key = base64.b64decode(open(sys.argv[1]).read())
data = open(sys.argv[2], 'rb').read()
start, n = int(sys.argv[3]), int(sys.argv[4])
out = bytearray(start * 512)
for s in range(start, start + n):
    tweak = bytes(8) + s.to_bytes(8, 'little')
    enc = Cipher(algorithms.AES(key), modes.XTS(tweak)).encryptor()
    out += enc.update(data[s * 512:(s + 1) * 512]) + enc.finalize()
open(sys.argv[5], 'wb').write(out)
PY
}
py_decrypt_all() { # keyfile input output
	"$pyxts" - "$@" <<'PY'
import base64, sys
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
key = base64.b64decode(open(sys.argv[1]).read())
data = open(sys.argv[2], 'rb').read()
out = bytearray()
for s in range(len(data) // 512):
    tweak = bytes(8) + s.to_bytes(8, 'little')
    dec = Cipher(algorithms.AES(key), modes.XTS(tweak)).decryptor()
    out += dec.update(data[s * 512:(s + 1) * 512]) + dec.finalize()
open(sys.argv[3], 'wb').write(out)
PY
}

# Sets header bits in an unencrypted metadata file and fixes the CRCs:
# set_bits file bit stripe...
set_bits() {
	python3 - "$@" <<'PY'
import sys, zlib
path, bit, stripes = sys.argv[1], int(sys.argv[2]), map(int, sys.argv[3:])
b = bytearray(open(path, 'rb').read())
for i in stripes:
    b[512 * (1 + i // 508) + i % 508] |= bit
for s in range(len(b) // 512):
    sec = b[s * 512:s * 512 + 508]
    if any(sec):
        b[s * 512 + 508:s * 512 + 512] = zlib.crc32(sec).to_bytes(4, 'little')
open(path, 'wb').write(b)
PY
}

# --- configurations ------------------------------------------------------
# As ubiblk-init writes them: a base64 key file over a regular file.
head -c 64 /dev/urandom | base64 -w0 >"$dir/xts_key"
chmod 600 "$dir/xts_key"
truncate -s 4M "$dir/disk.raw"
head -c 2621440 /dev/urandom >"$dir/image.raw" # 2.5 MiB: partial stripe 2
write_config() { # file metadata_line encryption(yes/no) source_block
	{
		echo '[device]'
		echo 'data_path = "disk.raw"'
		[ -n "$2" ] && echo "$2"
		if [ "$3" = yes ]; then
			echo '[encryption]'
			echo 'xts_key.ref = "xts_key"'
			echo '[secrets.xts_key]'
			echo 'source.file = "xts_key"'
			echo 'encoding = "base64"'
		fi
		echo '[danger_zone]'
		echo 'enabled = true'
		echo 'allow_secret_over_regular_file = true'
		echo 'allow_unencrypted_disk = true'
		echo 'allow_unencrypted_connection = true'
		printf '%s\n' "$4"
	} >"$1"
	chmod 600 "$1"
}
raw_src=$'[stripe_source]\ntype = "raw"\nimage_path = "image.raw"'
write_config "$dir/enc.toml" 'metadata_path = "metadata"' yes "$raw_src"
write_config "$dir/plain.toml" 'metadata_path = "plain.md"' no "$raw_src"
write_config "$dir/nometa.toml" '' yes ''

# --- help and version ----------------------------------------------------
for p in init-metadata dump-metadata xts; do
	expect_rc 0 "$p --help" "$bin/$p" --help
	contains "$dir/out" "--config" "$p help lists --config"
	expect_rc 0 "$p --version" "$bin/$p" --version
	contains "$dir/out" "$p 0.5.1" "$p version text"
	expect_rc 2 "$p without arguments" "$bin/$p"
	contains "$dir/err" "$p: " "$p usage error names the program"
	expect_rc 2 "$p unknown option" "$bin/$p" --bogus
done
expect_rc 0 "init-metadata help" "$bin/init-metadata" -h
contains "$dir/out" "--stripe-sector-count-shift" "help lists the shift"
expect_rc 0 "xts help" "$bin/xts" -h
for o in --start --len --action; do
	contains "$dir/out" "$o" "xts help lists $o"
done

# --- init + dump, encrypted, raw source ----------------------------------
expect_rc 0 "init-metadata (encrypted, raw source)" \
	"$bin/init-metadata" -f "$dir/enc.toml"
[ -s "$dir/out" ] && bad "init-metadata printed something" || ok "init-metadata prints nothing"
equals "$(stat -c %a "$dir/metadata")" 600 "metadata file mode 0600"
equals "$(stat -c %s "$dir/metadata")" 1024 "metadata file is 1024 bytes"
lacks "$dir/metadata" "BDEV_UBI" "encrypted metadata has no plaintext magic"
expect_rc 0 "dump-metadata (encrypted)" "$bin/dump-metadata" -f "$dir/enc.toml"
cat >"$dir/want" <<EOF
data file: $dir/disk.raw (4194304 bytes)
source: raw (path: $dir/image.raw, size: 2621440 bytes)
metadata version: 2.0
stripe size: 1048576 bytes
fetched stripes: 
written stripes: 
has-source stripes: 0-2
EOF
same_file "$dir/out" "$dir/want" "dump prints the seven expected lines"
# Decrypted by xts (tweak = sector within the file): vector A.
expect_rc 0 "xts decode of the metadata" \
	"$bin/xts" -f "$dir/enc.toml" "$dir/metadata" "$dir/metadata.plain"
equals "$(sha "$dir/metadata.plain")" \
	ce9f11cb316997677e6b5071667ee82eb4638607386c3abd8e6d363565a68d71 \
	"decrypted metadata is vector A"
if [ "$have_py" = 1 ]; then
	py_decrypt_all "$dir/xts_key" "$dir/metadata" "$dir/metadata.py"
	same_file "$dir/metadata.py" "$dir/metadata.plain" \
		"python3-cryptography decrypts the metadata the same way"
fi
# A wrong key: the header CRC fails first.
head -c 64 /dev/urandom | base64 -w0 >"$dir/xts_key.good"
cp "$dir/xts_key" "$dir/xts_key.keep"
cp "$dir/xts_key.good" "$dir/xts_key"
expect_rc 1 "dump-metadata with a wrong key" "$bin/dump-metadata" -f "$dir/enc.toml"
contains "$dir/err" "Metadata header CRC32 mismatch" "wrong key reports the header CRC"
cp "$dir/xts_key.keep" "$dir/xts_key"

# The sync engine with write-through writes the same bytes.
write_config "$dir/sync.toml" 'metadata_path = "sync.md"' yes \
	$'[tuning]\nio_engine = "sync"\nwrite_through = true\n'"$raw_src"
expect_rc 0 "init-metadata with the sync engine" "$bin/init-metadata" -f "$dir/sync.toml"
expect_rc 0 "dump-metadata with the sync engine" "$bin/dump-metadata" -f "$dir/sync.toml"
same_file "$dir/out" "$dir/want" "sync engine dump matches"
same_file "$dir/sync.md" "$dir/metadata" "same key, same layout: same ciphertext"

# queue_size 65536 loads (with a warning) and the tools use 32768.
write_config "$dir/q64k.toml" 'metadata_path = "q64k.md"' yes \
	$'[tuning]\nqueue_size = 65536\n'"$raw_src"
RUST_LOG=warn expect_rc 0 "init-metadata with queue_size 65536" "$bin/init-metadata" -f "$dir/q64k.toml"
contains "$dir/err" "32768 is used" "queue_size 65536: the warning says what is used"
expect_rc 0 "dump-metadata with queue_size 65536" "$bin/dump-metadata" -f "$dir/q64k.toml"
same_file "$dir/out" "$dir/want" "queue_size 65536: same dump"

# --- unencrypted ---------------------------------------------------------
expect_rc 0 "init-metadata (unencrypted)" "$bin/init-metadata" -f "$dir/plain.toml"
contains "$dir/plain.md" "BDEV_UBI" "unencrypted metadata has the magic"
equals "$(sha "$dir/plain.md")" \
	ce9f11cb316997677e6b5071667ee82eb4638607386c3abd8e6d363565a68d71 \
	"unencrypted metadata is vector A"
# Corruption is reported, not crashed on.
cp "$dir/plain.md" "$dir/plain.md.good"
printf '\x01' | dd of="$dir/plain.md" bs=1 seek=600 conv=notrunc status=none
expect_rc 1 "dump of a corrupted stripe sector" "$bin/dump-metadata" -f "$dir/plain.toml"
contains "$dir/err" "CRC32 mismatch in metadata sector group 0" "group CRC error"
contains "$dir/err" "dump-metadata: " "error names the program"
cp "$dir/plain.md.good" "$dir/plain.md"

# --- the run-list format and the reset warning ---------------------------
truncate -s 16M "$dir/disk16.raw"
write_config "$dir/runs.toml" 'metadata_path = "runs.md"' no ''
sed -i 's/disk.raw/disk16.raw/' "$dir/runs.toml"
expect_rc 0 "init-metadata, 16 stripes, no source" "$bin/init-metadata" -f "$dir/runs.toml"
set_bits "$dir/runs.md" 1 0 1 2 3 5 7 8 10 11 12
set_bits "$dir/runs.md" 2 4 14 15
set_bits "$dir/runs.md" 4 9
expect_rc 0 "dump with mixed bits" "$bin/dump-metadata" -f "$dir/runs.toml"
contains "$dir/out" "source: None" "no source prints None"
equals "$(sed -n 5p "$dir/out")" "fetched stripes: 0-3, 5, 7, 8, 10-12" "fetched run list"
equals "$(sed -n 6p "$dir/out")" "written stripes: 4, 14, 15" "written run list"
equals "$(sed -n 7p "$dir/out")" "has-source stripes: 9" "has-source run list"
RUST_LOG=warn expect_rc 0 "init-metadata over fetched state" \
	"$bin/init-metadata" -f "$dir/runs.toml"
contains "$dir/err" "Resetting metadata" "reset of fetched state warns"
contains "$dir/err" "10 fetched and 3 written" "warning counts the stripes"
RUST_LOG=warn expect_rc 0 "init-metadata over fresh state" \
	"$bin/init-metadata" -f "$dir/runs.toml"
lacks "$dir/err" "Resetting metadata" "no warning for untouched metadata"
expect_rc 0 "dump after reset" "$bin/dump-metadata" -f "$dir/runs.toml"
equals "$(sed -n 5p "$dir/out")" "fetched stripes: " "reset clears fetched"

# --- shift option --------------------------------------------------------
expect_rc 0 "shift 6" "$bin/init-metadata" -f "$dir/plain.toml" -s 6
expect_rc 0 "dump at shift 6" "$bin/dump-metadata" -f "$dir/plain.toml"
contains "$dir/out" "stripe size: 32768 bytes" "32 KiB stripes"
contains "$dir/out" "has-source stripes: 0-79" "80 sourced stripes at shift 6"
equals "$(stat -c %s "$dir/plain.md")" 1024 "file never shrinks below its size"
expect_rc 0 "shift 16 (long option)" \
	"$bin/init-metadata" -f "$dir/plain.toml" --stripe-sector-count-shift=16
expect_rc 0 "dump at shift 16" "$bin/dump-metadata" -f "$dir/plain.toml"
contains "$dir/out" "stripe size: 33554432 bytes" "32 MiB stripes"
contains "$dir/out" "has-source stripes: 0" "one sourced stripe at shift 16"
for s in 5 17 0 255; do
	expect_rc 1 "shift $s out of range" "$bin/init-metadata" -f "$dir/plain.toml" -s "$s"
	contains "$dir/err" "stripe-sector-count-shift must be between 6 and 16." "shift $s message"
done
for s in 300 256 -1 abc ""; do
	expect_rc 2 "shift '$s' is a usage error" "$bin/init-metadata" -f "$dir/plain.toml" -s "$s"
done

# --- metadata_path and the metadata file ---------------------------------
expect_rc 1 "init-metadata without metadata_path" "$bin/init-metadata" -f "$dir/nometa.toml"
contains "$dir/err" "metadata_path is none" "init: metadata_path is none"
expect_rc 1 "dump-metadata without metadata_path" "$bin/dump-metadata" -f "$dir/nometa.toml"
contains "$dir/err" "metadata_path is none" "dump: metadata_path is none"

write_config "$dir/file.toml" 'metadata_path = "md/meta"' yes ''
mkdir "$dir/md"
head -c 8192 /dev/urandom >"$dir/md/meta"
chmod 4644 "$dir/md/meta"
expect_rc 0 "init-metadata over an existing 0644 file" "$bin/init-metadata" -f "$dir/file.toml"
equals "$(stat -c %a "$dir/md/meta")" 600 "mode fixed to 0600 (setuid cleared)"
equals "$(stat -c %s "$dir/md/meta")" 8192 "a larger file keeps its size"
expect_rc 0 "dump of the larger file" "$bin/dump-metadata" -f "$dir/file.toml"
if [ "$have_py" = 1 ]; then
	py_decrypt_all "$dir/xts_key" "$dir/md/meta" "$dir/meta.plain"
	equals "$(tail -c 7168 "$dir/meta.plain" | tr -d '\0' | wc -c)" 0 \
		"bytes past the metadata are encrypted zeros"
fi
printf 'x' >"$dir/md/tiny"
rm "$dir/md/meta"
ln -s tiny "$dir/md/meta"
expect_rc 1 "metadata path is a symlink" "$bin/init-metadata" -f "$dir/file.toml"
contains "$dir/err" "symbolic link" "symlink is refused"
equals "$(stat -c %s "$dir/md/tiny")" 1 "symlink target untouched"
rm "$dir/md/meta"
mkdir "$dir/md/meta"
expect_rc 1 "metadata path is a directory" "$bin/init-metadata" -f "$dir/file.toml"
contains "$dir/err" "is not a regular file" "directory is refused"
rmdir "$dir/md/meta"
printf 'x' >"$dir/md/meta"
expect_rc 0 "a 1-byte metadata file is extended" "$bin/init-metadata" -f "$dir/file.toml"
equals "$(stat -c %s "$dir/md/meta")" 1024 "extended to the metadata size"

# --- sources -------------------------------------------------------------
head -c 5242880 /dev/zero >"$dir/big.raw"
write_config "$dir/big.toml" 'metadata_path = "big.md"' yes \
	$'[stripe_source]\ntype = "raw"\nimage_path = "big.raw"'
expect_rc 1 "image larger than the data device" "$bin/init-metadata" -f "$dir/big.toml"
contains "$dir/err" "5242880 bytes" "names the image size"
contains "$dir/err" "4194304 bytes" "names the data size"
write_config "$dir/miss.toml" 'metadata_path = "miss.md"' yes \
	$'[stripe_source]\ntype = "raw"\nimage_path = "missing.raw"'
expect_rc 1 "missing raw image" "$bin/init-metadata" -f "$dir/miss.toml"
contains "$dir/err" "No such file or directory" "missing image is an I/O error"
write_config "$dir/remote.toml" 'metadata_path = "remote.md"' yes \
	$'[stripe_source]\ntype = "remote"\naddress = "127.0.0.1:4555"'
expect_rc 1 "remote source in init-metadata" "$bin/init-metadata" -f "$dir/remote.toml"
contains "$dir/err" "not supported yet by this build" "remote source refused clearly"
write_config "$dir/archive.toml" 'metadata_path = "archive.md"' yes \
	$'[stripe_source]\ntype = "archive"\nstorage = "filesystem"\npath = "arch"'
expect_rc 1 "archive source in init-metadata" "$bin/init-metadata" -f "$dir/archive.toml"
contains "$dir/err" "not supported yet by this build" "archive source refused clearly"
# dump-metadata only describes such sources.
cp "$dir/metadata" "$dir/remote.md"
expect_rc 0 "dump with a remote source" "$bin/dump-metadata" -f "$dir/remote.toml"
contains "$dir/out" "source: remote (address: 127.0.0.1:4555, psk_identity: None)" "remote description"
cp "$dir/metadata" "$dir/archive.md"
expect_rc 0 "dump with an archive source" "$bin/dump-metadata" -f "$dir/archive.toml"
contains "$dir/out" "source: archive filesystem (path: $dir/arch)" "archive description"

# --- xts -----------------------------------------------------------------
head -c $((3000 * 512)) /dev/urandom >"$dir/in.bin" # > 2 chunks
expect_rc 0 "xts encode, whole input" \
	"$bin/xts" -f "$dir/enc.toml" --action encode "$dir/in.bin" "$dir/enc.bin"
expect_rc 0 "xts decode, whole input" \
	"$bin/xts" -f "$dir/enc.toml" --action=decode "$dir/enc.bin" "$dir/dec.bin"
same_file "$dir/dec.bin" "$dir/in.bin" "whole-file round trip"
if cmp -s "$dir/enc.bin" "$dir/in.bin"; then bad "ciphertext equals plaintext"; else ok "ciphertext differs"; fi
if [ "$have_py" = 1 ]; then
	py_encode "$dir/xts_key" "$dir/in.bin" 0 3000 "$dir/enc.py"
	same_file "$dir/enc.bin" "$dir/enc.py" "xts encode matches python3-cryptography"
fi
# --start/--len: encode leaves a hole and writes at absolute offsets,
# decode writes from offset 0.
expect_rc 0 "xts encode --start 5 --len 1030" \
	"$bin/xts" -f "$dir/enc.toml" --action encode --start 5 --len 1030 "$dir/in.bin" "$dir/part.enc"
equals "$(stat -c %s "$dir/part.enc")" $(((5 + 1030) * 512)) "encode output is (start+len)*512 bytes"
equals "$(head -c 2560 "$dir/part.enc" | tr -d '\0' | wc -c)" 0 "encode leaves a zero hole before start"
same_file <(tail -c +2561 "$dir/part.enc") <(tail -c +2561 "$dir/enc.bin" | head -c $((1030 * 512))) \
	"encoded sectors sit at their absolute offsets"
if [ "$have_py" = 1 ]; then
	py_encode "$dir/xts_key" "$dir/in.bin" 5 1030 "$dir/part.py"
	same_file "$dir/part.enc" "$dir/part.py" "partial encode matches python3-cryptography"
fi
expect_rc 0 "xts decode --start 5 --len 1030" \
	"$bin/xts" -f "$dir/enc.toml" --start 5 --len 1030 "$dir/part.enc" "$dir/part.dec"
same_file "$dir/part.dec" <(tail -c +2561 "$dir/in.bin" | head -c $((1030 * 512))) \
	"decode --start writes the selected sectors from offset 0"
expect_rc 0 "xts decode --start without --len" \
	"$bin/xts" -f "$dir/enc.toml" --start 2990 "$dir/enc.bin" "$dir/tail.dec"
same_file "$dir/tail.dec" <(tail -c 5120 "$dir/in.bin") "default length is the rest"
echo stale >"$dir/zero.out"
expect_rc 0 "xts --len 0" "$bin/xts" -f "$dir/enc.toml" --len 0 "$dir/in.bin" "$dir/zero.out"
equals "$(stat -c %s "$dir/zero.out")" 0 "len 0 still truncates the output"
expect_rc 0 "xts encode --len 0" "$bin/xts" -f "$dir/enc.toml" --action encode --start 7 --len 0 "$dir/in.bin" "$dir/zero.out"
equals "$(stat -c %s "$dir/zero.out")" 0 "encode len 0 output is empty"
# Range errors (§8.4).
expect_rc 1 "decode start past the end" "$bin/xts" -f "$dir/enc.toml" --start 3000 "$dir/in.bin" "$dir/x"
contains "$dir/err" "Start sector 3000 is out of range (device has 3000 sectors)" "decode start message"
expect_rc 1 "encode start past the end" "$bin/xts" -f "$dir/enc.toml" --action encode --start 3001 "$dir/in.bin" "$dir/x"
contains "$dir/err" "Start sector 3001 is out of range (input has 3000 sectors)" "encode start message"
expect_rc 1 "length past the end" "$bin/xts" -f "$dir/enc.toml" --start 2990 --len 11 "$dir/in.bin" "$dir/x"
contains "$dir/err" "Requested length 11 exceeds available sectors (10)" "length message"
expect_rc 1 "encode length past the end" "$bin/xts" -f "$dir/enc.toml" --action encode --len 3001 "$dir/in.bin" "$dir/x"
contains "$dir/err" "Requested length 3001 exceeds available sectors (3000)" "encode length message"
: >"$dir/empty.bin"
expect_rc 1 "empty input" "$bin/xts" -f "$dir/enc.toml" "$dir/empty.bin" "$dir/x"
contains "$dir/err" "Start sector 0 is out of range (device has 0 sectors)" "empty input rejected"
head -c 1000 /dev/urandom >"$dir/odd.bin"
expect_rc 1 "encode of a non-sector-multiple input" "$bin/xts" -f "$dir/enc.toml" --action encode "$dir/odd.bin" "$dir/x"
contains "$dir/err" "Input file size 1000 is not a multiple of sector size" "encode size message"
expect_rc 1 "decode of a non-sector-multiple input" "$bin/xts" -f "$dir/enc.toml" "$dir/odd.bin" "$dir/x"
contains "$dir/err" "File size is not a multiple of sector size" "decode size message"
expect_rc 1 "xts without [encryption]" "$bin/xts" -f "$dir/runs.toml" "$dir/in.bin" "$dir/x"
contains "$dir/err" "Configuration does not contain encryption keys" "missing key message"
expect_rc 2 "xts --action bogus" "$bin/xts" -f "$dir/enc.toml" --action bogus "$dir/in.bin" "$dir/x"
expect_rc 2 "xts --start not a number" "$bin/xts" -f "$dir/enc.toml" --start x "$dir/in.bin" "$dir/x"
expect_rc 2 "xts with one positional" "$bin/xts" -f "$dir/enc.toml" "$dir/in.bin"
expect_rc 2 "xts with three positionals" "$bin/xts" -f "$dir/enc.toml" "$dir/in.bin" "$dir/x" "$dir/y"

[ "$fails" -eq 0 ] || { echo "$fails check(s) failed"; exit 1; }
if [ "$have_py" = 0 ]; then
	echo "SKIP: $pyxts has no cryptography package; the independent AES-XTS cross-checks did not run"
	exit 77
fi
echo "all storage tool checks passed"
