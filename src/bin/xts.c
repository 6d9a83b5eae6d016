/* xts: converts sectors between plaintext and the AES-256-XTS form of
 * the crypt device (storage.md §8.4), with the configuration's key and
 * tweak = the absolute sector number.
 *
 *   decode: input sectors start .. start+len-1 are decrypted and written
 *           to the output from offset 0;
 *   encode: the same input sectors are encrypted and written to the output
 *           at their own offsets (start*512 ...), so the output keeps a
 *           zero hole of start sectors and `decode --start` reverses it. */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "bdev/bdev.h"
#include "bdev/file.h"
#include "config/config.h"
#include "crypto/xts.h"
#include "util/cli.h"
#include "util/err.h"
#include "util/log.h"
#include "util/process.h"
#include "util/secmem.h"

/* Sectors converted per step (storage.md §1). */
#define XTS_CHUNK_SECTORS 1024u
#define XTS_TIMEOUT_MS	  30000u

static const char *prog = "xts";

struct xts_job {
	const char *input, *output;
	bool encode;
	uint64_t start;
	bool has_len;
	uint64_t len;
};

static void usage(FILE *f)
{
	fprintf(f,
		"Usage: %s -f CONFIG [--start SECTOR] [--len SECTORS] "
		"[--action encode|decode]\n"
		"          INPUT OUTPUT\n"
		"Encrypt (encode) or decrypt (decode) 512-byte sectors with "
		"the AES-256-XTS\n"
		"key of CONFIG, tweak = the absolute sector number, as the "
		"encrypted data\n"
		"and metadata files are stored.\n"
		"\n"
		"  decode  decrypts input sectors START..START+LEN-1 into "
		"OUTPUT from\n"
		"          offset 0\n"
		"  encode  encrypts the same input sectors into OUTPUT at "
		"their own\n"
		"          offsets: with --start S the first S sectors of "
		"OUTPUT stay a\n"
		"          zero hole, and `decode --start S` reverses it\n"
		"\n"
		"Options:\n"
		"  -f, --config FILE         configuration with an "
		"[encryption] key;\n"
		"                            required\n"
		"      --start SECTOR        first sector (default 0)\n"
		"      --len SECTORS         number of sectors (default: "
		"all from START)\n"
		"      --action encode|decode  direction (default decode)\n"
		"  -h, --help                print this help and exit\n"
		"  -V, --version             print the version and exit\n"
		"\n" UB_CLI_HELP_FOOTER,
		prog);
}

/* Writes all of buf at off (off < 0: at the current position). */
static int write_all(int fd, const uint8_t *buf, size_t n, off_t off,
		     const char *path, struct ub_err *err)
{
	ssize_t w;

	while (n) {
		w = off < 0 ? write(fd, buf, n) : pwrite(fd, buf, n, off);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return ub_err_ret(err, w < 0 ? -errno : -EIO,
					  "I/O error: writing %s: %s", path,
					  w < 0 ? strerror(errno)
						: "nothing written");
		buf += w;
		n -= (size_t)w;
		if (off >= 0)
			off += w;
	}
	return 0;
}

/* Applies the range rules of §8.4 to an input of total sectors. */
static int check_range(struct xts_job *job, uint64_t total, struct ub_err *err)
{
	if (job->start >= total)
		return ub_err_ret(
		    err, -EINVAL,
		    "Invalid parameter error: Start sector %" PRIu64
		    " is out of range (%s has %" PRIu64 " sectors)",
		    job->start, job->encode ? "input" : "device", total);
	if (!job->has_len)
		job->len = total - job->start;
	if (job->len > total - job->start)
		return ub_err_ret(err, -EINVAL,
				  "Invalid parameter error: Requested length "
				  "%" PRIu64
				  " exceeds available sectors (%" PRIu64 ")",
				  job->len, total - job->start);
	return 0;
}

/* Opens the input as a read-only buffered device (real capacity for block
 * devices too). Encode reports a size that is not a multiple of 512 in
 * its own words, as the reference does. */
static int open_input(const struct xts_job *job, struct ub_bdev **dev,
		      struct ub_bdev_chan **ch, struct ub_err *err)
{
	struct ub_file_bdev_opts o = {
	    .path = job->input,
	    .readonly = true,
	    .queue_depth = 1,
	};
	struct stat st;
	int rc;

	if (job->encode && stat(job->input, &st) == 0 && S_ISREG(st.st_mode) &&
	    st.st_size % UB_SECTOR_SIZE)
		return ub_err_ret(err, -EINVAL,
				  "Invalid parameter error: Input file size "
				  "%lld is not a multiple of sector size",
				  (long long)st.st_size);
	rc = ub_sync_bdev_open(&o, dev, err);
	if (rc)
		return rc;
	rc = ub_bdev_open_chan(*dev, ch, err);
	if (rc) {
		ub_bdev_put(*dev);
		*dev = NULL;
	}
	return rc;
}

static int run(struct xts_job *job, const unsigned char *key, size_t key_len,
	       struct ub_err *err)
{
	struct ub_xts *x = NULL;
	struct ub_bdev *in = NULL;
	struct ub_bdev_chan *ch = NULL;
	uint8_t *buf = NULL; /* owned: one chunk, freed after ch is closed */
	uint64_t done, s;
	uint32_t n;
	int out = -1, rc;

	rc = ub_xts_new(&x, key, key_len, err);
	if (rc)
		goto out;
	buf = ub_bdev_buf_alloc((size_t)XTS_CHUNK_SECTORS * UB_SECTOR_SIZE);
	if (!buf) {
		rc = ub_err_ret(err, -ENOMEM, "out of memory");
		goto out_free_xts;
	}
	rc = open_input(job, &in, &ch, err);
	if (rc)
		goto out_free_buf;
	rc = check_range(job, in->sectors, err);
	if (rc)
		goto out_close_in;
	out = open(job->output, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0666);
	if (out < 0) {
		rc = -errno;
		ub_err_set(err, "I/O error: cannot create %s: %s", job->output,
			   strerror(-rc));
		goto out_close_in;
	}
	if (job->encode) {
		struct stat st;

		/* Only regular files have a length to set. */
		if (fstat(out, &st) == 0 && S_ISREG(st.st_mode) &&
		    ftruncate(out, (off_t)(job->len * UB_SECTOR_SIZE))) {
			rc = -errno;
			ub_err_set(err, "I/O error: resizing %s: %s",
				   job->output, strerror(-rc));
			goto out_close_out;
		}
	}
	for (done = 0; done < job->len; done += n) {
		n = job->len - done < XTS_CHUNK_SECTORS
			? (uint32_t)(job->len - done)
			: XTS_CHUNK_SECTORS;
		s = job->start + done;
		rc = ub_bdev_read_sync(ch, s, n, buf, XTS_TIMEOUT_MS, err);
		if (rc) {
			ub_err_prefix(err, "I/O error: reading %s", job->input);
			goto out_close_out;
		}
		rc = job->encode ? ub_xts_encrypt(x, buf, s, n)
				 : ub_xts_decrypt(x, buf, s, n);
		if (rc) {
			ub_err_set(err, "Cryptography error: AES-XTS failed");
			goto out_close_out;
		}
		rc = write_all(out, buf, (size_t)n * UB_SECTOR_SIZE,
			       job->encode ? (off_t)(s * UB_SECTOR_SIZE) : -1,
			       job->output, err);
		if (rc)
			goto out_close_out;
	}
out_close_out:
	if (close(out) && !rc) {
		rc = -errno;
		ub_err_set(err, "I/O error: closing %s: %s", job->output,
			   strerror(-rc));
	}
out_close_in:
	ub_bdev_chan_close(ch); /* waits for a timed-out read */
	ub_bdev_put(in);
out_free_buf:
	ub_wipe(buf, (size_t)XTS_CHUNK_SECTORS * UB_SECTOR_SIZE);
	free(buf);
out_free_xts:
	ub_xts_free(x);
out:
	return rc;
}

enum { OPT_START = 0x100, OPT_LEN, OPT_ACTION };

int main(int argc, char **argv)
{
	static const struct option longopts[] = {
	    {"config", required_argument, NULL, 'f'},
	    {"start", required_argument, NULL, OPT_START},
	    {"len", required_argument, NULL, OPT_LEN},
	    {"action", required_argument, NULL, OPT_ACTION},
	    {"help", no_argument, NULL, 'h'},
	    {"version", no_argument, NULL, 'V'},
	    {NULL, 0, NULL, 0},
	};
	struct ub_config cfg = {0};
	struct ub_err err = {{0}};
	struct xts_job job = {0};
	const struct ub_secret *key;
	const char *config_path = NULL;
	int opt, rc;

	ub_log_init(prog);
	ub_process_disable_dumps();

	opterr = 0;
	while ((opt = getopt_long(argc, argv, ":f:hV", longopts, NULL)) != -1) {
		switch (opt) {
		case 'f':
			config_path = optarg;
			break;
		case OPT_START:
			if (ub_cli_parse_u64(optarg, UINT64_MAX, &job.start))
				return ub_cli_usage_error(
				    prog,
				    "invalid value '%s' for --start: "
				    "expected a sector number",
				    optarg);
			break;
		case OPT_LEN:
			if (ub_cli_parse_u64(optarg, UINT64_MAX, &job.len))
				return ub_cli_usage_error(
				    prog,
				    "invalid value '%s' for --len: "
				    "expected a number of sectors",
				    optarg);
			job.has_len = true;
			break;
		case OPT_ACTION:
			if (!strcmp(optarg, "encode"))
				job.encode = true;
			else if (!strcmp(optarg, "decode"))
				job.encode = false;
			else
				return ub_cli_usage_error(
				    prog,
				    "invalid value '%s' for --action: "
				    "expected encode or decode",
				    optarg);
			break;
		case 'h':
			usage(stdout);
			return UB_EXIT_OK;
		case 'V':
			ub_cli_print_version(prog);
			return UB_EXIT_OK;
		default:
			return ub_cli_bad_option(prog, opt, argv, optind);
		}
	}
	if (!config_path)
		return ub_cli_usage_error(
		    prog, "the option --config FILE is required");
	if (argc - optind < 2)
		return ub_cli_usage_error(prog, "INPUT and OUTPUT files are "
						"required");
	if (argc - optind > 2)
		return ub_cli_usage_error(prog, "unexpected argument '%s'",
					  argv[optind + 2]);
	job.input = argv[optind];
	job.output = argv[optind + 1];

	if (ub_config_load_for_cli(prog, config_path, &cfg))
		return UB_EXIT_FAILURE;
	key = ub_config_xts_key(&cfg);
	if (!cfg.has_encryption)
		rc = ub_err_ret(&err, -EINVAL,
				"Invalid parameter error: "
				"Configuration does not contain encryption "
				"keys");
	else if (!key)
		rc = ub_err_ret(&err, -EINVAL,
				"Invalid parameter error: Encryption secret "
				"'%s' not found",
				cfg.xts_key_ref ? cfg.xts_key_ref : "");
	else
		rc = run(&job, key->value, key->len, &err);
	ub_config_free(&cfg);
	if (rc)
		return ub_cli_fail(prog, "%s failed: %s",
				   job.encode ? "encode" : "decode", err.msg);
	return UB_EXIT_OK;
}
