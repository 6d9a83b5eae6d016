#!/usr/bin/env bash
# CLI conventions of the programs, end to end: --help/--version, exit codes
# 0/1/2, "program: what failed: why" errors with file:line:col, --check with
# secrets redacted (KEK delivered through a real FIFO), permission warning.
set -u
bin=${UBIBLK_BUILD:?}/src/bin/vhost-backend
[ -x "$bin" ] || { echo "vhost-backend not built at $bin"; exit 1; }
dir=$(mktemp -d)
trap 'rm -rf "$dir"; kill $(jobs -p) 2>/dev/null' EXIT
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

expect_rc 0 "--help" "$bin" --help
contains "$dir/out" "--config" "help lists --config"
contains "$dir/out" "--check" "help lists --check"
expect_rc 0 "-h" "$bin" -h
expect_rc 0 "--version" "$bin" --version
contains "$dir/out" "vhost-user-blk backend 0.5.1" "version text"
expect_rc 0 "-V" "$bin" -V
UBIBLK_LOG=bogus expect_rc 0 "an unknown log level does not stop the program" "$bin" --version
contains "$dir/err" "UBIBLK_LOG: unrecognised log level 'bogus', using 'error'" "an unknown log level is reported"
expect_rc 2 "no arguments is a usage error" "$bin"
contains "$dir/err" "vhost-backend: " "usage error names the program"
expect_rc 2 "unknown option" "$bin" --bogus
expect_rc 2 "missing option value" "$bin" -f
expect_rc 2 "stray positional argument" "$bin" -f x.toml extra
expect_rc 1 "missing config file" "$bin" -f "$dir/nope.toml"
contains "$dir/err" "vhost-backend: loading configuration failed: " "runtime error format"
contains "$dir/err" "No such file or directory" "runtime error says why"

# An unknown key: the error names file, line, column and key path.
cat >"$dir/bad.toml" <<'T'
[device]
data_path = "disk.raw"
unknown_field = 1
T
chmod 600 "$dir/bad.toml"
expect_rc 1 "unknown key" "$bin" --config "$dir/bad.toml" --check
contains "$dir/err" "$dir/bad.toml:3:1: device.unknown_field" "error position and key path"
contains "$dir/err" "unknown field \`unknown_field\`" "reference error text"

# A real configuration: KEK from a FIFO, XTS key as an inline envelope
# (config.md §9.4 vector: plaintext 00..3f under the name xts-key).
mkfifo "$dir/kek.pipe"
cat >"$dir/config.toml" <<'T'
include = ["secrets.toml"]
[device]
data_path = "disk.raw"
metadata_path = "meta"
vhost_socket = "vhost.sock"
device_id = "vm1"
[tuning]
num_queues = 2
cpus = [0, 1]
[encryption]
xts_key.ref = "xts-key"
T
cat >"$dir/secrets.toml" <<'T'
[secrets.kek]
source.file = "kek.pipe"
encoding = "base64"
[secrets.xts-key]
source.inline = "IiIiIiIiIiIiIiIiF/YFSsTKmVjtNtQ3RKvn2g+C3/F+lLpcSlYQ8xX8exxlXokhd43f+WZxxwbKdWcag+OsUaFHTMmMTdDC3lbRjd5mI3GRhW03UznRcdD19Ng="
encoding = "base64"
encrypted_by.ref = "kek"
T
chmod 600 "$dir/config.toml" "$dir/secrets.toml"
(echo "ERERERERERERERERERERERERERERERERERERERERERE=" >"$dir/kek.pipe") &
expect_rc 0 "--check on a valid configuration" timeout 20 "$bin" -f "$dir/config.toml" --check
contains "$dir/out" "[REDACTED]" "secrets are redacted"
contains "$dir/out" "$dir/disk.raw" "relative paths are resolved"
contains "$dir/out" "num_queues = 2" "tuning printed"
lacks "$dir/out" "ERERERER" "KEK text not printed"
lacks "$dir/out" "IiIiIiIi" "envelope not printed"
lacks "$dir/err" "ERERERER" "KEK text not logged"
# The printed configuration is TOML again.
if "$UBIBLK_BUILD/tools/toml-decode" <"$dir/out" >/dev/null 2>"$dir/err2"; then
	ok "--check output is valid TOML"
else
	bad "--check output is not valid TOML: $(cat "$dir/err2")"
fi

# Wrong KEK: decryption fails, exit 1, the secret name and KEK named.
(printf '%s\n' "IiIiIiIiIiIiIiIiIiIiIiIiIiIiIiIiIiIiIiIiIiI=" >"$dir/kek.pipe") &
expect_rc 1 "wrong KEK" timeout 20 "$bin" -f "$dir/config.toml" --check
contains "$dir/err" "failed to decrypt using KEK 'kek'" "decrypt failure names the KEK"

# Group/other-readable config: a warning, not an error.
chmod 644 "$dir/config.toml"
(echo "ERERERERERERERERERERERERERERERERERERERERERE=" >"$dir/kek.pipe") &
RUST_LOG=warn expect_rc 0 "0644 config still loads" timeout 20 "$bin" -f "$dir/config.toml" --check
contains "$dir/err" "is accessible to other users (mode 0644)" "permission warning"
wait

[ "$fails" -eq 0 ] || { echo "$fails check(s) failed"; exit 1; }
echo "all CLI checks passed"
