/* ubitop's figures and frame (backends.md §7). The table has fixed column
 * widths; with a limited width the first layout of `layouts` that fits is
 * used, and every line is cut at the width (counting UTF-8 characters,
 * never escape sequences), so a narrow terminal never wraps. */
#include "rpc/top_view.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

/* Above this (in the largest unit) "%7.2f" would not fit the buffer. */
#define BYTES_FIXED_MAX 1e15

static const char *const units[] = {"B", "KiB", "MiB", "GiB", "TiB"};

void ub_top_format_bytes(double bytes, char buf[UB_TOP_BYTES_LEN])
{
	unsigned u = 0;

	while (bytes >= 1024 && u < ARRAY_SIZE(units) - 1) {
		bytes /= 1024;
		u++;
	}
	if (fabs(bytes) < BYTES_FIXED_MAX || isnan(bytes) || isinf(bytes))
		snprintf(buf, UB_TOP_BYTES_LEN, "%7.2f %s", bytes, units[u]);
	else
		snprintf(buf, UB_TOP_BYTES_LEN, "%.2e %s", bytes, units[u]);
}

void ub_top_format_rate(double bytes_per_sec, char buf[UB_TOP_BYTES_LEN])
{
	size_t n;

	ub_top_format_bytes(bytes_per_sec, buf);
	n = strlen(buf);
	snprintf(buf + n, UB_TOP_BYTES_LEN - n, "/s");
}

unsigned ub_top_bar_filled(double value, double scale)
{
	double f;

	if (!(scale > 0) || isnan(value))
		return 0;
	f = value / scale * UB_TOP_BAR_WIDTH;
	if (!(f > 0))
		return 0;
	if (f >= UB_TOP_BAR_WIDTH)
		return UB_TOP_BAR_WIDTH;
	return (unsigned)f; /* truncation = floor for f > 0 */
}

void ub_top_bar(double value, double scale, char buf[UB_TOP_BAR_LEN])
{
	unsigned filled = ub_top_bar_filled(value, scale), i;
	char *p = buf;

	for (i = 0; i < UB_TOP_BAR_WIDTH; i++) {
		const char *c = i < filled ? UB_TOP_BAR_FULL : UB_TOP_BAR_EMPTY;
		size_t n = strlen(c);

		memcpy(p, c, n);
		p += n;
	}
	*p = '\0';
}

void ub_top_scale_update(double *scale, double sample)
{
	if (sample > *scale)
		*scale = sample * UB_TOP_SCALE_GROWTH;
}

double ub_top_rate(uint64_t prev, uint64_t cur, double interval)
{
	if (cur < prev || !(interval > 0))
		return 0;
	return (double)(cur - prev) / interval;
}

void ub_top_format_seconds(double seconds, char *buf, size_t size)
{
	char tmp[40], digits[24], *e, *p;
	size_t nd = 0, i;
	int prec, exp;
	bool neg;

	if (!size)
		return;
	if (isnan(seconds) || isinf(seconds)) {
		snprintf(buf, size, "%s",
			 isnan(seconds) ? "nan"
					: (seconds < 0 ? "-inf" : "inf"));
		return;
	}
	/* The fewest significant digits that read back as the same double
	 * (17 always do). */
	for (prec = 1; prec < 17; prec++) {
		snprintf(tmp, sizeof(tmp), "%.*e", prec - 1, seconds);
		if (strtod(tmp, NULL) == seconds)
			break;
	}
	snprintf(tmp, sizeof(tmp), "%.*e", prec - 1, seconds);
	neg = tmp[0] == '-';
	e = strchr(tmp, 'e');
	exp = e ? atoi(e + 1) : 0;
	for (p = tmp + neg; p < e && nd < sizeof(digits) - 1; p++)
		if (*p >= '0' && *p <= '9')
			digits[nd++] = *p;
	while (nd > 1 && digits[nd - 1] == '0')
		nd--;
	digits[nd] = '\0';

	p = tmp; /* reused for the result */
	if (neg)
		*p++ = '-';
	if (seconds == 0) {
		p += sprintf(p, "0.0");
	} else if (exp >= -4 && exp < 16) {
		if (exp < 0) {
			p += sprintf(p, "0.");
			for (i = 0; i < (size_t)(-exp - 1); i++)
				*p++ = '0';
			p += sprintf(p, "%s", digits);
		} else {
			for (i = 0; i <= (size_t)exp; i++)
				*p++ = i < nd ? digits[i] : '0';
			*p++ = '.';
			if (nd > (size_t)exp + 1)
				p += sprintf(p, "%s", digits + exp + 1);
			else
				*p++ = '0';
		}
	} else {
		*p++ = digits[0];
		if (nd > 1)
			p += sprintf(p, ".%s", digits + 1);
		p += sprintf(p, "e%c%02d", exp < 0 ? '-' : '+', abs(exp));
	}
	*p = '\0';
	snprintf(buf, size, "%s", tmp);
}

/* ---- view ------------------------------------------------------------- */

void ub_top_view_init(struct ub_top_view *v, double interval)
{
	memset(v, 0, sizeof(*v));
	v->interval = interval;
	v->queue_scale = UB_TOP_SCALE_START;
	v->total_scale = UB_TOP_SCALE_START;
}

void ub_top_view_free(struct ub_top_view *v)
{
	free(v->rows);
	v->rows = NULL;
	v->nr_rows = 0;
}

static double max2(double a, double b)
{
	return a > b ? a : b;
}

int ub_top_view_update(struct ub_top_view *v, const struct ub_rpc_stats *prev,
		       const struct ub_rpc_stats *cur,
		       const struct ub_rpc_queues *q)
{
	struct ub_top_row *rows = NULL, all = {0};
	const struct ub_rpc_queue_stats *c, *p;
	double queue_max = 0;
	size_t i, n = cur->nr_queues;

	if (n) {
		rows = calloc(n, sizeof(*rows));
		if (!rows)
			return -ENOMEM;
	}
	for (i = 0; i < n; i++) {
		struct ub_top_row *r = &rows[i];

		c = &cur->queues[i];
		r->bytes_read = (double)c->bytes_read;
		r->bytes_written = (double)c->bytes_written;
		if (prev && i < prev->nr_queues) {
			p = &prev->queues[i];
			r->read_rate = ub_top_rate(p->bytes_read, c->bytes_read,
						   v->interval);
			r->write_rate = ub_top_rate(
			    p->bytes_written, c->bytes_written, v->interval);
			r->iops =
			    ub_top_rate(p->read_ops, c->read_ops, v->interval) +
			    ub_top_rate(p->write_ops, c->write_ops,
					v->interval);
		}
		r->inflight = q && i < q->nr_queues ? q->inflight[i] : 0;
		all.read_rate += r->read_rate;
		all.write_rate += r->write_rate;
		all.iops += r->iops;
		all.bytes_read += r->bytes_read;
		all.bytes_written += r->bytes_written;
		all.inflight += r->inflight;
		queue_max = max2(queue_max, max2(r->read_rate, r->write_rate));
	}
	free(v->rows);
	v->rows = rows;
	v->nr_rows = n;
	v->all = all;
	ub_top_scale_update(&v->queue_scale, queue_max);
	ub_top_scale_update(&v->total_scale,
			    max2(all.read_rate, all.write_rate));
	return 0;
}

/* ---- frame ------------------------------------------------------------ */

enum col_id {
	COL_QUEUE,
	COL_READ_RATE,
	COL_READ_BAR,
	COL_WRITE_RATE,
	COL_WRITE_BAR,
	COL_IOPS,
	COL_INFLT,
	COL_TOTAL_READ,
	COL_TOTAL_WRITE,
	NR_COLS,
};

static const struct {
	const char *title;
	unsigned width;
	bool bar; /* left-justified bar; everything else is right-justified */
} cols[NR_COLS] = {
    [COL_QUEUE] = {"Queue", 5, false},
    [COL_READ_RATE] = {"Read Rate", 13, false},
    [COL_READ_BAR] = {"Read Bar", UB_TOP_BAR_WIDTH, true},
    [COL_WRITE_RATE] = {"Write Rate", 13, false},
    [COL_WRITE_BAR] = {"Write Bar", UB_TOP_BAR_WIDTH, true},
    [COL_IOPS] = {"IOPS", 8, false},
    [COL_INFLT] = {"Inflt", 5, false},
    [COL_TOTAL_READ] = {"Total Read", 11, false},
    [COL_TOTAL_WRITE] = {"Total Write", 11, false},
};

struct layout {
	bool bars;     /* with the two bar columns */
	unsigned gap;  /* spaces between columns */
	unsigned hpad; /* panel: spaces inside each side border */
};

/* Widest first; the last one is used, cut, when none fits. */
static const struct layout layouts[] = {
    {true, 2, 2},
    {true, 1, 1},
    {false, 2, 2},
    {false, 1, 1},
};

/* SGR parameters. */
#define SGR_BOLD     "1"
#define SGR_DIM	     "2"
#define SGR_TITLE    "1;35"
#define SGR_NAME     "1;36"
#define SGR_BORDER   "32"
#define SGR_READ     "34"
#define SGR_WRITE    "31"
#define SGR_ALL_READ "1;36"
#define SGR_ALL_WR   "1;33"
#define SGR_TOT_READ "1;34"
#define SGR_TOT_WR   "1;31"

#define BOX_H  "\u2500" /* ─ */
#define BOX_V  "\u2502" /* │ */
#define BOX_TL "\u256d" /* ╭ */
#define BOX_TR "\u256e" /* ╮ */
#define BOX_BL "\u2570" /* ╰ */
#define BOX_BR "\u256f" /* ╯ */
#define SEP_CH "\u2501" /* ━ */

/* A line being written: characters beyond `limit` are dropped. */
struct out {
	FILE *f;
	bool color;
	unsigned limit; /* 0 = none */
	unsigned col;	/* characters written on this line */
	unsigned lines;
};

static size_t utf8_chars(const char *s)
{
	size_t n = 0;

	for (; *s; s++)
		n += ((unsigned char)*s & 0xc0) != 0x80;
	return n;
}

static void put(struct out *o, const char *sgr, const char *s)
{
	bool styled = sgr && o->color && *s;
	const char *p = s;

	if (styled)
		fprintf(o->f, "\x1b[%sm", sgr);
	while (*p) {
		const char *q = p + 1;

		while (((unsigned char)*q & 0xc0) == 0x80)
			q++;
		if (o->limit && o->col >= o->limit)
			break;
		fwrite(p, 1, (size_t)(q - p), o->f);
		o->col++;
		p = q;
	}
	if (styled)
		fputs("\x1b[0m", o->f);
}

static void repeat(struct out *o, const char *sgr, const char *s, unsigned n)
{
	bool styled = sgr && o->color && n;
	unsigned i;

	if (styled)
		fprintf(o->f, "\x1b[%sm", sgr);
	for (i = 0; i < n && (!o->limit || o->col < o->limit); i++) {
		fputs(s, o->f);
		o->col++;
	}
	if (styled)
		fputs("\x1b[0m", o->f);
}

static void spaces(struct out *o, unsigned n)
{
	repeat(o, NULL, " ", n);
}

static void end_line(struct out *o)
{
	fputc('\n', o->f);
	o->col = 0;
	o->lines++;
}

/* A panel line around the content written by the caller between
 * panel_open and panel_close. */
struct panel {
	bool on;
	unsigned width, hpad;
};

static void panel_open(struct out *o, const struct panel *pn)
{
	if (!pn->on)
		return;
	o->limit = pn->width;
	put(o, SGR_BORDER, BOX_V);
	spaces(o, pn->hpad);
	o->limit = pn->width > pn->hpad + 1 ? pn->width - pn->hpad - 1 : 1;
}

static void panel_close(struct out *o, const struct panel *pn)
{
	if (pn->on) {
		o->limit = pn->width;
		if (o->col < pn->width - 1)
			spaces(o, pn->width - 1 - o->col);
		put(o, SGR_BORDER, BOX_V);
	}
	end_line(o);
}

static void panel_rule(struct out *o, const struct panel *pn, const char *l,
		       const char *r)
{
	o->limit = pn->width;
	if (o->color)
		fputs("\x1b[" SGR_BORDER "m", o->f);
	put(o, NULL, l);
	repeat(o, NULL, BOX_H, pn->width - 2);
	put(o, NULL, r);
	if (o->color)
		fputs("\x1b[0m", o->f);
	end_line(o);
}

static void panel_blank(struct out *o, const struct panel *pn)
{
	panel_open(o, pn);
	panel_close(o, pn);
}

static bool col_shown(const struct layout *l, unsigned c)
{
	return l->bars || !cols[c].bar;
}

static unsigned table_width(const struct layout *l)
{
	unsigned w = 0, n = 0, c;

	for (c = 0; c < NR_COLS; c++) {
		if (!col_shown(l, c))
			continue;
		w += cols[c].width;
		n++;
	}
	return w + (n ? n - 1 : 0) * l->gap;
}

/* Writes the cells of one row; cell[c] is the text of column c, sgr[c]
 * its style (NULL: plain). */
static void table_line(struct out *o, const struct layout *l,
		       const char *const cell[NR_COLS],
		       const char *const sgr[NR_COLS])
{
	bool first = true;
	unsigned c;
	size_t n;

	for (c = 0; c < NR_COLS; c++) {
		if (!col_shown(l, c))
			continue;
		if (!first)
			spaces(o, l->gap);
		first = false;
		n = utf8_chars(cell[c]);
		if (!cols[c].bar && n < cols[c].width)
			spaces(o, cols[c].width - (unsigned)n);
		put(o, sgr[c], cell[c]);
		if (cols[c].bar && n < cols[c].width && c != NR_COLS - 1)
			spaces(o, cols[c].width - (unsigned)n);
	}
}

/* Cells of a data row in buffers of the caller. */
struct row_text {
	char queue[24];
	char read_rate[UB_TOP_BYTES_LEN], write_rate[UB_TOP_BYTES_LEN];
	char read_bar[UB_TOP_BAR_LEN], write_bar[UB_TOP_BAR_LEN];
	char iops[32], inflt[24];
	char total_read[UB_TOP_BYTES_LEN], total_write[UB_TOP_BYTES_LEN];
};

static void row_line(struct out *o, const struct layout *l,
		     const struct ub_top_row *r, const char *name, bool all,
		     double scale)
{
	struct row_text t;
	const char *cell[NR_COLS], *sgr[NR_COLS];
	unsigned c;

	snprintf(t.queue, sizeof(t.queue), "%s", name);
	ub_top_format_rate(r->read_rate, t.read_rate);
	ub_top_format_rate(r->write_rate, t.write_rate);
	ub_top_bar(r->read_rate, scale, t.read_bar);
	ub_top_bar(r->write_rate, scale, t.write_bar);
	if (r->iops < 1e18)
		snprintf(t.iops, sizeof(t.iops), "%.0f", r->iops);
	else
		snprintf(t.iops, sizeof(t.iops), "%.2e", r->iops);
	snprintf(t.inflt, sizeof(t.inflt), "%llu",
		 (unsigned long long)r->inflight);
	ub_top_format_bytes(r->bytes_read, t.total_read);
	ub_top_format_bytes(r->bytes_written, t.total_write);

	cell[COL_QUEUE] = t.queue;
	cell[COL_READ_RATE] = t.read_rate;
	cell[COL_READ_BAR] = t.read_bar;
	cell[COL_WRITE_RATE] = t.write_rate;
	cell[COL_WRITE_BAR] = t.write_bar;
	cell[COL_IOPS] = t.iops;
	cell[COL_INFLT] = t.inflt;
	cell[COL_TOTAL_READ] = t.total_read;
	cell[COL_TOTAL_WRITE] = t.total_write;
	for (c = 0; c < NR_COLS; c++)
		sgr[c] = all ? SGR_BOLD : NULL;
	sgr[COL_READ_BAR] = all ? SGR_ALL_READ : SGR_READ;
	sgr[COL_WRITE_BAR] = all ? SGR_ALL_WR : SGR_WRITE;
	table_line(o, l, cell, sgr);
}

static void header_line(struct out *o, const struct ub_top_view *v)
{
	char rd[UB_TOP_BYTES_LEN + 4], wr[UB_TOP_BYTES_LEN + 4];
	char rate[UB_TOP_BYTES_LEN], secs[40], mid[64], tail[64];

	ub_top_format_rate(v->all.read_rate, rate);
	snprintf(rd, sizeof(rd), "\u2193%s", rate);
	ub_top_format_rate(v->all.write_rate, rate);
	snprintf(wr, sizeof(wr), "\u2191%s", rate);
	ub_top_format_seconds(v->interval, secs, sizeof(secs));
	snprintf(mid, sizeof(mid), " - %zu queues | ", v->nr_rows);
	snprintf(tail, sizeof(tail), " | Poll: %ss", secs);

	put(o, SGR_NAME, "ubitop");
	put(o, SGR_DIM, mid);
	put(o, SGR_DIM, "Total: ");
	put(o, SGR_TOT_READ, rd);
	put(o, SGR_DIM, " / ");
	put(o, SGR_TOT_WR, wr);
	put(o, SGR_DIM, tail);
}

unsigned ub_top_render(const struct ub_top_view *v,
		       const struct ub_top_style *style, FILE *out)
{
	struct out o = {.f = out, .color = style->color};
	const struct layout *l = &layouts[ARRAY_SIZE(layouts) - 1];
	const char *cell[NR_COLS], *sgr[NR_COLS];
	struct panel pn = {.on = style->panel};
	unsigned c, need, i;
	size_t q;

	for (i = 0; i < ARRAY_SIZE(layouts); i++) {
		need = table_width(&layouts[i]);
		if (pn.on)
			need += 2 * layouts[i].hpad + 2;
		if (!style->width || need <= style->width) {
			l = &layouts[i];
			break;
		}
	}
	if (pn.on) {
		pn.hpad = l->hpad;
		pn.width = style->width ? style->width
					: table_width(l) + 2 * l->hpad + 2;
		if (pn.width < 2 * pn.hpad + 3)
			pn.on = false; /* too narrow for a border */
	}
	if (!pn.on)
		o.limit = style->width;

	if (pn.on) {
		panel_rule(&o, &pn, BOX_TL, BOX_TR);
		panel_blank(&o, &pn);
	}
	panel_open(&o, &pn);
	header_line(&o, v);
	panel_close(&o, &pn);
	panel_blank(&o, &pn);

	panel_open(&o, &pn);
	for (c = 0; c < NR_COLS; c++) {
		cell[c] = cols[c].title;
		sgr[c] = SGR_TITLE;
	}
	table_line(&o, l, cell, sgr);
	panel_close(&o, &pn);

	for (q = 0; q < v->nr_rows; q++) {
		char name[24];

		snprintf(name, sizeof(name), "%zu", q);
		panel_open(&o, &pn);
		row_line(&o, l, &v->rows[q], name, false, v->queue_scale);
		panel_close(&o, &pn);
	}

	panel_open(&o, &pn);
	for (c = 0; c < NR_COLS; c++)
		if (col_shown(l, c)) {
			if (c)
				spaces(&o, l->gap);
			repeat(&o, SGR_DIM, SEP_CH, cols[c].width);
		}
	panel_close(&o, &pn);

	panel_open(&o, &pn);
	row_line(&o, l, &v->all, "ALL", true, v->total_scale);
	panel_close(&o, &pn);

	if (pn.on) {
		panel_blank(&o, &pn);
		panel_rule(&o, &pn, BOX_BL, BOX_BR);
	}
	return o.lines;
}
