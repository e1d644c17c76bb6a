/*
 * safetensors reader. Files are mmap'd read-only and every header field is
 * checked against the file before any tensor pointer is handed out, so a
 * corrupt or hostile file is reported, never read out of bounds.
 */
#define _POSIX_C_SOURCE 200809L
#include "safetensors.h"

#include "../common/fileio.h"
#include "json_util.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

/* The reference implementation refuses headers above 100 MB; a larger length
 * field means a corrupt file, not a model with millions of tensors. */
#define ST_MAX_HEADER 100000000ull
/* Largest integer a JSON number (a double in cJSON) holds exactly. */
#define ST_MAX_JSON_INT 9007199254740992.0
#define INDEX_NAME "model.safetensors.index.json"
#define SINGLE_NAME "model.safetensors"
#define SHAPE_STR_CAP (ST_MAX_DIMS * 22 + 4)

struct st_file {
    char *path;
    unsigned char *map;
    size_t map_size;
    const unsigned char *data;  /* start of the data section */
    st_tensor *tensors;         /* in header order */
    size_t count;
    const st_tensor **by_name;  /* sorted for bsearch */
};

struct st_model {
    char *dir;
    st_file **files;
    size_t nfiles;
    const st_tensor **by_name;  /* every tensor of every shard, sorted */
    size_t count;
};

/* ---- dtypes ---------------------------------------------------------------- */

static const char *const dtype_names[ST_DTYPE_COUNT] = {
    "F64", "F32", "F16", "BF16", "I64", "I32", "I16", "I8",
    "U64", "U32", "U16", "U8", "BOOL", "F8_E4M3", "F8_E5M2",
};
static const size_t dtype_sizes[ST_DTYPE_COUNT] = {
    8, 4, 2, 2, 8, 4, 2, 1, 8, 4, 2, 1, 1, 1, 1,
};

const char *st_dtype_name(st_dtype d)
{
    return (unsigned)d < ST_DTYPE_COUNT ? dtype_names[d] : "?";
}

size_t st_dtype_size(st_dtype d)
{
    return (unsigned)d < ST_DTYPE_COUNT ? dtype_sizes[d] : 0;
}

int st_dtype_parse(const char *s, st_dtype *d)
{
    if (!s)
        return -1;
    for (int i = 0; i < ST_DTYPE_COUNT; i++) {
        if (strcmp(s, dtype_names[i]) == 0) {
            *d = (st_dtype)i;
            return 0;
        }
    }
    return -1;
}

/* ---- fp16 / bf16 ------------------------------------------------------------ */

static float bits_to_f32(uint32_t bits)
{
    float f;
    memcpy(&f, &bits, sizeof f);
    return f;
}

float st_f16_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1fu;
    uint32_t man = h & 0x3ffu;
    if (exp == 0) {
        if (man == 0)
            return bits_to_f32(sign);
        /* fp16 subnormals are normal in fp32: shift the leading one into the
         * implicit bit and lower the exponent to match */
        uint32_t e = 113;   /* 127 - 15 + 1 */
        while (!(man & 0x400u)) {
            man <<= 1;
            e--;
        }
        return bits_to_f32(sign | (e << 23) | ((man & 0x3ffu) << 13));
    }
    if (exp == 31)   /* inf, or NaN with its payload kept */
        return bits_to_f32(sign | 0x7f800000u | (man << 13));
    return bits_to_f32(sign | ((exp + 112) << 23) | (man << 13));
}

float st_bf16_to_f32(uint16_t b)
{
    return bits_to_f32((uint32_t)b << 16);
}

/* ---- helpers -------------------------------------------------------------- */

static fptq_status dup_str(const char *s, const char *what, char **out)
{
    size_t n = strlen(s) + 1;
    FPTQ_TRY(fptq_calloc(n, 1, what, out));
    memcpy(*out, s, n);
    return FPTQ_OK;
}

/* dir + "/" + name, without doubling a trailing slash of dir. */
static fptq_status join_path(const char *dir, const char *name, char **out)
{
    size_t dl = strlen(dir), nl = strlen(name);
    int slash = dl > 0 && dir[dl - 1] != '/';
    FPTQ_TRY(fptq_calloc(dl + (size_t)slash + nl + 1, 1, "file path", out));
    memcpy(*out, dir, dl);
    if (slash)
        (*out)[dl] = '/';
    memcpy(*out + dl + (size_t)slash, name, nl + 1);
    return FPTQ_OK;
}

static void format_shape(char *buf, size_t cap, int ndim, const int64_t *shape)
{
    size_t used = 0;
    used += (size_t)snprintf(buf, cap, "[");
    for (int i = 0; i < ndim && used < cap; i++)
        used += (size_t)snprintf(buf + used, cap - used, "%s%lld", i ? ", " : "",
                                 (long long)shape[i]);
    if (used < cap)
        snprintf(buf + used, cap - used, "]");
}

/* A JSON number that is a non-negative integer small enough to be exact. */
static int json_uint(const cJSON *it, int64_t *v)
{
    if (!cJSON_IsNumber(it))
        return -1;
    double d = it->valuedouble;
    if (!(d >= 0.0) || d > ST_MAX_JSON_INT)
        return -1;
    int64_t i = (int64_t)d;
    if ((double)i != d)
        return -1;
    *v = i;
    return 0;
}

/* Shows a rejected JSON value in a message; cJSON's printer would allocate. */
static void describe_json(const cJSON *it, char *buf, size_t cap)
{
    if (cJSON_IsNumber(it))
        snprintf(buf, cap, "%.17g", it->valuedouble);
    else if (cJSON_IsString(it))
        snprintf(buf, cap, "\"%.60s\"", it->valuestring);
    else if (cJSON_IsNull(it))
        snprintf(buf, cap, "null");
    else if (cJSON_IsBool(it))
        snprintf(buf, cap, "%s", cJSON_IsTrue(it) ? "true" : "false");
    else if (cJSON_IsArray(it))
        snprintf(buf, cap, "an array");
    else if (cJSON_IsObject(it))
        snprintf(buf, cap, "an object");
    else
        snprintf(buf, cap, "an invalid value");
}

static int cmp_tensor_name(const void *a, const void *b)
{
    const st_tensor *x = *(const st_tensor *const *)a;
    const st_tensor *y = *(const st_tensor *const *)b;
    return strcmp(x->name, y->name);
}

/* All tensors compared here point into one mapping, so the data pointers
 * order them by offset. */
static int cmp_tensor_offset(const void *a, const void *b)
{
    const st_tensor *x = *(const st_tensor *const *)a;
    const st_tensor *y = *(const st_tensor *const *)b;
    if (x->data != y->data)
        return x->data < y->data ? -1 : 1;
    if (x->nbytes != y->nbytes)
        return x->nbytes < y->nbytes ? -1 : 1;
    return 0;
}

static const st_tensor *find_sorted(const st_tensor *const *by_name, size_t n, const char *name)
{
    if (!name || n == 0)
        return NULL;
    st_tensor key = {0};
    key.name = (char *)name;
    const st_tensor *kp = &key;
    const st_tensor *const *hit = bsearch(&kp, by_name, n, sizeof *by_name, cmp_tensor_name);
    return hit ? *hit : NULL;
}

/* ---- one file -------------------------------------------------------------- */

static fptq_status map_file(st_file *f)
{
    /* a regular file only: opening a FIFO must not wait for a writer */
    int fd;
    int64_t size;
    FPTQ_TRY(fptq_open_regular(f->path, "safetensors file", &fd, &size));
    if (size < 8) {
        close(fd);
        return FPTQ_FAIL(FPTQ_ERR_FORMAT,
                         "%s: file is %lld bytes, shorter than 8 bytes (the header length field)",
                         f->path, (long long)size);
    }
    if ((uint64_t)size > (uint64_t)SIZE_MAX) {
        close(fd);
        return FPTQ_FAIL(FPTQ_ERR_IO, "%s: %lld bytes do not fit in the address space", f->path,
                         (long long)size);
    }
    f->map_size = (size_t)size;
    void *p = mmap(NULL, f->map_size, PROT_READ, MAP_PRIVATE, fd, 0);
    int e = errno;
    close(fd);   /* the mapping stays valid without the descriptor */
    if (p == MAP_FAILED)
        return FPTQ_FAIL(FPTQ_ERR_IO, "cannot mmap %s (%zu bytes): %s", f->path, f->map_size,
                         strerror(e));
    f->map = p;
    return FPTQ_OK;
}

/* Fills t from one header entry; `data` is the start of the data section. */
static fptq_status parse_entry(const st_file *f, const cJSON *entry, const unsigned char *data,
                               uint64_t data_size, st_tensor *t)
{
    const char *path = f->path;
    const char *name = entry->string;
    char val[96];

    if (!cJSON_IsObject(entry)) {
        describe_json(entry, val, sizeof val);
        return FPTQ_FAIL(FPTQ_ERR_FORMAT, "%s: tensor %s: entry is not a JSON object (got %s)",
                         path, name, val);
    }

    const cJSON *jd = cJSON_GetObjectItemCaseSensitive(entry, "dtype");
    const cJSON *js = cJSON_GetObjectItemCaseSensitive(entry, "shape");
    const cJSON *jo = cJSON_GetObjectItemCaseSensitive(entry, "data_offsets");
    if (!jd)
        return FPTQ_FAIL(FPTQ_ERR_FORMAT, "%s: tensor %s has no dtype field", path, name);
    if (!js)
        return FPTQ_FAIL(FPTQ_ERR_FORMAT, "%s: tensor %s has no shape field", path, name);
    if (!jo)
        return FPTQ_FAIL(FPTQ_ERR_FORMAT, "%s: tensor %s has no data_offsets field", path, name);

    if (!cJSON_IsString(jd)) {
        describe_json(jd, val, sizeof val);
        return FPTQ_FAIL(FPTQ_ERR_FORMAT, "%s: tensor %s: dtype is not a string (got %s)", path,
                         name, val);
    }
    if (st_dtype_parse(jd->valuestring, &t->dtype) != 0)
        return FPTQ_FAIL(FPTQ_ERR_UNSUPPORTED, "%s: tensor %s has unknown dtype \"%.60s\"", path,
                         name, jd->valuestring);

    if (!cJSON_IsArray(js)) {
        describe_json(js, val, sizeof val);
        return FPTQ_FAIL(FPTQ_ERR_FORMAT,
                         "%s: tensor %s: shape must be an array of non-negative integers (got %s)",
                         path, name, val);
    }
    int ndim = cJSON_GetArraySize(js);
    if (ndim > ST_MAX_DIMS)
        return FPTQ_FAIL(FPTQ_ERR_FORMAT, "%s: tensor %s has %d dimensions, more than the %d supported",
                         path, name, ndim, ST_MAX_DIMS);
    t->ndim = ndim;
    t->numel = 1;
    int overflow = 0;
    int i = 0;
    const cJSON *dim;
    cJSON_ArrayForEach(dim, js) {
        if (json_uint(dim, &t->shape[i]) != 0) {
            describe_json(dim, val, sizeof val);
            return FPTQ_FAIL(FPTQ_ERR_FORMAT,
                             "%s: tensor %s: shape[%d] is %s, not a non-negative integer", path,
                             name, i, val);
        }
        /* keep checking the remaining dims so a later bad one is still named */
        if (!overflow && t->shape[i] != 0 && t->numel > INT64_MAX / t->shape[i])
            overflow = 1;
        else if (!overflow)
            t->numel *= t->shape[i];
        i++;
    }
    char shape_str[SHAPE_STR_CAP];
    format_shape(shape_str, sizeof shape_str, t->ndim, t->shape);
    if (overflow)
        return FPTQ_FAIL(FPTQ_ERR_FORMAT, "%s: tensor %s: element count of shape %s overflows", path,
                         name, shape_str);

    int64_t off[2];
    if (!cJSON_IsArray(jo) || cJSON_GetArraySize(jo) != 2 ||
        json_uint(cJSON_GetArrayItem(jo, 0), &off[0]) != 0 ||
        json_uint(cJSON_GetArrayItem(jo, 1), &off[1]) != 0)
        return FPTQ_FAIL(FPTQ_ERR_FORMAT,
                         "%s: tensor %s: data_offsets must be [begin, end], two non-negative integers",
                         path, name);
    uint64_t begin = (uint64_t)off[0], end = (uint64_t)off[1];
    if (begin > end)
        return FPTQ_FAIL(FPTQ_ERR_FORMAT,
                         "%s: tensor %s: data_offsets [%llu, %llu] are reversed (begin > end)", path,
                         name, (unsigned long long)begin, (unsigned long long)end);
    if (end > data_size)
        return FPTQ_FAIL(FPTQ_ERR_FORMAT,
                         "%s: tensor %s: data_offsets [%llu, %llu] out of range: the data section "
                         "holds %llu bytes",
                         path, name, (unsigned long long)begin, (unsigned long long)end,
                         (unsigned long long)data_size);

    size_t esize = st_dtype_size(t->dtype);
    uint64_t span = end - begin;
    /* numel * esize may overflow even though numel fits in int64 */
    int fits = (uint64_t)t->numel <= UINT64_MAX / esize;
    if (!fits || (uint64_t)t->numel * esize != span) {
        char want[32];
        if (fits)
            snprintf(want, sizeof want, "%llu", (unsigned long long)((uint64_t)t->numel * esize));
        else
            snprintf(want, sizeof want, "more than 2^64");
        return FPTQ_FAIL(FPTQ_ERR_FORMAT,
                         "%s: tensor %s: shape %s x %s (%zu bytes each) needs %s bytes, which does "
                         "not match data_offsets [%llu, %llu] (%llu bytes)",
                         path, name, shape_str, st_dtype_name(t->dtype), esize, want,
                         (unsigned long long)begin, (unsigned long long)end,
                         (unsigned long long)span);
    }

    FPTQ_TRY(dup_str(name, "tensor name", &t->name));
    t->data = data + begin;
    t->nbytes = (size_t)span;
    t->path = f->path;
    return FPTQ_OK;
}

static fptq_status check_duplicates_and_overlaps(st_file *f)
{
    for (size_t i = 1; i < f->count; i++)
        if (strcmp(f->by_name[i - 1]->name, f->by_name[i]->name) == 0)
            return FPTQ_FAIL(FPTQ_ERR_FORMAT, "%s: duplicate tensor name %s in header", f->path,
                             f->by_name[i]->name);

    if (f->count < 2)
        return FPTQ_OK;
    const st_tensor **by_off;
    FPTQ_TRY(fptq_calloc(f->count, sizeof *by_off, "tensor offset index", &by_off));
    for (size_t i = 0; i < f->count; i++)
        by_off[i] = &f->tensors[i];
    qsort(by_off, f->count, sizeof *by_off, cmp_tensor_offset);

    /* Empty tensors own no bytes, so they cannot overlap anything. Tracking
     * the farthest end so far catches a range nested inside an earlier one. */
    const unsigned char *base = f->data;
    const st_tensor *reach = NULL;
    fptq_status st = FPTQ_OK;
    for (size_t i = 0; i < f->count; i++) {
        const st_tensor *t = by_off[i];
        if (t->nbytes == 0)
            continue;
        if (reach && t->data < reach->data + reach->nbytes) {
            st = FPTQ_FAIL(FPTQ_ERR_FORMAT,
                           "%s: tensors %s (bytes [%zu, %zu)) and %s (bytes [%zu, %zu)) overlap",
                           f->path, reach->name, (size_t)(reach->data - base),
                           (size_t)(reach->data - base) + reach->nbytes, t->name,
                           (size_t)(t->data - base), (size_t)(t->data - base) + t->nbytes);
            break;
        }
        if (!reach || t->data + t->nbytes > reach->data + reach->nbytes)
            reach = t;
    }
    free(by_off);
    return st;
}

static fptq_status parse_header(st_file *f)
{
    const unsigned char *m = f->map;
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--)
        hlen = (hlen << 8) | m[i];
    uint64_t avail = (uint64_t)f->map_size - 8;
    if (hlen == 0)
        return FPTQ_FAIL(FPTQ_ERR_FORMAT, "%s: header length is 0", f->path);
    if (hlen > avail)
        return FPTQ_FAIL(FPTQ_ERR_FORMAT,
                         "%s: header length %llu is past the end of file (file size %zu bytes)",
                         f->path, (unsigned long long)hlen, f->map_size);
    if (hlen > ST_MAX_HEADER)
        return FPTQ_FAIL(FPTQ_ERR_FORMAT, "%s: header length %llu is absurd (limit %llu bytes)",
                         f->path, (unsigned long long)hlen, ST_MAX_HEADER);

    const char *hdr = (const char *)m + 8;
    const unsigned char *data = m + 8 + hlen;
    uint64_t data_size = avail - hlen;
    f->data = data;

    /* The header is not NUL-terminated: the data section follows it directly. */
    const char *stop = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(hdr, (size_t)hlen, &stop, 0);
    if (!root) {
        size_t at = stop && stop >= hdr ? (size_t)(stop - hdr) : 0;
        return FPTQ_FAIL(FPTQ_ERR_FORMAT, "%s: header is not valid JSON (error near byte %zu of %llu)",
                         f->path, at, (unsigned long long)hlen);
    }
    fptq_status st = FPTQ_OK;
    /* writers pad the header with spaces; anything else after the JSON is junk */
    for (const char *p = stop; p < hdr + hlen; p++) {
        if (*p != ' ' && *p != '\t' && *p != '\n' && *p != '\r') {
            st = FPTQ_FAIL(FPTQ_ERR_FORMAT,
                           "%s: header is not valid JSON (unexpected bytes after the JSON at byte %zu)",
                           f->path, (size_t)(p - hdr));
            goto out;
        }
    }
    if (!cJSON_IsObject(root)) {
        st = FPTQ_FAIL(FPTQ_ERR_FORMAT, "%s: header is not a JSON object", f->path);
        goto out;
    }
    /* two entries of one tensor name (or two dtypes of one entry): which one
     * counts depends on the reader */
    FPTQ_TRY_GOTO(json_check_unique_keys(root, f->path), st, out);

    size_t n = 0;
    const cJSON *it;
    cJSON_ArrayForEach(it, root) {
        if (strcmp(it->string, "__metadata__") != 0)
            n++;
    }
    FPTQ_TRY_GOTO(fptq_calloc(n, sizeof *f->tensors, "tensor table", &f->tensors), st, out);
    FPTQ_TRY_GOTO(fptq_calloc(n, sizeof *f->by_name, "tensor name index", &f->by_name), st, out);
    cJSON_ArrayForEach(it, root) {
        /* free-form string metadata; nothing fptq needs, so it is not checked */
        if (strcmp(it->string, "__metadata__") == 0)
            continue;
        FPTQ_TRY_GOTO(parse_entry(f, it, data, data_size, &f->tensors[f->count]), st, out);
        f->by_name[f->count] = &f->tensors[f->count];
        f->count++;
    }
    qsort(f->by_name, f->count, sizeof *f->by_name, cmp_tensor_name);
    FPTQ_TRY_GOTO(check_duplicates_and_overlaps(f), st, out);
out:
    cJSON_Delete(root);
    return st;
}

fptq_status st_file_open(const char *path, st_file **out)
{
    *out = NULL;
    st_file *f;
    FPTQ_TRY(fptq_calloc(1, sizeof *f, "safetensors file", &f));
    fptq_status st;
    FPTQ_TRY_GOTO(dup_str(path, "file path", &f->path), st, fail);
    FPTQ_TRY_GOTO(map_file(f), st, fail);
    FPTQ_TRY_GOTO(parse_header(f), st, fail);
    *out = f;
    return FPTQ_OK;
fail:
    st_file_close(f);
    return st;
}

void st_file_close(st_file *f)
{
    if (!f)
        return;
    if (f->map)
        munmap(f->map, f->map_size);
    if (f->tensors)
        for (size_t i = 0; i < f->count; i++)
            free(f->tensors[i].name);
    free(f->tensors);
    free(f->by_name);
    free(f->path);
    free(f);
}

size_t st_file_count(const st_file *f) { return f ? f->count : 0; }

const st_tensor *st_file_tensor(const st_file *f, size_t i)
{
    return f && i < f->count ? &f->tensors[i] : NULL;
}

const st_tensor *st_file_find(const st_file *f, const char *name)
{
    return f ? find_sorted(f->by_name, f->count, name) : NULL;
}

/* ---- model directory -------------------------------------------------------- */

typedef struct map_entry {
    const char *name;
    const char *shard;
} map_entry;

static int cmp_entry_name(const void *a, const void *b)
{
    return strcmp(((const map_entry *)a)->name, ((const map_entry *)b)->name);
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* Shard names come from a file we do not trust: only names inside dir. */
static int plain_file_name(const char *s)
{
    return s[0] != '\0' && strchr(s, '/') == NULL && strchr(s, '\\') == NULL &&
           strcmp(s, ".") != 0 && strcmp(s, "..") != 0;
}

static fptq_status add_file(st_model *m, const char *path)
{
    FPTQ_TRY(st_file_open(path, &m->files[m->nfiles]));
    m->nfiles++;
    return FPTQ_OK;
}

static fptq_status open_index(st_model *m, const char *index_path)
{
    char *text = NULL;
    size_t len = 0;
    cJSON *root = NULL;
    map_entry *entries = NULL;
    const char **shards = NULL;
    char *shard_path = NULL;
    fptq_status st = FPTQ_OK;

    /* a regular file (a FIFO would block) of at most the JSON cap, read whole */
    int64_t len64 = 0;
    FPTQ_TRY(fptq_read_file(index_path, "safetensors index", FPTQ_JSON_MAX_BYTES, 0, &text, &len64));
    len = (size_t)len64;
    const char *stop = NULL;
    root = cJSON_ParseWithLengthOpts(text, len, &stop, 0);
    if (!root) {
        st = FPTQ_FAIL(FPTQ_ERR_FORMAT, "%s: not valid JSON (error near byte %zu)", index_path,
                       stop && stop >= text ? (size_t)(stop - text) : (size_t)0);
        goto out;
    }
    FPTQ_TRY_GOTO(json_check_unique_keys(root, index_path), st, out);
    const cJSON *wm = cJSON_GetObjectItemCaseSensitive(root, "weight_map");
    if (!cJSON_IsObject(root) || !cJSON_IsObject(wm)) {
        st = FPTQ_FAIL(FPTQ_ERR_FORMAT, "%s: no \"weight_map\" object", index_path);
        goto out;
    }
    size_t n = (size_t)cJSON_GetArraySize(wm);
    if (n == 0) {
        st = FPTQ_FAIL(FPTQ_ERR_FORMAT, "%s: weight_map is empty", index_path);
        goto out;
    }
    FPTQ_TRY_GOTO(fptq_calloc(n, sizeof *entries, "index entries", &entries), st, out);
    FPTQ_TRY_GOTO(fptq_calloc(n, sizeof *shards, "shard list", &shards), st, out);
    size_t i = 0;
    const cJSON *it;
    cJSON_ArrayForEach(it, wm) {
        if (!cJSON_IsString(it)) {
            st = FPTQ_FAIL(FPTQ_ERR_FORMAT, "%s: weight_map entry for tensor %s is not a string",
                           index_path, it->string);
            goto out;
        }
        if (!plain_file_name(it->valuestring)) {
            st = FPTQ_FAIL(FPTQ_ERR_FORMAT,
                           "%s: shard \"%.200s\" of tensor %s must be a plain file name in the "
                           "model directory",
                           index_path, it->valuestring, it->string);
            goto out;
        }
        entries[i].name = it->string;
        entries[i].shard = it->valuestring;
        shards[i] = it->valuestring;
        i++;
    }
    qsort(entries, n, sizeof *entries, cmp_entry_name);
    for (i = 1; i < n; i++)
        if (strcmp(entries[i - 1].name, entries[i].name) == 0) {
            st = FPTQ_FAIL(FPTQ_ERR_FORMAT, "%s: duplicate tensor %s in weight_map", index_path,
                           entries[i].name);
            goto out;
        }

    qsort(shards, n, sizeof *shards, cmp_str);
    size_t nshards = 0;
    for (i = 0; i < n; i++)
        if (nshards == 0 || strcmp(shards[nshards - 1], shards[i]) != 0)
            shards[nshards++] = shards[i];
    FPTQ_TRY_GOTO(fptq_calloc(nshards, sizeof *m->files, "shard table", &m->files), st, out);
    for (i = 0; i < nshards; i++) {
        FPTQ_TRY_GOTO(join_path(m->dir, shards[i], &shard_path), st, out);
        struct stat sb;
        if (stat(shard_path, &sb) != 0 && errno == ENOENT) {
            st = FPTQ_FAIL(FPTQ_ERR_IO, "shard %s named in %s is missing (no file %s)", shards[i],
                           index_path, shard_path);
            goto out;
        }
        FPTQ_TRY_GOTO(add_file(m, shard_path), st, out);
        free(shard_path);
        shard_path = NULL;
    }

    /* shards[] and m->files[] are in the same (sorted) order */
    for (i = 0; i < n; i++) {
        const char **hit = bsearch(&entries[i].shard, shards, nshards, sizeof *shards, cmp_str);
        if (!hit) {
            st = FPTQ_FAIL(FPTQ_ERR_INTERNAL, "%s: shard %s of tensor %s not in the shard list",
                           index_path, entries[i].shard, entries[i].name);
            goto out;
        }
        st_file *f = m->files[hit - shards];
        if (!st_file_find(f, entries[i].name)) {
            st = FPTQ_FAIL(FPTQ_ERR_FORMAT, "tensor %s listed in index %s but missing from shard %s",
                           entries[i].name, index_path, f->path);
            goto out;
        }
    }
out:
    free(shard_path);
    free(shards);
    free(entries);
    cJSON_Delete(root);
    free(text);
    return st;
}

/* One sorted table over all shards, so lookups do not depend on the index
 * and a tensor stored twice is caught even if the index names only one copy. */
static fptq_status build_model_index(st_model *m)
{
    size_t total = 0;
    for (size_t i = 0; i < m->nfiles; i++)
        total += m->files[i]->count;
    FPTQ_TRY(fptq_calloc(total, sizeof *m->by_name, "model tensor index", &m->by_name));
    for (size_t i = 0; i < m->nfiles; i++)
        for (size_t j = 0; j < m->files[i]->count; j++)
            m->by_name[m->count++] = &m->files[i]->tensors[j];
    qsort(m->by_name, m->count, sizeof *m->by_name, cmp_tensor_name);
    for (size_t i = 1; i < m->count; i++) {
        const st_tensor *a = m->by_name[i - 1], *b = m->by_name[i];
        if (strcmp(a->name, b->name) == 0)
            return FPTQ_FAIL(FPTQ_ERR_FORMAT, "model %s: duplicate tensor %s, in both %s and %s",
                             m->dir, a->name, a->path, b->path);
    }
    return FPTQ_OK;
}

fptq_status st_model_open(const char *dir, st_model **out)
{
    *out = NULL;
    st_model *m;
    char *index_path = NULL, *single_path = NULL;
    FPTQ_TRY(fptq_calloc(1, sizeof *m, "model", &m));
    fptq_status st;
    FPTQ_TRY_GOTO(dup_str(dir, "model directory", &m->dir), st, fail);
    FPTQ_TRY_GOTO(join_path(dir, INDEX_NAME, &index_path), st, fail);
    FPTQ_TRY_GOTO(join_path(dir, SINGLE_NAME, &single_path), st, fail);

    struct stat sb;
    if (stat(dir, &sb) != 0) {
        st = FPTQ_FAIL(FPTQ_ERR_IO, "model directory %s: %s", dir, strerror(errno));
        goto fail;
    }
    if (!S_ISDIR(sb.st_mode)) {
        st = FPTQ_FAIL(FPTQ_ERR_IO, "model directory %s is not a directory", dir);
        goto fail;
    }
    if (stat(index_path, &sb) == 0) {
        FPTQ_TRY_GOTO(open_index(m, index_path), st, fail);
    } else if (errno != ENOENT) {
        st = FPTQ_FAIL(FPTQ_ERR_IO, "cannot stat %s: %s", index_path, strerror(errno));
        goto fail;
    } else if (stat(single_path, &sb) == 0 || errno != ENOENT) {
        FPTQ_TRY_GOTO(fptq_calloc(1, sizeof *m->files, "shard table", &m->files), st, fail);
        FPTQ_TRY_GOTO(add_file(m, single_path), st, fail);
    } else {
        st = FPTQ_FAIL(FPTQ_ERR_IO, "model directory %s has neither %s nor %s", dir, INDEX_NAME,
                       SINGLE_NAME);
        goto fail;
    }
    FPTQ_TRY_GOTO(build_model_index(m), st, fail);
    free(index_path);
    free(single_path);
    *out = m;
    return FPTQ_OK;
fail:
    free(index_path);
    free(single_path);
    st_model_close(m);
    return st;
}

void st_model_close(st_model *m)
{
    if (!m)
        return;
    for (size_t i = 0; i < m->nfiles; i++)
        st_file_close(m->files[i]);
    free(m->files);
    free(m->by_name);
    free(m->dir);
    free(m);
}

const char *st_model_dir(const st_model *m) { return m ? m->dir : ""; }

const st_tensor *st_model_find(const st_model *m, const char *name)
{
    return m ? find_sorted(m->by_name, m->count, name) : NULL;
}

size_t st_model_count(const st_model *m) { return m ? m->count : 0; }

const st_tensor *st_model_tensor(const st_model *m, size_t i)
{
    return m && i < m->count ? m->by_name[i] : NULL;
}

fptq_status st_model_get(const st_model *m, const char *name, const st_tensor **out)
{
    *out = st_model_find(m, name);
    if (!*out)
        return FPTQ_FAIL(FPTQ_ERR_FORMAT, "tensor %s missing from model %s", name ? name : "(null)",
                         st_model_dir(m));
    return FPTQ_OK;
}

/* ---- conversion -------------------------------------------------------------- */

/* Converts n elements starting at element `first` of t. */
static fptq_status convert(const st_tensor *t, size_t first, size_t n, float *dst)
{
    const unsigned char *p = t->data;
    switch (t->dtype) {
    case ST_F32:
        /* safetensors is little-endian, as are the hosts fptq runs on; the
         * source may be unaligned, which memcpy tolerates */
        if (n)
            memcpy(dst, p + 4 * first, n * sizeof *dst);
        return FPTQ_OK;
    case ST_F16:
        p += 2 * first;
        for (size_t i = 0; i < n; i++)
            dst[i] = st_f16_to_f32((uint16_t)(p[2 * i] | (p[2 * i + 1] << 8)));
        return FPTQ_OK;
    case ST_BF16:
        p += 2 * first;
        for (size_t i = 0; i < n; i++)
            dst[i] = st_bf16_to_f32((uint16_t)(p[2 * i] | (p[2 * i + 1] << 8)));
        return FPTQ_OK;
    default:
        return FPTQ_FAIL(FPTQ_ERR_UNSUPPORTED,
                         "tensor %s in %s: dtype %s cannot be read as fp32 (supported: F32, F16, BF16)",
                         t->name, t->path, st_dtype_name(t->dtype));
    }
}

fptq_status st_tensor_to_f32(const st_tensor *t, float *dst, int64_t dst_numel)
{
    if (t->numel != dst_numel)
        return FPTQ_FAIL(FPTQ_ERR_FORMAT,
                         "tensor %s in %s: has %lld elements, the destination holds %lld", t->name,
                         t->path, (long long)t->numel, (long long)dst_numel);
    FPTQ_TRY(convert(t, 0, (size_t)t->numel, dst));
    return FPTQ_OK;
}

fptq_status st_tensor_rows_to_f32(const st_tensor *t, int64_t row0, int64_t nrows, float *dst)
{
    if (t->ndim < 1)
        return FPTQ_FAIL(FPTQ_ERR_FORMAT, "tensor %s in %s: a scalar has no rows", t->name,
                         t->path);
    const int64_t total = t->shape[0];
    if (row0 < 0 || nrows < 0 || row0 > total || nrows > total - row0)
        return FPTQ_FAIL(FPTQ_ERR_ARG,
                         "tensor %s in %s: rows [%lld, %lld) out of range, it has %lld rows",
                         t->name, t->path, (long long)row0, (long long)row0 + (long long)nrows,
                         (long long)total);
    /* total == 0 means numel == 0, and then nrows == 0 too */
    const int64_t row_len = total ? t->numel / total : 0;
    FPTQ_TRY(convert(t, (size_t)(row0 * row_len), (size_t)(nrows * row_len), dst));
    return FPTQ_OK;
}

fptq_status st_model_read_f32(const st_model *m, const char *name, int ndim,
                              const int64_t *shape, float *dst)
{
    const st_tensor *t;
    FPTQ_TRY(st_model_get(m, name, &t));
    int same = t->ndim == ndim;
    for (int i = 0; same && i < ndim; i++)
        same = t->shape[i] == shape[i];
    if (!same) {
        char have[SHAPE_STR_CAP], want[SHAPE_STR_CAP];
        format_shape(have, sizeof have, t->ndim, t->shape);
        format_shape(want, sizeof want, ndim > ST_MAX_DIMS ? ST_MAX_DIMS : ndim, shape);
        return FPTQ_FAIL(FPTQ_ERR_FORMAT, "tensor %s in %s: shape %s, expected %s", name, t->path,
                         have, want);
    }
    FPTQ_TRY(st_tensor_to_f32(t, dst, t->numel));
    return FPTQ_OK;
}
