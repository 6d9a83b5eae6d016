/* Fault-injection device.
 *
 * Which requests a rule counts: READ for read rules; WRITE and WRITE_ZEROES
 * (both change data and may take space) for write rules and for the byte
 * budget; FLUSH for flush rules; every request, DISCARD included, for
 * "any" rules. A request counts towards each armed rule it matches, even
 * when another rule fails it; requests that queue rejects (bad range,
 * -EAGAIN) are not counted. When several rules fire at once the errno of
 * the op's own rule wins over the "any" rule, which wins over the byte
 * budget.
 *
 * An injected failure never reaches the wrapped device: the channel keeps
 * its completion in a local ring, reports it from poll like a real one and,
 * at submit, signals the wrapped channel's event fd (if it has one) so a
 * caller sleeping on that fd wakes up for it.
 *
 * The rules are shared by every channel and clone. A test thread writes
 * them while I/O threads read them: each rule is disarmed, rewritten and
 * re-armed with release ordering, and I/O threads read the arming word
 * with acquire ordering before the rest of the rule. */
#include "bdev/fault.h"

#include <errno.h>
#include <stdlib.h>
#include <sys/eventfd.h>

#include "util/log.h"

#define NR_KINDS (UB_FAULT_ANY + 1)

struct fault_rule {
	atomic_uint_least64_t nth;  /* 1-based target; 0 = disarmed */
	atomic_uint_least64_t seen; /* matching requests since armed */
	atomic_int errnum;	    /* positive */
	atomic_bool sticky;
};

struct fault_bdev {
	struct ub_bdev dev;
	struct ub_bdev *inner; /* reference, dropped by destroy */
	struct fault_rule rules[NR_KINDS];
	atomic_bool budget_armed;
	atomic_int budget_errnum;	      /* positive */
	atomic_uint_least64_t budget;	      /* bytes allowed */
	atomic_uint_least64_t budget_written; /* bytes accepted so far */
	atomic_uint_least64_t injected;
};

struct fault_chan {
	struct ub_bdev_chan ch;
	struct ub_bdev_chan *inner; /* owned: channel of the wrapped device */
	uint32_t head;		    /* oldest injected completion */
	uint32_t nlocal;	    /* injected completions not yet polled */
	bool kick;		    /* injected since the last submit */
	struct ub_bdev_cqe local[]; /* ring of ch.depth entries */
};

/* What queue counted, so a rejection by the wrapped channel can undo it. */
struct fault_charge {
	struct fault_rule *rules[2];
	unsigned nrules;
	uint64_t bytes;
};

static struct fault_bdev *to_fault(struct ub_bdev *dev)
{
	return (struct fault_bdev *)dev;
}

static int positive_errno(int errnum)
{
	if (errnum < 0)
		return -errnum;
	return errnum ? errnum : EIO;
}

/* Counts one request against r; returns the errno to inject, or 0. */
static int rule_count(struct fault_rule *r, struct fault_charge *charge)
{
	uint64_t n = atomic_load_explicit(&r->nth, memory_order_acquire);
	uint64_t c;

	if (!n)
		return 0;
	c = atomic_fetch_add(&r->seen, 1) + 1;
	charge->rules[charge->nrules++] = r;
	if (c == n || (c > n && atomic_load(&r->sticky)))
		return atomic_load(&r->errnum);
	return 0;
}

/* Charges len bytes to the budget; returns the errno to inject, or 0. */
static int budget_charge(struct fault_bdev *f, uint64_t len,
			 struct fault_charge *charge)
{
	uint64_t limit, cur;

	if (!atomic_load_explicit(&f->budget_armed, memory_order_acquire))
		return 0;
	limit = atomic_load(&f->budget);
	cur = atomic_load(&f->budget_written);
	do {
		if (cur > limit || len > limit - cur)
			return atomic_load(&f->budget_errnum);
	} while (
	    !atomic_compare_exchange_weak(&f->budget_written, &cur, cur + len));
	charge->bytes = len;
	return 0;
}

static void charge_undo(struct fault_bdev *f, const struct fault_charge *c)
{
	for (unsigned i = 0; i < c->nrules; i++)
		atomic_fetch_sub(&c->rules[i]->seen, 1);
	if (c->bytes)
		atomic_fetch_sub(&f->budget_written, c->bytes);
}

/* Applies the rules to req; returns the errno to inject, or 0. */
static int fault_decide(struct fault_bdev *f, const struct ub_bdev_req *req,
			struct fault_charge *charge)
{
	bool is_write = false;
	int own = 0, any, budget = 0;

	switch (req->op) {
	case UB_BDEV_READ:
		own = rule_count(&f->rules[UB_FAULT_READ], charge);
		break;
	case UB_BDEV_WRITE:
	case UB_BDEV_WRITE_ZEROES:
		own = rule_count(&f->rules[UB_FAULT_WRITE], charge);
		is_write = true;
		break;
	case UB_BDEV_FLUSH:
		own = rule_count(&f->rules[UB_FAULT_FLUSH], charge);
		break;
	case UB_BDEV_DISCARD:
		break;
	}
	any = rule_count(&f->rules[UB_FAULT_ANY], charge);
	if (is_write && !own && !any)
		budget = budget_charge(
		    f, (uint64_t)req->count << UB_SECTOR_SHIFT, charge);
	if (own)
		return own;
	return any ? any : budget;
}

static int fault_queue(struct ub_bdev_chan *ch, const struct ub_bdev_req *req)
{
	struct fault_chan *fc = (struct fault_chan *)ch;
	struct fault_bdev *f = to_fault(ch->dev);
	struct fault_charge charge = {.nrules = 0};
	struct ub_bdev_cqe *c;
	int errnum, rc;

	rc = ub_bdev_req_check(ch->dev, req);
	if (rc)
		return rc;
	if (ch->inflight >= ch->depth)
		return -EAGAIN;
	errnum = fault_decide(f, req, &charge);
	if (errnum) {
		c = &fc->local[(fc->head + fc->nlocal) % ch->depth];
		c->id = req->id;
		c->res = -errnum;
		fc->nlocal++;
		fc->kick = true;
		atomic_fetch_add(&f->injected, 1);
		ch->inflight++;
		return 0;
	}
	rc = ub_bdev_chan_queue(fc->inner, req);
	if (rc) {
		charge_undo(f, &charge);
		return rc;
	}
	ch->inflight++;
	return 0;
}

static int fault_submit(struct ub_bdev_chan *ch)
{
	struct fault_chan *fc = (struct fault_chan *)ch;
	int rc, fd;

	rc = ub_bdev_chan_submit(fc->inner);
	if (fc->kick) {
		fc->kick = false;
		fd = ub_bdev_chan_event_fd(fc->inner);
		if (fd >= 0 && eventfd_write(fd, 1) < 0)
			LOG_ERROR("%s: cannot signal the event fd",
				  ch->dev->name);
	}
	return rc;
}

static unsigned fault_poll(struct ub_bdev_chan *ch, struct ub_bdev_cqe *out,
			   unsigned max)
{
	struct fault_chan *fc = (struct fault_chan *)ch;
	unsigned n = 0;

	while (n < max && fc->nlocal) {
		out[n++] = fc->local[fc->head];
		fc->head = (fc->head + 1) % ch->depth;
		fc->nlocal--;
	}
	if (n < max)
		n += ub_bdev_chan_poll(fc->inner, out + n, max - n);
	ch->inflight -= n;
	return n;
}

static int fault_event_fd(struct ub_bdev_chan *ch)
{
	return ub_bdev_chan_event_fd(((struct fault_chan *)ch)->inner);
}

static void fault_close(struct ub_bdev_chan *ch)
{
	struct fault_chan *fc = (struct fault_chan *)ch;

	ub_bdev_chan_close(fc->inner);
	free(fc);
}

static const struct ub_bdev_chan_ops fault_chan_ops = {
    .queue = fault_queue,
    .submit = fault_submit,
    .poll = fault_poll,
    .event_fd = fault_event_fd,
    .close = fault_close,
};

static int fault_open_chan(struct ub_bdev *dev, struct ub_bdev_chan **out,
			   struct ub_err *err)
{
	struct ub_bdev_chan *inner; /* owned until stored in fc */
	struct fault_chan *fc;	    /* owned by *out */
	uint32_t depth;
	int rc;

	rc = ub_bdev_open_chan(to_fault(dev)->inner, &inner, err);
	if (rc)
		return rc;
	depth = inner->depth ? inner->depth : 1;
	fc = calloc(1, sizeof(*fc) + depth * sizeof(fc->local[0]));
	if (!fc) {
		rc = ub_err_ret(err, -ENOMEM, "%s: out of memory", dev->name);
		goto err_close;
	}
	fc->ch.ops = &fault_chan_ops;
	fc->ch.dev = ub_bdev_get(dev);
	fc->ch.depth = depth;
	fc->inner = inner;
	*out = &fc->ch;
	return 0;

err_close:
	ub_bdev_chan_close(inner);
	return rc;
}

static void fault_destroy(struct ub_bdev *dev)
{
	struct fault_bdev *f = to_fault(dev);

	ub_bdev_put(f->inner);
	free(f);
}

static const struct ub_bdev_ops fault_ops = {
    .open_chan = fault_open_chan,
    .destroy = fault_destroy,
};

int ub_fault_bdev_wrap(struct ub_bdev *inner, struct ub_bdev **out,
		       struct ub_err *err)
{
	struct fault_bdev *f = calloc(1, sizeof(*f)); /* owned by *out */

	if (!f)
		return ub_err_ret(err, -ENOMEM, "Out of memory");
	ub_bdev_init(&f->dev, &fault_ops, inner->sectors, inner->flags,
		     "fault");
	f->inner = ub_bdev_get(inner);
	*out = &f->dev;
	return 0;
}

void ub_fault_bdev_fail_nth(struct ub_bdev *dev, enum ub_fault_kind kind,
			    uint64_t n, int errnum, bool sticky)
{
	struct fault_rule *r;

	if ((unsigned)kind >= NR_KINDS)
		return;
	r = &to_fault(dev)->rules[kind];
	atomic_store(&r->nth, 0);
	atomic_store(&r->seen, 0);
	atomic_store(&r->errnum, positive_errno(errnum));
	atomic_store(&r->sticky, sticky);
	atomic_store_explicit(&r->nth, n, memory_order_release);
}

void ub_fault_bdev_fail_after_bytes(struct ub_bdev *dev, uint64_t bytes,
				    int errnum)
{
	struct fault_bdev *f = to_fault(dev);

	atomic_store(&f->budget_armed, false);
	atomic_store(&f->budget_written, 0);
	atomic_store(&f->budget, bytes);
	atomic_store(&f->budget_errnum, positive_errno(errnum));
	atomic_store_explicit(&f->budget_armed, true, memory_order_release);
}

void ub_fault_bdev_reset(struct ub_bdev *dev)
{
	struct fault_bdev *f = to_fault(dev);

	for (unsigned i = 0; i < NR_KINDS; i++)
		atomic_store(&f->rules[i].nth, 0);
	atomic_store(&f->budget_armed, false);
}

uint64_t ub_fault_bdev_injected(struct ub_bdev *dev)
{
	return atomic_load(&to_fault(dev)->injected);
}
