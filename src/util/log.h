/* Logging to stderr with timestamps. The level comes from UBIBLK_LOG, else
 * RUST_LOG (kept for drop-in compatibility with the reference), else
 * "error". Accepted: off, error, warn, info, debug, trace, and
 * comma-separated `target=level` directives (the most verbose level named
 * anywhere wins; targets are not distinguished). Never log secrets. */
#ifndef UB_UTIL_LOG_H
#define UB_UTIL_LOG_H

#include <stdbool.h>

enum ub_log_level {
	UB_LOG_OFF = 0,
	UB_LOG_ERROR,
	UB_LOG_WARN,
	UB_LOG_INFO,
	UB_LOG_DEBUG,
	UB_LOG_TRACE,
};

/* Reads the environment and remembers the program name used in records. */
void ub_log_init(const char *progname);
/* Parses a level specification; returns the level or -1 if it is invalid. */
int ub_log_parse_level(const char *spec);
void ub_log_set_level(enum ub_log_level level);
enum ub_log_level ub_log_get_level(void);
static inline bool ub_log_enabled(enum ub_log_level level);

__attribute__((format(printf, 2, 3))) void ub_log(enum ub_log_level level,
						  const char *fmt, ...);

extern enum ub_log_level ub_log_current_level;
static inline bool ub_log_enabled(enum ub_log_level level)
{
	return level != UB_LOG_OFF && level <= ub_log_current_level;
}

#define UB_LOG(lvl, ...)                                                       \
	do {                                                                   \
		if (ub_log_enabled(lvl))                                       \
			ub_log(lvl, __VA_ARGS__);                              \
	} while (0)
#define LOG_ERROR(...) UB_LOG(UB_LOG_ERROR, __VA_ARGS__)
#define LOG_WARN(...)  UB_LOG(UB_LOG_WARN, __VA_ARGS__)
#define LOG_INFO(...)  UB_LOG(UB_LOG_INFO, __VA_ARGS__)
#define LOG_DEBUG(...) UB_LOG(UB_LOG_DEBUG, __VA_ARGS__)
#define LOG_TRACE(...) UB_LOG(UB_LOG_TRACE, __VA_ARGS__)

#endif
