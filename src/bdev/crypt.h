/* Crypt device: AES-256-XTS at rest over any device (storage.md §3.4).
 * One 512-byte XTS data unit per sector, tweak = the sector number on the
 * wrapped device; key bytes 0-31 encrypt data, 32-63 the tweak. Each
 * channel has its own cipher context (keys expanded once per channel).
 * Writes are encrypted into the channel's own bounce buffers, never in the
 * caller's memory (a guest must not see or race ciphertext); reads are
 * decrypted in place after they complete. WRITE_ZEROES writes encrypted
 * zeros; DISCARD is passed through (contents become unspecified). */
#ifndef UB_BDEV_CRYPT_H
#define UB_BDEV_CRYPT_H

#include "bdev/bdev.h"

/* key: 64 bytes, copied into locked memory; halves must differ. Takes a
 * reference on inner. */
int ub_crypt_bdev_wrap(struct ub_bdev *inner, const unsigned char *key,
		       size_t key_len, struct ub_bdev **out,
		       struct ub_err *err);

#endif
