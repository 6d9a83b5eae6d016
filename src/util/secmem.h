/* Memory for secrets: OpenSSL's secure heap (an mlock'ed arena with guard
 * pages, excluded from core dumps) when it can be set up, plain heap with a
 * warning otherwise. Every buffer is wiped with OPENSSL_cleanse on free. */
#ifndef UB_UTIL_SECMEM_H
#define UB_UTIL_SECMEM_H

#include <stdbool.h>
#include <stddef.h>

/* Sets up the secure heap once per process; later calls do nothing.
 * Returns 0 when secrets will live in locked memory, -ENOMEM (after a
 * warning) when they fall back to the ordinary heap. */
int ub_secmem_init(void);
/* True when ub_secmem_alloc hands out locked memory. */
bool ub_secmem_locked(void);
/* Zeroed secret buffer of n bytes (n may be 0: returns a valid pointer);
 * NULL when out of memory. Caller frees with ub_secmem_free(p, n). */
void *ub_secmem_alloc(size_t n);
/* Wipes and frees a buffer from ub_secmem_alloc; NULL is accepted. */
void ub_secmem_free(void *p, size_t n);
/* Wipes n bytes (OPENSSL_cleanse: not optimised away). */
void ub_wipe(void *p, size_t n);

#endif
