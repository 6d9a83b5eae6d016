#include "crypto/key_wrap.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "crypto/kek.h"
#include "util/base64.h"
#include "util/secmem.h"

int ub_kw_method_parse(const char *name, enum ub_kw_method *out,
		       struct ub_err *err)
{
	if (name && strcmp(name, UB_KW_NONE_NAME) == 0) {
		*out = UB_KW_NONE;
		return 0;
	}
	if (name && strcmp(name, UB_KW_AES256_GCM_NAME) == 0) {
		*out = UB_KW_AES256_GCM;
		return 0;
	}
	return ub_err_ret(err, -EINVAL,
			  "unknown key encryption method '%.64s', expected "
			  "'" UB_KW_NONE_NAME "' or '" UB_KW_AES256_GCM_NAME
			  "'",
			  name ? name : "");
}

const char *ub_kw_method_name(enum ub_kw_method m)
{
	switch (m) {
	case UB_KW_NONE:
		return UB_KW_NONE_NAME;
	case UB_KW_AES256_GCM:
		return UB_KW_AES256_GCM_NAME;
	}
	return NULL;
}

void ub_kw_free(struct ub_kw *kw)
{
	if (!kw)
		return;
	ub_secmem_free(kw->key, kw->key_len);
	free(kw->aad);
	memset(kw, 0, sizeof(*kw));
}

int ub_kw_init(struct ub_kw *kw, enum ub_kw_method method,
	       const unsigned char *key, size_t key_len, const void *aad,
	       size_t aad_len, struct ub_err *err)
{
	int rc;

	memset(kw, 0, sizeof(*kw));
	if (!ub_kw_method_name(method))
		return ub_err_ret(err, -EINVAL,
				  "unknown key encryption method %d",
				  (int)method);
	if (key) {
		kw->key = ub_secmem_alloc(key_len);
		if (!kw->key) {
			rc = ub_err_ret(err, -ENOMEM,
					"Failed to store key: out of memory");
			goto err_free;
		}
		kw->key_len = key_len;
		if (key_len)
			memcpy(kw->key, key, key_len);
	}
	if (aad) {
		/* One byte at least, so an empty AAD is not NULL. */
		kw->aad = malloc(aad_len ? aad_len : 1);
		if (!kw->aad) {
			rc = ub_err_ret(err, -ENOMEM,
					"Failed to store authentication data: "
					"out of memory");
			goto err_free;
		}
		kw->aad_len = aad_len;
		if (aad_len)
			memcpy(kw->aad, aad, aad_len);
	}
	kw->method = method;
	return 0;

err_free:
	ub_kw_free(kw);
	return rc;
}

int ub_kw_init_archive(struct ub_kw *kw, const unsigned char *kek,
		       size_t kek_len, struct ub_err *err)
{
	if (!kek)
		return ub_kw_init(kw, UB_KW_NONE, NULL, 0, NULL, 0, err);
	return ub_kw_init(kw, UB_KW_AES256_GCM, kek, kek_len, UB_KW_ARCHIVE_AAD,
			  UB_KW_ARCHIVE_AAD_LEN, err);
}

int ub_kw_describe(const struct ub_kw *kw, char *buf, size_t cap)
{
	const char *name = ub_kw_method_name(kw->method);
	char key[48], aad[32];

	if (kw->key)
		snprintf(key, sizeof(key), "[REDACTED] (%zu bytes)",
			 kw->key_len);
	else
		snprintf(key, sizeof(key), "none");
	if (kw->aad)
		snprintf(aad, sizeof(aad), "%zu bytes", kw->aad_len);
	else
		snprintf(aad, sizeof(aad), "none");
	return snprintf(buf, cap,
			"KeyEncryptionCipher { method: %s, key: %s, "
			"auth_data: %s }",
			name ? name : "invalid", key, aad);
}

/* Copies in into new secure memory with extra zero bytes after it. */
static int copy_secret(const unsigned char *in, size_t in_len, size_t extra,
		       unsigned char **out, size_t *out_len, struct ub_err *err)
{
	unsigned char *buf; /* owned until handed to *out */

	if (in_len > SIZE_MAX - extra)
		return ub_err_ret(err, -EINVAL, "key data too large");
	buf = ub_secmem_alloc(in_len + extra);
	if (!buf)
		return ub_err_ret(err, -ENOMEM,
				  "Failed to copy key data: out of memory");
	if (in_len)
		memcpy(buf, in, in_len);
	*out = buf;
	*out_len = in_len;
	return 0;
}

/* The checks aes256-gcm makes before touching the cipher. */
static int gcm_ready(const struct ub_kw *kw, struct ub_err *err)
{
	if (!kw->key)
		return ub_err_ret(err, -EINVAL, "Key is required");
	if (!kw->aad)
		return ub_err_ret(err, -EINVAL,
				  "Authentication data is required");
	return 0;
}

int ub_kw_wrap(const struct ub_kw *kw, const unsigned char *in, size_t in_len,
	       unsigned char **out, size_t *out_len, struct ub_err *err)
{
	unsigned char *buf; /* owned, secmem: handed to *out on success */
	size_t n;
	int rc;

	*out = NULL;
	*out_len = 0;
	if (kw->method == UB_KW_NONE)
		return copy_secret(in, in_len, 0, out, out_len, err);
	rc = gcm_ready(kw, err);
	if (rc)
		return rc;
	if (in_len > SIZE_MAX - UB_KEK_OVERHEAD)
		return ub_err_ret(err, -EINVAL,
				  "Failed to encrypt data: input too large");
	n = in_len + UB_KEK_OVERHEAD;
	buf = ub_secmem_alloc(n);
	if (!buf)
		return ub_err_ret(err, -ENOMEM,
				  "Failed to encrypt data: out of memory");
	rc = ub_kek_seal(kw->key, kw->key_len, kw->aad, kw->aad_len, NULL, in,
			 in_len, buf, err);
	if (rc) {
		ub_secmem_free(buf, n);
		return rc;
	}
	*out = buf;
	*out_len = n;
	return 0;
}

/* ub_kw_unwrap with extra zero bytes allocated after the result. */
static int unwrap_extra(const struct ub_kw *kw, const unsigned char *in,
			size_t in_len, size_t extra, unsigned char **out,
			size_t *out_len, struct ub_err *err)
{
	unsigned char *buf; /* owned, secmem: handed to *out on success */
	size_t n;
	int rc;

	*out = NULL;
	*out_len = 0;
	if (kw->method == UB_KW_NONE)
		return copy_secret(in, in_len, extra, out, out_len, err);
	rc = gcm_ready(kw, err);
	if (rc)
		return rc;
	/* Too short is reported by ub_kek_open, after the key check. */
	n = in_len < UB_KEK_OVERHEAD ? 0 : in_len - UB_KEK_OVERHEAD;
	buf = ub_secmem_alloc(n + extra);
	if (!buf)
		return ub_err_ret(err, -ENOMEM,
				  "Failed to decrypt data: out of memory");
	rc = ub_kek_open(kw->key, kw->key_len, kw->aad, kw->aad_len,
			 in ? in : (const unsigned char *)"", in_len, buf, err);
	if (rc) {
		ub_secmem_free(buf, n + extra);
		/* Every KEK failure is an invalid-parameter error. */
		return rc == -EBADMSG ? -EINVAL : rc;
	}
	*out = buf;
	*out_len = n;
	return 0;
}

int ub_kw_unwrap(const struct ub_kw *kw, const unsigned char *in, size_t in_len,
		 unsigned char **out, size_t *out_len, struct ub_err *err)
{
	return unwrap_extra(kw, in, in_len, 0, out, out_len, err);
}

int ub_kw_unwrap_psk(const struct ub_kw *kw, const unsigned char *in,
		     size_t in_len, unsigned char **out, size_t *out_len,
		     struct ub_err *err)
{
	return unwrap_extra(kw, in, in_len, 0, out, out_len, err);
}

/* Checks s against the UTF-8 encoding form (no overlong forms, surrogates
 * or code points above U+10FFFF). Returns 0, or -1 with *pos at the first
 * bad sequence and *truncated set when the input ends inside it. */
static int utf8_check(const unsigned char *s, size_t len, size_t *pos,
		      int *truncated)
{
	size_t i = 0;

	while (i < len) {
		unsigned char b = s[i];
		unsigned char lo = 0x80, hi = 0xbf;
		size_t n, k;

		if (b < 0x80) {
			i++;
			continue;
		}
		if (b >= 0xc2 && b <= 0xdf) {
			n = 2;
		} else if (b >= 0xe0 && b <= 0xef) {
			n = 3;
			if (b == 0xe0)
				lo = 0xa0;
			else if (b == 0xed)
				hi = 0x9f;
		} else if (b >= 0xf0 && b <= 0xf4) {
			n = 4;
			if (b == 0xf0)
				lo = 0x90;
			else if (b == 0xf4)
				hi = 0x8f;
		} else {
			goto bad;
		}
		for (k = 1; k < n; k++) {
			if (i + k >= len) {
				*truncated = 1;
				*pos = i;
				return -1;
			}
			if (s[i + k] < lo || s[i + k] > hi)
				goto bad;
			lo = 0x80;
			hi = 0xbf;
		}
		i += n;
	}
	return 0;

bad:
	*truncated = 0;
	*pos = i;
	return -1;
}

int ub_kw_unwrap_credential(const struct ub_kw *kw, const unsigned char *in,
			    size_t in_len, char **out, size_t *out_len,
			    struct ub_err *err)
{
	unsigned char *buf; /* owned, secmem: handed to *out on success */
	size_t n, pos;
	int truncated, rc;

	*out = NULL;
	*out_len = 0;
	rc = unwrap_extra(kw, in, in_len, 1, &buf, &n, err);
	if (rc)
		return rc;
	if (utf8_check(buf, n, &pos, &truncated)) {
		ub_secmem_free(buf, n + 1);
		return ub_err_ret(err, -EINVAL,
				  "Decrypted AWS credential is not valid "
				  "UTF-8: %s sequence at byte %zu",
				  truncated ? "incomplete" : "invalid", pos);
	}
	*out = (char *)buf;
	*out_len = n;
	return 0;
}

int ub_kw_wrap_xts_split(const struct ub_kw *kw, const struct ub_xts *x,
			 unsigned char **w1, size_t *w1_len, unsigned char **w2,
			 size_t *w2_len, struct ub_err *err)
{
	const unsigned char *key = ub_xts_key(x);
	int rc;

	*w2 = NULL;
	*w2_len = 0;
	rc = ub_kw_wrap(kw, key, UB_XTS_HALF_KEY_LEN, w1, w1_len, err);
	if (rc)
		return rc;
	rc = ub_kw_wrap(kw, key + UB_XTS_HALF_KEY_LEN, UB_XTS_HALF_KEY_LEN, w2,
			w2_len, err);
	if (rc) {
		ub_secmem_free(*w1, *w1_len);
		*w1 = NULL;
		*w1_len = 0;
	}
	return rc;
}

/* Unwraps one XTS half, which must come out as 32 bytes. */
static int unwrap_half(const struct ub_kw *kw, const unsigned char *in,
		       size_t in_len, unsigned char **out, struct ub_err *err)
{
	size_t n;
	int rc;

	rc = ub_kw_unwrap(kw, in, in_len, out, &n, err);
	if (rc)
		return rc;
	if (n != UB_XTS_HALF_KEY_LEN) {
		ub_secmem_free(*out, n);
		*out = NULL;
		return ub_err_ret(err, -EINVAL,
				  "Key length must be exactly 32 bytes");
	}
	return 0;
}

int ub_kw_unwrap_xts_split(const struct ub_kw *kw, const unsigned char *w1,
			   size_t w1_len, const unsigned char *w2,
			   size_t w2_len, struct ub_xts **out,
			   struct ub_err *err)
{
	unsigned char *k1 = NULL; /* owned, secmem: freed before return */
	unsigned char *k2 = NULL; /* owned, secmem: freed before return */
	int rc;

	*out = NULL;
	rc = unwrap_half(kw, w1, w1_len, &k1, err);
	if (rc)
		goto out;
	rc = unwrap_half(kw, w2, w2_len, &k2, err);
	if (rc)
		goto out;
	rc = ub_xts_new_split(out, k1, UB_XTS_HALF_KEY_LEN, k2,
			      UB_XTS_HALF_KEY_LEN, err);
out:
	ub_secmem_free(k2, UB_XTS_HALF_KEY_LEN);
	ub_secmem_free(k1, UB_XTS_HALF_KEY_LEN);
	return rc;
}

int ub_kw_wrap_xts(const struct ub_kw *kw, const struct ub_xts *x,
		   unsigned char **out, size_t *out_len, struct ub_err *err)
{
	return ub_kw_wrap(kw, ub_xts_key(x), UB_XTS_KEY_LEN, out, out_len, err);
}

int ub_kw_unwrap_xts(const struct ub_kw *kw, const unsigned char *in,
		     size_t in_len, struct ub_xts **out, struct ub_err *err)
{
	unsigned char *key; /* owned, secmem: freed before return */
	size_t n;
	int rc;

	*out = NULL;
	rc = ub_kw_unwrap(kw, in, in_len, &key, &n, err);
	if (rc)
		return rc;
	/* ub_xts_new reports a length other than 64. */
	rc = ub_xts_new(out, key, n, err);
	ub_secmem_free(key, n);
	return rc;
}

int ub_kw_key_decode_opt(const char *b64, unsigned char **out, size_t *out_len,
			 struct ub_err *err)
{
	unsigned char *buf; /* owned, secmem: handed to *out on success */
	size_t len, cap, n;
	int rc;

	*out = NULL;
	*out_len = 0;
	if (!b64)
		return 0;
	len = strlen(b64);
	rc = ub_base64_decode(b64, len, NULL, 0, &cap, err);
	if (rc)
		return rc;
	buf = ub_secmem_alloc(cap);
	if (!buf)
		return ub_err_ret(err, -ENOMEM,
				  "Failed to decode key: out of memory");
	rc = ub_base64_decode(b64, len, buf, cap, &n, err);
	if (rc) {
		ub_secmem_free(buf, cap);
		return rc;
	}
	*out = buf;
	*out_len = n;
	return 0;
}

int ub_kw_key_decode(const char *b64, unsigned char **out, size_t *out_len,
		     struct ub_err *err)
{
	if (!b64) {
		*out = NULL;
		*out_len = 0;
		return ub_err_ret(err, -EINVAL, "missing key");
	}
	return ub_kw_key_decode_opt(b64, out, out_len, err);
}

int ub_kw_key_encode(const unsigned char *key, size_t len, char **out,
		     size_t *out_len, struct ub_err *err)
{
	size_t n;
	char *buf; /* owned, secmem: handed to *out */

	*out = NULL;
	*out_len = 0;
	if (len > (SIZE_MAX - 4) / 4 * 3)
		return ub_err_ret(err, -EINVAL, "key too large to encode");
	n = ub_base64_encoded_len(len);
	buf = ub_secmem_alloc(n + 1);
	if (!buf)
		return ub_err_ret(err, -ENOMEM,
				  "Failed to encode key: out of memory");
	ub_base64_encode(key ? key : (const unsigned char *)"", len, buf);
	*out = buf;
	*out_len = n;
	return 0;
}
