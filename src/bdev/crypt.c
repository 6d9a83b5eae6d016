/* Crypt device.
 *
 * Every caller request takes a slot of the channel's fixed slot table and
 * goes to the wrapped channel under the slot's index as its id, so caller
 * ids may be any 64-bit values; the table has one slot per request the
 * wrapped channel can hold (at most CRYPT_MAX_SLOTS), and queue returns
 * -EAGAIN when every slot is taken.
 *
 * WRITE and WRITE_ZEROES go through the channel's bounce arena: a run of
 * aligned pages big enough for one chunk of at most CHUNK_SECTORS. The
 * chunk is copied from the caller's iovecs (or zeroed), encrypted there
 * and written from there; a longer request writes its chunks one after the
 * other from the same run, the next chunk being queued (and the wrapped
 * channel submitted) from poll when the previous one has succeeded. The
 * caller gets one completion: 0, or the first error. queue returns -EAGAIN
 * when the arena has no free run long enough.
 *
 * READ goes straight into the caller's iovecs and is decrypted there in
 * poll once the wrapped read has succeeded; whole sectors inside one iovec
 * are decrypted in bulk, a sector split across iovecs through a one-sector
 * scratch. When the read fails, or decryption does, the caller's iovecs
 * are zeroed before the error is reported, so a failed read never leaves
 * ciphertext (or a partial transfer of it) where data is expected.
 *
 * FLUSH and DISCARD pass through. */
#include "bdev/crypt.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "crypto/xts.h"
#include "util/log.h"

#define CRYPT_MAX_SLOTS 1024u
#define CHUNK_SECTORS	512u /* 256 KiB per wrapped write */
#define PAGE_SIZE_B	UB_BUF_ALIGN
#define ARENA_PAGES	512u /* 2 MiB of bounce pages per channel */
#define ARENA_WORDS	(ARENA_PAGES / 64)
#define SLOT_INLINE_IOV 8
#define NO_SLOT		UINT32_MAX

struct crypt_bdev {
	struct ub_bdev dev;
	struct ub_bdev *inner; /* reference, dropped by destroy */
	struct ub_xts *xts;    /* owned: cloned for every channel */
};

/* Position inside an iovec array. */
struct iov_pos {
	int i;
	size_t off;
};

struct crypt_slot {
	bool busy;
	enum ub_bdev_op op;
	uint64_t id;	 /* caller's tag */
	uint64_t sector; /* READ: first sector; writes: chunk in flight */
	uint32_t count;	 /* READ: sectors; writes: sectors of the chunk */
	uint32_t left;	 /* writes: sectors after the chunk in flight */
	uint32_t page;	 /* writes: first page of the bounce run */
	uint32_t npages; /* writes: pages in the bounce run */
	uint32_t next_free;
	struct iov_pos pos; /* multi-chunk WRITE: next source byte */
	int iovcnt;	    /* READ, multi-chunk WRITE: entries in iov */
	int iov_cap;
	struct iovec *iov; /* inl, or owned heap array of iov_cap entries */
	struct iovec inl[SLOT_INLINE_IOV];
};

struct crypt_chan {
	struct ub_bdev_chan ch;
	struct ub_bdev_chan *inner; /* owned: channel of the wrapped device */
	struct ub_xts *xts;	    /* owned: this channel's cipher */
	struct crypt_slot *slots;   /* owned: nslots entries */
	uint32_t nslots;
	uint32_t free_head;   /* first free slot, or NO_SLOT */
	unsigned char *arena; /* owned: ARENA_PAGES pages; NULL if read-only */
	uint64_t arena_map[ARENA_WORDS];       /* bit set: page in use */
	unsigned char scratch[UB_SECTOR_SIZE]; /* a sector split by iovecs */
};

static struct crypt_bdev *to_crypt(struct ub_bdev *dev)
{
	return (struct crypt_bdev *)dev;
}

static struct crypt_chan *to_chan(struct ub_bdev_chan *ch)
{
	return (struct crypt_chan *)ch;
}

/* ---- iovec helpers ---------------------------------------------------- */

/* Copies len bytes between the iovecs at *pos and buf (to_buf: from the
 * iovecs into buf) and advances *pos. The iovecs hold at least len bytes
 * from *pos (ub_bdev_req_check has checked the total). */
static void iov_copy(const struct iovec *iov, struct iov_pos *pos,
		     unsigned char *buf, size_t len, bool to_buf)
{
	while (len) {
		size_t n = iov[pos->i].iov_len - pos->off;
		unsigned char *p = (unsigned char *)iov[pos->i].iov_base;

		if (!n) {
			pos->i++;
			pos->off = 0;
			continue;
		}
		if (n > len)
			n = len;
		if (to_buf)
			memcpy(buf, p + pos->off, n);
		else
			memcpy(p + pos->off, buf, n);
		buf += n;
		len -= n;
		pos->off += n;
	}
}

static void iov_zero(const struct iovec *iov, int iovcnt)
{
	for (int i = 0; i < iovcnt; i++)
		if (iov[i].iov_len)
			memset(iov[i].iov_base, 0, iov[i].iov_len);
}

/* Decrypts count sectors held in the iovecs in place. */
static int decrypt_iov(struct crypt_chan *cc, const struct iovec *iov,
		       uint64_t sector, uint32_t count)
{
	struct iov_pos pos = {0, 0};

	while (count) {
		size_t avail = iov[pos.i].iov_len - pos.off;
		unsigned char *p = (unsigned char *)iov[pos.i].iov_base;
		struct iov_pos start;
		uint32_t n;

		if (!avail) {
			pos.i++;
			pos.off = 0;
			continue;
		}
		if (avail >= UB_SECTOR_SIZE) {
			n = avail / UB_SECTOR_SIZE < count
				? (uint32_t)(avail / UB_SECTOR_SIZE)
				: count;
			if (ub_xts_decrypt(cc->xts, p + pos.off, sector, n))
				return -EIO;
			pos.off += (size_t)n << UB_SECTOR_SHIFT;
		} else {
			n = 1;
			start = pos;
			iov_copy(iov, &pos, cc->scratch, UB_SECTOR_SIZE, true);
			if (ub_xts_decrypt(cc->xts, cc->scratch, sector, 1))
				return -EIO;
			iov_copy(iov, &start, cc->scratch, UB_SECTOR_SIZE,
				 false);
		}
		sector += n;
		count -= n;
	}
	return 0;
}

/* Encrypts count sectors from the iovecs at *pos into buf and advances
 * *pos: whole sectors inside one iovec in one pass each (the caller's
 * memory is only read), a sector split across iovecs gathered into buf
 * first and encrypted there. */
static int encrypt_iov_to(struct crypt_chan *cc, unsigned char *buf,
			  const struct iovec *iov, struct iov_pos *pos,
			  uint64_t sector, uint32_t count)
{
	while (count) {
		size_t avail = iov[pos->i].iov_len - pos->off;
		const unsigned char *p =
		    (const unsigned char *)iov[pos->i].iov_base + pos->off;
		uint32_t n;
		int rc;

		if (!avail) {
			pos->i++;
			pos->off = 0;
			continue;
		}
		if (avail >= UB_SECTOR_SIZE) {
			n = avail / UB_SECTOR_SIZE < count
				? (uint32_t)(avail / UB_SECTOR_SIZE)
				: count;
			rc = ub_xts_encrypt_to(cc->xts, buf, p, sector, n);
			pos->off += (size_t)n << UB_SECTOR_SHIFT;
		} else {
			n = 1;
			iov_copy(iov, pos, buf, UB_SECTOR_SIZE, true);
			rc = ub_xts_encrypt(cc->xts, buf, sector, 1);
		}
		if (rc)
			return rc;
		buf += (size_t)n << UB_SECTOR_SHIFT;
		sector += n;
		count -= n;
	}
	return 0;
}

/* ---- slots and bounce arena ------------------------------------------- */

/* Keeps a copy of the request's iovecs; iovcnt is bounded by
 * ub_bdev_req_check, so the slot's array is too. */
static int slot_set_iov(struct crypt_slot *s, const struct iovec *iov,
			int iovcnt)
{
	if (iovcnt > s->iov_cap) {
		/* owned by the slot until the channel closes */
		struct iovec *p = malloc((size_t)iovcnt * sizeof(*p));

		if (!p)
			return -ENOMEM;
		if (s->iov != s->inl)
			free(s->iov);
		s->iov = p;
		s->iov_cap = iovcnt;
	}
	if (iovcnt)
		memcpy(s->iov, iov, (size_t)iovcnt * sizeof(*iov));
	s->iovcnt = iovcnt;
	return 0;
}

static void slot_put(struct crypt_chan *cc, uint32_t idx)
{
	cc->slots[idx].busy = false;
	cc->slots[idx].next_free = cc->free_head;
	cc->free_head = idx;
}

static bool page_used(const struct crypt_chan *cc, uint32_t p)
{
	return cc->arena_map[p / 64] >> (p % 64) & 1;
}

static void pages_mark(struct crypt_chan *cc, uint32_t first, uint32_t n,
		       bool used)
{
	for (uint32_t p = first; p < first + n; p++) {
		uint64_t bit = 1ull << (p % 64);

		if (used)
			cc->arena_map[p / 64] |= bit;
		else
			cc->arena_map[p / 64] &= ~bit;
	}
}

/* Takes the first run of n free pages; its first page, or -1. */
static int arena_get(struct crypt_chan *cc, uint32_t n)
{
	uint32_t run = 0;

	for (uint32_t p = 0; p < ARENA_PAGES; p++) {
		if (p % 64 == 0 && cc->arena_map[p / 64] == UINT64_MAX) {
			run = 0;
			p += 63;
			continue;
		}
		if (page_used(cc, p)) {
			run = 0;
			continue;
		}
		if (++run == n) {
			pages_mark(cc, p + 1 - n, n, true);
			return (int)(p + 1 - n);
		}
	}
	return -1;
}

/* ---- requests ---------------------------------------------------------- */

/* Fills the slot's bounce run with its current chunk (from src, or zeros),
 * encrypts it and queues the wrapped write. */
static int write_chunk(struct crypt_chan *cc, struct crypt_slot *s,
		       uint32_t idx, const struct iovec *src)
{
	unsigned char *buf = cc->arena + (size_t)s->page * PAGE_SIZE_B;
	size_t len = (size_t)s->count << UB_SECTOR_SHIFT;
	struct iovec v = {.iov_base = buf, .iov_len = len};
	struct ub_bdev_req r = {
	    .op = UB_BDEV_WRITE,
	    .sector = s->sector,
	    .count = s->count,
	    .iov = &v,
	    .iovcnt = 1,
	    .id = idx,
	};

	if (s->op == UB_BDEV_WRITE) {
		if (encrypt_iov_to(cc, buf, src, &s->pos, s->sector, s->count))
			return -EIO;
	} else {
		memset(buf, 0, len);
		if (ub_xts_encrypt(cc->xts, buf, s->sector, s->count))
			return -EIO;
	}
	return ub_bdev_chan_queue(cc->inner, &r);
}

static int write_start(struct crypt_chan *cc, struct crypt_slot *s,
		       uint32_t idx, const struct ub_bdev_req *req)
{
	uint32_t chunk =
	    req->count < CHUNK_SECTORS ? req->count : CHUNK_SECTORS;
	const struct iovec *src = req->iov;
	size_t bytes = (size_t)chunk << UB_SECTOR_SHIFT;
	int page, rc;

	if (!cc->arena)
		return -EROFS;
	s->npages = (uint32_t)((bytes + PAGE_SIZE_B - 1) / PAGE_SIZE_B);
	page = arena_get(cc, s->npages);
	if (page < 0)
		return -EAGAIN;
	s->page = (uint32_t)page;
	s->count = chunk;
	s->left = req->count - chunk;
	s->pos = (struct iov_pos){0, 0};
	if (req->op == UB_BDEV_WRITE && s->left) {
		rc = slot_set_iov(s, req->iov, req->iovcnt);
		if (rc)
			goto err_pages;
		src = s->iov;
	}
	rc = write_chunk(cc, s, idx, src);
	if (rc)
		goto err_pages;
	return 0;

err_pages:
	pages_mark(cc, s->page, s->npages, false);
	return rc;
}

static int crypt_queue(struct ub_bdev_chan *ch, const struct ub_bdev_req *req)
{
	struct crypt_chan *cc = to_chan(ch);
	struct ub_bdev_req inner;
	struct crypt_slot *s;
	uint32_t idx;
	int rc;

	rc = ub_bdev_req_check(ch->dev, req);
	if (rc)
		return rc;
	idx = cc->free_head;
	if (idx == NO_SLOT)
		return -EAGAIN;
	s = &cc->slots[idx];
	s->op = req->op;
	s->id = req->id;
	s->sector = req->sector;
	s->count = req->count;
	s->left = 0;
	switch (req->op) {
	case UB_BDEV_WRITE:
	case UB_BDEV_WRITE_ZEROES:
		rc = write_start(cc, s, idx, req);
		break;
	case UB_BDEV_READ:
		rc = slot_set_iov(s, req->iov, req->iovcnt);
		if (rc)
			break;
		/* fall through */
	default:
		inner = *req;
		inner.id = idx;
		rc = ub_bdev_chan_queue(cc->inner, &inner);
		break;
	}
	if (rc)
		return rc;
	cc->free_head = s->next_free;
	s->busy = true;
	ch->inflight++;
	return 0;
}

static int crypt_submit(struct ub_bdev_chan *ch)
{
	return ub_bdev_chan_submit(to_chan(ch)->inner);
}

/* Handles one completion of the wrapped channel; true when *c now holds
 * the caller's completion, false when nothing is to be reported yet. */
static bool crypt_finish(struct crypt_chan *cc, struct ub_bdev_cqe *c,
			 bool *resubmit)
{
	struct crypt_slot *s;
	int res = c->res;

	if (c->id >= cc->nslots || !cc->slots[c->id].busy) {
		LOG_ERROR("%s: completion for unknown request %llu",
			  cc->ch.dev->name, (unsigned long long)c->id);
		return false;
	}
	s = &cc->slots[c->id];
	switch (s->op) {
	case UB_BDEV_READ:
		if (!res)
			res = decrypt_iov(cc, s->iov, s->sector, s->count);
		if (res)
			iov_zero(s->iov, s->iovcnt);
		break;
	case UB_BDEV_WRITE:
	case UB_BDEV_WRITE_ZEROES:
		if (!res && s->left) {
			s->sector += s->count;
			s->count =
			    s->left < CHUNK_SECTORS ? s->left : CHUNK_SECTORS;
			s->left -= s->count;
			res = write_chunk(cc, s, (uint32_t)c->id, s->iov);
			if (!res) {
				*resubmit = true;
				return false;
			}
		}
		pages_mark(cc, s->page, s->npages, false);
		break;
	default:
		break;
	}
	slot_put(cc, (uint32_t)c->id);
	cc->ch.inflight--;
	c->id = s->id; /* the slot is free, its fields still intact */
	c->res = res;
	return true;
}

static unsigned crypt_poll(struct ub_bdev_chan *ch, struct ub_bdev_cqe *out,
			   unsigned max)
{
	struct crypt_chan *cc = to_chan(ch);
	bool resubmit = false;
	unsigned n = 0;
	int rc;

	/* Caller completions are compacted to the front of out; each wrapped
	 * completion yields at most one, so n never passes the one read. */
	while (n < max) {
		unsigned got = ub_bdev_chan_poll(cc->inner, out + n, max - n);
		unsigned end = n + got;

		if (!got)
			break;
		for (unsigned i = n; i < end; i++) {
			struct ub_bdev_cqe c = out[i];

			if (crypt_finish(cc, &c, &resubmit))
				out[n++] = c;
		}
	}
	if (resubmit) {
		rc = ub_bdev_chan_submit(cc->inner);
		if (rc)
			LOG_ERROR("%s: submitting the next write chunk: %d",
				  ch->dev->name, rc);
	}
	return n;
}

static int crypt_event_fd(struct ub_bdev_chan *ch)
{
	return ub_bdev_chan_event_fd(to_chan(ch)->inner);
}

/* Frees what crypt_open_chan set up; the wrapped channel is idle. */
static void crypt_chan_free(struct crypt_chan *cc)
{
	if (cc->slots) {
		for (uint32_t i = 0; i < cc->nslots; i++)
			if (cc->slots[i].iov != cc->slots[i].inl)
				free(cc->slots[i].iov);
	}
	free(cc->slots);
	free(cc->arena);
	ub_xts_free(cc->xts);
	ub_bdev_chan_close(cc->inner);
	free(cc);
}

static void crypt_close(struct ub_bdev_chan *ch)
{
	crypt_chan_free(to_chan(ch));
}

static const struct ub_bdev_chan_ops crypt_chan_ops = {
    .queue = crypt_queue,
    .submit = crypt_submit,
    .poll = crypt_poll,
    .event_fd = crypt_event_fd,
    .close = crypt_close,
};

static int crypt_open_chan(struct ub_bdev *dev, struct ub_bdev_chan **out,
			   struct ub_err *err)
{
	struct crypt_bdev *c = to_crypt(dev);
	struct crypt_chan *cc = calloc(1, sizeof(*cc)); /* owned by *out */
	uint32_t depth;
	int rc;

	if (!cc)
		return ub_err_ret(err, -ENOMEM, "%s: out of memory", dev->name);
	rc = ub_bdev_open_chan(c->inner, &cc->inner, err);
	if (rc)
		goto err_free;
	rc = ub_xts_clone(c->xts, &cc->xts, err);
	if (rc)
		goto err_free;
	depth = cc->inner->depth;
	if (depth > CRYPT_MAX_SLOTS)
		depth = CRYPT_MAX_SLOTS;
	if (!depth)
		depth = 1;
	cc->nslots = depth;
	cc->slots = calloc(depth, sizeof(*cc->slots));
	if (!cc->slots) {
		rc = ub_err_ret(err, -ENOMEM, "%s: out of memory", dev->name);
		goto err_free;
	}
	for (uint32_t i = 0; i < depth; i++) {
		cc->slots[i].iov = cc->slots[i].inl;
		cc->slots[i].iov_cap = SLOT_INLINE_IOV;
		cc->slots[i].next_free = i + 1 < depth ? i + 1 : NO_SLOT;
	}
	cc->free_head = 0;
	/* Not zeroed: only pages that writes use become resident, and the
	 * first-fit allocator keeps those at the low end. */
	if (!(dev->flags & UB_BDEV_F_READONLY)) {
		void *arena = NULL; /* owned by cc once stored there */

		if (posix_memalign(&arena, UB_BUF_ALIGN,
				   (size_t)ARENA_PAGES * PAGE_SIZE_B))
			arena = NULL;
		cc->arena = arena;
		if (!cc->arena) {
			rc = ub_err_ret(err, -ENOMEM, "%s: out of memory",
					dev->name);
			goto err_free;
		}
	}
	cc->ch.ops = &crypt_chan_ops;
	cc->ch.dev = ub_bdev_get(dev);
	cc->ch.depth = depth;
	*out = &cc->ch;
	return 0;

err_free:
	crypt_chan_free(cc);
	return rc;
}

static void crypt_destroy(struct ub_bdev *dev)
{
	struct crypt_bdev *c = to_crypt(dev);

	ub_xts_free(c->xts);
	ub_bdev_put(c->inner);
	free(c);
}

static const struct ub_bdev_ops crypt_ops = {
    .open_chan = crypt_open_chan,
    .destroy = crypt_destroy,
};

int ub_crypt_bdev_wrap(struct ub_bdev *inner, const unsigned char *key,
		       size_t key_len, struct ub_bdev **out, struct ub_err *err)
{
	struct crypt_bdev *c = calloc(1, sizeof(*c)); /* owned by *out */
	uint32_t flags = inner->flags & ~UB_BDEV_F_WRITE_ZEROES;
	int rc;

	if (!c)
		return ub_err_ret(err, -ENOMEM, "Out of memory");
	rc = ub_xts_new(&c->xts, key, key_len, err);
	if (rc) {
		ub_err_prefix(err, "Failed to create crypt device");
		goto err_free;
	}
	if (!(flags & UB_BDEV_F_READONLY))
		flags |= UB_BDEV_F_WRITE_ZEROES;
	ub_bdev_init(&c->dev, &crypt_ops, inner->sectors, flags, "crypt");
	c->inner = ub_bdev_get(inner);
	*out = &c->dev;
	return 0;

err_free:
	free(c);
	return rc;
}
