/* Stripe metadata, format version 2.0 (storage.md §5.2): one header byte
 * per stripe, stored in 512-byte sectors that each end in a CRC-32.
 *
 *   sector 0:    "BDEV_UBI\0", major u16, minor u16, shift u8, count u32
 *                (all little endian), zeros, CRC-32 of bytes 0..507
 *   sector 1+g:  header bytes of stripes 508g .. 508g+507, zeros past the
 *                stripe count, CRC-32 of bytes 0..507
 *
 * Sectors past 1 + ceil(count / 508) are ignored on load and written as
 * zeros on save. When encryption is configured the file is stored through
 * a crypt device (tweak = sector index within the file); everything here
 * works on plaintext.
 *
 * Ownership: a struct ub_metadata owns its headers array (heap); free it
 * with ub_metadata_free on every path (a zeroed struct is safe to free).
 * Parse errors set err to the bare §5.2 message (no "Metadata error: "
 * prefix); the device helpers add the reference's contexts. */
#ifndef UB_STRIPE_METADATA_H
#define UB_STRIPE_METADATA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "bdev/bdev.h"
#include "config/config.h"
#include "util/err.h"

#define UB_MD_SECTOR_SIZE	 512u
#define UB_MD_MAGIC		 "BDEV_UBI" /* stored with its NUL */
#define UB_MD_MAGIC_LEN		 9u
#define UB_MD_VERSION_MAJOR	 2u
#define UB_MD_VERSION_MINOR	 0u
#define UB_MD_OFF_VERSION_MAJOR	 9u
#define UB_MD_OFF_VERSION_MINOR	 11u
#define UB_MD_OFF_SHIFT		 13u
#define UB_MD_OFF_STRIPE_COUNT	 14u
#define UB_MD_HEADER_LEN	 18u
#define UB_MD_OFF_CRC		 508u /* in every sector */
#define UB_MD_STRIPES_PER_SECTOR 508u
#define UB_MD_MAX_SHIFT		 17u /* accepted on load */
#define UB_MD_INIT_MIN_SHIFT	 6u  /* accepted by init-metadata */
#define UB_MD_INIT_MAX_SHIFT	 16u
#define UB_MD_DEFAULT_SHIFT	 11u /* 1 MiB stripes */
#define UB_MD_IO_TIMEOUT_MS	 30000u

/* Stripe header bits; bits 3-7 are reserved and kept as found. */
#define UB_STRIPE_FETCHED    0x01u
#define UB_STRIPE_WRITTEN    0x02u
#define UB_STRIPE_HAS_SOURCE 0x04u

struct ub_metadata {
	uint16_t version_major;
	uint16_t version_minor;
	uint8_t stripe_shift;  /* stripe = 2^shift sectors */
	uint64_t stripe_count; /* must fit u32 to be serialised */
	uint8_t *headers;      /* heap, stripe_count bytes; NULL when 0 */
};

/* CRC-32/ISO-HDLC (zlib's crc32): poly 0xEDB88320 reflected, init and
 * final XOR 0xFFFFFFFF. Continue a running CRC by passing the last result
 * as crc (start with 0). */
uint32_t ub_crc32(uint32_t crc, const void *buf, size_t len);

/* Stripes covering a device of `sectors` sectors (the last may be
 * partial). */
static inline uint64_t ub_stripe_count(uint64_t sectors, uint8_t shift)
{
	return (sectors >> shift) +
	       ((sectors & ((UINT64_C(1) << shift) - 1)) != 0);
}

/* Stripe sectors (after the header sector) needed for stripe_count. */
static inline uint64_t ub_metadata_group_count(uint64_t stripe_count)
{
	return stripe_count / UB_MD_STRIPES_PER_SECTOR +
	       (stripe_count % UB_MD_STRIPES_PER_SECTOR != 0);
}

/* Minimum metadata size in bytes: 512 * (1 + ceil(stripe_count / 508)). */
static inline uint64_t ub_metadata_size(uint64_t stripe_count)
{
	return UB_MD_SECTOR_SIZE * (1 + ub_metadata_group_count(stripe_count));
}

/* Metadata sector holding the header byte of stripe (1 + stripe / 508). */
static inline uint64_t ub_metadata_stripe_sector(uint64_t stripe)
{
	return 1 + stripe / UB_MD_STRIPES_PER_SECTOR;
}

/* Byte of that header within its metadata sector. */
static inline uint32_t ub_metadata_stripe_offset(uint64_t stripe)
{
	return (uint32_t)(stripe % UB_MD_STRIPES_PER_SECTOR);
}

/* Version 2.0 metadata with stripe_count headers; stripes below
 * source_stripes (clamped to stripe_count) get HAS_SOURCE, the rest 0.
 * -ENOMEM. */
int ub_metadata_init(struct ub_metadata *md, uint8_t shift,
		     uint64_t stripe_count, uint64_t source_stripes,
		     struct ub_err *err);

/* As ub_metadata_init, header i = HAS_SOURCE iff has_stripe(ctx, i). */
int ub_metadata_init_from(struct ub_metadata *md, uint8_t shift,
			  uint64_t stripe_count,
			  bool (*has_stripe)(void *ctx, uint64_t stripe),
			  void *ctx, struct ub_err *err);

/* Frees the headers and zeroes *md; NULL is accepted. */
void ub_metadata_free(struct ub_metadata *md);

/* True iff every stripe either lacks HAS_SOURCE or has FETCHED. */
bool ub_metadata_has_fetched_all(const struct ub_metadata *md);

/* Writes the whole serialised form into buf[0..len): header, stripe
 * sectors, then zeros up to len. Errors (buf untouched): -EOVERFLOW
 * "Stripe count N exceeds u32 max: ...", -ENOSPC "Metadata buffer too
 * small: <len> < <needed>". */
int ub_metadata_serialize(const struct ub_metadata *md, void *buf, size_t len,
			  struct ub_err *err);

/* Renders metadata sector `sector` of the serialised form into out (512
 * bytes, caller's): the header for 0, a stripe group with its CRC for
 * 1..groups, zeros past that. Reads headers[0..stripe_count), so a caller
 * may pass a snapshot of live headers. -EOVERFLOW as above. */
int ub_metadata_render_sector(uint8_t shift, uint64_t stripe_count,
			      const uint8_t *headers, uint64_t sector,
			      void *out, struct ub_err *err);

/* Validates buf[0..len) in the order of §5.2 and fills *md (a fresh heap
 * copy of the headers, reserved bits kept). Errors (nothing allocated,
 * *md zeroed): -EINVAL for the size rules, -EBADMSG for CRC, magic,
 * version, shift and count failures; -ENOMEM. */
int ub_metadata_parse(const void *buf, size_t len, struct ub_metadata *md,
		      struct ub_err *err);

/* Reads the whole device behind ch (sector 0 .. capacity) and parses it,
 * each request waited for up to 30 s. err: "Failed to load metadata: ..."
 * (with "Metadata error: " before validation messages); -EFBIG "Metadata
 * file too large" when the capacity does not fit u32 sectors. */
int ub_metadata_load(struct ub_bdev_chan *ch, struct ub_metadata *md,
		     struct ub_err *err);

/* Overwrites the whole device behind ch with the serialised metadata
 * (zeros past it), then flushes; 30 s per request. err: "Failed to save
 * metadata to block device: Invalid parameter error: ..." for -EFBIG
 * "Device sector count exceeds u32", -EFBIG "Metadata device too large",
 * -ENOSPC "Metadata size <m> exceeds device capacity <t>" (bytes), checked
 * in that order before any I/O. */
int ub_metadata_save(struct ub_bdev_chan *ch, const struct ub_metadata *md,
		     struct ub_err *err);

/* Rewrites the one metadata sector holding stripe's header (fresh CRC)
 * from md and flushes, 30 s per request. -ERANGE when stripe is not below
 * md->stripe_count or the sector lies past the device. */
int ub_metadata_write_stripe_sector(struct ub_bdev_chan *ch,
				    const struct ub_metadata *md,
				    uint64_t stripe, struct ub_err *err);

/* Opens the metadata device of cfg as the backend stacks it (storage.md
 * §3.6): metadata_path through the configured engine, O_DIRECT (where the
 * file system allows), O_DSYNC iff write_through, queue_size deep, inside
 * a crypt device when cfg has an encryption key. -EINVAL "metadata_path
 * is none" without one. Caller puts *out. */
int ub_metadata_dev_open(const struct ub_config *cfg, bool readonly,
			 struct ub_bdev **out, struct ub_err *err);

#endif
