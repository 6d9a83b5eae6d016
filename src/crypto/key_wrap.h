/* Key-encryption cipher (storage.md §4.2, archive-remote.md §2.2): a method
 * (`none` = identity, `aes256-gcm` = the envelope of crypto/kek.h:
 * nonce 12 ‖ ciphertext ‖ tag 16, fresh random nonce per wrap), an optional
 * key and optional AAD (missing is not the same as empty). Also the key
 * serialisation helpers of §4.3 (standard base64, C strings only).
 *
 * Errors are -EINVAL (invalid parameter) unless noted, with the message
 * texts of §4.2; an authentication failure is -EINVAL too (kek.c's -EBADMSG
 * is mapped). -ENOMEM when secure memory runs out.
 *
 * Ownership: a struct ub_kw owns a copy of its key (ub_secmem_alloc) and
 * AAD (heap); ub_kw_free wipes and releases them. Every buffer returned
 * through an out pointer, wrapped or not, is ub_secmem_alloc memory the
 * caller frees with ub_secmem_free(p, len) (len as documented per function),
 * since with method `none` a "wrapped" key is the key itself. On failure
 * out pointers are NULL and every intermediate buffer has been wiped.
 *
 * A struct ub_kw is read-only after initialisation: wrap and unwrap may run
 * concurrently on one object. Nothing here logs or formats key bytes;
 * ub_kw_describe prints `[REDACTED]` in their place. */
#ifndef UB_CRYPTO_KEY_WRAP_H
#define UB_CRYPTO_KEY_WRAP_H

#include <stddef.h>

#include "crypto/xts.h"
#include "util/err.h"

/* Serialised method names. */
#define UB_KW_NONE_NAME	      "none"
#define UB_KW_AES256_GCM_NAME "aes256-gcm"
/* AAD of the archive KEK (14 ASCII bytes, no NUL). */
#define UB_KW_ARCHIVE_AAD     "ubiblk_archive"
#define UB_KW_ARCHIVE_AAD_LEN (sizeof(UB_KW_ARCHIVE_AAD) - 1)

enum ub_kw_method {
	UB_KW_NONE = 0,
	UB_KW_AES256_GCM,
};

/* A zero-initialised struct is method none without key and AAD. */
struct ub_kw {
	enum ub_kw_method method;
	unsigned char *key; /* owned, secmem: key_len bytes; NULL = no key */
	size_t key_len;
	unsigned char *aad; /* owned, heap: aad_len bytes; NULL = no AAD */
	size_t aad_len;
};

/* Parses an exact method name (case-sensitive). Error: -EINVAL "unknown key
 * encryption method '<name>', expected 'none' or 'aes256-gcm'". */
int ub_kw_method_parse(const char *name, enum ub_kw_method *out,
		       struct ub_err *err);
/* The serialised name of m, or NULL when m is not a method. */
const char *ub_kw_method_name(enum ub_kw_method m);

/* Initialises *kw with copies of key (NULL = no key; any length is kept and
 * only checked when used) and aad (NULL = no AAD, else aad_len bytes, 0
 * meaning an empty AAD). Errors: -EINVAL for an unknown method, -ENOMEM;
 * *kw is then method none without key and AAD. Caller frees with
 * ub_kw_free. */
int ub_kw_init(struct ub_kw *kw, enum ub_kw_method method,
	       const unsigned char *key, size_t key_len, const void *aad,
	       size_t aad_len, struct ub_err *err);
/* The archive KEK: method aes256-gcm, key = kek (kek_len bytes), AAD =
 * UB_KW_ARCHIVE_AAD; with kek NULL, method none. Errors as ub_kw_init. */
int ub_kw_init_archive(struct ub_kw *kw, const unsigned char *kek,
		       size_t kek_len, struct ub_err *err);
/* Wipes and frees what kw owns and leaves it method none; may be called
 * again. */
void ub_kw_free(struct ub_kw *kw);

/* Writes a one-line description, e.g. "KeyEncryptionCipher { method:
 * aes256-gcm, key: [REDACTED] (32 bytes), auth_data: 14 bytes }", into buf
 * (cap bytes, NUL-terminated, truncated to fit). Returns the length the
 * full text has, as snprintf. */
int ub_kw_describe(const struct ub_kw *kw, char *buf, size_t cap);

/* Wraps in_len bytes of in (NULL only with in_len 0). Output: *out_len =
 * in_len (none) or in_len + 28 (aes256-gcm); free with ub_secmem_free(*out,
 * *out_len). aes256-gcm errors: "Key is required", "Authentication data is
 * required", "Failed to initialize cipher: …", -EIO "Failed to encrypt
 * data: …". */
int ub_kw_wrap(const struct ub_kw *kw, const unsigned char *in, size_t in_len,
	       unsigned char **out, size_t *out_len, struct ub_err *err);

/* Unwraps generic key data. Output and freeing as ub_kw_wrap (in_len - 28
 * bytes for aes256-gcm). aes256-gcm errors, in the order checked: "Key is
 * required", "Authentication data is required", "Failed to initialize
 * cipher: …" (key not 32 bytes), "Failed to decrypt data: ciphertext is too
 * short to include nonce and tag" (in_len < 28), "Failed to decrypt data:
 * authentication failed". */
int ub_kw_unwrap(const struct ub_kw *kw, const unsigned char *in, size_t in_len,
		 unsigned char **out, size_t *out_len, struct ub_err *err);

/* Unwraps a PSK secret: ub_kw_unwrap, no length check. */
int ub_kw_unwrap_psk(const struct ub_kw *kw, const unsigned char *in,
		     size_t in_len, unsigned char **out, size_t *out_len,
		     struct ub_err *err);

/* Unwraps a cloud credential, which must be valid UTF-8 (else "Decrypted
 * AWS credential is not valid UTF-8: <position>"). *out is NUL-terminated
 * after *out_len bytes (which may contain U+0000); free with
 * ub_secmem_free(*out, *out_len + 1). Other errors as ub_kw_unwrap. */
int ub_kw_unwrap_credential(const struct ub_kw *kw, const unsigned char *in,
			    size_t in_len, char **out, size_t *out_len,
			    struct ub_err *err);

/* Wraps key1 and key2 of x individually into *w1 and *w2 (free each with
 * ub_secmem_free(p, len)). Errors as ub_kw_wrap. */
int ub_kw_wrap_xts_split(const struct ub_kw *kw, const struct ub_xts *x,
			 unsigned char **w1, size_t *w1_len, unsigned char **w2,
			 size_t *w2_len, struct ub_err *err);
/* Unwraps two individually wrapped keys into a new object (free with
 * ub_xts_free). Each must unwrap to 32 bytes: "Key length must be exactly
 * 32 bytes". Other errors as ub_kw_unwrap and ub_xts_new_split. */
int ub_kw_unwrap_xts_split(const struct ub_kw *kw, const unsigned char *w1,
			   size_t w1_len, const unsigned char *w2,
			   size_t w2_len, struct ub_xts **out,
			   struct ub_err *err);

/* Wraps the 64-byte key1 ‖ key2 of x as one value. Errors as ub_kw_wrap. */
int ub_kw_wrap_xts(const struct ub_kw *kw, const struct ub_xts *x,
		   unsigned char **out, size_t *out_len, struct ub_err *err);
/* Unwraps a combined key into a new object (free with ub_xts_free): "XTS
 * key length must be exactly 64 bytes (got N bytes)" unless it unwraps to
 * 64 bytes. Other errors as ub_kw_unwrap and ub_xts_new. */
int ub_kw_unwrap_xts(const struct ub_kw *kw, const unsigned char *in,
		     size_t in_len, struct ub_xts **out, struct ub_err *err);

/* §4.3: decodes a base64 key (strict, util/base64.h; errors "invalid
 * base64: …"). b64 NULL: the optional form returns 0 with *out NULL and
 * *out_len 0 (no key); the mandatory form fails with "missing key". Free
 * *out with ub_secmem_free(*out, *out_len). */
int ub_kw_key_decode_opt(const char *b64, unsigned char **out, size_t *out_len,
			 struct ub_err *err);
int ub_kw_key_decode(const char *b64, unsigned char **out, size_t *out_len,
		     struct ub_err *err);
/* Encodes len bytes of key as a NUL-terminated base64 string of *out_len
 * characters; free with ub_secmem_free(*out, *out_len + 1). -ENOMEM. */
int ub_kw_key_encode(const unsigned char *key, size_t len, char **out,
		     size_t *out_len, struct ub_err *err);

#endif
