/* vhost-client: a vhost-user-blk front end without a VM, for testing and
 * measuring a vhost-user-blk backend (ours or qemu-storage-daemon).
 *
 *   vhost-client --socket S [--peer ours|qsd] conform
 *   vhost-client --socket S [--peer ours|qsd] hostile
 *   vhost-client --socket S bench --qd N --bs BYTES --rw MODE --seconds T
 *                [--queues Q] [--size BYTES] [--direct]
 *   vhost-client --socket S crash-run|crash-verify ...   (see crash.c)
 */
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "vc.h"

static void usage(FILE *f)
{
	fprintf(f,
		"Usage: vhost-client --socket PATH [options] COMMAND\n"
		"A vhost-user-blk front end (no VM) for testing backends.\n"
		"\n"
		"Commands:\n"
		"  conform   protocol and feature conformance, data round "
		"trips\n"
		"  hostile   malformed rings, requests and messages; each "
		"must get\n"
		"            the specified answer and leave the backend "
		"serving\n"
		"  bench     fixed queue depth I/O; one JSON line with IOPS "
		"and MB/s\n"
		"  crash-run, crash-verify\n"
		"            crash consistency (own options: crash-run "
		"--help)\n"
		"\n"
		"Options:\n"
		"  -s, --socket PATH   the backend's vhost-user socket "
		"(required)\n"
		"      --peer P        ours (default) or qsd "
		"(qemu-storage-daemon:\n"
		"                      relax where it legitimately "
		"differs)\n"
		"      --timeout MS    reply/completion timeout (default "
		"5000)\n"
		"bench:\n"
		"      --qd N          requests in flight per queue (default "
		"32)\n"
		"      --bs BYTES      request size (default 4096)\n"
		"      --rw MODE       randread, randwrite, read, write, "
		"randrw\n"
		"      --seconds T     duration (default 10)\n"
		"      --queues Q      queues, one thread each (default 1)\n"
		"      --size BYTES    disk area used (default: capacity)\n"
		"      --direct        direct descriptors (default: "
		"indirect)\n"
		"      --offset BYTES  start of the disk area (default 0)\n"
		"      --lat           latency percentiles (p50, p99) per "
		"area\n"
		"      --lat-split BYTES  --lat: alternate between the area "
		"below and\n"
		"                      above this offset, reported apart\n"
		"                      (single queue, QD1 gives pure "
		"latency)\n"
		"      --think-us N    wait N microseconds after each "
		"completion before\n"
		"                      the next request (a guest that is "
		"not always busy)\n"
		"      --lat-stripe BYTES --lat: below the split, read each "
		"stripe of\n"
		"                      this size at most once (first "
		"touches)\n"
		"\n"
		"Exit status: 0 all checks passed, 1 a check failed, 2 "
		"usage.\n");
}

static uint64_t parse_size(const char *s, bool *ok)
{
	char *end;
	unsigned long long v = strtoull(s, &end, 0);

	*ok = end != s;
	switch (*end) {
	case 'k':
	case 'K':
		v <<= 10;
		end++;
		break;
	case 'm':
	case 'M':
		v <<= 20;
		end++;
		break;
	case 'g':
	case 'G':
		v <<= 30;
		end++;
		break;
	default:
		break;
	}
	if (*end)
		*ok = false;
	return v;
}

enum {
	OPT_PEER = 0x100,
	OPT_TIMEOUT,
	OPT_QD,
	OPT_BS,
	OPT_RW,
	OPT_SECONDS,
	OPT_QUEUES,
	OPT_SIZE,
	OPT_DIRECT,
	OPT_OFFSET,
	OPT_LAT,
	OPT_LAT_SPLIT,
	OPT_LAT_STRIPE,
	OPT_THINK_US,
};

int main(int argc, char **argv)
{
	static const struct option longopts[] = {
	    {"socket", required_argument, NULL, 's'},
	    {"peer", required_argument, NULL, OPT_PEER},
	    {"timeout", required_argument, NULL, OPT_TIMEOUT},
	    {"qd", required_argument, NULL, OPT_QD},
	    {"bs", required_argument, NULL, OPT_BS},
	    {"rw", required_argument, NULL, OPT_RW},
	    {"seconds", required_argument, NULL, OPT_SECONDS},
	    {"queues", required_argument, NULL, OPT_QUEUES},
	    {"size", required_argument, NULL, OPT_SIZE},
	    {"direct", no_argument, NULL, OPT_DIRECT},
	    {"offset", required_argument, NULL, OPT_OFFSET},
	    {"lat", no_argument, NULL, OPT_LAT},
	    {"lat-split", required_argument, NULL, OPT_LAT_SPLIT},
	    {"lat-stripe", required_argument, NULL, OPT_LAT_STRIPE},
	    {"think-us", required_argument, NULL, OPT_THINK_US},
	    {"help", no_argument, NULL, 'h'},
	    {NULL, 0, NULL, 0},
	};
	struct vc_args a = {
	    .timeout_ms = 5000,
	    .qd = 32,
	    .queues = 1,
	    .bs = 4096,
	    .rw = "randread",
	    .seconds = 10,
	};
	const char *cmd;
	uint64_t v;
	bool ok = true;
	int opt;

	signal(SIGPIPE, SIG_IGN);
	setvbuf(stdout, NULL, _IOLBF, 0);
	for (opt = 1; opt < argc; opt++)
		if (!strcmp(argv[opt], "crash-run") ||
		    !strcmp(argv[opt], "crash-verify"))
			return vc_crash_main(argc, argv);
	while ((opt = getopt_long(argc, argv, "s:h", longopts, NULL)) != -1) {
		switch (opt) {
		case 's':
			a.socket = optarg;
			break;
		case OPT_PEER:
			if (!strcmp(optarg, "qsd"))
				a.peer_qsd = true;
			else if (strcmp(optarg, "ours"))
				ok = false;
			break;
		case OPT_TIMEOUT:
			a.timeout_ms = atoi(optarg);
			ok = ok && a.timeout_ms > 0;
			break;
		case OPT_QD:
			a.qd = (unsigned)atoi(optarg);
			ok = ok && a.qd >= 1 && a.qd <= 1024;
			break;
		case OPT_BS:
			v = parse_size(optarg, &ok);
			ok = ok && v >= 512 && v % 512 == 0 && v <= (16u << 20);
			a.bs = (uint32_t)v;
			break;
		case OPT_RW:
			a.rw = optarg;
			break;
		case OPT_SECONDS:
			a.seconds = atof(optarg);
			ok = ok && a.seconds > 0;
			break;
		case OPT_QUEUES:
			a.queues = (unsigned)atoi(optarg);
			ok = ok && a.queues >= 1 && a.queues <= VU_MAX_QUEUES;
			break;
		case OPT_SIZE:
			a.size = parse_size(optarg, &ok);
			break;
		case OPT_DIRECT:
			a.direct = true;
			break;
		case OPT_OFFSET:
			a.offset = parse_size(optarg, &ok);
			break;
		case OPT_LAT:
			a.lat = true;
			break;
		case OPT_LAT_SPLIT:
			a.lat_split = parse_size(optarg, &ok);
			break;
		case OPT_LAT_STRIPE:
			a.lat_stripe = parse_size(optarg, &ok);
			break;
		case OPT_THINK_US:
			a.think_us = parse_size(optarg, &ok);
			break;
		case 'h':
			usage(stdout);
			return 0;
		default:
			ok = false;
			break;
		}
		if (!ok) {
			fprintf(stderr, "vhost-client: bad option value\n");
			usage(stderr);
			return 2;
		}
	}
	if (optind != argc - 1 || !a.socket) {
		usage(stderr);
		return 2;
	}
	cmd = argv[optind];
	if (!strcmp(cmd, "conform"))
		return vc_conform(&a);
	if (!strcmp(cmd, "hostile"))
		return vc_hostile(&a);
	if (!strcmp(cmd, "bench"))
		return vc_bench(&a);
	fprintf(stderr, "vhost-client: unknown command '%s'\n", cmd);
	usage(stderr);
	return 2;
}

void vc_ok(struct vc_report *r, const char *name, const char *note)
{
	r->n++;
	r->passed++;
	if (note && *note)
		printf("ok %u - %s # %s\n", r->n, name, note);
	else
		printf("ok %u - %s\n", r->n, name);
}

void vc_not_ok(struct vc_report *r, const char *name, const char *fmt, ...)
{
	va_list ap;

	r->n++;
	r->failed++;
	printf("not ok %u - %s: ", r->n, name);
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	printf("\n");
}

void vc_skip(struct vc_report *r, const char *name, const char *why)
{
	r->n++;
	r->skipped++;
	printf("ok %u - %s # SKIP %s\n", r->n, name, why);
}

int vc_summary(const struct vc_report *r)
{
	if (r->skipped)
		printf("# %u skipped\n", r->skipped);
	printf("%u passed, %u failed\n", r->passed + r->skipped, r->failed);
	return r->failed ? 1 : 0;
}
