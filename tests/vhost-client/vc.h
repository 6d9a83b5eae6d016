/* vhost-client: what the subcommands share (options and the report). */
#ifndef VC_H
#define VC_H

#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>

#include "vu_client.h"

struct vc_args {
	const char *socket;
	bool peer_qsd;	/* the peer is qemu-storage-daemon: relax */
	int timeout_ms; /* per reply / completion */
	/* bench */
	unsigned qd;
	unsigned queues;
	uint32_t bs;
	const char *rw;
	double seconds;
	uint64_t size;
	bool direct;	     /* bench: direct descriptors instead of indirect */
	uint64_t offset;     /* bench: start of the disk area used */
	bool lat;	     /* bench: per-request latency percentiles */
	uint64_t lat_split;  /* bench --lat: two areas, below/above this */
	uint64_t lat_stripe; /* bench --lat: below the split, each stripe
				of this size is read at most once */
	uint64_t think_us;   /* bench: pause after each completion */
};

/* One line per check: "ok N - name" or "not ok N - name: why". */
struct vc_report {
	unsigned n, passed, failed, skipped;
};

void vc_ok(struct vc_report *r, const char *name, const char *note);
void vc_not_ok(struct vc_report *r, const char *name, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void vc_skip(struct vc_report *r, const char *name, const char *why);
/* Prints "N passed, N failed"; returns the exit code (0 all passed). */
int vc_summary(const struct vc_report *r);

int vc_conform(const struct vc_args *a);
int vc_hostile(const struct vc_args *a);
int vc_bench(const struct vc_args *a);
/* crash-run / crash-verify parse their own command line (crash.c). */
int vc_crash_main(int argc, char **argv);

#endif
