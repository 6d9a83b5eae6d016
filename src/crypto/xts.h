/* AES-256-XTS sector cipher (storage.md §3.4, §4.1): every 512-byte sector
 * is one XTS data unit; key1 (bytes 0-31 of the 64-byte key) encrypts the
 * data, key2 (bytes 32-63) the tweak; the initial tweak of sector s is
 * 8 zero bytes followed by LE64(s) (not dm-crypt's plain64).
 *
 * The output is that of OpenSSL's AES-256-XTS with key = key1 || key2 and
 * IV = that tweak. It is computed as XTS's definition reads: the tweaks of
 * up to 32 sectors are encrypted with key2 in one AES-ECB call, the data is
 * whitened with the tweak sequence, encrypted with key1 in one AES-ECB
 * call and whitened again, so EVP is entered twice per 32 sectors rather
 * than twice per sector.
 *
 * Deviation from the reference: keys whose two halves are identical are
 * rejected (-EINVAL) by every constructor. OpenSSL's XTS refuses them, and
 * using the data key for the tweak voids XTS's security argument; the
 * reference (ISA-L) accepts them.
 *
 * Threads: an object keeps mutable cipher contexts and scratch, so it is
 * used by one thread at a time; give each I/O thread its own object
 * (ub_xts_clone). The raw key and the encrypted tweaks live in
 * ub_secmem_alloc memory and are wiped; the AES key schedules live inside
 * OpenSSL's cipher contexts, which OpenSSL wipes when they are freed.
 * Nothing here logs or prints key bytes. */
#ifndef UB_CRYPTO_XTS_H
#define UB_CRYPTO_XTS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "util/err.h"

#define UB_XTS_KEY_LEN	    64
#define UB_XTS_HALF_KEY_LEN 32
#define UB_XTS_UNIT_LEN	    512
#define UB_XTS_TWEAK_LEN    16

struct ub_xts;

/* New object from one 64-byte key (key1 || key2). Errors: -EINVAL "XTS key
 * length must be exactly 64 bytes (got N bytes)", -EINVAL "XTS key halves
 * are identical; OpenSSL refuses such keys and they weaken XTS", -ENOMEM,
 * -EIO (OpenSSL). Caller frees *out with ub_xts_free. */
int ub_xts_new(struct ub_xts **out, const unsigned char *key, size_t key_len,
	       struct ub_err *err);

/* New object from the data key and the tweak key, 32 bytes each (else
 * -EINVAL "Key length must be exactly 32 bytes"); otherwise as ub_xts_new. */
int ub_xts_new_split(struct ub_xts **out, const unsigned char *key1,
		     size_t key1_len, const unsigned char *key2,
		     size_t key2_len, struct ub_err *err);

/* New object with two independent random 32-byte keys (RAND_bytes); -EIO
 * "Failed to generate random bytes: ..." when the CSPRNG fails. */
int ub_xts_new_random(struct ub_xts **out, struct ub_err *err);

/* New object with the same key as x, for another thread. */
int ub_xts_clone(const struct ub_xts *x, struct ub_xts **out,
		 struct ub_err *err);

/* Wipes and frees x; NULL is accepted. */
void ub_xts_free(struct ub_xts *x);

/* The 64-byte key (key1 || key2), owned by x, valid until ub_xts_free. */
const unsigned char *ub_xts_key(const struct ub_xts *x);

/* True when both keys are equal (constant time). */
bool ub_xts_equal(const struct ub_xts *a, const struct ub_xts *b);

/* Fills tweak with the initial tweak of sector: 8 zero bytes, LE64(sector). */
void ub_xts_sector_tweak(uint64_t sector,
			 unsigned char tweak[UB_XTS_TWEAK_LEN]);

/* Encrypt / decrypt count sectors of buf (count * 512 bytes, caller's) in
 * place; sector i of buf uses sector number first_sector + i. count 0 does
 * nothing. -EINVAL when buf is NULL with count > 0 or when the last sector
 * number would exceed 2^64 - 1 (nothing is touched then); -EIO when OpenSSL
 * fails, and buf then holds garbage the caller must not use. */
int ub_xts_encrypt(struct ub_xts *x, void *buf, uint64_t first_sector,
		   uint32_t count);
int ub_xts_decrypt(struct ub_xts *x, void *buf, uint64_t first_sector,
		   uint32_t count);

/* Encrypts count sectors from src into dst (both count * 512 bytes,
 * caller's; the same buffer, or buffers that do not overlap), in one pass
 * over the data: what a write through a bounce buffer needs. Errors as
 * ub_xts_encrypt (dst holds garbage after -EIO; src is never written). */
int ub_xts_encrypt_to(struct ub_xts *x, void *dst, const void *src,
		      uint64_t first_sector, uint32_t count);

/* One 512-byte data unit in place with an explicit 16-byte initial tweak
 * (IEEE 1619's data unit number as 128-bit little endian); for standard
 * test vectors. Errors as ub_xts_encrypt. */
int ub_xts_encrypt_unit(struct ub_xts *x, void *buf,
			const unsigned char tweak[UB_XTS_TWEAK_LEN]);
int ub_xts_decrypt_unit(struct ub_xts *x, void *buf,
			const unsigned char tweak[UB_XTS_TWEAK_LEN]);

#endif
