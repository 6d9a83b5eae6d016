/* Per-queue I/O tracker (backends.md §5). Single writer (the queue's I/O
 * thread), any number of readers: the writer publishes every field with a
 * relaxed atomic store and a slot's kind last with release; readers load
 * the kind with acquire and the rest relaxed. Counters are bumped with a
 * relaxed load + store pair, which is enough with one writer and never a
 * locked read-modify-write on the I/O path. */
#include "rpc/io_tracker.h"

#include <inttypes.h>
#include <stdbool.h>
#include <stdlib.h>

#include "util/log.h"

#define SECTOR_BYTES 512u

struct ub_io_tracker *ub_io_tracker_new(uint32_t nslots)
{
	struct ub_io_tracker *t; /* returned; caller frees */

	t = calloc(1, sizeof(*t));
	if (!t)
		return NULL;
	if (nslots) {
		t->slots = calloc(nslots, sizeof(*t->slots));
		if (!t->slots) {
			free(t);
			return NULL;
		}
	}
	t->nslots = nslots;
	return t;
}

void ub_io_tracker_free(struct ub_io_tracker *t)
{
	if (!t)
		return;
	free(t->slots);
	free(t);
}

/* One writer: a plain load and store are race-free for it; the atomic
 * accesses only keep readers from seeing a torn value. Wraps at 2^64. */
static void bump(uint64_t *ctr, uint64_t add)
{
	uint64_t v = __atomic_load_n(ctr, __ATOMIC_RELAXED);

	__atomic_store_n(ctr, v + add, __ATOMIC_RELAXED);
}

static const char *kind_name(enum ub_io_kind kind)
{
	switch (kind) {
	case UB_IO_READ:
		return "read";
	case UB_IO_WRITE:
		return "write";
	case UB_IO_FLUSH:
		return "flush";
	default:
		return "idle";
	}
}

/* Marks slot busy with kind; with_range stores offset and length first
 * (a flush leaves them untouched). */
static void mark(struct ub_io_tracker *t, uint32_t slot, enum ub_io_kind kind,
		 bool with_range, uint64_t offset, uint64_t length)
{
	struct ub_io_slot *s;

	if (slot >= t->nslots) {
		if (with_range)
			LOG_DEBUG("Large IO (%s): slot %" PRIu32
				  ", offset %" PRIu64
				  " sectors, length %" PRIu64 " sectors",
				  kind_name(kind), slot, offset, length);
		else
			LOG_DEBUG("Large IO (%s): slot %" PRIu32,
				  kind_name(kind), slot);
		return;
	}
	s = &t->slots[slot];
	if (__atomic_load_n(&s->kind, __ATOMIC_RELAXED) != UB_IO_IDLE)
		LOG_WARN("IO slot %" PRIu32 " is already in use", slot);
	if (with_range) {
		__atomic_store_n(&s->offset, offset, __ATOMIC_RELAXED);
		__atomic_store_n(&s->length, length, __ATOMIC_RELAXED);
	}
	__atomic_store_n(&s->kind, (uint8_t)kind, __ATOMIC_RELEASE);
}

void ub_io_tracker_read(struct ub_io_tracker *t, uint32_t slot, uint64_t offset,
			uint64_t length)
{
	bump(&t->stats.bytes_read, length * SECTOR_BYTES);
	bump(&t->stats.read_ops, 1);
	mark(t, slot, UB_IO_READ, true, offset, length);
}

void ub_io_tracker_write(struct ub_io_tracker *t, uint32_t slot,
			 uint64_t offset, uint64_t length)
{
	bump(&t->stats.bytes_written, length * SECTOR_BYTES);
	bump(&t->stats.write_ops, 1);
	mark(t, slot, UB_IO_WRITE, true, offset, length);
}

void ub_io_tracker_flush(struct ub_io_tracker *t, uint32_t slot)
{
	bump(&t->stats.flush_ops, 1);
	mark(t, slot, UB_IO_FLUSH, false, 0, 0);
}

void ub_io_tracker_clear(struct ub_io_tracker *t, uint32_t slot)
{
	if (slot >= t->nslots)
		return;
	__atomic_store_n(&t->slots[slot].kind, (uint8_t)UB_IO_IDLE,
			 __ATOMIC_RELEASE);
}

uint32_t ub_io_tracker_snapshot(const struct ub_io_tracker *t,
				struct ub_io_slot *out, uint32_t cap)
{
	uint32_t i, n = 0;

	for (i = 0; i < t->nslots; i++) {
		const struct ub_io_slot *s = &t->slots[i];
		uint8_t kind = __atomic_load_n(&s->kind, __ATOMIC_ACQUIRE);

		if (kind == UB_IO_IDLE)
			continue;
		if (n < cap) {
			out[n].kind = kind;
			out[n].offset =
			    __atomic_load_n(&s->offset, __ATOMIC_RELAXED);
			out[n].length =
			    __atomic_load_n(&s->length, __ATOMIC_RELAXED);
		}
		n++;
	}
	return n;
}

void ub_io_tracker_stats(const struct ub_io_tracker *t, struct ub_io_stats *out)
{
	const struct ub_io_stats *s = &t->stats;

	out->bytes_read = __atomic_load_n(&s->bytes_read, __ATOMIC_RELAXED);
	out->bytes_written =
	    __atomic_load_n(&s->bytes_written, __ATOMIC_RELAXED);
	out->read_ops = __atomic_load_n(&s->read_ops, __ATOMIC_RELAXED);
	out->write_ops = __atomic_load_n(&s->write_ops, __ATOMIC_RELAXED);
	out->flush_ops = __atomic_load_n(&s->flush_ops, __ATOMIC_RELAXED);
}
