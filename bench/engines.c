/* Random 4 KiB I/O through one channel of a file engine, to set beside
 * `fio --ioengine=io_uring --direct=1` on the same file.
 *
 * Usage: engines --file F [--engine io_uring|sync] [--rw randread|randwrite]
 *                [--qd N] [--bs B] [--seconds S] [--buffered]
 *                [--wait spin|event] [--batch K]
 * Keeps N requests of B bytes (default 4096) at random B-aligned offsets
 * in flight for S seconds (default 5) through a device opened with
 * O_DIRECT (unless --buffered), queue depth N rounded up to a power of
 * two, and prints one line:
 *   <engine>|<rw>|<qd>|<iops>
 * --wait spin (default) polls the channel without sleeping, as the
 * backend's queue threads do under load; --wait event sleeps on the
 * channel's event fd when nothing has completed. --batch K submits after
 * every K queued requests (and after the last free slot is refilled);
 * the default 1 submits each request on its own, as fio does with its
 * default iodepth_batch_submit=1. The sync engine carries
 * out each request inside queue, so its QD N means N requests handed over
 * per submit and executed one after the other. */
#include <errno.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "bdev/bdev.h"
#include "bdev/file.h"
#include "util/err.h"

#define QD_MAX 4096u

struct opts {
	const char *file;
	enum ub_io_engine engine;
	bool write;
	bool buffered;
	bool event;
	uint32_t qd;
	uint32_t bs;
	uint32_t batch;
	double seconds;
};

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static uint64_t next_rand(uint64_t *s)
{
	/* xorshift64* */
	*s ^= *s >> 12;
	*s ^= *s << 25;
	*s ^= *s >> 27;
	return *s * 2685821657736338717ull;
}

static int usage(void)
{
	fprintf(stderr,
		"usage: engines --file F [--engine io_uring|sync] "
		"[--rw randread|randwrite] [--qd N] [--bs B] [--seconds S] "
		"[--buffered] [--wait spin|event] [--batch K]\n");
	return 2;
}

static int parse(int argc, char **argv, struct opts *o)
{
	int i;

	*o = (struct opts){.engine = UB_IO_ENGINE_IO_URING,
			   .qd = 1,
			   .bs = 4096,
			   .batch = 1,
			   .seconds = 5};
	for (i = 1; i < argc; i++) {
		const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;

		if (!strcmp(a, "--buffered")) {
			o->buffered = true;
			continue;
		}
		if (!v)
			return -EINVAL;
		i++;
		if (!strcmp(a, "--file"))
			o->file = v;
		else if (!strcmp(a, "--engine") && !strcmp(v, "io_uring"))
			o->engine = UB_IO_ENGINE_IO_URING;
		else if (!strcmp(a, "--engine") && !strcmp(v, "sync"))
			o->engine = UB_IO_ENGINE_SYNC;
		else if (!strcmp(a, "--rw") && !strcmp(v, "randread"))
			o->write = false;
		else if (!strcmp(a, "--rw") && !strcmp(v, "randwrite"))
			o->write = true;
		else if (!strcmp(a, "--wait") && !strcmp(v, "spin"))
			o->event = false;
		else if (!strcmp(a, "--wait") && !strcmp(v, "event"))
			o->event = true;
		else if (!strcmp(a, "--qd"))
			o->qd = (uint32_t)strtoul(v, NULL, 10);
		else if (!strcmp(a, "--batch"))
			o->batch = (uint32_t)strtoul(v, NULL, 10);
		else if (!strcmp(a, "--bs"))
			o->bs = (uint32_t)strtoul(v, NULL, 10);
		else if (!strcmp(a, "--seconds"))
			o->seconds = strtod(v, NULL);
		else
			return -EINVAL;
	}
	if (!o->file || o->qd == 0 || o->qd > QD_MAX || o->batch == 0 ||
	    o->bs == 0 || o->bs % UB_SECTOR_SIZE || o->seconds <= 0)
		return -EINVAL;
	return 0;
}

/* Sleeps until the event fd fires (or 1 ms passes) and resets it. */
static void wait_event(int efd)
{
	struct pollfd p = {.fd = efd, .events = POLLIN};
	uint64_t v;

	if (poll(&p, 1, 1) > 0 && read(efd, &v, sizeof(v)) < 0)
		perror("eventfd read");
}

/* Runs the measurement; *iops gets the result. */
static int run(const struct opts *o, struct ub_bdev_chan *ch, uint64_t blocks,
	       unsigned char *bufs, double *iops)
{
	struct ub_bdev_cqe cqe[QD_MAX];
	struct iovec iov[QD_MAX];
	uint32_t free_slots[QD_MAX], nfree = o->qd, i, queued = 0;
	uint64_t seed = 0x9E3779B97F4A7C15ull ^ (uint64_t)getpid(), done = 0;
	double start = now(), end = start + o->seconds, t = start;
	int efd = o->event ? ub_bdev_chan_event_fd(ch) : -1;
	unsigned n;
	int rc;

	for (i = 0; i < o->qd; i++)
		free_slots[i] = i;
	while (t < end) {
		while (nfree) {
			uint32_t s = free_slots[--nfree];
			struct ub_bdev_req req = {
			    .op = o->write ? UB_BDEV_WRITE : UB_BDEV_READ,
			    .sector = next_rand(&seed) % blocks *
				      (o->bs / UB_SECTOR_SIZE),
			    .count = o->bs / UB_SECTOR_SIZE,
			    .iov = &iov[s],
			    .iovcnt = 1,
			    .id = s};

			iov[s].iov_base = bufs + (size_t)s * o->bs;
			iov[s].iov_len = o->bs;
			rc = ub_bdev_chan_queue(ch, &req);
			if (rc < 0) {
				fprintf(stderr, "queue: %s\n", strerror(-rc));
				return rc;
			}
			if (++queued < o->batch && nfree)
				continue;
			queued = 0;
			rc = ub_bdev_chan_submit(ch);
			if (rc < 0) {
				fprintf(stderr, "submit: %s\n", strerror(-rc));
				return rc;
			}
		}
		do {
			n = ub_bdev_chan_poll(ch, cqe, o->qd);
			if (!n && efd >= 0)
				wait_event(efd);
		} while (!n);
		for (i = 0; i < n; i++) {
			if (cqe[i].res < 0) {
				fprintf(stderr, "request failed: %s\n",
					strerror(-cqe[i].res));
				return cqe[i].res;
			}
			free_slots[nfree++] = (uint32_t)cqe[i].id;
		}
		done += n;
		t = now();
	}
	*iops = (double)done / (t - start);
	return 0;
}

int main(int argc, char **argv)
{
	struct ub_file_bdev_opts fo = {0};
	struct ub_bdev_chan *ch = NULL;
	struct ub_bdev *dev = NULL;
	unsigned char *bufs = NULL; /* qd * bs bytes, UB_BUF_ALIGN-aligned */
	struct ub_err err = {{0}};
	struct opts o;
	uint64_t blocks;
	double iops = 0;
	int rc;

	if (parse(argc, argv, &o) < 0)
		return usage();
	fo.path = o.file;
	fo.direct = !o.buffered;
	fo.queue_depth = 1;
	while (fo.queue_depth < o.qd)
		fo.queue_depth <<= 1;
	rc = ub_file_bdev_open(o.engine, &fo, &dev, &err);
	if (rc < 0) {
		fprintf(stderr, "engines: %s\n", err.msg);
		return 1;
	}
	blocks = dev->sectors * UB_SECTOR_SIZE / o.bs;
	if (!blocks) {
		fprintf(stderr, "engines: %s is smaller than one block\n",
			o.file);
		rc = -EINVAL;
		goto out_dev;
	}
	rc = ub_bdev_open_chan(dev, &ch, &err);
	if (rc < 0) {
		fprintf(stderr, "engines: %s\n", err.msg);
		goto out_dev;
	}
	bufs = ub_bdev_buf_alloc((size_t)o.qd * o.bs);
	if (!bufs) {
		rc = -ENOMEM;
		goto out_chan;
	}
	memset(bufs, 0xA5, (size_t)o.qd * o.bs);
	rc = run(&o, ch, blocks, bufs, &iops);
	if (rc == 0)
		printf("%s|%s|%u|%.0f\n",
		       o.engine == UB_IO_ENGINE_SYNC ? "sync" : "io_uring",
		       o.write ? "randwrite" : "randread", o.qd, iops);
out_chan:
	ub_bdev_chan_close(ch);
	free(bufs);
out_dev:
	ub_bdev_put(dev);
	return rc < 0 ? 1 : 0;
}
