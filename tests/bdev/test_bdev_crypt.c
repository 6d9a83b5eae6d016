/* Crypt device over the in-memory device: storage.md §11 criteria 32-35,
 * the §10.2 vectors checked on the bytes the wrapped device stores,
 * OpenSSL's own AES-256-XTS as an oracle for everything else, iovec
 * splits, write-zeroes, chunked requests, slot and bounce limits, and
 * errors from the wrapped device (through the fault device). */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <endian.h>
#include <errno.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bdev/crypt.h"
#include "bdev/fault.h"
#include "bdev/mem.h"

#define SECTOR	512
#define MIB	(1024 * 1024)
#define TIMEOUT 2000
/* More sectors than one bounce chunk of the crypt channel (512), so one
 * request becomes three writes of the wrapped device. */
#define BIG 1300

static const char hello[] = "Hello, world!";

/* ---- helpers ---------------------------------------------------------- */

static void key_x1(unsigned char key[64])
{
	static const unsigned char k1[8] = {0x01, 0x23, 0x45, 0x67,
					    0x89, 0xab, 0xcd, 0xef};
	static const unsigned char k2[8] = {0xfe, 0xdc, 0xba, 0x98,
					    0x76, 0x54, 0x32, 0x10};

	for (int i = 0; i < 4; i++) {
		memcpy(key + 8 * i, k1, 8);
		memcpy(key + 32 + 8 * i, k2, 8);
	}
}

static void key_x2(unsigned char key[64])
{
	for (int i = 0; i < 64; i++)
		key[i] = (unsigned char)i;
}

static void hex_to_bytes(const char *hex, unsigned char *out, size_t n)
{
	assert_int_equal(strlen(hex), 2 * n);
	for (size_t i = 0; i < n; i++) {
		unsigned int v;

		assert_int_equal(sscanf(hex + 2 * i, "%2x", &v), 1);
		out[i] = (unsigned char)v;
	}
}

static void assert_prefix(const unsigned char *got, const char *hex)
{
	unsigned char want[64];
	size_t n = strlen(hex) / 2;

	assert_true(n <= sizeof(want));
	hex_to_bytes(hex, want, n);
	assert_memory_equal(got, want, n);
}

static void assert_sha256(const unsigned char *data, size_t len,
			  const char *hex)
{
	unsigned char md[32], want[32];
	unsigned int mdlen = 0;

	assert_int_equal(EVP_Digest(data, len, md, &mdlen, EVP_sha256(), NULL),
			 1);
	assert_int_equal(mdlen, 32);
	hex_to_bytes(hex, want, 32);
	assert_memory_equal(md, want, 32);
}

/* OpenSSL's AES-256-XTS of count sectors from first (the oracle). */
static void oracle_encrypt(const unsigned char key[64], uint64_t first,
			   uint32_t count, const unsigned char *in,
			   unsigned char *out)
{
	EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new(); /* freed below */

	assert_non_null(ctx);
	for (uint32_t i = 0; i < count; i++) {
		unsigned char iv[16] = {0};
		uint64_t le = htole64(first + i);
		int len = 0;

		memcpy(iv + 8, &le, 8);
		assert_int_equal(
		    EVP_EncryptInit_ex(ctx, EVP_aes_256_xts(), NULL, key, iv),
		    1);
		assert_int_equal(EVP_EncryptUpdate(ctx, out + i * SECTOR, &len,
						   in + i * SECTOR, SECTOR),
				 1);
		assert_int_equal(len, SECTOR);
	}
	EVP_CIPHER_CTX_free(ctx);
}

struct fixture {
	unsigned char key[64];
	struct ub_bdev *mem;
	struct ub_bdev *fault; /* over mem */
	struct ub_bdev *dev;   /* crypt over fault */
	struct ub_bdev_chan *ch;
};

static int setup_key(void **state, void (*key_fn)(unsigned char *),
		     uint64_t bytes)
{
	struct fixture *f = calloc(1, sizeof(*f)); /* owned by *state */
	struct ub_err err = {{0}};

	if (!f)
		return -1;
	key_fn(f->key);
	if (ub_mem_bdev_create(bytes, &f->mem, &err) ||
	    ub_fault_bdev_wrap(f->mem, &f->fault, &err) ||
	    ub_crypt_bdev_wrap(f->fault, f->key, 64, &f->dev, &err) ||
	    ub_bdev_open_chan(f->dev, &f->ch, &err)) {
		print_error("setup: %s\n", err.msg);
		ub_bdev_put(f->dev);
		ub_bdev_put(f->fault);
		ub_bdev_put(f->mem);
		free(f);
		return -1;
	}
	*state = f;
	return 0;
}

static int setup_x1(void **state)
{
	return setup_key(state, key_x1, MIB);
}

static int setup_x2(void **state)
{
	return setup_key(state, key_x2, 8 * MIB);
}

static int teardown(void **state)
{
	struct fixture *f = *state;

	ub_bdev_chan_close(f->ch);
	ub_bdev_put(f->dev);
	ub_bdev_put(f->fault);
	ub_bdev_put(f->mem);
	free(f);
	return 0;
}

static int run_iov(struct ub_bdev_chan *ch, enum ub_bdev_op op, uint64_t sector,
		   uint32_t count, const struct iovec *iov, int iovcnt,
		   uint64_t id)
{
	struct ub_bdev_req req = {op, sector, count, iov, iovcnt, id};
	struct ub_err err = {{0}};

	return ub_bdev_run_sync(ch, &req, TIMEOUT, &err);
}

static int run(struct ub_bdev_chan *ch, enum ub_bdev_op op, uint64_t sector,
	       uint32_t count, void *buf)
{
	struct iovec iov = {.iov_base = buf, .iov_len = (size_t)count * SECTOR};

	return run_iov(ch, op, sector, count, buf ? &iov : NULL, buf ? 1 : 0,
		       1);
}

static unsigned char *stored(struct fixture *f, uint64_t sector)
{
	return ub_mem_bdev_data(f->mem) + sector * SECTOR;
}

static void fill_pattern(unsigned char *p, size_t len, unsigned seed)
{
	for (size_t i = 0; i < len; i++)
		p[i] = (unsigned char)(i * 31 + seed + i / 509);
}

static unsigned char *pattern(size_t len, unsigned seed)
{
	unsigned char *p = malloc(len); /* caller frees */

	assert_non_null(p);
	fill_pattern(p, len, seed);
	return p;
}

static bool all_zero(const unsigned char *p, size_t len)
{
	for (size_t i = 0; i < len; i++)
		if (p[i])
			return false;
	return true;
}

/* ---- storage.md §11 --------------------------------------------------- */

/* Criterion 32, and the X1 vector on the stored bytes. */
static void test_x1_writes_reads_flush_and_busy(void **state)
{
	struct fixture *f = *state;
	unsigned char buf[SECTOR] = {0}, out[SECTOR];
	struct iovec iov = {.iov_base = buf, .iov_len = SECTOR};
	struct ub_bdev_req req = {UB_BDEV_WRITE, 0, 1, &iov, 1, 1};
	struct ub_bdev_cqe c[4];
	struct ub_err err = {{0}};
	struct ub_mem_bdev_metrics m;

	memcpy(buf, hello, strlen(hello));
	assert_int_equal(ub_bdev_run_sync(f->ch, &req, TIMEOUT, &err), 0);
	req.sector = 1; /* same id again */
	assert_int_equal(ub_bdev_run_sync(f->ch, &req, TIMEOUT, &err), 0);
	m = ub_mem_bdev_metrics(f->mem);
	assert_int_equal(m.writes, 2);
	assert_int_equal(m.reads, 0);

	for (uint64_t s = 0; s < 2; s++) {
		assert_int_equal(run(f->ch, UB_BDEV_READ, s, 1, out), 0);
		assert_memory_equal(out, buf, SECTOR);
	}
	assert_int_equal(ub_mem_bdev_metrics(f->mem).reads, 2);

	req = (struct ub_bdev_req){.op = UB_BDEV_FLUSH, .id = 9};
	assert_int_equal(ub_bdev_chan_queue(f->ch, &req), 0);
	assert_int_equal(ub_bdev_chan_submit(f->ch), 0);
	assert_true(ub_bdev_chan_busy(f->ch));
	assert_int_equal(ub_bdev_chan_poll(f->ch, c, 4), 1);
	assert_int_equal(c[0].id, 9);
	assert_int_equal(c[0].res, 0);
	assert_false(ub_bdev_chan_busy(f->ch));
	assert_int_equal(ub_mem_bdev_metrics(f->mem).flushes, 1);

	assert_memory_not_equal(stored(f, 0), stored(f, 1), SECTOR);
	assert_prefix(stored(f, 0), "26d9489bc33c42058b19157456f543cd"
				    "5849577c85a0524fe488d3b202903a33");
	assert_sha256(stored(f, 0), SECTOR,
		      "0f1e9409adc7673b1130ddd27298918875255456429bbe8f1b504c9f"
		      "febeaff0");
	assert_prefix(stored(f, 1), "3c06a23053c648a726af8c5e3ae79b5c"
				    "7f947fc8f0ac4365b8623a3384dee455");
	assert_sha256(stored(f, 1), SECTOR,
		      "91c62dbb453ea96dc229b90716b708d12732731ecf5f5937286f9f4b"
		      "91e31d6a");
}

/* Criterion 33. */
static void test_40_byte_key_is_rejected(void **state)
{
	struct fixture *f = *state;
	struct ub_bdev *dev = NULL;
	struct ub_err err = {{0}};

	assert_int_equal(ub_crypt_bdev_wrap(f->mem, f->key, 40, &dev, &err),
			 -EINVAL);
	assert_null(dev);
	assert_non_null(strstr(err.msg, "Failed to create crypt device"));
	assert_non_null(strstr(err.msg, "40"));
}

/* Criterion 34. */
static void test_capacity_is_the_wrapped_capacity(void **state)
{
	struct fixture *f = *state;

	assert_int_equal(f->dev->sectors, 2048);
	assert_true(f->dev->flags & UB_BDEV_F_WRITE_ZEROES);
	assert_true(f->dev->flags & UB_BDEV_F_DISCARD);
	assert_false(f->dev->flags & UB_BDEV_F_READONLY);
	/* Completions come from the wrapped channel, which has no fd. */
	assert_int_equal(ub_bdev_chan_event_fd(f->ch), -1);
}

/* Criterion 35. */
static void test_clone_reads_back_plaintext(void **state)
{
	struct fixture *f = *state;
	struct ub_bdev *clone = ub_bdev_get(f->dev);
	struct ub_bdev_chan *ch2 = NULL;
	struct ub_err err = {{0}};
	unsigned char *w = pattern(4 * SECTOR, 3); /* freed below */
	unsigned char r[4 * SECTOR];

	assert_int_equal(run(f->ch, UB_BDEV_WRITE, 100, 4, w), 0);
	assert_int_equal(ub_bdev_open_chan(clone, &ch2, &err), 0);
	assert_int_equal(run(ch2, UB_BDEV_READ, 100, 4, r), 0);
	assert_memory_equal(r, w, sizeof(r));
	ub_bdev_chan_close(ch2);
	ub_bdev_put(clone);
	free(w);
}

/* ---- storage.md §10.2 on the stored bytes ----------------------------- */

static void test_x2_zero_sectors_are_stored_as_the_vector(void **state)
{
	struct fixture *f = *state;
	unsigned char zeros[2 * SECTOR] = {0};

	assert_int_equal(run(f->ch, UB_BDEV_WRITE, 0, 2, zeros), 0);
	assert_prefix(stored(f, 0), "cd6b103236fbd87dba93e9001e29bc3d"
				    "5e885d6abd1577e3e0e0a5f49e444894");
	assert_sha256(stored(f, 0), SECTOR,
		      "9943ddf45f593dcb9bcd2e3043ea706a3a7f0d35bfca0ddcfa7c0803"
		      "e588601a");
	assert_prefix(stored(f, 1), "2aca9fa268f090c0fcfa1ae9c5b934e9"
				    "43fdc601077bc21970f70b63eba4e8ea");
	assert_sha256(stored(f, 1), SECTOR,
		      "1803cde6dc00191470928d83ea119a86c0b243e51fcbadbf313114e5"
		      "828bfdd9");
	/* The negative check: a plain64 tweak would start 0c22ed7e... */
	assert_int_not_equal(stored(f, 1)[0], 0x0c);
}

static void test_x2_write_zeroes_stores_the_vector(void **state)
{
	struct fixture *f = *state;
	unsigned char out[2 * SECTOR];

	memset(stored(f, 0), 0x99, 2 * SECTOR);
	assert_int_equal(run(f->ch, UB_BDEV_WRITE_ZEROES, 0, 2, NULL), 0);
	assert_sha256(stored(f, 0), SECTOR,
		      "9943ddf45f593dcb9bcd2e3043ea706a3a7f0d35bfca0ddcfa7c0803"
		      "e588601a");
	assert_sha256(stored(f, 1), SECTOR,
		      "1803cde6dc00191470928d83ea119a86c0b243e51fcbadbf313114e5"
		      "828bfdd9");
	assert_int_equal(run(f->ch, UB_BDEV_READ, 0, 2, out), 0);
	assert_true(all_zero(out, sizeof(out)));
}

static void test_x3_counting_bytes_at_sector_5(void **state)
{
	struct fixture *f = *state;
	unsigned char buf[SECTOR], out[SECTOR];

	for (int j = 0; j < SECTOR; j++)
		buf[j] = (unsigned char)j;
	assert_int_equal(run(f->ch, UB_BDEV_WRITE, 5, 1, buf), 0);
	assert_prefix(stored(f, 5), "d22efcc4ccb1656ea135604fc3a36f61"
				    "78bd4cf1006d1e4ffa0929110c61b475");
	assert_sha256(stored(f, 5), SECTOR,
		      "319fb87ab68da8cf223d98010dab392ab04e7d56a10ac9cdeb021309"
		      "52db24c8");
	assert_int_equal(run(f->ch, UB_BDEV_READ, 5, 1, out), 0);
	assert_memory_equal(out, buf, SECTOR);
}

/* Sector numbers above 2^32 reach the tweak whole: a sparse memory device
 * of 2^32 + 64 sectors (2 TiB of address space, a few pages touched). */
static void test_sector_above_2_32_uses_the_full_tweak(void **state)
{
	const uint64_t sectors = (1ull << 32) + 64;
	const uint64_t s = (1ull << 32) + 3;
	unsigned char key[64], w[3 * SECTOR], want[3 * SECTOR], r[3 * SECTOR];
	struct ub_bdev *mem = NULL, *dev = NULL;
	struct ub_bdev_chan *ch = NULL;
	struct ub_err err = {{0}};
	unsigned char *data;

	if (ub_mem_bdev_create(sectors * SECTOR, &mem, &err)) {
		print_message("skipped: %s\n", err.msg);
		skip();
	}
	key_x2(key);
	assert_int_equal(ub_crypt_bdev_wrap(mem, key, 64, &dev, &err), 0);
	assert_int_equal(dev->sectors, sectors);
	assert_int_equal(ub_bdev_open_chan(dev, &ch, &err), 0);
	for (size_t i = 0; i < sizeof(w); i++)
		w[i] = (unsigned char)(i ^ 0x5a);
	assert_int_equal(run(ch, UB_BDEV_WRITE, s, 3, w), 0);
	data = ub_mem_bdev_data(mem) + s * SECTOR;
	oracle_encrypt(key, s, 3, w, want);
	assert_memory_equal(data, want, sizeof(want));
	/* The same data at sector s mod 2^32 encrypts differently. */
	oracle_encrypt(key, s & 0xffffffffu, 3, w, want);
	assert_memory_not_equal(data, want, sizeof(want));
	assert_int_equal(run(ch, UB_BDEV_READ, s, 3, r), 0);
	assert_memory_equal(r, w, sizeof(w));
	ub_bdev_chan_close(ch);
	ub_bdev_put(dev);
	ub_bdev_put(mem);
}

/* ---- buffers ---------------------------------------------------------- */

static void test_base_holds_no_plaintext_after_writes(void **state)
{
	struct fixture *f = *state;
	unsigned char buf[8 * SECTOR];
	const size_t n = 8 * SECTOR;

	for (size_t i = 0; i + strlen(hello) <= n; i += strlen(hello))
		memcpy(buf + i, hello, strlen(hello));
	memset(buf + n - n % strlen(hello), '!', n % strlen(hello));
	assert_int_equal(run(f->ch, UB_BDEV_WRITE, 10, 8, buf), 0);
	assert_null(memmem(ub_mem_bdev_data(f->mem), MIB, hello, 8));
	assert_null(memmem(ub_mem_bdev_data(f->mem), MIB, "!!!!", 4));
}

static void test_caller_write_buffer_is_unchanged(void **state)
{
	struct fixture *f = *state;
	unsigned char *w = pattern(BIG * SECTOR, 1); /* freed below */
	unsigned char *copy = malloc(BIG * SECTOR);  /* freed below */

	assert_non_null(copy);
	memcpy(copy, w, BIG * SECTOR);
	assert_int_equal(run(f->ch, UB_BDEV_WRITE, 0, 4, w), 0);
	assert_int_equal(run(f->ch, UB_BDEV_WRITE, 0, BIG, w), 0);
	assert_memory_equal(w, copy, BIG * SECTOR);
	free(copy);
	free(w);
}

/* Odd addresses, zero-length entries, and sectors straddling two or more
 * iovecs, for both directions; the stored bytes equal those of the same
 * data written flat. */
static void test_split_misaligned_iovecs(void **state)
{
	struct fixture *f = *state;
	const size_t len = 4 * SECTOR;
	unsigned char *w = pattern(len + 1, 7); /* freed below */
	unsigned char *r = calloc(1, len + 3);	/* freed below */
	unsigned char want[4 * SECTOR];
	/* Sector 0 straddles entries 0-2, sector 1 entries 2-3, sector 3
	 * ends exactly at an entry boundary. */
	struct iovec wv[6] = {
	    {w + 1, 3},	    {w + 4, 0},	   {w + 4, 600},
	    {w + 604, 900}, {w + 1504, 1}, {w + 1505, len - 1504},
	};
	struct iovec rv[5] = {
	    {r + 3, 100}, {r + 103, 412},	{r + 515, 1},
	    {r + 516, 0}, {r + 516, len - 513},
	};

	assert_non_null(r);
	assert_int_equal(run_iov(f->ch, UB_BDEV_WRITE, 40, 4, wv, 6, 1), 0);
	oracle_encrypt(f->key, 40, 4, w + 1, want);
	assert_memory_equal(stored(f, 40), want, len);
	assert_int_equal(run_iov(f->ch, UB_BDEV_READ, 40, 4, rv, 5, 2), 0);
	assert_memory_equal(r + 3, w + 1, len);
	assert_int_equal(r[0], 0);
	assert_int_equal(r[1], 0);
	assert_int_equal(r[2], 0);
	free(r);
	free(w);
}

/* ---- write-zeroes, discard, chunked requests --------------------------- */

static void test_write_zeroes_reads_zeros_and_stores_ciphertext(void **state)
{
	struct fixture *f = *state;
	unsigned char *w = pattern(16 * SECTOR, 9); /* freed below */
	unsigned char zeros[16 * SECTOR] = {0}, want[16 * SECTOR];
	unsigned char r[16 * SECTOR];

	assert_int_equal(run(f->ch, UB_BDEV_WRITE, 200, 16, w), 0);
	assert_int_equal(run(f->ch, UB_BDEV_WRITE_ZEROES, 204, 8, NULL), 0);
	assert_int_equal(run(f->ch, UB_BDEV_READ, 200, 16, r), 0);
	assert_memory_equal(r, w, 4 * SECTOR);
	assert_true(all_zero(r + 4 * SECTOR, 8 * SECTOR));
	assert_memory_equal(r + 12 * SECTOR, w + 12 * SECTOR, 4 * SECTOR);
	oracle_encrypt(f->key, 204, 8, zeros, want);
	assert_memory_equal(stored(f, 204), want, 8 * SECTOR);
	assert_false(all_zero(stored(f, 204), SECTOR));
	free(w);
}

static void test_large_requests_complete_once(void **state)
{
	struct fixture *f = *state;
	const size_t len = (size_t)BIG * SECTOR;
	unsigned char *w = pattern(len, 5); /* freed below */
	unsigned char *r = malloc(len);	    /* freed below */
	unsigned char *want = malloc(len);  /* freed below */
	struct iovec wv[3] = {
	    {w, 1000},
	    {w + 1000, 300 * SECTOR},
	    {w + 1000 + 300 * SECTOR, len - 1000 - 300 * SECTOR}};
	struct ub_bdev_req req = {UB_BDEV_WRITE, 300, BIG, wv, 3, 77};
	struct ub_bdev_cqe c[8];
	unsigned n, total = 0;

	assert_non_null(r);
	assert_non_null(want);
	assert_int_equal(ub_bdev_chan_queue(f->ch, &req), 0);
	assert_int_equal(ub_bdev_chan_submit(f->ch), 0);
	while ((n = ub_bdev_chan_poll(f->ch, c, 8)) > 0 ||
	       ub_bdev_chan_busy(f->ch)) {
		for (unsigned i = 0; i < n; i++) {
			assert_int_equal(c[i].id, 77);
			assert_int_equal(c[i].res, 0);
		}
		total += n;
	}
	assert_int_equal(total, 1);
	assert_int_equal(ub_mem_bdev_metrics(f->mem).writes, 3);
	oracle_encrypt(f->key, 300, BIG, w, want);
	assert_memory_equal(stored(f, 300), want, len);
	assert_int_equal(run(f->ch, UB_BDEV_READ, 300, BIG, r), 0);
	assert_memory_equal(r, w, len);

	assert_int_equal(run(f->ch, UB_BDEV_WRITE_ZEROES, 300, BIG, NULL), 0);
	assert_int_equal(ub_mem_bdev_metrics(f->mem).writes, 6);
	assert_int_equal(run(f->ch, UB_BDEV_READ, 300, BIG, r), 0);
	assert_true(all_zero(r, len));
	free(want);
	free(r);
	free(w);
}

static void test_discard_and_flush_pass_through(void **state)
{
	struct fixture *f = *state;
	unsigned char buf[4 * SECTOR] = {1};

	assert_int_equal(run(f->ch, UB_BDEV_WRITE, 60, 4, buf), 0);
	assert_int_equal(run(f->ch, UB_BDEV_DISCARD, 61, 2, NULL), 0);
	assert_false(all_zero(stored(f, 60), SECTOR));
	assert_true(all_zero(stored(f, 61), 2 * SECTOR));
	assert_false(all_zero(stored(f, 63), SECTOR));
	assert_int_equal(run(f->ch, UB_BDEV_FLUSH, 0, 0, NULL), 0);
	assert_int_equal(ub_mem_bdev_metrics(f->mem).flushes, 1);
}

/* ---- keys ------------------------------------------------------------- */

static void test_identical_key_halves_are_rejected(void **state)
{
	struct fixture *f = *state;
	unsigned char key[64];
	struct ub_bdev *dev = NULL;
	struct ub_err err = {{0}};
	unsigned refs = atomic_load(&f->mem->refs);

	memset(key, 0x42, sizeof(key));
	assert_int_equal(ub_crypt_bdev_wrap(f->mem, key, 64, &dev, &err),
			 -EINVAL);
	assert_null(dev);
	assert_non_null(strstr(err.msg, "identical"));
	/* The wrapped device got no extra reference. */
	assert_int_equal(atomic_load(&f->mem->refs), refs);
}

/* ---- limits ----------------------------------------------------------- */

/* Ids are the caller's, any 64-bit value; the slot table is bounded. */
static void test_any_ids_and_full_slot_table_returns_eagain(void **state)
{
	struct fixture *f = *state;
	uint32_t depth = f->ch->depth;
	unsigned char *buf = calloc(depth, SECTOR);	 /* freed below */
	bool *seen = calloc(depth, sizeof(*seen));	 /* freed below */
	struct iovec *iov = calloc(depth, sizeof(*iov)); /* freed below */
	struct ub_bdev_req req = {.op = UB_BDEV_READ, .count = 1, .iovcnt = 1};
	struct ub_bdev_cqe c[16];
	unsigned n, total = 0;

	assert_non_null(buf);
	assert_non_null(seen);
	assert_non_null(iov);
	assert_true(depth > 0);
	for (uint32_t i = 0; i < depth; i++) {
		iov[i] = (struct iovec){buf + (size_t)i * SECTOR, SECTOR};
		req.iov = &iov[i];
		req.sector = i % 2048;
		req.id = UINT64_MAX - i;
		assert_int_equal(ub_bdev_chan_queue(f->ch, &req), 0);
	}
	req.id = 0;
	assert_int_equal(ub_bdev_chan_queue(f->ch, &req), -EAGAIN);
	assert_int_equal(ub_bdev_chan_submit(f->ch), 0);
	while ((n = ub_bdev_chan_poll(f->ch, c, 16)) > 0) {
		for (unsigned i = 0; i < n; i++) {
			uint64_t k = UINT64_MAX - c[i].id;

			assert_true(k < depth);
			assert_false(seen[k]);
			seen[k] = true;
			assert_int_equal(c[i].res, 0);
		}
		total += n;
	}
	assert_int_equal(total, depth);
	assert_false(ub_bdev_chan_busy(f->ch));
	free(iov);
	free(seen);
	free(buf);
}

/* Bounce memory is bounded: big writes run out of it before the slot
 * table does, and polling makes room again. */
static void test_full_bounce_arena_returns_eagain(void **state)
{
	struct fixture *f = *state;
	unsigned char *w = pattern(512 * SECTOR, 2); /* freed below */
	struct iovec iov = {.iov_base = w, .iov_len = 512 * SECTOR};
	struct ub_bdev_req req = {UB_BDEV_WRITE, 0, 512, &iov, 1, 0};
	struct ub_bdev_cqe c[64];
	unsigned queued = 0, n, total = 0;
	int rc;

	while ((rc = ub_bdev_chan_queue(f->ch, &req)) == 0) {
		queued++;
		req.id++;
		assert_true(queued < f->ch->depth);
	}
	assert_int_equal(rc, -EAGAIN);
	assert_true(queued > 0);
	/* A read needs no bounce memory. */
	req.op = UB_BDEV_READ;
	assert_int_equal(ub_bdev_chan_queue(f->ch, &req), 0);
	assert_int_equal(ub_bdev_chan_submit(f->ch), 0);
	while ((n = ub_bdev_chan_poll(f->ch, c, 64)) > 0)
		total += n;
	assert_int_equal(total, queued + 1);
	req.op = UB_BDEV_WRITE;
	assert_int_equal(run_iov(f->ch, UB_BDEV_WRITE, 0, 512, &iov, 1, 5), 0);
	free(w);
}

static void test_bad_requests_are_rejected_at_queue(void **state)
{
	struct fixture *f = *state;
	unsigned char buf[SECTOR];
	struct iovec iov = {.iov_base = buf, .iov_len = SECTOR};
	struct ub_bdev_req req = {UB_BDEV_WRITE, 2048, 1, &iov, 1, 1};

	assert_int_equal(ub_bdev_chan_queue(f->ch, &req), -EINVAL);
	req.op = UB_BDEV_READ;
	assert_int_equal(ub_bdev_chan_queue(f->ch, &req), -EINVAL);
	req.sector = 0;
	iov.iov_len = SECTOR - 1;
	assert_int_equal(ub_bdev_chan_queue(f->ch, &req), -EINVAL);
	assert_false(ub_bdev_chan_busy(f->ch));
}

/* ---- errors of the wrapped device -------------------------------------- */

static void test_inner_write_error_reaches_the_caller(void **state)
{
	struct fixture *f = *state;
	unsigned char buf[SECTOR] = {3};

	ub_fault_bdev_fail_nth(f->fault, UB_FAULT_WRITE, 1, EIO, false);
	assert_int_equal(run(f->ch, UB_BDEV_WRITE, 0, 1, buf), -EIO);
	assert_true(all_zero(stored(f, 0), SECTOR));
	ub_fault_bdev_fail_nth(f->fault, UB_FAULT_WRITE, 1, ENOSPC, false);
	assert_int_equal(run(f->ch, UB_BDEV_WRITE_ZEROES, 0, 1, NULL), -ENOSPC);
	ub_fault_bdev_fail_nth(f->fault, UB_FAULT_FLUSH, 1, EIO, false);
	assert_int_equal(run(f->ch, UB_BDEV_FLUSH, 0, 0, NULL), -EIO);
	assert_int_equal(run(f->ch, UB_BDEV_WRITE, 0, 1, buf), 0);
}

/* The second of three chunks fails: one completion with that error, and
 * the third chunk is never written. */
static void test_failed_chunk_ends_the_request_with_its_error(void **state)
{
	struct fixture *f = *state;
	unsigned char *w = pattern((size_t)BIG * SECTOR, 4); /* freed below */
	struct iovec iov = {.iov_base = w, .iov_len = (size_t)BIG * SECTOR};
	struct ub_bdev_req req = {UB_BDEV_WRITE, 0, BIG, &iov, 1, 11};
	struct ub_bdev_cqe c[4];
	unsigned n, total = 0;

	ub_fault_bdev_fail_nth(f->fault, UB_FAULT_WRITE, 2, EIO, false);
	assert_int_equal(ub_bdev_chan_queue(f->ch, &req), 0);
	assert_int_equal(ub_bdev_chan_submit(f->ch), 0);
	while ((n = ub_bdev_chan_poll(f->ch, c, 4)) > 0 ||
	       ub_bdev_chan_busy(f->ch)) {
		for (unsigned i = 0; i < n; i++) {
			assert_int_equal(c[i].id, 11);
			assert_int_equal(c[i].res, -EIO);
		}
		total += n;
	}
	assert_int_equal(total, 1);
	assert_false(all_zero(stored(f, 0), 512 * SECTOR));
	assert_true(all_zero(stored(f, 512), (BIG - 512) * SECTOR));
	assert_int_equal(ub_mem_bdev_metrics(f->mem).writes, 1);
	free(w);
}

/* Decision: a failed read leaves zeros, never ciphertext, in the caller's
 * buffer (including after a partial transfer). */
static void test_failed_read_zeroes_the_caller_buffer(void **state)
{
	struct fixture *f = *state;
	unsigned char buf[3 * SECTOR];
	struct iovec iov[2] = {{buf, 700}, {buf + 700, 3 * SECTOR - 700}};

	memset(stored(f, 0), 0xcd, 3 * SECTOR);
	memset(buf, 0xaa, sizeof(buf));
	ub_fault_bdev_fail_nth(f->fault, UB_FAULT_READ, 1, EIO, false);
	assert_int_equal(run_iov(f->ch, UB_BDEV_READ, 0, 3, iov, 2, 1), -EIO);
	assert_true(all_zero(buf, sizeof(buf)));
	/* The memory device's own failure, after nothing was transferred. */
	memset(buf, 0xaa, sizeof(buf));
	ub_mem_bdev_fail_next(f->mem);
	assert_int_equal(run_iov(f->ch, UB_BDEV_READ, 0, 3, iov, 2, 1), -EIO);
	assert_true(all_zero(buf, sizeof(buf)));
}

/* ---- threads ---------------------------------------------------------- */

#define THREADS	       4
#define THREAD_SECTORS 64

struct worker {
	struct ub_bdev *dev; /* reference owned by the worker */
	unsigned index;
	int rc;
};

/* Writes and reads back its own range many times through its own channel,
 * with several requests in flight. */
static void *worker_main(void *arg)
{
	struct worker *w = arg;
	uint64_t first = (uint64_t)w->index * THREAD_SECTORS;
	unsigned char *src = malloc(THREAD_SECTORS * SECTOR); /* freed below */
	unsigned char *dst = malloc(THREAD_SECTORS * SECTOR); /* freed below */
	struct ub_bdev_chan *ch = NULL;
	struct ub_err err = {{0}};

	/* No cmocka assertions on this thread: failures go to w->rc. */
	w->rc = -ENOMEM;
	if (!src || !dst || ub_bdev_open_chan(w->dev, &ch, &err))
		goto out;
	fill_pattern(src, THREAD_SECTORS * SECTOR, w->index);
	for (int round = 0; round < 50; round++) {
		struct iovec iov[THREAD_SECTORS / 8];
		struct ub_bdev_cqe c[8];
		unsigned done = 0, n;
		bool writes = round % 2 == 0;

		for (unsigned i = 0; i < THREAD_SECTORS / 8; i++) {
			unsigned char *b = writes ? src : dst;
			struct ub_bdev_req req = {
			    .op = writes ? UB_BDEV_WRITE : UB_BDEV_READ,
			    .sector = first + 8 * i,
			    .count = 8,
			    .iov = &iov[i],
			    .iovcnt = 1,
			    .id = i,
			};

			iov[i] = (struct iovec){b + i * 8 * SECTOR, 8 * SECTOR};
			if (ub_bdev_chan_queue(ch, &req))
				goto out;
		}
		if (ub_bdev_chan_submit(ch))
			goto out;
		while (done < THREAD_SECTORS / 8) {
			n = ub_bdev_chan_poll(ch, c, 8);
			for (unsigned i = 0; i < n; i++)
				if (c[i].res)
					goto out;
			done += n;
		}
		if (!writes && memcmp(src, dst, THREAD_SECTORS * SECTOR))
			goto out;
	}
	w->rc = 0;
out:
	ub_bdev_chan_close(ch);
	ub_bdev_put(w->dev);
	free(dst);
	free(src);
	return NULL;
}

static void test_channels_on_several_threads(void **state)
{
	struct fixture *f = *state;
	struct worker w[THREADS];
	pthread_t tid[THREADS];
	unsigned char want[THREAD_SECTORS * SECTOR];

	for (unsigned i = 0; i < THREADS; i++) {
		w[i] = (struct worker){ub_bdev_get(f->dev), i, -1};
		assert_int_equal(
		    pthread_create(&tid[i], NULL, worker_main, &w[i]), 0);
	}
	for (unsigned i = 0; i < THREADS; i++) {
		unsigned char *p = pattern(THREAD_SECTORS * SECTOR, i);

		assert_int_equal(pthread_join(tid[i], NULL), 0);
		assert_int_equal(w[i].rc, 0);
		oracle_encrypt(f->key, (uint64_t)i * THREAD_SECTORS,
			       THREAD_SECTORS, p, want);
		assert_memory_equal(stored(f, (uint64_t)i * THREAD_SECTORS),
				    want, sizeof(want));
		free(p);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
#define X1(fn) cmocka_unit_test_setup_teardown(fn, setup_x1, teardown)
#define X2(fn) cmocka_unit_test_setup_teardown(fn, setup_x2, teardown)
	    X1(test_x1_writes_reads_flush_and_busy),
	    X1(test_40_byte_key_is_rejected),
	    X1(test_capacity_is_the_wrapped_capacity),
	    X1(test_clone_reads_back_plaintext),
	    X2(test_x2_zero_sectors_are_stored_as_the_vector),
	    X2(test_x2_write_zeroes_stores_the_vector),
	    X2(test_x3_counting_bytes_at_sector_5),
	    cmocka_unit_test(test_sector_above_2_32_uses_the_full_tweak),
	    X1(test_base_holds_no_plaintext_after_writes),
	    X1(test_caller_write_buffer_is_unchanged),
	    X2(test_split_misaligned_iovecs),
	    X2(test_write_zeroes_reads_zeros_and_stores_ciphertext),
	    X2(test_large_requests_complete_once),
	    X1(test_discard_and_flush_pass_through),
	    X1(test_identical_key_halves_are_rejected),
	    X1(test_any_ids_and_full_slot_table_returns_eagain),
	    X1(test_full_bounce_arena_returns_eagain),
	    X1(test_bad_requests_are_rejected_at_queue),
	    X1(test_inner_write_error_reaches_the_caller),
	    X2(test_failed_chunk_ends_the_request_with_its_error),
	    X1(test_failed_read_zeroes_the_caller_buffer),
	    X2(test_channels_on_several_threads),
#undef X1
#undef X2
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
