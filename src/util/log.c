#include "util/log.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

enum ub_log_level ub_log_current_level = UB_LOG_ERROR;
static const char *log_progname = "ubiblk";

static const char *const level_names[] = {
    [UB_LOG_OFF] = "off",   [UB_LOG_ERROR] = "error", [UB_LOG_WARN] = "warn",
    [UB_LOG_INFO] = "info", [UB_LOG_DEBUG] = "debug", [UB_LOG_TRACE] = "trace",
};

static const char *const level_tags[] = {
    [UB_LOG_OFF] = "OFF",   [UB_LOG_ERROR] = "ERROR", [UB_LOG_WARN] = "WARN",
    [UB_LOG_INFO] = "INFO", [UB_LOG_DEBUG] = "DEBUG", [UB_LOG_TRACE] = "TRACE",
};

static int level_from_word(const char *w, size_t n)
{
	for (size_t i = 0; i < sizeof(level_names) / sizeof(level_names[0]);
	     i++) {
		if (strlen(level_names[i]) == n &&
		    strncasecmp(level_names[i], w, n) == 0)
			return (int)i;
	}
	if (n == 7 && strncasecmp(w, "warning", 7) == 0)
		return UB_LOG_WARN;
	return -1;
}

int ub_log_parse_level(const char *spec)
{
	int best = -1;
	const char *p = spec;

	if (!spec)
		return -1;
	while (*p) {
		const char *end = strchr(p, ',');
		size_t n = end ? (size_t)(end - p) : strlen(p);
		const char *eq = memchr(p, '=', n);
		const char *word = eq ? eq + 1 : p;
		size_t wn = eq ? n - (size_t)(eq + 1 - p) : n;
		int lvl;

		while (wn && (*word == ' ' || *word == '\t')) {
			word++;
			wn--;
		}
		while (wn && (word[wn - 1] == ' ' || word[wn - 1] == '\t'))
			wn--;
		if (wn == 0 && !eq) {
			/* empty directive: ignore */
		} else {
			lvl = level_from_word(word, wn);
			if (lvl < 0)
				return -1;
			if (lvl > best)
				best = lvl;
		}
		if (!end)
			break;
		p = end + 1;
	}
	return best;
}

void ub_log_set_level(enum ub_log_level level)
{
	ub_log_current_level = level;
}

enum ub_log_level ub_log_get_level(void)
{
	return ub_log_current_level;
}

void ub_log_init(const char *progname)
{
	const char *env = getenv("UBIBLK_LOG");
	const char *which = "UBIBLK_LOG";
	int lvl;

	if (progname) {
		const char *slash = strrchr(progname, '/');
		log_progname = slash ? slash + 1 : progname;
	}
	if (!env || !*env) {
		env = getenv("RUST_LOG");
		which = "RUST_LOG";
	}
	if (!env || !*env)
		return;
	lvl = ub_log_parse_level(env);
	if (lvl < 0) {
		/* Said at warn level even though the level becomes error. */
		ub_log_current_level = UB_LOG_WARN;
		LOG_WARN("%s: unrecognised log level '%s', using 'error'",
			 which, env);
		ub_log_current_level = UB_LOG_ERROR;
		return;
	}
	ub_log_current_level = (enum ub_log_level)lvl;
}

void ub_log(enum ub_log_level level, const char *fmt, ...)
{
	char line[2048];
	struct timespec ts;
	struct tm tm;
	int n;
	va_list ap;

	if (!ub_log_enabled(level))
		return;
	clock_gettime(CLOCK_REALTIME, &ts);
	gmtime_r(&ts.tv_sec, &tm);
	n = snprintf(
	    line, sizeof(line),
	    "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ %-5s %s: ", tm.tm_year + 1900,
	    tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
	    ts.tv_nsec / 1000000, level_tags[level], log_progname);
	if (n < 0)
		return;
	if ((size_t)n >= sizeof(line))
		n = sizeof(line) - 1;
	va_start(ap, fmt);
	vsnprintf(line + n, sizeof(line) - (size_t)n, fmt, ap);
	va_end(ap);
	/* One write per record so concurrent threads do not interleave. */
	fprintf(stderr, "%s\n", line);
}
