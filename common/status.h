/*
 * fptq status codes, error messages and logging shared by every module.
 * Library code never exits: a function that can fail returns an fptq_status
 * and records one message saying what failed (file, tensor, layer, option);
 * only main() turns a status into an exit code.
 */
#ifndef FPTQ_STATUS_H
#define FPTQ_STATUS_H

#include <stddef.h>
#include <stdint.h>

typedef enum fptq_status {
    FPTQ_OK = 0,
    FPTQ_ERR_ARG,          /* bad command-line option or argument value */
    FPTQ_ERR_IO,           /* open, read, write, mmap, fsync failed */
    FPTQ_ERR_FORMAT,       /* a file's contents are malformed */
    FPTQ_ERR_UNSUPPORTED,  /* well-formed but not supported (architecture, dtype) */
    FPTQ_ERR_NOMEM,        /* allocation failed */
    FPTQ_ERR_NUMERIC,      /* numerical failure (Cholesky, NaN) */
    FPTQ_ERR_BACKEND,      /* compute backend unavailable or failed (CUDA) */
    FPTQ_ERR_COMM,         /* MPI / NCCL failure */
    FPTQ_ERR_INTERRUPTED,  /* stopped on request (signal, --max-layers) */
    FPTQ_ERR_INTERNAL      /* a bug: an invariant did not hold */
} fptq_status;

const char *fptq_status_name(fptq_status s);

/* Records the message of a new failure and returns s. The first message
 * stands until fptq_clear_error(); later calls add nothing, so the most
 * specific message (the one nearest the cause) is the one reported. */
fptq_status fptq_fail(fptq_status s, const char *file, int line,
                      const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
#define FPTQ_FAIL(st, ...) fptq_fail((st), __FILE__, __LINE__, __VA_ARGS__)

/* Adds context to the recorded message, outermost last:
 * "layer 3: tensor ...: shape [64, 32], expected [64, 64]". */
void fptq_error_context(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

const char *fptq_last_error(void);   /* "" when none */
fptq_status fptq_last_status(void);
void fptq_clear_error(void);

/* file:line of each level a failure passed through; printed with --verbose. */
void fptq_trace(const char *file, int line, const char *expr);
const char *fptq_error_trace(void);

/* Propagate a failing status upward, noting where it passed. */
#define FPTQ_TRY(expr)                                        \
    do {                                                      \
        fptq_status try_st_ = (expr);                         \
        if (try_st_ != FPTQ_OK) {                             \
            fptq_trace(__FILE__, __LINE__, #expr);            \
            return try_st_;                                   \
        }                                                     \
    } while (0)

/* Same, for functions with cleanup: stores the status in st, jumps. */
#define FPTQ_TRY_GOTO(expr, st, label)                        \
    do {                                                      \
        (st) = (expr);                                        \
        if ((st) != FPTQ_OK) {                                \
            fptq_trace(__FILE__, __LINE__, #expr);            \
            goto label;                                       \
        }                                                     \
    } while (0)

/* Allocation that fails with a message naming what was being allocated.
 * count * size is checked for overflow. The memory is zeroed. */
fptq_status fptq_calloc(size_t count, size_t size, const char *what, void *out_ptr);

/* ---- logging (stderr) ---------------------------------------------------- */

typedef enum { FPTQ_LOG_ERROR = 0, FPTQ_LOG_WARN, FPTQ_LOG_INFO, FPTQ_LOG_DEBUG } fptq_log_level;

void fptq_log_set_level(fptq_log_level level);
fptq_log_level fptq_log_get_level(void);
/* Prefix put before every line, e.g. "rank 3" in multi-rank runs. */
void fptq_log_set_prefix(const char *prefix);
void fptq_log(fptq_log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
#define fptq_error(...) fptq_log(FPTQ_LOG_ERROR, __VA_ARGS__)
#define fptq_warn(...)  fptq_log(FPTQ_LOG_WARN, __VA_ARGS__)
#define fptq_info(...)  fptq_log(FPTQ_LOG_INFO, __VA_ARGS__)
#define fptq_debug(...) fptq_log(FPTQ_LOG_DEBUG, __VA_ARGS__)

/* Monotonic wall-clock seconds. */
double fptq_now(void);

/* "1.50 GiB", "12.3 MiB", "512 B": a byte count for messages. */
void fptq_format_bytes(double bytes, char *buf, size_t cap);

#endif
