/* Configuration loader tests: the acceptance criteria 1-20 and 34-41 of
 * config.md §15 (the criterion number is in each test's name), the §16
 * items this implementation handles, and its own improvements. Every test
 * writes its files into a fresh directory under a mkdtemp root. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "config/config.h"
#include "config/danger_zone.h"
#include "config/toml.h"
#include "crypto/kek.h"
#include "util/base64.h"
#include "util/fileio.h"
#include "util/log.h"

/* ---- fixture ----------------------------------------------------------- */

static char root_dir[PATH_MAX]; /* mkdtemp root for the whole run */
static char dir[PATH_MAX];	/* this test's directory */
static unsigned case_no;

/* "<dir>/<name>" in one of a few rotating static buffers. */
static const char *p(const char *name)
{
	static char bufs[8][PATH_MAX];
	static unsigned next;
	char *b = bufs[next++ % 8];

	if (snprintf(b, PATH_MAX, "%s/%s", dir, name) >= PATH_MAX)
		fail_msg("path too long");
	return b;
}

static int rm_entry(const char *path, const struct stat *st, int flag,
		    struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	chmod(path, 0700);
	return remove(path);
}

static int group_setup(void **state)
{
	(void)state;
	snprintf(root_dir, sizeof(root_dir), "/tmp/ubiblk-cfg-test.XXXXXX");
	if (!mkdtemp(root_dir))
		return -1;
	ub_log_set_level(UB_LOG_ERROR);
	return 0;
}

static int group_teardown(void **state)
{
	(void)state;
	return nftw(root_dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

static int setup(void **state)
{
	(void)state;
	if (snprintf(dir, sizeof(dir), "%s/case%u", root_dir, ++case_no) >=
	    (int)sizeof(dir))
		return -1;
	return mkdir(dir, 0700);
}

static int teardown(void **state)
{
	(void)state;
	return nftw(dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

static void write_bytes(const char *name, const void *data, size_t len,
			mode_t mode)
{
	int fd = open(p(name), O_WRONLY | O_CREAT | O_TRUNC, mode);

	assert_true(fd >= 0);
	assert_int_equal(fchmod(fd, mode), 0);
	assert_int_equal(write(fd, data, len), (ssize_t)len);
	close(fd);
}

static void write_file(const char *name, const char *content)
{
	write_bytes(name, content, strlen(content), 0600);
}

#define assert_contains(hay, needle)                                           \
	do {                                                                   \
		if (!strstr((hay), (needle)))                                  \
			fail_msg("expected \"%s\" in \"%s\"", (needle),        \
				 (hay));                                       \
	} while (0)

static int load(const char *toml, struct ub_config *cfg, struct ub_err *err)
{
	write_file("config.toml", toml);
	ub_err_clear(err);
	return ub_config_load(p("config.toml"), cfg, err);
}

static void load_ok(const char *toml, struct ub_config *cfg)
{
	struct ub_err err;

	if (load(toml, cfg, &err) != 0)
		fail_msg("load failed: %s", err.msg);
}

/* Loads toml, expects failure with needle in the message and a zeroed
 * struct afterwards. */
static void load_fails(const char *toml, const char *needle)
{
	static const struct ub_config zero;
	struct ub_config cfg;
	struct ub_err err;

	if (load(toml, &cfg, &err) == 0) {
		ub_config_free(&cfg);
		fail_msg("load succeeded, expected \"%s\"", needle);
	}
	assert_contains(err.msg, needle);
	assert_memory_equal(&cfg, &zero, sizeof(cfg));
}

/* stderr capture for the warnings. */
static int saved_stderr = -1;

static void capture_begin(void)
{
	int fd;

	fflush(stderr);
	saved_stderr = dup(2);
	fd = open(p("stderr.log"), O_WRONLY | O_CREAT | O_TRUNC, 0600);
	assert_true(fd >= 0 && saved_stderr >= 0);
	dup2(fd, 2);
	close(fd);
	ub_log_set_level(UB_LOG_WARN);
}

/* Returns what was logged (heap; caller frees). */
static char *capture_end(void)
{
	struct ub_err err;
	char *buf;
	size_t len;

	fflush(stderr);
	dup2(saved_stderr, 2);
	close(saved_stderr);
	ub_log_set_level(UB_LOG_ERROR);
	assert_int_equal(
	    ub_read_file(p("stderr.log"), 1 << 20, &buf, &len, &err), 0);
	return buf;
}

/* Common pieces. */
#define DEVICE "[device]\ndata_path = \"disk.raw\"\n"
#define DZ_DEV                                                                 \
	"[danger_zone]\nenabled = true\nallow_unencrypted_disk = true\n"       \
	"allow_env_secrets = true\nallow_inline_plaintext_secrets = true\n"
/* 64 bytes whose two halves differ. */
#define XTS_VALUE                                                              \
	"0123456789abcdef0123456789abcdef"                                     \
	"fedcba9876543210fedcba9876543210"
#define KEK32 "0123456789abcdef0123456789abcdef"

/* ---- §15 main loader: criteria 1-15 -------------------------------------- */

static void test_c01_valid_config_loads_with_its_values(void **state)
{
	struct ub_config cfg;

	(void)state;
	setenv("UB_TEST_XTS_KEY", XTS_VALUE, 1);
	load_ok("[device]\n"
		"data_path = \"/dev/ubiblk0\"\n"
		"[tuning]\n"
		"num_queues = 2\n"
		"cpus = [0, 1]\n"
		"poll_timeout_us = 5000\n"
		"[encryption]\n"
		"xts_key.ref = \"my_xts_key\"\n"
		"[secrets.my_xts_key]\n"
		"source.env = \"UB_TEST_XTS_KEY\"\n"
		"[danger_zone]\n"
		"enabled = true\n"
		"allow_env_secrets = true\n",
		&cfg);
	assert_string_equal(cfg.device.data_path, "/dev/ubiblk0");
	assert_int_equal(cfg.tuning.num_queues, 2);
	assert_int_equal(cfg.tuning.cpus_len, 2);
	assert_int_equal(cfg.tuning.cpus[0], 0);
	assert_int_equal(cfg.tuning.cpus[1], 1);
	assert_int_equal(cfg.tuning.poll_timeout_us, 5000);
	assert_true(cfg.has_encryption);
	assert_int_equal(cfg.secrets.count, 1);
	assert_non_null(ub_secrets_find(&cfg.secrets, "my_xts_key"));
	assert_non_null(ub_config_xts_key(&cfg));
	assert_int_equal(ub_config_xts_key(&cfg)->len, 64);
	assert_memory_equal(ub_config_xts_key(&cfg)->value, XTS_VALUE, 64);
	/* Defaults of everything not written. */
	assert_string_equal(cfg.device.device_id, "ubiblk");
	assert_null(cfg.device.metadata_path);
	assert_int_equal(cfg.tuning.queue_size, 64);
	assert_int_equal(cfg.tuning.io_engine, UB_IO_ENGINE_IO_URING);
	ub_config_free(&cfg);
	unsetenv("UB_TEST_XTS_KEY");
}

static void test_c02_missing_device_section_is_rejected(void **state)
{
	(void)state;
	load_fails("[tuning]\nnum_queues = 2\n" DZ_DEV,
		   "Missing required [device] section");
}

static void test_c03_undefined_xts_key_reference_is_rejected(void **state)
{
	(void)state;
	load_fails(DEVICE "[encryption]\nxts_key.ref = \"nonexistent_key\"\n",
		   "Encryption xts_key reference 'nonexistent_key' not found "
		   "in configuration");
}

static void test_c04_short_xts_key_is_rejected(void **state)
{
	(void)state;
	load_fails(DEVICE
		   "[encryption]\nxts_key.ref = \"short_key\"\n"
		   "[secrets.short_key]\nsource.inline = \"12345\"\n" DZ_DEV,
		   "Encryption xts_key 'short_key' must be exactly 64 bytes "
		   "(got 5 bytes)");
}

static void test_c05_encryption_required_unless_danger_zone(void **state)
{
	struct ub_config cfg;

	(void)state;
	load_fails(DEVICE, "Disk encryption is required unless "
			   "danger_zone.allow_unencrypted_disk is enabled");
	/* The flag without `enabled` counts for nothing. */
	load_fails(DEVICE "[danger_zone]\nallow_unencrypted_disk = true\n",
		   "Disk encryption is required");
	load_ok(DEVICE "[danger_zone]\nenabled = true\n"
		       "allow_unencrypted_disk = true\n",
		&cfg);
	assert_false(cfg.has_encryption);
	assert_null(ub_config_xts_key(&cfg));
	ub_config_free(&cfg);
}

static void test_c06_remote_source_without_psk_is_rejected(void **state)
{
	(void)state;
	load_fails(DEVICE "[stripe_source]\ntype = \"remote\"\n"
			  "address = \"127.0.0.1:4555\"\n",
		   "Remote stripe source requires PSK unless "
		   "danger_zone.allow_unencrypted_connection is enabled");
}

static void test_c07_unknown_stripe_source_type_is_rejected(void **state)
{
	(void)state;
	load_fails(DEVICE "[stripe_source]\ntype = \"invalid_type\"\n" DZ_DEV,
		   "Failed to parse stripe_source section: unknown variant "
		   "`invalid_type`");
}

static void test_c08_unknown_device_field_is_rejected(void **state)
{
	(void)state;
	load_fails(DEVICE "unknown_field = 1\n" DZ_DEV,
		   "Failed to parse device section: unknown field "
		   "`unknown_field`");
}

static void test_c09_unknown_top_level_section_is_rejected(void **state)
{
	(void)state;
	load_fails(DEVICE DZ_DEV "[unknown_section]\nx = 1\n",
		   "Unknown top-level config key 'unknown_section'");
}

static void test_c10_zero_num_queues_is_rejected(void **state)
{
	(void)state;
	load_fails(DEVICE "[tuning]\nnum_queues = 0\n" DZ_DEV,
		   "num_queues 0 is out of range (must be 1..=63)");
}

static void test_c11_relative_paths_resolve_against_config_dir(void **state)
{
	struct ub_config cfg;

	(void)state;
	load_ok("[device]\n"
		"data_path = \"data.raw\"\n"
		"metadata_path = \"meta/metadata\"\n"
		"vhost_socket = \"vhost.sock\"\n"
		"rpc_socket = \"/run/ubiblk/rpc.sock\"\n"
		"[stripe_source]\n"
		"type = \"raw\"\n"
		"image_path = \"./image.raw\"\n" DZ_DEV,
		&cfg);
	assert_string_equal(cfg.config_dir, dir);
	assert_string_equal(cfg.device.data_path, p("data.raw"));
	assert_string_equal(cfg.device.metadata_path, p("meta/metadata"));
	assert_string_equal(cfg.device.vhost_socket, p("vhost.sock"));
	assert_string_equal(cfg.device.rpc_socket, "/run/ubiblk/rpc.sock");
	/* No normalisation. */
	assert_string_equal(cfg.stripe_source.raw.image_path, p("./image.raw"));
	ub_config_free(&cfg);

	load_ok(DEVICE "[stripe_source]\ntype = \"archive\"\n"
		       "storage = \"filesystem\"\npath = \"archive\"\n" DZ_DEV,
		&cfg);
	assert_int_equal(cfg.stripe_source.type, UB_STRIPE_SOURCE_ARCHIVE);
	assert_string_equal(cfg.stripe_source.archive.path, p("archive"));
	ub_config_free(&cfg);
}

static void test_c11_bare_config_name_resolves_against_cwd(void **state)
{
	struct ub_config cfg;
	struct ub_err err;
	char cwd[PATH_MAX];
	int rc;

	(void)state;
	write_file("config.toml", DEVICE DZ_DEV);
	assert_non_null(getcwd(cwd, sizeof(cwd)));
	assert_int_equal(chdir(dir), 0);
	rc = ub_config_load("config.toml", &cfg, &err);
	assert_int_equal(chdir(cwd), 0);
	if (rc)
		fail_msg("%s", err.msg);
	assert_string_equal(cfg.config_dir, "");
	assert_string_equal(cfg.device.data_path, "disk.raw");
	ub_config_free(&cfg);
}

static void test_c12_relative_secret_file_is_resolved_and_read(void **state)
{
	struct ub_config cfg;
	const struct ub_secret *s;

	(void)state;
	assert_int_equal(mkdir(p("keys"), 0700), 0);
	write_bytes("keys/xts.key", XTS_VALUE, 64, 0600);
	load_ok(DEVICE "[encryption]\nxts_key.ref = \"xts\"\n"
		       "[secrets.xts]\nsource.file = \"keys/xts.key\"\n"
		       "[danger_zone]\nenabled = true\n"
		       "allow_secret_over_regular_file = true\n",
		&cfg);
	s = ub_config_xts_key(&cfg);
	assert_non_null(s);
	assert_string_equal(s->source_arg, p("keys/xts.key"));
	assert_int_equal(s->len, 64);
	assert_memory_equal(s->value, XTS_VALUE, 64);
	ub_config_free(&cfg);
}

static void test_c13_config_mode_0644_only_warns(void **state)
{
	struct ub_config cfg;
	struct ub_err err;
	char want[PATH_MAX + 128];
	char *log;
	int rc;

	(void)state;
	write_bytes("config.toml", DEVICE DZ_DEV, strlen(DEVICE DZ_DEV), 0644);
	capture_begin();
	rc = ub_config_load(p("config.toml"), &cfg, &err);
	log = capture_end();
	if (rc)
		fail_msg("%s", err.msg);
	ub_config_free(&cfg);
	snprintf(want, sizeof(want),
		 "config file '%s' is accessible to other users (mode 0644); "
		 "consider restricting to 0600",
		 p("config.toml"));
	assert_contains(log, want);
	free(log);

	assert_int_equal(chmod(p("config.toml"), 0600), 0);
	capture_begin();
	rc = ub_config_load(p("config.toml"), &cfg, &err);
	log = capture_end();
	assert_int_equal(rc, 0);
	ub_config_free(&cfg);
	assert_null(strstr(log, "accessible to other users"));
	free(log);
}

static void test_c14_archive_target_file_loads(void **state)
{
	struct ub_target_config t;
	struct ub_err err;

	(void)state;
	setenv("UB_TEST_ARCHIVE_KEK", KEK32, 1);
	write_file("target.toml", "[target]\n"
				  "storage = \"filesystem\"\n"
				  "path = \"archive-dir\"\n"
				  "archive_kek.ref = \"archive-kek\"\n"
				  "[secrets.archive-kek]\n"
				  "source.env = \"UB_TEST_ARCHIVE_KEK\"\n"
				  "[danger_zone]\n"
				  "enabled = true\n"
				  "allow_env_secrets = true\n");
	if (ub_target_config_load(p("target.toml"), &t, &err))
		fail_msg("%s", err.msg);
	assert_int_equal(t.target.kind, UB_ARCHIVE_FILESYSTEM);
	/* Kept as written: relative to the working directory. */
	assert_string_equal(t.target.path, "archive-dir");
	assert_string_equal(t.target.archive_kek_ref, "archive-kek");
	assert_int_equal(t.secrets.count, 1);
	ub_target_config_free(&t);
	unsetenv("UB_TEST_ARCHIVE_KEK");
}

static void test_c15_remote_server_file_loads_and_requires_psk(void **state)
{
	struct ub_server_config s;
	struct ub_err err;

	(void)state;
	setenv("UB_TEST_PSK", "0123456789abcdef0123", 1);
	write_file("server.toml", "[server]\n"
				  "address = \"127.0.0.1:4555\"\n"
				  "psk.identity = \"node-a\"\n"
				  "psk.secret.ref = \"psk\"\n"
				  "[secrets.psk]\n"
				  "source.env = \"UB_TEST_PSK\"\n"
				  "[danger_zone]\n"
				  "enabled = true\n"
				  "allow_env_secrets = true\n");
	if (ub_server_config_load(p("server.toml"), &s, &err))
		fail_msg("%s", err.msg);
	assert_true(s.server.has_psk);
	assert_string_equal(s.server.psk_identity, "node-a");
	assert_string_equal(s.server.psk_secret_ref, "psk");
	assert_string_equal(s.server.address, "127.0.0.1:4555");
	assert_int_equal(s.secrets.count, 1);
	ub_server_config_free(&s);

	write_file("server.toml", "[server]\naddress = \"127.0.0.1:4555\"\n");
	assert_int_not_equal(ub_server_config_load(p("server.toml"), &s, &err),
			     0);
	assert_contains(err.msg, "Remote stripe source requires PSK unless "
				 "danger_zone.allow_unencrypted_connection is "
				 "enabled");
	assert_null(s.path);
	unsetenv("UB_TEST_PSK");
}

/* ---- §15 includes: criteria 16-20 ---------------------------------------- */

static void test_c16_includes_merge_secrets_and_tuning(void **state)
{
	struct ub_config cfg;

	(void)state;
	setenv("UB_TEST_XTS_KEY", XTS_VALUE, 1);
	write_file("secrets.toml", "[secrets.xts]\n"
				   "source.env = \"UB_TEST_XTS_KEY\"\n"
				   "[danger_zone]\n"
				   "enabled = true\n"
				   "allow_env_secrets = true\n");
	write_file("tuning.toml", "[tuning]\nqueue_size = 4\n"
				  "write_through = true\n");
	load_ok("include = [\"secrets.toml\", \"missing.toml?\", "
		"\"tuning.toml?\"]\n" DEVICE "[tuning]\nnum_queues = 4\n"
		"[encryption]\nxts_key.ref = \"xts\"\n",
		&cfg);
	assert_int_equal(cfg.tuning.num_queues, 4);
	assert_int_equal(cfg.tuning.queue_size, 4);
	assert_true(cfg.tuning.write_through);
	assert_int_equal(cfg.secrets.count, 1);
	assert_non_null(ub_config_xts_key(&cfg));
	assert_int_equal(cfg.stripe_source.type, UB_STRIPE_SOURCE_NONE);
	ub_config_free(&cfg);
	unsetenv("UB_TEST_XTS_KEY");
}

static void test_c17_duplicate_leaf_key_in_include_is_rejected(void **state)
{
	(void)state;
	write_file("device.toml", "[device]\ndevice_id = \"b\"\n");
	load_fails("include = [\"device.toml\"]\n" DEVICE
		   "device_id = \"a\"\n" DZ_DEV,
		   "duplicate key 'device.device_id' during merge");
}

static void test_c18_type_mismatch_in_include_is_rejected(void **state)
{
	(void)state;
	write_file("device.toml", "[device]\ndevice_id = { value = \"b\" }\n");
	load_fails("include = [\"device.toml\"]\n" DEVICE
		   "device_id = \"a\"\n" DZ_DEV,
		   "type mismatch for key 'device.device_id' during merge");
	/* And the other way round: table in the root, leaf in the include. */
	write_file("device.toml", "device = \"x\"\n");
	load_fails("include = [\"device.toml\"]\n" DEVICE DZ_DEV,
		   "type mismatch for key 'device' during merge");
}

static void test_c19_nested_include_is_rejected(void **state)
{
	(void)state;
	write_file("other.toml", "[tuning]\nnum_queues = 2\n");
	write_file("inc.toml", "include = [\"other.toml\"]\n");
	load_fails("include = [\"inc.toml\"]\n" DEVICE DZ_DEV,
		   "nested includes are not allowed");
}

static void test_c20_bad_include_paths_are_rejected(void **state)
{
	(void)state;
	load_fails("include = [\"?\"]\n" DEVICE DZ_DEV, "must not be empty");
	load_fails("include = [\"\"]\n" DEVICE DZ_DEV, "must not be empty");
	load_fails("include = [\" \\t\u00a0\u3000?\"]\n" DEVICE DZ_DEV,
		   "must not be empty");
	load_fails("include = [\"  ?\"]\n" DEVICE DZ_DEV, "must not be empty");
	load_fails("include = [\"/etc/passwd\"]\n" DEVICE DZ_DEV,
		   "must be relative");
	load_fails("include = [\"../secret.toml\"]\n" DEVICE DZ_DEV,
		   "must not contain '..'");
	load_fails("include = [\"a/../../b.toml?\"]\n" DEVICE DZ_DEV,
		   "must not contain '..'");
	/* Every entry is validated before any file is read. */
	load_fails(
	    "include = [\"missing.toml\", \"../x.toml\"]\n" DEVICE DZ_DEV,
	    "must not contain '..'");
	load_fails("include = \"x.toml\"\n" DEVICE DZ_DEV,
		   "'include' must be an array of strings");
	load_fails("include = [\"x.toml\", 1]\n" DEVICE DZ_DEV,
		   "'include' must be an array of strings");
}

/* ---- §15 danger zone and tuning: criteria 34-35 -------------------------- */

static void ignored_flags_of(const char *toml, char *buf, size_t n)
{
	struct ub_toml_value *root = NULL;
	struct ub_toml_error terr;
	struct ub_danger_zone dz;
	struct ub_err err;

	assert_int_equal(ub_toml_parse(toml, strlen(toml), 0, &root, &terr), 0);
	assert_int_equal(
	    ub_danger_zone_parse(ub_toml_table_get(root, "danger_zone"), NULL,
				 &dz, &err),
	    0);
	ub_danger_zone_ignored_flags(&dz, buf, n);
	ub_toml_free(root);
}

static void test_c34_danger_zone_ignored_flags(void **state)
{
	char buf[256];
	char *log;
	struct ub_config cfg;
	struct ub_err err;

	(void)state;
	ignored_flags_of("", buf, sizeof(buf));
	assert_string_equal(buf, "");
	ignored_flags_of("[danger_zone]\nenabled = true\n"
			 "allow_env_secrets = true\n",
			 buf, sizeof(buf));
	assert_string_equal(buf, "");
	ignored_flags_of("[danger_zone]\nallow_env_secrets = true\n"
			 "allow_unencrypted_disk = true\n",
			 buf, sizeof(buf));
	assert_string_equal(buf, "allow_unencrypted_disk, allow_env_secrets");
	ignored_flags_of("[danger_zone]\nenabled = false\n"
			 "allow_unencrypted_disk = true\n"
			 "allow_inline_plaintext_secrets = true\n"
			 "allow_secret_over_regular_file = true\n"
			 "allow_unencrypted_connection = true\n"
			 "allow_env_secrets = true\n",
			 buf, sizeof(buf));
	assert_string_equal(buf, "allow_unencrypted_disk, "
				 "allow_inline_plaintext_secrets, "
				 "allow_secret_over_regular_file, "
				 "allow_unencrypted_connection, "
				 "allow_env_secrets");

	/* Through the loader: the warning is logged, the flag ignored. */
	write_file("config.toml",
		   DEVICE "[danger_zone]\nallow_unencrypted_disk = true\n");
	capture_begin();
	assert_int_not_equal(ub_config_load(p("config.toml"), &cfg, &err), 0);
	log = capture_end();
	assert_contains(log, "danger_zone has flags set but enabled = false; "
			     "ignored flags: allow_unencrypted_disk");
	assert_contains(err.msg, "Disk encryption is required");
	free(log);
}

static void test_c35_tuning_defaults_and_ranges(void **state)
{
	static const struct {
		const char *tuning;
		const char *msg;
	} bad[] = {
	    {"num_queues = 0", "num_queues 0 is out of range (must be "
			       "1..=63)"},
	    {"num_queues = 257", "num_queues 257 is out of range (must be "
				 "1..=63)"},
	    {"queue_size = 0", "queue_size 0 is invalid (must be a "
			       "non-zero power of two, max 65536)"},
	    {"queue_size = 3", "queue_size 3 is invalid (must be a "
			       "non-zero power of two, max 65536)"},
	    {"queue_size = 65537", "queue_size 65537 is invalid"},
	    {"seg_size_max = 0", "seg_size_max 0 is out of range (must be "
				 "1..=1048576)"},
	    {"seg_size_max = 1048577", "seg_size_max 1048577 is out of "
				       "range (must be 1..=1048576)"},
	    {"seg_count_max = 0", "seg_count_max 0 is out of range (must "
				  "be 1..=256)"},
	    {"seg_count_max = 257", "seg_count_max 257 is out of range "
				    "(must be 1..=256)"},
	    {"num_queues = 2\ncpus = [0]", "Length of cpus (1) does not "
					   "match num_queues (2)"},
	    {"cpus = [0, 1]", "Length of cpus (2) does not match "
			      "num_queues (1)"},
	    {"poll_timeout_us = 10000001", "poll_timeout_us 10000001 is "
					   "out of range"},
	    /* Order of the checks: the first failing one is reported. */
	    {"queue_size = 3\nnum_queues = 0", "num_queues 0"},
	    {"poll_timeout_us = 10000001\ncpus = [1, 2]", "Length of cpus"},
	    /* Types. */
	    {"num_queues = -1", "invalid value: integer `-1`"},
	    {"num_queues = 1.5", "invalid type"},
	    {"num_queues = \"5\"", "invalid type"},
	    {"io_engine = \"aio\"", "unknown variant `aio`"},
	    {"bogus = 1", "unknown field `bogus`"},
	};
	char toml[512];
	struct ub_config cfg;

	(void)state;
	load_ok(DEVICE DZ_DEV, &cfg);
	assert_int_equal(cfg.tuning.num_queues, 1);
	assert_int_equal(cfg.tuning.queue_size, 64);
	assert_int_equal(cfg.tuning.seg_size_max, 65536);
	assert_int_equal(cfg.tuning.seg_count_max, 4);
	assert_int_equal(cfg.tuning.poll_timeout_us, 1000);
	assert_null(cfg.tuning.cpus);
	assert_int_equal(cfg.tuning.io_engine, UB_IO_ENGINE_IO_URING);
	assert_false(cfg.tuning.write_through);
	ub_config_free(&cfg);

	load_ok(DEVICE DZ_DEV "[tuning]\nnum_queues = 63\nqueue_size = 1\n"
			      "seg_size_max = 1048576\nseg_count_max = 256\n"
			      "io_engine = \"sync\"\nwrite_through = true\n",
		&cfg);
	assert_int_equal(cfg.tuning.num_queues, 63);
	assert_int_equal(cfg.tuning.queue_size, 1);
	assert_int_equal(cfg.tuning.io_engine, UB_IO_ENGINE_SYNC);
	ub_config_free(&cfg);

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		snprintf(toml, sizeof(toml), DEVICE DZ_DEV "[tuning]\n%s\n",
			 bad[i].tuning);
		load_fails(toml, bad[i].msg);
	}
}

/* ---- §15 stripe sources: criteria 36-41 ---------------------------------- */

#define S3_SECRETS                                                             \
	"[secrets.ak]\nsource.inline = \"AKIAEXAMPLE\"\n"                      \
	"[secrets.sk]\nsource.inline = \"secret-key\"\n"

static void test_c36_stripe_source_variants_parse(void **state)
{
	struct ub_config cfg;
	const struct ub_archive_storage_cfg *a = &cfg.stripe_source.archive;

	(void)state;
	load_ok(DEVICE DZ_DEV "[stripe_source]\ntype = \"raw\"\n"
			      "image_path = \"/images/base.raw\"\n"
			      "autofetch = true\ncopy_on_read = true\n",
		&cfg);
	assert_int_equal(cfg.stripe_source.type, UB_STRIPE_SOURCE_RAW);
	assert_string_equal(cfg.stripe_source.raw.image_path,
			    "/images/base.raw");
	assert_true(cfg.stripe_source.raw.autofetch);
	assert_true(cfg.stripe_source.raw.copy_on_read);
	ub_config_free(&cfg);

	load_ok(DEVICE DZ_DEV "[stripe_source]\ntype = \"raw\"\n"
			      "image_path = \"/images/base.raw\"\n",
		&cfg);
	assert_false(cfg.stripe_source.raw.autofetch);
	assert_false(cfg.stripe_source.raw.copy_on_read);
	ub_config_free(&cfg);

	load_ok(DEVICE DZ_DEV "[stripe_source]\ntype = \"archive\"\n"
			      "storage = \"filesystem\"\npath = \"/archive\"\n"
			      "archive_kek.ref = \"kek\"\nautofetch = true\n"
			      "[secrets.kek]\nsource.inline = \"" KEK32 "\"\n",
		&cfg);
	assert_int_equal(a->kind, UB_ARCHIVE_FILESYSTEM);
	assert_string_equal(a->path, "/archive");
	assert_string_equal(a->archive_kek_ref, "kek");
	assert_true(a->autofetch);
	ub_config_free(&cfg);

	load_ok(DEVICE DZ_DEV S3_SECRETS "[stripe_source]\ntype = \"archive\"\n"
					 "storage = \"s3\"\n"
					 "bucket = \"b\"\n"
					 "access_key_id.ref = \"ak\"\n"
					 "secret_access_key.ref = \"sk\"\n",
		&cfg);
	assert_int_equal(a->kind, UB_ARCHIVE_S3);
	assert_string_equal(a->bucket, "b");
	assert_null(a->prefix);
	assert_null(a->region);
	assert_null(a->endpoint);
	assert_null(a->session_token_ref);
	assert_null(a->archive_kek_ref);
	assert_int_equal(a->connections, 16);
	assert_int_equal(a->connect_timeout_ms, 5000);
	assert_int_equal(a->operation_attempt_timeout_ms, 20000);
	assert_int_equal(a->max_attempts, 3);
	assert_false(a->rate_limited_retry.enabled);
	assert_false(a->autofetch);
	ub_config_free(&cfg);

	load_ok(DEVICE DZ_DEV S3_SECRETS
		"[secrets.st]\nsource.inline = \"token\"\n"
		"[stripe_source]\ntype = \"archive\"\nstorage = \"s3\"\n"
		"bucket = \"b\"\nprefix = \"vm/1\"\nregion = \"eu-1\"\n"
		"endpoint = \"http://127.0.0.1:9000\"\n"
		"access_key_id.ref = \"ak\"\nsecret_access_key.ref = \"sk\"\n"
		"session_token.ref = \"st\"\n"
		"connections = 4\nconnect_timeout_ms = 1000\n"
		"operation_attempt_timeout_ms = 2000\nmax_attempts = 7\n",
		&cfg);
	assert_string_equal(a->prefix, "vm/1");
	assert_string_equal(a->region, "eu-1");
	assert_string_equal(a->endpoint, "http://127.0.0.1:9000");
	assert_string_equal(a->session_token_ref, "st");
	assert_int_equal(a->connections, 4);
	assert_int_equal(a->connect_timeout_ms, 1000);
	assert_int_equal(a->operation_attempt_timeout_ms, 2000);
	assert_int_equal(a->max_attempts, 7);
	ub_config_free(&cfg);
}

static void test_c37_remote_source_with_psk_and_defaults(void **state)
{
	struct ub_config cfg;
	const struct ub_remote_cfg *r = &cfg.stripe_source.remote;

	(void)state;
	load_ok(DEVICE DZ_DEV "[secrets.psk]\nsource.inline = "
			      "\"0123456789abcdef\"\n"
			      "[stripe_source]\ntype = \"remote\"\n"
			      "address = \"10.0.0.1:4555\"\n"
			      "psk = { identity = \"client-1\", "
			      "secret.ref = \"psk\" }\n",
		&cfg);
	assert_int_equal(cfg.stripe_source.type, UB_STRIPE_SOURCE_REMOTE);
	assert_true(r->has_psk);
	assert_string_equal(r->psk_identity, "client-1");
	assert_string_equal(r->psk_secret_ref, "psk");
	assert_string_equal(r->address, "10.0.0.1:4555");
	assert_false(r->autofetch);
	assert_int_equal(r->connect_timeout_ms, 5000);
	assert_int_equal(r->operation_attempt_timeout_ms, 20000);
	assert_int_equal(r->connections, 16);
	ub_config_free(&cfg);
}

static void test_c38_secret_references_keep_raw_names(void **state)
{
	struct ub_config cfg;
	const struct ub_archive_storage_cfg *a = &cfg.stripe_source.archive;

	(void)state;
	load_ok(DEVICE DZ_DEV
		"[secrets.\"access key\"]\nsource.inline = \"AK\"\n"
		"[secrets.Secret-Key_2]\nsource.inline = \"SK\"\n"
		"[secrets.\"k.e.k\"]\nsource.inline = \"" KEK32 "\"\n"
		"[stripe_source]\ntype = \"archive\"\nstorage = \"s3\"\n"
		"bucket = \"b\"\naccess_key_id.ref = \"access key\"\n"
		"secret_access_key = { ref = \"Secret-Key_2\" }\n"
		"archive_kek.ref = \"k.e.k\"\n",
		&cfg);
	assert_string_equal(a->access_key_id_ref, "access key");
	assert_string_equal(a->secret_access_key_ref, "Secret-Key_2");
	assert_string_equal(a->archive_kek_ref, "k.e.k");
	ub_config_free(&cfg);
}

static void test_c39_malformed_stripe_sources_are_rejected(void **state)
{
	static const struct {
		const char *body;
		const char *msg;
	} bad[] = {
	    {"type = \"invalid_type\"",
	     "unknown variant `invalid_type`, expected one of `raw`, "
	     "`archive`, `remote`"},
	    {"image_path = \"x\"", "missing field `type`"},
	    {"type = \"archive\"\npath = \"/a\"", "missing field `storage`"},
	    {"type = \"archive\"\nstorage = \"ftp\"\npath = \"/a\"",
	     "unknown variant `ftp`"},
	    {"type = \"raw\"", "missing field `image_path`"},
	    {"type = \"remote\"\npsk = { identity = \"a\", secret.ref = "
	     "\"psk\" }",
	     "missing field `address`"},
	    {"type = \"remote\"\naddress = \"1.2.3.4:5\"\n"
	     "psk = { identity = \"a\" }",
	     "missing field `secret`"},
	    {"type = \"remote\"\naddress = \"1.2.3.4:5\"\n"
	     "psk = { secret.ref = \"psk\" }",
	     "missing field `identity`"},
	    {"type = \"raw\"\nimage_path = \"x\"\nextra = 1",
	     "unknown field `extra`"},
	    {"type = \"archive\"\nstorage = \"s3\"\nbucket = \"b\"\n"
	     "access_key_id.ref = \"ak\"",
	     "missing field `secret_access_key`"},
	    {"type = \"archive\"\nstorage = \"filesystem\"\npath = \"/a\"\n"
	     "bucket = \"b\"",
	     "unknown field `bucket`"},
	};
	char toml[1024];

	(void)state;
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		snprintf(toml, sizeof(toml),
			 DEVICE DZ_DEV S3_SECRETS
			 "[secrets.psk]\nsource.inline = "
			 "\"0123456789abcdef\"\n[stripe_source]\n%s\n",
			 bad[i].body);
		load_fails(toml, "Failed to parse stripe_source section");
		load_fails(toml, bad[i].msg);
	}
}

static void test_c40_remote_psk_waiver_and_zero_timeouts(void **state)
{
	struct ub_config cfg;

	(void)state;
	load_fails(DEVICE DZ_DEV "[stripe_source]\ntype = \"remote\"\n"
				 "address = \"1.2.3.4:5\"\n",
		   "Remote stripe source requires PSK unless "
		   "danger_zone.allow_unencrypted_connection is enabled");
	load_ok(DEVICE DZ_DEV "allow_unencrypted_connection = true\n"
			      "[stripe_source]\ntype = \"remote\"\n"
			      "address = \"1.2.3.4:5\"\n",
		&cfg);
	assert_false(cfg.stripe_source.remote.has_psk);
	ub_config_free(&cfg);

#define REMOTE_WITH_PSK                                                        \
	DEVICE DZ_DEV "[secrets.psk]\nsource.inline = \"0123456789abcdef\"\n"  \
		      "[stripe_source]\ntype = \"remote\"\n"                   \
		      "address = \"1.2.3.4:5\"\n"                              \
		      "psk.identity = \"a\"\npsk.secret.ref = \"psk\"\n"
	load_fails(REMOTE_WITH_PSK "connect_timeout_ms = 0\n",
		   "Remote connect_timeout_ms must be greater than 0");
	load_fails(REMOTE_WITH_PSK "operation_attempt_timeout_ms = 0\n",
		   "Remote operation_attempt_timeout_ms must be greater than "
		   "0");
	load_fails(REMOTE_WITH_PSK "connections = 0\n",
		   "Remote connections must be greater than 0");
	load_fails(DEVICE DZ_DEV "[secrets.psk]\nsource.inline = \"short\"\n"
				 "[stripe_source]\ntype = \"remote\"\n"
				 "address = \"1.2.3.4:5\"\n"
				 "psk.identity = \"a\"\npsk.secret.ref = "
				 "\"psk\"\n",
		   "PSK secret must be at least 16 bytes (got 5 bytes)");
	load_fails(DEVICE DZ_DEV "[stripe_source]\ntype = \"remote\"\n"
				 "address = \"1.2.3.4:5\"\n"
				 "psk.identity = \"a\"\npsk.secret.ref = "
				 "\"nope\"\n",
		   "Secret reference 'nope' not found in configuration");
#undef REMOTE_WITH_PSK
}

static void test_c41_s3_validation(void **state)
{
	static const struct {
		const char *extra;
		const char *msg;
	} bad[] = {
	    {"prefix = \"valid/../invalid/.\"",
	     "Invalid S3 prefix (contains . or .. components): "
	     "valid/../invalid/."},
	    {"prefix = \"./a\"", "Invalid S3 prefix"},
	    {"prefix = \"..\"", "Invalid S3 prefix"},
	    {"session_token.ref = \"empty\"",
	     "AWS session_token cannot be empty"},
	    {"connections = 0", "S3 connections must be greater than 0"},
	    {"connect_timeout_ms = 0",
	     "S3 connect_timeout_ms must be greater than 0"},
	    {"operation_attempt_timeout_ms = 0",
	     "S3 operation_attempt_timeout_ms must be greater than 0"},
	    {"max_attempts = 0", "S3 max_attempts must be greater than 0"},
	    {"rate_limited_retry = { enabled = true, min_delay_ms = 0 }",
	     "rate_limited_retry.min_delay_ms must be greater than 0 when "
	     "enabled"},
	    {"rate_limited_retry = { enabled = true, bogus = 1 }",
	     "unknown field `bogus`"},
	    {"archive_kek.ref = \"ak\"",
	     "Archive KEK secret must be exactly 32 bytes for AES-256-GCM "
	     "(got 11 bytes)"},
	    {"archive_kek.ref = \"missing\"",
	     "Secret reference 'missing' not found in configuration"},
	    {"session_token.ref = \"missing\"",
	     "Secret reference 'missing' not found in configuration"},
	};
	char toml[1024];
	struct ub_config cfg;
	const struct ub_rate_limited_retry *r =
	    &cfg.stripe_source.archive.rate_limited_retry;

	(void)state;
#define S3_BASE                                                                \
	DEVICE DZ_DEV S3_SECRETS "[secrets.empty]\nsource.inline = \"\"\n"     \
				 "[stripe_source]\ntype = \"archive\"\n"       \
				 "storage = \"s3\"\nbucket = \"b\"\n"          \
				 "access_key_id.ref = \"ak\"\n"                \
				 "secret_access_key.ref = \"sk\"\n"
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		snprintf(toml, sizeof(toml), S3_BASE "%s\n", bad[i].extra);
		load_fails(toml, bad[i].msg);
	}
	load_fails(DEVICE DZ_DEV S3_SECRETS
		   "[secrets.empty]\nsource.inline = \"\"\n"
		   "[stripe_source]\ntype = \"archive\"\nstorage = \"s3\"\n"
		   "bucket = \"b\"\naccess_key_id.ref = \"empty\"\n"
		   "secret_access_key.ref = \"sk\"\n",
		   "AWS access_key_id cannot be empty");
	load_fails(DEVICE DZ_DEV S3_SECRETS
		   "[secrets.empty]\nsource.inline = \"\"\n"
		   "[stripe_source]\ntype = \"archive\"\nstorage = \"s3\"\n"
		   "bucket = \"b\"\naccess_key_id.ref = \"ak\"\n"
		   "secret_access_key.ref = \"empty\"\n",
		   "AWS secret_access_key cannot be empty");

	load_ok(S3_BASE "[stripe_source.rate_limited_retry]\nenabled = true\n"
			"min_delay_ms = 100\njitter_ms = 50\n",
		&cfg);
	assert_true(r->enabled);
	assert_int_equal(r->min_delay_ms, 100);
	assert_int_equal(r->jitter_ms, 50);
	ub_config_free(&cfg);
	/* A `.` further in is accepted, like the reference. */
	load_ok(S3_BASE "prefix = \"a/./b\"\n", &cfg);
	assert_string_equal(cfg.stripe_source.archive.prefix, "a/./b");
	ub_config_free(&cfg);
	/* Disabled retry needs no delay. */
	load_ok(S3_BASE "rate_limited_retry.enabled = false\n", &cfg);
	ub_config_free(&cfg);
#undef S3_BASE
}

/* ---- §16 items and improvements ------------------------------------------ */

static void test_s16_poll_timeout_zero_is_accepted(void **state)
{
	struct ub_config cfg;

	(void)state;
	load_ok(DEVICE DZ_DEV "[tuning]\npoll_timeout_us = 0\n", &cfg);
	assert_int_equal(cfg.tuning.poll_timeout_us, 0);
	ub_config_free(&cfg);
	load_ok(DEVICE DZ_DEV "[tuning]\npoll_timeout_us = 10000000\n", &cfg);
	ub_config_free(&cfg);
	/* The message states the range actually accepted. */
	load_fails(DEVICE DZ_DEV "[tuning]\npoll_timeout_us = 10000001\n",
		   "poll_timeout_us 10000001 is out of range (must be "
		   "0..=10000000)");
}

static void test_s16_queue_size_65536_is_accepted_with_warning(void **state)
{
	struct ub_config cfg;
	struct ub_err err;
	char *log;
	int rc;

	(void)state;
	write_file("config.toml",
		   DEVICE DZ_DEV "[tuning]\nqueue_size = 65536\n");
	capture_begin();
	rc = ub_config_load(p("config.toml"), &cfg, &err);
	log = capture_end();
	if (rc)
		fail_msg("%s", err.msg);
	assert_int_equal(cfg.tuning.queue_size, 65536);
	ub_config_free(&cfg);
	assert_contains(log, "queue_size 65536 exceeds the 32768");
	free(log);

	write_file("config.toml",
		   DEVICE DZ_DEV "[tuning]\nqueue_size = 32768\n");
	capture_begin();
	rc = ub_config_load(p("config.toml"), &cfg, &err);
	log = capture_end();
	assert_int_equal(rc, 0);
	ub_config_free(&cfg);
	assert_null(strstr(log, "queue_size"));
	free(log);
}

static void test_s16_long_device_id_is_accepted_with_warning(void **state)
{
	struct ub_config cfg;
	struct ub_err err;
	char *log;
	int rc;

	(void)state;
	write_file("config.toml",
		   "[device]\ndata_path = \"d\"\n"
		   "device_id = \"abcdefghijklmnopqrstuvwxyz\"\n" DZ_DEV);
	capture_begin();
	rc = ub_config_load(p("config.toml"), &cfg, &err);
	log = capture_end();
	if (rc)
		fail_msg("%s", err.msg);
	assert_string_equal(cfg.device.device_id, "abcdefghijklmnopqrstuvwxyz");
	ub_config_free(&cfg);
	assert_contains(log, "device_id is 26 bytes long");
	free(log);

	write_file("config.toml",
		   "[device]\ndata_path = \"d\"\n"
		   "device_id = \"abcdefghijklmnopqrst\"\n" DZ_DEV);
	capture_begin();
	rc = ub_config_load(p("config.toml"), &cfg, &err);
	log = capture_end();
	assert_int_equal(rc, 0);
	ub_config_free(&cfg);
	assert_null(strstr(log, "device_id"));
	free(log);
}

static void test_s16_secret_errors_follow_definition_order(void **state)
{
	const char *toml =
	    DEVICE DZ_DEV "[secrets.zeta]\nsource.env = \"UB_TEST_UNSET_Z\"\n"
			  "[secrets.alpha]\nsource.env = \"UB_TEST_UNSET_A\"\n";

	(void)state;
	unsetenv("UB_TEST_UNSET_Z");
	unsetenv("UB_TEST_UNSET_A");
	for (int i = 0; i < 3; i++)
		load_fails(toml, "secrets.zeta");
}

static void test_xts_key_with_identical_halves_is_rejected(void **state)
{
	(void)state;
	/* The reference accepts this key; its halves are equal. */
	setenv("UB_TEST_XTS_KEY",
	       "0123456789abcdef0123456789abcdef"
	       "0123456789abcdef0123456789abcdef",
	       1);
	load_fails(DEVICE "[encryption]\nxts_key.ref = \"my_xts_key\"\n"
			  "[secrets.my_xts_key]\n"
			  "source.env = \"UB_TEST_XTS_KEY\"\n" DZ_DEV,
		   "Encryption xts_key 'my_xts_key' has identical data and "
		   "tweak halves");
	unsetenv("UB_TEST_XTS_KEY");
}

static void test_errors_in_included_file_name_that_file(void **state)
{
	char want[PATH_MAX + 32];

	(void)state;
	write_file("extra.toml", "[tuning]\n"
				 "queue_size = 8\n"
				 "  bogus = 1\n");
	snprintf(want, sizeof(want), "%s:3:3: tuning.bogus: ", p("extra.toml"));
	load_fails("include = [\"extra.toml\"]\n" DEVICE DZ_DEV,
		   "Failed to parse tuning section: unknown field `bogus`");
	load_fails("include = [\"extra.toml\"]\n" DEVICE DZ_DEV, want);

	/* Unknown top-level keys and merge conflicts name the include. */
	write_file("extra.toml", "\n[bogus_section]\n");
	snprintf(want, sizeof(want), "%s:2:", p("extra.toml"));
	load_fails("include = [\"extra.toml\"]\n" DEVICE DZ_DEV, want);
	load_fails("include = [\"extra.toml\"]\n" DEVICE DZ_DEV,
		   "Unknown top-level config key 'bogus_section'");
	write_file("extra.toml", "[device]\n\ndata_path = \"x\"\n");
	snprintf(want, sizeof(want), "%s:3:1: ", p("extra.toml"));
	load_fails("include = [\"extra.toml\"]\n" DEVICE DZ_DEV, want);

	/* A syntax error in the root file. */
	snprintf(want, sizeof(want),
		 "Failed to parse TOML config: %s:3:", p("config.toml"));
	load_fails(DEVICE "device_id = \n", want);
	/* And in an include. */
	write_file("extra.toml", "[tuning\n");
	load_fails("include = [\"extra.toml\"]\n" DEVICE DZ_DEV,
		   "include '\"extra.toml\"': parse error: ");
}

static void test_include_read_errors(void **state)
{
	struct ub_config cfg;

	(void)state;
	load_fails("include = [\"missing.toml\"]\n" DEVICE DZ_DEV,
		   "include '\"missing.toml\"': failed to read: No such file "
		   "or directory (os error 2)");
	/* A directory is not skipped even when optional. */
	assert_int_equal(mkdir(p("adir"), 0700), 0);
	load_fails("include = [\"adir?\"]\n" DEVICE DZ_DEV,
		   "include '\"adir\"': failed to read: ");
	/* Symbolic links are followed, also out of the directory. */
	assert_int_equal(mkdir(p("sub"), 0700), 0);
	write_file("sub/tuning.toml", "[tuning]\nnum_queues = 3\n");
	assert_int_equal(symlink(p("sub/tuning.toml"), p("link.toml")), 0);
	load_ok("include = [\"./link.toml\"]\n" DEVICE DZ_DEV, &cfg);
	assert_int_equal(cfg.tuning.num_queues, 3);
	ub_config_free(&cfg);
	/* A permission error on an optional include is fatal. */
	if (geteuid() != 0) {
		write_file("locked.toml", "[tuning]\nnum_queues = 2\n");
		assert_int_equal(chmod(p("locked.toml"), 0), 0);
		load_fails("include = [\"locked.toml?\"]\n" DEVICE DZ_DEV,
			   "Permission denied");
	}
}

static void test_root_file_read_errors(void **state)
{
	struct ub_config cfg;
	struct ub_err err;
	char *big;

	(void)state;
	assert_int_not_equal(ub_config_load(p("nope.toml"), &cfg, &err), 0);
	assert_contains(err.msg, "Loading config failed");
	assert_contains(err.msg, "No such file or directory (os error 2)");

	big = malloc(UB_CONFIG_FILE_MAX + 2);
	assert_non_null(big);
	memset(big, '#', UB_CONFIG_FILE_MAX + 1);
	big[UB_CONFIG_FILE_MAX + 1] = '\0';
	load_fails(big, "larger than 1048576 bytes");
	free(big);

	/* Invalid UTF-8 fails in the TOML parser. */
	load_fails(DEVICE "device_id = \"\xff\"\n" DZ_DEV,
		   "Failed to parse TOML config");
}

static void test_standalone_read_contexts_and_sections(void **state)
{
	struct ub_target_config t;
	struct ub_export_config e;
	struct ub_server_config s;
	struct ub_err err;

	(void)state;
	assert_int_not_equal(ub_target_config_load(p("no.toml"), &t, &err), 0);
	assert_contains(err.msg, "Loading target config failed");
	assert_int_not_equal(ub_export_config_load(p("no.toml"), &e, &err), 0);
	assert_contains(err.msg, "Loading export archive config failed");
	assert_int_not_equal(ub_server_config_load(p("no.toml"), &s, &err), 0);
	assert_contains(err.msg, "Loading listen config failed");

	write_file("x.toml", "[danger_zone]\nenabled = true\n");
	assert_int_not_equal(ub_target_config_load(p("x.toml"), &t, &err), 0);
	assert_contains(err.msg, "Missing required [target] section");
	assert_int_not_equal(ub_export_config_load(p("x.toml"), &e, &err), 0);
	assert_contains(err.msg, "Missing required [archive] section");
	assert_int_not_equal(ub_server_config_load(p("x.toml"), &s, &err), 0);
	assert_contains(err.msg, "Missing required [server] section");

	/* Each kind has its own top-level keys. */
	write_file("x.toml", "[device]\ndata_path = \"d\"\n");
	assert_int_not_equal(ub_target_config_load(p("x.toml"), &t, &err), 0);
	assert_contains(err.msg, "Unknown top-level config key 'device'");

	/* Export: the filesystem path is resolved, includes work. */
	write_file("store.toml", "[archive]\nstorage = \"filesystem\"\n"
				 "path = \"store\"\n");
	write_file("x.toml", "include = [\"store.toml\"]\n");
	if (ub_export_config_load(p("x.toml"), &e, &err))
		fail_msg("%s", err.msg);
	assert_string_equal(e.archive.path, p("store"));
	ub_export_config_free(&e);

	/* Server: `autofetch` accepted, `type` is not a field. */
	write_file("x.toml", "[server]\naddress = \"1.2.3.4:5\"\n"
			     "autofetch = true\n[danger_zone]\nenabled = true\n"
			     "allow_unencrypted_connection = true\n");
	if (ub_server_config_load(p("x.toml"), &s, &err))
		fail_msg("%s", err.msg);
	assert_false(s.server.has_psk);
	ub_server_config_free(&s);
	write_file("x.toml", "[server]\ntype = \"remote\"\n"
			     "address = \"1.2.3.4:5\"\n");
	assert_int_not_equal(ub_server_config_load(p("x.toml"), &s, &err), 0);
	assert_contains(err.msg, "Failed to parse server section: unknown "
				 "field `type`");

	/* Target: S3 validation applies. */
	write_file("x.toml", "[target]\nstorage = \"s3\"\nbucket = \"b\"\n"
			     "access_key_id.ref = \"ak\"\n"
			     "secret_access_key.ref = \"sk\"\n"
			     "max_attempts = 0\n" S3_SECRETS
			     "[danger_zone]\nenabled = true\n"
			     "allow_inline_plaintext_secrets = true\n");
	assert_int_not_equal(ub_target_config_load(p("x.toml"), &t, &err), 0);
	assert_contains(err.msg, "S3 max_attempts must be greater than 0");
	assert_null(t.path);
}

static void test_unknown_keys_are_rejected_everywhere(void **state)
{
	(void)state;
	load_fails(DEVICE DZ_DEV "bogus = true\n",
		   "Failed to parse danger_zone section: unknown field "
		   "`bogus`");
	load_fails(DEVICE DZ_DEV "[encryption]\nxts_key.ref = \"k\"\n"
				 "bogus = 1\n",
		   "Failed to parse encryption section: unknown field `bogus`");
	load_fails(DEVICE DZ_DEV "[encryption]\nxts_key = { ref = \"k\", "
				 "bogus = 1 }\n",
		   "unknown field `bogus`");
	load_fails(DEVICE DZ_DEV "[encryption]\nxts_key = \"k\"\n",
		   "Failed to parse encryption section: invalid type");
	load_fails(DEVICE DZ_DEV "[encryption]\n", "missing field `xts_key`");
	load_fails(DEVICE DZ_DEV "[secrets.k]\nsource.inline = \"x\"\n"
				 "bogus = 1\n",
		   "unknown field `bogus`");
	load_fails(DEVICE DZ_DEV "[secrets.psk]\nsource.inline = "
				 "\"0123456789abcdef\"\n"
				 "[stripe_source]\ntype = \"remote\"\n"
				 "address = \"1.2.3.4:5\"\n"
				 "psk = { identity = \"a\", secret.ref = "
				 "\"psk\", bogus = 1 }\n",
		   "unknown field `bogus`");
	load_fails("[device]\n" DZ_DEV, "missing field `data_path`");
	load_fails("device = 5\n" DZ_DEV,
		   "Failed to parse device section: invalid type");
}

/* ---- whole files: ubiblk-init output and the §14 production example ------ */

static void write_init_common(const char *secrets)
{
	char toml[4096];

	snprintf(toml, sizeof(toml),
		 "[device]\n"
		 "data_path = \"disk.raw\"\n"
		 "metadata_path = \"metadata\"\n"
		 "vhost_socket = \"vhost.sock\"\n"
		 "\n"
		 "[tuning]\n"
		 "num_queues = 1\n"
		 "queue_size = 64\n"
		 "seg_size_max = 65536\n"
		 "seg_count_max = 4\n"
		 "poll_timeout_us = 1000\n"
		 "io_engine = \"io_uring\"\n"
		 "write_through = false\n"
		 "\n"
		 "[encryption]\n"
		 "xts_key.ref = \"xts_key\"\n"
		 "\n"
		 "%s"
		 "\n"
		 "[danger_zone]\n"
		 "enabled = true\n"
		 "allow_inline_plaintext_secrets = true\n"
		 "allow_secret_over_regular_file = true\n"
		 "\n"
		 "[stripe_source]\n"
		 "type = \"raw\"\n"
		 "image_path = \"image.raw\"\n",
		 secrets);
	write_file("config.toml", toml);
}

static void key_bytes(unsigned char *key, size_t n, unsigned char seed)
{
	for (size_t i = 0; i < n; i++)
		key[i] = (unsigned char)(seed + i * 7);
}

static void test_ubiblk_init_style_configs_load(void **state)
{
	unsigned char key[64], kek[32], env[64 + UB_KEK_OVERHEAD];
	char key_b64[128], kek_b64[64], env_b64[160], secrets[512];
	struct ub_config cfg;
	struct ub_err err;

	(void)state;
	key_bytes(key, sizeof(key), 3);
	key_bytes(kek, sizeof(kek), 100);

	/* Variant 1: a base64 key file (with the newline of `echo`). */
	ub_base64_encode(key, sizeof(key), key_b64);
	strcat(key_b64, "\n");
	write_file("xts_key", key_b64);
	write_init_common("[secrets.xts_key]\n"
			  "source.file = \"xts_key\"\n"
			  "encoding = \"base64\"\n");
	if (ub_config_load(p("config.toml"), &cfg, &err))
		fail_msg("%s", err.msg);
	assert_string_equal(cfg.device.data_path, p("disk.raw"));
	assert_string_equal(cfg.device.metadata_path, p("metadata"));
	assert_string_equal(cfg.device.vhost_socket, p("vhost.sock"));
	assert_string_equal(cfg.stripe_source.raw.image_path, p("image.raw"));
	assert_memory_equal(ub_config_xts_key(&cfg)->value, key, 64);
	ub_config_free(&cfg);

	/* Variant 2: a base64 KEK file and an inline envelope. */
	ub_base64_encode(kek, sizeof(kek), kek_b64);
	strcat(kek_b64, "\n");
	write_file("kek", kek_b64);
	assert_int_equal(ub_kek_seal(kek, sizeof(kek), "xts_key", 7, NULL, key,
				     sizeof(key), env, &err),
			 0);
	ub_base64_encode(env, sizeof(env), env_b64);
	snprintf(secrets, sizeof(secrets),
		 "[secrets.kek]\n"
		 "source.file = \"kek\"\n"
		 "encoding = \"base64\"\n"
		 "\n"
		 "[secrets.xts_key]\n"
		 "source.inline = \"%s\"\n"
		 "encoding = \"base64\"\n"
		 "encrypted_by.ref = \"kek\"\n",
		 env_b64);
	write_init_common(secrets);
	if (ub_config_load(p("config.toml"), &cfg, &err))
		fail_msg("%s", err.msg);
	assert_int_equal(cfg.secrets.count, 2);
	assert_memory_equal(ub_config_xts_key(&cfg)->value, key, 64);
	ub_config_free(&cfg);
}

struct fifo_writer {
	const char *path;
	unsigned char data[32];
	int rc;
};

/* Writes the KEK into the FIFO once a reader has opened it; gives up after
 * ten seconds so a failing loader cannot hang the test. */
static void *fifo_writer_main(void *arg)
{
	struct fifo_writer *w = arg;
	struct timespec nap = {0, 1000000};

	w->rc = -1;
	for (int i = 0; i < 10000; i++) {
		int fd = open(w->path, O_WRONLY | O_NONBLOCK);

		if (fd < 0) {
			nanosleep(&nap, NULL);
			continue;
		}
		if (write(fd, w->data, sizeof(w->data)) ==
		    (ssize_t)sizeof(w->data))
			w->rc = 0;
		close(fd);
		break;
	}
	return NULL;
}

/* config.md §9.4 test vector: 32 × 0x11 KEK, name "xts-key", 00..3f. */
#define ENVELOPE_XTS_KEY                                                       \
	"IiIiIiIiIiIiIiIiF/YFSsTKmVjtNtQ3RKvn2g+C3/F+lLpcSlYQ8xX8exxlXokhd43f" \
	"+WZxxwbKdWcag+OsUaFHTMmMTdDC3lbRjd5mI3GRhW03UznRcdD19Ng="

/* Loads the §14 production layout with the KEK delivered through a FIFO
 * (no danger-zone flag at all). cfg is left loaded. */
static void load_production_example(struct ub_config *cfg)
{
	struct fifo_writer w = {.path = p("kek.pipe")};
	char secrets[1024];
	struct ub_err err;
	pthread_t th;
	int rc;

	memset(w.data, 0x11, sizeof(w.data));
	assert_int_equal(mkfifo(w.path, 0600), 0);
	snprintf(secrets, sizeof(secrets),
		 "[secrets.config-kek]\n"
		 "source.file = \"%s\"\n"
		 "\n"
		 "[secrets.xts-key]\n"
		 "source.inline = \"" ENVELOPE_XTS_KEY "\"\n"
		 "encoding = \"base64\"\n"
		 "encrypted_by.ref = \"config-kek\"\n",
		 w.path);
	write_file("secrets.toml", secrets);
	write_file("config.toml",
		   "# config.toml\n"
		   "include = [\"secrets.toml\", \"stripe_source.toml?\"]\n"
		   "\n"
		   "[device]\n"
		   "data_path = \"/dev/disk/by-id/vm1\"\n"
		   "metadata_path = \"meta\"\n"
		   "vhost_socket = \"/run/ubiblk/vm1.sock\"\n"
		   "rpc_socket = \"/run/ubiblk/vm1.rpc\"\n"
		   "device_id = \"vm1\"\n"
		   "\n"
		   "[tuning]\n"
		   "num_queues = 4\n"
		   "queue_size = 128\n"
		   "cpus = [2, 3, 4, 5]\n"
		   "\n"
		   "[encryption]\n"
		   "xts_key.ref = \"xts-key\"\n");
	assert_int_equal(pthread_create(&th, NULL, fifo_writer_main, &w), 0);
	rc = ub_config_load(p("config.toml"), cfg, &err);
	pthread_join(th, NULL);
	if (rc)
		fail_msg("%s", err.msg);
	assert_int_equal(w.rc, 0);
}

static void test_production_example_loads(void **state)
{
	struct ub_config cfg;
	const struct ub_secret *k;

	(void)state;
	load_production_example(&cfg);
	assert_string_equal(cfg.device.data_path, "/dev/disk/by-id/vm1");
	assert_string_equal(cfg.device.metadata_path, p("meta"));
	assert_string_equal(cfg.device.device_id, "vm1");
	assert_int_equal(cfg.tuning.num_queues, 4);
	assert_int_equal(cfg.tuning.queue_size, 128);
	assert_int_equal(cfg.tuning.cpus_len, 4);
	assert_int_equal(cfg.tuning.cpus[3], 5);
	assert_int_equal(cfg.stripe_source.type, UB_STRIPE_SOURCE_NONE);
	k = ub_config_xts_key(&cfg);
	assert_non_null(k);
	assert_int_equal(k->len, 64);
	for (unsigned i = 0; i < 64; i++)
		assert_int_equal(k->value[i], i);
	ub_config_free(&cfg);
}

static bool contains_bytes(const char *hay, size_t n, const void *needle,
			   size_t len)
{
	return memmem(hay, n, needle, len) != NULL;
}

static void test_print_redacts_secrets_and_reparses(void **state)
{
	struct ub_config cfg;
	struct ub_toml_value *root = NULL;
	struct ub_toml_error terr;
	const struct ub_toml_value *dev, *sec;
	unsigned char key[64];
	char hex[129], b64[96];
	char *out = NULL;
	size_t len = 0;
	FILE *f;

	(void)state;
	load_production_example(&cfg);
	memcpy(key, ub_config_xts_key(&cfg)->value, sizeof(key));
	f = open_memstream(&out, &len);
	assert_non_null(f);
	assert_int_equal(ub_config_print(f, &cfg), 0);
	fclose(f);
	ub_config_free(&cfg);

	/* No form of the key or the KEK appears. */
	for (int i = 0; i < 64; i++)
		sprintf(hex + 2 * i, "%02x", key[i]);
	ub_base64_encode(key, sizeof(key), b64);
	assert_false(contains_bytes(out, len, key + 1, 32));
	assert_false(contains_bytes(out, len, hex, 32));
	assert_false(contains_bytes(out, len, b64, 16));
	assert_false(contains_bytes(out, len, "ERERERERERER", 12));
	assert_false(contains_bytes(out, len, "IiIiIiIiIiIi", 12));
	assert_contains(out, "\"[REDACTED]\"");

	/* Valid TOML with the effective values. */
	if (ub_toml_parse(out, len, 0, &root, &terr))
		fail_msg("%u:%u: %s\n%s", terr.line, terr.col, terr.msg, out);
	dev = ub_toml_table_get(root, "device");
	assert_non_null(dev);
	assert_string_equal(ub_toml_table_get(dev, "metadata_path")->u.str.ptr,
			    p("meta"));
	assert_int_equal(ub_toml_table_get(ub_toml_table_get(root, "tuning"),
					   "poll_timeout_us")
			     ->u.integer,
			 1000);
	sec = ub_toml_table_get(ub_toml_table_get(root, "secrets"), "xts-key");
	assert_non_null(sec);
	assert_string_equal(ub_toml_table_get(sec, "source")->u.str.ptr,
			    "inline");
	assert_int_equal(ub_toml_table_get(sec, "length")->u.integer, 64);
	ub_toml_free(root);
	free(out);
}

static void test_print_every_stripe_source_reparses(void **state)
{
	static const char *const sources[] = {
	    "",
	    "[stripe_source]\ntype = \"raw\"\nimage_path = \"a \\\"b\\\"\"\n",
	    "[stripe_source]\ntype = \"archive\"\nstorage = \"filesystem\"\n"
	    "path = \"p\"\n",
	    "[stripe_source]\ntype = \"archive\"\nstorage = \"s3\"\n"
	    "bucket = \"b\"\naccess_key_id.ref = \"ak\"\n"
	    "secret_access_key.ref = \"sk\"\nprefix = \"x/y\"\n",
	    "[stripe_source]\ntype = \"remote\"\naddress = \"1.2.3.4:5\"\n"
	    "psk = { identity = \"id\", secret.ref = \"odd name\" }\n",
	};
	char toml[1024];

	(void)state;
	for (size_t i = 0; i < sizeof(sources) / sizeof(sources[0]); i++) {
		struct ub_config cfg;
		struct ub_toml_value *root = NULL;
		struct ub_toml_error terr;
		char *out = NULL;
		size_t len = 0;
		FILE *f;

		snprintf(toml, sizeof(toml),
			 DEVICE DZ_DEV S3_SECRETS
			 "%s"
			 "[secrets.\"odd name\"]\nsource.inline = "
			 "\"0123456789abcdef\"\n",
			 sources[i]);
		load_ok(toml, &cfg);
		f = open_memstream(&out, &len);
		assert_non_null(f);
		assert_int_equal(ub_config_print(f, &cfg), 0);
		fclose(f);
		ub_config_free(&cfg);
		assert_false(contains_bytes(out, len, "secret-key", 10));
		assert_false(contains_bytes(out, len, "AKIAEXAMPLE", 11));
		if (ub_toml_parse(out, len, 0, &root, &terr))
			fail_msg("%u:%u: %s\n%s", terr.line, terr.col, terr.msg,
				 out);
		ub_toml_free(root);
		free(out);
	}
}

static void test_free_is_safe_on_zeroed_and_default_structs(void **state)
{
	struct ub_config cfg;
	struct ub_target_config t;
	struct ub_export_config e;
	struct ub_server_config s;

	(void)state;
	memset(&cfg, 0, sizeof(cfg));
	ub_config_free(&cfg);
	ub_config_defaults(&cfg);
	assert_int_equal(cfg.tuning.num_queues, 1);
	assert_int_equal(cfg.tuning.poll_timeout_us, 1000);
	ub_config_free(&cfg);
	ub_config_free(&cfg);
	memset(&t, 0, sizeof(t));
	ub_target_config_free(&t);
	memset(&e, 0, sizeof(e));
	ub_export_config_free(&e);
	memset(&s, 0, sizeof(s));
	ub_server_config_free(&s);
}

static void test_fileio_path_helpers(void **state)
{
	static const struct {
		const char *in, *dir;
	} dirs[] = {
	    {"config.toml", ""},
	    {"/config.toml", "/"},
	    {"a/b/c.toml", "a/b"},
	    {"./c.toml", "."},
	    {"a//b.toml", "a"},
	    {"/etc/ubiblk/vm1/config.toml", "/etc/ubiblk/vm1"},
	};
	static const struct {
		const char *dir, *rel, *out;
	} joins[] = {
	    {"", "disk.raw", "disk.raw"},
	    {"/etc/ubiblk/vm1", "disk.raw", "/etc/ubiblk/vm1/disk.raw"},
	    {"/etc/ubiblk/vm1", "/run/rpc.sock", "/run/rpc.sock"},
	    {"/", "x", "/x"},
	    {"a", "../b", "a/../b"},
	};

	(void)state;
	for (size_t i = 0; i < sizeof(dirs) / sizeof(dirs[0]); i++) {
		char *d = ub_path_dirname(dirs[i].in);

		assert_string_equal(d, dirs[i].dir);
		free(d);
	}
	for (size_t i = 0; i < sizeof(joins) / sizeof(joins[0]); i++) {
		char *j = ub_path_join(joins[i].dir, joins[i].rel);

		assert_string_equal(j, joins[i].out);
		free(j);
	}
}

#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)

int main(void)
{
	const struct CMUnitTest tests[] = {
	    T(test_c01_valid_config_loads_with_its_values),
	    T(test_c02_missing_device_section_is_rejected),
	    T(test_c03_undefined_xts_key_reference_is_rejected),
	    T(test_c04_short_xts_key_is_rejected),
	    T(test_c05_encryption_required_unless_danger_zone),
	    T(test_c06_remote_source_without_psk_is_rejected),
	    T(test_c07_unknown_stripe_source_type_is_rejected),
	    T(test_c08_unknown_device_field_is_rejected),
	    T(test_c09_unknown_top_level_section_is_rejected),
	    T(test_c10_zero_num_queues_is_rejected),
	    T(test_c11_relative_paths_resolve_against_config_dir),
	    T(test_c11_bare_config_name_resolves_against_cwd),
	    T(test_c12_relative_secret_file_is_resolved_and_read),
	    T(test_c13_config_mode_0644_only_warns),
	    T(test_c14_archive_target_file_loads),
	    T(test_c15_remote_server_file_loads_and_requires_psk),
	    T(test_c16_includes_merge_secrets_and_tuning),
	    T(test_c17_duplicate_leaf_key_in_include_is_rejected),
	    T(test_c18_type_mismatch_in_include_is_rejected),
	    T(test_c19_nested_include_is_rejected),
	    T(test_c20_bad_include_paths_are_rejected),
	    T(test_c34_danger_zone_ignored_flags),
	    T(test_c35_tuning_defaults_and_ranges),
	    T(test_c36_stripe_source_variants_parse),
	    T(test_c37_remote_source_with_psk_and_defaults),
	    T(test_c38_secret_references_keep_raw_names),
	    T(test_c39_malformed_stripe_sources_are_rejected),
	    T(test_c40_remote_psk_waiver_and_zero_timeouts),
	    T(test_c41_s3_validation),
	    T(test_s16_poll_timeout_zero_is_accepted),
	    T(test_s16_queue_size_65536_is_accepted_with_warning),
	    T(test_s16_long_device_id_is_accepted_with_warning),
	    T(test_s16_secret_errors_follow_definition_order),
	    T(test_xts_key_with_identical_halves_is_rejected),
	    T(test_errors_in_included_file_name_that_file),
	    T(test_include_read_errors),
	    T(test_root_file_read_errors),
	    T(test_standalone_read_contexts_and_sections),
	    T(test_unknown_keys_are_rejected_everywhere),
	    T(test_ubiblk_init_style_configs_load),
	    T(test_production_example_loads),
	    T(test_print_redacts_secrets_and_reparses),
	    T(test_print_every_stripe_source_reparses),
	    T(test_free_is_safe_on_zeroed_and_default_structs),
	    T(test_fileio_path_helpers),
	};

	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
