/* ubiblk-init: sets up a directory with everything vhost-backend needs to
 * serve a development or test disk (docs/ubiblk-init.md): a sparse data
 * file, a random AES-XTS key (a plain base64 file, or sealed with a
 * generated KEK that is a plain file), config.toml and fresh stripe
 * metadata, optionally filled lazily from a raw base image. The key
 * handling is for development only.
 *
 * The files are first written into a private staging directory inside the
 * target directory; the configuration is loaded back with the real loader
 * and the metadata created from it by the code init-metadata uses. Only
 * then are the files renamed into place (existing ones, with --force, are
 * swapped out and deleted last). Any failure removes the staging
 * directory and the directories this run created, so no partial set of
 * files is left behind and files that were there stay as they were. */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/rand.h>

#include "config/config.h"
#include "crypto/kek.h"
#include "crypto/xts.h"
#include "stripe/metadata.h"
#include "stripe/metadata_create.h"
#include "util/base64.h"
#include "util/cli.h"
#include "util/err.h"
#include "util/fileio.h"
#include "util/log.h"
#include "util/process.h"
#include "util/secmem.h"
#include "util/utf8.h"

static const char *prog = "ubiblk-init";

#define SECTOR	       512u
#define KEY_GEN_TRIES  4
#define SIZE_LABEL_LEN 32
/* Name of the XTS key secret; also the AAD of its KEK envelope. */
#define XTS_SECRET "xts_key"

struct stripe_choice {
	const char *label;
	uint8_t shift; /* stripe = 2^shift sectors */
};

static const struct stripe_choice stripe_choices[] = {
    {"64K", 7}, {"128K", 8}, {"256K", 9}, {"512K", 10}, {"1M", 11},
};
#define N_STRIPES      (sizeof(stripe_choices) / sizeof(stripe_choices[0]))
#define DEFAULT_STRIPE (N_STRIPES - 1)

/* [tuning] as written; defaults of config.md. */
struct tuning_opts {
	uint64_t num_queues;
	uint64_t queue_size;
	uint64_t seg_size_max;
	uint64_t seg_count_max;
	uint64_t poll_timeout_us;
	const char *io_engine; /* "io_uring" or "sync" (static strings) */
	bool write_through;
};

/* What to create. Strings are borrowed (argv or wizard answers). */
struct init_opts {
	bool has_size;
	uint64_t size; /* bytes */
	const char *dir;
	size_t stripe; /* index into stripe_choices */
	bool kek;
	const char *base; /* as given, or NULL */
	bool copy_on_read;
	bool autofetch;
	struct tuning_opts tuning;
	bool force;
	const char *rpc_socket; /* as given, or NULL */
	const char *device_id;	/* or NULL */
};

/* The checked, absolute forms of the paths of init_opts. */
struct init_paths {
	char *dir;  /* heap: absolute target directory */
	char *base; /* heap: realpath of the base image, or NULL */
	struct stat base_st;
	char *rpc_socket; /* heap: absolute, or NULL */
};

/* The files ubiblk-init writes, in staging order. */
enum init_file { F_KEY, F_CONFIG, F_DISK, F_METADATA, F_COUNT };

/* Rename order: the configuration, which names the others, comes last. */
static const enum init_file install_order[F_COUNT] = {F_DISK, F_METADATA, F_KEY,
						      F_CONFIG};

enum file_state {
	FS_NONE,
	FS_STAGED,   /* in the staging directory */
	FS_NEW,	     /* renamed into the target; nothing was there */
	FS_SWAPPED,  /* exchanged with an existing file, now in staging */
	FS_REPLACED, /* renamed over an existing file (no exchange support) */
};

/* One run: everything it created, to be undone on failure. */
struct init_run {
	const struct init_opts *o;
	const struct init_paths *p;
	char *real_dir; /* heap: realpath of the target directory */
	char **created; /* heap array of heap paths: dirs made here */
	size_t n_created;
	int dir_fd;   /* target directory, or -1 */
	char *stage;  /* heap: staging directory path, or NULL */
	int stage_fd; /* or -1 */
	enum file_state state[F_COUNT];
	char *key_text; /* secmem: contents of the key file */
	size_t key_text_len;
	char *envelope;	   /* heap: base64 sealed XTS key (--kek) */
	char *config_text; /* heap: contents of config.toml */
	size_t config_len;
	sigset_t blocked; /* signals held while files are written */
};

/* ---- small helpers ----------------------------------------------------- */

static const char *file_name(const struct init_opts *o, enum init_file f)
{
	switch (f) {
	case F_KEY:
		return o->kek ? "kek" : "xts_key";
	case F_CONFIG:
		return "config.toml";
	case F_DISK:
		return "disk.raw";
	case F_METADATA:
	default:
		return "metadata";
	}
}

/* "1G", "512M", ... when a unit divides bytes exactly, else "N bytes". */
static void size_label(uint64_t bytes, char *buf, size_t n)
{
	static const char units[] = "TGMK";
	unsigned i;

	for (i = 0; i < 4; i++) {
		uint64_t unit = UINT64_C(1) << (10 * (4 - i));

		if (bytes && bytes % unit == 0) {
			snprintf(buf, n, "%" PRIu64 "%c", bytes / unit,
				 units[i]);
			return;
		}
	}
	snprintf(buf, n, "%" PRIu64 " bytes", bytes);
}

/* Parses a disk size: decimal bytes, or a number with a K, M, G or T
 * suffix (1024-based, either case). It must be positive, a multiple of
 * 512 and fit in an off_t. */
static int parse_size(const char *s, uint64_t *out, struct ub_err *err)
{
	unsigned long long v;
	uint64_t unit = 1;
	char *end;

	if (!isdigit((unsigned char)*s))
		goto invalid;
	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno == ERANGE)
		goto too_large;
	switch (toupper((unsigned char)*end)) {
	case 'K':
		unit = UINT64_C(1) << 10;
		break;
	case 'M':
		unit = UINT64_C(1) << 20;
		break;
	case 'G':
		unit = UINT64_C(1) << 30;
		break;
	case 'T':
		unit = UINT64_C(1) << 40;
		break;
	case '\0':
		break;
	default:
		goto invalid;
	}
	if (unit > 1 && *++end)
		goto invalid;
	if (v == 0)
		return ub_err_ret(err, -EINVAL,
				  "invalid size '%s': must be greater than 0",
				  s);
	if (v > (uint64_t)INT64_MAX / unit)
		goto too_large;
	if (v * unit % SECTOR)
		return ub_err_ret(err, -EINVAL,
				  "invalid size '%s': %llu bytes is not a "
				  "multiple of 512",
				  s, v * unit);
	*out = v * unit;
	return 0;
invalid:
	return ub_err_ret(err, -EINVAL,
			  "invalid size '%s': expected a number of bytes, or "
			  "a number with K, M, G or T (e.g. 512M, 1G)",
			  s);
too_large:
	return ub_err_ret(err, -EINVAL, "invalid size '%s': too large", s);
}

/* Parses the value of --flag: an integer in min..max, a power of two when
 * pow2. Returns 0, or prints the usage error and returns UB_EXIT_USAGE. */
static int parse_num(const char *flag, const char *arg, uint64_t min,
		     uint64_t max, bool pow2, uint64_t *out)
{
	uint64_t v;

	if (ub_cli_parse_u64(arg, max, &v) || v < min ||
	    (pow2 && (v & (v - 1))))
		return ub_cli_usage_error(
		    prog,
		    "invalid value '%s' for --%s: must "
		    "be %s %" PRIu64 "..%" PRIu64,
		    arg, flag, pow2 ? "a power of two in" : "an integer in",
		    min, max);
	*out = v;
	return 0;
}

/* Writes s as a TOML basic string (s is valid UTF-8). */
static void put_toml_str(FILE *f, const char *s)
{
	const unsigned char *p = (const unsigned char *)s;

	fputc('"', f);
	for (; *p; p++) {
		if (*p == '"' || *p == '\\')
			fprintf(f, "\\%c", *p);
		else if (*p < 0x20 || *p == 0x7f)
			fprintf(f, "\\u%04x", *p);
		else
			fputc(*p, f);
	}
	fputc('"', f);
}

/* path made absolute against the working directory (not normalised).
 * Heap string, NULL when out of memory or the cwd is unknown. */
static char *absolute(const char *path)
{
	char *cwd, *abs;

	if (path[0] == '/')
		return strdup(path);
	cwd = get_current_dir_name(); /* owned: freed below */
	if (!cwd)
		return NULL;
	abs = ub_path_join(cwd, path);
	free(cwd);
	return abs;
}

static int write_all(int fd, const void *buf, size_t n)
{
	const char *p = buf;
	ssize_t w;

	while (n) {
		w = write(fd, p, n);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return w < 0 ? -errno : -EIO;
		p += w;
		n -= (size_t)w;
	}
	return 0;
}

/* ---- checks before anything is created --------------------------------- */

/* Resolves the base image and checks it: a regular file whose size is a
 * multiple of 512 and at most disk_size. *abs (heap, may be NULL) gets its
 * realpath, *st its stat. */
static int resolve_base(const char *path, uint64_t disk_size, char **abs,
			struct stat *st, struct ub_err *err)
{
	char *real = realpath(path, NULL); /* owned: to *abs or freed */
	char label[SIZE_LABEL_LEN];
	int rc = 0;

	if (!real)
		return ub_err_ret(err, -errno, "base image %s: %s", path,
				  strerror(errno));
	if (stat(real, st)) {
		rc = -errno;
		ub_err_set(err, "base image %s: %s", real, strerror(-rc));
	} else if (!S_ISREG(st->st_mode)) {
		rc = ub_err_ret(err, -EINVAL,
				"base image %s is not a regular file", real);
	} else if ((uint64_t)st->st_size % SECTOR) {
		rc = ub_err_ret(err, -EINVAL,
				"base image %s is %lld bytes, not a multiple "
				"of 512",
				real, (long long)st->st_size);
	} else if ((uint64_t)st->st_size > disk_size) {
		size_label((uint64_t)st->st_size, label, sizeof(label));
		rc = ub_err_ret(err, -EINVAL,
				"base image %s (%lld bytes) is larger than "
				"the disk (%" PRIu64 " bytes): give a --size "
				"of at least %s",
				real, (long long)st->st_size, disk_size, label);
	}
	if (rc || !abs)
		free(real);
	else
		*abs = real;
	return rc;
}

/* Everything about the options that is a usage error: combinations, the
 * stripe count, the base image, paths that TOML cannot hold. Fills *p. */
static int check_opts(const struct init_opts *o, struct init_paths *p,
		      struct ub_err *err)
{
	const struct stripe_choice *sc = &stripe_choices[o->stripe];
	char label[SIZE_LABEL_LEN];

	if ((o->copy_on_read || o->autofetch) && !o->base)
		return ub_err_ret(err, -EINVAL,
				  "--copy-on-read and --autofetch need --base");
	if (ub_stripe_count(o->size / SECTOR, sc->shift) > UINT32_MAX) {
		size_label(o->size, label, sizeof(label));
		return ub_err_ret(err, -EINVAL,
				  "a %s disk needs more than %" PRIu32
				  " stripes of %s: choose a larger "
				  "--stripe-size",
				  label, UINT32_MAX, sc->label);
	}
	if (!*o->dir)
		return ub_err_ret(err, -EINVAL, "--dir must not be empty");
	p->dir = absolute(o->dir);
	if (!p->dir)
		return ub_err_ret(err, -EINVAL, "cannot make %s absolute: %s",
				  o->dir, strerror(errno));
	if (o->base) {
		int rc =
		    resolve_base(o->base, o->size, &p->base, &p->base_st, err);
		if (rc)
			return rc;
		if (!ub_utf8_valid(p->base))
			return ub_err_ret(err, -EINVAL,
					  "base image path %s is not valid "
					  "UTF-8: a TOML file cannot hold it",
					  p->base);
	}
	if (o->rpc_socket) {
		if (!*o->rpc_socket)
			return ub_err_ret(err, -EINVAL,
					  "--rpc-socket must not be empty");
		p->rpc_socket = absolute(o->rpc_socket);
		if (!p->rpc_socket)
			return ub_err_ret(err, -EINVAL,
					  "cannot make %s absolute: %s",
					  o->rpc_socket, strerror(errno));
		if (!ub_utf8_valid(p->rpc_socket))
			return ub_err_ret(err, -EINVAL,
					  "--rpc-socket %s is not valid "
					  "UTF-8: a TOML file cannot hold it",
					  p->rpc_socket);
	}
	if (o->device_id && !ub_utf8_valid(o->device_id))
		return ub_err_ret(err, -EINVAL,
				  "--device-id is not valid UTF-8: a TOML file "
				  "cannot hold it");
	return 0;
}

static void free_paths(struct init_paths *p)
{
	free(p->dir);
	free(p->base);
	free(p->rpc_socket);
	memset(p, 0, sizeof(*p));
}

/* The target directory must be a directory (or missing); each file to be
 * written must be missing, or with --force anything but a directory, and
 * never the base image itself. */
static int check_targets(const struct init_run *r, struct ub_err *err)
{
	const struct init_opts *o = r->o;
	char *path;
	struct stat st;
	int f, rc = 0;

	if (stat(r->p->dir, &st)) {
		if (errno == ENOENT)
			return 0; /* created later, so nothing is in it */
		return ub_err_ret(err, -errno, "cannot use directory %s: %s",
				  r->p->dir, strerror(errno));
	}
	if (!S_ISDIR(st.st_mode))
		return ub_err_ret(err, -ENOTDIR, "%s is not a directory",
				  r->p->dir);
	for (f = 0; f < F_COUNT && !rc; f++) {
		path = ub_path_join(r->p->dir, file_name(o, f));
		if (!path)
			return ub_err_ret(err, -ENOMEM, "out of memory");
		if (lstat(path, &st)) {
			if (errno != ENOENT)
				rc =
				    ub_err_ret(err, -errno, "cannot use %s: %s",
					       path, strerror(errno));
		} else if (r->p->base && st.st_dev == r->p->base_st.st_dev &&
			   st.st_ino == r->p->base_st.st_ino) {
			rc = ub_err_ret(err, -EINVAL,
					"%s is the base image; it cannot be "
					"overwritten",
					path);
		} else if (S_ISDIR(st.st_mode)) {
			rc =
			    ub_err_ret(err, -EISDIR, "%s is a directory", path);
		} else if (!o->force) {
			rc = ub_err_ret(err, -EEXIST,
					"%s already exists (use --force to "
					"overwrite)",
					path);
		}
		free(path);
	}
	return rc;
}

/* ---- key material and configuration ------------------------------------ */

/* A random XTS key with different halves (our XTS refuses equal ones) and,
 * with --kek, a random KEK. Fills r->key_text (base64 of the file key) and
 * r->envelope (base64 of the sealed XTS key). Raw keys are wiped here. */
static int make_keys(struct init_run *r, struct ub_err *err)
{
	unsigned char *xts = NULL, *kek = NULL; /* owned, secmem: wiped */
	unsigned char env[UB_XTS_KEY_LEN + UB_KEK_OVERHEAD];
	const unsigned char *file_key;
	size_t file_key_len;
	int i, rc = 0;

	xts = ub_secmem_alloc(UB_XTS_KEY_LEN);
	kek = ub_secmem_alloc(UB_KEK_KEY_LEN);
	if (!xts || !kek) {
		rc = ub_err_ret(err, -ENOMEM, "out of memory for keys");
		goto out;
	}
	for (i = 0; i < KEY_GEN_TRIES; i++) {
		if (RAND_priv_bytes(xts, UB_XTS_KEY_LEN) != 1) {
			rc = ub_err_ret(err, -EIO,
					"Failed to generate random bytes");
			goto out;
		}
		if (CRYPTO_memcmp(xts, xts + UB_XTS_HALF_KEY_LEN,
				  UB_XTS_HALF_KEY_LEN))
			break;
	}
	if (i == KEY_GEN_TRIES) {
		rc = ub_err_ret(err, -EIO,
				"the random generator keeps returning equal "
				"XTS key halves");
		goto out;
	}
	file_key = xts;
	file_key_len = UB_XTS_KEY_LEN;
	if (r->o->kek) {
		if (RAND_priv_bytes(kek, UB_KEK_KEY_LEN) != 1) {
			rc = ub_err_ret(err, -EIO,
					"Failed to generate random bytes");
			goto out;
		}
		rc = ub_kek_seal(kek, UB_KEK_KEY_LEN, XTS_SECRET,
				 strlen(XTS_SECRET), NULL, xts, UB_XTS_KEY_LEN,
				 env, err);
		if (rc)
			goto out;
		r->envelope = malloc(ub_base64_encoded_len(sizeof(env)) + 1);
		if (!r->envelope) {
			rc = ub_err_ret(err, -ENOMEM, "out of memory");
			goto out;
		}
		ub_base64_encode(env, sizeof(env), r->envelope);
		file_key = kek;
		file_key_len = UB_KEK_KEY_LEN;
	}
	r->key_text_len = ub_base64_encoded_len(file_key_len);
	r->key_text = ub_secmem_alloc(r->key_text_len + 1);
	if (!r->key_text) {
		rc = ub_err_ret(err, -ENOMEM, "out of memory for keys");
		goto out;
	}
	ub_base64_encode(file_key, file_key_len, r->key_text);
out:
	ub_wipe(env, sizeof(env));
	ub_secmem_free(kek, UB_KEK_KEY_LEN);
	ub_secmem_free(xts, UB_XTS_KEY_LEN);
	return rc;
}

/* config.toml for the options (no secret values: a plain key lives in its
 * file, a sealed one is only an envelope). */
static int build_config(struct init_run *r, struct ub_err *err)
{
	const struct init_opts *o = r->o;
	const struct tuning_opts *t = &o->tuning;
	FILE *f;

	f = open_memstream(&r->config_text, &r->config_len);
	if (!f)
		return ub_err_ret(err, -ENOMEM, "out of memory");
	fputs("# Written by ubiblk-init for DEVELOPMENT AND TESTS ONLY.\n"
	      "# The key material is stored in plain files next to this "
	      "file, which\n"
	      "# [danger_zone] permits. For production: deliver keys "
	      "through a named\n"
	      "# pipe or a secret manager (never a regular file), seal the "
	      "XTS key\n"
	      "# with a KEK (encrypted_by.ref) and remove [danger_zone].\n"
	      "\n"
	      "[device]\n"
	      "data_path = \"disk.raw\"\n"
	      "metadata_path = \"metadata\"\n"
	      "vhost_socket = \"vhost.sock\"\n",
	      f);
	if (r->p->rpc_socket) {
		fputs("rpc_socket = ", f);
		put_toml_str(f, r->p->rpc_socket);
		fputc('\n', f);
	}
	if (o->device_id) {
		fputs("device_id = ", f);
		put_toml_str(f, o->device_id);
		fputc('\n', f);
	}
	fprintf(f,
		"\n[tuning]\n"
		"num_queues = %" PRIu64 "\n"
		"queue_size = %" PRIu64 "\n"
		"seg_size_max = %" PRIu64 "\n"
		"seg_count_max = %" PRIu64 "\n"
		"poll_timeout_us = %" PRIu64 "\n"
		"io_engine = \"%s\"\n"
		"write_through = %s\n",
		t->num_queues, t->queue_size, t->seg_size_max, t->seg_count_max,
		t->poll_timeout_us, t->io_engine,
		t->write_through ? "true" : "false");
	fputs("\n[encryption]\n"
	      "xts_key.ref = \"" XTS_SECRET "\"\n\n",
	      f);
	if (o->kek)
		fprintf(f,
			"# The XTS key (64 bytes: data key, tweak key) sealed "
			"with the KEK:\n"
			"# AES-256-GCM, AAD \"" XTS_SECRET "\".\n"
			"[secrets." XTS_SECRET "]\n"
			"source.inline = \"%s\"\n"
			"encoding = \"base64\"\n"
			"encrypted_by.ref = \"kek\"\n"
			"\n"
			"# Development only: the KEK is a plain file.\n"
			"[secrets.kek]\n"
			"source.file = \"kek\"\n"
			"encoding = \"base64\"\n",
			r->envelope);
	else
		fputs("# Development only: the XTS key (64 bytes: data key, "
		      "tweak key) is a\n"
		      "# plain file.\n"
		      "[secrets." XTS_SECRET "]\n"
		      "source.file = \"xts_key\"\n"
		      "encoding = \"base64\"\n",
		      f);
	fputs("\n# Development only: remove this section for production.\n"
	      "[danger_zone]\n"
	      "enabled = true\n"
	      "allow_inline_plaintext_secrets = true\n"
	      "allow_secret_over_regular_file = true\n",
	      f);
	if (r->p->base) {
		fputs("\n# Unfetched stripes come from this raw image.\n"
		      "[stripe_source]\n"
		      "type = \"raw\"\n"
		      "image_path = ",
		      f);
		put_toml_str(f, r->p->base);
		fputc('\n', f);
		if (o->copy_on_read)
			fputs("copy_on_read = true\n", f);
		if (o->autofetch)
			fputs("autofetch = true\n", f);
	}
	if (ferror(f) | fclose(f))
		return ub_err_ret(err, -ENOMEM, "out of memory");
	return 0;
}

/* ---- writing ----------------------------------------------------------- */

/* True when one of the held signals arrived. */
static bool interrupted(const struct init_run *r)
{
	sigset_t pending;
	int sig;

	if (sigpending(&pending))
		return false;
	for (sig = 1; sig < NSIG; sig++)
		if (sigismember(&r->blocked, sig) == 1 &&
		    sigismember(&pending, sig) == 1)
			return true;
	return false;
}

/* mkdir -p of the target directory (new directories 0700, remembered in
 * r->created), then opens it and resolves its real path. */
static int make_dir(struct init_run *r, struct ub_err *err)
{
	char *path = strdup(r->p->dir); /* owned: scratch, freed below */
	char **grown, *s, c;
	int rc = 0;

	if (!path)
		return ub_err_ret(err, -ENOMEM, "out of memory");
	for (s = path + 1;; s++) {
		if (*s != '/' && *s)
			continue;
		c = *s;
		*s = '\0';
		if (mkdir(path, 0700) == 0) {
			grown = realloc(r->created,
					(r->n_created + 1) * sizeof(*grown));
			if (grown)
				r->created = grown;
			if (!grown || !(grown[r->n_created] = strdup(path))) {
				rmdir(path);
				rc = ub_err_ret(err, -ENOMEM, "out of memory");
				goto out;
			}
			r->n_created++;
		} else if (errno != EEXIST) {
			rc = ub_err_ret(err, -errno,
					"cannot create directory %s: %s", path,
					strerror(errno));
			goto out;
		}
		*s = c;
		if (!c)
			break;
	}
	r->dir_fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (r->dir_fd < 0) {
		rc = ub_err_ret(err, -errno, "cannot open directory %s: %s",
				path, strerror(errno));
		goto out;
	}
	r->real_dir = realpath(path, NULL);
	if (!r->real_dir)
		rc = ub_err_ret(err, -errno, "cannot resolve %s: %s", path,
				strerror(errno));
out:
	free(path);
	return rc;
}

/* The private staging directory DIR/.ubiblk-init.XXXXXX (0700). */
static int make_stage(struct init_run *r, struct ub_err *err)
{
	if (asprintf(&r->stage, "%s/.ubiblk-init.XXXXXX", r->real_dir) < 0) {
		r->stage = NULL;
		return ub_err_ret(err, -ENOMEM, "out of memory");
	}
	if (!mkdtemp(r->stage)) {
		int e = errno;

		free(r->stage);
		r->stage = NULL;
		return ub_err_ret(err, -e, "cannot write in %s: %s",
				  r->real_dir, strerror(e));
	}
	r->stage_fd = open(r->stage, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (r->stage_fd < 0)
		return ub_err_ret(err, -errno, "cannot open %s: %s", r->stage,
				  strerror(errno));
	return 0;
}

/* Creates file f (0600) in the staging directory with len bytes of data,
 * extended (sparse) to size bytes when size > len, and fsyncs it.
 * Messages name the final path. */
static int stage_file(struct init_run *r, enum init_file f, const void *data,
		      size_t len, uint64_t size, struct ub_err *err)
{
	const char *name = file_name(r->o, f);
	int fd, rc = 0;

	fd = openat(r->stage_fd, name,
		    O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
	if (fd < 0)
		return ub_err_ret(err, -errno, "cannot create %s/%s: %s",
				  r->real_dir, name, strerror(errno));
	r->state[f] = FS_STAGED;
	/* 0600 whatever the umask. */
	if (fchmod(fd, 0600)) {
		rc = -errno;
		ub_err_set(err, "cannot chmod %s/%s: %s", r->real_dir, name,
			   strerror(-rc));
		goto out;
	}
	rc = write_all(fd, data, len);
	if (rc) {
		ub_err_set(err, "cannot write %s/%s: %s", r->real_dir, name,
			   strerror(-rc));
		goto out;
	}
	if (size > len && ftruncate(fd, (off_t)size)) {
		rc = -errno;
		ub_err_set(err, "cannot extend %s/%s to %" PRIu64 " bytes: %s",
			   r->real_dir, name, size, strerror(-rc));
		goto out;
	}
	if (fsync(fd)) {
		rc = -errno;
		ub_err_set(err, "cannot fsync %s/%s: %s", r->real_dir, name,
			   strerror(-rc));
	}
out:
	if (close(fd) && !rc) {
		rc = -errno;
		ub_err_set(err, "cannot close %s/%s: %s", r->real_dir, name,
			   strerror(-rc));
	}
	return rc;
}

/* Loads the staged configuration with the real loader (every check the
 * programs will apply) and creates the metadata from it. */
static int stage_metadata(struct init_run *r, struct ub_err *err)
{
	struct ub_config cfg = {0};
	char *path; /* owned: freed below */
	int rc;

	path = ub_path_join(r->stage, file_name(r->o, F_CONFIG));
	if (!path)
		return ub_err_ret(err, -ENOMEM, "out of memory");
	rc = ub_config_load(path, &cfg, err);
	free(path);
	if (rc) {
		ub_err_prefix(err, "the generated configuration does not load");
		goto out;
	}
	/* From here on the metadata file exists in staging (or is gone). */
	r->state[F_METADATA] = FS_STAGED;
	rc = ub_metadata_create(&cfg, stripe_choices[r->o->stripe].shift, err);
	if (rc)
		ub_err_prefix(err, "initializing metadata failed");
out:
	ub_config_free(&cfg);
	return rc;
}

/* Moves staged file f into the target directory. With --force an existing
 * file is exchanged with the new one (it waits in staging until the end,
 * so a failure can put it back); where the file system cannot exchange,
 * it is replaced. */
static int install_file(struct init_run *r, enum init_file f,
			struct ub_err *err)
{
	const char *name = file_name(r->o, f);
	struct stat st;
	bool exists;

	if (r->o->force) {
		if (!renameat2(r->stage_fd, name, r->dir_fd, name,
			       RENAME_EXCHANGE)) {
			r->state[f] = FS_SWAPPED;
			return 0;
		}
		if (errno != ENOENT && errno != EINVAL)
			goto fail;
	}
	if (!renameat2(r->stage_fd, name, r->dir_fd, name, RENAME_NOREPLACE)) {
		r->state[f] = FS_NEW;
		return 0;
	}
	if (errno == EEXIST)
		return ub_err_ret(err, -EEXIST,
				  "%s/%s already exists (use --force to "
				  "overwrite)",
				  r->real_dir, name);
	if (errno != EINVAL)
		goto fail;
	/* No renameat2 flags on this file system. */
	exists = !fstatat(r->dir_fd, name, &st, AT_SYMLINK_NOFOLLOW);
	if (exists && !r->o->force)
		return ub_err_ret(err, -EEXIST,
				  "%s/%s already exists (use --force to "
				  "overwrite)",
				  r->real_dir, name);
	if (renameat(r->stage_fd, name, r->dir_fd, name))
		goto fail;
	r->state[f] = exists ? FS_REPLACED : FS_NEW;
	return 0;
fail:
	return ub_err_ret(err, -errno, "cannot move %s into %s: %s", name,
			  r->real_dir, strerror(errno));
}

/* Puts back what install_file did, last file first: new files go back to
 * staging, exchanged ones are exchanged again. A replaced file cannot be
 * restored. */
static void uninstall(struct init_run *r)
{
	int i;

	for (i = F_COUNT - 1; i >= 0; i--) {
		enum init_file f = install_order[i];
		const char *name = file_name(r->o, f);

		if (r->state[f] == FS_NEW) {
			if (renameat(r->dir_fd, name, r->stage_fd, name))
				unlinkat(r->dir_fd, name, 0);
			r->state[f] = FS_STAGED;
		} else if (r->state[f] == FS_SWAPPED) {
			if (!renameat2(r->dir_fd, name, r->stage_fd, name,
				       RENAME_EXCHANGE))
				r->state[f] = FS_STAGED;
		}
	}
}

static int install_all(struct init_run *r, struct ub_err *err)
{
	int i, rc;

	for (i = 0; i < F_COUNT; i++) {
		rc = install_file(r, install_order[i], err);
		if (rc)
			goto fail;
	}
	if (fsync(r->dir_fd)) {
		rc = ub_err_ret(err, -errno, "cannot fsync %s: %s", r->real_dir,
				strerror(errno));
		goto fail;
	}
	return 0;
fail:
	uninstall(r);
	return rc;
}

/* Removes the staging directory with what is left in it (on success the
 * files that were replaced) and, when failed, the directories this run
 * created, innermost first. A previous file that could not be exchanged
 * back after a failure is kept in the staging directory. */
static void remove_stage(struct init_run *r, bool failed)
{
	size_t i;
	int f;

	if (r->stage_fd >= 0) {
		for (f = 0; f < F_COUNT; f++) {
			if (failed && r->state[f] == FS_SWAPPED) {
				fprintf(stderr,
					"%s: the previous %s is kept in %s\n",
					prog, file_name(r->o, f), r->stage);
				continue;
			}
			unlinkat(r->stage_fd, file_name(r->o, f), 0);
		}
		close(r->stage_fd);
		r->stage_fd = -1;
	}
	if (r->stage) {
		rmdir(r->stage);
		free(r->stage);
		r->stage = NULL;
		if (!failed && r->dir_fd >= 0)
			fsync(r->dir_fd);
	}
	for (i = r->n_created; i > 0; i--) {
		if (failed)
			rmdir(r->created[i - 1]);
		free(r->created[i - 1]);
	}
	free(r->created);
	r->created = NULL;
	r->n_created = 0;
}

static void info(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void info(const char *fmt, ...)
{
	va_list ap;

	fputs("  * ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}

/* Stages every file, then installs them. Signals that end the program are
 * held meanwhile: one that arrives stops the run at the next step, the
 * files are removed, and the signal is delivered at the end. */
static int write_files(struct init_run *r, struct ub_err *err)
{
	const struct init_opts *o = r->o;
	const struct stripe_choice *sc = &stripe_choices[o->stripe];
	uint64_t sectors = o->size / SECTOR, stripes, sourced;
	char label[SIZE_LABEL_LEN];
	int rc;

	rc = make_dir(r, err);
	if (rc)
		return rc;
	size_label(o->size, label, sizeof(label));
	fprintf(stderr, "\nInitializing ubiblk (%s) in %s\n", label,
		r->real_dir);
	rc = make_stage(r, err);
	if (rc)
		return rc;
	rc = stage_file(r, F_KEY, r->key_text, r->key_text_len, 0, err);
	if (rc)
		return rc;
	if (o->kek) {
		info("kek (32 random bytes, base64)");
		info("xts_key: 64 random bytes sealed with the KEK, inline in "
		     "config.toml");
	} else {
		info("xts_key (64 random bytes, base64)");
	}
	rc = stage_file(r, F_CONFIG, r->config_text, r->config_len, 0, err);
	if (rc)
		return rc;
	info("config.toml");
	if (interrupted(r))
		return ub_err_ret(err, -EINTR, "interrupted");
	rc = stage_file(r, F_DISK, NULL, 0, o->size, err);
	if (rc)
		return rc;
	info("disk.raw (%s, sparse)", label);
	if (interrupted(r))
		return ub_err_ret(err, -EINTR, "interrupted");
	rc = stage_metadata(r, err);
	if (rc)
		return rc;
	stripes = ub_stripe_count(sectors, sc->shift);
	sourced = r->p->base
		      ? ub_stripe_count(
			    (uint64_t)r->p->base_st.st_size / SECTOR, sc->shift)
		      : 0;
	if (r->p->base)
		info("metadata (%" PRIu64 " stripes of %s, %" PRIu64
		     " from the base image)",
		     stripes, sc->label, sourced);
	else
		info("metadata (%" PRIu64 " stripes of %s)", stripes,
		     sc->label);
	if (interrupted(r))
		return ub_err_ret(err, -EINTR, "interrupted");
	return install_all(r, err);
}

/* Notes a key file of the other kind left by an earlier run. */
static void note_stale_key(const struct init_run *r)
{
	const char *other = r->o->kek ? "xts_key" : "kek";
	struct stat st;

	if (!fstatat(r->dir_fd, other, &st, AT_SYMLINK_NOFOLLOW))
		fprintf(stderr,
			"  note: %s/%s is from an earlier run; the new "
			"configuration does not use it\n",
			r->real_dir, other);
}

static int run_init(const struct init_opts *o, const struct init_paths *p,
		    struct ub_err *err)
{
	struct init_run r = {
	    .o = o,
	    .p = p,
	    .dir_fd = -1,
	    .stage_fd = -1,
	};
	sigset_t old;
	int rc;

	rc = check_targets(&r, err);
	if (rc)
		return rc;
	rc = make_keys(&r, err);
	if (rc)
		goto out_keys;
	rc = build_config(&r, err);
	if (rc)
		goto out_keys;
	sigemptyset(&r.blocked);
	sigaddset(&r.blocked, SIGINT);
	sigaddset(&r.blocked, SIGTERM);
	sigaddset(&r.blocked, SIGHUP);
	sigaddset(&r.blocked, SIGQUIT);
	sigprocmask(SIG_BLOCK, &r.blocked, &old);
	rc = write_files(&r, err);
	remove_stage(&r, rc != 0);
	if (!rc) {
		if (o->force)
			note_stale_key(&r);
		fprintf(stderr,
			"\nDone. Project ready at %s\n"
			"Now run 'vhost-backend --config %s/config.toml'\n",
			r.real_dir, r.real_dir);
	}
	if (r.dir_fd >= 0)
		close(r.dir_fd);
	free(r.real_dir);
	sigprocmask(SIG_SETMASK, &old, NULL); /* a held signal ends us here */
out_keys:
	ub_secmem_free(r.key_text, r.key_text_len + 1);
	free(r.envelope);
	free(r.config_text);
	return rc;
}

/* ---- the wizard -------------------------------------------------------- */

/* One answer from stdin without surrounding blanks, def when it is empty
 * (def may be NULL). NULL at the end of input. Caller frees. */
static char *ask(const char *prompt, const char *def)
{
	char *line = NULL, *s, *e;
	size_t cap = 0;

	if (def)
		fprintf(stderr, "%s [%s]: ", prompt, def);
	else
		fprintf(stderr, "%s: ", prompt);
	fflush(stderr);
	if (getline(&line, &cap, stdin) < 0) {
		free(line);
		fputc('\n', stderr);
		return NULL;
	}
	for (s = line; isspace((unsigned char)*s); s++)
		;
	for (e = s + strlen(s); e > s && isspace((unsigned char)e[-1]); e--)
		;
	*e = '\0';
	if (!*s && def) {
		free(line);
		return strdup(def);
	}
	memmove(line, s, (size_t)(e - s) + 1);
	return line;
}

/* Index of the option picked from labels[0..n), def when the answer is
 * empty; -1 at the end of input. */
static int choose(const char *prompt, const char *const *labels, unsigned n,
		  unsigned def)
{
	char defs[16], *ans;
	uint64_t v;
	unsigned i;

	fprintf(stderr, "\n%s\n", prompt);
	for (i = 0; i < n; i++)
		fprintf(stderr, "  [%u] %s%s\n", i + 1, labels[i],
			i == def ? " (default)" : "");
	snprintf(defs, sizeof(defs), "%u", def + 1);
	for (;;) {
		ans = ask("Choice", defs);
		if (!ans)
			return -1;
		if (!ub_cli_parse_u64(ans, n, &v) && v >= 1) {
			free(ans);
			return (int)v - 1;
		}
		free(ans);
		fprintf(stderr, "  Enter 1-%u.\n", n);
	}
}

/* Yes or no; def ("y" or "n") when the answer is empty. -1 at the end of
 * input. */
static int confirm(const char *prompt, const char *def)
{
	char *ans = ask(prompt, def);
	int yes;

	if (!ans)
		return -1;
	yes = !strcasecmp(ans, "y") || !strcasecmp(ans, "yes");
	free(ans);
	return yes;
}

/* Answers of the wizard that init_opts points to. */
struct wizard_bufs {
	char *dir;
	char *base;
};

/* Asks for size, base image, KEK, stripe size and directory (options
 * given on the command line are the defaults), then for confirmation and,
 * if files exist, for overwriting. Returns 0 or an exit code. */
static int wizard(struct init_opts *o, struct wizard_bufs *b)
{
	static const char *const base_labels[] = {
	    "No base image (empty disk)",
	    "Use an existing raw image",
	};
	static const char *const kek_labels[] = {
	    "No: store the XTS key in a plain file",
	    "Yes: seal the XTS key with a generated KEK",
	};
	static const char *const names[] = {"disk.raw", "metadata",
					    "config.toml", "kek", "xts_key"};
	const char *stripe_labels[N_STRIPES];
	char existing[128] = "", *ans, *path;
	struct ub_err err = {{0}};
	struct stat st;
	unsigned i;
	int c;

	fprintf(stderr, "\nubiblk-init: set up a development disk\n\n"
			"WARNING: for development and tests only; the keys "
			"are kept in plain files.\n\n");
	for (;;) {
		ans = ask("Disk size (e.g. 512M, 1G, 10G)", "1G");
		if (!ans)
			goto aborted;
		c = parse_size(ans, &o->size, &err);
		free(ans);
		if (!c)
			break;
		fprintf(stderr, "  %s\n", err.msg);
	}
	o->has_size = true;

	c = choose("Base image:", base_labels, 2, o->base ? 1 : 0);
	if (c < 0)
		goto aborted;
	if (c == 0)
		o->base = NULL;
	while (c == 1) {
		ans = ask("  Path to the base image", o->base);
		if (!ans)
			goto aborted;
		if (*ans && !resolve_base(ans, o->size, NULL, &st, &err)) {
			free(b->base);
			b->base = ans;
			o->base = ans;
			break;
		}
		fprintf(stderr, "  %s\n",
			*ans ? err.msg : "Enter the path of a raw image.");
		free(ans);
	}

	c = choose("Key encryption:", kek_labels, 2, o->kek);
	if (c < 0)
		goto aborted;
	o->kek = c == 1;

	for (i = 0; i < N_STRIPES; i++)
		stripe_labels[i] = stripe_choices[i].label;
	c = choose("Stripe size:", stripe_labels, N_STRIPES,
		   (unsigned)o->stripe);
	if (c < 0)
		goto aborted;
	o->stripe = (size_t)c;

	fputc('\n', stderr);
	ans = ask("Target directory", o->dir);
	if (!ans)
		goto aborted;
	free(b->dir);
	b->dir = ans;
	o->dir = ans;

	fputc('\n', stderr);
	c = confirm("Proceed? (Y/n)", "y");
	if (c <= 0)
		goto aborted;
	for (i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		path = ub_path_join(o->dir, names[i]);
		if (path && !lstat(path, &st)) {
			if (*existing)
				strcat(existing, ", ");
			strcat(existing, names[i]);
		}
		free(path);
	}
	if (*existing && !o->force) {
		char prompt[sizeof(existing) + 64];

		snprintf(prompt, sizeof(prompt),
			 "  Files exist (%s). Overwrite? (y/N)", existing);
		c = confirm(prompt, "n");
		if (c <= 0)
			goto aborted;
		o->force = true;
	}
	return 0;
aborted:
	return ub_cli_fail(prog, "aborted");
}

/* ---- main -------------------------------------------------------------- */

static void usage(FILE *f)
{
	fprintf(f,
		"Usage: %s --size SIZE [options]\n"
		"       %s                (interactive, on a terminal)\n"
		"Set up a directory with a disk for vhost-backend, for "
		"development and\n"
		"tests: a sparse data file (disk.raw), a random AES-XTS key "
		"(the file\n"
		"xts_key, or sealed with a generated KEK kept in the file "
		"kek), config.toml\n"
		"and fresh stripe metadata. The keys are stored in plain "
		"files: do not use\n"
		"this for production. Without --size, and with a terminal on "
		"standard input,\n"
		"a short wizard asks for the settings.\n"
		"\n"
		"Options:\n"
		"      --size SIZE          disk size: bytes, or a number "
		"with K, M, G or T\n"
		"                           (1024-based), e.g. 512M, 1G; a "
		"multiple of 512\n"
		"      --dir DIR            target directory, created "
		"(0700) if missing\n"
		"                           (default .)\n"
		"      --stripe-size SIZE   64K, 128K, 256K, 512K or 1M "
		"(default 1M)\n"
		"      --kek                seal the XTS key with a "
		"generated KEK (file kek)\n"
		"      --base IMAGE         raw image the disk is filled "
		"from lazily; not\n"
		"                           larger than the disk\n"
		"      --copy-on-read       with --base: reading an unfetched "
		"stripe fetches it\n"
		"      --autofetch          with --base: fetch every stripe "
		"in the background\n"
		"      --num-queues N       tuning.num_queues, 1..63 "
		"(default 1)\n"
		"      --queue-size N       tuning.queue_size, a power of two "
		"1..65536\n"
		"                           (default 64)\n"
		"      --seg-size-max N     tuning.seg_size_max, 1..1048576 "
		"(default 65536)\n"
		"      --seg-count-max N    tuning.seg_count_max, 1..256 "
		"(default 4)\n"
		"      --poll-timeout-us N  tuning.poll_timeout_us, "
		"0..10000000 (default 1000)\n"
		"      --io-engine ENGINE   io_uring or sync (default "
		"io_uring)\n"
		"      --write-through      tuning.write_through = true\n"
		"      --rpc-socket PATH    device.rpc_socket (made "
		"absolute)\n"
		"      --device-id ID       device.device_id (default "
		"ubiblk)\n"
		"      --force              overwrite existing files\n"
		"  -h, --help               print this help and exit\n"
		"  -V, --version            print the version and exit\n"
		"\n"
		"Files written in DIR (mode 0600): disk.raw, metadata, "
		"config.toml, and\n"
		"xts_key or kek. Then run: vhost-backend --config "
		"DIR/config.toml\n"
		"\n" UB_CLI_HELP_FOOTER,
		prog, prog);
}

enum {
	OPT_SIZE = 0x100,
	OPT_DIR,
	OPT_STRIPE_SIZE,
	OPT_KEK,
	OPT_BASE,
	OPT_COPY_ON_READ,
	OPT_AUTOFETCH,
	OPT_NUM_QUEUES,
	OPT_QUEUE_SIZE,
	OPT_SEG_SIZE_MAX,
	OPT_SEG_COUNT_MAX,
	OPT_POLL_TIMEOUT_US,
	OPT_IO_ENGINE,
	OPT_WRITE_THROUGH,
	OPT_FORCE,
	OPT_RPC_SOCKET,
	OPT_DEVICE_ID,
};

/* Sets o from the command line. Returns 0 or an exit code (-1: --help or
 * --version printed, exit 0). */
static int parse_args(int argc, char **argv, struct init_opts *o)
{
	static const struct option longopts[] = {
	    {"size", required_argument, NULL, OPT_SIZE},
	    {"dir", required_argument, NULL, OPT_DIR},
	    {"stripe-size", required_argument, NULL, OPT_STRIPE_SIZE},
	    {"kek", no_argument, NULL, OPT_KEK},
	    {"base", required_argument, NULL, OPT_BASE},
	    {"copy-on-read", no_argument, NULL, OPT_COPY_ON_READ},
	    {"autofetch", no_argument, NULL, OPT_AUTOFETCH},
	    {"num-queues", required_argument, NULL, OPT_NUM_QUEUES},
	    {"queue-size", required_argument, NULL, OPT_QUEUE_SIZE},
	    {"seg-size-max", required_argument, NULL, OPT_SEG_SIZE_MAX},
	    {"seg-count-max", required_argument, NULL, OPT_SEG_COUNT_MAX},
	    {"poll-timeout-us", required_argument, NULL, OPT_POLL_TIMEOUT_US},
	    {"io-engine", required_argument, NULL, OPT_IO_ENGINE},
	    {"write-through", no_argument, NULL, OPT_WRITE_THROUGH},
	    {"force", no_argument, NULL, OPT_FORCE},
	    {"rpc-socket", required_argument, NULL, OPT_RPC_SOCKET},
	    {"device-id", required_argument, NULL, OPT_DEVICE_ID},
	    {"help", no_argument, NULL, 'h'},
	    {"version", no_argument, NULL, 'V'},
	    {NULL, 0, NULL, 0},
	};
	struct tuning_opts *t = &o->tuning;
	struct ub_err err = {{0}};
	int opt, rc = 0;
	size_t i;

	opterr = 0;
	while (!rc &&
	       (opt = getopt_long(argc, argv, ":hV", longopts, NULL)) != -1) {
		switch (opt) {
		case OPT_SIZE:
			if (parse_size(optarg, &o->size, &err))
				return ub_cli_usage_error(prog, "%s", err.msg);
			o->has_size = true;
			break;
		case OPT_DIR:
			o->dir = optarg;
			break;
		case OPT_STRIPE_SIZE:
			for (i = 0; i < N_STRIPES; i++)
				if (!strcasecmp(optarg,
						stripe_choices[i].label))
					break;
			if (i == N_STRIPES)
				return ub_cli_usage_error(
				    prog,
				    "invalid value '%s' for --stripe-size: "
				    "expected 64K, 128K, 256K, 512K or 1M",
				    optarg);
			o->stripe = i;
			break;
		case OPT_KEK:
			o->kek = true;
			break;
		case OPT_BASE:
			o->base = optarg;
			break;
		case OPT_COPY_ON_READ:
			o->copy_on_read = true;
			break;
		case OPT_AUTOFETCH:
			o->autofetch = true;
			break;
		case OPT_NUM_QUEUES:
			rc = parse_num("num-queues", optarg, 1, 63, false,
				       &t->num_queues);
			break;
		case OPT_QUEUE_SIZE:
			rc = parse_num("queue-size", optarg, 1, 65536, true,
				       &t->queue_size);
			break;
		case OPT_SEG_SIZE_MAX:
			rc = parse_num("seg-size-max", optarg, 1, 1048576,
				       false, &t->seg_size_max);
			break;
		case OPT_SEG_COUNT_MAX:
			rc = parse_num("seg-count-max", optarg, 1, 256, false,
				       &t->seg_count_max);
			break;
		case OPT_POLL_TIMEOUT_US:
			rc = parse_num("poll-timeout-us", optarg, 0, 10000000,
				       false, &t->poll_timeout_us);
			break;
		case OPT_IO_ENGINE:
			if (!strcmp(optarg, "io_uring"))
				t->io_engine = "io_uring";
			else if (!strcmp(optarg, "sync"))
				t->io_engine = "sync";
			else
				return ub_cli_usage_error(
				    prog,
				    "invalid value '%s' for --io-engine: "
				    "expected io_uring or sync",
				    optarg);
			break;
		case OPT_WRITE_THROUGH:
			t->write_through = true;
			break;
		case OPT_FORCE:
			o->force = true;
			break;
		case OPT_RPC_SOCKET:
			o->rpc_socket = optarg;
			break;
		case OPT_DEVICE_ID:
			o->device_id = optarg;
			break;
		case 'h':
			usage(stdout);
			return -1;
		case 'V':
			ub_cli_print_version(prog);
			return -1;
		default:
			return ub_cli_bad_option(prog, opt, argv, optind);
		}
	}
	if (rc)
		return rc;
	if (optind < argc)
		return ub_cli_usage_error(prog, "unexpected argument '%s'",
					  argv[optind]);
	return 0;
}

int main(int argc, char **argv)
{
	struct init_opts o = {
	    .dir = ".",
	    .stripe = DEFAULT_STRIPE,
	    .tuning =
		{
		    .num_queues = 1,
		    .queue_size = 64,
		    .seg_size_max = 65536,
		    .seg_count_max = 4,
		    .poll_timeout_us = 1000,
		    .io_engine = "io_uring",
		},
	};
	struct wizard_bufs wb = {0};
	struct init_paths paths = {0};
	struct ub_err err = {{0}};
	int rc;

	ub_log_init(prog);
	ub_process_disable_dumps();

	rc = parse_args(argc, argv, &o);
	if (rc)
		return rc < 0 ? UB_EXIT_OK : rc;
	if (!o.has_size) {
		if (!isatty(STDIN_FILENO))
			return ub_cli_usage_error(
			    prog, "non-interactive use requires --size");
		rc = wizard(&o, &wb);
		if (rc)
			goto out;
	}
	if (check_opts(&o, &paths, &err)) {
		rc = ub_cli_usage_error(prog, "%s", err.msg);
		goto out;
	}
	if (o.tuning.queue_size > 32768)
		fprintf(stderr,
			"%s: warning: queue size %" PRIu64
			" loads, but the backends fail to start with more "
			"than 32768\n",
			prog, o.tuning.queue_size);
	ub_secmem_init();
	if (run_init(&o, &paths, &err))
		rc = ub_cli_fail(prog, "%s", err.msg);
out:
	free_paths(&paths);
	free(wb.dir);
	free(wb.base);
	return rc;
}
