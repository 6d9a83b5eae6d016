/* Per-queue I/O tracking (backends.md §5): which requests a queue has in
 * flight and cumulative counters, written by the queue's I/O thread and
 * read by the RPC server.
 *
 * One tracker per queue, created once per process (so the counters survive
 * vhost reconnections) with queue_size + 8 slots. The queue's worker is the
 * only writer: no locks, no read-modify-write atomics; every field is
 * stored with a relaxed atomic store and the slot kind last with release,
 * so a reader using ub_io_tracker_snapshot/stats never sees a torn 64-bit
 * value. A snapshot may pair an offset with the length of a later request
 * in the same slot; that is accepted (the reference does the same).
 *
 * Counters (bytes_*, *_ops) are bumped when a request is handed to the
 * block device, so failed I/O counts too; they wrap at 2^64. A slot index
 * at or above the slot count (a ring larger than queue_size) is counted
 * but not listed. */
#ifndef UB_RPC_IO_TRACKER_H
#define UB_RPC_IO_TRACKER_H

#include <stdint.h>

enum ub_io_kind {
	UB_IO_IDLE = 0,
	UB_IO_READ = 1,
	UB_IO_WRITE = 2,
	UB_IO_FLUSH = 3,
};

struct ub_io_slot {
	uint8_t kind;	 /* enum ub_io_kind; stored last (release) */
	uint64_t offset; /* sectors */
	uint64_t length; /* sectors */
};

struct ub_io_stats {
	uint64_t bytes_read;
	uint64_t bytes_written;
	uint64_t read_ops;
	uint64_t write_ops;
	uint64_t flush_ops;
};

struct ub_io_tracker {
	uint32_t nslots;
	struct ub_io_slot *slots; /* owned: nslots entries */
	struct ub_io_stats stats;
};

/* Allocates a tracker with nslots slots (queue_size + 8 by convention);
 * NULL on ENOMEM. */
struct ub_io_tracker *ub_io_tracker_new(uint32_t nslots);
void ub_io_tracker_free(struct ub_io_tracker *t);

/* Writer side (the queue's I/O thread only). offset/length in sectors. */
void ub_io_tracker_read(struct ub_io_tracker *t, uint32_t slot, uint64_t offset,
			uint64_t length);
void ub_io_tracker_write(struct ub_io_tracker *t, uint32_t slot,
			 uint64_t offset, uint64_t length);
void ub_io_tracker_flush(struct ub_io_tracker *t, uint32_t slot);
void ub_io_tracker_clear(struct ub_io_tracker *t, uint32_t slot);

/* Reader side (any thread). Copies up to cap non-idle slots, in slot
 * order, into out and returns how many there were (may exceed cap: call
 * again with a larger buffer, or accept the truncation). */
uint32_t ub_io_tracker_snapshot(const struct ub_io_tracker *t,
				struct ub_io_slot *out, uint32_t cap);
void ub_io_tracker_stats(const struct ub_io_tracker *t,
			 struct ub_io_stats *out);

#endif
