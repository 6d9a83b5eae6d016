/* dump-metadata: prints the stripe metadata of a configuration in the
 * reference's seven-line format (storage.md §8.3), decrypting it when the
 * configuration has a key. Nothing is written. */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bdev/bdev.h"
#include "bdev/file.h"
#include "config/config.h"
#include "stripe/metadata.h"
#include "util/cli.h"
#include "util/err.h"
#include "util/log.h"
#include "util/process.h"
#include "util/secmem.h"

static const char *prog = "dump-metadata";

static void usage(FILE *f)
{
	fprintf(f,
		"Usage: %s -f CONFIG\n"
		"Print the stripe metadata of CONFIG's device: data file, "
		"stripe source,\n"
		"format version, stripe size, and the fetched, written and "
		"has-source\n"
		"stripes as ranges (e.g. 0-3, 5, 7, 8, 10-12). Encrypted "
		"metadata is\n"
		"decrypted with the configured key.\n"
		"\n"
		"Options:\n"
		"  -f, --config FILE  configuration file (TOML); required\n"
		"  -h, --help         print this help and exit\n"
		"  -V, --version      print the version and exit\n"
		"\n" UB_CLI_HELP_FOOTER,
		prog);
}

/* Opens path read-only through the configured engine (storage.md §3.6). */
static int open_file_dev(const struct ub_config *cfg, const char *path,
			 uint32_t depth, struct ub_bdev **out,
			 struct ub_err *err)
{
	struct ub_file_bdev_opts o = {
	    .path = path,
	    .readonly = true,
	    .direct = true,
	    .write_through = cfg->tuning.write_through,
	    .queue_depth = depth,
	};

	return ub_file_bdev_open(cfg->tuning.io_engine, &o, out, err);
}

static const char *or_none(const char *s)
{
	return s ? s : "None";
}

/* Sets *out to the source description (heap; the caller frees it). A
 * raw image is opened (it must exist and be a multiple of 512 bytes) only
 * to learn its size. */
static int describe_source(const struct ub_config *cfg, char **out,
			   struct ub_err *err)
{
	const struct ub_stripe_source_cfg *src = &cfg->stripe_source;
	const struct ub_archive_storage_cfg *ar = &src->archive;
	struct ub_bdev *image = NULL;
	int n = -1, rc;

	switch (src->type) {
	case UB_STRIPE_SOURCE_NONE:
		n = asprintf(out, "None");
		break;
	case UB_STRIPE_SOURCE_RAW:
		rc = open_file_dev(cfg, src->raw.image_path, 64, &image, err);
		if (rc)
			return rc;
		n = asprintf(out, "raw (path: %s, size: %" PRIu64 " bytes)",
			     src->raw.image_path,
			     image->sectors * UB_SECTOR_SIZE);
		ub_bdev_put(image);
		break;
	case UB_STRIPE_SOURCE_REMOTE:
		n = asprintf(out, "remote (address: %s, psk_identity: %s)",
			     src->remote.address,
			     or_none(src->remote.has_psk
					 ? src->remote.psk_identity
					 : NULL));
		break;
	case UB_STRIPE_SOURCE_ARCHIVE:
		if (ar->kind == UB_ARCHIVE_FILESYSTEM)
			n = asprintf(out, "archive filesystem (path: %s)",
				     ar->path);
		else
			n = asprintf(out,
				     "archive s3 (bucket: %s, prefix: %s, "
				     "region: %s)",
				     ar->bucket, or_none(ar->prefix),
				     or_none(ar->region));
		break;
	}
	if (n < 0) {
		*out = NULL;
		return ub_err_ret(err, -ENOMEM, "out of memory");
	}
	return 0;
}

/* Prints the stripes whose header has bit as runs: a single number, two
 * numbers for a run of two ("7, 8"), "a-b" for three or more; ", " apart. */
static void print_runs(FILE *f, const struct ub_metadata *md, uint8_t bit)
{
	uint64_t i = 0, start;
	bool first = true;

	while (i < md->stripe_count) {
		if (!(md->headers[i] & bit)) {
			i++;
			continue;
		}
		start = i;
		while (i < md->stripe_count && (md->headers[i] & bit))
			i++;
		/* The run is [start, i). */
		fprintf(f, "%s", first ? "" : ", ");
		first = false;
		if (i - start == 1)
			fprintf(f, "%" PRIu64, start);
		else if (i - start == 2)
			fprintf(f, "%" PRIu64 ", %" PRIu64, start, start + 1);
		else
			fprintf(f, "%" PRIu64 "-%" PRIu64, start, i - 1);
	}
}

static int dump_metadata(const struct ub_config *cfg, struct ub_err *err)
{
	struct ub_metadata md = {0};
	struct ub_bdev *data = NULL, *meta = NULL;
	struct ub_bdev_chan *ch = NULL;
	char *source = NULL; /* owned: heap description, freed below */
	uint64_t data_sectors;
	int rc;

	rc = open_file_dev(cfg, cfg->device.data_path,
			   ub_config_queue_depth(cfg), &data, err);
	if (rc)
		goto out;
	data_sectors = data->sectors;
	ub_bdev_put(data);
	rc = describe_source(cfg, &source, err);
	if (rc)
		goto out;
	rc = ub_metadata_dev_open(cfg, true, &meta, err);
	if (rc)
		goto out_free_source;
	rc = ub_bdev_open_chan(meta, &ch, err);
	if (rc)
		goto out_put_meta;
	rc = ub_metadata_load(ch, &md, err);
	if (rc)
		goto out_close;

	printf("data file: %s (%" PRIu64 " bytes)\n", cfg->device.data_path,
	       data_sectors * UB_SECTOR_SIZE);
	printf("source: %s\n", source);
	printf("metadata version: %u.%u\n", md.version_major, md.version_minor);
	printf("stripe size: %" PRIu64 " bytes\n",
	       (uint64_t)UB_SECTOR_SIZE << md.stripe_shift);
	printf("fetched stripes: ");
	print_runs(stdout, &md, UB_STRIPE_FETCHED);
	printf("\nwritten stripes: ");
	print_runs(stdout, &md, UB_STRIPE_WRITTEN);
	printf("\nhas-source stripes: ");
	print_runs(stdout, &md, UB_STRIPE_HAS_SOURCE);
	printf("\n");
	if (fflush(stdout) || ferror(stdout))
		rc = ub_err_ret(err, -EIO,
				"I/O error: writing to standard "
				"output failed");
	ub_metadata_free(&md);
out_close:
	ub_bdev_chan_close(ch);
out_put_meta:
	ub_bdev_put(meta);
out_free_source:
	free(source);
out:
	return rc;
}

int main(int argc, char **argv)
{
	static const struct option longopts[] = {
	    {"config", required_argument, NULL, 'f'},
	    {"help", no_argument, NULL, 'h'},
	    {"version", no_argument, NULL, 'V'},
	    {NULL, 0, NULL, 0},
	};
	struct ub_config cfg = {0};
	struct ub_err err = {{0}};
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
	if (optind < argc)
		return ub_cli_usage_error(prog, "unexpected argument '%s'",
					  argv[optind]);
	if (!config_path)
		return ub_cli_usage_error(
		    prog, "the option --config FILE is required");

	if (ub_config_load_for_cli(prog, config_path, &cfg))
		return UB_EXIT_FAILURE;
	rc = dump_metadata(&cfg, &err);
	ub_config_free(&cfg);
	if (rc)
		return ub_cli_fail(prog, "dumping metadata failed: %s",
				   err.msg);
	return UB_EXIT_OK;
}
