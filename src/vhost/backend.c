/* Backend environment: builds the exposed block device, and with metadata
 * the whole lazy-fetch stack (storage.md §5.10). */
#include "vhost/backend.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bdev/crypt.h"
#include "bdev/file.h"
#include "bdev/lazy.h"
#include "stripe/metadata.h"
#include "stripe/source.h"
#include "util/log.h"

#define IMAGE_QUEUE_DEPTH 64u /* raw image device (storage.md §3.6) */
#define FETCH_INFLIGHT	  16u /* stripes between source and target */
#define PROGRESS_POLL_MS  100u
#define PROGRESS_LOG_MS	  5000u

struct ub_backend_progress {
	struct ub_bgworker *worker;
	struct ub_stripe_state *state;
	pthread_t tid;
	pthread_mutex_t lock;
	pthread_cond_t cond; /* CLOCK_MONOTONIC */
	bool stop;
};

/* The data device as stacked in storage.md §3.6: engine, read-write,
 * O_DIRECT, O_DSYNC iff write_through, inside AES-XTS iff encrypted. */
static int open_data(const struct ub_config *cfg, struct ub_bdev **out,
		     struct ub_err *err)
{
	struct ub_file_bdev_opts o = {
	    .path = cfg->device.data_path,
	    .readonly = false,
	    .direct = true,
	    .write_through = cfg->tuning.write_through,
	    .queue_depth = ub_config_queue_depth(cfg),
	};
	struct ub_bdev *data = NULL;
	const struct ub_secret *key;
	int rc;

	rc = ub_file_bdev_open(cfg->tuning.io_engine, &o, &data, err);
	if (rc)
		return rc;
	if (!cfg->has_encryption) {
		*out = data;
		return 0;
	}
	key = ub_config_xts_key(cfg);
	if (!key || !key->value) {
		rc = ub_err_ret(err, -EINVAL,
				"the XTS key secret '%s' is missing",
				cfg->xts_key_ref ? cfg->xts_key_ref : "");
		goto out_put;
	}
	rc = ub_crypt_bdev_wrap(data, key->value, key->len, out, err);
out_put:
	ub_bdev_put(data); /* the crypt device holds its own reference */
	return rc;
}

/* Reads and validates the whole metadata file. */
static int load_metadata(struct ub_bdev *mdev, struct ub_metadata *md,
			 struct ub_err *err)
{
	struct ub_bdev_chan *ch = NULL;
	int rc;

	rc = ub_bdev_open_chan(mdev, &ch, err);
	if (rc)
		return rc;
	rc = ub_metadata_load(ch, md, err);
	ub_bdev_chan_close(ch);
	return rc;
}

/* The data device must not need more stripes than the metadata describes
 * (storage.md §5.8: a grown data file would index past the metadata). */
static int check_capacity(const struct ub_config *cfg,
			  const struct ub_bdev *data,
			  const struct ub_metadata *md, struct ub_err *err)
{
	uint64_t need = ub_stripe_count(data->sectors, md->stripe_shift);

	if (need <= md->stripe_count)
		return 0;
	return ub_err_ret(err, -EINVAL,
			  "Invalid parameter error: data device %s (%" PRIu64
			  " bytes) needs %" PRIu64 " stripes of %" PRIu64
			  " bytes but the metadata %s has %" PRIu64
			  " stripes; the data file grew after init-metadata",
			  cfg->device.data_path, data->sectors * UB_SECTOR_SIZE,
			  need, (uint64_t)UB_SECTOR_SIZE << md->stripe_shift,
			  cfg->device.metadata_path, md->stripe_count);
}

/* Stripe source selection (storage.md §6.3). *image gets the raw image
 * device when the lazy device reads unfetched stripes from it
 * (copy_on_read = false), else stays NULL. */
static int open_source(const struct ub_config *cfg,
		       const struct ub_metadata *md, struct ub_source **src,
		       struct ub_bdev **image, struct ub_err *err)
{
	const struct ub_raw_source_cfg *raw = &cfg->stripe_source.raw;
	struct ub_file_bdev_opts o = {
	    .path = raw->image_path,
	    .readonly = true,
	    .direct = true,
	    .write_through = cfg->tuning.write_through,
	    .queue_depth = IMAGE_QUEUE_DEPTH,
	};
	struct ub_bdev *img = NULL;
	int rc;

	*src = NULL;
	*image = NULL;
	switch (cfg->stripe_source.type) {
	case UB_STRIPE_SOURCE_NONE:
		return ub_empty_source_open(md->stripe_shift, src, err);
	case UB_STRIPE_SOURCE_ARCHIVE:
	case UB_STRIPE_SOURCE_REMOTE:
		return ub_err_ret(
		    err, -EOPNOTSUPP,
		    "stripe source type '%s' is not supported by this build "
		    "yet",
		    cfg->stripe_source.type == UB_STRIPE_SOURCE_ARCHIVE
			? "archive"
			: "remote");
	case UB_STRIPE_SOURCE_RAW:
		break;
	}
	if (ub_metadata_has_fetched_all(md)) {
		LOG_INFO("every stripe is already fetched; the image %s is "
			 "not opened",
			 raw->image_path);
		return ub_empty_source_open(md->stripe_shift, src, err);
	}
	/* Plaintext image: read-only and never wrapped in the crypt layer. */
	rc = ub_file_bdev_open(cfg->tuning.io_engine, &o, &img, err);
	if (rc)
		goto fail;
	rc = ub_raw_source_open(img, md->stripe_shift, src, err);
	if (rc)
		goto fail_put;
	if (!raw->copy_on_read)
		*image = img;
	else
		ub_bdev_put(img);
	return 0;

fail_put:
	ub_bdev_put(img);
fail:
	ub_err_prefix(err, "Failed to open stripe source");
	return rc;
}

/* --- progress logging ------------------------------------------------ */

static uint64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static void format_eta(double sec, char *buf, size_t len)
{
	unsigned long s;

	if (sec < 0) {
		snprintf(buf, len, "unknown");
		return;
	}
	s = (unsigned long)(sec + 0.5);
	if (s >= 3600)
		snprintf(buf, len, "%luh%02lum%02lus", s / 3600, s / 60 % 60,
			 s % 60);
	else if (s >= 60)
		snprintf(buf, len, "%lum%02lus", s / 60, s % 60);
	else
		snprintf(buf, len, "%lus", s);
}

/* Sleeps up to ms; true when asked to stop. */
static bool progress_wait(struct ub_backend_progress *p, unsigned ms)
{
	struct timespec ts;
	bool stop;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	ts.tv_sec += ms / 1000u;
	ts.tv_nsec += (long)(ms % 1000u) * 1000000L;
	if (ts.tv_nsec >= 1000000000L) {
		ts.tv_sec++;
		ts.tv_nsec -= 1000000000L;
	}
	pthread_mutex_lock(&p->lock);
	while (!p->stop &&
	       pthread_cond_timedwait(&p->cond, &p->lock, &ts) != ETIMEDOUT)
		;
	stop = p->stop;
	pthread_mutex_unlock(&p->lock);
	return stop;
}

/* Logs progress every few seconds while it changes, and the totals once
 * everything is local; then the thread ends. */
static void *progress_main(void *arg)
{
	struct ub_backend_progress *p = arg;
	uint64_t start = now_ms(), last_log = start, last_fetched = 0;
	uint64_t last_failed = 0;
	struct ub_bgworker_status st;
	char eta[32];
	bool first = true;

	do {
		uint64_t now = now_ms(), bytes;
		double secs;

		ub_bgworker_status(p->worker, &st);
		if (st.source == 0)
			break; /* nothing to fetch, nothing to report */
		if (st.fetched >= st.source) {
			secs = (double)(now - start) / 1000.0;
			bytes = atomic_load_explicit(&p->state->fetched_bytes,
						     memory_order_relaxed);
			/* The fetcher itself logs "All stripes fetched,
			 * disconnected from source device" when it drops the
			 * source; this adds the totals, or says why nothing
			 * was fetched. */
			if (first)
				LOG_INFO("All stripes fetched: the %" PRIu64
					 " stripes with a source were local at "
					 "start",
					 st.source);
			else
				LOG_INFO("Fetch complete: %" PRIu64
					 " stripes local, %.1f MiB fetched in "
					 "%.1f s (%.1f MB/s)",
					 st.source, (double)bytes / 1048576.0,
					 secs,
					 secs > 0 ? (double)bytes / secs / 1e6
						  : 0.0);
			break;
		}
		first = false;
		if (now - last_log < PROGRESS_LOG_MS)
			continue;
		last_log = now;
		if (st.fetched == last_fetched && st.failed == last_failed)
			continue;
		last_fetched = st.fetched;
		last_failed = st.failed;
		format_eta(st.eta_sec, eta, sizeof(eta));
		if (st.failed)
			LOG_INFO("Fetching stripes: %" PRIu64 "/%" PRIu64
				 " fetched (%.1f%%), %" PRIu64
				 " failed, %.1f MB/s, ETA %s",
				 st.fetched, st.source,
				 100.0 * (double)st.fetched / (double)st.source,
				 st.failed, st.bytes_per_sec / 1e6, eta);
		else
			LOG_INFO("Fetching stripes: %" PRIu64 "/%" PRIu64
				 " fetched (%.1f%%), %.1f MB/s, ETA %s",
				 st.fetched, st.source,
				 100.0 * (double)st.fetched / (double)st.source,
				 st.bytes_per_sec / 1e6, eta);
	} while (!progress_wait(p, PROGRESS_POLL_MS));
	return NULL;
}

static int progress_start(struct ub_bgworker *w, struct ub_stripe_state *st,
			  struct ub_backend_progress **out, struct ub_err *err)
{
	struct ub_backend_progress *p = calloc(1, sizeof(*p));
	pthread_condattr_t ca;
	int rc;

	if (!p)
		return ub_err_ret(err, -ENOMEM, "out of memory");
	p->worker = w;
	p->state = st;
	pthread_mutex_init(&p->lock, NULL);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&p->cond, &ca);
	pthread_condattr_destroy(&ca);
	rc = pthread_create(&p->tid, NULL, progress_main, p);
	if (rc) {
		pthread_cond_destroy(&p->cond);
		pthread_mutex_destroy(&p->lock);
		free(p);
		return ub_err_ret(err, -rc,
				  "cannot start the progress thread: "
				  "%s",
				  strerror(rc));
	}
	*out = p;
	return 0;
}

static void progress_stop(struct ub_backend_progress *p)
{
	if (!p)
		return;
	pthread_mutex_lock(&p->lock);
	p->stop = true;
	pthread_cond_signal(&p->cond);
	pthread_mutex_unlock(&p->lock);
	pthread_join(p->tid, NULL);
	pthread_cond_destroy(&p->cond);
	pthread_mutex_destroy(&p->lock);
	free(p);
}

/* --- assembly -------------------------------------------------------- */

/* Starts the background worker; the source belongs to it from here on
 * (closed on failure too). */
static int start_worker(const struct ub_config *cfg, struct ub_backend *b,
			struct ub_source *src, struct ub_err *err)
{
	struct ub_bgworker_params wp = {
	    .data = b->data,
	    .metadata = b->metadata,
	    .source = src,
	    .state = b->state,
	    .autofetch = cfg->stripe_source.type == UB_STRIPE_SOURCE_RAW &&
			 cfg->stripe_source.raw.autofetch,
	    .max_inflight = FETCH_INFLIGHT,
	};
	int rc;

	rc = ub_bgworker_start(&wp, &b->worker, err);
	if (rc) {
		b->worker = NULL;
		/* backends.md §2.1: the reference's error chain. */
		if (strncmp(err->msg, "Failed to build bgworker", 24) != 0)
			ub_err_prefix(err, "Failed to build bgworker");
		ub_err_prefix(err, "Failed to run bgworker thread");
	}
	return rc;
}

/* The lazy stack over the (encrypted) data device b->data. */
static int open_lazy(const struct ub_config *cfg, struct ub_backend *b,
		     struct ub_err *err)
{
	struct ub_metadata md = {0};
	struct ub_source *src = NULL;
	struct ub_bdev *image = NULL;
	struct ub_lazy_params lp;
	int rc;

	rc = ub_metadata_dev_open(cfg, false, &b->metadata, err);
	if (rc)
		goto fail;
	rc = load_metadata(b->metadata, &md, err);
	if (rc)
		goto fail;
	rc = check_capacity(cfg, b->data, &md, err);
	if (rc)
		goto fail;
	b->state = calloc(1, sizeof(*b->state));
	if (!b->state) {
		rc = ub_err_ret(err, -ENOMEM, "out of memory");
		goto fail;
	}
	rc = ub_stripe_state_init(b->state, &md, err);
	if (rc) {
		free(b->state);
		b->state = NULL;
		goto fail;
	}
	rc = open_source(cfg, &md, &src, &image, err);
	if (rc)
		goto fail;
	LOG_INFO("stripe metadata: %" PRIu64 " stripes of %" PRIu64
		 " bytes, %" PRIu64 " with a source, %" PRIu64
		 " fetched; source %s, autofetch %s, copy_on_read %s",
		 md.stripe_count, (uint64_t)UB_SECTOR_SIZE << md.stripe_shift,
		 b->state->source,
		 atomic_load_explicit(&b->state->fetched, memory_order_relaxed),
		 src->desc[0] ? src->desc : "empty",
		 cfg->stripe_source.raw.autofetch ? "on" : "off",
		 cfg->stripe_source.raw.copy_on_read ? "on" : "off");
	rc = start_worker(cfg, b, src, err);
	src = NULL; /* the worker owns it now, closed on failure too */
	if (rc)
		goto out; /* the error chain is final */
	lp = (struct ub_lazy_params){
	    .base = b->data,
	    .image = image,
	    .state = b->state,
	    .worker = b->worker,
	    .track_written = cfg->device.track_written,
	};
	rc = ub_lazy_bdev_create(&lp, &b->bdev, err);
	if (rc) {
		b->bdev = NULL;
		goto fail;
	}
	rc = progress_start(b->worker, b->state, &b->progress, err);
	if (rc)
		goto fail;
	goto out;

fail:
	ub_source_close(src);
	ub_err_prefix(err, "Failed to build backend environment");
out:
	ub_bdev_put(image);
	ub_metadata_free(&md);
	return rc;
}

int ub_backend_open(const struct ub_config *cfg, struct ub_backend *b,
		    struct ub_err *err)
{
	struct ub_bdev *data = NULL;
	int rc;

	memset(b, 0, sizeof(*b));
	rc = open_data(cfg, &data, err);
	if (rc) {
		ub_err_prefix(err, "Failed to build backend environment");
		return rc;
	}
	if (!cfg->device.metadata_path) {
		b->bdev = data;
		goto done;
	}
	b->data = data;
	rc = open_lazy(cfg, b, err);
	if (rc) {
		ub_backend_close(b);
		return rc;
	}
done:
	LOG_INFO("exposed device: %s, %llu sectors", b->bdev->name,
		 (unsigned long long)b->bdev->sectors);
	return 0;
}

int ub_backend_status(struct ub_backend *b, struct ub_bgworker_status *st)
{
	if (!b->worker)
		return -ENOENT;
	ub_bgworker_status(b->worker, st);
	return 0;
}

void ub_backend_close(struct ub_backend *b)
{
	/* The I/O threads are gone: their lazy channels are closed. */
	ub_bdev_put(b->bdev);
	b->bdev = NULL;
	progress_stop(b->progress);
	b->progress = NULL;
	ub_bgworker_stop(b->worker);
	b->worker = NULL;
	if (b->state) {
		ub_stripe_state_fini(b->state);
		free(b->state);
		b->state = NULL;
	}
	ub_bdev_put(b->data);
	b->data = NULL;
	ub_bdev_put(b->metadata);
	b->metadata = NULL;
}
