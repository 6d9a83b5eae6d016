/* Queue workers: one thread per virtqueue, serving it on its own block
 * channel.
 *
 * Loop: epoll on the control eventfd (pause/stop), the channel's event fd
 * (when it has one) and the kick fd (only while the queue is ready,
 * enabled, mapped and not broken). After a wake-up the worker runs passes
 * (ub_blk_queue_process: reap, pop and start, one submit, reap, push,
 * notify) and keeps polling for poll_timeout_us after the last pass that
 * made progress. Then it re-arms (EVENT_IDX: avail_event = last_avail,
 * fence, recheck), resets the channel's event fd, runs one last pass and
 * sleeps: with I/O still outstanding it sleeps until the channel's event
 * fd fires; a channel without one is polled until it has nothing left.
 *
 * Pause hand-off (the only place with a lock; never taken on the I/O
 * path): the control thread sets pause_req under the mutex, raises the
 * lock-free hint `ctl` and writes the control eventfd. The worker sees
 * the hint between passes, stops popping, drains every request in flight
 * (completions pushed), unregisters the kick fd, sets parked and waits on
 * the condition variable. Resume clears pause_req; the worker leaves the
 * wait and re-reads the queue (ready, enabled, kick fd, ring addresses via
 * ub_vq_map, ring size for its slots), the guest memory being read
 * through dev->mem anyway. Stop works the same and ends the thread. */
#include "vhost/vhost_dev.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include "util/log.h"
#include "vhost/blk.h"

enum { TAG_CTL, TAG_KICK, TAG_CHAN };

struct ub_vq_worker {
	struct ub_vhost_dev *dev; /* shared, outlives the worker */
	unsigned qidx;
	pthread_t thread;
	int epfd;		 /* owned */
	int ctl_fd;		 /* owned: eventfd, wakes the thread */
	struct ub_bdev_chan *ch; /* owned by the thread */
	int chan_fd;		 /* ch's event fd (owned by ch) or -1 */
	int kick_reg;		 /* kick fd registered in epfd, or -1 */
	bool serving;		 /* ready, enabled, mapped, not broken */
	bool run_pass;		 /* a pass is due without a kick */
	struct ub_blk_queue q;
	/* Adaptive busy-poll window (see adapt_poll): current length in
	 * microseconds, at most params.poll_timeout_us; when the worker went
	 * to sleep idle (nothing of its own in flight), and since when. */
	uint64_t poll_us;
	bool idle_sleep;
	uint64_t sleep_at;

	/* Control <-> worker hand-off, under lock. */
	pthread_mutex_t lock;
	pthread_cond_t cond;
	bool pause_req, stop_req, parked;
	bool init_done;
	int init_rc;
	struct ub_err init_err;
	atomic_bool ctl; /* pause_req || stop_req, read without the lock */
};

static uint64_t now_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

/* Resets an eventfd we may read without blocking only if it is readable
 * (the kick and channel fds are not ours to make non-blocking). */
static void drain_fd(int fd)
{
	struct pollfd pfd = {.fd = fd, .events = POLLIN};
	eventfd_t v;

	if (fd >= 0 && poll(&pfd, 1, 0) > 0 && (pfd.revents & POLLIN))
		(void)eventfd_read(fd, &v);
}

static void pin_cpu(struct ub_vq_worker *w)
{
	const uint32_t *cpus = w->dev->params.cpus;
	cpu_set_t set;
	uint32_t cpu;

	if (!cpus)
		return;
	cpu = cpus[w->qidx];
	if (cpu >= CPU_SETSIZE) {
		LOG_ERROR("Failed to pin thread %u to CPU: CPU pinning error: "
			  "%s",
			  w->qidx, strerror(EINVAL));
		return;
	}
	CPU_ZERO(&set);
	CPU_SET(cpu, &set);
	if (sched_setaffinity(0, sizeof(set), &set) < 0) {
		LOG_ERROR("Failed to pin thread %u to CPU: CPU pinning error: "
			  "%s",
			  w->qidx, strerror(errno));
		return;
	}
	LOG_INFO("pinned thread %ld to cpu %u", (long)gettid(), cpu);
}

static void unregister_kick(struct ub_vq_worker *w)
{
	if (w->kick_reg >= 0 &&
	    epoll_ctl(w->epfd, EPOLL_CTL_DEL, w->kick_reg, NULL) < 0)
		LOG_WARN("queue %u: cannot unregister the kick fd: %s", w->qidx,
			 strerror(errno));
	w->kick_reg = -1;
	w->serving = false;
}

/* Re-reads the queue state after a pause (nothing in flight). */
static void refresh(struct ub_vq_worker *w)
{
	struct ub_vq *vq = &w->dev->vqs[w->qidx];
	struct epoll_event ev = {.events = EPOLLIN, .data.u32 = TAG_KICK};
	struct ub_err err = {{0}};

	w->serving = false;
	/* No ring pointer survives a pause unless mapped again now. */
	vq->desc = vq->avail = vq->used = NULL;
	if (!vq->ready || !vq->enabled || vq->kick_fd < 0 || vq->broken)
		return;
	if (ub_vq_map(vq, &w->dev->mem) < 0) {
		LOG_ERROR("queue %u: ring addresses outside guest memory; the "
			  "queue is not served",
			  w->qidx);
		return;
	}
	if (ub_blk_queue_resize(&w->q, &err) < 0) {
		LOG_ERROR("%s", err.msg);
		return;
	}
	if (epoll_ctl(w->epfd, EPOLL_CTL_ADD, vq->kick_fd, &ev) < 0) {
		LOG_ERROR("queue %u: cannot register the kick fd: %s", w->qidx,
			  strerror(errno));
		return;
	}
	w->kick_reg = vq->kick_fd;
	w->serving = true;
	/* Requests published before the kick fd was watched. */
	w->run_pass = true;
}

/* Completes every request in flight (no new ones are popped). */
static void drain(struct ub_vq_worker *w)
{
	struct pollfd pfd = {.fd = w->chan_fd, .events = POLLIN};

	while (ub_blk_queue_busy(&w->q)) {
		if (ub_blk_queue_process(&w->q, false))
			continue;
		if (w->chan_fd >= 0) {
			if (poll(&pfd, 1, 10) > 0)
				ub_bdev_chan_event_reset(w->ch);
		} else {
			sched_yield();
		}
	}
}

/* Parks until resumed; returns true when the thread must stop. */
static bool park(struct ub_vq_worker *w)
{
	bool stop;

	drain(w);
	unregister_kick(w);
	pthread_mutex_lock(&w->lock);
	w->parked = true;
	pthread_cond_broadcast(&w->cond);
	while (w->pause_req && !w->stop_req)
		pthread_cond_wait(&w->cond, &w->lock);
	w->parked = false;
	stop = w->stop_req;
	atomic_store(&w->ctl, w->pause_req || w->stop_req);
	pthread_mutex_unlock(&w->lock);
	if (!stop)
		refresh(w);
	return stop;
}

/* The queue stopped being servable (broken ring, kick fd error): stop
 * watching the kick fd; requests in flight still complete. */
static void stop_serving(struct ub_vq_worker *w)
{
	if (w->kick_reg >= 0)
		unregister_kick(w);
	w->serving = false;
}

/* First window after polling was switched off, and the smallest kept. */
#define POLL_GROW_START_US 8u

/*
 * Adaptive polling. poll_timeout_us is the longest the worker spins
 * waiting for the guest; how long it really spins follows how long the
 * guest kept it waiting last time it slept idle:
 *   - woken by the guest within poll_timeout_us: spinning a little longer
 *     would have caught it, so the window doubles (from
 *     POLL_GROW_START_US when it was 0), up to poll_timeout_us;
 *   - kept waiting longer than that: spinning was wasted, the window
 *     halves (below POLL_GROW_START_US it becomes 0).
 * A busy guest keeps the full window (its latency is what polling is
 * for); a slow or idle one stops burning a CPU that it may need itself
 * (a VMM's vCPU threads share the host's cores with the workers).
 *
 * Spinning only pays when the CPU would otherwise idle. When the kernel
 * preempted the worker while it served (its involuntary context switches
 * went up: other threads, such as the guest's vCPUs, were waiting for
 * this CPU), the window halves instead and does not grow at the next
 * wake-up; on an oversubscribed host polling thus fades out, and it comes
 * back when the CPU is free again.
 */
static void shrink_poll(struct ub_vq_worker *w)
{
	w->poll_us /= 2;
	if (w->poll_us < POLL_GROW_START_US)
		w->poll_us = 0;
}

static void adapt_poll(struct ub_vq_worker *w, uint64_t blocked_us)
{
	uint64_t max = w->dev->params.poll_timeout_us;

	if (blocked_us > max) {
		shrink_poll(w);
	} else if (blocked_us > w->poll_us) {
		w->poll_us = w->poll_us ? w->poll_us * 2 : POLL_GROW_START_US;
		if (w->poll_us > max)
			w->poll_us = max;
	}
}

/* Involuntary context switches of the calling thread so far. */
static long preemptions(void)
{
	struct rusage ru;

	if (getrusage(RUSAGE_THREAD, &ru) != 0)
		return 0;
	return ru.ru_nivcsw;
}

/* Serves the queue until it has been idle for the poll window and can
 * sleep, or a control request is pending. */
static void serve(struct ub_vq_worker *w)
{
	struct ub_vq *vq = &w->dev->vqs[w->qidx];
	uint64_t timeout = w->poll_us;
	uint64_t last = now_us();

	for (;;) {
		if (atomic_load_explicit(&w->ctl, memory_order_acquire))
			return;
		if (ub_blk_queue_process(&w->q, w->serving)) {
			last = now_us();
			if (vq->broken)
				stop_serving(w);
			continue;
		}
		/* Busy-poll only while waiting for the guest: when our own
		 * I/O is outstanding and the channel can wake us, sleep on
		 * it (notifications re-armed) and leave the CPU to the
		 * completion work and the front end. */
		if (now_us() - last <= timeout &&
		    !(ub_blk_queue_busy(&w->q) && w->chan_fd >= 0))
			continue;
		/* Outstanding I/O on a channel that cannot wake us: keep
		 * polling. */
		if (ub_blk_queue_busy(&w->q) && w->chan_fd < 0)
			continue;
		ub_bdev_chan_event_reset(w->ch);
		/* New requests that cannot be popped yet (every slot busy)
		 * wait for a completion, which the event fd reports. */
		if ((w->serving && ub_vq_rearm(vq) &&
		     ub_blk_queue_can_fetch(&w->q)) ||
		    ub_blk_queue_process(&w->q, w->serving)) {
			last = now_us();
			continue;
		}
		if (vq->broken)
			stop_serving(w);
		w->idle_sleep = !ub_blk_queue_busy(&w->q);
		w->sleep_at = now_us();
		return;
	}
}

/* Waits for events; returns false on a fatal error. *kicked tells whether
 * the guest kicked. */
static bool wait_events(struct ub_vq_worker *w, bool *work, bool *kicked)
{
	struct epoll_event ev[4];
	eventfd_t v;
	int n;

	n = epoll_wait(w->epfd, ev, 4, -1);
	if (n < 0)
		return errno == EINTR;
	for (int i = 0; i < n; i++) {
		bool in = ev[i].events & EPOLLIN;
		bool bad = ev[i].events & ~(uint32_t)EPOLLIN;

		switch (ev[i].data.u32) {
		case TAG_CTL:
			if (bad)
				return false;
			drain_fd(w->ctl_fd);
			break;
		case TAG_KICK:
			if (bad) {
				LOG_ERROR("queue %u: kick fd error (events "
					  "0x%x); the queue is no longer "
					  "served",
					  w->qidx, ev[i].events);
				stop_serving(w);
				break;
			}
			if (in && w->kick_reg >= 0)
				(void)eventfd_read(w->kick_reg, &v);
			*work = true;
			*kicked = true;
			break;
		case TAG_CHAN:
			if (bad)
				return false;
			ub_bdev_chan_event_reset(w->ch);
			*work = true;
			break;
		default:
			return false;
		}
	}
	return true;
}

static void run(struct ub_vq_worker *w)
{
	bool work, kicked, contended = false;

	w->poll_us = w->dev->params.poll_timeout_us;
	refresh(w);
	for (;;) {
		if (atomic_load_explicit(&w->ctl, memory_order_acquire)) {
			if (park(w))
				return;
			continue;
		}
		work = w->run_pass;
		kicked = false;
		w->run_pass = false;
		if (!work && !wait_events(w, &work, &kicked)) {
			LOG_ERROR("queue %u: event loop error; the queue is no "
				  "longer served",
				  w->qidx);
			break;
		}
		/* Only a wait for the guest says anything about the guest. */
		if (kicked && w->idle_sleep && !contended)
			adapt_poll(w, now_us() - w->sleep_at);
		w->idle_sleep = false;
		if (work) {
			long before = preemptions();

			serve(w);
			contended = preemptions() != before;
			if (contended)
				shrink_poll(w);
		}
	}
	/* Dead: finish what is in flight, then behave as parked until
	 * stopped. */
	drain(w);
	unregister_kick(w);
	pthread_mutex_lock(&w->lock);
	w->parked = true;
	pthread_cond_broadcast(&w->cond);
	while (!w->stop_req)
		pthread_cond_wait(&w->cond, &w->lock);
	pthread_mutex_unlock(&w->lock);
}

/* Thread set-up: pinning, channel, epoll; the result goes to the starter. */
static int thread_init(struct ub_vq_worker *w, struct ub_err *err)
{
	struct epoll_event ev = {.events = EPOLLIN, .data.u32 = TAG_CTL};
	int rc;

	pthread_setname_np(pthread_self(), "vring_worker");
	pin_cpu(w);
	rc = ub_bdev_open_chan(w->dev->bdev, &w->ch, err);
	if (rc < 0)
		return rc;
	w->chan_fd = ub_bdev_chan_event_fd(w->ch);
	if (epoll_ctl(w->epfd, EPOLL_CTL_ADD, w->ctl_fd, &ev) < 0)
		goto err_epoll;
	if (w->chan_fd >= 0) {
		ev.data.u32 = TAG_CHAN;
		if (epoll_ctl(w->epfd, EPOLL_CTL_ADD, w->chan_fd, &ev) < 0)
			goto err_epoll;
	}
	ub_blk_queue_init(&w->q, w->dev, w->qidx, w->ch);
	return 0;

err_epoll:
	rc = ub_err_ret(err, -errno, "queue %u: epoll_ctl: %s", w->qidx,
			strerror(errno));
	ub_bdev_chan_close(w->ch);
	w->ch = NULL;
	return rc;
}

static void *worker_main(void *arg)
{
	struct ub_vq_worker *w = arg;
	struct ub_err err = {{0}};
	int rc = thread_init(w, &err);

	pthread_mutex_lock(&w->lock);
	w->init_done = true;
	w->init_rc = rc;
	w->init_err = err;
	pthread_cond_broadcast(&w->cond);
	pthread_mutex_unlock(&w->lock);
	if (rc < 0)
		return NULL;
	run(w);
	drain(w);
	ub_blk_queue_fini(&w->q);
	ub_bdev_chan_close(w->ch);
	w->ch = NULL;
	return NULL;
}

static void worker_free(struct ub_vq_worker *w)
{
	if (w->epfd >= 0)
		close(w->epfd);
	if (w->ctl_fd >= 0)
		close(w->ctl_fd);
	pthread_cond_destroy(&w->cond);
	pthread_mutex_destroy(&w->lock);
	free(w);
}

int ub_vq_worker_start(struct ub_vhost_dev *dev, unsigned qidx,
		       struct ub_vq_worker **out, struct ub_err *err)
{
	struct ub_vq_worker *w; /* owned until handed over in *out */
	int rc;

	if (qidx >= UB_VHOST_MAX_QUEUES)
		return ub_err_ret(err, -EINVAL, "bad queue index %u", qidx);
	w = calloc(1, sizeof(*w));
	if (!w)
		return ub_err_ret(err, -ENOMEM, "out of memory");
	w->dev = dev;
	w->qidx = qidx;
	w->kick_reg = -1;
	w->chan_fd = -1;
	pthread_mutex_init(&w->lock, NULL);
	pthread_cond_init(&w->cond, NULL);
	atomic_init(&w->ctl, false);
	w->epfd = epoll_create1(EPOLL_CLOEXEC);
	w->ctl_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (w->epfd < 0 || w->ctl_fd < 0) {
		rc = ub_err_ret(err, -errno, "queue %u: %s", qidx,
				strerror(errno));
		goto err_free;
	}
	rc = pthread_create(&w->thread, NULL, worker_main, w);
	if (rc) {
		rc = ub_err_ret(err, -rc,
				"queue %u: cannot create a thread: "
				"%s",
				qidx, strerror(rc));
		goto err_free;
	}
	pthread_mutex_lock(&w->lock);
	while (!w->init_done)
		pthread_cond_wait(&w->cond, &w->lock);
	rc = w->init_rc;
	pthread_mutex_unlock(&w->lock);
	if (rc < 0) {
		pthread_join(w->thread, NULL);
		if (err)
			*err = w->init_err;
		goto err_free;
	}
	*out = w;
	return 0;

err_free:
	worker_free(w);
	return rc;
}

void ub_vq_worker_pause(struct ub_vq_worker *w)
{
	pthread_mutex_lock(&w->lock);
	if (!w->pause_req) {
		w->pause_req = true;
		atomic_store_explicit(&w->ctl, true, memory_order_release);
		if (eventfd_write(w->ctl_fd, 1) < 0)
			LOG_ERROR("queue %u: cannot wake the worker", w->qidx);
	}
	while (!w->parked)
		pthread_cond_wait(&w->cond, &w->lock);
	pthread_mutex_unlock(&w->lock);
}

void ub_vq_worker_resume(struct ub_vq_worker *w)
{
	pthread_mutex_lock(&w->lock);
	if (w->pause_req) {
		w->pause_req = false;
		atomic_store_explicit(&w->ctl, w->stop_req,
				      memory_order_release);
		pthread_cond_broadcast(&w->cond);
	}
	pthread_mutex_unlock(&w->lock);
}

void ub_vq_worker_stop(struct ub_vq_worker *w)
{
	if (!w)
		return;
	pthread_mutex_lock(&w->lock);
	w->stop_req = true;
	atomic_store_explicit(&w->ctl, true, memory_order_release);
	pthread_cond_broadcast(&w->cond);
	pthread_mutex_unlock(&w->lock);
	if (eventfd_write(w->ctl_fd, 1) < 0)
		LOG_ERROR("queue %u: cannot wake the worker", w->qidx);
	pthread_join(w->thread, NULL);
	worker_free(w);
}
