/*
 * .npy reading and writing (format 1.0-3.0, little-endian, C order) and token
 * loading. The header dict is parsed by a small literal parser, and every size
 * is checked against the file before anything is allocated or read.
 */
#define _POSIX_C_SOURCE 200809L
#include "npy.h"

#include "../common/fileio.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* Data is read and written without byte swapping. */
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "io/npy.c assumes a little-endian host"
#endif

/* numpy itself refuses headers over 10000 bytes by default; this leaves room
 * for odd writers while keeping a corrupt length from driving a huge allocation. */
#define NPY_MAX_HEADER ((int64_t)1 << 20)
#define NPY_ALIGN 64

static const char MAGIC[6] = {'\x93', 'N', 'U', 'M', 'P', 'Y'};

typedef struct {
    npy_dtype dtype;
    char kind;      /* numpy type character: i, u, f */
    size_t size;
    const char *descr;  /* what npy_save writes */
    const char *name;
} dtype_info;

static const dtype_info DTYPES[] = {
    {NPY_I32, 'i', 4, "<i4", "int32"},   {NPY_I64, 'i', 8, "<i8", "int64"},
    {NPY_U16, 'u', 2, "<u2", "uint16"},  {NPY_U32, 'u', 4, "<u4", "uint32"},
    {NPY_F32, 'f', 4, "<f4", "float32"}, {NPY_F64, 'f', 8, "<f8", "float64"},
    {NPY_U8, 'u', 1, "|u1", "uint8"},    {NPY_I8, 'i', 1, "|i1", "int8"},
};
#define N_DTYPES (sizeof DTYPES / sizeof DTYPES[0])

static const dtype_info *dtype_lookup(npy_dtype d)
{
    for (size_t i = 0; i < N_DTYPES; i++)
        if (DTYPES[i].dtype == d)
            return &DTYPES[i];
    return NULL;
}

/* numpy's spelling: "()", "(5,)", "(2, 3)". */
static const char *format_shape(int ndim, const int64_t *shape, char *buf, size_t cap)
{
    size_t used = 0;
    used += (size_t)snprintf(buf, cap, "(");
    for (int i = 0; i < ndim && used < cap; i++)
        used += (size_t)snprintf(buf + used, cap - used, "%s%lld", i ? ", " : "",
                                 (long long)shape[i]);
    if (used < cap)
        snprintf(buf + used, cap - used, ndim == 1 ? ",)" : ")");
    return buf;
}

/* Header text quoted in messages; a corrupt file may hold any bytes. */
static const char *printable(const char *s, size_t n, char *buf, size_t cap)
{
    size_t j = 0;
    for (size_t i = 0; i < n && j + 4 < cap; i++) {
        unsigned char ch = (unsigned char)s[i];
        buf[j++] = (ch >= 0x20 && ch < 0x7f) ? (char)ch : '?';
    }
    if (n > 0 && j + 4 >= cap) {
        memcpy(buf + j, "...", 3);
        j += 3;
    }
    buf[j] = '\0';
    return buf;
}

/* ---- header dict parser --------------------------------------------------- */

typedef struct {
    const char *path;
    const char *s;    /* header text, not NUL-terminated */
    size_t n;
    size_t pos;
} hcur;

static fptq_status hdr_fail(const hcur *c, const char *expected)
{
    char shown[128];
    size_t n = c->n;
    while (n > 0 && (c->s[n - 1] == ' ' || c->s[n - 1] == '\n'))  /* padding says nothing */
        n--;
    return FPTQ_FAIL(FPTQ_ERR_FORMAT,
                     "%s: malformed .npy header at character %zu: expected %s%s (header: %s)",
                     c->path, c->pos, expected,
                     c->pos >= c->n ? ", found the end of the header" : "",
                     printable(c->s, n, shown, sizeof shown));
}

static void hdr_ws(hcur *c)
{
    while (c->pos < c->n &&
           (c->s[c->pos] == ' ' || c->s[c->pos] == '\t' || c->s[c->pos] == '\n' ||
            c->s[c->pos] == '\r'))
        c->pos++;
}

static int hdr_peek(const hcur *c) { return c->pos < c->n ? (unsigned char)c->s[c->pos] : -1; }

static fptq_status hdr_expect(hcur *c, char ch, const char *what)
{
    hdr_ws(c);
    if (hdr_peek(c) != (unsigned char)ch)
        return hdr_fail(c, what);
    c->pos++;
    return FPTQ_OK;
}

/* A Python string literal without escapes: keys and descr never need them. */
static fptq_status hdr_string(hcur *c, char *out, size_t cap, const char *what)
{
    hdr_ws(c);
    int q = hdr_peek(c);
    if (q != '\'' && q != '"')
        return hdr_fail(c, what);
    c->pos++;
    size_t start = c->pos;
    while (c->pos < c->n && c->s[c->pos] != (char)q) {
        if (c->s[c->pos] == '\\' || c->s[c->pos] == '\n')
            return hdr_fail(c, "a closing quote (escapes are not supported)");
        c->pos++;
    }
    if (c->pos >= c->n)
        return hdr_fail(c, "a closing quote");
    size_t len = c->pos - start;
    c->pos++;
    if (len >= cap) {
        c->pos = start;
        return hdr_fail(c, "a shorter string");
    }
    memcpy(out, c->s + start, len);
    out[len] = '\0';
    return FPTQ_OK;
}

static fptq_status hdr_bool(hcur *c, int *out)
{
    hdr_ws(c);
    if (c->n - c->pos >= 4 && memcmp(c->s + c->pos, "True", 4) == 0) {
        c->pos += 4;
        *out = 1;
    } else if (c->n - c->pos >= 5 && memcmp(c->s + c->pos, "False", 5) == 0) {
        c->pos += 5;
        *out = 0;
    } else {
        return hdr_fail(c, "True or False for 'fortran_order'");
    }
    return FPTQ_OK;
}

static fptq_status hdr_shape(hcur *c, int *ndim, int64_t *shape)
{
    FPTQ_TRY(hdr_expect(c, '(', "'(' opening the 'shape' tuple"));
    *ndim = 0;
    for (;;) {
        hdr_ws(c);
        if (hdr_peek(c) == ')') {
            c->pos++;
            return FPTQ_OK;
        }
        if (hdr_peek(c) < '0' || hdr_peek(c) > '9')
            return hdr_fail(c, "a non-negative integer or ')' in 'shape'");
        int64_t v = 0;
        while (hdr_peek(c) >= '0' && hdr_peek(c) <= '9') {
            int digit = hdr_peek(c) - '0';
            if (v > (INT64_MAX - digit) / 10)
                return FPTQ_FAIL(FPTQ_ERR_FORMAT,
                                 "%s: .npy shape dimension %d does not fit in 64 bits", c->path,
                                 *ndim);
            v = v * 10 + digit;
            c->pos++;
        }
        if (hdr_peek(c) == 'L' || hdr_peek(c) == 'l')  /* Python 2 longs */
            c->pos++;
        if (*ndim >= NPY_MAX_DIMS)
            return FPTQ_FAIL(FPTQ_ERR_UNSUPPORTED,
                             "%s: .npy array has more than %d dimensions", c->path, NPY_MAX_DIMS);
        shape[(*ndim)++] = v;
        hdr_ws(c);
        if (hdr_peek(c) == ',')
            c->pos++;
        else if (hdr_peek(c) != ')')
            return hdr_fail(c, "',' or ')' in 'shape'");
    }
}

typedef struct {
    char descr[32];
    int fortran_order;
    int ndim;
    int64_t shape[NPY_MAX_DIMS];
} npy_header;

static fptq_status parse_header(const char *path, const char *text, size_t n, npy_header *h)
{
    hcur c = {path, text, n, 0};
    int have_descr = 0, have_fortran = 0, have_shape = 0;
    char key[64];

    FPTQ_TRY(hdr_expect(&c, '{', "'{' opening the header dict"));
    for (;;) {
        hdr_ws(&c);
        if (hdr_peek(&c) == '}') {
            c.pos++;
            break;
        }
        FPTQ_TRY(hdr_string(&c, key, sizeof key, "a quoted key or '}'"));
        FPTQ_TRY(hdr_expect(&c, ':', "':' after a key"));
        hdr_ws(&c);
        int *seen = NULL;
        if (strcmp(key, "descr") == 0) {
            seen = &have_descr;
            if (hdr_peek(&c) == '[')
                return FPTQ_FAIL(FPTQ_ERR_UNSUPPORTED,
                                 "%s: .npy holds a structured dtype (descr is a list); only plain "
                                 "numeric arrays are supported",
                                 path);
            FPTQ_TRY(hdr_string(&c, h->descr, sizeof h->descr, "a quoted dtype for 'descr'"));
        } else if (strcmp(key, "fortran_order") == 0) {
            seen = &have_fortran;
            FPTQ_TRY(hdr_bool(&c, &h->fortran_order));
        } else if (strcmp(key, "shape") == 0) {
            seen = &have_shape;
            FPTQ_TRY(hdr_shape(&c, &h->ndim, h->shape));
        } else {
            /* numpy itself accepts exactly these three keys */
            char shown[80];
            return FPTQ_FAIL(FPTQ_ERR_FORMAT,
                             "%s: .npy header has unexpected key '%s' (expected descr, "
                             "fortran_order, shape)",
                             path, printable(key, strlen(key), shown, sizeof shown));
        }
        if (*seen)
            return FPTQ_FAIL(FPTQ_ERR_FORMAT, "%s: .npy header repeats key '%s'", path, key);
        *seen = 1;
        hdr_ws(&c);
        if (hdr_peek(&c) == ',')
            c.pos++;
        else if (hdr_peek(&c) != '}')
            return hdr_fail(&c, "',' or '}' after a value");
    }
    hdr_ws(&c);
    if (c.pos != c.n)
        return hdr_fail(&c, "only padding after the header dict");
    if (!have_descr || !have_fortran || !have_shape)
        return FPTQ_FAIL(FPTQ_ERR_FORMAT, "%s: .npy header lacks key '%s'", path,
                         !have_descr ? "descr" : !have_fortran ? "fortran_order" : "shape");
    return FPTQ_OK;
}

/* Maps a descr to a supported dtype; byte order must be little-endian, or
 * irrelevant for one-byte types. */
static fptq_status descr_to_dtype(const char *path, const char *descr, const dtype_info **out)
{
    char order = descr[0];
    const char *code = descr + 1;
    if (order != '<' && order != '>' && order != '=' && order != '|')
        return FPTQ_FAIL(FPTQ_ERR_UNSUPPORTED,
                         "%s: .npy dtype '%s' has no byte-order prefix (expected e.g. '<f4')", path,
                         descr);
    const dtype_info *found = NULL;
    for (size_t i = 0; i < N_DTYPES; i++)
        if (code[0] == DTYPES[i].kind && code[1] == (char)('0' + DTYPES[i].size) && code[2] == '\0')
            found = &DTYPES[i];
    if (!found)
        return FPTQ_FAIL(FPTQ_ERR_UNSUPPORTED,
                         "%s: .npy dtype '%s' is not supported (supported: <i4 <i8 <u2 <u4 <f4 "
                         "<f8 |u1 |i1)",
                         path, descr);
    if (found->size > 1) {
        if (order == '>')
            return FPTQ_FAIL(FPTQ_ERR_UNSUPPORTED,
                             "%s: .npy dtype '%s' is big-endian; only little-endian ('<') is "
                             "supported (convert with arr.astype('<%c%zu'))",
                             path, descr, found->kind, found->size);
        if (order == '|')
            return FPTQ_FAIL(FPTQ_ERR_FORMAT,
                             "%s: .npy dtype '%s' gives no byte order for a %zu-byte type", path,
                             descr, found->size);
    }
    *out = found;
    return FPTQ_OK;
}

static fptq_status read_exact(FILE *f, const char *path, void *buf, size_t n, const char *what)
{
    size_t got = fread(buf, 1, n, f);
    if (got != n)
        return FPTQ_FAIL(FPTQ_ERR_IO, "%s: read %zu of %zu bytes of the %s%s%s", path, got, n, what,
                         ferror(f) ? ": " : " (file shrank while reading)",
                         ferror(f) ? strerror(errno) : "");
    return FPTQ_OK;
}

fptq_status npy_load(const char *path, npy_array *out)
{
    if (!out || !path)
        return FPTQ_FAIL(FPTQ_ERR_INTERNAL, "npy_load called without a path or output");
    memset(out, 0, sizeof *out);

    /* a regular file only: a FIFO is refused before anything blocks on it */
    FILE *f = NULL;
    int64_t file_size = 0;
    FPTQ_TRY(fptq_fopen_regular(path, ".npy file", &f, &file_size));
    fptq_status st = FPTQ_OK;
    char *header = NULL;
    void *data = NULL;

    unsigned char pre[12];
    size_t pre_n = file_size < 12 ? (size_t)file_size : 12;
    FPTQ_TRY_GOTO(read_exact(f, path, pre, pre_n, ".npy preamble"), st, done);
    if (pre_n < sizeof MAGIC || memcmp(pre, MAGIC, sizeof MAGIC) != 0) {
        st = FPTQ_FAIL(FPTQ_ERR_FORMAT,
                       "%s: not a .npy file (bad magic: expected \\x93NUMPY in the first 6 bytes%s)",
                       path, pre_n < sizeof MAGIC ? ", file is shorter" : "");
        goto done;
    }
    if (pre_n < 8) {
        st = FPTQ_FAIL(FPTQ_ERR_FORMAT, "%s: truncated .npy preamble (%zu bytes, no version)",
                       path, pre_n);
        goto done;
    }
    int major = pre[6], minor = pre[7];
    size_t prefix;
    if (major == 1 && minor == 0)
        prefix = 10;
    else if ((major == 2 || major == 3) && minor == 0)
        prefix = 12;
    else {
        st = FPTQ_FAIL(FPTQ_ERR_UNSUPPORTED,
                       "%s: .npy format version %d.%d is not supported (expected 1.0, 2.0 or 3.0)",
                       path, major, minor);
        goto done;
    }
    if (pre_n < prefix) {
        st = FPTQ_FAIL(FPTQ_ERR_FORMAT,
                       "%s: truncated .npy preamble (%zu bytes, version %d.0 needs %zu)", path,
                       pre_n, major, prefix);
        goto done;
    }
    int64_t hlen = prefix == 10 ? (int64_t)pre[8] | (int64_t)pre[9] << 8
                                : (int64_t)pre[8] | (int64_t)pre[9] << 8 | (int64_t)pre[10] << 16 |
                                      (int64_t)pre[11] << 24;
    if ((int64_t)prefix + hlen > file_size) {
        st = FPTQ_FAIL(FPTQ_ERR_FORMAT,
                       "%s: .npy header length %lld runs past the end of the file (%lld bytes, "
                       "header would end at byte %lld)",
                       path, (long long)hlen, (long long)file_size, (long long)(prefix + hlen));
        goto done;
    }
    if (hlen > NPY_MAX_HEADER) {
        st = FPTQ_FAIL(FPTQ_ERR_FORMAT, "%s: .npy header length %lld is implausibly large (limit %lld)",
                       path, (long long)hlen, (long long)NPY_MAX_HEADER);
        goto done;
    }
    if (pre_n > prefix && fseeko(f, (off_t)prefix, SEEK_SET) != 0) {
        st = FPTQ_FAIL(FPTQ_ERR_IO, "%s: cannot seek to the .npy header: %s", path, strerror(errno));
        goto done;
    }
    char what[512];
    snprintf(what, sizeof what, "%.200s: .npy header", path);
    FPTQ_TRY_GOTO(fptq_calloc((size_t)hlen + 1, 1, what, &header), st, done);
    FPTQ_TRY_GOTO(read_exact(f, path, header, (size_t)hlen, ".npy header"), st, done);

    npy_header h;
    memset(&h, 0, sizeof h);
    FPTQ_TRY_GOTO(parse_header(path, header, (size_t)hlen, &h), st, done);
    const dtype_info *dt = NULL;
    FPTQ_TRY_GOTO(descr_to_dtype(path, h.descr, &dt), st, done);
    char shape_s[256];
    format_shape(h.ndim, h.shape, shape_s, sizeof shape_s);
    /* 0-D and 1-D arrays are laid out the same either way */
    if (h.fortran_order && h.ndim > 1) {
        st = FPTQ_FAIL(FPTQ_ERR_UNSUPPORTED,
                       "%s: .npy array of shape %s is in Fortran order; only C order is supported "
                       "(save np.ascontiguousarray(arr))",
                       path, shape_s);
        goto done;
    }

    /* any zero dimension makes the array empty, however large the others */
    int64_t numel = 1;
    int has_zero = 0;
    for (int i = 0; i < h.ndim; i++)
        has_zero |= h.shape[i] == 0;
    if (has_zero) {
        numel = 0;
    } else {
        for (int i = 0; i < h.ndim; i++) {
            if (numel > INT64_MAX / h.shape[i]) {
                st = FPTQ_FAIL(FPTQ_ERR_FORMAT,
                               "%s: .npy shape %s has more elements than fit in 64 bits", path,
                               shape_s);
                goto done;
            }
            numel *= h.shape[i];
        }
    }
    if (numel > INT64_MAX / (int64_t)dt->size || (uint64_t)numel * dt->size > SIZE_MAX) {
        st = FPTQ_FAIL(FPTQ_ERR_FORMAT, "%s: .npy shape %s of %s is too large to address", path,
                       shape_s, h.descr);
        goto done;
    }
    int64_t expected = numel * (int64_t)dt->size;
    int64_t data_off = (int64_t)prefix + hlen;
    int64_t actual = file_size - data_off;
    if (actual != expected) {
        st = FPTQ_FAIL(FPTQ_ERR_FORMAT,
                       "%s: .npy data section has %lld bytes, expected %lld for shape %s of "
                       "%s (%s)",
                       path, (long long)actual, (long long)expected, shape_s, h.descr,
                       actual < expected ? "file is truncated" : "extra bytes after the array");
        goto done;
    }

    snprintf(what, sizeof what, "%.200s: .npy data %s of %s", path, shape_s, h.descr);
    FPTQ_TRY_GOTO(fptq_calloc((size_t)numel, dt->size, what, &data), st, done);
    FPTQ_TRY_GOTO(read_exact(f, path, data, (size_t)expected, ".npy data"), st, done);

    out->dtype = dt->dtype;
    out->ndim = h.ndim;
    memcpy(out->shape, h.shape, sizeof h.shape);
    out->numel = numel;
    out->elem_size = dt->size;
    out->data = data;
    data = NULL;
done:
    free(data);
    free(header);
    fclose(f);
    return st;
}

void npy_free(npy_array *a)
{
    if (!a)
        return;
    free(a->data);
    memset(a, 0, sizeof *a);
}

static fptq_status write_all(FILE *f, const char *path, const void *buf, size_t n, const char *what)
{
    if (n > 0 && fwrite(buf, 1, n, f) != n)
        return FPTQ_FAIL(FPTQ_ERR_IO, "%s: cannot write the %s: %s", path, what, strerror(errno));
    return FPTQ_OK;
}

fptq_status npy_save(const char *path, npy_dtype dtype, int ndim, const int64_t *shape,
                     const void *data)
{
    if (!path)
        return FPTQ_FAIL(FPTQ_ERR_INTERNAL, "npy_save called without a path");
    const dtype_info *dt = dtype_lookup(dtype);
    if (!dt)
        return FPTQ_FAIL(FPTQ_ERR_INTERNAL, "%s: npy_save given unknown dtype %d", path, (int)dtype);
    if (ndim < 0 || ndim > NPY_MAX_DIMS || (ndim > 0 && !shape))
        return FPTQ_FAIL(FPTQ_ERR_INTERNAL, "%s: npy_save given %d dimensions (expected 0..%d)",
                         path, ndim, NPY_MAX_DIMS);
    int64_t numel = 1;
    for (int i = 0; i < ndim; i++) {
        if (shape[i] < 0)
            return FPTQ_FAIL(FPTQ_ERR_INTERNAL, "%s: npy_save given negative dimension %d = %lld",
                             path, i, (long long)shape[i]);
        if (shape[i] != 0 && numel > INT64_MAX / shape[i] / (int64_t)dt->size)
            return FPTQ_FAIL(FPTQ_ERR_INTERNAL, "%s: npy_save shape overflows", path);
        numel *= shape[i];
    }
    if (numel > 0 && !data)
        return FPTQ_FAIL(FPTQ_ERR_INTERNAL, "%s: npy_save given no data for %lld elements", path,
                         (long long)numel);

    char shape_s[256];
    format_shape(ndim, shape, shape_s, sizeof shape_s);
    char header[512];
    int len = snprintf(header, sizeof header, "{'descr': '%s', 'fortran_order': False, 'shape': %s, }",
                       dt->descr, shape_s);
    /* numpy pads with spaces and ends with '\n' so the data is aligned for mmap */
    size_t total = 10 + (size_t)len + 1;
    size_t padded = (total + NPY_ALIGN - 1) / NPY_ALIGN * NPY_ALIGN;
    size_t hlen = padded - 10;
    if (padded - 10 >= sizeof header)
        return FPTQ_FAIL(FPTQ_ERR_INTERNAL, "%s: npy_save header too long", path);
    memset(header + len, ' ', hlen - (size_t)len - 1);
    header[hlen - 1] = '\n';

    unsigned char pre[10];
    memcpy(pre, MAGIC, sizeof MAGIC);
    pre[6] = 1;
    pre[7] = 0;
    pre[8] = (unsigned char)(hlen & 0xff);
    pre[9] = (unsigned char)(hlen >> 8);

    FILE *f = fopen(path, "wb");
    if (!f)
        return FPTQ_FAIL(FPTQ_ERR_IO, "%s: cannot create: %s", path, strerror(errno));
    fptq_status st = FPTQ_OK;
    FPTQ_TRY_GOTO(write_all(f, path, pre, sizeof pre, ".npy preamble"), st, fail);
    FPTQ_TRY_GOTO(write_all(f, path, header, hlen, ".npy header"), st, fail);
    FPTQ_TRY_GOTO(write_all(f, path, data, (size_t)numel * dt->size, ".npy data"), st, fail);
    if (fclose(f) != 0) {
        f = NULL;
        st = FPTQ_FAIL(FPTQ_ERR_IO, "%s: cannot finish writing: %s", path, strerror(errno));
        goto fail;
    }
    return FPTQ_OK;
fail:
    if (f)
        fclose(f);
    /* a partial file would later read as a confusing format error */
    remove(path);
    return st;
}

/* ---- tokens ---------------------------------------------------------------- */

static int64_t token_at(const npy_array *a, int64_t i)
{
    switch (a->dtype) {
    case NPY_I32: return ((const int32_t *)a->data)[i];
    case NPY_I64: return ((const int64_t *)a->data)[i];
    case NPY_U16: return ((const uint16_t *)a->data)[i];
    case NPY_U32: return ((const uint32_t *)a->data)[i];
    default: return -1;  /* excluded by the caller */
    }
}

fptq_status tokens_load(const char *path, int64_t vocab_size, fptq_tokens *out)
{
    if (!out || !path)
        return FPTQ_FAIL(FPTQ_ERR_INTERNAL, "tokens_load called without a path or output");
    memset(out, 0, sizeof *out);
    /* ids are stored as int32 */
    if (vocab_size <= 0 || vocab_size > (int64_t)INT32_MAX + 1)
        return FPTQ_FAIL(FPTQ_ERR_ARG, "%s: vocab_size %lld is outside [1, 2^31]", path,
                         (long long)vocab_size);

    npy_array a;
    FPTQ_TRY(npy_load(path, &a));
    fptq_status st = FPTQ_OK;
    int32_t *ids = NULL;
    char shape_s[256];
    format_shape(a.ndim, a.shape, shape_s, sizeof shape_s);
    const dtype_info *dt = dtype_lookup(a.dtype);

    if (a.dtype != NPY_I32 && a.dtype != NPY_I64 && a.dtype != NPY_U16 && a.dtype != NPY_U32) {
        st = FPTQ_FAIL(FPTQ_ERR_UNSUPPORTED,
                       "%s: token ids must be int32, int64, uint16 or uint32, got %s",
                       path, dt ? dt->name : "an unknown dtype");
        goto done;
    }
    if (a.ndim != 1 && a.ndim != 2) {
        st = FPTQ_FAIL(FPTQ_ERR_FORMAT,
                       "%s: token array has shape %s; expected 1-D (a stream) or 2-D (samples x "
                       "seq_len)%s",
                       path, shape_s, a.ndim == 0 ? ", got a scalar" : "");
        goto done;
    }
    if (a.numel == 0) {
        st = FPTQ_FAIL(FPTQ_ERR_FORMAT, "%s: token array of shape %s is empty (expected tokens)",
                       path, shape_s);
        goto done;
    }
    int64_t row_len = a.ndim == 2 ? a.shape[1] : a.numel;
    for (int64_t i = 0; i < a.numel; i++) {
        int64_t v = token_at(&a, i);
        if (v < 0 || v >= vocab_size) {
            char where[96] = "";
            if (a.ndim == 2)
                snprintf(where, sizeof where, " (row %lld, column %lld)", (long long)(i / row_len),
                         (long long)(i % row_len));
            st = FPTQ_FAIL(FPTQ_ERR_FORMAT,
                           "%s: token id %lld at position %lld%s is outside the vocabulary [0, "
                           "%lld) (vocab_size %lld)",
                           path, (long long)v, (long long)i, where, (long long)vocab_size,
                           (long long)vocab_size);
            goto done;
        }
    }

    if (a.dtype == NPY_I32) {
        ids = a.data;  /* already the right type: take ownership, no copy */
        a.data = NULL;
    } else {
        char what[256];
        snprintf(what, sizeof what, "%.200s: int32 token ids", path);
        FPTQ_TRY_GOTO(fptq_calloc((size_t)a.numel, sizeof *ids, what, &ids), st, done);
        for (int64_t i = 0; i < a.numel; i++)
            ids[i] = (int32_t)token_at(&a, i);
    }
    out->ids = ids;
    out->n_tokens = a.numel;
    out->n_rows = a.ndim == 2 ? a.shape[0] : 1;
    out->row_len = row_len;
done:
    npy_free(&a);
    return st;
}

void tokens_free(fptq_tokens *t)
{
    if (!t)
        return;
    free(t->ids);
    memset(t, 0, sizeof *t);
}
