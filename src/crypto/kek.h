/* KEK envelopes: AES-256-GCM through OpenSSL EVP, laid out as
 * nonce (12 bytes) ‖ ciphertext (plaintext length) ‖ tag (16 bytes), with
 * caller-given AAD (config.md §9.4: the secret's name).
 *
 * Nothing here allocates buffers for the caller: out is always the
 * caller's. Messages never contain key, plaintext or envelope bytes. */
#ifndef UB_CRYPTO_KEK_H
#define UB_CRYPTO_KEK_H

#include <stddef.h>

#include "util/err.h"

#define UB_KEK_KEY_LEN	 32
#define UB_KEK_NONCE_LEN 12
#define UB_KEK_TAG_LEN	 16
#define UB_KEK_OVERHEAD	 (UB_KEK_NONCE_LEN + UB_KEK_TAG_LEN)

/* Opens env (env_len bytes) with kek into out, which must hold
 * env_len - UB_KEK_OVERHEAD bytes (may be NULL only when that is 0). Errors:
 * -EINVAL "Failed to initialize cipher: key must be 32 bytes (got N)", -EINVAL
 * "Failed to decrypt data: ciphertext is too short to include nonce and tag",
 * -EBADMSG "Failed to decrypt data: authentication failed" (out is wiped),
 * -ENOMEM. */
int ub_kek_open(const unsigned char *kek, size_t kek_len, const void *aad,
		size_t aad_len, const unsigned char *env, size_t env_len,
		unsigned char *out, struct ub_err *err);

/* Seals pt (pt_len bytes) into out, which must hold pt_len +
 * UB_KEK_OVERHEAD bytes. nonce12 is the 12-byte nonce, or NULL for a random
 * one. Returns 0 or a negative errno (out wiped on failure). */
int ub_kek_seal(const unsigned char *kek, size_t kek_len, const void *aad,
		size_t aad_len, const unsigned char *nonce12,
		const unsigned char *pt, size_t pt_len, unsigned char *out,
		struct ub_err *err);

#endif
