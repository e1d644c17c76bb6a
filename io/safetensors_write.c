/*
 * safetensors writer. The format: 8 bytes little-endian header length, the
 * JSON header, then the data section, every tensor at its data_offsets
 * (relative to the data section, contiguous, in header order here).
 */
#define _POSIX_C_SOURCE 200809L
#include "safetensors_write.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct st_writer {
    char *path;
    int fd;
    size_t n;
    int64_t *ends;          /* [n] end offset of each tensor in the data section */
    int64_t written;        /* data bytes so far */
    char *buf;              /* write buffer: fewer, larger write(2) calls */
    size_t buf_used, buf_cap;
};

int64_t st_wtensor_nbytes(const st_wtensor *t)
{
    int64_t n = (int64_t)st_dtype_size(t->dtype);
    for (int i = 0; i < t->ndim; i++)
        n *= t->shape[i];
    return n;
}

/* ---- growing text buffer for the header ---------------------------------- */

typedef struct hbuf {
    char *s;
    size_t len, cap;
} hbuf;

static fptq_status hb_put(hbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static fptq_status hb_put(hbuf *b, const char *fmt, ...)
{
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(b->s ? b->s + b->len : NULL, b->s ? b->cap - b->len : 0, fmt, ap);
        va_end(ap);
        if (n < 0)
            return FPTQ_FAIL(FPTQ_ERR_INTERNAL, "safetensors header: cannot format \"%s\"", fmt);
        if (b->s && b->len + (size_t)n < b->cap) {
            b->len += (size_t)n;
            return FPTQ_OK;
        }
        size_t cap = b->cap ? b->cap : 4096;
        while (cap <= b->len + (size_t)n + 8)
            cap *= 2;
        char *s = realloc(b->s, cap);
        if (!s)
            return FPTQ_FAIL(FPTQ_ERR_NOMEM, "safetensors header: cannot allocate %zu bytes", cap);
        b->s = s;
        b->cap = cap;
    }
}

/* A JSON string; names and metadata here are plain ASCII, but quotes,
 * backslashes and control characters are escaped all the same. */
static fptq_status hb_str(hbuf *b, const char *s)
{
    FPTQ_TRY(hb_put(b, "\""));
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == '"' || *p == '\\')
            FPTQ_TRY(hb_put(b, "\\%c", *p));
        else if (*p < 0x20)
            FPTQ_TRY(hb_put(b, "\\u%04x", *p));
        else
            FPTQ_TRY(hb_put(b, "%c", *p));
    }
    return hb_put(b, "\"");
}

static fptq_status write_all(int fd, const char *path, const void *p, size_t n)
{
    const char *c = p;
    while (n > 0) {
        ssize_t k = write(fd, c, n);
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0)
            return FPTQ_FAIL(FPTQ_ERR_IO, "%s: write failed: %s", path, k < 0 ? strerror(errno) : "no progress");
        c += k;
        n -= (size_t)k;
    }
    return FPTQ_OK;
}

static void writer_free(st_writer *w)
{
    if (!w)
        return;
    if (w->fd >= 0)
        close(w->fd);
    free(w->path);
    free(w->ends);
    free(w->buf);
    free(w);
}

fptq_status st_writer_open(const char *path, const st_wtensor *t, size_t n, const char *const *meta,
                           size_t n_meta, st_writer **out)
{
    *out = NULL;
    for (size_t i = 0; i < n; i++) {
        if (!t[i].name || !t[i].name[0] || strcmp(t[i].name, "__metadata__") == 0)
            return FPTQ_FAIL(FPTQ_ERR_INTERNAL, "%s: tensor %zu has no usable name", path, i);
        if ((unsigned)t[i].dtype >= ST_DTYPE_COUNT || t[i].ndim < 0 || t[i].ndim > 4)
            return FPTQ_FAIL(FPTQ_ERR_INTERNAL, "%s: tensor %s has dtype %d, %d dimensions", path, t[i].name,
                             (int)t[i].dtype, t[i].ndim);
        for (int k = 0; k < t[i].ndim; k++)
            if (t[i].shape[k] < 0)
                return FPTQ_FAIL(FPTQ_ERR_INTERNAL, "%s: tensor %s has extent %lld", path, t[i].name,
                                 (long long)t[i].shape[k]);
        for (size_t j = 0; j < i; j++)
            if (strcmp(t[j].name, t[i].name) == 0)
                return FPTQ_FAIL(FPTQ_ERR_INTERNAL, "%s: tensor %s appears twice", path, t[i].name);
    }
    st_writer *w;
    FPTQ_TRY(fptq_calloc(1, sizeof *w, "safetensors writer", &w));
    w->fd = -1;
    fptq_status st = FPTQ_OK;
    hbuf h = {0};
    FPTQ_TRY_GOTO(fptq_calloc(strlen(path) + 1, 1, "path", &w->path), st, fail);
    memcpy(w->path, path, strlen(path) + 1);
    FPTQ_TRY_GOTO(fptq_calloc(n ? n : 1, sizeof *w->ends, "safetensors offsets", &w->ends), st, fail);
    w->n = n;
    w->buf_cap = (size_t)4 << 20;
    FPTQ_TRY_GOTO(fptq_calloc(w->buf_cap, 1, "safetensors write buffer", &w->buf), st, fail);

    FPTQ_TRY_GOTO(hb_put(&h, "{"), st, fail);
    if (n_meta > 0) {
        FPTQ_TRY_GOTO(hb_put(&h, "\"__metadata__\":{"), st, fail);
        for (size_t i = 0; i < n_meta; i++) {
            FPTQ_TRY_GOTO(hb_put(&h, "%s", i ? "," : ""), st, fail);
            FPTQ_TRY_GOTO(hb_str(&h, meta[2 * i]), st, fail);
            FPTQ_TRY_GOTO(hb_put(&h, ":"), st, fail);
            FPTQ_TRY_GOTO(hb_str(&h, meta[2 * i + 1]), st, fail);
        }
        FPTQ_TRY_GOTO(hb_put(&h, "}%s", n ? "," : ""), st, fail);
    }
    int64_t off = 0;
    for (size_t i = 0; i < n; i++) {
        int64_t nb = st_wtensor_nbytes(&t[i]);
        FPTQ_TRY_GOTO(hb_put(&h, "%s", i ? "," : ""), st, fail);
        FPTQ_TRY_GOTO(hb_str(&h, t[i].name), st, fail);
        FPTQ_TRY_GOTO(hb_put(&h, ":{\"dtype\":\"%s\",\"shape\":[", st_dtype_name(t[i].dtype)), st, fail);
        for (int k = 0; k < t[i].ndim; k++)
            FPTQ_TRY_GOTO(hb_put(&h, "%s%lld", k ? "," : "", (long long)t[i].shape[k]), st, fail);
        FPTQ_TRY_GOTO(hb_put(&h, "],\"data_offsets\":[%lld,%lld]}", (long long)off, (long long)(off + nb)), st,
                      fail);
        off += nb;
        w->ends[i] = off;
    }
    FPTQ_TRY_GOTO(hb_put(&h, "}"), st, fail);
    /* the data section starts 8-byte aligned, as the reference writer pads it */
    while (h.len % 8 != 0)
        FPTQ_TRY_GOTO(hb_put(&h, " "), st, fail);

    w->fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (w->fd < 0) {
        st = FPTQ_FAIL(FPTQ_ERR_IO, "cannot create %s: %s", path, strerror(errno));
        goto fail;
    }
    unsigned char len8[8];
    for (int i = 0; i < 8; i++)
        len8[i] = (unsigned char)((uint64_t)h.len >> (8 * i));
    FPTQ_TRY_GOTO(write_all(w->fd, path, len8, 8), st, fail);
    FPTQ_TRY_GOTO(write_all(w->fd, path, h.s, h.len), st, fail);
    free(h.s);
    *out = w;
    return FPTQ_OK;
fail:
    free(h.s);
    writer_free(w);
    return st;
}

static fptq_status flush_buf(st_writer *w)
{
    fptq_status st = write_all(w->fd, w->path, w->buf, w->buf_used);
    w->buf_used = 0;
    return st;
}

fptq_status st_writer_write(st_writer *w, const void *data, size_t nbytes)
{
    int64_t total = w->n ? w->ends[w->n - 1] : 0;
    if ((int64_t)nbytes > total - w->written)
        return FPTQ_FAIL(FPTQ_ERR_INTERNAL, "%s: %zu more bytes than the header announces (%lld of %lld written)",
                         w->path, nbytes - (size_t)(total - w->written), (long long)w->written, (long long)total);
    const char *p = data;
    if (nbytes >= w->buf_cap) {
        FPTQ_TRY(flush_buf(w));
        FPTQ_TRY(write_all(w->fd, w->path, p, nbytes));
    } else {
        if (w->buf_used + nbytes > w->buf_cap)
            FPTQ_TRY(flush_buf(w));
        memcpy(w->buf + w->buf_used, p, nbytes);
        w->buf_used += nbytes;
    }
    w->written += (int64_t)nbytes;
    return FPTQ_OK;
}

size_t st_writer_current(const st_writer *w)
{
    size_t i = 0;
    while (i < w->n && w->ends[i] <= w->written)
        i++;
    return i;
}

fptq_status st_writer_close(st_writer *w)
{
    fptq_status st = FPTQ_OK;
    int64_t total = w->n ? w->ends[w->n - 1] : 0;
    if (w->written != total) {
        st = FPTQ_FAIL(FPTQ_ERR_INTERNAL, "%s: %lld of the %lld data bytes the header announces were written",
                       w->path, (long long)w->written, (long long)total);
        goto done;
    }
    FPTQ_TRY_GOTO(flush_buf(w), st, done);
    if (fsync(w->fd) != 0) {
        st = FPTQ_FAIL(FPTQ_ERR_IO, "fsync of %s failed: %s", w->path, strerror(errno));
        goto done;
    }
    int fd = w->fd;
    w->fd = -1;
    if (close(fd) != 0)
        st = FPTQ_FAIL(FPTQ_ERR_IO, "close of %s failed: %s", w->path, strerror(errno));
done:
    writer_free(w);
    return st;
}

void st_writer_abort(st_writer *w) { writer_free(w); }
