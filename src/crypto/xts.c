#include "crypto/xts.h"

#include <endian.h>
#include <errno.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#if defined(__SSE2__) && !defined(UB_XTS_PORTABLE)
#include <emmintrin.h>
#define XTS_SSE2 1
#endif

#include "util/secmem.h"

/* Sectors per EVP call: 16 KiB of data stays in L1 across the three passes
 * over it, and the encrypted tweaks take 512 bytes of scratch. */
#define CHUNK_UNITS 32
#define BLOCK_LEN   16

struct ub_xts {
	EVP_CIPHER_CTX *tweak; /* owned: AES-256-ECB encryption with key2 */
	EVP_CIPHER_CTX *enc;   /* owned: AES-256-ECB encryption with key1 */
	EVP_CIPHER_CTX *dec;   /* owned: AES-256-ECB decryption with key1 */
	unsigned char *key;    /* owned, secmem: key1 || key2 */
	unsigned char *tw;     /* owned, secmem: CHUNK_UNITS encrypted tweaks */
};

/*
 * The tweak sequence of a data unit: T_0 = AES(key2, initial tweak),
 * T_(j+1) = T_j * alpha in GF(2^128) with x^128 + x^7 + x^2 + x + 1, the
 * 16 bytes read as a little-endian 128-bit number. Doubling is a one-bit
 * left shift; the bit shifted out at the top comes back as 0x87 in the
 * lowest byte. Everything below is branch-free: the tweaks are secret.
 */
#ifdef XTS_SSE2
typedef __m128i tweak_t;

static inline tweak_t tweak_load(const unsigned char *p)
{
	return _mm_loadu_si128((const __m128i *)p);
}

/* dst = src ^ t (16 bytes; dst == src allowed). */
static inline void tweak_xor(unsigned char *dst, const unsigned char *src,
			     tweak_t t)
{
	__m128i v = _mm_loadu_si128((const __m128i *)src);

	_mm_storeu_si128((__m128i *)dst, _mm_xor_si128(v, t));
}

/* Shifts each 32-bit lane left by one and adds the bit each lane lost to
 * the next lane up; the top lane's bit wraps to lane 0 as 0x87. */
static inline tweak_t tweak_double(tweak_t t)
{
	const __m128i carry_in = _mm_set_epi32(1, 1, 1, 0x87);
	__m128i top = _mm_srai_epi32(t, 31);

	top = _mm_shuffle_epi32(top, _MM_SHUFFLE(2, 1, 0, 3));
	return _mm_xor_si128(_mm_slli_epi32(t, 1),
			     _mm_and_si128(top, carry_in));
}
#else
typedef struct {
	uint64_t lo, hi;
} tweak_t;

static inline uint64_t load_le64(const unsigned char *p)
{
	uint64_t v;

	memcpy(&v, p, sizeof(v));
	return le64toh(v);
}

static inline void store_le64(unsigned char *p, uint64_t v)
{
	v = htole64(v);
	memcpy(p, &v, sizeof(v));
}

static inline tweak_t tweak_load(const unsigned char *p)
{
	tweak_t t = {load_le64(p), load_le64(p + 8)};

	return t;
}

static inline void tweak_xor(unsigned char *dst, const unsigned char *src,
			     tweak_t t)
{
	store_le64(dst, load_le64(src) ^ t.lo);
	store_le64(dst + 8, load_le64(src + 8) ^ t.hi);
}

static inline tweak_t tweak_double(tweak_t t)
{
	uint64_t carry = (0 - (t.hi >> 63)) & 0x87;

	t.hi = (t.hi << 1) | (t.lo >> 63);
	t.lo = (t.lo << 1) ^ carry;
	return t;
}
#endif

/* dst = src ^ the tweak sequence of unit i (starting at tw + 16 i), for
 * each of the n units (dst == src: in place). Four units run side by side
 * so that four doubling chains overlap instead of waiting on each other. */
static void whiten(unsigned char *dst, const unsigned char *src,
		   const unsigned char *tw, uint32_t n)
{
	const size_t u = UB_XTS_UNIT_LEN;
	uint32_t i = 0;
	size_t j;

	for (; i + 4 <= n; i += 4) {
		unsigned char *d = dst + i * u;
		const unsigned char *p = src + i * u;
		tweak_t t0 = tweak_load(tw + i * BLOCK_LEN);
		tweak_t t1 = tweak_load(tw + (i + 1) * BLOCK_LEN);
		tweak_t t2 = tweak_load(tw + (i + 2) * BLOCK_LEN);
		tweak_t t3 = tweak_load(tw + (i + 3) * BLOCK_LEN);

		for (j = 0; j < u; j += BLOCK_LEN) {
			tweak_xor(d + j, p + j, t0);
			tweak_xor(d + u + j, p + u + j, t1);
			tweak_xor(d + 2 * u + j, p + 2 * u + j, t2);
			tweak_xor(d + 3 * u + j, p + 3 * u + j, t3);
			t0 = tweak_double(t0);
			t1 = tweak_double(t1);
			t2 = tweak_double(t2);
			t3 = tweak_double(t3);
		}
	}
	for (; i < n; i++) {
		unsigned char *d = dst + i * u;
		const unsigned char *p = src + i * u;
		tweak_t t = tweak_load(tw + i * BLOCK_LEN);

		for (j = 0; j < u; j += BLOCK_LEN) {
			tweak_xor(d + j, p + j, t);
			t = tweak_double(t);
		}
	}
}

/* One pass of AES-ECB over len bytes in place (len a multiple of 16 and at
 * most CHUNK_UNITS units, so it fits an int). */
static int ecb(EVP_CIPHER_CTX *ctx, unsigned char *p, size_t len)
{
	int out = 0;

	if (EVP_CipherUpdate(ctx, p, &out, p, (int)len) != 1 ||
	    out != (int)len) {
		ERR_clear_error();
		return -EIO;
	}
	return 0;
}

/* XTS over n <= CHUNK_UNITS units from src into dst (dst == src: in
 * place) whose initial tweaks are in x->tw; encrypts those tweaks in place
 * first. The first whitening pass does the copy, so out of place costs no
 * extra pass over the data. */
static int crypt_chunk(struct ub_xts *x, unsigned char *dst,
		       const unsigned char *src, uint32_t n, bool enc)
{
	int rc;

	rc = ecb(x->tweak, x->tw, (size_t)n * BLOCK_LEN);
	if (rc)
		return rc;
	whiten(dst, src, x->tw, n);
	rc = ecb(enc ? x->enc : x->dec, dst, (size_t)n * UB_XTS_UNIT_LEN);
	if (rc)
		return rc;
	whiten(dst, dst, x->tw, n);
	return 0;
}

static int crypt_sectors(struct ub_xts *x, void *dst, const void *src,
			 uint64_t first, uint32_t count, bool enc)
{
	unsigned char *d = dst;
	const unsigned char *p = src;
	size_t used = 0; /* bytes of x->tw to wipe */
	uint32_t done = 0, n, i;
	int rc = 0;

	if (!x || (count && (!dst || !src)))
		return -EINVAL;
	if (count && first > UINT64_MAX - (count - 1))
		return -EINVAL;
	while (done < count) {
		size_t off = (size_t)done * UB_XTS_UNIT_LEN;

		n = count - done < CHUNK_UNITS ? count - done : CHUNK_UNITS;
		for (i = 0; i < n; i++)
			ub_xts_sector_tweak(first + done + i,
					    x->tw + i * BLOCK_LEN);
		if (used < (size_t)n * BLOCK_LEN)
			used = (size_t)n * BLOCK_LEN;
		rc = crypt_chunk(x, d + off, p + off, n, enc);
		if (rc)
			goto out;
		done += n;
	}
out:
	ub_wipe(x->tw, used);
	return rc;
}

static int crypt_unit(struct ub_xts *x, void *buf,
		      const unsigned char tweak[UB_XTS_TWEAK_LEN], bool enc)
{
	int rc;

	if (!x || !buf || !tweak)
		return -EINVAL;
	memcpy(x->tw, tweak, UB_XTS_TWEAK_LEN);
	rc = crypt_chunk(x, buf, buf, 1, enc);
	ub_wipe(x->tw, UB_XTS_TWEAK_LEN);
	return rc;
}

int ub_xts_encrypt(struct ub_xts *x, void *buf, uint64_t first_sector,
		   uint32_t count)
{
	return crypt_sectors(x, buf, buf, first_sector, count, true);
}

int ub_xts_decrypt(struct ub_xts *x, void *buf, uint64_t first_sector,
		   uint32_t count)
{
	return crypt_sectors(x, buf, buf, first_sector, count, false);
}

int ub_xts_encrypt_to(struct ub_xts *x, void *dst, const void *src,
		      uint64_t first_sector, uint32_t count)
{
	return crypt_sectors(x, dst, src, first_sector, count, true);
}

int ub_xts_encrypt_unit(struct ub_xts *x, void *buf,
			const unsigned char tweak[UB_XTS_TWEAK_LEN])
{
	return crypt_unit(x, buf, tweak, true);
}

int ub_xts_decrypt_unit(struct ub_xts *x, void *buf,
			const unsigned char tweak[UB_XTS_TWEAK_LEN])
{
	return crypt_unit(x, buf, tweak, false);
}

void ub_xts_sector_tweak(uint64_t sector, unsigned char tweak[UB_XTS_TWEAK_LEN])
{
	uint64_t le = htole64(sector);

	memset(tweak, 0, 8);
	memcpy(tweak + 8, &le, sizeof(le));
}

/* Sets msg from OpenSSL's last error (never key material) and clears the
 * error queue. */
static int openssl_err(struct ub_err *err, int rc, const char *what)
{
	char reason[256];
	unsigned long e = ERR_peek_last_error();

	if (e)
		ERR_error_string_n(e, reason, sizeof(reason));
	else
		snprintf(reason, sizeof(reason), "unknown OpenSSL error");
	ERR_clear_error();
	return ub_err_ret(err, rc, "%s: %s", what, reason);
}

static int init_ctx(EVP_CIPHER_CTX **ctx, const EVP_CIPHER *aes,
		    const unsigned char *key, int enc, struct ub_err *err)
{
	*ctx = EVP_CIPHER_CTX_new();
	if (!*ctx)
		return ub_err_ret(err, -ENOMEM,
				  "Failed to initialize cipher: out of memory");
	if (EVP_CipherInit_ex2(*ctx, aes, key, NULL, enc, NULL) != 1 ||
	    EVP_CIPHER_CTX_set_padding(*ctx, 0) != 1)
		return openssl_err(err, -EIO, "Failed to initialize cipher");
	return 0;
}

/* Builds an object from the two halves (each UB_XTS_HALF_KEY_LEN bytes). */
static int xts_create(struct ub_xts **out, const unsigned char *key1,
		      const unsigned char *key2, struct ub_err *err)
{
	struct ub_xts *x; /* owned until handed to *out */
	EVP_CIPHER *aes;  /* owned: the contexts keep their own references */
	int rc;

	*out = NULL;
	if (CRYPTO_memcmp(key1, key2, UB_XTS_HALF_KEY_LEN) == 0)
		return ub_err_ret(err, -EINVAL,
				  "XTS key halves are identical; OpenSSL "
				  "refuses such keys and they weaken XTS");
	x = calloc(1, sizeof(*x));
	if (!x)
		return ub_err_ret(err, -ENOMEM,
				  "Failed to initialize cipher: out of memory");
	x->key = ub_secmem_alloc(UB_XTS_KEY_LEN);
	x->tw = ub_secmem_alloc(CHUNK_UNITS * BLOCK_LEN);
	if (!x->key || !x->tw) {
		rc = ub_err_ret(err, -ENOMEM,
				"Failed to initialize cipher: out of memory");
		goto err_free;
	}
	memcpy(x->key, key1, UB_XTS_HALF_KEY_LEN);
	memcpy(x->key + UB_XTS_HALF_KEY_LEN, key2, UB_XTS_HALF_KEY_LEN);
	aes = EVP_CIPHER_fetch(NULL, "AES-256-ECB", NULL);
	if (!aes) {
		rc = openssl_err(err, -EIO, "Failed to fetch AES-256-ECB");
		goto err_free;
	}
	rc = init_ctx(&x->tweak, aes, x->key + UB_XTS_HALF_KEY_LEN, 1, err);
	if (!rc)
		rc = init_ctx(&x->enc, aes, x->key, 1, err);
	if (!rc)
		rc = init_ctx(&x->dec, aes, x->key, 0, err);
	EVP_CIPHER_free(aes);
	if (rc)
		goto err_free;
	*out = x;
	return 0;

err_free:
	ub_xts_free(x);
	return rc;
}

int ub_xts_new(struct ub_xts **out, const unsigned char *key, size_t key_len,
	       struct ub_err *err)
{
	if (key_len != UB_XTS_KEY_LEN || !key) {
		*out = NULL;
		return ub_err_ret(err, -EINVAL,
				  "XTS key length must be exactly 64 bytes "
				  "(got %zu bytes)",
				  key ? key_len : 0);
	}
	return xts_create(out, key, key + UB_XTS_HALF_KEY_LEN, err);
}

int ub_xts_new_split(struct ub_xts **out, const unsigned char *key1,
		     size_t key1_len, const unsigned char *key2,
		     size_t key2_len, struct ub_err *err)
{
	if (!key1 || !key2 || key1_len != UB_XTS_HALF_KEY_LEN ||
	    key2_len != UB_XTS_HALF_KEY_LEN) {
		*out = NULL;
		return ub_err_ret(err, -EINVAL,
				  "Key length must be exactly 32 bytes");
	}
	return xts_create(out, key1, key2, err);
}

int ub_xts_new_random(struct ub_xts **out, struct ub_err *err)
{
	unsigned char *key; /* owned, secmem: freed (wiped) before return */
	int rc;

	*out = NULL;
	key = ub_secmem_alloc(UB_XTS_KEY_LEN);
	if (!key)
		return ub_err_ret(err, -ENOMEM,
				  "Failed to generate random bytes: out of "
				  "memory");
	if (RAND_bytes(key, UB_XTS_KEY_LEN) != 1) {
		rc = openssl_err(err, -EIO, "Failed to generate random bytes");
		goto out;
	}
	rc = xts_create(out, key, key + UB_XTS_HALF_KEY_LEN, err);
out:
	ub_secmem_free(key, UB_XTS_KEY_LEN);
	return rc;
}

int ub_xts_clone(const struct ub_xts *x, struct ub_xts **out,
		 struct ub_err *err)
{
	return xts_create(out, x->key, x->key + UB_XTS_HALF_KEY_LEN, err);
}

void ub_xts_free(struct ub_xts *x)
{
	if (!x)
		return;
	/* OpenSSL cleanses the key schedules when it frees the contexts. */
	EVP_CIPHER_CTX_free(x->tweak);
	EVP_CIPHER_CTX_free(x->enc);
	EVP_CIPHER_CTX_free(x->dec);
	ub_secmem_free(x->key, UB_XTS_KEY_LEN);
	ub_secmem_free(x->tw, CHUNK_UNITS * BLOCK_LEN);
	free(x);
}

const unsigned char *ub_xts_key(const struct ub_xts *x)
{
	return x->key;
}

bool ub_xts_equal(const struct ub_xts *a, const struct ub_xts *b)
{
	return CRYPTO_memcmp(a->key, b->key, UB_XTS_KEY_LEN) == 0;
}
