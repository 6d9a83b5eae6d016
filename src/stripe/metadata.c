#include "stripe/metadata.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bdev/crypt.h"
#include "bdev/file.h"

/* Whole-file load and save move at most this many sectors per request, so
 * a large (mostly trailing) file never needs one huge transfer. */
#define MD_IO_CHUNK_SECTORS 2048u

static const uint8_t md_magic[UB_MD_MAGIC_LEN] = UB_MD_MAGIC;

/* ---- CRC-32 ----------------------------------------------------------- */

static uint32_t crc_table[256];
static pthread_once_t crc_once = PTHREAD_ONCE_INIT;

static void crc_table_build(void)
{
	uint32_t i, c;
	int k;

	for (i = 0; i < 256; i++) {
		c = i;
		for (k = 0; k < 8; k++)
			c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
		crc_table[i] = c;
	}
}

uint32_t ub_crc32(uint32_t crc, const void *buf, size_t len)
{
	const uint8_t *p = buf;

	pthread_once(&crc_once, crc_table_build);
	crc = ~crc;
	while (len--)
		crc = crc_table[(crc ^ *p++) & 0xFF] ^ (crc >> 8);
	return ~crc;
}

/* ---- little-endian fields --------------------------------------------- */

static void put_le16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)v;
	p[1] = (uint8_t)(v >> 8);
}

static void put_le32(uint8_t *p, uint32_t v)
{
	put_le16(p, (uint16_t)v);
	put_le16(p + 2, (uint16_t)(v >> 16));
}

static uint16_t get_le16(const uint8_t *p)
{
	return (uint16_t)(p[0] | (p[1] << 8));
}

static uint32_t get_le32(const uint8_t *p)
{
	return (uint32_t)get_le16(p) | ((uint32_t)get_le16(p + 2) << 16);
}

/* Stores the CRC of bytes 0..507 of a sector in its last four bytes. */
static void seal_sector(uint8_t *sec)
{
	put_le32(sec + UB_MD_OFF_CRC, ub_crc32(0, sec, UB_MD_OFF_CRC));
}

static bool sector_crc_ok(const uint8_t *sec)
{
	return get_le32(sec + UB_MD_OFF_CRC) == ub_crc32(0, sec, UB_MD_OFF_CRC);
}

/* ---- construction ----------------------------------------------------- */

static int md_alloc(struct ub_metadata *md, uint8_t shift,
		    uint64_t stripe_count, struct ub_err *err)
{
	memset(md, 0, sizeof(*md));
	if (stripe_count > SIZE_MAX)
		return ub_err_ret(err, -ENOMEM,
				  "Stripe count %" PRIu64
				  " does not fit in memory",
				  stripe_count);
	if (stripe_count) {
		/* owned by md until ub_metadata_free */
		md->headers = calloc(1, (size_t)stripe_count);
		if (!md->headers)
			return ub_err_ret(err, -ENOMEM,
					  "Out of memory for %" PRIu64
					  " stripe headers",
					  stripe_count);
	}
	md->version_major = UB_MD_VERSION_MAJOR;
	md->version_minor = UB_MD_VERSION_MINOR;
	md->stripe_shift = shift;
	md->stripe_count = stripe_count;
	return 0;
}

int ub_metadata_init(struct ub_metadata *md, uint8_t shift,
		     uint64_t stripe_count, uint64_t source_stripes,
		     struct ub_err *err)
{
	int rc = md_alloc(md, shift, stripe_count, err);

	if (rc)
		return rc;
	if (source_stripes > stripe_count)
		source_stripes = stripe_count;
	if (source_stripes)
		memset(md->headers, UB_STRIPE_HAS_SOURCE,
		       (size_t)source_stripes);
	return 0;
}

int ub_metadata_init_from(struct ub_metadata *md, uint8_t shift,
			  uint64_t stripe_count,
			  bool (*has_stripe)(void *ctx, uint64_t stripe),
			  void *ctx, struct ub_err *err)
{
	uint64_t i;
	int rc = md_alloc(md, shift, stripe_count, err);

	if (rc)
		return rc;
	for (i = 0; i < stripe_count; i++)
		if (has_stripe(ctx, i))
			md->headers[i] = UB_STRIPE_HAS_SOURCE;
	return 0;
}

void ub_metadata_free(struct ub_metadata *md)
{
	if (!md)
		return;
	free(md->headers);
	memset(md, 0, sizeof(*md));
}

bool ub_metadata_has_fetched_all(const struct ub_metadata *md)
{
	uint64_t i;

	for (i = 0; i < md->stripe_count; i++)
		if ((md->headers[i] & UB_STRIPE_HAS_SOURCE) &&
		    !(md->headers[i] & UB_STRIPE_FETCHED))
			return false;
	return true;
}

/* ---- serialisation ---------------------------------------------------- */

static int check_count_u32(uint64_t stripe_count, struct ub_err *err)
{
	if (stripe_count > UINT32_MAX)
		return ub_err_ret(err, -EOVERFLOW,
				  "Stripe count %" PRIu64
				  " exceeds u32 max: out of range integral "
				  "type conversion attempted",
				  stripe_count);
	return 0;
}

int ub_metadata_render_sector(uint8_t shift, uint64_t stripe_count,
			      const uint8_t *headers, uint64_t sector,
			      void *out, struct ub_err *err)
{
	uint8_t *sec = out;
	uint64_t first, n;
	int rc;

	rc = check_count_u32(stripe_count, err);
	if (rc)
		return rc;
	memset(sec, 0, UB_MD_SECTOR_SIZE);
	if (sector == 0) {
		memcpy(sec, md_magic, UB_MD_MAGIC_LEN);
		put_le16(sec + UB_MD_OFF_VERSION_MAJOR, UB_MD_VERSION_MAJOR);
		put_le16(sec + UB_MD_OFF_VERSION_MINOR, UB_MD_VERSION_MINOR);
		sec[UB_MD_OFF_SHIFT] = shift;
		put_le32(sec + UB_MD_OFF_STRIPE_COUNT, (uint32_t)stripe_count);
		seal_sector(sec);
		return 0;
	}
	if (sector > ub_metadata_group_count(stripe_count))
		return 0; /* trailing sector: zeros, no CRC */
	first = (sector - 1) * UB_MD_STRIPES_PER_SECTOR;
	n = stripe_count - first;
	if (n > UB_MD_STRIPES_PER_SECTOR)
		n = UB_MD_STRIPES_PER_SECTOR;
	memcpy(sec, headers + first, (size_t)n);
	seal_sector(sec);
	return 0;
}

int ub_metadata_serialize(const struct ub_metadata *md, void *buf, size_t len,
			  struct ub_err *err)
{
	uint8_t *p = buf;
	uint64_t need, groups, s;
	int rc;

	rc = check_count_u32(md->stripe_count, err);
	if (rc)
		return rc;
	need = ub_metadata_size(md->stripe_count);
	if (len < need)
		return ub_err_ret(err, -ENOSPC,
				  "Metadata buffer too small: %zu < %" PRIu64,
				  len, need);
	groups = ub_metadata_group_count(md->stripe_count);
	for (s = 0; s <= groups; s++) {
		rc = ub_metadata_render_sector(md->stripe_shift,
					       md->stripe_count, md->headers, s,
					       p + s * UB_MD_SECTOR_SIZE, err);
		if (rc)
			return rc;
	}
	memset(p + need, 0, len - need);
	return 0;
}

/* ---- parsing ---------------------------------------------------------- */

/* Formats bytes the way the reference prints a byte array: "[1, 2, 3]". */
static void format_bytes(char *out, size_t size, const uint8_t *b, size_t n)
{
	size_t i, used = 0;
	int w;

	w = snprintf(out, size, "[");
	used = (size_t)w;
	for (i = 0; i < n && used < size; i++) {
		w = snprintf(out + used, size - used, "%s%u", i ? ", " : "",
			     b[i]);
		used += (size_t)w;
	}
	if (used < size)
		snprintf(out + used, size - used, "]");
}

int ub_metadata_parse(const void *buf, size_t len, struct ub_metadata *md,
		      struct ub_err *err)
{
	const uint8_t *p = buf;
	char want[64], found[64];
	uint64_t count, cap, groups, g, n;
	uint16_t major, minor;
	uint8_t shift;
	int rc;

	memset(md, 0, sizeof(*md));
	if (len < UB_MD_SECTOR_SIZE)
		return ub_err_ret(err, -EINVAL,
				  "Metadata buffer too small: %zu < %u", len,
				  UB_MD_SECTOR_SIZE);
	if (len % UB_MD_SECTOR_SIZE)
		return ub_err_ret(err, -EINVAL,
				  "Metadata buffer size must be a multiple of "
				  "sector size %u: found %zu",
				  UB_MD_SECTOR_SIZE, len);
	if (!sector_crc_ok(p))
		return ub_err_ret(err, -EBADMSG,
				  "Metadata header CRC32 mismatch");
	if (memcmp(p, md_magic, UB_MD_MAGIC_LEN)) {
		format_bytes(want, sizeof(want), md_magic, UB_MD_MAGIC_LEN);
		format_bytes(found, sizeof(found), p, UB_MD_MAGIC_LEN);
		return ub_err_ret(err, -EBADMSG,
				  "Metadata magic mismatch! Expected: %s, "
				  "Found: %s",
				  want, found);
	}
	major = get_le16(p + UB_MD_OFF_VERSION_MAJOR);
	minor = get_le16(p + UB_MD_OFF_VERSION_MINOR);
	if (major != UB_MD_VERSION_MAJOR || minor != UB_MD_VERSION_MINOR)
		return ub_err_ret(err, -EBADMSG,
				  "Metadata version mismatch! Expected: %u.%u, "
				  "Found: %u.%u",
				  UB_MD_VERSION_MAJOR, UB_MD_VERSION_MINOR,
				  major, minor);
	shift = p[UB_MD_OFF_SHIFT];
	if (shift > UB_MD_MAX_SHIFT)
		return ub_err_ret(err, -EBADMSG,
				  "Metadata stripe sector count shift %u "
				  "exceeds maximum %u",
				  shift, UB_MD_MAX_SHIFT);
	count = get_le32(p + UB_MD_OFF_STRIPE_COUNT);
	cap = (uint64_t)(len - UB_MD_SECTOR_SIZE) / UB_MD_SECTOR_SIZE *
	      UB_MD_STRIPES_PER_SECTOR;
	if (count > cap)
		return ub_err_ret(err, -EBADMSG,
				  "Metadata stripe count %" PRIu64
				  " exceeds buffer capacity %" PRIu64,
				  count, cap);
	groups = ub_metadata_group_count(count);
	for (g = 0; g < groups; g++)
		if (!sector_crc_ok(p + (g + 1) * UB_MD_SECTOR_SIZE))
			return ub_err_ret(err, -EBADMSG,
					  "CRC32 mismatch in metadata sector "
					  "group %" PRIu64,
					  g);
	rc = md_alloc(md, shift, count, err);
	if (rc)
		return rc;
	for (g = 0; g < groups; g++) {
		n = count - g * UB_MD_STRIPES_PER_SECTOR;
		if (n > UB_MD_STRIPES_PER_SECTOR)
			n = UB_MD_STRIPES_PER_SECTOR;
		memcpy(md->headers + g * UB_MD_STRIPES_PER_SECTOR,
		       p + (g + 1) * UB_MD_SECTOR_SIZE, (size_t)n);
	}
	md->version_major = major;
	md->version_minor = minor;
	return 0;
}

/* ---- device I/O ------------------------------------------------------- */

/* Frees an I/O buffer unless its request timed out: a timed-out request
 * stays in flight and owns the buffer until the caller closes the channel,
 * so the buffer is then left to the process (a bounded, one-off leak). */
static void io_buf_release(void *buf, int rc)
{
	if (rc != -ETIMEDOUT)
		free(buf);
}

/* Durability barrier of a whole-file save or a sector update (id 1, as
 * the reference uses). */
static int flush_sync(struct ub_bdev_chan *ch, struct ub_err *err)
{
	struct ub_bdev_req req = {.op = UB_BDEV_FLUSH, .id = 1};

	return ub_bdev_run_sync(ch, &req, UB_MD_IO_TIMEOUT_MS, err);
}

int ub_metadata_load(struct ub_bdev_chan *ch, struct ub_metadata *md,
		     struct ub_err *err)
{
	uint64_t sectors = ch->dev->sectors, s;
	uint32_t n;
	uint8_t *buf = NULL; /* owned: the whole file; see io_buf_release */
	size_t len;
	int rc;

	memset(md, 0, sizeof(*md));
	if (sectors > UINT32_MAX) {
		rc = ub_err_ret(err, -EFBIG,
				"Failed to load metadata: "
				"Invalid parameter error: Metadata file too "
				"large");
		goto out;
	}
	len = (size_t)sectors * UB_MD_SECTOR_SIZE;
	buf = ub_bdev_buf_alloc(len ? len : UB_MD_SECTOR_SIZE);
	if (!buf) {
		rc = ub_err_ret(err, -ENOMEM,
				"Failed to load metadata: out "
				"of memory for %zu bytes",
				len);
		goto out;
	}
	for (s = 0; s < sectors; s += n) {
		n = sectors - s < MD_IO_CHUNK_SECTORS ? (uint32_t)(sectors - s)
						      : MD_IO_CHUNK_SECTORS;
		rc = ub_bdev_read_sync(ch, s, n, buf + s * UB_MD_SECTOR_SIZE,
				       UB_MD_IO_TIMEOUT_MS, err);
		if (rc) {
			ub_err_prefix(err, "Failed to load metadata");
			goto out_free;
		}
	}
	rc = ub_metadata_parse(buf, len, md, err);
	if (rc)
		ub_err_prefix(err, "Failed to load metadata: Metadata error");
out_free:
	io_buf_release(buf, rc);
out:
	return rc;
}

/* Writes sectors [first, first + count) of the serialised form, rendering
 * them chunk by chunk into buf (MD_IO_CHUNK_SECTORS sectors). */
static int write_rendered(struct ub_bdev_chan *ch, const struct ub_metadata *md,
			  uint64_t first, uint64_t count, uint8_t *buf,
			  struct ub_err *err)
{
	uint64_t s, i;
	uint32_t n;
	int rc;

	for (s = first; s < first + count; s += n) {
		n = first + count - s < MD_IO_CHUNK_SECTORS
			? (uint32_t)(first + count - s)
			: MD_IO_CHUNK_SECTORS;
		for (i = 0; i < n; i++) {
			rc = ub_metadata_render_sector(
			    md->stripe_shift, md->stripe_count, md->headers,
			    s + i, buf + i * UB_MD_SECTOR_SIZE, err);
			if (rc)
				return rc;
		}
		rc =
		    ub_bdev_write_sync(ch, s, n, buf, UB_MD_IO_TIMEOUT_MS, err);
		if (rc)
			return rc;
	}
	return 0;
}

int ub_metadata_save(struct ub_bdev_chan *ch, const struct ub_metadata *md,
		     struct ub_err *err)
{
	uint64_t sectors = ch->dev->sectors, need;
	uint8_t *buf = NULL; /* owned: one chunk; see io_buf_release */
	int rc;

	if (sectors > UINT32_MAX) {
		rc = ub_err_ret(err, -EFBIG,
				"Invalid parameter error: Device "
				"sector count exceeds u32");
		goto out;
	}
	if (sectors > SIZE_MAX / UB_MD_SECTOR_SIZE) {
		rc = ub_err_ret(err, -EFBIG,
				"Invalid parameter error: "
				"Metadata device too large");
		goto out;
	}
	rc = check_count_u32(md->stripe_count, err);
	if (rc)
		goto out;
	need = ub_metadata_size(md->stripe_count);
	if (need > sectors * UB_MD_SECTOR_SIZE) {
		rc =
		    ub_err_ret(err, -ENOSPC,
			       "Invalid parameter error: Metadata size %" PRIu64
			       " exceeds device capacity %" PRIu64,
			       need, sectors * UB_MD_SECTOR_SIZE);
		goto out;
	}
	buf =
	    ub_bdev_buf_alloc((size_t)MD_IO_CHUNK_SECTORS * UB_MD_SECTOR_SIZE);
	if (!buf) {
		rc = ub_err_ret(err, -ENOMEM, "out of memory");
		goto out;
	}
	rc = write_rendered(ch, md, 0, sectors, buf, err);
	if (rc)
		goto out_free;
	rc = flush_sync(ch, err);
out_free:
	io_buf_release(buf, rc);
out:
	if (rc)
		ub_err_prefix(err, "Failed to save metadata to block device");
	return rc;
}

int ub_metadata_write_stripe_sector(struct ub_bdev_chan *ch,
				    const struct ub_metadata *md,
				    uint64_t stripe, struct ub_err *err)
{
	uint64_t sector = ub_metadata_stripe_sector(stripe);
	uint8_t *buf = NULL; /* owned: one sector; see io_buf_release */
	int rc;

	if (stripe >= md->stripe_count || sector >= ch->dev->sectors) {
		rc = ub_err_ret(err, -ERANGE,
				"Stripe %" PRIu64 " (metadata sector %" PRIu64
				") is outside the metadata (%" PRIu64
				" stripes, %" PRIu64 " sectors)",
				stripe, sector, md->stripe_count,
				ch->dev->sectors);
		goto out;
	}
	buf = ub_bdev_buf_alloc(UB_MD_SECTOR_SIZE);
	if (!buf) {
		rc = ub_err_ret(err, -ENOMEM, "out of memory");
		goto out;
	}
	rc = write_rendered(ch, md, sector, 1, buf, err);
	if (rc)
		goto out_free;
	rc = flush_sync(ch, err);
out_free:
	io_buf_release(buf, rc);
out:
	if (rc)
		ub_err_prefix(err,
			      "Failed to write metadata sector for stripe "
			      "%" PRIu64,
			      stripe);
	return rc;
}

int ub_metadata_dev_open(const struct ub_config *cfg, bool readonly,
			 struct ub_bdev **out, struct ub_err *err)
{
	const struct ub_secret *key = ub_config_xts_key(cfg);
	struct ub_file_bdev_opts o = {
	    .path = cfg->device.metadata_path,
	    .readonly = readonly,
	    .direct = true,
	    .write_through = cfg->tuning.write_through,
	    .queue_depth = ub_config_queue_depth(cfg),
	};
	struct ub_bdev *file = NULL;
	int rc;

	if (!o.path)
		return ub_err_ret(err, -EINVAL,
				  "Invalid parameter error: "
				  "metadata_path is none");
	rc = ub_file_bdev_open(cfg->tuning.io_engine, &o, &file, err);
	if (rc)
		return rc;
	if (!key) {
		*out = file;
		return 0;
	}
	rc = ub_crypt_bdev_wrap(file, key->value, key->len, out, err);
	ub_bdev_put(file); /* the crypt device holds its own reference */
	return rc;
}
