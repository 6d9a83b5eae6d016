/* Key-encryption cipher (storage.md §4.2, §4.3): acceptance criteria
 * 37-46, the §10.3 AES-256-GCM vectors, tampering, wrong AAD and keys,
 * every error text, the archive KEK and the UTF-8 rules of credentials.
 * Every test also checks that the secure heap is back to its start value,
 * which LeakSanitizer cannot see. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <openssl/crypto.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "crypto/kek.h"
#include "crypto/key_wrap.h"
#include "crypto/xts.h"
#include "util/secmem.h"

/* §10.3: KEK 32 x 0x11, nonce 12 x 0x22, AAD "test-aad". */
static const char vec32_hex[] =
    "222222222222222222222222bd5dade36a6535f54f957496e20c437fb5396748c02b"
    "06e1f8e5a042a34bcfa9fee2c32dfcfc842dc700986061d431b0";
static const char vec32_b64[] =
    "IiIiIiIiIiIiIiIivV2t42plNfVPlXSW4gxDf7U5Z0jAKwbh+OWgQqNLz6n+4sMt/PyEL"
    "ccAmGBh1DGw";
static const char vec0_hex[] =
    "222222222222222222222222f30247ae78800854a35055c51a8c3520";

#define VEC_AAD "test-aad"

static const char msg_auth[] = "Failed to decrypt data: authentication failed";
static const char msg_short[] = "Failed to decrypt data: ciphertext is too "
				"short to include nonce and tag";

static size_t secure_used_before;

/* ---- helpers ---------------------------------------------------------- */

static void hex_to_bytes(const char *hex, unsigned char *out, size_t n)
{
	size_t i;

	assert_int_equal(strlen(hex), 2 * n);
	for (i = 0; i < n; i++) {
		unsigned int v;

		assert_int_equal(sscanf(hex + 2 * i, "%2x", &v), 1);
		out[i] = (unsigned char)v;
	}
}

static void assert_contains(const char *s, const char *sub)
{
	if (!strstr(s, sub))
		fail_msg("\"%s\" does not contain \"%s\"", s, sub);
}

static void assert_not_contains(const char *s, const char *sub)
{
	if (strstr(s, sub))
		fail_msg("\"%s\" contains \"%s\"", s, sub);
}

static void assert_prefix(const char *s, const char *prefix)
{
	if (strncmp(s, prefix, strlen(prefix)) != 0)
		fail_msg("\"%s\" does not start with \"%s\"", s, prefix);
}

/* A KEK whose key is key_len bytes of fill (no key when key_len < 0) and
 * whose AAD is the string aad (NULL = no AAD). */
static void make_kw(struct ub_kw *kw, enum ub_kw_method m, int key_len,
		    unsigned char fill, const char *aad)
{
	unsigned char key[64];
	struct ub_err err = {{0}};

	assert_true(key_len <= (int)sizeof(key));
	memset(key, fill, sizeof(key));
	assert_int_equal(ub_kw_init(kw, m, key_len < 0 ? NULL : key,
				    key_len < 0 ? 0 : (size_t)key_len, aad,
				    aad ? strlen(aad) : 0, &err),
			 0);
}

static void make_vec_kw(struct ub_kw *kw)
{
	make_kw(kw, UB_KW_AES256_GCM, 32, 0x11, VEC_AAD);
}

/* Seals pt with the §10.3 KEK, AAD and fixed nonce into out (len + 28). */
static void seal_fixed(const unsigned char *pt, size_t len, unsigned char *out)
{
	unsigned char kek[32], nonce[12];
	struct ub_err err = {{0}};

	memset(kek, 0x11, sizeof(kek));
	memset(nonce, 0x22, sizeof(nonce));
	assert_int_equal(ub_kek_seal(kek, sizeof(kek), VEC_AAD, strlen(VEC_AAD),
				     nonce, pt, len, out, &err),
			 0);
}

/* Unwrap must fail with rc and a message equal to msg (exact) or starting
 * with it (prefix); the out pointers stay cleared. */
static void expect_unwrap_err(const struct ub_kw *kw, const unsigned char *in,
			      size_t len, int rc, const char *msg, int exact)
{
	struct ub_err err = {{0}};
	unsigned char *out = (unsigned char *)&err;
	size_t out_len = 99;

	assert_int_equal(ub_kw_unwrap(kw, in, len, &out, &out_len, &err), rc);
	assert_null(out);
	assert_int_equal(out_len, 0);
	if (exact)
		assert_string_equal(err.msg, msg);
	else
		assert_prefix(err.msg, msg);
}

static void expect_unwrap_ok(const struct ub_kw *kw, const unsigned char *in,
			     size_t len, const unsigned char *want,
			     size_t want_len)
{
	struct ub_err err = {{0}};
	unsigned char *out;
	size_t out_len;

	assert_int_equal(ub_kw_unwrap(kw, in, len, &out, &out_len, &err), 0);
	assert_non_null(out);
	assert_int_equal(out_len, want_len);
	if (want_len)
		assert_memory_equal(out, want, want_len);
	ub_secmem_free(out, out_len);
}

/* An XTS object with key1 = 32 x a, key2 = 32 x b. */
static struct ub_xts *xts_of(unsigned char a, unsigned char b)
{
	unsigned char key[64];
	struct ub_xts *x;
	struct ub_err err = {{0}};

	memset(key, a, 32);
	memset(key + 32, b, 32);
	assert_int_equal(ub_xts_new(&x, key, sizeof(key), &err), 0);
	return x;
}

/* ---- fixture ---------------------------------------------------------- */

/* Sets the secure heap up and lets OpenSSL's random generator and cipher
 * fetches take their lasting share before any test measures. */
static int group_setup(void **state)
{
	struct ub_xts *x = NULL;
	struct ub_err err;
	unsigned char b;

	ub_secmem_init();
	if (RAND_bytes(&b, 1) != 1 || ub_xts_new_random(&x, &err))
		return -1;
	ub_xts_free(x);
	return 0;
}

static int setup(void **state)
{
	secure_used_before = CRYPTO_secure_used();
	return 0;
}

static int teardown(void **state)
{
	if (CRYPTO_secure_used() != secure_used_before) {
		fprintf(stderr, "secure heap: %zu bytes in use, %zu before\n",
			CRYPTO_secure_used(), secure_used_before);
		return -1;
	}
	return 0;
}

/* ---- acceptance criteria ---------------------------------------------- */

static void test_c37_two_random_ciphers_differ_in_both_keys(void **state)
{
	struct ub_xts *a, *b;
	struct ub_err err = {{0}};

	assert_int_equal(ub_xts_new_random(&a, &err), 0);
	assert_int_equal(ub_xts_new_random(&b, &err), 0);
	assert_memory_not_equal(ub_xts_key(a), ub_xts_key(b), 32);
	assert_memory_not_equal(ub_xts_key(a) + 32, ub_xts_key(b) + 32, 32);
	/* The two halves of one object are drawn independently too. */
	assert_memory_not_equal(ub_xts_key(a), ub_xts_key(a) + 32, 32);
	assert_false(ub_xts_equal(a, b));
	ub_xts_free(a);
	ub_xts_free(b);
}

static void test_c38_none_wrap_returns_keys_unchanged(void **state)
{
	struct ub_kw none = {0}; /* zeroed: method none, no key, no AAD */
	struct ub_kw keyed;	 /* method none with a key: still identity */
	struct ub_xts *x = xts_of(0x01, 0x02), *y;
	struct ub_err err = {{0}};
	unsigned char *w1, *w2;
	size_t l1, l2;

	make_kw(&keyed, UB_KW_NONE, 32, 0x11, VEC_AAD);
	assert_int_equal(
	    ub_kw_wrap_xts_split(&none, x, &w1, &l1, &w2, &l2, &err), 0);
	assert_int_equal(l1, 32);
	assert_int_equal(l2, 32);
	assert_memory_equal(w1, ub_xts_key(x), 32);
	assert_memory_equal(w2, ub_xts_key(x) + 32, 32);
	assert_int_equal(
	    ub_kw_unwrap_xts_split(&keyed, w1, l1, w2, l2, &y, &err), 0);
	assert_true(ub_xts_equal(x, y));
	ub_xts_free(y);
	ub_secmem_free(w1, l1);
	ub_secmem_free(w2, l2);

	/* Generic data, including nothing at all. */
	expect_unwrap_ok(&none, (const unsigned char *)"abc", 3,
			 (const unsigned char *)"abc", 3);
	expect_unwrap_ok(&keyed, (const unsigned char *)"abc", 3,
			 (const unsigned char *)"abc", 3);
	expect_unwrap_ok(&none, NULL, 0, NULL, 0);
	assert_int_equal(
	    ub_kw_wrap(&keyed, (const unsigned char *)"xyz", 3, &w1, &l1, &err),
	    0);
	assert_int_equal(l1, 3);
	assert_memory_equal(w1, "xyz", 3);
	ub_secmem_free(w1, l1);

	ub_xts_free(x);
	ub_kw_free(&keyed);
}

static void test_c39_describe_prints_redacted_not_key_bytes(void **state)
{
	unsigned char key[32];
	char buf[256], small[16];
	struct ub_kw kw, bare = {0};
	struct ub_err err = {{0}};
	unsigned char *out = NULL;
	size_t i, out_len;
	int n;
	static const char *const leaks[] = {
	    "170", "187", "204", "aa", "bb", "cc", "AA", "BB", "CC", "qrvM",
	};

	for (i = 0; i < sizeof(key); i++)
		key[i] = (unsigned char[]){170, 187, 204}[i % 3];
	assert_int_equal(
	    ub_kw_init(&kw, UB_KW_AES256_GCM, key, sizeof(key), "", 0, &err),
	    0);
	n = ub_kw_describe(&kw, buf, sizeof(buf));
	assert_int_equal(n, (int)strlen(buf));
	assert_string_equal(buf, "KeyEncryptionCipher { method: aes256-gcm, "
				 "key: [REDACTED] (32 bytes), auth_data: 0 "
				 "bytes }");
	for (i = 0; i < sizeof(leaks) / sizeof(leaks[0]); i++)
		assert_not_contains(buf, leaks[i]);

	/* A failing unwrap with that key does not show it either. */
	assert_int_equal(
	    ub_kw_unwrap(&kw, key, sizeof(key), &out, &out_len, &err), -EINVAL);
	for (i = 0; i < sizeof(leaks) / sizeof(leaks[0]); i++)
		assert_not_contains(err.msg, leaks[i]);

	/* Truncation keeps the NUL and reports the full length. */
	assert_int_equal(ub_kw_describe(&kw, small, sizeof(small)), n);
	assert_int_equal(strlen(small), sizeof(small) - 1);

	n = ub_kw_describe(&bare, buf, sizeof(buf));
	assert_int_equal(n, (int)strlen(buf));
	assert_string_equal(buf, "KeyEncryptionCipher { method: none, key: "
				 "none, auth_data: none }");
	ub_kw_free(&kw);
}

static void test_c40_gcm_wrapped_keys_round_trip_and_rewrap(void **state)
{
	struct ub_kw kw;
	struct ub_xts *x, *y, *z;
	struct ub_err err = {{0}};
	unsigned char *a1, *a2, *b1, *b2;
	size_t la1, la2, lb1, lb2;

	make_vec_kw(&kw);
	assert_int_equal(ub_xts_new_random(&x, &err), 0);
	assert_int_equal(
	    ub_kw_wrap_xts_split(&kw, x, &a1, &la1, &a2, &la2, &err), 0);
	assert_int_equal(la1, 60);
	assert_int_equal(la2, 60);
	assert_int_equal(
	    ub_kw_unwrap_xts_split(&kw, a1, la1, a2, la2, &y, &err), 0);
	assert_true(ub_xts_equal(x, y));
	assert_memory_equal(ub_xts_key(x), ub_xts_key(y), 64);

	assert_int_equal(
	    ub_kw_wrap_xts_split(&kw, y, &b1, &lb1, &b2, &lb2, &err), 0);
	assert_memory_not_equal(a1, b1, 60);
	assert_memory_not_equal(a2, b2, 60);
	assert_int_equal(
	    ub_kw_unwrap_xts_split(&kw, b1, lb1, b2, lb2, &z, &err), 0);
	assert_true(ub_xts_equal(x, z));

	ub_secmem_free(a1, la1);
	ub_secmem_free(a2, la2);
	ub_secmem_free(b1, lb1);
	ub_secmem_free(b2, lb2);
	ub_xts_free(x);
	ub_xts_free(y);
	ub_xts_free(z);
	ub_kw_free(&kw);
}

static void test_c41_combined_none_round_trip_is_64_bytes(void **state)
{
	struct ub_kw kw = {0};
	struct ub_xts *x, *y;
	struct ub_err err = {{0}};
	unsigned char *w;
	size_t len;

	assert_int_equal(ub_xts_new_random(&x, &err), 0);
	assert_int_equal(ub_kw_wrap_xts(&kw, x, &w, &len, &err), 0);
	assert_int_equal(len, 64);
	assert_memory_equal(w, ub_xts_key(x), 64);
	assert_int_equal(ub_kw_unwrap_xts(&kw, w, len, &y, &err), 0);
	assert_true(ub_xts_equal(x, y));
	ub_secmem_free(w, len);
	ub_xts_free(y);

	/* Through GCM: 64 + 28 = 92 bytes (archive-remote.md §2.2). */
	make_vec_kw(&kw);
	assert_int_equal(ub_kw_wrap_xts(&kw, x, &w, &len, &err), 0);
	assert_int_equal(len, 92);
	assert_int_equal(ub_kw_unwrap_xts(&kw, w, len, &y, &err), 0);
	assert_true(ub_xts_equal(x, y));
	ub_secmem_free(w, len);
	ub_xts_free(y);
	ub_xts_free(x);
	ub_kw_free(&kw);
}

static void test_c42_combined_key_of_63_bytes_is_rejected(void **state)
{
	struct ub_kw none = {0}, gcm;
	struct ub_xts *x = (struct ub_xts *)&none;
	struct ub_err err = {{0}};
	unsigned char key[65], env[65 + 28];

	memset(key, 0x5a, sizeof(key));
	assert_int_equal(ub_kw_unwrap_xts(&none, key, 63, &x, &err), -EINVAL);
	assert_null(x);
	assert_string_equal(err.msg, "XTS key length must be exactly 64 bytes "
				     "(got 63 bytes)");
	assert_int_equal(ub_kw_unwrap_xts(&none, key, 65, &x, &err), -EINVAL);
	assert_string_equal(err.msg, "XTS key length must be exactly 64 bytes "
				     "(got 65 bytes)");
	assert_int_equal(ub_kw_unwrap_xts(&none, NULL, 0, &x, &err), -EINVAL);
	assert_string_equal(err.msg, "XTS key length must be exactly 64 bytes "
				     "(got 0 bytes)");

	/* The check applies after GCM unwrapping as well. */
	make_vec_kw(&gcm);
	seal_fixed(key, 63, env);
	assert_int_equal(ub_kw_unwrap_xts(&gcm, env, 63 + 28, &x, &err),
			 -EINVAL);
	assert_null(x);
	assert_string_equal(err.msg, "XTS key length must be exactly 64 bytes "
				     "(got 63 bytes)");
	ub_kw_free(&gcm);
}

static void test_c43_known_blobs_unwrap(void **state)
{
	static const char cred[] = "AKIAIOSFODNN7EXAMPLE";
	static const char psk[] = "0123456789abcdef-psk";
	struct ub_kw kw;
	struct ub_xts *x, *want;
	struct ub_err err = {{0}};
	unsigned char vec[60], pt[64], e1[60], e2[60], e64[92], ecred[48],
	    epsk[48];
	unsigned char *out;
	char *s;
	size_t len;

	make_vec_kw(&kw);
	hex_to_bytes(vec32_hex, vec, sizeof(vec));
	memset(pt, 0xaa, 32);
	expect_unwrap_ok(&kw, vec, sizeof(vec), pt, 32);

	/* Two individually wrapped halves. */
	memset(pt + 32, 0xbb, 32);
	seal_fixed(pt, 32, e1);
	assert_memory_equal(e1, vec, sizeof(vec));
	seal_fixed(pt + 32, 32, e2);
	assert_int_equal(ub_kw_unwrap_xts_split(&kw, e1, 60, e2, 60, &x, &err),
			 0);
	want = xts_of(0xaa, 0xbb);
	assert_true(ub_xts_equal(x, want));
	ub_xts_free(x);

	/* One combined key. */
	seal_fixed(pt, 64, e64);
	assert_int_equal(ub_kw_unwrap_xts(&kw, e64, sizeof(e64), &x, &err), 0);
	assert_true(ub_xts_equal(x, want));
	ub_xts_free(x);
	ub_xts_free(want);

	/* PSK secret: any length. */
	seal_fixed((const unsigned char *)psk, strlen(psk), epsk);
	assert_int_equal(
	    ub_kw_unwrap_psk(&kw, epsk, strlen(psk) + 28, &out, &len, &err), 0);
	assert_int_equal(len, strlen(psk));
	assert_memory_equal(out, psk, len);
	ub_secmem_free(out, len);

	/* Credential: a NUL-terminated string. */
	seal_fixed((const unsigned char *)cred, strlen(cred), ecred);
	assert_int_equal(ub_kw_unwrap_credential(&kw, ecred, strlen(cred) + 28,
						 &s, &len, &err),
			 0);
	assert_int_equal(len, strlen(cred));
	assert_string_equal(s, cred);
	ub_secmem_free(s, len + 1);
	ub_kw_free(&kw);
}

static void test_c44_tampered_tag_is_invalid_parameter(void **state)
{
	struct ub_kw kw;
	unsigned char vec[60];

	make_vec_kw(&kw);
	hex_to_bytes(vec32_hex, vec, sizeof(vec));
	vec[59] ^= 0x01;
	expect_unwrap_err(&kw, vec, sizeof(vec), -EINVAL, msg_auth, 1);
	ub_kw_free(&kw);
}

static void test_c44_ciphertext_of_10_bytes_is_too_short(void **state)
{
	struct ub_kw kw;
	unsigned char vec[60];

	make_vec_kw(&kw);
	hex_to_bytes(vec32_hex, vec, sizeof(vec));
	expect_unwrap_err(&kw, vec, 10, -EINVAL, msg_short, 1);
	expect_unwrap_err(&kw, vec, 27, -EINVAL, msg_short, 1);
	expect_unwrap_err(&kw, NULL, 0, -EINVAL, msg_short, 1);
	ub_kw_free(&kw);
}

static void test_c44_missing_key_is_exactly_key_is_required(void **state)
{
	struct ub_kw kw;
	struct ub_xts *x;
	struct ub_err err = {{0}};
	unsigned char vec[60];

	hex_to_bytes(vec32_hex, vec, sizeof(vec));
	make_kw(&kw, UB_KW_AES256_GCM, -1, 0, VEC_AAD);
	expect_unwrap_err(&kw, vec, sizeof(vec), -EINVAL, "Key is required", 1);
	/* Checked before the AAD and before the length. */
	ub_kw_free(&kw);
	make_kw(&kw, UB_KW_AES256_GCM, -1, 0, NULL);
	expect_unwrap_err(&kw, vec, 3, -EINVAL, "Key is required", 1);
	assert_int_equal(
	    ub_kw_unwrap_xts_split(&kw, vec, 60, vec, 60, &x, &err), -EINVAL);
	assert_string_equal(err.msg, "Key is required");
	ub_kw_free(&kw);
}

static void test_c44_missing_aad_is_not_empty_aad(void **state)
{
	struct ub_kw kw;
	unsigned char vec[60];

	hex_to_bytes(vec32_hex, vec, sizeof(vec));
	make_kw(&kw, UB_KW_AES256_GCM, 32, 0x11, NULL);
	expect_unwrap_err(&kw, vec, sizeof(vec), -EINVAL,
			  "Authentication data is required", 1);
	ub_kw_free(&kw);
	/* Empty AAD is accepted; it is simply the wrong AAD here. */
	make_kw(&kw, UB_KW_AES256_GCM, 32, 0x11, "");
	expect_unwrap_err(&kw, vec, sizeof(vec), -EINVAL, msg_auth, 1);
	ub_kw_free(&kw);
}

static void test_c44_key_not_32_bytes_fails_cipher_init(void **state)
{
	static const int lens[] = {0, 16, 31, 33, 64};
	struct ub_kw kw;
	unsigned char vec[60];
	size_t i;

	hex_to_bytes(vec32_hex, vec, sizeof(vec));
	for (i = 0; i < sizeof(lens) / sizeof(lens[0]); i++) {
		make_kw(&kw, UB_KW_AES256_GCM, lens[i], 0x11, VEC_AAD);
		expect_unwrap_err(&kw, vec, sizeof(vec), -EINVAL,
				  "Failed to initialize cipher: ", 0);
		/* Reported before the length of the input. */
		expect_unwrap_err(&kw, vec, 5, -EINVAL,
				  "Failed to initialize cipher: ", 0);
		ub_kw_free(&kw);
	}
}

static void test_c44_unwrapped_31_byte_key_is_rejected(void **state)
{
	struct ub_kw none = {0}, gcm;
	struct ub_xts *x = (struct ub_xts *)&none;
	struct ub_err err = {{0}};
	unsigned char k[33], e31[59], e32[60];

	memset(k, 0x42, sizeof(k));
	assert_int_equal(ub_kw_unwrap_xts_split(&none, k, 31, k, 32, &x, &err),
			 -EINVAL);
	assert_null(x);
	assert_string_equal(err.msg, "Key length must be exactly 32 bytes");
	assert_int_equal(ub_kw_unwrap_xts_split(&none, k, 32, k, 33, &x, &err),
			 -EINVAL);
	assert_contains(err.msg, "exactly 32 bytes");

	make_vec_kw(&gcm);
	seal_fixed(k, 31, e31);
	memset(k, 0x43, 32);
	seal_fixed(k, 32, e32);
	assert_int_equal(
	    ub_kw_unwrap_xts_split(&gcm, e31, 59, e32, 60, &x, &err), -EINVAL);
	assert_string_equal(err.msg, "Key length must be exactly 32 bytes");
	assert_int_equal(
	    ub_kw_unwrap_xts_split(&gcm, e32, 60, e31, 59, &x, &err), -EINVAL);
	assert_string_equal(err.msg, "Key length must be exactly 32 bytes");
	assert_null(x);
	ub_kw_free(&gcm);
}

static void test_c44_invalid_utf8_credential_is_rejected(void **state)
{
	static const unsigned char bad[] = {'A', 'K', 0xff, 'X'};
	struct ub_kw none = {0}, gcm;
	struct ub_err err = {{0}};
	unsigned char env[sizeof(bad) + 28];
	char *s = (char *)&err;
	size_t len = 7;

	assert_int_equal(
	    ub_kw_unwrap_credential(&none, bad, sizeof(bad), &s, &len, &err),
	    -EINVAL);
	assert_null(s);
	assert_int_equal(len, 0);
	assert_string_equal(err.msg, "Decrypted AWS credential is not valid "
				     "UTF-8: invalid sequence at byte 2");

	make_vec_kw(&gcm);
	seal_fixed(bad, sizeof(bad), env);
	assert_int_equal(
	    ub_kw_unwrap_credential(&gcm, env, sizeof(env), &s, &len, &err),
	    -EINVAL);
	assert_contains(err.msg, "valid UTF-8");
	/* GCM errors come through unchanged. */
	env[0] ^= 1;
	assert_int_equal(
	    ub_kw_unwrap_credential(&gcm, env, sizeof(env), &s, &len, &err),
	    -EINVAL);
	assert_string_equal(err.msg, msg_auth);
	ub_kw_free(&gcm);
}

static void test_c45_gcm_wrap_length_and_fresh_nonces(void **state)
{
	static const size_t sizes[] = {0, 1, 31, 32, 64, 100, 1000};
	unsigned char pt[1000], nonces[64][12];
	struct ub_kw kw;
	struct ub_err err = {{0}};
	unsigned char *a, *b;
	size_t i, j, la, lb;

	for (i = 0; i < sizeof(pt); i++)
		pt[i] = (unsigned char)(i * 7 + 3);
	make_vec_kw(&kw);
	for (i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
		size_t n = sizes[i];

		assert_int_equal(ub_kw_wrap(&kw, pt, n, &a, &la, &err), 0);
		assert_int_equal(ub_kw_wrap(&kw, pt, n, &b, &lb, &err), 0);
		assert_int_equal(la, 12 + n + 16);
		assert_int_equal(lb, la);
		assert_memory_not_equal(a, b, 12);
		expect_unwrap_ok(&kw, a, la, pt, n);
		expect_unwrap_ok(&kw, b, lb, pt, n);
		ub_secmem_free(a, la);
		ub_secmem_free(b, lb);
	}
	/* Every wrap draws a new nonce. */
	for (i = 0; i < 64; i++) {
		assert_int_equal(ub_kw_wrap(&kw, pt, 32, &a, &la, &err), 0);
		memcpy(nonces[i], a, 12);
		ub_secmem_free(a, la);
		for (j = 0; j < i; j++)
			assert_memory_not_equal(nonces[i], nonces[j], 12);
	}
	ub_kw_free(&kw);
}

static void test_c46_base64_keys(void **state)
{
	static const unsigned char five[] = {1, 2, 3, 4, 5};
	unsigned char key[32];
	struct ub_err err = {{0}};
	unsigned char *out = (unsigned char *)&err, *back;
	size_t len = 9, blen;
	char *s;

	/* null / absent: no key (the JSON layer maps both to NULL; a
	 * non-string value is its type error, not ours). */
	assert_int_equal(ub_kw_key_decode_opt(NULL, &out, &len, &err), 0);
	assert_null(out);
	assert_int_equal(len, 0);

	assert_int_equal(ub_kw_key_decode_opt("AQIDBAU=", &out, &len, &err), 0);
	assert_int_equal(len, 5);
	assert_memory_equal(out, five, 5);
	ub_secmem_free(out, len);

	assert_int_equal(ub_kw_key_decode_opt("%%%", &out, &len, &err),
			 -EINVAL);
	assert_null(out);
	assert_int_equal(len, 0);
	assert_prefix(err.msg, "invalid base64: ");
	assert_contains(err.msg, "offset 0");
	assert_int_equal(ub_kw_key_decode("AQIDBA", &out, &len, &err), -EINVAL);
	assert_null(out);

	/* Mandatory form. */
	assert_int_equal(ub_kw_key_decode(NULL, &out, &len, &err), -EINVAL);
	assert_null(out);
	assert_string_equal(err.msg, "missing key");
	assert_int_equal(ub_kw_key_decode("", &out, &len, &err), 0);
	assert_non_null(out);
	assert_int_equal(len, 0);
	ub_secmem_free(out, len);

	assert_int_equal(ub_kw_key_encode(five, 5, &s, &len, &err), 0);
	assert_string_equal(s, "AQIDBAU=");
	assert_int_equal(len, 8);
	ub_secmem_free(s, len + 1);

	assert_int_equal(RAND_bytes(key, sizeof(key)), 1);
	assert_int_equal(ub_kw_key_encode(key, sizeof(key), &s, &len, &err), 0);
	assert_int_equal(len, 44);
	assert_int_equal(ub_kw_key_decode(s, &back, &blen, &err), 0);
	assert_int_equal(blen, sizeof(key));
	assert_memory_equal(back, key, sizeof(key));
	ub_secmem_free(back, blen);
	ub_secmem_free(s, len + 1);

	assert_int_equal(ub_kw_key_encode(NULL, 0, &s, &len, &err), 0);
	assert_string_equal(s, "");
	ub_secmem_free(s, len + 1);
}

/* ---- §10.3 vectors ---------------------------------------------------- */

static void test_vector_seals_exactly(void **state)
{
	unsigned char pt[32], got[60], want[60], got0[28], want0[28];
	unsigned char *dec;
	struct ub_err err = {{0}};
	char *b64;
	size_t len;

	memset(pt, 0xaa, sizeof(pt));
	seal_fixed(pt, sizeof(pt), got);
	hex_to_bytes(vec32_hex, want, sizeof(want));
	assert_memory_equal(got, want, sizeof(want));
	seal_fixed(NULL, 0, got0);
	hex_to_bytes(vec0_hex, want0, sizeof(want0));
	assert_memory_equal(got0, want0, sizeof(want0));

	/* The wrapped value serialises to the listed base64. */
	assert_int_equal(ub_kw_key_encode(got, sizeof(got), &b64, &len, &err),
			 0);
	assert_string_equal(b64, vec32_b64);
	ub_secmem_free(b64, len + 1);
	assert_int_equal(ub_kw_key_decode(vec32_b64, &dec, &len, &err), 0);
	assert_int_equal(len, sizeof(want));
	assert_memory_equal(dec, want, sizeof(want));
	ub_secmem_free(dec, len);
}

static void test_vector_empty_plaintext_is_minimum(void **state)
{
	struct ub_kw kw;
	unsigned char vec[28];

	make_vec_kw(&kw);
	hex_to_bytes(vec0_hex, vec, sizeof(vec));
	expect_unwrap_ok(&kw, vec, sizeof(vec), NULL, 0);
	expect_unwrap_err(&kw, vec, sizeof(vec) - 1, -EINVAL, msg_short, 1);
	ub_kw_free(&kw);
}

static void test_tampering_any_byte_fails(void **state)
{
	static const unsigned char masks[] = {0x01, 0x80};
	struct ub_kw kw;
	unsigned char vec[61], pt[32];
	size_t i, m;

	memset(pt, 0xaa, sizeof(pt));
	make_vec_kw(&kw);
	hex_to_bytes(vec32_hex, vec, 60);
	/* Nonce (0-11), ciphertext (12-43) and tag (44-59). */
	for (i = 0; i < 60; i++) {
		for (m = 0; m < sizeof(masks); m++) {
			vec[i] ^= masks[m];
			expect_unwrap_err(&kw, vec, 60, -EINVAL, msg_auth, 1);
			vec[i] ^= masks[m];
		}
	}
	expect_unwrap_err(&kw, vec, 59, -EINVAL, msg_auth, 1);
	vec[60] = 0;
	expect_unwrap_err(&kw, vec, 61, -EINVAL, msg_auth, 1);
	expect_unwrap_ok(&kw, vec, 60, pt, sizeof(pt));
	ub_kw_free(&kw);
}

static void test_wrong_aad_or_key_fails(void **state)
{
	static const char *const aads[] = {"test-aae", "test-aa", "test-aad ",
					   "TEST-AAD", UB_KW_ARCHIVE_AAD};
	struct ub_kw kw;
	unsigned char vec[60];
	size_t i;

	hex_to_bytes(vec32_hex, vec, sizeof(vec));
	for (i = 0; i < sizeof(aads) / sizeof(aads[0]); i++) {
		make_kw(&kw, UB_KW_AES256_GCM, 32, 0x11, aads[i]);
		expect_unwrap_err(&kw, vec, sizeof(vec), -EINVAL, msg_auth, 1);
		ub_kw_free(&kw);
	}
	make_kw(&kw, UB_KW_AES256_GCM, 32, 0x12, VEC_AAD);
	expect_unwrap_err(&kw, vec, sizeof(vec), -EINVAL, msg_auth, 1);
	ub_kw_free(&kw);
}

static void test_empty_aad_round_trips(void **state)
{
	struct ub_kw kw, other;
	struct ub_err err = {{0}};
	unsigned char *w;
	size_t len;

	make_kw(&kw, UB_KW_AES256_GCM, 32, 0x33, "");
	assert_int_equal(
	    ub_kw_wrap(&kw, (const unsigned char *)"secret", 6, &w, &len, &err),
	    0);
	expect_unwrap_ok(&kw, w, len, (const unsigned char *)"secret", 6);
	make_kw(&other, UB_KW_AES256_GCM, 32, 0x33, "x");
	expect_unwrap_err(&other, w, len, -EINVAL, msg_auth, 1);
	ub_secmem_free(w, len);
	ub_kw_free(&other);
	ub_kw_free(&kw);
}

/* ---- remaining API ---------------------------------------------------- */

static void test_wrap_errors(void **state)
{
	struct ub_kw kw;
	struct ub_xts *x = xts_of(1, 2);
	struct ub_err err = {{0}};
	unsigned char *w = (unsigned char *)&err, *w2 = w;
	size_t len = 5, len2 = 5;

	make_kw(&kw, UB_KW_AES256_GCM, -1, 0, VEC_AAD);
	assert_int_equal(
	    ub_kw_wrap(&kw, (const unsigned char *)"k", 1, &w, &len, &err),
	    -EINVAL);
	assert_null(w);
	assert_int_equal(len, 0);
	assert_string_equal(err.msg, "Key is required");
	ub_kw_free(&kw);

	make_kw(&kw, UB_KW_AES256_GCM, 32, 0x11, NULL);
	assert_int_equal(ub_kw_wrap_xts(&kw, x, &w, &len, &err), -EINVAL);
	assert_string_equal(err.msg, "Authentication data is required");
	ub_kw_free(&kw);

	make_kw(&kw, UB_KW_AES256_GCM, 24, 0x11, VEC_AAD);
	assert_int_equal(
	    ub_kw_wrap_xts_split(&kw, x, &w, &len, &w2, &len2, &err), -EINVAL);
	assert_null(w);
	assert_null(w2);
	assert_int_equal(len + len2, 0);
	assert_prefix(err.msg, "Failed to initialize cipher: ");
	ub_kw_free(&kw);
	ub_xts_free(x);
}

static void test_method_names(void **state)
{
	static const char *const bad[] = {
	    "AES256-GCM", "aes256_gcm", "aes256gcm",  "None",
	    "none ",	  "",		"aes-256-gcm"};
	enum ub_kw_method m = UB_KW_AES256_GCM;
	struct ub_err err = {{0}};
	size_t i;

	assert_int_equal(ub_kw_method_parse("none", &m, &err), 0);
	assert_int_equal(m, UB_KW_NONE);
	assert_int_equal(ub_kw_method_parse("aes256-gcm", &m, &err), 0);
	assert_int_equal(m, UB_KW_AES256_GCM);
	assert_string_equal(ub_kw_method_name(UB_KW_NONE), "none");
	assert_string_equal(ub_kw_method_name(UB_KW_AES256_GCM), "aes256-gcm");
	assert_null(ub_kw_method_name((enum ub_kw_method)7));
	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		assert_int_equal(ub_kw_method_parse(bad[i], &m, &err), -EINVAL);
		assert_contains(err.msg, "unknown key encryption method");
		assert_contains(err.msg, "'none' or 'aes256-gcm'");
	}
	assert_int_equal(m, UB_KW_AES256_GCM);
	assert_int_equal(ub_kw_method_parse(NULL, &m, &err), -EINVAL);
	assert_int_equal(ub_kw_method_parse("rot13", &m, &err), -EINVAL);
	assert_string_equal(err.msg, "unknown key encryption method 'rot13', "
				     "expected 'none' or 'aes256-gcm'");
}

static void test_archive_kek(void **state)
{
	unsigned char kek[32], hmac[32], plain[32];
	struct ub_kw kw;
	struct ub_xts *x, *y;
	struct ub_err err = {{0}};
	unsigned char *w;
	size_t len;

	memset(kek, 0x77, sizeof(kek));
	assert_int_equal(RAND_bytes(hmac, sizeof(hmac)), 1);
	assert_int_equal(ub_kw_init_archive(&kw, kek, sizeof(kek), &err), 0);
	assert_int_equal(kw.method, UB_KW_AES256_GCM);
	assert_int_equal(kw.key_len, 32);
	assert_int_equal(kw.aad_len, 14);
	assert_memory_equal(kw.aad, "ubiblk_archive", 14);

	/* A 32-byte HMAC key wraps to 60 bytes that kek.c opens directly. */
	assert_int_equal(ub_kw_wrap(&kw, hmac, sizeof(hmac), &w, &len, &err),
			 0);
	assert_int_equal(len, 60);
	assert_int_equal(ub_kek_open(kek, sizeof(kek), "ubiblk_archive", 14, w,
				     len, plain, &err),
			 0);
	assert_memory_equal(plain, hmac, sizeof(hmac));
	ub_secmem_free(w, len);

	/* The XTS key as one 64-byte blob: 92 bytes. */
	x = xts_of(3, 4);
	assert_int_equal(ub_kw_wrap_xts(&kw, x, &w, &len, &err), 0);
	assert_int_equal(len, 92);
	assert_int_equal(ub_kw_unwrap_xts(&kw, w, len, &y, &err), 0);
	assert_true(ub_xts_equal(x, y));
	ub_xts_free(y);
	ub_kw_free(&kw);

	/* Without a KEK: identity, and the wrapped blob is not a key. */
	assert_int_equal(ub_kw_init_archive(&kw, NULL, 0, &err), 0);
	assert_int_equal(kw.method, UB_KW_NONE);
	assert_null(kw.key);
	assert_null(kw.aad);
	assert_int_equal(ub_kw_unwrap_xts(&kw, w, 92, &y, &err), -EINVAL);
	assert_string_equal(err.msg, "XTS key length must be exactly 64 bytes "
				     "(got 92 bytes)");
	ub_secmem_free(w, 92);
	assert_int_equal(ub_kw_wrap_xts(&kw, x, &w, &len, &err), 0);
	assert_int_equal(len, 64);
	assert_memory_equal(w, ub_xts_key(x), 64);
	ub_secmem_free(w, len);
	ub_xts_free(x);
	ub_kw_free(&kw);
}

static void test_init_copies_and_free_is_idempotent(void **state)
{
	unsigned char key[32], aad[3] = {'a', 'b', 'c'};
	struct ub_kw kw = {0};
	struct ub_err err = {{0}};
	unsigned char *w;
	size_t len;

	ub_kw_free(&kw);
	ub_kw_free(NULL);
	memset(key, 0x55, sizeof(key));
	assert_int_equal(ub_kw_init(&kw, UB_KW_AES256_GCM, key, sizeof(key),
				    aad, sizeof(aad), &err),
			 0);
	assert_int_equal(
	    ub_kw_wrap(&kw, (const unsigned char *)"v", 1, &w, &len, &err), 0);
	memset(key, 0, sizeof(key));
	aad[0] = 'z';
	expect_unwrap_ok(&kw, w, len, (const unsigned char *)"v", 1);
	ub_secmem_free(w, len);
	ub_kw_free(&kw);
	assert_int_equal(kw.method, UB_KW_NONE);
	assert_null(kw.key);
	assert_null(kw.aad);
	ub_kw_free(&kw);

	/* A zero-length key is a key (of the wrong length), not no key. */
	assert_int_equal(ub_kw_init(&kw, UB_KW_AES256_GCM, key, 0, "", 0, &err),
			 0);
	assert_non_null(kw.key);
	expect_unwrap_err(&kw, key, 32, -EINVAL,
			  "Failed to initialize cipher: ", 0);
	ub_kw_free(&kw);

	assert_int_equal(
	    ub_kw_init(&kw, (enum ub_kw_method)9, key, 32, "", 0, &err),
	    -EINVAL);
	assert_int_equal(kw.method, UB_KW_NONE);
	assert_null(kw.key);
	assert_null(kw.aad);
}

static void test_credential_utf8_rules(void **state)
{
	static const struct {
		const char *s;
		size_t len;
		const char *msg; /* NULL = valid */
	} cases[] = {
	    {"", 0, NULL},
	    {"plain ascii", 11, NULL},
	    {"p\xc3\xa4ss \xe2\x82\xac \xf0\x9f\x98\x80", 14, NULL},
	    {"\xf4\x8f\xbf\xbf", 4, NULL}, /* U+10FFFF */
	    {"\xed\x9f\xbf", 3, NULL},	   /* U+D7FF */
	    {"\xee\x80\x80", 3, NULL},	   /* U+E000 */
	    {"a\0b", 3, NULL},		   /* U+0000 is valid */
	    {"\x80", 1, "invalid sequence at byte 0"},
	    {"ab\xc0\x80", 4, "invalid sequence at byte 2"},   /* overlong */
	    {"\xc1\xbf", 2, "invalid sequence at byte 0"},     /* overlong */
	    {"\xe0\x9f\xbf", 3, "invalid sequence at byte 0"}, /* overlong */
	    {"\xf0\x8f\xbf\xbf", 4,
	     "invalid sequence at byte 0"},		       /* overlong */
	    {"\xed\xa0\x80", 3, "invalid sequence at byte 0"}, /* surrogate */
	    {"\xf4\x90\x80\x80", 4,
	     "invalid sequence at byte 0"}, /* > 10FFFF */
	    {"\xf5\x80\x80\x80", 4, "invalid sequence at byte 0"},
	    {"x\xfe", 2, "invalid sequence at byte 1"},
	    {"a\xe2\x28\xa1", 4, "invalid sequence at byte 1"},
	    {"ab\xe2\x82", 4, "incomplete sequence at byte 2"},
	    {"\xf0\x9f\x98", 3, "incomplete sequence at byte 0"},
	};
	struct ub_kw none = {0};
	struct ub_err err = {{0}};
	char *s, want[128];
	size_t i, len;

	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		int rc = ub_kw_unwrap_credential(
		    &none, (const unsigned char *)cases[i].s, cases[i].len, &s,
		    &len, &err);

		if (!cases[i].msg) {
			assert_int_equal(rc, 0);
			assert_int_equal(len, cases[i].len);
			assert_memory_equal(s, cases[i].s, len);
			assert_int_equal(s[len], '\0');
			ub_secmem_free(s, len + 1);
			continue;
		}
		assert_int_equal(rc, -EINVAL);
		assert_null(s);
		snprintf(want, sizeof(want),
			 "Decrypted AWS credential is not valid UTF-8: %s",
			 cases[i].msg);
		assert_string_equal(err.msg, want);
	}
}

static void test_split_failures_release_everything(void **state)
{
	struct ub_kw kw;
	struct ub_xts *x = NULL;
	struct ub_err err = {{0}};
	unsigned char k1[32], k2[32], e1[60], e2[60];

	make_vec_kw(&kw);
	memset(k1, 0x61, sizeof(k1));
	memset(k2, 0x62, sizeof(k2));
	seal_fixed(k1, 32, e1);
	seal_fixed(k2, 32, e2);
	/* Second half fails to authenticate after the first unwrapped. */
	e2[20] ^= 4;
	assert_int_equal(ub_kw_unwrap_xts_split(&kw, e1, 60, e2, 60, &x, &err),
			 -EINVAL);
	assert_string_equal(err.msg, msg_auth);
	assert_null(x);
	/* Identical halves: ub_xts refuses them after both unwrapped. */
	assert_int_equal(ub_kw_unwrap_xts_split(&kw, e1, 60, e1, 60, &x, &err),
			 -EINVAL);
	assert_contains(err.msg, "identical");
	assert_null(x);
	ub_kw_free(&kw);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)
	    T(test_c37_two_random_ciphers_differ_in_both_keys),
	    T(test_c38_none_wrap_returns_keys_unchanged),
	    T(test_c39_describe_prints_redacted_not_key_bytes),
	    T(test_c40_gcm_wrapped_keys_round_trip_and_rewrap),
	    T(test_c41_combined_none_round_trip_is_64_bytes),
	    T(test_c42_combined_key_of_63_bytes_is_rejected),
	    T(test_c43_known_blobs_unwrap),
	    T(test_c44_tampered_tag_is_invalid_parameter),
	    T(test_c44_ciphertext_of_10_bytes_is_too_short),
	    T(test_c44_missing_key_is_exactly_key_is_required),
	    T(test_c44_missing_aad_is_not_empty_aad),
	    T(test_c44_key_not_32_bytes_fails_cipher_init),
	    T(test_c44_unwrapped_31_byte_key_is_rejected),
	    T(test_c44_invalid_utf8_credential_is_rejected),
	    T(test_c45_gcm_wrap_length_and_fresh_nonces),
	    T(test_c46_base64_keys),
	    T(test_vector_seals_exactly),
	    T(test_vector_empty_plaintext_is_minimum),
	    T(test_tampering_any_byte_fails),
	    T(test_wrong_aad_or_key_fails),
	    T(test_empty_aad_round_trips),
	    T(test_wrap_errors),
	    T(test_method_names),
	    T(test_archive_kek),
	    T(test_init_copies_and_free_is_idempotent),
	    T(test_credential_utf8_rules),
	    T(test_split_failures_release_everything),
#undef T
	};

	return cmocka_run_group_tests(tests, group_setup, NULL);
}
