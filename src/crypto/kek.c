#include "crypto/kek.h"

#include <errno.h>
#include <limits.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <string.h>

#include "util/secmem.h"

static int check_key(size_t kek_len, struct ub_err *err)
{
	if (kek_len != UB_KEK_KEY_LEN)
		return ub_err_ret(err, -EINVAL,
				  "Failed to initialize cipher: key must be "
				  "%d bytes (got %zu)",
				  UB_KEK_KEY_LEN, kek_len);
	return 0;
}

/* Feeds data to EVP in int-sized pieces; out NULL means AAD. */
static int feed(EVP_CIPHER_CTX *ctx, int enc, unsigned char *out,
		const unsigned char *in, size_t len)
{
	while (len) {
		int n = len > INT_MAX ? INT_MAX : (int)len;
		int w;
		int ok = enc ? EVP_EncryptUpdate(ctx, out, &w, in, n)
			     : EVP_DecryptUpdate(ctx, out, &w, in, n);

		if (!ok || (out && w != n))
			return -1;
		if (out)
			out += n;
		in += n;
		len -= (size_t)n;
	}
	return 0;
}

int ub_kek_open(const unsigned char *kek, size_t kek_len, const void *aad,
		size_t aad_len, const unsigned char *env, size_t env_len,
		unsigned char *out, struct ub_err *err)
{
	const unsigned char *ct = env + UB_KEK_NONCE_LEN;
	size_t ct_len;
	unsigned char tag[UB_KEK_TAG_LEN]; /* stack copy: EVP wants non-const */
	EVP_CIPHER_CTX *ctx;		   /* owned: freed at out_ctx */
	int w, rc;

	rc = check_key(kek_len, err);
	if (rc)
		return rc;
	if (env_len < UB_KEK_OVERHEAD)
		return ub_err_ret(err, -EINVAL,
				  "Failed to decrypt data: ciphertext is too "
				  "short to include nonce and tag");
	ct_len = env_len - UB_KEK_OVERHEAD;
	memcpy(tag, env + env_len - UB_KEK_TAG_LEN, sizeof(tag));
	ctx = EVP_CIPHER_CTX_new();
	if (!ctx) {
		rc = ub_err_ret(err, -ENOMEM,
				"Failed to initialize cipher: out of memory");
		goto out;
	}
	if (!EVP_DecryptInit_ex(ctx, EVP_aes_256_gcm(), NULL, NULL, NULL) ||
	    !EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_IVLEN, UB_KEK_NONCE_LEN,
				 NULL) ||
	    !EVP_DecryptInit_ex(ctx, NULL, NULL, kek, env)) {
		rc = ub_err_ret(err, -EINVAL,
				"Failed to initialize cipher: OpenSSL error");
		goto out_ctx;
	}
	if (feed(ctx, 0, NULL, aad, aad_len) || feed(ctx, 0, out, ct, ct_len) ||
	    !EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_TAG, UB_KEK_TAG_LEN,
				 tag) ||
	    EVP_DecryptFinal_ex(ctx, out ? out + ct_len : tag, &w) <= 0) {
		ub_wipe(out, ct_len);
		rc =
		    ub_err_ret(err, -EBADMSG,
			       "Failed to decrypt data: authentication failed");
		goto out_ctx;
	}
	rc = 0;
out_ctx:
	EVP_CIPHER_CTX_free(ctx);
out:
	if (rc)
		ERR_clear_error();
	return rc;
}

int ub_kek_seal(const unsigned char *kek, size_t kek_len, const void *aad,
		size_t aad_len, const unsigned char *nonce12,
		const unsigned char *pt, size_t pt_len, unsigned char *out,
		struct ub_err *err)
{
	unsigned char *ct = out + UB_KEK_NONCE_LEN;
	EVP_CIPHER_CTX *ctx; /* owned: freed at out_ctx */
	int w, rc;

	rc = check_key(kek_len, err);
	if (rc)
		return rc;
	if (nonce12)
		memcpy(out, nonce12, UB_KEK_NONCE_LEN);
	else if (RAND_bytes(out, UB_KEK_NONCE_LEN) != 1)
		return ub_err_ret(err, -EIO,
				  "Failed to encrypt data: no random nonce");
	ctx = EVP_CIPHER_CTX_new();
	if (!ctx) {
		rc = ub_err_ret(err, -ENOMEM,
				"Failed to initialize cipher: out of memory");
		goto out;
	}
	if (!EVP_EncryptInit_ex(ctx, EVP_aes_256_gcm(), NULL, NULL, NULL) ||
	    !EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_IVLEN, UB_KEK_NONCE_LEN,
				 NULL) ||
	    !EVP_EncryptInit_ex(ctx, NULL, NULL, kek, out)) {
		rc = ub_err_ret(err, -EINVAL,
				"Failed to initialize cipher: OpenSSL error");
		goto out_ctx;
	}
	if (feed(ctx, 1, NULL, aad, aad_len) || feed(ctx, 1, ct, pt, pt_len) ||
	    EVP_EncryptFinal_ex(ctx, ct + pt_len, &w) <= 0 ||
	    !EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_GET_TAG, UB_KEK_TAG_LEN,
				 ct + pt_len)) {
		rc = ub_err_ret(err, -EIO,
				"Failed to encrypt data: OpenSSL error");
		goto out_ctx;
	}
	rc = 0;
out_ctx:
	EVP_CIPHER_CTX_free(ctx);
out:
	if (rc) {
		ub_wipe(out, pt_len + UB_KEK_OVERHEAD);
		ERR_clear_error();
	}
	return rc;
}
