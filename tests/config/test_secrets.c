/* [secrets]: definitions, sources (file, FIFO, inline, env), encodings,
 * KEK envelopes, resolution order and the exact error texts of config.md
 * §9; one test per acceptance criterion 21-33 of §15, plus the §9.4 test
 * vector and the rules a C implementation adds (read cap, deterministic
 * order, no secret bytes in messages). */
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
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/rand.h>

#include "config/secrets.h"
#include "config/toml.h"
#include "crypto/kek.h"
#include "util/base64.h"
#include "util/log.h"
#include "util/secmem.h"

static char tmpdir[PATH_MAX];
static size_t secure_used_before; /* locked bytes in use at setup */

static const struct ub_danger_zone dz_none;
static const struct ub_danger_zone dz_all = {
    .enabled = true,
    .allow_inline_plaintext_secrets = true,
    .allow_secret_over_regular_file = true,
    .allow_env_secrets = true,
};
static const struct ub_danger_zone dz_inline = {
    .enabled = true,
    .allow_inline_plaintext_secrets = true,
};
static const struct ub_danger_zone dz_file = {
    .enabled = true,
    .allow_secret_over_regular_file = true,
};

/* 32 x 0x11 and its base64 (config.md §9.4). */
static const char kek11_b64[] = "ERERERERERERERERERERERERERERERERERERERERERE=";
static const char vector_b64[] =
    "IiIiIiIiIiIiIiIiF/YFSsTKmVjtNtQ3RKvn2g+C3/F+lLpcSlYQ8xX8exxlXokhd43f"
    "+WZxxwbKdWcag+OsUaFHTMmMTdDC3lbRjd5mI3GRhW03UznRcdD19Ng=";

/* ---- fixture ------------------------------------------------------- */

static int rm_entry(const char *path, const struct stat *sb, int flag,
		    struct FTW *ftw)
{
	return remove(path);
}

static int setup(void **state)
{
	snprintf(tmpdir, sizeof(tmpdir), "%s/ubiblk-secrets.XXXXXX",
		 getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
	if (!mkdtemp(tmpdir))
		return -1;
	secure_used_before = CRYPTO_secure_used();
	return 0;
}

/* Also fails a test that left locked secret memory behind, which
 * LeakSanitizer cannot see. */
static int teardown(void **state)
{
	unsetenv("UB_TEST_SECRET");
	unsetenv("UB_TEST_ENVELOPE");
	if (nftw(tmpdir, rm_entry, 16, FTW_DEPTH | FTW_PHYS))
		return -1;
	if (CRYPTO_secure_used() != secure_used_before) {
		fprintf(stderr, "secure heap: %zu bytes in use, %zu before\n",
			CRYPTO_secure_used(), secure_used_before);
		return -1;
	}
	return 0;
}

/* Sets the secure heap up and lets OpenSSL's random generator take its own
 * (lasting) share of it before any test measures. */
static int group_setup(void **state)
{
	unsigned char b;

	ub_secmem_init();
	return RAND_bytes(&b, 1) == 1 ? 0 : -1;
}

/* Heap printf; the test frees it. */
__attribute__((format(printf, 1, 2))) static char *fmt(const char *f, ...)
{
	va_list ap;
	char *s;

	va_start(ap, f);
	assert_true(vasprintf(&s, f, ap) >= 0);
	va_end(ap);
	return s;
}

static void path_in(char *buf, size_t n, const char *name)
{
	int w = snprintf(buf, n, "%s/%s", tmpdir, name);

	assert_true(w > 0 && (size_t)w < n);
}

static void write_file(const char *name, const void *data, size_t len,
		       mode_t mode)
{
	char path[PATH_MAX];
	int fd;

	path_in(path, sizeof(path), name);
	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
	assert_true(fd >= 0);
	assert_int_equal(fchmod(fd, mode), 0);
	assert_int_equal(write(fd, data, len), (ssize_t)len);
	close(fd);
}

/* Parses toml as file "test.toml" and loads its [secrets] with config_dir
 * = tmpdir. On failure checks that *out was left empty. */
static int load(const char *toml, const struct ub_danger_zone *dz,
		struct ub_secrets *out, struct ub_err *err)
{
	struct ub_toml_value *root = NULL;
	struct ub_toml_error terr;
	struct ub_cfg_files files = {0};
	uint32_t idx;
	int rc;

	assert_int_equal(ub_cfg_files_add(&files, "test.toml", &idx), 0);
	rc = ub_toml_parse(toml, strlen(toml), idx, &root, &terr);
	if (rc)
		fail_msg("TOML parse error at %u:%u: %s", terr.line, terr.col,
			 terr.msg);
	memset(err, 0, sizeof(*err));
	memset(out, 0xa5, sizeof(*out));
	rc = ub_secrets_load(ub_toml_table_get(root, "secrets"), tmpdir, dz,
			     &files, out, err);
	if (rc) {
		assert_true(rc < 0);
		assert_int_equal(out->count, 0);
		assert_null(out->items);
		assert_true(err->msg[0] != '\0');
	}
	ub_toml_free(root);
	ub_cfg_files_free(&files);
	return rc;
}

/* Loads toml and expects a failure whose message contains want. */
static void expect_error(const char *toml, const struct ub_danger_zone *dz,
			 const char *want)
{
	struct ub_secrets s;
	struct ub_err err;

	assert_int_not_equal(load(toml, dz, &s, &err), 0);
	if (!strstr(err.msg, want))
		fail_msg("error '%s' does not contain '%s'", err.msg, want);
}

/* Loads toml and expects success. */
static void expect_ok(const char *toml, const struct ub_danger_zone *dz,
		      struct ub_secrets *s)
{
	struct ub_err err;

	if (load(toml, dz, s, &err))
		fail_msg("unexpected error: %s", err.msg);
}

static const struct ub_secret *must_find(const struct ub_secrets *s,
					 const char *name)
{
	const struct ub_secret *it = ub_secrets_find(s, name);

	if (!it)
		fail_msg("secret '%s' not found", name);
	return it;
}

static void fill_kek(unsigned char kek[32], unsigned char byte)
{
	memset(kek, byte, 32);
}

/* Base64 of the envelope of pt under kek with AAD name (heap string). */
static char *seal_b64(const unsigned char *kek, size_t kek_len,
		      const char *name, const void *pt, size_t pt_len)
{
	static const unsigned char nonce[12] = "nonce-nonce!";
	unsigned char *env = malloc(pt_len + UB_KEK_OVERHEAD);
	char *b64 = malloc(ub_base64_encoded_len(pt_len + UB_KEK_OVERHEAD) + 1);
	struct ub_err err;

	assert_non_null(env);
	assert_non_null(b64);
	assert_int_equal(ub_kek_seal(kek, kek_len, name, strlen(name), nonce,
				     pt, pt_len, env, &err),
			 0);
	ub_base64_encode(env, pt_len + UB_KEK_OVERHEAD, b64);
	free(env);
	return b64;
}

/* ---- FIFO writer ---------------------------------------------------- */

struct fifo_writer {
	pthread_t thread;
	char path[PATH_MAX];
	const void *data;
	size_t len;
	ssize_t written;
};

static void *fifo_write(void *arg)
{
	struct fifo_writer *w = arg;
	int fd = open(w->path, O_WRONLY | O_CLOEXEC);

	w->written = -1;
	if (fd < 0)
		return NULL;
	w->written = write(fd, w->data, w->len);
	close(fd);
	return NULL;
}

/* Creates FIFO name in tmpdir and a thread that writes data into it once. */
static void fifo_start(struct fifo_writer *w, const char *name,
		       const void *data, size_t len)
{
	path_in(w->path, sizeof(w->path), name);
	w->data = data;
	w->len = len;
	assert_int_equal(mkfifo(w->path, 0600), 0);
	assert_int_equal(pthread_create(&w->thread, NULL, fifo_write, w), 0);
}

/* Joins the writer; a writer nobody read from is released first. Returns
 * the bytes it wrote. */
static ssize_t fifo_finish(struct fifo_writer *w)
{
	int fd = open(w->path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);

	assert_int_equal(pthread_join(w->thread, NULL), 0);
	if (fd >= 0)
		close(fd);
	return w->written;
}

/* ---- acceptance criteria 21-33 --------------------------------------- */

static void test_c21_no_secrets_section_gives_empty_set(void **state)
{
	struct ub_secrets s;

	expect_ok("[device]\ndata_path = \"x\"\n", &dz_none, &s);
	assert_int_equal(s.count, 0);
	assert_null(s.items);
	assert_null(ub_secrets_find(&s, "anything"));
	ub_secrets_free(&s);
	/* An empty [secrets] table is no secrets either. */
	expect_ok("[secrets]\n", &dz_none, &s);
	assert_int_equal(s.count, 0);
	ub_secrets_free(&s);
}

/* The envelope of "ok" under 32 x 0x11 with AAD "api" and the nonce
 * "n00008981014": a nonce found by search so that ciphertext and tag are
 * printable ASCII and the envelope can travel in an environment variable
 * with the default plaintext encoding. */
static void ascii_envelope(const unsigned char *kek, unsigned char *env,
			   size_t cap)
{
	static const char nonce[] = "n00008981014";
	size_t n = 2 + UB_KEK_OVERHEAD;
	struct ub_err err;

	assert_true(cap > n);
	assert_int_equal(ub_kek_seal(kek, 32, "api", 3,
				     (const unsigned char *)nonce,
				     (const unsigned char *)"ok", 2, env, &err),
			 0);
	for (size_t j = 0; j < n; j++)
		assert_true(env[j] >= 0x20 && env[j] <= 0x7e);
	env[n] = '\0';
}

static void
test_c22_inline_base64_kek_and_env_secret_encrypted_by_it(void **state)
{
	unsigned char kek[32], env[64];
	const struct ub_secret *k, *a;
	struct ub_secrets s;
	char *toml;

	fill_kek(kek, 0x11);
	ascii_envelope(kek, env, sizeof(env));
	setenv("UB_TEST_ENVELOPE", (const char *)env, 1);
	toml = fmt("[secrets.kek]\n"
		   "source.inline = \"%s\"\n"
		   "encoding = \"base64\"\n"
		   "\n"
		   "[secrets.api]\n"
		   "source.env = \"UB_TEST_ENVELOPE\"\n"
		   "encrypted_by.ref = \"kek\"\n",
		   kek11_b64);
	expect_ok(toml, &dz_all, &s);
	assert_int_equal(s.count, 2);
	k = must_find(&s, "kek");
	assert_string_equal(k->name, "kek");
	assert_int_equal(k->source, UB_SECRET_SOURCE_INLINE);
	assert_null(k->source_arg);
	assert_int_equal(k->encoding, UB_SECRET_ENCODING_BASE64);
	assert_null(k->encrypted_by);
	assert_int_equal(k->len, 32);
	assert_memory_equal(k->value, kek, 32);
	a = must_find(&s, "api");
	assert_int_equal(a->source, UB_SECRET_SOURCE_ENV);
	assert_string_equal(a->source_arg, "UB_TEST_ENVELOPE");
	assert_int_equal(a->encoding, UB_SECRET_ENCODING_PLAINTEXT);
	assert_string_equal(a->encrypted_by, "kek");
	assert_int_equal(a->len, 2);
	assert_memory_equal(a->value, "ok", 2);
	/* Definitions keep their file order and where they were written. */
	assert_ptr_equal(&s.items[0], k);
	assert_int_equal(k->pos.file, 0);
	assert_int_equal(k->pos.line, 1);
	assert_int_equal(a->pos.line, 5);
	ub_secrets_free(&s);
	free(toml);
}

static void test_c23_invalid_base64_is_rejected(void **state)
{
	expect_error("[secrets.api]\n"
		     "source.inline = \"not base64!\"\n"
		     "encoding = \"base64\"\n",
		     &dz_inline,
		     "test.toml:1:10: secrets.api: failed to decode: invalid "
		     "base64: invalid byte 0x20 at offset 3");
	/* Also for an encrypted secret (its envelope). */
	expect_error("[secrets.kek]\n"
		     "source.inline = \"ERERERERERERERERERERERERERERERERERERERE"
		     "RERERE=\"\n"
		     "encoding = \"base64\"\n"
		     "[secrets.api]\n"
		     "source.inline = \"AAAA*AAA\"\n"
		     "encoding = \"base64\"\n"
		     "encrypted_by.ref = \"kek\"\n",
		     &dz_inline, "invalid base64");
}

static void test_c24_trailing_whitespace_is_stripped_before_base64(void **state)
{
	unsigned char xts[64], kek[32];
	char xts_b64[89], kek_b64[45], file[64];
	const struct ub_secret *x, *k;
	struct ub_secrets s;
	char *toml;

	for (int i = 0; i < 64; i++)
		xts[i] = (unsigned char)(0x40 + i);
	fill_kek(kek, 0x5a);
	ub_base64_encode(xts, sizeof(xts), xts_b64);
	ub_base64_encode(kek, sizeof(kek), kek_b64);
	snprintf(file, sizeof(file), "%s\n", kek_b64);
	write_file("kek.b64", file, strlen(file), 0600);
	/* Relative source.file: joined to the configuration directory. */
	toml = fmt("[secrets.xts]\n"
		   "source.inline = \"%s\\r\\n \"\n"
		   "encoding = \"base64\"\n"
		   "[secrets.kek]\n"
		   "source.file = \"kek.b64\"\n"
		   "encoding = \"base64\"\n",
		   xts_b64);
	expect_ok(toml, &dz_all, &s);
	x = must_find(&s, "xts");
	assert_int_equal(x->len, 64);
	assert_memory_equal(x->value, xts, 64);
	k = must_find(&s, "kek");
	assert_int_equal(k->len, 32);
	assert_memory_equal(k->value, kek, 32);
	ub_secrets_free(&s);
	free(toml);
}

static void test_c25_secrets_not_a_table_is_rejected(void **state)
{
	expect_error("secrets = 'bad'\n", &dz_none,
		     "test.toml:1:11: [secrets] must be a table");
	expect_error("secrets = [1]\n", &dz_none, "[secrets] must be a table");
}

static void test_c26_unknown_key_in_secret_is_rejected(void **state)
{
	expect_error("[secrets.api]\n"
		     "source.env = \"X\"\n"
		     "foo = 1\n",
		     &dz_all,
		     "test.toml:3:1: secrets.api.foo: secrets: unknown field "
		     "`foo`, expected one of `source`, `encoding`, "
		     "`encrypted_by`");
	/* Unknown keys deeper down too. */
	expect_error("[secrets.api]\n"
		     "source.env = \"X\"\n"
		     "encrypted_by = { ref = \"k\", extra = true }\n",
		     &dz_all, "unknown field `extra`");
}

static void test_c27_inline_without_kek_or_flag_is_rejected(void **state)
{
	static const char toml[] = "[secrets.api]\n"
				   "source.inline = \"s3cr3t-value\"\n";
	const struct ub_danger_zone off = {.allow_inline_plaintext_secrets =
					       true};
	struct ub_secrets s;
	struct ub_err err;

	expect_error(toml, &dz_none,
		     "test.toml:1:10: secrets.api: inline secret source "
		     "requires a KEK unless "
		     "danger_zone.allow_inline_plaintext_secrets is enabled");
	/* The flag counts only with enabled = true. */
	expect_error(toml, &off, "inline secret source requires a KEK");
	assert_int_not_equal(load(toml, &dz_none, &s, &err), 0);
	assert_null(strstr(err.msg, "s3cr3t"));
	expect_ok(toml, &dz_inline, &s);
	assert_int_equal(must_find(&s, "api")->len, 12);
	assert_memory_equal(must_find(&s, "api")->value, "s3cr3t-value", 12);
	ub_secrets_free(&s);
}

static void
test_c28_regular_file_needs_flag_and_returns_exact_content(void **state)
{
	static const char content[] =
	    "exact content\n\twith trailing newline\n";
	const struct ub_danger_zone off = {.allow_secret_over_regular_file =
					       true};
	const struct ub_secret *it;
	char path[PATH_MAX];
	struct ub_secrets s;
	char *toml;

	write_file("secret.bin", content, strlen(content), 0600);
	path_in(path, sizeof(path), "secret.bin");
	toml = fmt("[secrets.api]\nsource.file = \"%s\"\n", path);
	expect_error(toml, &dz_none,
		     "test.toml:1:10: secrets.api: regular file cannot be used "
		     "as source unless "
		     "danger_zone.allow_secret_over_regular_file is enabled.");
	expect_error(toml, &off, "regular file cannot be used as source");
	expect_ok(toml, &dz_file, &s);
	it = must_find(&s, "api");
	assert_int_equal(it->source, UB_SECRET_SOURCE_FILE);
	assert_string_equal(it->source_arg, path);
	assert_int_equal(it->len, strlen(content));
	assert_memory_equal(it->value, content, strlen(content));
	ub_secrets_free(&s);
	free(toml);
}

static void test_c29_kek_from_fifo_decrypts_inline_envelope(void **state)
{
	static const char plain[] = "the secret behind a pipe-borne KEK";
	unsigned char kek[32];
	struct fifo_writer w;
	const struct ub_secret *it;
	struct ub_secrets s;
	char *b64, *toml;

	for (int i = 0; i < 32; i++)
		kek[i] = (unsigned char)(0xa0 + i);
	b64 = seal_b64(kek, 32, "disk-key", plain, strlen(plain));
	fifo_start(&w, "kek.pipe", kek, sizeof(kek));
	toml = fmt("[secrets.config-kek]\n"
		   "source.file = \"%s\"\n"
		   "\n"
		   "[secrets.disk-key]\n"
		   "source.inline = \"%s\"\n"
		   "encoding = \"base64\"\n"
		   "encrypted_by.ref = \"config-kek\"\n",
		   w.path, b64);
	expect_ok(toml, &dz_none, &s);
	assert_int_equal(fifo_finish(&w), 32);
	it = must_find(&s, "config-kek");
	assert_int_equal(it->len, 32);
	assert_memory_equal(it->value, kek, 32);
	it = must_find(&s, "disk-key");
	assert_int_equal(it->len, strlen(plain));
	assert_memory_equal(it->value, plain, strlen(plain));
	ub_secrets_free(&s);
	free(toml);
	free(b64);
}

static void test_c30_mutual_and_self_references_are_circular(void **state)
{
	expect_error("[secrets.a]\n"
		     "source.inline = \"AAAA\"\n"
		     "encrypted_by.ref = \"b\"\n"
		     "[secrets.b]\n"
		     "source.inline = \"BBBB\"\n"
		     "encrypted_by.ref = \"a\"\n",
		     &dz_none,
		     "circular secret references detected: 'a' -> 'b' -> "
		     "'a'");
	expect_error("[secrets.self]\n"
		     "source.inline = \"AAAA\"\n"
		     "encrypted_by.ref = \"self\"\n",
		     &dz_none,
		     "circular secret references detected: 'self' -> 'self'");
	/* A chain that ends in a cycle; the cycle members are never loaded
	 * (an env source without the flag would fail if it were). */
	expect_error("[secrets.leaf]\n"
		     "source.inline = \"AAAA\"\n"
		     "encrypted_by.ref = \"x\"\n"
		     "[secrets.x]\n"
		     "source.env = \"UB_TEST_SECRET\"\n"
		     "encrypted_by.ref = \"y\"\n"
		     "[secrets.y]\n"
		     "source.env = \"UB_TEST_SECRET\"\n"
		     "encrypted_by.ref = \"x\"\n",
		     &dz_none,
		     "circular secret references detected: 'x' -> 'y' -> "
		     "'x'");
}

static void test_c31_undefined_kek_reference_is_reported(void **state)
{
	expect_error("[secrets.api]\n"
		     "source.inline = \"AAAA\"\n"
		     "encrypted_by.ref = \"missing\"\n",
		     &dz_none,
		     "test.toml:1:10: secrets.api: missing KEK reference "
		     "'missing'");
}

static void test_c32_more_than_8192_decoded_bytes_is_rejected(void **state)
{
	static const char want[] = "secrets.api: secret data exceeds maximum "
				   "allowed size of 8192 bytes";
	unsigned char kek[32];
	char *big, *b64, *toml;
	struct ub_secrets s;

	big = malloc(8194);
	b64 = malloc(ub_base64_encoded_len(8193) + 1);
	assert_non_null(big);
	assert_non_null(b64);
	memset(big, 'a', 8193);
	big[8193] = '\0';
	/* Plaintext inline: 8193 bytes. */
	toml = fmt("[secrets.api]\nsource.inline = \"%s\"\n", big);
	expect_error(toml, &dz_inline, want);
	free(toml);
	/* 8192 bytes are fine. */
	big[8192] = '\0';
	toml = fmt("[secrets.api]\nsource.inline = \"%s\"\n", big);
	expect_ok(toml, &dz_inline, &s);
	assert_int_equal(must_find(&s, "api")->len, 8192);
	ub_secrets_free(&s);
	free(toml);
	/* Base64: the limit is on decoded bytes. */
	ub_base64_encode((unsigned char *)big, 8193, b64);
	toml = fmt("[secrets.api]\nsource.inline = \"%s\"\n"
		   "encoding = \"base64\"\n",
		   b64);
	expect_error(toml, &dz_inline, want);
	free(toml);
	/* Encrypted: the limit is on the envelope, before decryption. */
	fill_kek(kek, 0x11);
	free(b64);
	b64 = seal_b64(kek, 32, "api", big, 8193 - UB_KEK_OVERHEAD);
	toml = fmt("[secrets.kek]\nsource.inline = \"%s\"\n"
		   "encoding = \"base64\"\n"
		   "[secrets.api]\nsource.inline = \"%s\"\n"
		   "encoding = \"base64\"\nencrypted_by.ref = \"kek\"\n",
		   kek11_b64, b64);
	expect_error(toml, &dz_inline, want);
	free(toml);
	free(b64);
	b64 = seal_b64(kek, 32, "api", big, 8192 - UB_KEK_OVERHEAD);
	toml = fmt("[secrets.kek]\nsource.inline = \"%s\"\n"
		   "encoding = \"base64\"\n"
		   "[secrets.api]\nsource.inline = \"%s\"\n"
		   "encoding = \"base64\"\nencrypted_by.ref = \"kek\"\n",
		   kek11_b64, b64);
	expect_ok(toml, &dz_inline, &s);
	assert_int_equal(must_find(&s, "api")->len, 8164);
	assert_memory_equal(must_find(&s, "api")->value, big, 8164);
	ub_secrets_free(&s);
	free(toml);
	free(b64);
	free(big);
}

static void test_c33_env_secret_needs_flag_and_returns_value(void **state)
{
	static const char toml[] = "[secrets.api]\n"
				   "source.env = \"UB_TEST_SECRET\"\n";
	const struct ub_danger_zone off = {.allow_env_secrets = true};
	const struct ub_danger_zone on = {.enabled = true,
					  .allow_env_secrets = true};
	struct ub_secrets s;

	setenv("UB_TEST_SECRET", "env-value-123", 1);
	expect_error(toml, &dz_none,
		     "secrets.api: source.env requires "
		     "danger_zone.allow_env_secrets to be enabled "
		     "(environment variables persist in /proc/PID/environ)");
	expect_error(toml, &off,
		     "source.env requires danger_zone.allow_env_secrets");
	/* Needed for an encrypted env secret too. */
	expect_error("[secrets.kek]\n"
		     "source.inline = \"AAAA\"\n"
		     "encrypted_by.ref = \"api\"\n"
		     "[secrets.api]\n"
		     "source.env = \"UB_TEST_SECRET\"\n"
		     "encrypted_by.ref = \"other\"\n"
		     "[secrets.other]\n"
		     "source.env = \"UB_TEST_SECRET\"\n",
		     &dz_none,
		     "secrets.other: source.env requires "
		     "danger_zone.allow_env_secrets");
	expect_ok(toml, &on, &s);
	assert_int_equal(must_find(&s, "api")->len, 13);
	assert_memory_equal(must_find(&s, "api")->value, "env-value-123", 13);
	ub_secrets_free(&s);
	/* The variable stays in the environment. */
	assert_non_null(getenv("UB_TEST_SECRET"));
}

/* ---- §9.4 test vector ------------------------------------------------ */

static char *vector_toml(const char *name)
{
	return fmt("[secrets.kek]\n"
		   "source.inline = \"%s\"\n"
		   "encoding = \"base64\"\n"
		   "\n"
		   "[secrets.%s]\n"
		   "source.inline = \"%s\"\n"
		   "encoding = \"base64\"\n"
		   "encrypted_by.ref = \"kek\"\n",
		   kek11_b64, name, vector_b64);
}

static void test_spec_vector_decrypts_under_its_own_name(void **state)
{
	unsigned char want[64];
	const struct ub_secret *it;
	struct ub_secrets s;
	char *toml = vector_toml("xts-key");

	for (int i = 0; i < 64; i++)
		want[i] = (unsigned char)i;
	expect_ok(toml, &dz_inline, &s);
	it = must_find(&s, "xts-key");
	assert_int_equal(it->len, 64);
	assert_memory_equal(it->value, want, 64);
	ub_secrets_free(&s);
	free(toml);
}

static void test_spec_vector_fails_under_another_name(void **state)
{
	char *toml = vector_toml("xts_key");

	expect_error(toml, &dz_inline,
		     "test.toml:5:10: secrets.xts_key: failed to decrypt using "
		     "KEK 'kek': Failed to decrypt data: authentication "
		     "failed");
	free(toml);
}

static void test_spec_vector_seals_to_the_same_envelope(void **state)
{
	static const unsigned char nonce[12] = {
	    0x22, 0x22, 0x22, 0x22, 0x22, 0x22,
	    0x22, 0x22, 0x22, 0x22, 0x22, 0x22,
	};
	unsigned char kek[32], pt[64], env[92];
	char b64[128];
	struct ub_err err;

	fill_kek(kek, 0x11);
	for (int i = 0; i < 64; i++)
		pt[i] = (unsigned char)i;
	assert_int_equal(
	    ub_kek_seal(kek, 32, "xts-key", 7, nonce, pt, 64, env, &err), 0);
	ub_base64_encode(env, sizeof(env), b64);
	assert_string_equal(b64, vector_b64);
}

/* ---- further rules --------------------------------------------------- */

static void test_kek_chain_of_depth_3_resolves_in_dependency_order(void **state)
{
	static const char plain[] = "data at the end of the chain";
	unsigned char root[32], k2[32], k3[32];
	struct fifo_writer w;
	struct ub_secrets s;
	char *k2_b64, *k3_b64, *data_b64, *toml;

	fill_kek(root, 0x31);
	fill_kek(k2, 0x32);
	fill_kek(k3, 0x33);
	k2_b64 = seal_b64(root, 32, "k2", k2, 32);
	k3_b64 = seal_b64(k2, 32, "k3", k3, 32);
	data_b64 = seal_b64(k3, 32, "data", plain, strlen(plain));
	/* Defined leaf first, root last; the root KEK comes from a FIFO
	 * written once, so it must be read exactly once. */
	fifo_start(&w, "root.pipe", root, sizeof(root));
	toml = fmt("[secrets.data]\n"
		   "source.inline = \"%s\"\nencoding = \"base64\"\n"
		   "encrypted_by.ref = \"k3\"\n"
		   "[secrets.k3]\n"
		   "source.inline = \"%s\"\nencoding = \"base64\"\n"
		   "encrypted_by.ref = \"k2\"\n"
		   "[secrets.k2]\n"
		   "source.inline = \"%s\"\nencoding = \"base64\"\n"
		   "encrypted_by.ref = \"root\"\n"
		   "[secrets.root]\n"
		   "source.file = \"root.pipe\"\n",
		   data_b64, k3_b64, k2_b64);
	expect_ok(toml, &dz_none, &s);
	assert_int_equal(fifo_finish(&w), 32);
	assert_int_equal(s.count, 4);
	assert_memory_equal(must_find(&s, "k2")->value, k2, 32);
	assert_memory_equal(must_find(&s, "k3")->value, k3, 32);
	assert_int_equal(must_find(&s, "data")->len, strlen(plain));
	assert_memory_equal(must_find(&s, "data")->value, plain, strlen(plain));
	ub_secrets_free(&s);
	free(toml);
	free(data_b64);
	free(k3_b64);
	free(k2_b64);
}

static void test_file_source_reads_at_most_the_cap(void **state)
{
	size_t b64_len = ub_base64_encoded_len(8192); /* 10924 */
	size_t total = UB_SECRET_FILE_READ_CAP + 100;
	unsigned char *raw;
	char *file;
	struct ub_secrets s;
	char path[PATH_MAX];
	char *toml;

	assert_int_equal(UB_SECRET_FILE_READ_CAP, 10929);
	raw = malloc(8192);
	file = malloc(total + 1);
	assert_non_null(raw);
	assert_non_null(file);
	for (int i = 0; i < 8192; i++)
		raw[i] = (unsigned char)(i * 7);
	ub_base64_encode(raw, 8192, file);
	/* Whitespace up to the cap, garbage right after it: never read. */
	memset(file + b64_len, '\n', UB_SECRET_FILE_READ_CAP - b64_len);
	memset(file + UB_SECRET_FILE_READ_CAP, '*', 100);
	write_file("big.b64", file, total, 0600);
	path_in(path, sizeof(path), "big.b64");
	toml = fmt("[secrets.api]\nsource.file = \"%s\"\n"
		   "encoding = \"base64\"\n",
		   path);
	expect_ok(toml, &dz_file, &s);
	assert_int_equal(must_find(&s, "api")->len, 8192);
	assert_memory_equal(must_find(&s, "api")->value, raw, 8192);
	ub_secrets_free(&s);
	/* One byte of garbage inside the cap is seen: the newlines before
	 * it are no longer trailing, so the first of them is rejected. */
	file[UB_SECRET_FILE_READ_CAP - 1] = '*';
	write_file("big.b64", file, total, 0600);
	expect_error(toml, &dz_file,
		     "invalid base64: invalid byte 0x0a at offset 10924");
	/* Plaintext: the first 10929 bytes are read, over the limit. */
	free(toml);
	toml = fmt("[secrets.api]\nsource.file = \"%s\"\n", path);
	expect_error(toml, &dz_file, "exceeds maximum allowed size");
	free(toml);
	free(file);
	free(raw);
}

static void test_unused_secrets_are_still_validated(void **state)
{
	unsetenv("UB_TEST_SECRET");
	/* Nothing references these; each still fails. */
	expect_error("[secrets.unused]\nsource.env = \"UB_TEST_SECRET\"\n",
		     &dz_none, "secrets.unused: source.env requires");
	expect_error("[secrets.unused]\nsource.env = \"UB_TEST_SECRET\"\n",
		     &dz_all,
		     "secrets.unused: failed to read environment variable "
		     "'UB_TEST_SECRET': environment variable not found");
	expect_error("[secrets.unused]\nsource.inline = \"x\"\n", &dz_none,
		     "secrets.unused: inline secret source requires a KEK");
	expect_error("[secrets.unused]\nsource.inline = \"x\"\n"
		     "encoding = \"base64\"\n",
		     &dz_inline, "secrets.unused: failed to decode");
}

static void test_missing_kek_check_precedes_any_load(void **state)
{
	/* "first" would fail to load (env without the flag), but the KEK
	 * check covers every secret before anything is loaded. */
	expect_error("[secrets.first]\n"
		     "source.env = \"UB_TEST_SECRET\"\n"
		     "[secrets.second]\n"
		     "source.inline = \"AAAA\"\n"
		     "encrypted_by.ref = \"nope\"\n",
		     &dz_none, "secrets.second: missing KEK reference 'nope'");
}

static void test_error_choice_is_deterministic(void **state)
{
	/* Three faulty secrets: "a" waits for its KEK "k" (defined last), so
	 * "b" is the first ready one in definition order and its error is
	 * the one reported, every time. */
	static const char toml[] = "[secrets.a]\n"
				   "source.inline = \"AAAA\"\n"
				   "encrypted_by.ref = \"k\"\n"
				   "[secrets.b]\n"
				   "source.env = \"UB_TEST_SECRET\"\n"
				   "[secrets.c]\n"
				   "source.inline = \"plain\"\n"
				   "[secrets.k]\n"
				   "source.inline = \"short\"\n"
				   "encoding = \"base64\"\n";

	for (int i = 0; i < 5; i++)
		expect_error(toml, &dz_none,
			     "test.toml:4:10: secrets.b: source.env requires");
	/* With env secrets allowed, "c" is next in line. */
	setenv("UB_TEST_SECRET", "v", 1);
	expect_error(toml,
		     &(struct ub_danger_zone){.enabled = true,
					      .allow_env_secrets = true},
		     "secrets.c: inline secret source requires a KEK");
	/* Then the KEK, and only then its dependant. */
	expect_error(toml, &dz_all, "secrets.k: failed to decode");
}

static void test_base64_with_embedded_whitespace_is_rejected(void **state)
{
	expect_error("[secrets.api]\n"
		     "source.inline = \"Zm9v Zm9v\"\n"
		     "encoding = \"base64\"\n",
		     &dz_inline,
		     "invalid base64: invalid byte 0x20 at offset 4");
	expect_error("[secrets.api]\n"
		     "source.inline = \"Zm9v\\nZm9v\\n\"\n"
		     "encoding = \"base64\"\n",
		     &dz_inline,
		     "invalid base64: invalid byte 0x0a at offset 4");
	/* Leading whitespace is not stripped either. */
	expect_error("[secrets.api]\n"
		     "source.inline = \" Zm9v\"\n"
		     "encoding = \"base64\"\n",
		     &dz_inline,
		     "invalid base64: invalid byte 0x20 at offset 0");
}

static void test_kek_of_wrong_length_is_reported(void **state)
{
	unsigned char kek[33];
	char kek_b64[64], *env_b64, *toml;

	fill_kek(kek, 0x11);
	kek[32] = 0x11;
	env_b64 = seal_b64(kek, 32, "api", "x", 1);
	ub_base64_encode(kek, 31, kek_b64);
	toml = fmt("[secrets.kek]\nsource.inline = \"%s\"\n"
		   "encoding = \"base64\"\n"
		   "[secrets.api]\nsource.inline = \"%s\"\n"
		   "encoding = \"base64\"\nencrypted_by.ref = \"kek\"\n",
		   kek_b64, env_b64);
	expect_error(
	    toml, &dz_inline,
	    "secrets.api: failed to decrypt using KEK 'kek': Failed to "
	    "initialize cipher: key must be 32 bytes (got 31)");
	free(toml);
	ub_base64_encode(kek, 33, kek_b64);
	toml = fmt("[secrets.kek]\nsource.inline = \"%s\"\n"
		   "encoding = \"base64\"\n"
		   "[secrets.api]\nsource.inline = \"%s\"\n"
		   "encoding = \"base64\"\nencrypted_by.ref = \"kek\"\n",
		   kek_b64, env_b64);
	expect_error(toml, &dz_inline, "key must be 32 bytes (got 33)");
	free(toml);
	free(env_b64);
}

static void test_envelope_too_short_is_reported(void **state)
{
	unsigned char env[27] = {0};
	char b64[40], *toml;

	ub_base64_encode(env, sizeof(env), b64);
	toml = fmt("[secrets.kek]\nsource.inline = \"%s\"\n"
		   "encoding = \"base64\"\n"
		   "[secrets.api]\nsource.inline = \"%s\"\n"
		   "encoding = \"base64\"\nencrypted_by.ref = \"kek\"\n",
		   kek11_b64, b64);
	expect_error(
	    toml, &dz_inline,
	    "secrets.api: failed to decrypt using KEK 'kek': Failed to "
	    "decrypt data: ciphertext is too short to include nonce "
	    "and tag");
	free(toml);
}

static void test_empty_plaintext_envelope_opens(void **state)
{
	unsigned char kek[32];
	struct ub_secrets s;
	char *b64, *toml;

	fill_kek(kek, 0x11);
	b64 = seal_b64(kek, 32, "api", "", 0);
	toml = fmt("[secrets.kek]\nsource.inline = \"%s\"\n"
		   "encoding = \"base64\"\n"
		   "[secrets.api]\nsource.inline = \"%s\"\n"
		   "encoding = \"base64\"\nencrypted_by.ref = \"kek\"\n",
		   kek11_b64, b64);
	expect_ok(toml, &dz_inline, &s);
	assert_int_equal(must_find(&s, "api")->len, 0);
	assert_non_null(must_find(&s, "api")->value);
	ub_secrets_free(&s);
	free(toml);
	free(b64);
}

static void test_envelope_is_bound_to_its_secret_name(void **state)
{
	unsigned char kek[32];
	char *b64, *toml;

	fill_kek(kek, 0x11);
	b64 = seal_b64(kek, 32, "slot-a", "payload", 7);
	toml = fmt("[secrets.kek]\nsource.inline = \"%s\"\n"
		   "encoding = \"base64\"\n"
		   "[secrets.slot-b]\nsource.inline = \"%s\"\n"
		   "encoding = \"base64\"\nencrypted_by.ref = \"kek\"\n",
		   kek11_b64, b64);
	expect_error(toml, &dz_inline,
		     "secrets.slot-b: failed to decrypt using KEK 'kek': "
		     "Failed to decrypt data: authentication failed");
	free(toml);
	free(b64);
}

static void test_plaintext_envelope_can_come_from_a_file(void **state)
{
	unsigned char kek[32], env[7 + UB_KEK_OVERHEAD];
	struct ub_secrets s;
	struct ub_err err;
	char *toml;

	fill_kek(kek, 0x11);
	assert_int_equal(ub_kek_seal(kek, 32, "api", 3, NULL,
				     (const unsigned char *)"payload", 7, env,
				     &err),
			 0);
	write_file("api.env", env, sizeof(env), 0600);
	toml = fmt("[secrets.kek]\nsource.inline = \"%s\"\n"
		   "encoding = \"base64\"\n"
		   "[secrets.api]\nsource.file = \"api.env\"\n"
		   "encrypted_by.ref = \"kek\"\n",
		   kek11_b64);
	expect_ok(toml, &dz_all, &s);
	assert_int_equal(must_find(&s, "api")->len, 7);
	assert_memory_equal(must_find(&s, "api")->value, "payload", 7);
	ub_secrets_free(&s);
	free(toml);
}

/* Runs a load with stderr redirected; returns what was logged (heap). */
static char *load_capturing_log(const char *toml,
				const struct ub_danger_zone *dz)
{
	enum ub_log_level old = ub_log_get_level();
	char path[PATH_MAX];
	struct ub_secrets s;
	struct ub_err err;
	char *log;
	int saved, fd, rc;
	ssize_t n;

	path_in(path, sizeof(path), "stderr.log");
	fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	assert_true(fd >= 0);
	fflush(stderr);
	saved = dup(2);
	assert_true(saved >= 0);
	assert_true(dup2(fd, 2) >= 0);
	ub_log_set_level(UB_LOG_WARN);
	rc = load(toml, dz, &s, &err);
	fflush(stderr);
	ub_log_set_level(old);
	dup2(saved, 2);
	close(saved);
	if (rc)
		fail_msg("unexpected error: %s", err.msg);
	ub_secrets_free(&s);
	log = calloc(1, 4096);
	assert_non_null(log);
	n = pread(fd, log, 4095, 0);
	assert_true(n >= 0);
	close(fd);
	unlink(path);
	return log;
}

static void test_regular_secret_file_readable_by_others_warns(void **state)
{
	char path[PATH_MAX], want[PATH_MAX + 64], *toml, *log;

	write_file("loose", "value", 5, 0644);
	path_in(path, sizeof(path), "loose");
	toml = fmt("[secrets.api]\nsource.file = \"loose\"\n");
	log = load_capturing_log(toml, &dz_file);
	snprintf(want, sizeof(want),
		 "secret file '%s' is accessible to other users (mode 0644)",
		 path);
	if (!strstr(log, want))
		fail_msg("log '%s' lacks '%s'", log, want);
	assert_null(strstr(log, "value"));
	free(log);
	/* Group-only bits count too; 0600 is quiet. */
	write_file("loose", "value", 5, 0640);
	log = load_capturing_log(toml, &dz_file);
	assert_non_null(strstr(log, "(mode 0640)"));
	free(log);
	write_file("loose", "value", 5, 0600);
	log = load_capturing_log(toml, &dz_file);
	assert_null(strstr(log, "accessible"));
	free(log);
	free(toml);
}

static void test_missing_file_reports_os_error(void **state)
{
	char path[PATH_MAX], want[PATH_MAX + 128];
	char *toml;

	path_in(path, sizeof(path), "absent");
	toml = fmt("[secrets.api]\nsource.file = \"absent\"\n");
	snprintf(want, sizeof(want),
		 "test.toml:1:10: secrets.api: failed to open '\"%s\"': No "
		 "such file or directory (os error 2)",
		 path);
	expect_error(toml, &dz_all, want);
	free(toml);
}

static void test_directory_source_fails_to_read(void **state)
{
	char path[PATH_MAX], want[PATH_MAX + 128];
	char *toml;

	path_in(path, sizeof(path), "dir");
	assert_int_equal(mkdir(path, 0700), 0);
	toml = fmt("[secrets.api]\nsource.file = \"%s\"\n", path);
	/* Not a regular file, so no flag is needed to get this far. */
	snprintf(want, sizeof(want),
		 "secrets.api: failed to read '\"%s\"': I/O error: Is a "
		 "directory (os error 21)",
		 path);
	expect_error(toml, &dz_none, want);
	free(toml);
}

static void test_char_device_is_accepted_without_flag(void **state)
{
	struct ub_secrets s;

	/* /dev/null: a character device, read to its (immediate) end. */
	expect_ok("[secrets.api]\nsource.file = \"/dev/null\"\n", &dz_none, &s);
	assert_int_equal(must_find(&s, "api")->len, 0);
	assert_string_equal(must_find(&s, "api")->source_arg, "/dev/null");
	ub_secrets_free(&s);
}

static void test_env_secret_unset_or_not_unicode(void **state)
{
	static const char toml[] = "[secrets.api]\n"
				   "source.env = \"UB_TEST_SECRET\"\n";

	unsetenv("UB_TEST_SECRET");
	expect_error(toml, &dz_all,
		     "secrets.api: failed to read environment variable "
		     "'UB_TEST_SECRET': environment variable not found");
	setenv("UB_TEST_SECRET", "caf\xc3", 1);
	expect_error(toml, &dz_all,
		     "secrets.api: failed to read environment variable "
		     "'UB_TEST_SECRET': environment variable was not valid "
		     "unicode");
	setenv("UB_TEST_SECRET", "\xed\xa0\x80", 1); /* a surrogate */
	expect_error(toml, &dz_all, "not valid unicode");
	setenv("UB_TEST_SECRET", "caf\xc3\xa9", 1);
	{
		struct ub_secrets s;

		expect_ok(toml, &dz_all, &s);
		assert_int_equal(must_find(&s, "api")->len, 5);
		ub_secrets_free(&s);
	}
}

static void test_structural_errors_are_mapper_errors(void **state)
{
	expect_error("[secrets.api]\nencoding = \"base64\"\n", &dz_all,
		     "test.toml:1:1: secrets.api: secrets: missing field "
		     "`source`");
	expect_error("[secrets.api]\nsource = {}\n", &dz_all,
		     "secrets.api.source: secrets: expected exactly one source "
		     "kind");
	expect_error("[secrets.api]\n"
		     "source = { env = \"A\", inline = \"B\" }\n",
		     &dz_all, "found 2 keys");
	expect_error("[secrets.api]\nsource.pipe = \"/x\"\n", &dz_all,
		     "secrets.api.source: secrets: unknown variant `pipe`, "
		     "expected one of `file`, `inline`, `env`");
	expect_error("[secrets.api]\nsource = \"/x\"\n", &dz_all,
		     "secrets.api.source: secrets: invalid type: string, "
		     "expected a table");
	expect_error("[secrets.api]\nsource.file = 5\n", &dz_all,
		     "secrets.api.source.file: secrets: invalid type: integer "
		     "`5`, expected a string");
	expect_error("[secrets.api]\nsource.inline = true\n", &dz_all,
		     "secrets.api.source.inline: secrets: invalid type: "
		     "boolean `true`, expected a string");
	expect_error("[secrets.api]\nsource.env = \"X\"\nencoding = \"hex\"\n",
		     &dz_all,
		     "secrets.api.encoding: secrets: unknown variant `hex`, "
		     "expected one of `plaintext`, `base64`");
	expect_error("[secrets.api]\nsource.env = \"X\"\n"
		     "encrypted_by = \"kek\"\n",
		     &dz_all,
		     "secrets.api.encrypted_by: secrets: invalid type");
	expect_error("[secrets.api]\nsource.env = \"X\"\n"
		     "encrypted_by = {}\n",
		     &dz_all, "missing field `ref`");
	expect_error("[secrets]\napi = 5\n", &dz_all,
		     "secrets.api: secrets: invalid type: integer `5`, "
		     "expected a table");
}

static void test_errors_never_show_secret_values(void **state)
{
	struct ub_secrets s;
	struct ub_err err;

	/* A value given where a table reference is expected. */
	assert_int_not_equal(load("[secrets.api]\n"
				  "source.inline = \"hunter2hunter2\"\n"
				  "encrypted_by = \"hunter2hunter2\"\n",
				  &dz_all, &s, &err),
			     0);
	assert_null(strstr(err.msg, "hunter2"));
	/* A failing decryption. */
	assert_int_not_equal(load("[secrets.kek]\n"
				  "source.inline = \"hunter2hunter2hunter2"
				  "hunter2hunt\"\n"
				  "[secrets.api]\n"
				  "source.inline = \"hunter2hunter2hunter2"
				  "hunter2hunter2\"\n"
				  "encrypted_by.ref = \"kek\"\n",
				  &dz_all, &s, &err),
			     0);
	assert_non_null(strstr(err.msg, "authentication failed"));
	assert_null(strstr(err.msg, "hunter2"));
	/* Non-zero unused base64 bits: the symbol is not shown. */
	assert_int_not_equal(load("[secrets.api]\n"
				  "source.inline = \"Zm9=\"\n"
				  "encoding = \"base64\"\n",
				  &dz_all, &s, &err),
			     0);
	assert_null(strstr(err.msg, "Zm9"));
}

static void test_quoted_names_and_find(void **state)
{
	struct ub_secrets s;

	expect_ok("[secrets.\"my key\"]\nsource.inline = \"v1\"\n"
		  "[secrets.other]\nsource.inline = \"v2\"\n",
		  &dz_inline, &s);
	assert_int_equal(s.count, 2);
	assert_memory_equal(must_find(&s, "my key")->value, "v1", 2);
	assert_memory_equal(must_find(&s, "other")->value, "v2", 2);
	assert_null(ub_secrets_find(&s, "my"));
	ub_secrets_free(&s);
	ub_secrets_free(&s); /* a freed set is empty: freeing again is fine */
	expect_error("[secrets.\"my key\"]\nsource.inline = \"v1\"\n", &dz_none,
		     "secrets.\"my key\": inline secret source");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)
	    T(test_c21_no_secrets_section_gives_empty_set),
	    T(test_c22_inline_base64_kek_and_env_secret_encrypted_by_it),
	    T(test_c23_invalid_base64_is_rejected),
	    T(test_c24_trailing_whitespace_is_stripped_before_base64),
	    T(test_c25_secrets_not_a_table_is_rejected),
	    T(test_c26_unknown_key_in_secret_is_rejected),
	    T(test_c27_inline_without_kek_or_flag_is_rejected),
	    T(test_c28_regular_file_needs_flag_and_returns_exact_content),
	    T(test_c29_kek_from_fifo_decrypts_inline_envelope),
	    T(test_c30_mutual_and_self_references_are_circular),
	    T(test_c31_undefined_kek_reference_is_reported),
	    T(test_c32_more_than_8192_decoded_bytes_is_rejected),
	    T(test_c33_env_secret_needs_flag_and_returns_value),
	    T(test_spec_vector_decrypts_under_its_own_name),
	    T(test_spec_vector_fails_under_another_name),
	    T(test_spec_vector_seals_to_the_same_envelope),
	    T(test_kek_chain_of_depth_3_resolves_in_dependency_order),
	    T(test_file_source_reads_at_most_the_cap),
	    T(test_unused_secrets_are_still_validated),
	    T(test_missing_kek_check_precedes_any_load),
	    T(test_error_choice_is_deterministic),
	    T(test_base64_with_embedded_whitespace_is_rejected),
	    T(test_kek_of_wrong_length_is_reported),
	    T(test_envelope_too_short_is_reported),
	    T(test_empty_plaintext_envelope_opens),
	    T(test_envelope_is_bound_to_its_secret_name),
	    T(test_plaintext_envelope_can_come_from_a_file),
	    T(test_regular_secret_file_readable_by_others_warns),
	    T(test_missing_file_reports_os_error),
	    T(test_directory_source_fails_to_read),
	    T(test_char_device_is_accepted_without_flag),
	    T(test_env_secret_unset_or_not_unicode),
	    T(test_structural_errors_are_mapper_errors),
	    T(test_errors_never_show_secret_values),
	    T(test_quoted_names_and_find),
#undef T
	};

	signal(SIGPIPE, SIG_IGN);
	return cmocka_run_group_tests(tests, group_setup, NULL);
}
