/* AES-256-XTS sector cipher: the storage.md §10.2 vectors with the
 * reference's tweak convention, IEEE 1619 vectors 10-14, OpenSSL's own XTS
 * and python3-cryptography as independent oracles, key validation and
 * sector-number range checks. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "crypto/xts.h"
#include "util/secmem.h"

#define SECTOR 512

#ifdef UB_SOURCE_DIR
#define REFERENCE_SCRIPT UB_SOURCE_DIR "/tests/crypto/xts_reference.py"
#else
#define REFERENCE_SCRIPT "tests/crypto/xts_reference.py"
#endif
#ifndef SYSTEM_PYTHON
#define SYSTEM_PYTHON "/usr/bin/python3"
#endif

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

static void assert_hex(const unsigned char *got, const char *hex)
{
	size_t n = strlen(hex) / 2;
	unsigned char *want = malloc(n); /* owned: freed below */

	assert_non_null(want);
	hex_to_bytes(hex, want, n);
	assert_memory_equal(got, want, n);
	free(want);
}

static void assert_sha256(const unsigned char *data, size_t len,
			  const char *hex)
{
	unsigned char md[32];
	unsigned int mdlen = 0;

	assert_int_equal(EVP_Digest(data, len, md, &mdlen, EVP_sha256(), NULL),
			 1);
	assert_int_equal(mdlen, 32);
	assert_hex(md, hex);
}

static struct ub_xts *new_xts(const unsigned char *key)
{
	struct ub_xts *x = NULL;
	struct ub_err err = {{0}};

	assert_int_equal(ub_xts_new(&x, key, UB_XTS_KEY_LEN, &err), 0);
	assert_non_null(x);
	return x;
}

/* Key 00 01 02 ... 3F of vectors X2 and X3. */
static struct ub_xts *counting_key_xts(void)
{
	unsigned char key[UB_XTS_KEY_LEN];
	int i;

	for (i = 0; i < UB_XTS_KEY_LEN; i++)
		key[i] = (unsigned char)i;
	return new_xts(key);
}

/* OpenSSL's own AES-256-XTS, one data unit per sector: an oracle for our
 * ECB-based construction. */
static void evp_xts(const unsigned char *key, unsigned char *buf,
		    uint64_t first, uint32_t count, int enc)
{
	EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new(); /* owned: freed below */
	unsigned char iv[UB_XTS_TWEAK_LEN];
	uint32_t i;
	int len;

	assert_non_null(ctx);
	assert_int_equal(
	    EVP_CipherInit_ex(ctx, EVP_aes_256_xts(), NULL, key, NULL, enc), 1);
	for (i = 0; i < count; i++) {
		ub_xts_sector_tweak(first + i, iv);
		assert_int_equal(
		    EVP_CipherInit_ex(ctx, NULL, NULL, NULL, iv, -1), 1);
		assert_int_equal(
		    EVP_CipherUpdate(ctx, buf + (size_t)i * SECTOR, &len,
				     buf + (size_t)i * SECTOR, SECTOR),
		    1);
		assert_int_equal(len, SECTOR);
	}
	EVP_CIPHER_CTX_free(ctx);
}

static void random_bytes(void *p, size_t n)
{
	assert_int_equal(RAND_bytes(p, (int)n), 1);
}

static uint64_t random_u64(void)
{
	uint64_t v;

	random_bytes(&v, sizeof(v));
	return v;
}

/* ---- tweak layout and published vectors -------------------------------- */

static void test_sector_tweak_is_zeros_then_le64_sector(void **state)
{
	unsigned char t[UB_XTS_TWEAK_LEN];

	ub_xts_sector_tweak(0x1122334455667788ULL, t);
	assert_hex(t, "00000000000000008877665544332211");
	ub_xts_sector_tweak(UINT64_MAX, t);
	assert_hex(t, "0000000000000000ffffffffffffffff");
}

/* Vector X1: the keys of the upstream crypt test, given as two halves. */
static void test_vector_x1_hello_world_sectors_0_and_1(void **state)
{
	unsigned char key1[32], key2[32], buf[2 * SECTOR];
	static const unsigned char k1[8] = {0x01, 0x23, 0x45, 0x67,
					    0x89, 0xab, 0xcd, 0xef};
	static const unsigned char k2[8] = {0xfe, 0xdc, 0xba, 0x98,
					    0x76, 0x54, 0x32, 0x10};
	struct ub_xts *x = NULL;
	struct ub_err err = {{0}};
	int i;

	for (i = 0; i < 4; i++) {
		memcpy(key1 + 8 * i, k1, 8);
		memcpy(key2 + 8 * i, k2, 8);
	}
	assert_int_equal(ub_xts_new_split(&x, key1, 32, key2, 32, &err), 0);
	memset(buf, 0, sizeof(buf));
	memcpy(buf, "Hello, world!", 13);
	memcpy(buf + SECTOR, "Hello, world!", 13);
	assert_int_equal(ub_xts_encrypt(x, buf, 0, 2), 0);
	assert_hex(buf, "26d9489bc33c42058b19157456f543cd"
			"5849577c85a0524fe488d3b202903a33");
	assert_sha256(buf, SECTOR,
		      "0f1e9409adc7673b1130ddd272989188"
		      "75255456429bbe8f1b504c9ffebeaff0");
	assert_hex(buf + SECTOR, "3c06a23053c648a726af8c5e3ae79b5c"
				 "7f947fc8f0ac4365b8623a3384dee455");
	assert_sha256(buf + SECTOR, SECTOR,
		      "91c62dbb453ea96dc229b90716b708d1"
		      "2732731ecf5f5937286f9f4b91e31d6a");
	assert_int_equal(ub_xts_decrypt(x, buf, 0, 2), 0);
	assert_memory_equal(buf, "Hello, world!", 13);
	assert_memory_equal(buf + SECTOR, "Hello, world!", 13);
	for (i = 13; i < SECTOR; i++)
		assert_int_equal(buf[i] | buf[SECTOR + i], 0);
	ub_xts_free(x);
}

static void test_vector_x2_zero_sectors(void **state)
{
	static const struct {
		uint64_t sector;
		const char *first32;
		const char *sha256;
	} v[] = {
	    {0,
	     "cd6b103236fbd87dba93e9001e29bc3d"
	     "5e885d6abd1577e3e0e0a5f49e444894",
	     "9943ddf45f593dcb9bcd2e3043ea706a"
	     "3a7f0d35bfca0ddcfa7c0803e588601a"},
	    {1,
	     "2aca9fa268f090c0fcfa1ae9c5b934e9"
	     "43fdc601077bc21970f70b63eba4e8ea",
	     "1803cde6dc00191470928d83ea119a86"
	     "c0b243e51fcbadbf313114e5828bfdd9"},
	    {0x0123456789ABCDEFULL,
	     "1a8b4e25b72d48d1f8fab613d986c9be"
	     "98c95716c6587565350545f0739efc73",
	     "0dd47473b5722d98e170f06e0c12b6cd"
	     "3ca79aa3285b373889070c79a196a518"},
	};
	static const unsigned char plain64_sector1[8] = {
	    0x0c, 0x22, 0xed, 0x7e, 0x21, 0x68, 0xa8, 0x50};
	struct ub_xts *x = counting_key_xts();
	unsigned char buf[SECTOR];
	size_t i;

	for (i = 0; i < sizeof(v) / sizeof(v[0]); i++) {
		memset(buf, 0, sizeof(buf));
		assert_int_equal(ub_xts_encrypt(x, buf, v[i].sector, 1), 0);
		assert_hex(buf, v[i].first32);
		assert_sha256(buf, SECTOR, v[i].sha256);
		/* dm-crypt plain64 (sector in bytes 0-7) would give this. */
		if (v[i].sector == 1)
			assert_memory_not_equal(buf, plain64_sector1, 8);
	}
	ub_xts_free(x);
}

static void test_vector_x3_counting_bytes_sector_5(void **state)
{
	struct ub_xts *x = counting_key_xts();
	unsigned char buf[SECTOR];
	int i;

	for (i = 0; i < SECTOR; i++)
		buf[i] = (unsigned char)i;
	assert_int_equal(ub_xts_encrypt(x, buf, 5, 1), 0);
	assert_hex(buf, "d22efcc4ccb1656ea135604fc3a36f61"
			"78bd4cf1006d1e4ffa0929110c61b475");
	assert_sha256(buf, SECTOR,
		      "319fb87ab68da8cf223d98010dab392a"
		      "b04e7d56a10ac9cdeb02130952db24c8");
	assert_int_equal(ub_xts_decrypt(x, buf, 5, 1), 0);
	for (i = 0; i < SECTOR; i++)
		assert_int_equal(buf[i], (unsigned char)i);
	ub_xts_free(x);
}

/* IEEE 1619 XTS-AES-256 key of vectors 10-14 (key1 || key2). */
static const char ieee_key[] = "27182818284590452353602874713526"
			       "62497757247093699959574966967627"
			       "31415926535897932384626433832795"
			       "02884197169399375105820974944592";

/* IEEE 1619 vector 10: data unit 0xff, plaintext 00 01 .. ff 00 .. ff. */
static void test_ieee1619_vector_10(void **state)
{
	static const char ct[] =
	    "1c3b3a102f770386e4836c99e370cf9bea00803f5e482357a4ae12d414a3e63b"
	    "5d31e276f8fe4a8d66b317f9ac683f44680a86ac35adfc3345befecb4bb188fd"
	    "5776926c49a3095eb108fd1098baec70aaa66999a72a82f27d848b21d4a741b0"
	    "c5cd4d5fff9dac89aeba122961d03a757123e9870f8acf1000020887891429ca"
	    "2a3e7a7d7df7b10355165c8b9a6d0a7de8b062c4500dc4cd120c0f7418dae3d0"
	    "b5781c34803fa75421c790dfe1de1834f280d7667b327f6c8cd7557e12ac3a0f"
	    "93ec05c52e0493ef31a12d3d9260f79a289d6a379bc70c50841473d1a8cc81ec"
	    "583e9645e07b8d9670655ba5bbcfecc6dc3966380ad8fecb17b6ba02469a020a"
	    "84e18e8f84252070c13e9f1f289be54fbc481457778f616015e1327a02b140f1"
	    "505eb309326d68378f8374595c849d84f4c333ec4423885143cb47bd71c5edae"
	    "9be69a2ffeceb1bec9de244fbe15992b11b77c040f12bd8f6a975a44a0f90c29"
	    "a9abc3d4d893927284c58754cce294529f8614dcd2aba991925fedc4ae74ffac"
	    "6e333b93eb4aff0479da9a410e4450e0dd7ae4c6e2910900575da401fc07059f"
	    "645e8b7e9bfdef33943054ff84011493c27b3429eaedb4ed5376441a77ed4385"
	    "1ad77f16f541dfd269d50d6a5f14fb0aab1cbb4c1550be97f7ab4066193c4caa"
	    "773dad38014bd2092fa755c824bb5e54c4f36ffda9fcea70b9c6e693e148c151";
	unsigned char key[UB_XTS_KEY_LEN], tweak[UB_XTS_TWEAK_LEN] = {0xff};
	unsigned char buf[SECTOR];
	struct ub_xts *x;
	int i;

	hex_to_bytes(ieee_key, key, sizeof(key));
	x = new_xts(key);
	for (i = 0; i < SECTOR; i++)
		buf[i] = (unsigned char)i;
	assert_int_equal(ub_xts_encrypt_unit(x, buf, tweak), 0);
	assert_hex(buf, ct);
	assert_int_equal(ub_xts_decrypt_unit(x, buf, tweak), 0);
	for (i = 0; i < SECTOR; i++)
		assert_int_equal(buf[i], (unsigned char)i);
	ub_xts_free(x);
}

/* IEEE 1619 vectors 11-14 (data units 2^16-1 ... 2^40-1): SHA-256 of the
 * published ciphertexts, plus their first and last 16 bytes. */
static void test_ieee1619_vectors_11_to_14(void **state)
{
	static const struct {
		uint64_t unit;
		const char *first16, *last16, *sha256;
	} v[] = {
	    {0xffff, "77a31251618a15e6b92d1d66dffe7b50",
	     "a4f9e27b42af8100cb9d59cef9645803",
	     "def4fad29e95dfe1a24b1ad4620f86d7"
	     "be094cced5b19e0b121aa82d9e6baf98"},
	    {0xffffff, "e387aaa58ba483afa7e8eb469778317e",
	     "2263a1eef52dd6888c309f5a7d712826",
	     "8bf44861a081dd660d91ce615b5cdfb4"
	     "d5df9d72c3025c12e67cc0ae097fa5d5"},
	    {0xffffffffULL, "bf53d2dade78e822a4d949a9bc6766b0",
	     "4c82f335abb152c4a93411373aaa8220",
	     "c706140a11affda7402234f5e6331eac"
	     "bfeb687d8e80d83962691823bb3636f0"},
	    {0xffffffffffULL, "64497e5a831e4a932c09be3e5393376d",
	     "d609d273ad5b0d59631c531f6a0a57b9",
	     "afba71abc4e95b186d89a63a5437c1ba"
	     "fcfd1a18ca273970c534aba4f8d05282"},
	};
	unsigned char key[UB_XTS_KEY_LEN], tweak[UB_XTS_TWEAK_LEN];
	unsigned char buf[SECTOR];
	struct ub_xts *x;
	size_t i;
	int j;

	hex_to_bytes(ieee_key, key, sizeof(key));
	x = new_xts(key);
	for (i = 0; i < sizeof(v) / sizeof(v[0]); i++) {
		uint64_t le = htole64(v[i].unit);

		memset(tweak, 0, sizeof(tweak));
		memcpy(tweak, &le, sizeof(le));
		for (j = 0; j < SECTOR; j++)
			buf[j] = (unsigned char)j;
		assert_int_equal(ub_xts_encrypt_unit(x, buf, tweak), 0);
		assert_hex(buf, v[i].first16);
		assert_hex(buf + SECTOR - 16, v[i].last16);
		assert_sha256(buf, SECTOR, v[i].sha256);
		assert_int_equal(ub_xts_decrypt_unit(x, buf, tweak), 0);
		for (j = 0; j < SECTOR; j++)
			assert_int_equal(buf[j], (unsigned char)j);
	}
	ub_xts_free(x);
}

/* ---- agreement with OpenSSL's XTS, round trips ------------------------- */

/* Counts cover the 4-unit groups, their remainders and several 32-sector
 * chunks; first sectors cross 2^32 and end exactly at 2^64 - 1. */
static void test_matches_openssl_xts_for_all_request_shapes(void **state)
{
	static const uint32_t counts[] = {1,  2,  3,  4,  5,  7,   8,
					  31, 32, 33, 64, 67, 128, 130};
	static const uint64_t firsts[] = {0,
					  1,
					  0xfffffff0ULL,
					  0xffffffffULL,
					  0x100000000ULL,
					  0x0123456789ABCDEFULL,
					  0x8000000000000000ULL};
	unsigned char key[UB_XTS_KEY_LEN];
	unsigned char *plain, *ours, *theirs; /* owned: freed below */
	size_t max = 130 * SECTOR, ci, fi;
	struct ub_xts *x;

	random_bytes(key, sizeof(key));
	x = new_xts(key);
	plain = malloc(max);
	ours = malloc(max);
	theirs = malloc(max);
	assert_true(plain && ours && theirs);
	for (ci = 0; ci < sizeof(counts) / sizeof(counts[0]); ci++) {
		uint32_t n = counts[ci];
		size_t len = (size_t)n * SECTOR;

		for (fi = 0; fi <= sizeof(firsts) / sizeof(firsts[0]); fi++) {
			/* the extra round ends exactly at sector 2^64 - 1 */
			uint64_t first = fi < sizeof(firsts) / sizeof(firsts[0])
					     ? firsts[fi]
					     : UINT64_MAX - (n - 1);

			random_bytes(plain, len);
			memcpy(ours, plain, len);
			memcpy(theirs, plain, len);
			assert_int_equal(ub_xts_encrypt(x, ours, first, n), 0);
			evp_xts(key, theirs, first, n, 1);
			assert_memory_equal(ours, theirs, len);
			assert_int_equal(ub_xts_decrypt(x, ours, first, n), 0);
			assert_memory_equal(ours, plain, len);
		}
	}
	free(plain);
	free(ours);
	free(theirs);
	ub_xts_free(x);
}

/* A request of n sectors is n independent units: splitting it anywhere
 * gives the same bytes. */
static void test_request_equals_sector_by_sector(void **state)
{
	enum { N = 77 };
	unsigned char *a, *b; /* owned: freed below */
	struct ub_xts *x;
	struct ub_err err = {{0}};
	uint64_t first = 0xfffffffffULL;
	int i;

	assert_int_equal(ub_xts_new_random(&x, &err), 0);
	a = malloc(N * SECTOR);
	b = malloc(N * SECTOR);
	assert_true(a && b);
	random_bytes(a, N * SECTOR);
	memcpy(b, a, N * SECTOR);
	assert_int_equal(ub_xts_encrypt(x, a, first, N), 0);
	for (i = 0; i < N; i++)
		assert_int_equal(
		    ub_xts_encrypt(x, b + i * SECTOR, first + i, 1), 0);
	assert_memory_equal(a, b, N * SECTOR);
	assert_memory_not_equal(a, a + SECTOR, SECTOR);
	free(a);
	free(b);
	ub_xts_free(x);
}

/* Out of place gives the in-place result, never writes the source, and
 * decrypts back; odd counts and a source that is not 16-byte aligned
 * included. */
static void test_encrypt_to_equals_in_place_and_leaves_source(void **state)
{
	enum { N = 45 };
	unsigned char *src, *copy, *dst, *inplace; /* owned: freed below */
	struct ub_xts *x;
	struct ub_err err = {{0}};
	uint64_t first = 123456789;

	assert_int_equal(ub_xts_new_random(&x, &err), 0);
	src = malloc(N * SECTOR + 1);
	copy = malloc(N * SECTOR);
	dst = malloc(N * SECTOR);
	inplace = malloc(N * SECTOR);
	assert_true(src && copy && dst && inplace);
	random_bytes(src + 1, N * SECTOR);
	memcpy(copy, src + 1, N * SECTOR);
	memcpy(inplace, src + 1, N * SECTOR);
	for (int n = 1; n <= N; n += 11) {
		memcpy(inplace, copy, N * SECTOR);
		assert_int_equal(ub_xts_encrypt(x, inplace, first, n), 0);
		assert_int_equal(ub_xts_encrypt_to(x, dst, src + 1, first, n),
				 0);
		assert_memory_equal(dst, inplace, (size_t)n * SECTOR);
		assert_memory_equal(src + 1, copy, N * SECTOR);
		assert_int_equal(ub_xts_decrypt(x, dst, first, n), 0);
		assert_memory_equal(dst, copy, (size_t)n * SECTOR);
	}
	/* dst == src is in place. */
	memcpy(dst, copy, N * SECTOR);
	assert_int_equal(ub_xts_encrypt_to(x, dst, dst, first, N), 0);
	memcpy(inplace, copy, N * SECTOR);
	assert_int_equal(ub_xts_encrypt(x, inplace, first, N), 0);
	assert_memory_equal(dst, inplace, N * SECTOR);
	assert_int_equal(ub_xts_encrypt_to(x, NULL, copy, first, 1), -EINVAL);
	assert_int_equal(ub_xts_encrypt_to(x, dst, NULL, first, 1), -EINVAL);
	free(src);
	free(copy);
	free(dst);
	free(inplace);
	ub_xts_free(x);
}

static void test_sector_above_2_32_round_trips_and_differs(void **state)
{
	unsigned char plain[SECTOR], lo[SECTOR], hi[SECTOR];
	struct ub_xts *x;
	struct ub_err err = {{0}};

	assert_int_equal(ub_xts_new_random(&x, &err), 0);
	random_bytes(plain, sizeof(plain));
	memcpy(lo, plain, SECTOR);
	memcpy(hi, plain, SECTOR);
	/* 2^32 + 7 must not alias sector 7 (no 32-bit truncation). */
	assert_int_equal(ub_xts_encrypt(x, lo, 7, 1), 0);
	assert_int_equal(ub_xts_encrypt(x, hi, 0x100000007ULL, 1), 0);
	assert_memory_not_equal(lo, hi, SECTOR);
	assert_int_equal(ub_xts_decrypt(x, hi, 0x100000007ULL, 1), 0);
	assert_memory_equal(hi, plain, SECTOR);
	ub_xts_free(x);
}

static void test_count_zero_does_nothing(void **state)
{
	struct ub_xts *x = counting_key_xts();
	unsigned char buf[SECTOR] = {1, 2, 3};

	assert_int_equal(ub_xts_encrypt(x, buf, UINT64_MAX, 0), 0);
	assert_int_equal(ub_xts_decrypt(x, NULL, 0, 0), 0);
	assert_int_equal(buf[0] + buf[1] + buf[2], 6);
	ub_xts_free(x);
}

static void test_last_sector_2_64_minus_1_is_accepted(void **state)
{
	unsigned char key[UB_XTS_KEY_LEN], a[SECTOR], b[SECTOR];
	struct ub_xts *x;

	random_bytes(key, sizeof(key));
	x = new_xts(key);
	random_bytes(a, sizeof(a));
	memcpy(b, a, SECTOR);
	assert_int_equal(ub_xts_encrypt(x, a, UINT64_MAX, 1), 0);
	evp_xts(key, b, UINT64_MAX, 1, 1);
	assert_memory_equal(a, b, SECTOR);
	ub_xts_free(x);
}

static void test_sector_wrap_around_is_rejected_untouched(void **state)
{
	struct ub_xts *x = counting_key_xts();
	unsigned char buf[8 * SECTOR], copy[8 * SECTOR];

	random_bytes(buf, sizeof(buf));
	memcpy(copy, buf, sizeof(buf));
	assert_int_equal(ub_xts_encrypt(x, buf, UINT64_MAX, 2), -EINVAL);
	assert_int_equal(ub_xts_decrypt(x, buf, UINT64_MAX - 6, 8), -EINVAL);
	/* checked before the buffer is touched: a huge count cannot run */
	assert_int_equal(ub_xts_encrypt(x, buf, UINT64_MAX - 1, UINT32_MAX),
			 -EINVAL);
	assert_memory_equal(buf, copy, sizeof(buf));
	ub_xts_free(x);
}

static void test_null_buffer_is_rejected(void **state)
{
	struct ub_xts *x = counting_key_xts();
	unsigned char tweak[UB_XTS_TWEAK_LEN] = {0};

	assert_int_equal(ub_xts_encrypt(x, NULL, 0, 1), -EINVAL);
	assert_int_equal(ub_xts_decrypt(x, NULL, 0, 1), -EINVAL);
	assert_int_equal(ub_xts_encrypt_unit(x, NULL, tweak), -EINVAL);
	ub_xts_free(x);
}

/* ---- keys ------------------------------------------------------------- */

static void test_identical_halves_are_rejected(void **state)
{
	unsigned char key[UB_XTS_KEY_LEN];
	struct ub_xts *x = (struct ub_xts *)1;
	struct ub_err err = {{0}};

	random_bytes(key, 32);
	memcpy(key + 32, key, 32);
	assert_int_equal(ub_xts_new(&x, key, sizeof(key), &err), -EINVAL);
	assert_null(x);
	assert_string_equal(err.msg, "XTS key halves are identical; OpenSSL "
				     "refuses such keys and they weaken XTS");
	x = (struct ub_xts *)1;
	ub_err_clear(&err);
	assert_int_equal(ub_xts_new_split(&x, key, 32, key + 32, 32, &err),
			 -EINVAL);
	assert_null(x);
	assert_non_null(strstr(err.msg, "identical"));
}

static void test_combined_key_must_be_64_bytes(void **state)
{
	static const size_t bad[] = {0, 32, 63, 65, 128};
	unsigned char key[128];
	struct ub_xts *x = NULL;
	struct ub_err err = {{0}};
	char want[80];
	size_t i;

	random_bytes(key, sizeof(key));
	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		assert_int_equal(ub_xts_new(&x, key, bad[i], &err), -EINVAL);
		assert_null(x);
		snprintf(want, sizeof(want),
			 "XTS key length must be exactly 64 bytes (got %zu "
			 "bytes)",
			 bad[i]);
		assert_string_equal(err.msg, want);
	}
}

static void test_half_keys_must_be_32_bytes(void **state)
{
	unsigned char k1[33], k2[33];
	struct ub_xts *x = NULL;
	struct ub_err err = {{0}};

	random_bytes(k1, sizeof(k1));
	random_bytes(k2, sizeof(k2));
	assert_int_equal(ub_xts_new_split(&x, k1, 31, k2, 32, &err), -EINVAL);
	assert_string_equal(err.msg, "Key length must be exactly 32 bytes");
	assert_int_equal(ub_xts_new_split(&x, k1, 32, k2, 33, &err), -EINVAL);
	assert_string_equal(err.msg, "Key length must be exactly 32 bytes");
	assert_null(x);
	assert_int_equal(ub_xts_new_split(&x, k1, 32, k2, 32, &err), 0);
	assert_memory_equal(ub_xts_key(x), k1, 32);
	assert_memory_equal(ub_xts_key(x) + 32, k2, 32);
	ub_xts_free(x);
}

static void test_random_keys_differ_in_both_halves(void **state)
{
	struct ub_xts *a, *b;
	struct ub_err err = {{0}};

	assert_int_equal(ub_xts_new_random(&a, &err), 0);
	assert_int_equal(ub_xts_new_random(&b, &err), 0);
	assert_memory_not_equal(ub_xts_key(a), ub_xts_key(b), 32);
	assert_memory_not_equal(ub_xts_key(a) + 32, ub_xts_key(b) + 32, 32);
	assert_memory_not_equal(ub_xts_key(a), ub_xts_key(a) + 32, 32);
	assert_false(ub_xts_equal(a, b));
	assert_true(ub_xts_equal(a, a));
	ub_xts_free(a);
	ub_xts_free(b);
}

/* One clone per thread, used concurrently, all agree with the original. */
struct worker {
	struct ub_xts *x;
	unsigned char buf[64 * SECTOR];
	uint64_t first;
};

static void *worker_main(void *arg)
{
	struct worker *w = arg;
	int i;

	for (i = 0; i < 200; i++) {
		if (ub_xts_encrypt(w->x, w->buf, w->first, 64) ||
		    ub_xts_decrypt(w->x, w->buf, w->first, 64))
			return (void *)1;
	}
	return ub_xts_encrypt(w->x, w->buf, w->first, 64) ? (void *)1 : NULL;
}

static void test_clones_work_in_parallel_threads(void **state)
{
	enum { THREADS = 4 };
	static struct worker w[THREADS];
	unsigned char expect[64 * SECTOR];
	struct ub_xts *x;
	struct ub_err err = {{0}};
	pthread_t tid[THREADS];
	void *ret;
	int i;

	assert_int_equal(ub_xts_new_random(&x, &err), 0);
	for (i = 0; i < THREADS; i++) {
		assert_int_equal(ub_xts_clone(x, &w[i].x, &err), 0);
		assert_true(ub_xts_equal(x, w[i].x));
		random_bytes(w[i].buf, sizeof(w[i].buf));
		w[i].first = random_u64() >> 1;
	}
	/* expected results, computed before the threads touch the buffers */
	for (i = 0; i < THREADS; i++)
		assert_int_equal(
		    pthread_create(&tid[i], NULL, worker_main, &w[i]), 0);
	for (i = 0; i < THREADS; i++) {
		assert_int_equal(pthread_join(tid[i], &ret), 0);
		assert_null(ret);
	}
	for (i = 0; i < THREADS; i++) {
		memcpy(expect, w[i].buf, sizeof(expect));
		assert_int_equal(ub_xts_decrypt(x, expect, w[i].first, 64), 0);
		assert_int_equal(ub_xts_encrypt(x, expect, w[i].first, 64), 0);
		assert_memory_equal(expect, w[i].buf, sizeof(expect));
		ub_xts_free(w[i].x);
	}
	ub_xts_free(x);
}

/* ---- cross-check against python3-cryptography ------------------------- */

/* Runs argv[0] with argv, stdout and stderr to /dev/null unless quiet is
 * false; returns its exit status, or -1. */
static int run(char *const argv[], int quiet)
{
	pid_t pid;
	int status, fd;

	pid = fork();
	if (pid < 0)
		return -1;
	if (pid == 0) {
		if (quiet) {
			fd = open("/dev/null", O_WRONLY);
			if (fd >= 0) {
				dup2(fd, 1);
				dup2(fd, 2);
			}
		}
		execv(argv[0], argv);
		_exit(127);
	}
	if (waitpid(pid, &status, 0) != pid || !WIFEXITED(status))
		return -1;
	return WEXITSTATUS(status);
}

static void write_file(const char *path, const void *data, size_t len)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);

	assert_true(fd >= 0);
	assert_int_equal(write(fd, data, len), (ssize_t)len);
	assert_int_equal(close(fd), 0);
}

static void read_file(const char *path, void *data, size_t len)
{
	int fd = open(path, O_RDONLY);

	assert_true(fd >= 0);
	assert_int_equal(read(fd, data, len), (ssize_t)len);
	assert_int_equal(close(fd), 0);
}

static void test_matches_python_cryptography(void **state)
{
	/* runs of (first sector, count): fixed edge cases and random ones */
	enum { RUNS = 12, MAX_RUN = 40 };
	static char *probe[] = {SYSTEM_PYTHON, "-c",
				"import cryptography.hazmat.primitives.ciphers",
				NULL};
	uint64_t first[RUNS];
	uint32_t count[RUNS], total = 0;
	unsigned char key[UB_XTS_KEY_LEN];
	unsigned char *plain, *ours, *theirs; /* owned: freed at the end */
	char dir[] = "/tmp/ub-xts-XXXXXX";
	char kpath[64], dpath[64], spath[64], opath[64];
	struct ub_xts *x;
	FILE *f;
	size_t off;
	int i;
	uint32_t j;

	if (access(SYSTEM_PYTHON, X_OK) != 0 || run(probe, 1) != 0) {
		print_message("SKIP: " SYSTEM_PYTHON " cannot import "
			      "cryptography (install python3-cryptography)\n");
		skip();
	}
	if (access(REFERENCE_SCRIPT, R_OK) != 0) {
		print_message("SKIP: " REFERENCE_SCRIPT " not found (run from "
			      "the source tree)\n");
		skip();
	}
	first[0] = 0;
	first[1] = 0xffffffffULL - 3;	       /* crosses 2^32 */
	first[2] = UINT64_MAX - (MAX_RUN - 1); /* ends at 2^64 - 1 */
	first[3] = UINT64_MAX;
	for (i = 0; i < RUNS; i++) {
		count[i] = i == 3 ? 1 : 1 + (uint32_t)(random_u64() % MAX_RUN);
		if (i == 2)
			count[i] = MAX_RUN;
		if (i >= 4)
			first[i] = random_u64() >> (i % 3 ? 0 : 30);
		if (first[i] > UINT64_MAX - (count[i] - 1))
			first[i] = UINT64_MAX - (count[i] - 1);
		total += count[i];
	}
	random_bytes(key, 32);
	do
		random_bytes(key + 32, 32);
	while (!memcmp(key, key + 32, 32));
	x = new_xts(key);
	plain = malloc((size_t)total * SECTOR);
	ours = malloc((size_t)total * SECTOR);
	theirs = malloc((size_t)total * SECTOR);
	assert_true(plain && ours && theirs);
	random_bytes(plain, (size_t)total * SECTOR);
	memcpy(ours, plain, (size_t)total * SECTOR);

	assert_non_null(mkdtemp(dir));
	snprintf(kpath, sizeof(kpath), "%s/key", dir);
	snprintf(dpath, sizeof(dpath), "%s/data", dir);
	snprintf(spath, sizeof(spath), "%s/sectors", dir);
	snprintf(opath, sizeof(opath), "%s/out", dir);
	write_file(kpath, key, sizeof(key));
	write_file(dpath, plain, (size_t)total * SECTOR);
	f = fopen(spath, "w");
	assert_non_null(f);
	for (i = 0, off = 0; i < RUNS; i++) {
		for (j = 0; j < count[i]; j++)
			fprintf(f, "%llu\n",
				(unsigned long long)(first[i] + j));
		assert_int_equal(
		    ub_xts_encrypt(x, ours + off, first[i], count[i]), 0);
		off += (size_t)count[i] * SECTOR;
	}
	assert_int_equal(fclose(f), 0);

	{
		char *enc[] = {SYSTEM_PYTHON, REFERENCE_SCRIPT,
			       "encrypt",     kpath,
			       dpath,	      spath,
			       opath,	      NULL};
		char *dec[] = {SYSTEM_PYTHON, REFERENCE_SCRIPT,
			       "decrypt",     kpath,
			       dpath,	      spath,
			       opath,	      NULL};

		assert_int_equal(run(enc, 0), 0);
		read_file(opath, theirs, (size_t)total * SECTOR);
		assert_memory_equal(ours, theirs, (size_t)total * SECTOR);

		/* and python decrypts what we encrypted */
		write_file(dpath, ours, (size_t)total * SECTOR);
		assert_int_equal(run(dec, 0), 0);
		read_file(opath, theirs, (size_t)total * SECTOR);
		assert_memory_equal(plain, theirs, (size_t)total * SECTOR);
	}

	for (i = 0, off = 0; i < RUNS; i++) {
		assert_int_equal(
		    ub_xts_decrypt(x, ours + off, first[i], count[i]), 0);
		off += (size_t)count[i] * SECTOR;
	}
	assert_memory_equal(ours, plain, (size_t)total * SECTOR);

	unlink(kpath);
	unlink(dpath);
	unlink(spath);
	unlink(opath);
	rmdir(dir);
	free(plain);
	free(ours);
	free(theirs);
	ub_xts_free(x);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_sector_tweak_is_zeros_then_le64_sector),
	    cmocka_unit_test(test_vector_x1_hello_world_sectors_0_and_1),
	    cmocka_unit_test(test_vector_x2_zero_sectors),
	    cmocka_unit_test(test_vector_x3_counting_bytes_sector_5),
	    cmocka_unit_test(test_ieee1619_vector_10),
	    cmocka_unit_test(test_ieee1619_vectors_11_to_14),
	    cmocka_unit_test(test_matches_openssl_xts_for_all_request_shapes),
	    cmocka_unit_test(test_request_equals_sector_by_sector),
	    cmocka_unit_test(test_encrypt_to_equals_in_place_and_leaves_source),
	    cmocka_unit_test(test_sector_above_2_32_round_trips_and_differs),
	    cmocka_unit_test(test_count_zero_does_nothing),
	    cmocka_unit_test(test_last_sector_2_64_minus_1_is_accepted),
	    cmocka_unit_test(test_sector_wrap_around_is_rejected_untouched),
	    cmocka_unit_test(test_null_buffer_is_rejected),
	    cmocka_unit_test(test_identical_halves_are_rejected),
	    cmocka_unit_test(test_combined_key_must_be_64_bytes),
	    cmocka_unit_test(test_half_keys_must_be_32_bytes),
	    cmocka_unit_test(test_random_keys_differ_in_both_halves),
	    cmocka_unit_test(test_clones_work_in_parallel_threads),
	    cmocka_unit_test(test_matches_python_cryptography),
	};

	ub_secmem_init();
	return cmocka_run_group_tests(tests, NULL, NULL);
}
