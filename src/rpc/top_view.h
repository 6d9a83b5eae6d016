/* What ubitop shows (backends.md §7, docs/ubitop.md): per-queue rates
 * computed from two samples of the RPC "stats" reply, auto-scaling bars,
 * and the frame drawn from them, as plain text or with ANSI colours inside
 * a bordered panel. Pure functions over plain data, no I/O except the
 * FILE the frame is written to. */
#ifndef UB_RPC_TOP_VIEW_H
#define UB_RPC_TOP_VIEW_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "rpc/rpc_client.h"

#define UB_TOP_BAR_WIDTH 30 /* characters of a bar */
/* Both scales start here (bytes per second) and only grow. */
#define UB_TOP_SCALE_START  (50.0 * 1024 * 1024)
#define UB_TOP_SCALE_GROWTH 1.05
#define UB_TOP_BAR_FULL	    "\u2584" /* ▄ */
#define UB_TOP_BAR_EMPTY    "\u2581" /* ▁ */
/* Buffer sizes: a formatted byte count or rate, a bar (3 bytes a char). */
#define UB_TOP_BYTES_LEN 48
#define UB_TOP_BAR_LEN	 (UB_TOP_BAR_WIDTH * 3 + 1)

/* "%7.2f <unit>" with 1024-based units B, KiB, MiB, GiB, TiB: the value is
 * divided by 1024 while it is >= 1024 and a larger unit is left, e.g.
 * "   0.00 B", "1023.00 B", "   1.00 KiB", "2048.00 TiB". A value too
 * large for the buffer in that form is written "%.2e TiB". */
void ub_top_format_bytes(double bytes, char buf[UB_TOP_BYTES_LEN]);
/* ub_top_format_bytes with "/s" appended: "  12.50 MiB/s". */
void ub_top_format_rate(double bytes_per_sec, char buf[UB_TOP_BYTES_LEN]);
/* Filled characters of a bar: floor(value / scale * 30) clamped to 0..30
 * (0 for a scale <= 0 or a NaN). */
unsigned ub_top_bar_filled(double value, double scale);
/* The bar itself: filled UB_TOP_BAR_FULL then UB_TOP_BAR_EMPTY, 30
 * characters of UTF-8, NUL-terminated. */
void ub_top_bar(double value, double scale, char buf[UB_TOP_BAR_LEN]);
/* A sample above the scale makes the scale 1.05 x the sample; scales
 * never shrink. */
void ub_top_scale_update(double *scale, double sample);
/* (cur - prev) / interval per second; a counter that went down (wrapped,
 * or the backend restarted) counts as a reset and gives 0. */
double ub_top_rate(uint64_t prev, uint64_t cur, double interval);
/* A number of seconds as Python's repr(float) writes it (the reference's
 * "Poll: <interval>s"): "1.0", "0.5", "0.25", "1e-05", "1e+16". */
void ub_top_format_seconds(double seconds, char *buf, size_t size);

/* One table row; the ALL row holds the sums. */
struct ub_top_row {
	double read_rate, write_rate;	  /* bytes per second */
	double iops;			  /* read + write requests per second */
	double bytes_read, bytes_written; /* cumulative */
	uint64_t inflight;		  /* requests in flight */
};

struct ub_top_view {
	double interval;    /* configured seconds; rates divide by it */
	double queue_scale; /* bytes per second of a full per-queue bar */
	double total_scale; /* same for the ALL row */
	size_t nr_rows;
	struct ub_top_row *rows; /* owned: one per queue of the last sample */
	struct ub_top_row all;
};

/* Empty view with both scales at UB_TOP_SCALE_START. */
void ub_top_view_init(struct ub_top_view *v, double interval);
void ub_top_view_free(struct ub_top_view *v);
/* Recomputes the rows from a new sample: one row per queue of cur, rates
 * against the same queue of prev (0 when prev is NULL, the first sample
 * after a (re)connection, or lacks that queue), in-flight counts from q
 * (0 for a queue q lacks), then grows the scales: the per-queue scale with
 * the largest read or write rate of any queue, the total scale with the
 * larger of the two totals. -ENOMEM leaves the view unchanged. */
int ub_top_view_update(struct ub_top_view *v, const struct ub_rpc_stats *prev,
		       const struct ub_rpc_stats *cur,
		       const struct ub_rpc_queues *q);

/* How a frame is drawn. */
struct ub_top_style {
	bool color;	/* ANSI SGR colours and attributes */
	bool panel;	/* inside a green rounded border filling width */
	unsigned width; /* columns available; 0 = unlimited */
};

/* Writes the frame: the header line
 *   ubitop - <N> queues | Total: ↓<rate> / ↑<rate> | Poll: <interval>s
 * a blank line, the table (column titles, one row per queue, a separator
 * of ━, the ALL row), each line ending in '\n'. With a width, the widest
 * layout that fits is used (bars are dropped before anything is cut off)
 * and lines are cut to the width. Returns the number of lines written. */
unsigned ub_top_render(const struct ub_top_view *v,
		       const struct ub_top_style *style, FILE *out);

#endif
