/*
 * Error recording and logging. Messages live in thread-local buffers so that
 * worker threads do not mix their failures.
 */
#define _POSIX_C_SOURCE 200809L
#include "status.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define MSG_CAP 2048
#define TRACE_CAP 2048

static _Thread_local char err_msg[MSG_CAP];
static _Thread_local char err_trace[TRACE_CAP];
static _Thread_local fptq_status err_status = FPTQ_OK;

static fptq_log_level log_level = FPTQ_LOG_INFO;
static char log_prefix[64] = "";

const char *fptq_status_name(fptq_status s)
{
    switch (s) {
    case FPTQ_OK: return "ok";
    case FPTQ_ERR_ARG: return "bad argument";
    case FPTQ_ERR_IO: return "I/O error";
    case FPTQ_ERR_FORMAT: return "bad file format";
    case FPTQ_ERR_UNSUPPORTED: return "unsupported";
    case FPTQ_ERR_NOMEM: return "out of memory";
    case FPTQ_ERR_NUMERIC: return "numerical failure";
    case FPTQ_ERR_BACKEND: return "backend error";
    case FPTQ_ERR_COMM: return "communication error";
    case FPTQ_ERR_INTERRUPTED: return "interrupted";
    case FPTQ_ERR_INTERNAL: return "internal error";
    }
    return "unknown status";
}

fptq_status fptq_fail(fptq_status s, const char *file, int line, const char *fmt, ...)
{
    if (err_status == FPTQ_OK) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err_msg, sizeof err_msg, fmt, ap);
        va_end(ap);
        err_status = s;
        err_trace[0] = '\0';
        fptq_trace(file, line, "origin");
    }
    return s;
}

void fptq_error_context(const char *fmt, ...)
{
    if (err_status == FPTQ_OK)
        return;
    char ctx[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(ctx, sizeof ctx, fmt, ap);
    va_end(ap);
    char tmp[MSG_CAP];
    snprintf(tmp, sizeof tmp, "%.400s: %.1600s", ctx, err_msg);
    memcpy(err_msg, tmp, sizeof err_msg);
}

const char *fptq_last_error(void) { return err_msg; }
fptq_status fptq_last_status(void) { return err_status; }

void fptq_clear_error(void)
{
    err_status = FPTQ_OK;
    err_msg[0] = '\0';
    err_trace[0] = '\0';
}

void fptq_trace(const char *file, int line, const char *expr)
{
    size_t used = strlen(err_trace);
    if (used + 1 >= TRACE_CAP)
        return;
    snprintf(err_trace + used, TRACE_CAP - used, "  at %s:%d (%s)\n", file, line, expr);
}

const char *fptq_error_trace(void) { return err_trace; }

fptq_status fptq_calloc(size_t count, size_t size, const char *what, void *out_ptr)
{
    void **out = (void **)out_ptr;
    *out = NULL;
    if (size != 0 && count > SIZE_MAX / size)
        return FPTQ_FAIL(FPTQ_ERR_NOMEM, "%s: %zu x %zu bytes overflows size_t", what, count, size);
    size_t bytes = count * size;
    void *p = calloc(bytes ? bytes : 1, 1);
    if (!p)
        return FPTQ_FAIL(FPTQ_ERR_NOMEM, "%s: cannot allocate %zu bytes (%.1f MiB)", what, bytes,
                         bytes / 1048576.0);
    *out = p;
    return FPTQ_OK;
}

void fptq_log_set_level(fptq_log_level level) { log_level = level; }
fptq_log_level fptq_log_get_level(void) { return log_level; }

void fptq_log_set_prefix(const char *prefix)
{
    snprintf(log_prefix, sizeof log_prefix, "%s", prefix ? prefix : "");
}

void fptq_log(fptq_log_level level, const char *fmt, ...)
{
    if (level > log_level)
        return;
    static const char *tags[] = {"error: ", "warning: ", "", "debug: "};
    char line[4096];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    /* one fprintf per line so that ranks sharing a terminal do not interleave mid-line */
    fprintf(stderr, "fptq%s%s: %s%s\n", log_prefix[0] ? " " : "", log_prefix, tags[level], line);
}

double fptq_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

void fptq_format_bytes(double bytes, char *buf, size_t cap)
{
    if (bytes >= 1073741824.0)
        snprintf(buf, cap, "%.2f GiB", bytes / 1073741824.0);
    else if (bytes >= 1048576.0)
        snprintf(buf, cap, "%.1f MiB", bytes / 1048576.0);
    else if (bytes >= 1024.0)
        snprintf(buf, cap, "%.1f KiB", bytes / 1024.0);
    else
        snprintf(buf, cap, "%.0f B", bytes);
}
