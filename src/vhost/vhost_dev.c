/* vhost-user-blk device: configuration space and offered features
 * (backends.md §3.3, §3.4), and its teardown. */
#include "vhost/vhost_dev.h"

#include <string.h>

#include "util/log.h"
#include "vhost/blk.h"

/* The reference's offered set: SIZE_MAX, SEG_MAX, BLK_SIZE, FLUSH,
 * TOPOLOGY, CONFIG_WCE, MQ, INDIRECT_DESC, EVENT_IDX, PROTOCOL_FEATURES,
 * VERSION_1. */
#define UB_VHOST_BASE_FEATURES 0x0000000170001E46ull

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

static void put_le64(uint8_t *p, uint64_t v)
{
	put_le32(p, (uint32_t)v);
	put_le32(p + 4, (uint32_t)(v >> 32));
}

void ub_vhost_dev_init(struct ub_vhost_dev *dev,
		       const struct ub_vhost_params *params,
		       struct ub_bdev *bdev)
{
	uint8_t *cfg = dev->config;
	uint32_t zero_max;
	bool wr = !(bdev->flags & UB_BDEV_F_READONLY);
	bool discard = wr && (bdev->flags & UB_BDEV_F_DISCARD);
	bool wzeroes = wr && (bdev->flags & UB_BDEV_F_WRITE_ZEROES);

	memset(dev, 0, sizeof(*dev));
	dev->params = *params;
	dev->bdev = ub_bdev_get(bdev);
	/* A configured size above what a split ring allows leaves the
	 * queues at the largest usable size; SET_VRING_NUM sets the real
	 * one. */
	for (unsigned i = 0; i < UB_VHOST_MAX_QUEUES; i++)
		ub_vq_init(&dev->vqs[i], params->queue_size > UB_VQ_MAX_SIZE
					     ? UB_VQ_MAX_SIZE
					     : (uint16_t)params->queue_size);

	dev->features = UB_VHOST_BASE_FEATURES;
	if (discard)
		dev->features |= 1ull << VIRTIO_BLK_F_DISCARD;
	if (wzeroes)
		dev->features |= 1ull << VIRTIO_BLK_F_WRITE_ZEROES;

	zero_max = ub_blk_max_zero_sectors(bdev->sectors);
	put_le64(cfg + 0, bdev->sectors);	   /* capacity */
	put_le32(cfg + 8, params->seg_size_max);   /* size_max */
	put_le32(cfg + 12, params->seg_count_max); /* seg_max */
	/* 16..19 geometry: zero */
	put_le32(cfg + 20, UB_SECTOR_SIZE); /* blk_size */
	/* 24 physical_block_exp, 25 alignment_offset: zero */
	put_le16(cfg + 26, 1);			 /* min_io_size */
	put_le32(cfg + 28, 1);			 /* opt_io_size */
	cfg[32] = params->write_through ? 0 : 1; /* writeback */
	put_le16(cfg + 34, (uint16_t)params->num_queues);
	if (discard) {
		put_le32(cfg + 36, zero_max); /* max_discard_sectors */
		put_le32(cfg + 40, UB_BLK_MAX_ZERO_SEG);
		put_le32(cfg + 44, UB_BLK_DISCARD_ALIGNMENT);
	}
	if (wzeroes) {
		put_le32(cfg + 48, zero_max); /* max_write_zeroes_sectors */
		put_le32(cfg + 52, UB_BLK_MAX_ZERO_SEG);
		/* Write-zeroes may deallocate when the device also
		 * discards (e.g. a hole punched in a file). */
		cfg[56] = discard ? 1 : 0;
	}
	LOG_INFO("virtio-blk config: capacity %llu sectors, size_max %u, "
		 "seg_max %u, writeback %u, num_queues %u, discard %s, "
		 "write_zeroes %s",
		 (unsigned long long)bdev->sectors, params->seg_size_max,
		 params->seg_count_max, cfg[32], params->num_queues,
		 discard ? "yes" : "no", wzeroes ? "yes" : "no");
}

void ub_vhost_dev_fini(struct ub_vhost_dev *dev)
{
	for (unsigned i = 0; i < UB_VHOST_MAX_QUEUES; i++) {
		ub_vq_worker_stop(dev->workers[i]);
		dev->workers[i] = NULL;
	}
	for (unsigned i = 0; i < UB_VHOST_MAX_QUEUES; i++)
		ub_vq_reset(&dev->vqs[i]);
	ub_guest_mem_clear(&dev->mem);
	ub_bdev_put(dev->bdev);
	dev->bdev = NULL;
}
