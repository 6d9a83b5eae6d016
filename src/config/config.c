/* Main device configuration and the three standalone files: section
 * parsing, path resolution and validation (config.md §2, §5-§7, §10, §11),
 * on top of the shared front half in include.c. */
#include "config/config_internal.h"

#include <errno.h>
#include <inttypes.h>
#include <openssl/crypto.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "util/cli.h"
#include "util/fileio.h"
#include "util/log.h"
#include "util/secmem.h"

#define XTS_KEY_LEN	    64
#define ARCHIVE_KEK_LEN	    32
#define PSK_MIN_LEN	    16
#define DEVICE_ID_GUEST_MAX 20
#define RING_SIZE_MAX	    32768

/* ---- defaults -------------------------------------------------------- */

static void tuning_defaults(struct ub_tuning_cfg *t)
{
	memset(t, 0, sizeof(*t));
	t->num_queues = 1;
	t->queue_size = 64;
	t->seg_size_max = 65536;
	t->seg_count_max = 4;
	t->poll_timeout_us = 1000;
	t->io_engine = UB_IO_ENGINE_IO_URING;
}

static void archive_defaults(struct ub_archive_storage_cfg *a)
{
	a->connections = 16;
	a->connect_timeout_ms = 5000;
	a->operation_attempt_timeout_ms = 20000;
	a->max_attempts = 3;
}

static void remote_defaults(struct ub_remote_cfg *r)
{
	r->connect_timeout_ms = 5000;
	r->operation_attempt_timeout_ms = 20000;
	r->connections = 16;
}

void ub_config_defaults(struct ub_config *cfg)
{
	memset(cfg, 0, sizeof(*cfg));
	tuning_defaults(&cfg->tuning);
}

/* ---- helpers --------------------------------------------------------- */

/* Position of the key at dotted path (plain identifiers only) in the merged
 * tree; the nearest enclosing table's position when a part is absent, the
 * root file when nothing matches. */
static struct ub_toml_pos path_pos(const struct ub_cfg_doc *doc,
				   const char *dotted)
{
	struct ub_toml_pos pos = {0};
	const struct ub_toml_value *t = doc->root;
	const char *p = dotted;

	while (t && t->type == UB_TOML_TABLE && *p) {
		const char *dot = strchr(p, '.');
		size_t n = dot ? (size_t)(dot - p) : strlen(p);
		size_t len = ub_toml_table_len(t);
		const struct ub_toml_value *next = NULL;

		for (size_t i = 0; i < len; i++) {
			size_t klen;
			const char *k = ub_toml_table_key(t, i, &klen);

			if (klen == n && memcmp(k, p, n) == 0) {
				pos = ub_toml_table_key_pos(t, i);
				next = ub_toml_table_value(t, i);
				break;
			}
		}
		if (!next)
			break;
		t = next;
		p += n + (dot ? 1 : 0);
	}
	return pos;
}

/* A validation error at the key written at dotted path. */
__attribute__((format(printf, 4, 5))) static int
verr(const struct ub_cfg_doc *doc, struct ub_err *err, const char *dotted,
     const char *fmt, ...)
{
	char msg[UB_ERR_MAX / 2];
	struct ub_toml_pos pos = path_pos(doc, dotted);
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	return ub_cfg_err(err, &doc->files, &pos, dotted, "%s", msg);
}

/* Replaces a relative *p by config_dir joined with it (§2.3). */
static int resolve_path(const char *config_dir, char **p, struct ub_err *err)
{
	char *joined; /* heap: replaces *p */

	if (!*p)
		return 0;
	joined = ub_path_join(config_dir, *p);
	if (!joined)
		return ub_err_ret(err, -ENOMEM, "out of memory");
	free(*p);
	*p = joined;
	return 0;
}

/* The secret a reference field names, or the §9.8 error. */
static int find_ref(const struct ub_cfg_doc *doc,
		    const struct ub_secrets *secrets, const char *dotted,
		    const char *name, const struct ub_secret **out,
		    struct ub_err *err)
{
	*out = ub_secrets_find(secrets, name);
	if (!*out)
		return verr(doc, err, dotted,
			    "Secret reference '%s' not found in configuration",
			    name);
	return 0;
}

static bool is_pow2(uint64_t v)
{
	return v && !(v & (v - 1));
}

/* ---- shared section bodies ------------------------------------------- */

static const char *const storage_kinds[] = {"filesystem", "s3", NULL};

static int parse_retry(struct ub_cfg_map *m, struct ub_rate_limited_retry *r)
{
	const struct ub_toml_value *v = ub_cfg_get(m, "rate_limited_retry");
	struct ub_cfg_map sub;
	char path[UB_CFG_PATH_MAX];
	int rc;

	if (!v)
		return 0;
	ub_cfg_keypath(path, sizeof(path), m->path, "rate_limited_retry");
	rc = ub_cfg_map_open(&sub, v, path, m->what, m->files, m->err);
	if (!rc)
		rc = ub_cfg_get_bool(&sub, "enabled", &r->enabled);
	if (!rc)
		rc = ub_cfg_get_uint(&sub, "min_delay_ms", UINT64_MAX, NULL,
				     &r->min_delay_ms);
	if (!rc)
		rc = ub_cfg_get_uint(&sub, "jitter_ms", UINT64_MAX, NULL,
				     &r->jitter_ms);
	if (!rc)
		rc = ub_cfg_map_close(&sub);
	return rc;
}

/* The archive storage definition's fields (§10.2), read from an open map
 * (the caller closes it). Strings land in a, which the caller frees. */
static int parse_archive(struct ub_cfg_map *m, struct ub_archive_storage_cfg *a)
{
	int kind = 0;
	int rc;

	archive_defaults(a);
	rc = ub_cfg_get_enum(m, "storage", storage_kinds, true, &kind);
	if (rc)
		return rc;
	a->kind = kind == 0 ? UB_ARCHIVE_FILESYSTEM : UB_ARCHIVE_S3;
	if (a->kind == UB_ARCHIVE_FILESYSTEM) {
		rc = ub_cfg_get_str(m, "path", true, &a->path);
		if (!rc)
			rc = ub_cfg_get_ref(m, "archive_kek", false,
					    &a->archive_kek_ref);
		if (!rc)
			rc = ub_cfg_get_bool(m, "autofetch", &a->autofetch);
		return rc;
	}
	rc = ub_cfg_get_str(m, "bucket", true, &a->bucket);
	if (!rc)
		rc = ub_cfg_get_str(m, "prefix", false, &a->prefix);
	if (!rc)
		rc = ub_cfg_get_str(m, "region", false, &a->region);
	if (!rc)
		rc = ub_cfg_get_str(m, "endpoint", false, &a->endpoint);
	if (!rc)
		rc = ub_cfg_get_ref(m, "access_key_id", true,
				    &a->access_key_id_ref);
	if (!rc)
		rc = ub_cfg_get_ref(m, "secret_access_key", true,
				    &a->secret_access_key_ref);
	if (!rc)
		rc = ub_cfg_get_ref(m, "session_token", false,
				    &a->session_token_ref);
	if (!rc)
		rc = ub_cfg_get_ref(m, "archive_kek", false,
				    &a->archive_kek_ref);
	if (!rc)
		rc = ub_cfg_get_uint(m, "connections", UINT64_MAX, NULL,
				     &a->connections);
	if (!rc)
		rc = ub_cfg_get_uint(m, "connect_timeout_ms", UINT64_MAX, NULL,
				     &a->connect_timeout_ms);
	if (!rc)
		rc = ub_cfg_get_uint(m, "operation_attempt_timeout_ms",
				     UINT64_MAX, NULL,
				     &a->operation_attempt_timeout_ms);
	if (!rc)
		rc = ub_cfg_get_uint(m, "max_attempts", UINT64_MAX, NULL,
				     &a->max_attempts);
	if (!rc)
		rc = parse_retry(m, &a->rate_limited_retry);
	if (!rc)
		rc = ub_cfg_get_bool(m, "autofetch", &a->autofetch);
	return rc;
}

static int parse_psk(struct ub_cfg_map *m, struct ub_remote_cfg *r)
{
	const struct ub_toml_value *v = ub_cfg_get(m, "psk");
	struct ub_cfg_map sub;
	char path[UB_CFG_PATH_MAX];
	int rc;

	if (!v)
		return 0;
	ub_cfg_keypath(path, sizeof(path), m->path, "psk");
	rc = ub_cfg_map_open(&sub, v, path, m->what, m->files, m->err);
	if (!rc)
		rc = ub_cfg_get_str(&sub, "identity", true, &r->psk_identity);
	if (!rc)
		rc = ub_cfg_get_ref(&sub, "secret", true, &r->psk_secret_ref);
	if (!rc)
		rc = ub_cfg_map_close(&sub);
	if (!rc)
		r->has_psk = true;
	return rc;
}

/* The remote definition's fields (§10.3) from an open map. */
static int parse_remote(struct ub_cfg_map *m, struct ub_remote_cfg *r)
{
	int rc;

	remote_defaults(r);
	rc = parse_psk(m, r);
	if (!rc)
		rc = ub_cfg_get_uint(m, "connect_timeout_ms", UINT64_MAX, NULL,
				     &r->connect_timeout_ms);
	if (!rc)
		rc = ub_cfg_get_uint(m, "operation_attempt_timeout_ms",
				     UINT64_MAX, NULL,
				     &r->operation_attempt_timeout_ms);
	if (!rc)
		rc = ub_cfg_get_uint(m, "connections", UINT64_MAX, NULL,
				     &r->connections);
	if (!rc)
		rc = ub_cfg_get_str(m, "address", true, &r->address);
	if (!rc)
		rc = ub_cfg_get_bool(m, "autofetch", &r->autofetch);
	return rc;
}

/* S3 prefix rule (§10.2): no `..` component anywhere and no leading `.`
 * component; a `.` further in is accepted like the reference does. */
static bool s3_prefix_ok(const char *prefix)
{
	const char *p = prefix;

	if (strcmp(prefix, ".") == 0 || strncmp(prefix, "./", 2) == 0)
		return false;
	while (*p) {
		const char *end = strchr(p, '/');
		size_t n = end ? (size_t)(end - p) : strlen(p);

		if (n == 2 && p[0] == '.' && p[1] == '.')
			return false;
		p += n;
		while (*p == '/')
			p++;
	}
	return true;
}

/* A non-empty secret referenced by an S3 credential field. */
static int check_s3_credential(const struct ub_cfg_doc *doc,
			       const struct ub_secrets *secrets,
			       const char *sec, const char *field,
			       const char *name, struct ub_err *err)
{
	const struct ub_secret *s;
	char dotted[UB_CFG_PATH_MAX];
	int rc;

	snprintf(dotted, sizeof(dotted), "%s.%s.ref", sec, field);
	rc = find_ref(doc, secrets, dotted, name, &s, err);
	if (rc)
		return rc;
	if (s->len == 0)
		return verr(doc, err, dotted, "AWS %s cannot be empty", field);
	return 0;
}

/* §10.2 validation, in the reference's order. sec names the section for
 * positions ("stripe_source", "target", "archive"). */
static int validate_archive(const struct ub_cfg_doc *doc,
			    const struct ub_secrets *secrets, const char *sec,
			    const struct ub_archive_storage_cfg *a,
			    struct ub_err *err)
{
	char dotted[UB_CFG_PATH_MAX];
	const struct ub_secret *s;
	int rc;

	if (a->archive_kek_ref) {
		snprintf(dotted, sizeof(dotted), "%s.archive_kek.ref", sec);
		rc =
		    find_ref(doc, secrets, dotted, a->archive_kek_ref, &s, err);
		if (rc)
			return rc;
		if (s->len != ARCHIVE_KEK_LEN)
			return verr(doc, err, dotted,
				    "Archive KEK secret must be exactly 32 "
				    "bytes for AES-256-GCM (got %zu bytes)",
				    s->len);
	}
	if (a->kind != UB_ARCHIVE_S3)
		return 0;
	rc = check_s3_credential(doc, secrets, sec, "access_key_id",
				 a->access_key_id_ref, err);
	if (!rc)
		rc = check_s3_credential(doc, secrets, sec, "secret_access_key",
					 a->secret_access_key_ref, err);
	if (!rc && a->session_token_ref)
		rc = check_s3_credential(doc, secrets, sec, "session_token",
					 a->session_token_ref, err);
	if (rc)
		return rc;
	snprintf(dotted, sizeof(dotted), "%s.prefix", sec);
	if (a->prefix && !s3_prefix_ok(a->prefix))
		return verr(doc, err, dotted,
			    "Invalid S3 prefix (contains . or .. components): "
			    "%s",
			    a->prefix);
	snprintf(dotted, sizeof(dotted), "%s.connections", sec);
	if (a->connections == 0)
		return verr(doc, err, dotted,
			    "S3 connections must be greater than 0");
	snprintf(dotted, sizeof(dotted), "%s.connect_timeout_ms", sec);
	if (a->connect_timeout_ms == 0)
		return verr(doc, err, dotted,
			    "S3 connect_timeout_ms must be greater than 0");
	snprintf(dotted, sizeof(dotted), "%s.operation_attempt_timeout_ms",
		 sec);
	if (a->operation_attempt_timeout_ms == 0)
		return verr(doc, err, dotted,
			    "S3 operation_attempt_timeout_ms must be greater "
			    "than 0");
	snprintf(dotted, sizeof(dotted), "%s.max_attempts", sec);
	if (a->max_attempts == 0)
		return verr(doc, err, dotted,
			    "S3 max_attempts must be greater than 0");
	snprintf(dotted, sizeof(dotted), "%s.rate_limited_retry.min_delay_ms",
		 sec);
	if (a->rate_limited_retry.enabled &&
	    a->rate_limited_retry.min_delay_ms == 0)
		return verr(doc, err, dotted,
			    "rate_limited_retry.min_delay_ms must be greater "
			    "than 0 when enabled");
	return 0;
}

/* §10.3 validation, in the reference's order. */
static int validate_remote(const struct ub_cfg_doc *doc,
			   const struct ub_secrets *secrets, const char *sec,
			   const struct ub_remote_cfg *r, struct ub_err *err)
{
	char dotted[UB_CFG_PATH_MAX];
	const struct ub_secret *s;
	int rc;

	if (!r->has_psk) {
		if (!ub_dz_unencrypted_conn(&doc->dz))
			return verr(doc, err, sec,
				    "Remote stripe source requires PSK unless "
				    "danger_zone.allow_unencrypted_connection "
				    "is enabled");
	} else {
		snprintf(dotted, sizeof(dotted), "%s.psk.secret.ref", sec);
		rc = find_ref(doc, secrets, dotted, r->psk_secret_ref, &s, err);
		if (rc)
			return rc;
		if (s->len < PSK_MIN_LEN)
			return verr(doc, err, dotted,
				    "PSK secret must be at least 16 bytes "
				    "(got %zu bytes)",
				    s->len);
	}
	snprintf(dotted, sizeof(dotted), "%s.connect_timeout_ms", sec);
	if (r->connect_timeout_ms == 0)
		return verr(doc, err, dotted,
			    "Remote connect_timeout_ms must be greater than 0");
	snprintf(dotted, sizeof(dotted), "%s.operation_attempt_timeout_ms",
		 sec);
	if (r->operation_attempt_timeout_ms == 0)
		return verr(doc, err, dotted,
			    "Remote operation_attempt_timeout_ms must be "
			    "greater than 0");
	snprintf(dotted, sizeof(dotted), "%s.connections", sec);
	if (r->connections == 0)
		return verr(doc, err, dotted,
			    "Remote connections must be greater than 0");
	return 0;
}

static void archive_free(struct ub_archive_storage_cfg *a)
{
	free(a->archive_kek_ref);
	free(a->path);
	free(a->bucket);
	free(a->prefix);
	free(a->region);
	free(a->endpoint);
	free(a->access_key_id_ref);
	free(a->secret_access_key_ref);
	free(a->session_token_ref);
	memset(a, 0, sizeof(*a));
}

static void remote_free(struct ub_remote_cfg *r)
{
	free(r->psk_identity);
	free(r->psk_secret_ref);
	free(r->address);
	memset(r, 0, sizeof(*r));
}

/* Opens a required standalone or main section. */
static int open_section(const struct ub_cfg_doc *doc, const char *name,
			const char *what, struct ub_cfg_map *m,
			struct ub_err *err)
{
	const struct ub_toml_value *v = ub_toml_table_get(doc->root, name);
	struct ub_toml_pos pos = {0};

	if (!v)
		return ub_cfg_err(err, &doc->files, &pos, NULL,
				  "Missing required [%s] section", name);
	return ub_cfg_map_open(m, v, name, what, &doc->files, err);
}

/* ---- main configuration sections ------------------------------------- */

static int parse_device(const struct ub_cfg_doc *doc, struct ub_device_cfg *d,
			struct ub_err *err)
{
	struct ub_cfg_map m;
	int rc;

	rc = open_section(doc, "device", "Failed to parse device section", &m,
			  err);
	if (!rc)
		rc = ub_cfg_get_str(&m, "data_path", true, &d->data_path);
	if (!rc)
		rc = ub_cfg_get_str(&m, "metadata_path", false,
				    &d->metadata_path);
	if (!rc)
		rc =
		    ub_cfg_get_str(&m, "vhost_socket", false, &d->vhost_socket);
	if (!rc)
		rc = ub_cfg_get_str(&m, "rpc_socket", false, &d->rpc_socket);
	if (!rc)
		rc = ub_cfg_get_str(&m, "device_id", false, &d->device_id);
	if (!rc)
		rc = ub_cfg_get_bool(&m, "track_written", &d->track_written);
	if (!rc)
		rc = ub_cfg_map_close(&m);
	if (!rc)
		rc = resolve_path(doc->config_dir, &d->data_path, err);
	if (!rc)
		rc = resolve_path(doc->config_dir, &d->metadata_path, err);
	if (!rc)
		rc = resolve_path(doc->config_dir, &d->vhost_socket, err);
	if (!rc)
		rc = resolve_path(doc->config_dir, &d->rpc_socket, err);
	if (rc)
		return rc;
	if (!d->device_id) {
		d->device_id = strdup("ubiblk");
		if (!d->device_id)
			return ub_err_ret(err, -ENOMEM, "out of memory");
	}
	if (strlen(d->device_id) > DEVICE_ID_GUEST_MAX)
		LOG_WARN("device.device_id is %zu bytes long; only the first "
			 "%d bytes reach the guest as its serial",
			 strlen(d->device_id), DEVICE_ID_GUEST_MAX);
	return 0;
}

static const char *const io_engines[] = {"io_uring", "sync", NULL};

/* Reads [tuning] and validates it in the order of §6; t keeps its defaults
 * for absent keys. */
static int parse_tuning(const struct ub_cfg_doc *doc, struct ub_tuning_cfg *t,
			struct ub_err *err)
{
	const struct ub_toml_value *v = ub_toml_table_get(doc->root, "tuning");
	uint64_t nq = t->num_queues, qs = t->queue_size;
	uint64_t ssm = t->seg_size_max, scm = t->seg_count_max;
	struct ub_cfg_map m;
	uint64_t *cpus = NULL; /* heap, from the mapper; freed here */
	size_t ncpus = 0;
	int engine = 0;
	int rc;

	if (!v)
		return 0;
	rc = ub_cfg_map_open(&m, v, "tuning", "Failed to parse tuning section",
			     &doc->files, err);
	if (!rc)
		rc = ub_cfg_get_uint(&m, "num_queues", UINT64_MAX, NULL, &nq);
	if (!rc)
		rc = ub_cfg_get_uint(&m, "queue_size", UINT64_MAX, NULL, &qs);
	if (!rc)
		rc =
		    ub_cfg_get_uint(&m, "seg_size_max", UINT64_MAX, NULL, &ssm);
	if (!rc)
		rc = ub_cfg_get_uint(&m, "seg_count_max", UINT64_MAX, NULL,
				     &scm);
	if (!rc)
		rc = ub_cfg_get_uint(&m, "poll_timeout_us", UINT64_MAX, NULL,
				     &t->poll_timeout_us);
	if (!rc)
		rc = ub_cfg_get_uint_array(&m, "cpus", UINT32_MAX, &cpus,
					   &ncpus);
	if (!rc)
		rc = ub_cfg_get_enum(&m, "io_engine", io_engines, false,
				     &engine);
	if (!rc)
		rc = ub_cfg_get_bool(&m, "write_through", &t->write_through);
	if (!rc)
		rc = ub_cfg_map_close(&m);
	if (rc)
		goto out;
	t->io_engine = engine == 0 ? UB_IO_ENGINE_IO_URING : UB_IO_ENGINE_SYNC;

	if (nq < 1 || nq > 63) {
		rc = verr(doc, err, "tuning.num_queues",
			  "num_queues %" PRIu64
			  " is out of range (must be 1..=63)",
			  nq);
		goto out;
	}
	if (!is_pow2(qs) || qs > 65536) {
		rc = verr(doc, err, "tuning.queue_size",
			  "queue_size %" PRIu64
			  " is invalid (must be a non-zero power of two, max "
			  "65536)",
			  qs);
		goto out;
	}
	if (ssm < 1 || ssm > 1048576) {
		rc = verr(doc, err, "tuning.seg_size_max",
			  "seg_size_max %" PRIu64
			  " is out of range (must be 1..=1048576)",
			  ssm);
		goto out;
	}
	if (scm < 1 || scm > 256) {
		rc = verr(doc, err, "tuning.seg_count_max",
			  "seg_count_max %" PRIu64
			  " is out of range (must be 1..=256)",
			  scm);
		goto out;
	}
	if (cpus && ncpus != nq) {
		rc = verr(doc, err, "tuning.cpus",
			  "Length of cpus (%zu) does not match num_queues "
			  "(%" PRIu64 ")",
			  ncpus, nq);
		goto out;
	}
	/* The reference's text says 1..=10000000 but accepts 0; ours says
	 * what is accepted. */
	if (t->poll_timeout_us > 10000000) {
		rc = verr(doc, err, "tuning.poll_timeout_us",
			  "poll_timeout_us %" PRIu64
			  " is out of range (must be 0..=10000000)",
			  t->poll_timeout_us);
		goto out;
	}
	if (qs > RING_SIZE_MAX)
		LOG_WARN("tuning.queue_size %" PRIu64 " exceeds the %d-entry "
			 "limit of io_uring and vhost rings: %d is used "
			 "(ublk: at most 4096)",
			 qs, RING_SIZE_MAX, RING_SIZE_MAX);
	t->num_queues = (uint32_t)nq;
	t->queue_size = (uint32_t)qs;
	t->seg_size_max = (uint32_t)ssm;
	t->seg_count_max = (uint32_t)scm;
	if (cpus) {
		t->cpus = calloc(ncpus ? ncpus : 1, sizeof(*t->cpus));
		if (!t->cpus) {
			rc = ub_err_ret(err, -ENOMEM, "out of memory");
			goto out;
		}
		for (size_t i = 0; i < ncpus; i++)
			t->cpus[i] = (uint32_t)cpus[i];
		t->cpus_len = ncpus;
	}
out:
	free(cpus);
	return rc;
}

static int parse_encryption(const struct ub_cfg_doc *doc, struct ub_config *cfg,
			    struct ub_err *err)
{
	const struct ub_toml_value *v =
	    ub_toml_table_get(doc->root, "encryption");
	struct ub_cfg_map m;
	int rc;

	if (!v)
		return 0;
	rc = ub_cfg_map_open(&m, v, "encryption",
			     "Failed to parse encryption section", &doc->files,
			     err);
	if (!rc)
		rc = ub_cfg_get_ref(&m, "xts_key", true, &cfg->xts_key_ref);
	if (!rc)
		rc = ub_cfg_map_close(&m);
	if (!rc)
		cfg->has_encryption = true;
	return rc;
}

static const char *const source_types[] = {"raw", "archive", "remote", NULL};

/* [stripe_source]: parse, resolve its paths, validate (step 11). */
static int parse_stripe_source(const struct ub_cfg_doc *doc,
			       const struct ub_secrets *secrets,
			       struct ub_stripe_source_cfg *ss,
			       struct ub_err *err)
{
	const struct ub_toml_value *v =
	    ub_toml_table_get(doc->root, "stripe_source");
	struct ub_cfg_map m;
	int type = 0;
	int rc;

	if (!v)
		return 0;
	rc = ub_cfg_map_open(&m, v, "stripe_source",
			     "Failed to parse stripe_source section",
			     &doc->files, err);
	if (!rc)
		rc = ub_cfg_get_enum(&m, "type", source_types, true, &type);
	if (rc)
		return rc;
	switch (type) {
	case 0:
		ss->type = UB_STRIPE_SOURCE_RAW;
		rc =
		    ub_cfg_get_str(&m, "image_path", true, &ss->raw.image_path);
		if (!rc)
			rc = ub_cfg_get_bool(&m, "autofetch",
					     &ss->raw.autofetch);
		if (!rc)
			rc = ub_cfg_get_bool(&m, "copy_on_read",
					     &ss->raw.copy_on_read);
		if (!rc)
			rc = ub_cfg_map_close(&m);
		if (!rc)
			rc = resolve_path(doc->config_dir, &ss->raw.image_path,
					  err);
		break;
	case 1:
		ss->type = UB_STRIPE_SOURCE_ARCHIVE;
		rc = parse_archive(&m, &ss->archive);
		if (!rc)
			rc = ub_cfg_map_close(&m);
		if (!rc && ss->archive.kind == UB_ARCHIVE_FILESYSTEM)
			rc = resolve_path(doc->config_dir, &ss->archive.path,
					  err);
		if (!rc)
			rc = validate_archive(doc, secrets, "stripe_source",
					      &ss->archive, err);
		break;
	default:
		ss->type = UB_STRIPE_SOURCE_REMOTE;
		rc = parse_remote(&m, &ss->remote);
		if (!rc)
			rc = ub_cfg_map_close(&m);
		if (!rc)
			rc = validate_remote(doc, secrets, "stripe_source",
					     &ss->remote, err);
		break;
	}
	return rc;
}

/* Step 12: the XTS key reference, or the encryption requirement. */
static int check_encryption(const struct ub_cfg_doc *doc,
			    const struct ub_config *cfg, struct ub_err *err)
{
	const char *dotted = "encryption.xts_key.ref";
	const struct ub_secret *s;

	if (!cfg->has_encryption) {
		struct ub_toml_pos pos = {0};

		if (ub_dz_unencrypted_disk(&cfg->danger_zone))
			return 0;
		return ub_cfg_err(err, &doc->files, &pos, NULL,
				  "Disk encryption is required unless "
				  "danger_zone.allow_unencrypted_disk is "
				  "enabled");
	}
	s = ub_secrets_find(&cfg->secrets, cfg->xts_key_ref);
	if (!s)
		return verr(doc, err, dotted,
			    "Encryption xts_key reference '%s' not found in "
			    "configuration",
			    cfg->xts_key_ref);
	if (s->len != XTS_KEY_LEN)
		return verr(doc, err, dotted,
			    "Encryption xts_key '%s' must be exactly 64 bytes "
			    "(got %zu bytes)",
			    cfg->xts_key_ref, s->len);
	/* Not in the reference: equal halves make XTS's tweak encryption use
	 * the data key, which voids its security argument. */
	if (CRYPTO_memcmp(s->value, s->value + XTS_KEY_LEN / 2,
			  XTS_KEY_LEN / 2) == 0)
		return verr(doc, err, dotted,
			    "Encryption xts_key '%s' has identical data and "
			    "tweak halves",
			    cfg->xts_key_ref);
	return 0;
}

/* Takes the resolved secrets and danger zone out of doc. */
static int adopt_doc(struct ub_cfg_doc *doc, const char *path, char **cpath,
		     char **cdir, struct ub_danger_zone *dz,
		     struct ub_secrets *secrets, struct ub_err *err)
{
	*secrets = doc->secrets;
	memset(&doc->secrets, 0, sizeof(doc->secrets));
	*dz = doc->dz;
	*cpath = strdup(path);
	*cdir = strdup(doc->config_dir);
	if (!*cpath || !*cdir)
		return ub_err_ret(err, -ENOMEM, "out of memory");
	return 0;
}

int ub_config_load(const char *path, struct ub_config *cfg, struct ub_err *err)
{
	struct ub_cfg_doc doc; /* merged tree and file names; freed here */
	int rc;

	ub_config_defaults(cfg);
	/* Steps 1-7. */
	rc = ub_cfg_doc_load(path, &ub_cfg_kind_main, &doc, err);
	if (rc)
		goto err_out;
	rc = adopt_doc(&doc, path, &cfg->path, &cfg->config_dir,
		       &cfg->danger_zone, &cfg->secrets, err);
	/* Steps 8-12. */
	if (!rc)
		rc = parse_device(&doc, &cfg->device, err);
	if (!rc)
		rc = parse_tuning(&doc, &cfg->tuning, err);
	if (!rc)
		rc = parse_encryption(&doc, cfg, err);
	if (!rc)
		rc = parse_stripe_source(&doc, &cfg->secrets,
					 &cfg->stripe_source, err);
	if (!rc)
		rc = check_encryption(&doc, cfg, err);
	ub_cfg_doc_free(&doc);
	if (rc)
		goto err_out;
	return 0;

err_out:
	ub_config_free(cfg);
	return rc;
}

void ub_config_free(struct ub_config *cfg)
{
	free(cfg->path);
	free(cfg->config_dir);
	free(cfg->device.data_path);
	free(cfg->device.metadata_path);
	free(cfg->device.vhost_socket);
	free(cfg->device.rpc_socket);
	free(cfg->device.device_id);
	free(cfg->tuning.cpus);
	free(cfg->xts_key_ref);
	free(cfg->stripe_source.raw.image_path);
	archive_free(&cfg->stripe_source.archive);
	remote_free(&cfg->stripe_source.remote);
	ub_secrets_free(&cfg->secrets);
	memset(cfg, 0, sizeof(*cfg));
}

const struct ub_secret *ub_config_xts_key(const struct ub_config *cfg)
{
	if (!cfg->has_encryption || !cfg->xts_key_ref)
		return NULL;
	return ub_secrets_find(&cfg->secrets, cfg->xts_key_ref);
}

/* ---- standalone files (§11) ------------------------------------------ */

int ub_target_config_load(const char *path, struct ub_target_config *cfg,
			  struct ub_err *err)
{
	struct ub_cfg_doc doc; /* merged tree and file names; freed here */
	struct ub_cfg_map m;
	int rc;

	memset(cfg, 0, sizeof(*cfg));
	rc = ub_cfg_doc_load(path, &ub_cfg_kind_target, &doc, err);
	if (rc)
		goto err_out;
	rc = adopt_doc(&doc, path, &cfg->path, &cfg->config_dir,
		       &cfg->danger_zone, &cfg->secrets, err);
	if (!rc)
		rc = open_section(&doc, "target",
				  "Failed to parse target section", &m, err);
	if (!rc)
		rc = parse_archive(&m, &cfg->target);
	if (!rc)
		rc = ub_cfg_map_close(&m);
	/* The target's filesystem path stays as written (§2.3). */
	if (!rc)
		rc = validate_archive(&doc, &cfg->secrets, "target",
				      &cfg->target, err);
	ub_cfg_doc_free(&doc);
	if (rc)
		goto err_out;
	return 0;

err_out:
	ub_target_config_free(cfg);
	return rc;
}

void ub_target_config_free(struct ub_target_config *cfg)
{
	free(cfg->path);
	free(cfg->config_dir);
	archive_free(&cfg->target);
	ub_secrets_free(&cfg->secrets);
	memset(cfg, 0, sizeof(*cfg));
}

int ub_export_config_load(const char *path, struct ub_export_config *cfg,
			  struct ub_err *err)
{
	struct ub_cfg_doc doc; /* merged tree and file names; freed here */
	struct ub_cfg_map m;
	int rc;

	memset(cfg, 0, sizeof(*cfg));
	rc = ub_cfg_doc_load(path, &ub_cfg_kind_export, &doc, err);
	if (rc)
		goto err_out;
	rc = adopt_doc(&doc, path, &cfg->path, &cfg->config_dir,
		       &cfg->danger_zone, &cfg->secrets, err);
	if (!rc)
		rc = open_section(&doc, "archive",
				  "Failed to parse archive section", &m, err);
	if (!rc)
		rc = parse_archive(&m, &cfg->archive);
	if (!rc)
		rc = ub_cfg_map_close(&m);
	if (!rc && cfg->archive.kind == UB_ARCHIVE_FILESYSTEM)
		rc = resolve_path(doc.config_dir, &cfg->archive.path, err);
	if (!rc)
		rc = validate_archive(&doc, &cfg->secrets, "archive",
				      &cfg->archive, err);
	ub_cfg_doc_free(&doc);
	if (rc)
		goto err_out;
	return 0;

err_out:
	ub_export_config_free(cfg);
	return rc;
}

void ub_export_config_free(struct ub_export_config *cfg)
{
	free(cfg->path);
	free(cfg->config_dir);
	archive_free(&cfg->archive);
	ub_secrets_free(&cfg->secrets);
	memset(cfg, 0, sizeof(*cfg));
}

int ub_server_config_load(const char *path, struct ub_server_config *cfg,
			  struct ub_err *err)
{
	struct ub_cfg_doc doc; /* merged tree and file names; freed here */
	struct ub_cfg_map m;
	int rc;

	memset(cfg, 0, sizeof(*cfg));
	rc = ub_cfg_doc_load(path, &ub_cfg_kind_server, &doc, err);
	if (rc)
		goto err_out;
	rc = adopt_doc(&doc, path, &cfg->path, &cfg->config_dir,
		       &cfg->danger_zone, &cfg->secrets, err);
	if (!rc)
		rc = open_section(&doc, "server",
				  "Failed to parse server section", &m, err);
	/* `autofetch` is accepted here and has no effect on a server. */
	if (!rc)
		rc = parse_remote(&m, &cfg->server);
	if (!rc)
		rc = ub_cfg_map_close(&m);
	if (!rc)
		rc = validate_remote(&doc, &cfg->secrets, "server",
				     &cfg->server, err);
	ub_cfg_doc_free(&doc);
	if (rc)
		goto err_out;
	return 0;

err_out:
	ub_server_config_free(cfg);
	return rc;
}

void ub_server_config_free(struct ub_server_config *cfg)
{
	free(cfg->path);
	free(cfg->config_dir);
	remote_free(&cfg->server);
	ub_secrets_free(&cfg->secrets);
	memset(cfg, 0, sizeof(*cfg));
}

int ub_config_load_for_cli(const char *prog, const char *path,
			   struct ub_config *cfg)
{
	struct ub_err err = {{0}};

	ub_secmem_init();
	if (ub_config_load(path, cfg, &err) == 0)
		return UB_EXIT_OK;
	ub_config_free(cfg);
	return ub_cli_fail(prog, "loading configuration failed: %s", err.msg);
}
