/* The effective main configuration as TOML (`vhost-backend --check`): every
 * key with the value the programs will use, defaults and resolved paths
 * included. Unset optional keys appear as comments (TOML has no null).
 * Secrets show only their definition and length; values never leave
 * ub_secrets. */
#include "config/config_internal.h"

#include <errno.h>
#include <inttypes.h>
#include <string.h>

static bool bare_key(const char *k)
{
	if (!*k)
		return false;
	for (; *k; k++)
		if (!((*k >= 'a' && *k <= 'z') || (*k >= 'A' && *k <= 'Z') ||
		      (*k >= '0' && *k <= '9') || *k == '_' || *k == '-'))
			return false;
	return true;
}

/* Length of the valid UTF-8 sequence at s (1-4), or 0 if it is not one. */
static size_t utf8_len(const unsigned char *s)
{
	size_t n;
	uint32_t cp;

	if (s[0] < 0x80)
		return 1;
	if ((s[0] & 0xe0) == 0xc0) {
		n = 2;
		cp = s[0] & 0x1f;
	} else if ((s[0] & 0xf0) == 0xe0) {
		n = 3;
		cp = s[0] & 0x0f;
	} else if ((s[0] & 0xf8) == 0xf0) {
		n = 4;
		cp = s[0] & 0x07;
	} else {
		return 0;
	}
	for (size_t i = 1; i < n; i++) {
		if ((s[i] & 0xc0) != 0x80)
			return 0;
		cp = (cp << 6) | (s[i] & 0x3f);
	}
	if ((n == 2 && cp < 0x80) || (n == 3 && cp < 0x800) ||
	    (n == 4 && cp < 0x10000) || cp > 0x10ffff ||
	    (cp >= 0xd800 && cp <= 0xdfff))
		return 0;
	return n;
}

/* s as a TOML basic string; bytes that are not UTF-8 (possible in paths
 * that came from the command line) become U+FFFD. */
static void put_str(FILE *f, const char *s)
{
	const unsigned char *p = (const unsigned char *)s;

	fputc('"', f);
	while (*p) {
		size_t n = utf8_len(p);

		if (n == 0) {
			fputs("\\uFFFD", f);
			p++;
			continue;
		}
		if (n > 1) {
			fwrite(p, 1, n, f);
			p += n;
			continue;
		}
		switch (*p) {
		case '"':
			fputs("\\\"", f);
			break;
		case '\\':
			fputs("\\\\", f);
			break;
		case '\n':
			fputs("\\n", f);
			break;
		case '\t':
			fputs("\\t", f);
			break;
		case '\r':
			fputs("\\r", f);
			break;
		default:
			if (*p < 0x20 || *p == 0x7f)
				fprintf(f, "\\u%04x", *p);
			else
				fputc(*p, f);
		}
		p++;
	}
	fputc('"', f);
}

static void put_key(FILE *f, const char *k)
{
	if (bare_key(k))
		fputs(k, f);
	else
		put_str(f, k);
}

static void kv_str(FILE *f, const char *key, const char *v)
{
	if (!v) {
		fprintf(f, "# %s is not set\n", key);
		return;
	}
	fprintf(f, "%s = ", key);
	put_str(f, v);
	fputc('\n', f);
}

static void kv_ref(FILE *f, const char *key, const char *name)
{
	if (!name) {
		fprintf(f, "# %s is not set\n", key);
		return;
	}
	fprintf(f, "%s.ref = ", key);
	put_str(f, name);
	fputc('\n', f);
}

static void kv_bool(FILE *f, const char *key, bool v)
{
	fprintf(f, "%s = %s\n", key, v ? "true" : "false");
}

static void kv_u64(FILE *f, const char *key, uint64_t v)
{
	fprintf(f, "%s = %" PRIu64 "\n", key, v);
}

static void print_device(FILE *f, const struct ub_device_cfg *d)
{
	fputs("[device]\n", f);
	kv_str(f, "data_path", d->data_path);
	kv_str(f, "metadata_path", d->metadata_path);
	kv_str(f, "vhost_socket", d->vhost_socket);
	kv_str(f, "rpc_socket", d->rpc_socket);
	kv_str(f, "device_id", d->device_id);
	kv_bool(f, "track_written", d->track_written);
}

static void print_tuning(FILE *f, const struct ub_tuning_cfg *t)
{
	fputs("\n[tuning]\n", f);
	kv_u64(f, "num_queues", t->num_queues);
	kv_u64(f, "queue_size", t->queue_size);
	kv_u64(f, "seg_size_max", t->seg_size_max);
	kv_u64(f, "seg_count_max", t->seg_count_max);
	kv_u64(f, "poll_timeout_us", t->poll_timeout_us);
	if (t->cpus) {
		fputs("cpus = [", f);
		for (size_t i = 0; i < t->cpus_len; i++)
			fprintf(f, "%s%" PRIu32, i ? ", " : "", t->cpus[i]);
		fputs("]\n", f);
	} else {
		fputs("# cpus is not set\n", f);
	}
	kv_str(f, "io_engine",
	       t->io_engine == UB_IO_ENGINE_SYNC ? "sync" : "io_uring");
	kv_bool(f, "write_through", t->write_through);
}

static void print_danger_zone(FILE *f, const struct ub_danger_zone *dz)
{
	fputs("\n[danger_zone]\n", f);
	kv_bool(f, "enabled", dz->enabled);
	kv_bool(f, "allow_unencrypted_disk", dz->allow_unencrypted_disk);
	kv_bool(f, "allow_inline_plaintext_secrets",
		dz->allow_inline_plaintext_secrets);
	kv_bool(f, "allow_secret_over_regular_file",
		dz->allow_secret_over_regular_file);
	kv_bool(f, "allow_unencrypted_connection",
		dz->allow_unencrypted_connection);
	kv_bool(f, "allow_env_secrets", dz->allow_env_secrets);
}

static void print_archive(FILE *f, const struct ub_archive_storage_cfg *a)
{
	if (a->kind == UB_ARCHIVE_FILESYSTEM) {
		kv_str(f, "storage", "filesystem");
		kv_str(f, "path", a->path);
		kv_ref(f, "archive_kek", a->archive_kek_ref);
		kv_bool(f, "autofetch", a->autofetch);
		return;
	}
	kv_str(f, "storage", "s3");
	kv_str(f, "bucket", a->bucket);
	kv_str(f, "prefix", a->prefix);
	kv_str(f, "region", a->region);
	kv_str(f, "endpoint", a->endpoint);
	kv_ref(f, "access_key_id", a->access_key_id_ref);
	kv_ref(f, "secret_access_key", a->secret_access_key_ref);
	kv_ref(f, "session_token", a->session_token_ref);
	kv_ref(f, "archive_kek", a->archive_kek_ref);
	kv_u64(f, "connections", a->connections);
	kv_u64(f, "connect_timeout_ms", a->connect_timeout_ms);
	kv_u64(f, "operation_attempt_timeout_ms",
	       a->operation_attempt_timeout_ms);
	kv_u64(f, "max_attempts", a->max_attempts);
	fprintf(f,
		"rate_limited_retry = { enabled = %s, min_delay_ms = %" PRIu64
		", jitter_ms = %" PRIu64 " }\n",
		a->rate_limited_retry.enabled ? "true" : "false",
		a->rate_limited_retry.min_delay_ms,
		a->rate_limited_retry.jitter_ms);
	kv_bool(f, "autofetch", a->autofetch);
}

static void print_remote(FILE *f, const struct ub_remote_cfg *r)
{
	if (r->has_psk) {
		fputs("psk = { identity = ", f);
		put_str(f, r->psk_identity);
		fputs(", secret.ref = ", f);
		put_str(f, r->psk_secret_ref);
		fputs(" }\n", f);
	} else {
		fputs("# psk is not set\n", f);
	}
	kv_u64(f, "connect_timeout_ms", r->connect_timeout_ms);
	kv_u64(f, "operation_attempt_timeout_ms",
	       r->operation_attempt_timeout_ms);
	kv_u64(f, "connections", r->connections);
	kv_str(f, "address", r->address);
	kv_bool(f, "autofetch", r->autofetch);
}

static void print_stripe_source(FILE *f, const struct ub_stripe_source_cfg *s)
{
	switch (s->type) {
	case UB_STRIPE_SOURCE_NONE:
		fputs("\n# no [stripe_source]\n", f);
		return;
	case UB_STRIPE_SOURCE_RAW:
		fputs("\n[stripe_source]\ntype = \"raw\"\n", f);
		kv_str(f, "image_path", s->raw.image_path);
		kv_bool(f, "autofetch", s->raw.autofetch);
		kv_bool(f, "copy_on_read", s->raw.copy_on_read);
		return;
	case UB_STRIPE_SOURCE_ARCHIVE:
		fputs("\n[stripe_source]\ntype = \"archive\"\n", f);
		print_archive(f, &s->archive);
		return;
	case UB_STRIPE_SOURCE_REMOTE:
		fputs("\n[stripe_source]\ntype = \"remote\"\n", f);
		print_remote(f, &s->remote);
		return;
	}
}

static const char *source_name(enum ub_secret_source s)
{
	switch (s) {
	case UB_SECRET_SOURCE_FILE:
		return "file";
	case UB_SECRET_SOURCE_INLINE:
		return "inline";
	case UB_SECRET_SOURCE_ENV:
		return "env";
	}
	return "unknown";
}

/* Name, source kind, encoding, KEK and length: never the bytes. */
static void print_secrets(FILE *f, const struct ub_secrets *s)
{
	if (!s->count) {
		fputs("\n# no [secrets]\n", f);
		return;
	}
	for (size_t i = 0; i < s->count; i++) {
		const struct ub_secret *x = &s->items[i];

		fputs("\n[secrets.", f);
		put_key(f, x->name);
		fputs("]\n", f);
		kv_str(f, "source", source_name(x->source));
		kv_str(f, "encoding",
		       x->encoding == UB_SECRET_ENCODING_BASE64 ? "base64"
								: "plaintext");
		kv_ref(f, "encrypted_by", x->encrypted_by);
		fprintf(f, "length = %zu\n", x->len);
		kv_str(f, "value", "[REDACTED]");
	}
}

int ub_config_print(FILE *f, const struct ub_config *cfg)
{
	fputs("# Effective configuration", f);
	if (cfg->path) {
		fputs(" of ", f);
		/* Comments allow no control characters: plain ASCII only. */
		for (const unsigned char *p = (const void *)cfg->path; *p; p++)
			fputc(*p < 0x20 || *p >= 0x7f ? '?' : *p, f);
	}
	fputs("\n# (defaults filled in, relative paths resolved, secret "
	      "values redacted)\n\n",
	      f);
	print_device(f, &cfg->device);
	print_tuning(f, &cfg->tuning);
	if (cfg->has_encryption) {
		fputs("\n[encryption]\n", f);
		kv_ref(f, "xts_key", cfg->xts_key_ref);
	} else {
		fputs("\n# no [encryption]: the disk is not encrypted\n", f);
	}
	print_danger_zone(f, &cfg->danger_zone);
	print_stripe_source(f, &cfg->stripe_source);
	print_secrets(f, &cfg->secrets);
	if (fflush(f) != 0 || ferror(f))
		return -EIO;
	return 0;
}
