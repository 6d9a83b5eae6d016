/* Stripe metadata v2: the storage.md §10.1 vectors byte for byte, the
 * acceptance criteria 47-58 (number in the test name), every validation
 * failure of §5.2 with its message, garbage input, and whole-file
 * save/load through an in-memory device with and without a crypt layer. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bdev/bdev.h"
#include "bdev/crypt.h"
#include "bdev/mem.h"
#include "stripe/metadata.h"
#include "util/secmem.h"

#define SECTOR 512

/* ---- helpers ---------------------------------------------------------- */

static void sha256_hex(const void *buf, size_t len, char out[65])
{
	unsigned char md[32];
	unsigned int mdlen = 0;
	int i;

	assert_int_equal(EVP_Digest(buf, len, md, &mdlen, EVP_sha256(), NULL),
			 1);
	assert_int_equal(mdlen, 32);
	for (i = 0; i < 32; i++)
		sprintf(out + 2 * i, "%02x", md[i]);
}

static uint32_t le32_at(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
	       (uint32_t)p[3] << 24;
}

/* Metadata with the given headers (copied; NULL: all zero). */
static void md_make(struct ub_metadata *md, uint8_t shift,
		    const uint8_t *headers, uint64_t count)
{
	struct ub_err err = {{0}};

	assert_int_equal(ub_metadata_init(md, shift, count, 0, &err), 0);
	if (count && headers)
		memcpy(md->headers, headers, count);
}

/* Serialises md into a new buffer of exactly len bytes (caller frees). */
static uint8_t *md_bytes(const struct ub_metadata *md, size_t len)
{
	struct ub_err err = {{0}};
	uint8_t *buf = malloc(len); /* owned by the caller */

	assert_non_null(buf);
	memset(buf, 0xEE, len);
	assert_int_equal(ub_metadata_serialize(md, buf, len, &err), 0);
	return buf;
}

/* Parses buf and expects failure rc with exactly the message want. */
static void expect_parse_error(const void *buf, size_t len, int rc,
			       const char *want)
{
	struct ub_metadata md;
	struct ub_err err = {{0}};

	assert_int_equal(ub_metadata_parse(buf, len, &md, &err), rc);
	assert_string_equal(err.msg, want);
	assert_null(md.headers);
	assert_int_equal(md.stripe_count, 0);
}

/* Recomputes the CRC of one sector after a deliberate change. */
static void reseal(uint8_t *sec)
{
	uint32_t crc = ub_crc32(0, sec, 508);

	sec[508] = (uint8_t)crc;
	sec[509] = (uint8_t)(crc >> 8);
	sec[510] = (uint8_t)(crc >> 16);
	sec[511] = (uint8_t)(crc >> 24);
}

static void assert_round_trip(const struct ub_metadata *md, size_t len)
{
	struct ub_metadata back;
	struct ub_err err = {{0}};
	uint8_t *buf = md_bytes(md, len); /* owned: freed below */

	assert_int_equal(ub_metadata_parse(buf, len, &back, &err), 0);
	assert_int_equal(back.version_major, 2);
	assert_int_equal(back.version_minor, 0);
	assert_int_equal(back.stripe_shift, md->stripe_shift);
	assert_int_equal(back.stripe_count, md->stripe_count);
	if (md->stripe_count)
		assert_memory_equal(back.headers, md->headers,
				    md->stripe_count);
	ub_metadata_free(&back);
	free(buf);
}

/* ---- CRC -------------------------------------------------------------- */

static void test_crc32_check_value(void **state)
{
	assert_int_equal(ub_crc32(0, "123456789", 9), 0xCBF43926u);
	assert_int_equal(ub_crc32(0, "", 0), 0);
	/* Continuing a running CRC equals one pass. */
	assert_int_equal(ub_crc32(ub_crc32(0, "1234", 4), "56789", 5),
			 0xCBF43926u);
}

/* ---- vectors A-E (§10.1) ---------------------------------------------- */

static void test_vector_a_four_stripes_partial_image(void **state)
{
	static const uint8_t head[18] = {0x42, 0x44, 0x45, 0x56, 0x5F, 0x55,
					 0x42, 0x49, 0x00, 0x02, 0x00, 0x00,
					 0x00, 0x0B, 0x04, 0x00, 0x00, 0x00};
	static const uint8_t zero[512];
	struct ub_metadata md;
	struct ub_err err = {{0}};
	uint8_t *buf;
	char hex[65];

	/* 4 MiB data, 2.5 MiB image, 1 MiB stripes: 3 source stripes. */
	assert_int_equal(ub_metadata_init(&md, 11, ub_stripe_count(8192, 11),
					  ub_stripe_count(5120, 11), &err),
			 0);
	assert_int_equal(md.stripe_count, 4);
	buf = md_bytes(&md, 1024);
	assert_memory_equal(buf, head, 18);
	assert_memory_equal(buf + 18, zero, 490);
	assert_int_equal(le32_at(buf + 508), 0x4065D1C8u);
	assert_memory_equal(buf + 508, "\xC8\xD1\x65\x40", 4);
	assert_memory_equal(buf + 512, "\x04\x04\x04\x00\x00\x00\x00\x00", 8);
	assert_memory_equal(buf + 520, zero, 500);
	assert_memory_equal(buf + 1020, "\x03\xBA\x44\xD9", 4);
	sha256_hex(buf, 1024, hex);
	assert_string_equal(hex, "ce9f11cb316997677e6b5071667ee82e"
				 "b4638607386c3abd8e6d363565a68d71");
	free(buf);
	ub_metadata_free(&md);
}

static void test_vector_b_zero_stripes(void **state)
{
	static const uint8_t head[18] = {0x42, 0x44, 0x45, 0x56, 0x5F, 0x55,
					 0x42, 0x49, 0x00, 0x02, 0x00, 0x00,
					 0x00, 0x0B, 0x00, 0x00, 0x00, 0x00};
	struct ub_metadata md;
	uint8_t *buf;
	char hex[65];

	md_make(&md, 11, NULL, 0);
	assert_int_equal(ub_metadata_size(0), 512);
	buf = md_bytes(&md, 512);
	assert_memory_equal(buf, head, 18);
	assert_int_equal(le32_at(buf + 508), 0x7D028377u);
	sha256_hex(buf, 512, hex);
	assert_string_equal(hex, "04316706c9e784c2fe8b5fe7fbbee867"
				 "a89ffd51cd4c17ff1af97bc31a02b1c7");
	assert_round_trip(&md, 512);
	free(buf);
	ub_metadata_free(&md);
}

static void test_vector_c_sixteen_sourced_stripes(void **state)
{
	struct ub_metadata md;
	struct ub_err err = {{0}};
	uint8_t *buf;
	char hex[65];

	assert_int_equal(ub_metadata_init(&md, 11, 16, 16, &err), 0);
	buf = md_bytes(&md, 1024);
	assert_int_equal(le32_at(buf + 508), 0x889FC98Bu);
	assert_int_equal(le32_at(buf + 1020), 0x8431853Bu);
	sha256_hex(buf, 1024, hex);
	assert_string_equal(hex, "33207764e890a65b3741f01cc452dd8a"
				 "ee175a1183202c4e9c0980a857c8f454");
	free(buf);
	ub_metadata_free(&md);
}

static void test_vector_d_three_stripe_sectors(void **state)
{
	struct ub_metadata md;
	uint8_t headers[1200];
	uint8_t *buf;
	char hex[65];
	int i;

	for (i = 0; i < 1200; i++)
		headers[i] = (uint8_t)(i % 7);
	md_make(&md, 9, headers, 1200);
	assert_int_equal(ub_metadata_size(1200), 2048);
	buf = md_bytes(&md, 2048);
	assert_memory_equal(buf + 14, "\xB0\x04\x00\x00", 4);
	assert_int_equal(buf[13], 9);
	assert_int_equal(le32_at(buf + 508), 0x06741B34u);
	assert_int_equal(le32_at(buf + 1020), 0x64DFC085u);
	assert_int_equal(le32_at(buf + 1532), 0x8231555Cu);
	assert_int_equal(le32_at(buf + 2044), 0x5A0D6C52u);
	sha256_hex(buf, 2048, hex);
	assert_string_equal(hex, "b53efb6021bf635ebad799ee7d604e44"
				 "6b33c70e1655ce3cb41001aeaf29a6ac");
	assert_round_trip(&md, 2048);
	free(buf);
	ub_metadata_free(&md);
}

static void test_vector_e_all_flag_combinations(void **state)
{
	static const uint8_t headers[4] = {0x05, 0x07, 0x04, 0x02};
	struct ub_metadata md;
	uint8_t *buf;
	char hex[65];

	md_make(&md, 11, headers, 4);
	buf = md_bytes(&md, 1024);
	assert_int_equal(le32_at(buf + 508), 0x4065D1C8u);
	assert_int_equal(le32_at(buf + 1020), 0x34E87977u);
	sha256_hex(buf, 1024, hex);
	assert_string_equal(hex, "9e1ff1ddd3d921abd26c9b908a4b1acc"
				 "85ce441620898e08e4dfec20f287ed96");
	assert_round_trip(&md, 1024);
	free(buf);
	ub_metadata_free(&md);
}

/* ---- acceptance criteria 47-58 ---------------------------------------- */

static void test_c47_round_trip_20_stripes(void **state)
{
	struct ub_metadata md;
	uint8_t headers[20];
	int i;

	for (i = 0; i < 20; i++)
		headers[i] = (uint8_t)(2 * i);
	md_make(&md, 11, headers, 20);
	assert_round_trip(&md, 1024);
	ub_metadata_free(&md);
}

static void test_c48_1200_stripes_use_three_sectors(void **state)
{
	struct ub_metadata md;
	uint8_t headers[1200];
	int i;

	for (i = 0; i < 1200; i++)
		headers[i] = (uint8_t)(i * 13);
	md_make(&md, 11, headers, 1200);
	assert_int_equal(ub_metadata_group_count(1200), 3);
	assert_int_equal(ub_metadata_size(1200), 4 * SECTOR);
	assert_round_trip(&md, 2048);
	ub_metadata_free(&md);
}

static void test_c49_crc_corruption_names_the_sector(void **state)
{
	struct ub_metadata md;
	uint8_t headers[1200] = {0};
	uint8_t *buf;

	md_make(&md, 11, headers, 20);
	buf = md_bytes(&md, 1024);
	buf[512] ^= 1;
	expect_parse_error(buf, 1024, -EBADMSG,
			   "CRC32 mismatch in metadata sector group 0");
	buf[512] ^= 1;
	buf[1] ^= 0xFF;
	expect_parse_error(buf, 1024, -EBADMSG,
			   "Metadata header CRC32 mismatch");
	free(buf);
	ub_metadata_free(&md);

	md_make(&md, 11, headers, 1200);
	buf = md_bytes(&md, 2048);
	buf[1124] ^= 0x5A;
	expect_parse_error(buf, 2048, -EBADMSG,
			   "CRC32 mismatch in metadata sector group 1");
	free(buf);
	ub_metadata_free(&md);
}

static bool has_listed_stripe(void *ctx, uint64_t stripe)
{
	const uint64_t *list = ctx;

	for (; *list != UINT64_MAX; list++)
		if (*list == stripe)
			return true;
	return false;
}

static void test_c50_constructors_set_has_source(void **state)
{
	static const uint64_t have[] = {0, 2, 3, 6, 8, UINT64_MAX};
	struct ub_metadata md;
	struct ub_err err = {{0}};
	int i;

	assert_int_equal(ub_metadata_init(&md, 11, 10, 4, &err), 0);
	assert_int_equal(md.stripe_count, 10);
	for (i = 0; i < 10; i++)
		assert_int_equal(md.headers[i],
				 i < 4 ? UB_STRIPE_HAS_SOURCE : 0);
	ub_metadata_free(&md);

	assert_int_equal(ub_metadata_init_from(&md, 11, 10, has_listed_stripe,
					       (void *)have, &err),
			 0);
	for (i = 0; i < 10; i++)
		assert_int_equal(md.headers[i],
				 has_listed_stripe((void *)have, (uint64_t)i)
				     ? UB_STRIPE_HAS_SOURCE
				     : 0);
	assert_int_equal(md.headers[6], UB_STRIPE_HAS_SOURCE);
	assert_int_equal(md.headers[7], 0);
	ub_metadata_free(&md);

	/* More image stripes than stripes: clamped. */
	assert_int_equal(ub_metadata_init(&md, 11, 3, 99, &err), 0);
	assert_memory_equal(md.headers, "\x04\x04\x04", 3);
	ub_metadata_free(&md);
}

static void test_c51_has_fetched_all_transitions_on_last(void **state)
{
	struct ub_metadata md;
	struct ub_err err = {{0}};
	int i;

	assert_int_equal(ub_metadata_init(&md, 11, 10, 4, &err), 0);
	md.headers[7] |= UB_STRIPE_WRITTEN; /* unsourced: irrelevant */
	for (i = 0; i < 4; i++) {
		assert_false(ub_metadata_has_fetched_all(&md));
		md.headers[i] |= UB_STRIPE_FETCHED;
	}
	assert_true(ub_metadata_has_fetched_all(&md));
	ub_metadata_free(&md);

	assert_int_equal(ub_metadata_init(&md, 11, 0, 0, &err), 0);
	assert_true(ub_metadata_has_fetched_all(&md));
	ub_metadata_free(&md);
}

static void test_c52_stripe_to_sector_mapping(void **state)
{
	assert_int_equal(ub_metadata_stripe_sector(0), 1);
	assert_int_equal(ub_metadata_stripe_sector(507), 1);
	assert_int_equal(ub_metadata_stripe_sector(508), 2);
	assert_int_equal(ub_metadata_stripe_sector(1015), 2);
	assert_int_equal(ub_metadata_stripe_sector(1016), 3);
	assert_int_equal(ub_metadata_stripe_offset(0), 0);
	assert_int_equal(ub_metadata_stripe_offset(507), 507);
	assert_int_equal(ub_metadata_stripe_offset(508), 0);
	assert_int_equal(ub_metadata_stripe_offset(1017), 1);
}

static void test_c53_metadata_sizes(void **state)
{
	assert_int_equal(ub_metadata_size(0), 512);
	assert_int_equal(ub_metadata_size(20), 1024);
	assert_int_equal(ub_metadata_size(508), 1024);
	assert_int_equal(ub_metadata_size(509), 1536);
	assert_int_equal(ub_metadata_size(1200), 2048);
	assert_int_equal(ub_metadata_size(10240), 11264);
	assert_int_equal(ub_stripe_count(0, 11), 0);
	assert_int_equal(ub_stripe_count(2048, 11), 1);
	assert_int_equal(ub_stripe_count(2049, 11), 2);
	assert_int_equal(ub_stripe_count(UINT64_MAX, 0), UINT64_MAX);
}

static void test_c54_render_100_sourced_stripes(void **state)
{
	struct ub_err err = {{0}};
	uint8_t headers[100];
	uint8_t sec[512];
	int i;

	memset(headers, 0x04, sizeof(headers));
	memset(sec, 0xEE, sizeof(sec));
	assert_int_equal(
	    ub_metadata_render_sector(11, 100, headers, 1, sec, &err), 0);
	assert_memory_equal(sec, headers, 100);
	for (i = 100; i < 508; i++)
		assert_int_equal(sec[i], 0);
	assert_int_not_equal(le32_at(sec + 508), 0);
	assert_int_equal(le32_at(sec + 508), ub_crc32(0, sec, 508));
	/* A sector past the groups renders as zeros. */
	assert_int_equal(
	    ub_metadata_render_sector(11, 100, headers, 2, sec, &err), 0);
	for (i = 0; i < 512; i++)
		assert_int_equal(sec[i], 0);
}

static void test_c55_counts_round_trip_in_4mib_buffer(void **state)
{
	static const uint64_t counts[] = {1,   2,   16,	  100, 507,
					  508, 509, 1016, 1200};
	struct ub_metadata md;
	uint8_t *headers = malloc(1200); /* owned: freed below */
	size_t i;

	assert_non_null(headers);
	for (i = 0; i < 1200; i++)
		headers[i] = (uint8_t)(i * 31 + 7);
	for (i = 0; i < sizeof(counts) / sizeof(counts[0]); i++) {
		md_make(&md, 11, headers, counts[i]);
		assert_round_trip(&md, 4 << 20);
		ub_metadata_free(&md);
	}
	free(headers);
}

static void test_c56_shift_18_rejected(void **state)
{
	struct ub_metadata md;
	uint8_t *buf;

	md_make(&md, 17, NULL, 0);
	buf = md_bytes(&md, 512);
	assert_round_trip(&md, 512); /* 17 is still accepted */
	buf[13] = 18;
	reseal(buf);
	expect_parse_error(buf, 512, -EBADMSG,
			   "Metadata stripe sector count shift 18 exceeds "
			   "maximum 17");
	buf[13] = 255;
	reseal(buf);
	expect_parse_error(buf, 512, -EBADMSG,
			   "Metadata stripe sector count shift 255 exceeds "
			   "maximum 17");
	free(buf);
	ub_metadata_free(&md);
}

static void mem_dev(uint64_t bytes, struct ub_bdev **dev,
		    struct ub_bdev_chan **ch)
{
	struct ub_err err = {{0}};

	assert_int_equal(ub_mem_bdev_create(bytes, dev, &err), 0);
	assert_int_equal(ub_bdev_open_chan(*dev, ch, &err), 0);
}

static void test_c57_save_load_through_device(void **state)
{
	struct ub_bdev *dev;
	struct ub_bdev_chan *ch;
	struct ub_metadata md, back;
	struct ub_err err = {{0}};
	uint8_t headers[600];
	unsigned char *data;
	int i;

	for (i = 0; i < 600; i++)
		headers[i] = (uint8_t)(i & 7);
	md_make(&md, 11, headers, 600);
	mem_dev(1 << 20, &dev, &ch);
	data = ub_mem_bdev_data(dev);
	memset(data, 0xAA, 1 << 20); /* stale content is overwritten */
	assert_int_equal(ub_metadata_save(ch, &md, &err), 0);
	assert_int_equal(ub_mem_bdev_metrics(dev).flushes, 1);
	for (i = 1536; i < (1 << 20); i++)
		if (data[i])
			fail_msg("byte %d past the metadata is %#x", i,
				 data[i]);
	assert_int_equal(ub_metadata_load(ch, &back, &err), 0);
	assert_int_equal(back.version_major, 2);
	assert_int_equal(back.version_minor, 0);
	assert_int_equal(back.stripe_shift, 11);
	assert_int_equal(back.stripe_count, 600);
	assert_memory_equal(back.headers, headers, 600);
	ub_metadata_free(&back);

	/* Wrong magic (CRC fixed up). */
	data[0] = 'X';
	reseal(data);
	assert_int_equal(ub_metadata_load(ch, &back, &err), -EBADMSG);
	assert_non_null(strstr(err.msg, "Metadata magic mismatch"));
	assert_string_equal(
	    err.msg, "Failed to load metadata: Metadata error: Metadata magic "
		     "mismatch! Expected: [66, 68, 69, 86, 95, 85, 66, 73, 0], "
		     "Found: [88, 68, 69, 86, 95, 85, 66, 73, 0]");
	data[0] = 'B';
	/* Minor version 1. */
	data[11] = 1;
	reseal(data);
	assert_int_equal(ub_metadata_load(ch, &back, &err), -EBADMSG);
	assert_string_equal(err.msg, "Failed to load metadata: Metadata "
				     "error: Metadata version mismatch! "
				     "Expected: 2.0, Found: 2.1");
	assert_null(back.headers);

	ub_bdev_chan_close(ch);
	ub_bdev_put(dev);
	ub_metadata_free(&md);
}

/* A device that only has a capacity: the size checks must fail before any
 * request reaches it. */
static void fake_chan(struct ub_bdev *dev, struct ub_bdev_chan *ch,
		      uint64_t sectors)
{
	memset(dev, 0, sizeof(*dev));
	memset(ch, 0, sizeof(*ch));
	dev->sectors = sectors;
	ch->dev = dev;
}

static void test_c58_save_size_checks(void **state)
{
	struct ub_bdev dev;
	struct ub_bdev_chan ch;
	struct ub_metadata md;
	struct ub_err err = {{0}};

	md_make(&md, 11, NULL, 0);
	fake_chan(&dev, &ch, 0);
	assert_int_equal(ub_metadata_save(&ch, &md, &err), -ENOSPC);
	assert_non_null(strstr(err.msg, "exceeds device capacity"));
	assert_string_equal(err.msg,
			    "Failed to save metadata to block device: Invalid "
			    "parameter error: Metadata size 512 exceeds device "
			    "capacity 0");
	fake_chan(&dev, &ch, UINT64_C(1) << 32);
	assert_int_equal(ub_metadata_save(&ch, &md, &err), -EFBIG);
	assert_non_null(strstr(err.msg, "Device sector count exceeds u32"));
	/* The load side refuses the same size. */
	assert_int_equal(ub_metadata_load(&ch, &md, &err), -EFBIG);
	assert_non_null(strstr(err.msg, "Metadata file too large"));
	ub_metadata_free(&md);

	/* One sector short of the metadata. */
	md_make(&md, 11, NULL, 509);
	fake_chan(&dev, &ch, 2);
	assert_int_equal(ub_metadata_save(&ch, &md, &err), -ENOSPC);
	assert_non_null(strstr(err.msg, "Metadata size 1536 exceeds device "
					"capacity 1024"));
	ub_metadata_free(&md);
}

/* ---- every validation failure of §5.2, in order ----------------------- */

static void test_parse_size_rules(void **state)
{
	uint8_t buf[1024] = {0};

	expect_parse_error(buf, 0, -EINVAL,
			   "Metadata buffer too small: 0 < 512");
	expect_parse_error(buf, 511, -EINVAL,
			   "Metadata buffer too small: 511 < 512");
	expect_parse_error(buf, 513, -EINVAL,
			   "Metadata buffer size must be a multiple of sector "
			   "size 512: found 513");
	expect_parse_error(buf, 1023, -EINVAL,
			   "Metadata buffer size must be a multiple of sector "
			   "size 512: found 1023");
}

static void test_parse_header_crc_checked_before_magic(void **state)
{
	uint8_t buf[512] = {0};

	/* All zeros (or a wrong key) fails the CRC, not the magic. */
	expect_parse_error(buf, 512, -EBADMSG,
			   "Metadata header CRC32 mismatch");
	memcpy(buf, "BDEV_UBI", 9);
	expect_parse_error(buf, 512, -EBADMSG,
			   "Metadata header CRC32 mismatch");
}

static void test_parse_bad_magic(void **state)
{
	uint8_t buf[512] = {0};

	reseal(buf);
	expect_parse_error(buf, 512, -EBADMSG,
			   "Metadata magic mismatch! Expected: [66, 68, 69, "
			   "86, 95, 85, 66, 73, 0], Found: [0, 0, 0, 0, 0, 0, "
			   "0, 0, 0]");
}

static void test_parse_version_mismatch(void **state)
{
	struct ub_metadata md;
	uint8_t *buf;

	md_make(&md, 11, NULL, 0);
	buf = md_bytes(&md, 512);
	buf[9] = 0; /* legacy major 0 */
	reseal(buf);
	expect_parse_error(buf, 512, -EBADMSG,
			   "Metadata version mismatch! Expected: 2.0, Found: "
			   "0.0");
	buf[9] = 0x34;
	buf[10] = 0x12;
	buf[11] = 0xFF;
	buf[12] = 0xFF;
	reseal(buf);
	expect_parse_error(buf, 512, -EBADMSG,
			   "Metadata version mismatch! Expected: 2.0, Found: "
			   "4660.65535");
	free(buf);
	ub_metadata_free(&md);
}

static void test_parse_count_beyond_capacity(void **state)
{
	struct ub_metadata md;
	uint8_t *buf;

	md_make(&md, 11, NULL, 509);
	buf = md_bytes(&md, 1536);
	/* Needs two stripe sectors; one given. */
	expect_parse_error(buf, 1024, -EBADMSG,
			   "Metadata stripe count 509 exceeds buffer capacity "
			   "508");
	expect_parse_error(buf, 512, -EBADMSG,
			   "Metadata stripe count 509 exceeds buffer capacity "
			   "0");
	buf[14] = buf[15] = buf[16] = buf[17] = 0xFF;
	reseal(buf);
	expect_parse_error(buf, 1536, -EBADMSG,
			   "Metadata stripe count 4294967295 exceeds buffer "
			   "capacity 1016");
	free(buf);
	ub_metadata_free(&md);
}

static void test_parse_each_group_crc(void **state)
{
	struct ub_metadata md, back;
	struct ub_err err = {{0}};
	char want[64];
	uint8_t *buf;
	int g;

	md_make(&md, 11, NULL, 508 * 4);
	buf = md_bytes(&md, 6 * SECTOR);
	for (g = 0; g < 4; g++) {
		buf[(g + 1) * SECTOR + 509] ^= 0x80; /* the CRC itself */
		snprintf(want, sizeof(want),
			 "CRC32 mismatch in metadata sector group %d", g);
		expect_parse_error(buf, 6 * SECTOR, -EBADMSG, want);
		buf[(g + 1) * SECTOR + 509] ^= 0x80;
	}
	/* Groups are checked in increasing order. */
	buf[3 * SECTOR] ^= 1;
	buf[2 * SECTOR] ^= 1;
	expect_parse_error(buf, 6 * SECTOR, -EBADMSG,
			   "CRC32 mismatch in metadata sector group 1");
	buf[3 * SECTOR] ^= 1;
	buf[2 * SECTOR] ^= 1;
	/* The trailing sector is not checked. */
	memset(buf + 5 * SECTOR, 0x77, SECTOR);
	assert_int_equal(ub_metadata_parse(buf, 6 * SECTOR, &back, &err), 0);
	assert_int_equal(back.stripe_count, 508 * 4);
	ub_metadata_free(&back);
	free(buf);
	ub_metadata_free(&md);
}

static void test_parse_keeps_reserved_bits(void **state)
{
	static const uint8_t headers[4] = {0xF8, 0xFF, 0x84, 0x00};
	struct ub_metadata md;

	md_make(&md, 6, headers, 4);
	assert_round_trip(&md, 1024);
	ub_metadata_free(&md);
}

static void test_serialize_errors(void **state)
{
	struct ub_metadata md;
	struct ub_err err = {{0}};
	uint8_t buf[1024];

	md_make(&md, 11, NULL, 509);
	memset(buf, 0x11, sizeof(buf));
	assert_int_equal(ub_metadata_serialize(&md, buf, 1024, &err), -ENOSPC);
	assert_string_equal(err.msg, "Metadata buffer too small: 1024 < 1536");
	assert_int_equal(buf[0], 0x11); /* untouched */
	ub_metadata_free(&md);

	/* A count beyond u32 (headers never read: the check comes first). */
	md.stripe_count = UINT64_C(1) << 32;
	assert_int_equal(ub_metadata_serialize(&md, buf, 1024, &err),
			 -EOVERFLOW);
	assert_non_null(
	    strstr(err.msg, "Stripe count 4294967296 exceeds u32 max: "));
	assert_int_equal(
	    ub_metadata_render_sector(11, md.stripe_count, NULL, 0, buf, &err),
	    -EOVERFLOW);
	memset(&md, 0, sizeof(md));
}

/* Random buffers of random sizes, and valid buffers with random bytes
 * changed (CRCs fixed up half the time so deeper checks run): parsing
 * either succeeds with a consistent result or fails with a message. */
static void test_parse_garbage_never_crashes(void **state)
{
	struct ub_metadata md;
	struct ub_err err;
	uint8_t *buf;
	size_t len, i, s;
	int iter, rc, ok = 0;

	srandom(12345);
	for (iter = 0; iter < 4000; iter++) {
		len = (size_t)(random() % 4) == 0
			  ? (size_t)(random() % 3000)
			  : SECTOR * (size_t)(1 + random() % 6);
		buf = malloc(len ? len : 1); /* owned: freed below */
		assert_non_null(buf);
		for (i = 0; i < len; i++)
			buf[i] = (uint8_t)random();
		if (len >= SECTOR && iter % 2) {
			memcpy(buf, "BDEV_UBI", 9);
			buf[9] = 2;
			buf[10] = buf[11] = buf[12] = 0;
			buf[13] = (uint8_t)(random() % 20);
			buf[14] = (uint8_t)(random() % 255);
			buf[15] = (uint8_t)(random() % 3);
			buf[16] = buf[17] = 0;
			for (s = 0; s + SECTOR <= len; s += SECTOR)
				if (random() % 8)
					reseal(buf + s);
		}
		err.msg[0] = '\0';
		rc = ub_metadata_parse(buf, len, &md, &err);
		if (rc == 0) {
			ok++;
			assert_int_equal(md.stripe_count, le32_at(buf + 14));
			assert_true(md.stripe_shift <= 17);
			assert_true(ub_metadata_size(md.stripe_count) <= len);
			if (md.stripe_count)
				assert_memory_equal(md.headers, buf + SECTOR,
						    md.stripe_count < 508
							? md.stripe_count
							: 508);
		} else {
			assert_true(rc == -EINVAL || rc == -EBADMSG);
			assert_true(strlen(err.msg) > 0);
			assert_null(md.headers);
		}
		ub_metadata_free(&md);
		free(buf);
	}
	assert_true(ok > 0); /* the fixed-up half did reach success */
}

/* ---- device helpers --------------------------------------------------- */

static const unsigned char test_key[64] = {
    0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0a,
    0x0b, 0x0c, 0x0d, 0x0e, 0x0f, 0x10, 0x11, 0x12, 0x13, 0x14, 0x15,
    0x16, 0x17, 0x18, 0x19, 0x1a, 0x1b, 0x1c, 0x1d, 0x1e, 0x1f, 0x20,
    0x21, 0x22, 0x23, 0x24, 0x25, 0x26, 0x27, 0x28, 0x29, 0x2a, 0x2b,
    0x2c, 0x2d, 0x2e, 0x2f, 0x30, 0x31, 0x32, 0x33, 0x34, 0x35, 0x36,
    0x37, 0x38, 0x39, 0x3a, 0x3b, 0x3c, 0x3d, 0x3e, 0x3f,
};

static void test_save_load_through_crypt_device(void **state)
{
	struct ub_bdev *mem, *crypt;
	struct ub_bdev_chan *ch, *plain;
	struct ub_metadata md, back;
	struct ub_err err = {{0}};
	uint8_t *want;
	unsigned char *data;

	assert_int_equal(ub_metadata_init(&md, 11, 4, 3, &err), 0);
	assert_int_equal(ub_mem_bdev_create(8192, &mem, &err), 0);
	assert_int_equal(ub_crypt_bdev_wrap(mem, test_key, 64, &crypt, &err),
			 0);
	assert_int_equal(crypt->sectors, 16);
	assert_int_equal(ub_bdev_open_chan(crypt, &ch, &err), 0);
	assert_int_equal(ub_metadata_save(ch, &md, &err), 0);

	/* Stored bytes are not the plaintext layout (vector A). */
	data = ub_mem_bdev_data(mem);
	want = md_bytes(&md, 8192);
	assert_memory_not_equal(data, want, 512);
	assert_memory_not_equal(data + 512, want + 512, 512);
	assert_null(memmem(data, 8192, "BDEV_UBI", 8));
	/* Trailing zeros are encrypted too. */
	assert_memory_not_equal(data + 4096, want + 4096, 512);

	/* Through the crypt device: decrypted and valid. */
	assert_int_equal(ub_metadata_load(ch, &back, &err), 0);
	assert_int_equal(back.stripe_count, 4);
	assert_memory_equal(back.headers, "\x04\x04\x04\x00", 4);
	ub_metadata_free(&back);

	/* Read raw, without the key: the header CRC fails first. */
	assert_int_equal(ub_bdev_open_chan(mem, &plain, &err), 0);
	assert_int_equal(ub_metadata_load(plain, &back, &err), -EBADMSG);
	assert_string_equal(err.msg, "Failed to load metadata: Metadata "
				     "error: Metadata header CRC32 mismatch");

	/* Update one sector through the crypt layer. */
	md.headers[1] |= UB_STRIPE_FETCHED;
	assert_int_equal(ub_metadata_write_stripe_sector(ch, &md, 1, &err), 0);
	assert_int_equal(ub_metadata_load(ch, &back, &err), 0);
	assert_memory_equal(back.headers, "\x04\x05\x04\x00", 4);
	ub_metadata_free(&back);

	ub_bdev_chan_close(plain);
	ub_bdev_chan_close(ch);
	ub_bdev_put(crypt);
	ub_bdev_put(mem);
	free(want);
	ub_metadata_free(&md);
}

static void test_write_stripe_sector_updates_one_group(void **state)
{
	struct ub_bdev *dev;
	struct ub_bdev_chan *ch;
	struct ub_metadata md, back;
	struct ub_err err = {{0}};
	struct ub_mem_bdev_metrics m0, m1;
	unsigned char *data;
	uint8_t before[SECTOR];

	assert_int_equal(ub_metadata_init(&md, 11, 1200, 1200, &err), 0);
	mem_dev(4 * SECTOR, &dev, &ch);
	assert_int_equal(ub_metadata_save(ch, &md, &err), 0);
	data = ub_mem_bdev_data(dev);
	memcpy(before, data + SECTOR, SECTOR);

	md.headers[508] |= UB_STRIPE_FETCHED;
	md.headers[1000] |= UB_STRIPE_WRITTEN;
	md.headers[5] |= UB_STRIPE_FETCHED; /* group 0: not written yet */
	m0 = ub_mem_bdev_metrics(dev);
	assert_int_equal(ub_metadata_write_stripe_sector(ch, &md, 1000, &err),
			 0);
	m1 = ub_mem_bdev_metrics(dev);
	assert_int_equal(m1.writes - m0.writes, 1);
	assert_int_equal(m1.flushes - m0.flushes, 1);
	assert_memory_equal(data + SECTOR, before, SECTOR);
	assert_int_equal(data[2 * SECTOR + 0], 0x05);
	assert_int_equal(data[2 * SECTOR + 492], 0x06);

	assert_int_equal(ub_metadata_load(ch, &back, &err), 0);
	assert_int_equal(back.headers[5], 0x04);
	assert_int_equal(back.headers[508], 0x05);
	assert_int_equal(back.headers[1000], 0x06);
	ub_metadata_free(&back);

	assert_int_equal(ub_metadata_write_stripe_sector(ch, &md, 1200, &err),
			 -ERANGE);
	ub_bdev_chan_close(ch);
	ub_bdev_put(dev);
	ub_metadata_free(&md);

	/* The sector lies past a too-small device. */
	assert_int_equal(ub_metadata_init(&md, 11, 1200, 0, &err), 0);
	mem_dev(2 * SECTOR, &dev, &ch);
	assert_int_equal(ub_metadata_write_stripe_sector(ch, &md, 600, &err),
			 -ERANGE);
	ub_bdev_chan_close(ch);
	ub_bdev_put(dev);
	ub_metadata_free(&md);
}

static void test_load_save_large_device_in_chunks(void **state)
{
	struct ub_bdev *dev;
	struct ub_bdev_chan *ch;
	struct ub_metadata md, back;
	struct ub_err err = {{0}};
	uint64_t i, count = 5000 * 508 + 3; /* > one 1 MiB chunk */
	unsigned char *data;
	size_t len = (size_t)ub_metadata_size(count) + 3 * (1 << 20);

	assert_int_equal(ub_metadata_init(&md, 6, count, count / 2, &err), 0);
	for (i = 0; i < count; i += 97)
		md.headers[i] |= UB_STRIPE_FETCHED;
	mem_dev(len, &dev, &ch);
	data = ub_mem_bdev_data(dev);
	memset(data, 0x5A, len);
	assert_int_equal(ub_metadata_save(ch, &md, &err), 0);
	for (i = ub_metadata_size(count); i < len; i++)
		if (data[i])
			fail_msg("byte %llu past the metadata is %#x",
				 (unsigned long long)i, data[i]);
	assert_int_equal(ub_metadata_load(ch, &back, &err), 0);
	assert_int_equal(back.stripe_count, count);
	assert_memory_equal(back.headers, md.headers, count);
	ub_metadata_free(&back);
	ub_bdev_chan_close(ch);
	ub_bdev_put(dev);
	ub_metadata_free(&md);
}

static void test_load_save_report_io_failures(void **state)
{
	struct ub_bdev *dev;
	struct ub_bdev_chan *ch;
	struct ub_metadata md, back;
	struct ub_err err = {{0}};

	assert_int_equal(ub_metadata_init(&md, 11, 4, 4, &err), 0);
	mem_dev(1024, &dev, &ch);
	ub_mem_bdev_fail_next(dev);
	assert_true(ub_metadata_save(ch, &md, &err) < 0);
	assert_non_null(strstr(err.msg, "Failed to save metadata to block "
					"device: "));
	assert_int_equal(ub_metadata_save(ch, &md, &err), 0);
	ub_mem_bdev_fail_next(dev);
	assert_true(ub_metadata_load(ch, &back, &err) < 0);
	assert_non_null(strstr(err.msg, "Failed to load metadata: "));
	assert_null(back.headers);
	assert_int_equal(ub_metadata_load(ch, &back, &err), 0);
	ub_metadata_free(&back);
	ub_bdev_chan_close(ch);
	ub_bdev_put(dev);
	ub_metadata_free(&md);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_crc32_check_value),
	    cmocka_unit_test(test_vector_a_four_stripes_partial_image),
	    cmocka_unit_test(test_vector_b_zero_stripes),
	    cmocka_unit_test(test_vector_c_sixteen_sourced_stripes),
	    cmocka_unit_test(test_vector_d_three_stripe_sectors),
	    cmocka_unit_test(test_vector_e_all_flag_combinations),
	    cmocka_unit_test(test_c47_round_trip_20_stripes),
	    cmocka_unit_test(test_c48_1200_stripes_use_three_sectors),
	    cmocka_unit_test(test_c49_crc_corruption_names_the_sector),
	    cmocka_unit_test(test_c50_constructors_set_has_source),
	    cmocka_unit_test(test_c51_has_fetched_all_transitions_on_last),
	    cmocka_unit_test(test_c52_stripe_to_sector_mapping),
	    cmocka_unit_test(test_c53_metadata_sizes),
	    cmocka_unit_test(test_c54_render_100_sourced_stripes),
	    cmocka_unit_test(test_c55_counts_round_trip_in_4mib_buffer),
	    cmocka_unit_test(test_c56_shift_18_rejected),
	    cmocka_unit_test(test_c57_save_load_through_device),
	    cmocka_unit_test(test_c58_save_size_checks),
	    cmocka_unit_test(test_parse_size_rules),
	    cmocka_unit_test(test_parse_header_crc_checked_before_magic),
	    cmocka_unit_test(test_parse_bad_magic),
	    cmocka_unit_test(test_parse_version_mismatch),
	    cmocka_unit_test(test_parse_count_beyond_capacity),
	    cmocka_unit_test(test_parse_each_group_crc),
	    cmocka_unit_test(test_parse_keeps_reserved_bits),
	    cmocka_unit_test(test_serialize_errors),
	    cmocka_unit_test(test_parse_garbage_never_crashes),
	    cmocka_unit_test(test_save_load_through_crypt_device),
	    cmocka_unit_test(test_write_stripe_sector_updates_one_group),
	    cmocka_unit_test(test_load_save_large_device_in_chunks),
	    cmocka_unit_test(test_load_save_report_io_failures),
	};

	ub_secmem_init();
	return cmocka_run_group_tests(tests, NULL, NULL);
}
