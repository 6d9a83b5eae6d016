/* In-memory device. The array is an anonymous private mapping made with
 * MAP_NORESERVE: it reads as zeros and only the pages a test touches take
 * memory, so a test may create a device far larger than RAM as long as it
 * writes little of it.
 *
 * Every request is carried out inside queue and its completion waits in
 * the channel's ring until poll reports it (submit has nothing to do).
 * fail_next and the metrics concern READ, WRITE and FLUSH only; DISCARD
 * and WRITE_ZEROES both zero their range and are not counted. */
#include "bdev/mem.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

/* Completions a channel holds before queue returns -EAGAIN. */
#define MEM_DEPTH 256u

struct mem_bdev {
	struct ub_bdev dev;
	unsigned char *data; /* owned: mapping of bytes bytes, NULL if 0 */
	uint64_t bytes;
	atomic_uint_least64_t reads, writes, flushes;
	atomic_bool fail_next;
};

struct mem_chan {
	struct ub_bdev_chan ch;
	uint32_t head;			  /* oldest unreported completion */
	struct ub_bdev_cqe cq[MEM_DEPTH]; /* ring: ch.inflight entries */
};

static struct mem_bdev *to_mem(struct ub_bdev *dev)
{
	return (struct mem_bdev *)dev;
}

/* Copies between the array at mem and the request's iovecs. */
static void copy_iov(unsigned char *mem, const struct ub_bdev_req *req,
		     bool to_mem_array)
{
	for (int i = 0; i < req->iovcnt; i++) {
		const struct iovec *v = &req->iov[i];

		if (!v->iov_len)
			continue;
		if (to_mem_array)
			memcpy(mem, v->iov_base, v->iov_len);
		else
			memcpy(v->iov_base, mem, v->iov_len);
		mem += v->iov_len;
	}
}

/* Consumes the fail_next flag; true when this request must fail. */
static bool take_fail_next(struct mem_bdev *m)
{
	return atomic_load_explicit(&m->fail_next, memory_order_relaxed) &&
	       atomic_exchange(&m->fail_next, false);
}

static int mem_execute(struct mem_bdev *m, const struct ub_bdev_req *req)
{
	unsigned char *p = NULL;
	size_t len = (size_t)req->count << UB_SECTOR_SHIFT;

	if (req->op != UB_BDEV_FLUSH && len)
		p = m->data + (req->sector << UB_SECTOR_SHIFT);
	switch (req->op) {
	case UB_BDEV_READ:
		if (take_fail_next(m))
			return -EIO;
		copy_iov(p, req, false);
		atomic_fetch_add(&m->reads, 1);
		return 0;
	case UB_BDEV_WRITE:
		if (take_fail_next(m))
			return -EIO;
		copy_iov(p, req, true);
		atomic_fetch_add(&m->writes, 1);
		return 0;
	case UB_BDEV_FLUSH:
		if (take_fail_next(m))
			return -EIO;
		atomic_fetch_add(&m->flushes, 1);
		return 0;
	case UB_BDEV_DISCARD:
	case UB_BDEV_WRITE_ZEROES:
		if (len)
			memset(p, 0, len);
		return 0;
	}
	return -EINVAL;
}

static int mem_queue(struct ub_bdev_chan *ch, const struct ub_bdev_req *req)
{
	struct mem_chan *mc = (struct mem_chan *)ch;
	struct ub_bdev_cqe *c;
	int rc;

	rc = ub_bdev_req_check(ch->dev, req);
	if (rc)
		return rc;
	if (ch->inflight >= MEM_DEPTH)
		return -EAGAIN;
	c = &mc->cq[(mc->head + ch->inflight) % MEM_DEPTH];
	c->id = req->id;
	c->res = mem_execute(to_mem(ch->dev), req);
	ch->inflight++;
	return 0;
}

static int mem_submit(struct ub_bdev_chan *ch)
{
	return 0;
}

static unsigned mem_poll(struct ub_bdev_chan *ch, struct ub_bdev_cqe *out,
			 unsigned max)
{
	struct mem_chan *mc = (struct mem_chan *)ch;
	unsigned n = 0;

	while (n < max && ch->inflight) {
		out[n++] = mc->cq[mc->head];
		mc->head = (mc->head + 1) % MEM_DEPTH;
		ch->inflight--;
	}
	return n;
}

static void mem_close(struct ub_bdev_chan *ch)
{
	free(ch);
}

static const struct ub_bdev_chan_ops mem_chan_ops = {
    .queue = mem_queue,
    .submit = mem_submit,
    .poll = mem_poll,
    .close = mem_close,
};

static int mem_open_chan(struct ub_bdev *dev, struct ub_bdev_chan **out,
			 struct ub_err *err)
{
	struct mem_chan *mc = calloc(1, sizeof(*mc)); /* owned by *out */

	if (!mc)
		return ub_err_ret(err, -ENOMEM, "%s: out of memory", dev->name);
	mc->ch.ops = &mem_chan_ops;
	mc->ch.dev = ub_bdev_get(dev);
	mc->ch.depth = MEM_DEPTH;
	*out = &mc->ch;
	return 0;
}

static void mem_destroy(struct ub_bdev *dev)
{
	struct mem_bdev *m = to_mem(dev);

	if (m->data)
		munmap(m->data, m->bytes);
	free(m);
}

static const struct ub_bdev_ops mem_ops = {
    .open_chan = mem_open_chan,
    .destroy = mem_destroy,
};

int ub_mem_bdev_create(uint64_t bytes, struct ub_bdev **out, struct ub_err *err)
{
	struct mem_bdev *m; /* owned until handed over in *out */
	int rc;

	if (bytes % UB_SECTOR_SIZE)
		return ub_err_ret(err, -EINVAL,
				  "Memory device size %llu is not a multiple "
				  "of %u bytes",
				  (unsigned long long)bytes, UB_SECTOR_SIZE);
	m = calloc(1, sizeof(*m));
	if (!m)
		return ub_err_ret(err, -ENOMEM, "Out of memory");
	if (bytes) {
		void *p =
		    mmap(NULL, bytes, PROT_READ | PROT_WRITE,
			 MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);

		if (p == MAP_FAILED) {
			rc = ub_err_ret(err, -ENOMEM,
					"Cannot map %llu bytes for a memory "
					"device",
					(unsigned long long)bytes);
			goto err_free;
		}
		m->data = p;
	}
	m->bytes = bytes;
	ub_bdev_init(&m->dev, &mem_ops, bytes >> UB_SECTOR_SHIFT,
		     UB_BDEV_F_DISCARD | UB_BDEV_F_WRITE_ZEROES, "mem");
	*out = &m->dev;
	return 0;

err_free:
	free(m);
	return rc;
}

unsigned char *ub_mem_bdev_data(struct ub_bdev *dev)
{
	return to_mem(dev)->data;
}

struct ub_mem_bdev_metrics ub_mem_bdev_metrics(struct ub_bdev *dev)
{
	struct mem_bdev *m = to_mem(dev);
	struct ub_mem_bdev_metrics r = {
	    .reads = atomic_load(&m->reads),
	    .writes = atomic_load(&m->writes),
	    .flushes = atomic_load(&m->flushes),
	};

	return r;
}

void ub_mem_bdev_fail_next(struct ub_bdev *dev)
{
	atomic_store(&to_mem(dev)->fail_next, true);
}
