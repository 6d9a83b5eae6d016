#include "util/secmem.h"

#include <errno.h>
#include <openssl/crypto.h>

#include "util/log.h"

/* 1 MiB: room for every secret a configuration can hold (each at most
 * 8192 bytes) plus key schedules; well under the default RLIMIT_MEMLOCK. */
#define SECURE_HEAP_SIZE (1u << 20)
#define SECURE_HEAP_MIN	 16

static int secmem_state; /* 0 = not tried, 1 = locked, -1 = fallback */

int ub_secmem_init(void)
{
	if (secmem_state == 0) {
		if (CRYPTO_secure_malloc_initialized() ||
		    CRYPTO_secure_malloc_init(SECURE_HEAP_SIZE,
					      SECURE_HEAP_MIN) != 0) {
			secmem_state = 1;
		} else {
			secmem_state = -1;
			LOG_WARN(
			    "cannot lock memory for secrets (RLIMIT_MEMLOCK "
			    "too small?); keys will live in ordinary memory");
		}
	}
	return secmem_state == 1 ? 0 : -ENOMEM;
}

bool ub_secmem_locked(void)
{
	return secmem_state == 1;
}

void *ub_secmem_alloc(size_t n)
{
	if (secmem_state == 0)
		ub_secmem_init();
	/* OpenSSL rejects size 0 on some paths; always hand out one byte. */
	return OPENSSL_secure_zalloc(n ? n : 1);
}

void ub_secmem_free(void *p, size_t n)
{
	if (!p)
		return;
	OPENSSL_secure_clear_free(p, n ? n : 1);
}

void ub_wipe(void *p, size_t n)
{
	if (p && n)
		OPENSSL_cleanse(p, n);
}
