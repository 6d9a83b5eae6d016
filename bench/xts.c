/* Single-core throughput of the XTS sector cipher for requests of 512-byte
 * sectors, beside OpenSSL's XTS driven the straightforward way (IV reset
 * and one EVP_CipherUpdate per sector) for comparison.
 *
 * Usage: xts [--seconds S] [--rounds N] [SIZE...]
 * Each SIZE (bytes, a multiple of 512; default 4096 65536) is timed for S
 * seconds (default 2), N times (default 3); the best round is printed as
 *   <path> <op> <size> <GB/s>
 * with GB = 10^9 bytes, the unit of `openssl speed`. */
#include <errno.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "crypto/xts.h"
#include "util/err.h"

#define SECTOR	  512
#define MAX_SIZES 16
#define BATCH	  64 /* calls between clock reads */

enum path { OURS_ENC, OURS_DEC, EVP_PER_SECTOR };

static const char *const path_name[] = {"ours encrypt", "ours decrypt",
					"evp-xts-per-sector encrypt"};

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* OpenSSL's XTS with the key set once and only the IV set per sector. */
static int evp_per_sector(EVP_CIPHER_CTX *ctx, unsigned char *buf,
			  uint64_t first, uint32_t count)
{
	unsigned char iv[UB_XTS_TWEAK_LEN];
	uint32_t i;
	int len;

	for (i = 0; i < count; i++) {
		unsigned char *p = buf + (size_t)i * SECTOR;

		ub_xts_sector_tweak(first + i, iv);
		if (EVP_CipherInit_ex(ctx, NULL, NULL, NULL, iv, -1) != 1 ||
		    EVP_CipherUpdate(ctx, p, &len, p, SECTOR) != 1)
			return -EIO;
	}
	return 0;
}

static int one_call(enum path path, struct ub_xts *x, EVP_CIPHER_CTX *evp,
		    unsigned char *buf, uint64_t sector, uint32_t count)
{
	switch (path) {
	case OURS_ENC:
		return ub_xts_encrypt(x, buf, sector, count);
	case OURS_DEC:
		return ub_xts_decrypt(x, buf, sector, count);
	default:
		return evp_per_sector(evp, buf, sector, count);
	}
}

/* Best GB/s over rounds of seconds each, or a negative errno. */
static double measure(enum path path, struct ub_xts *x, EVP_CIPHER_CTX *evp,
		      unsigned char *buf, size_t size, double seconds,
		      int rounds)
{
	uint32_t count = (uint32_t)(size / SECTOR);
	uint64_t sector = 1ULL << 33; /* above 2^32, as a large disk */
	double best = 0;
	int r, i;

	for (r = 0; r < rounds; r++) {
		double start = now(), elapsed;
		uint64_t calls = 0;

		do {
			for (i = 0; i < BATCH; i++) {
				if (one_call(path, x, evp, buf, sector, count))
					return -EIO;
				sector += count;
			}
			calls += BATCH;
			elapsed = now() - start;
		} while (elapsed < seconds);
		if ((double)calls * (double)size / elapsed / 1e9 > best)
			best = (double)calls * (double)size / elapsed / 1e9;
	}
	return best;
}

int main(int argc, char **argv)
{
	size_t sizes[MAX_SIZES] = {4096, 65536};
	int nsizes = 0, rounds = 3, i, rc = 1;
	double seconds = 2;
	unsigned char key[UB_XTS_KEY_LEN];
	unsigned char *buf = NULL;  /* owned: freed at out */
	struct ub_xts *x = NULL;    /* owned: freed at out */
	EVP_CIPHER_CTX *evp = NULL; /* owned: freed at out */
	struct ub_err err = {{0}};
	size_t max = 0;

	for (i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--seconds") && i + 1 < argc) {
			seconds = atof(argv[++i]);
		} else if (!strcmp(argv[i], "--rounds") && i + 1 < argc) {
			rounds = atoi(argv[++i]);
		} else if (nsizes < MAX_SIZES && atol(argv[i]) > 0 &&
			   atol(argv[i]) % SECTOR == 0) {
			sizes[nsizes++] = (size_t)atol(argv[i]);
		} else {
			fprintf(stderr,
				"usage: %s [--seconds S] [--rounds N] "
				"[SIZE...]\n",
				argv[0]);
			return 2;
		}
	}
	if (!nsizes)
		nsizes = 2;
	if (rounds < 1 || seconds <= 0) {
		fprintf(stderr, "xts: rounds and seconds must be positive\n");
		return 2;
	}
	for (i = 0; i < nsizes; i++)
		if (sizes[i] > max)
			max = sizes[i];

	if (RAND_bytes(key, sizeof(key)) != 1) {
		fprintf(stderr, "xts: RAND_bytes failed\n");
		goto out;
	}
	if (ub_xts_new(&x, key, sizeof(key), &err)) {
		fprintf(stderr, "xts: %s\n", err.msg);
		goto out;
	}
	evp = EVP_CIPHER_CTX_new();
	if (!evp ||
	    EVP_EncryptInit_ex(evp, EVP_aes_256_xts(), NULL, key, NULL) != 1) {
		fprintf(stderr, "xts: cannot set up OpenSSL AES-256-XTS\n");
		goto out;
	}
	buf = aligned_alloc(4096, (max + 4095) / 4096 * 4096);
	if (!buf || RAND_bytes(buf, (int)max) != 1) {
		fprintf(stderr, "xts: cannot allocate the buffer\n");
		goto out;
	}
	for (i = 0; i < nsizes; i++) {
		enum path p;

		for (p = OURS_ENC; p <= EVP_PER_SECTOR; p++) {
			double gbs =
			    measure(p, x, evp, buf, sizes[i], seconds, rounds);

			if (gbs < 0) {
				fprintf(stderr, "xts: %s failed\n",
					path_name[p]);
				goto out;
			}
			printf("%s %zu %.3f\n", path_name[p], sizes[i], gbs);
			fflush(stdout);
		}
	}
	rc = 0;
out:
	OPENSSL_cleanse(key, sizeof(key));
	free(buf);
	EVP_CIPHER_CTX_free(evp);
	ub_xts_free(x);
	return rc;
}
