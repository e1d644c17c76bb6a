/*
 * Writers of handcrafted bad inputs. Small safetensors files are written from
 * literal headers; the load-time cases patch a copy of the good model so that
 * everything but the one defect is real.
 */
#define _POSIX_C_SOURCE 200809L
#include "badfiles.h"

#include "../common/fileio.h"

#include <cjson/cJSON.h>
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

#define PATH_CAP 4096
#define SHARD1 "model-00001-of-00002.safetensors"
#define SHARD2 "model-00002-of-00002.safetensors"

/* ---- file helpers -------------------------------------------------------------- */

static fptq_status make_path(char *buf, const char *dir, const char *name)
{
    int n = snprintf(buf, PATH_CAP, "%s/%s", dir, name);
    if (n < 0 || n >= PATH_CAP)
        return FPTQ_FAIL(FPTQ_ERR_ARG, "path %s/%s is too long", dir, name);
    return FPTQ_OK;
}

static fptq_status write_file(const char *path, const void *data, size_t n)
{
    FILE *fp = fopen(path, "wb");
    if (!fp)
        return FPTQ_FAIL(FPTQ_ERR_IO, "cannot create %s: %s", path, strerror(errno));
    int ok = fwrite(data, 1, n, fp) == n;
    ok = (fclose(fp) == 0) && ok;
    if (!ok)
        return FPTQ_FAIL(FPTQ_ERR_IO, "cannot write %s: %s", path, strerror(errno));
    return FPTQ_OK;
}

static fptq_status write_in(const char *dir, const char *name, const void *data, size_t n)
{
    char path[PATH_CAP];
    FPTQ_TRY(make_path(path, dir, name));
    FPTQ_TRY(write_file(path, data, n));
    return FPTQ_OK;
}

/* Reads a whole file and NUL-terminates it, so JSON text can be parsed as is. */
static fptq_status read_file(const char *path, unsigned char **buf, size_t *n)
{
    *buf = NULL;
    FILE *fp = fopen(path, "rb");
    if (!fp)
        return FPTQ_FAIL(FPTQ_ERR_IO, "cannot open %s: %s", path, strerror(errno));
    fptq_status st = FPTQ_OK;
    long len = -1;
    if (fseek(fp, 0, SEEK_END) == 0)
        len = ftell(fp);
    if (len < 0 || fseek(fp, 0, SEEK_SET) != 0) {
        st = FPTQ_FAIL(FPTQ_ERR_IO, "cannot size %s: %s", path, strerror(errno));
        goto out;
    }
    FPTQ_TRY_GOTO(fptq_calloc((size_t)len + 1, 1, path, buf), st, out);
    if (fread(*buf, 1, (size_t)len, fp) != (size_t)len) {
        st = FPTQ_FAIL(FPTQ_ERR_IO, "cannot read %s", path);
        free(*buf);
        *buf = NULL;
        goto out;
    }
    *n = (size_t)len;
out:
    fclose(fp);
    return st;
}

static fptq_status copy_in(const char *src_dir, const char *dst_dir, const char *name)
{
    char src[PATH_CAP];
    unsigned char *buf;
    size_t n;
    FPTQ_TRY(make_path(src, src_dir, name));
    FPTQ_TRY(read_file(src, &buf, &n));
    fptq_status st = write_in(dst_dir, name, buf, n);
    free(buf);
    return st;
}

static fptq_status copy_config(const char *good, const char *dir)
{
    FPTQ_TRY(copy_in(good, dir, "config.json"));
    return FPTQ_OK;
}

/* u64 header length + header + data_len bytes of filler. */
static fptq_status write_st(const char *dir, const char *name, const char *header, size_t data_len)
{
    size_t hlen = strlen(header);
    unsigned char *buf;
    FPTQ_TRY(fptq_calloc(8 + hlen + data_len, 1, "safetensors image", &buf));
    for (int i = 0; i < 8; i++)
        buf[i] = (unsigned char)((uint64_t)hlen >> (8 * i));
    memcpy(buf + 8, header, hlen);
    for (size_t i = 0; i < data_len; i++)
        buf[8 + hlen + i] = (unsigned char)(0x3c + (i % 7));
    fptq_status st = write_in(dir, name, buf, 8 + hlen + data_len);
    free(buf);
    return st;
}

static fptq_status crafted_model(const char *good, const char *dir, const char *header,
                                 size_t data_len)
{
    FPTQ_TRY(copy_config(good, dir));
    FPTQ_TRY(write_st(dir, "model.safetensors", header, data_len));
    return FPTQ_OK;
}

static fptq_status raw_model(const char *good, const char *dir, const void *bytes, size_t n)
{
    FPTQ_TRY(copy_config(good, dir));
    FPTQ_TRY(write_in(dir, "model.safetensors", bytes, n));
    return FPTQ_OK;
}

static fptq_status write_json(const char *dir, const char *name, const cJSON *root)
{
    char *text = cJSON_Print(root);
    if (!text)
        return FPTQ_FAIL(FPTQ_ERR_NOMEM, "cannot print %s/%s", dir, name);
    fptq_status st = write_in(dir, name, text, strlen(text));
    cJSON_free(text);
    return st;
}

/* ---- patched copies of the good model --------------------------------------- */

typedef fptq_status (*header_patch)(cJSON *header, const char *path);

/* Copies good/model.safetensors to dir after patch() edits its header; the
 * data section is repacked to match, so the copy is a valid file unless the
 * patch made it otherwise. The good file is trusted only as far as it is checked. */
static fptq_status patched_model(const char *good, const char *dir, header_patch patch)
{
    char src[PATH_CAP];
    unsigned char *in = NULL, *outbuf = NULL;
    size_t in_len = 0;
    cJSON *root = NULL;
    char *text = NULL;
    uint64_t *from = NULL, *len = NULL;
    fptq_status st = FPTQ_OK;

    FPTQ_TRY(copy_config(good, dir));
    FPTQ_TRY(make_path(src, good, "model.safetensors"));
    FPTQ_TRY(read_file(src, &in, &in_len));
    uint64_t hlen = 0;
    for (int i = 7; in_len >= 8 && i >= 0; i--)
        hlen = (hlen << 8) | in[i];
    if (in_len < 8 || hlen > in_len - 8) {
        st = FPTQ_FAIL(FPTQ_ERR_FORMAT, "%s: not a safetensors file", src);
        goto out;
    }
    root = cJSON_ParseWithLength((const char *)in + 8, (size_t)hlen);
    if (!cJSON_IsObject(root)) {
        st = FPTQ_FAIL(FPTQ_ERR_FORMAT, "%s: header is not a JSON object", src);
        goto out;
    }
    FPTQ_TRY_GOTO(patch(root, src), st, out);

    size_t n = (size_t)cJSON_GetArraySize(root), k = 0;
    FPTQ_TRY_GOTO(fptq_calloc(n, sizeof *from, "offsets", &from), st, out);
    FPTQ_TRY_GOTO(fptq_calloc(n, sizeof *len, "lengths", &len), st, out);
    uint64_t data_size = in_len - 8 - hlen, pos = 0;
    cJSON *e;
    cJSON_ArrayForEach(e, root) {
        if (strcmp(e->string, "__metadata__") == 0)
            continue;
        cJSON *off = cJSON_GetObjectItemCaseSensitive(e, "data_offsets");
        cJSON *b = cJSON_GetArrayItem(off, 0), *x = cJSON_GetArrayItem(off, 1);
        if (!cJSON_IsNumber(b) || !cJSON_IsNumber(x) || b->valuedouble < 0 ||
            x->valuedouble < b->valuedouble || x->valuedouble > (double)data_size) {
            st = FPTQ_FAIL(FPTQ_ERR_FORMAT, "%s: bad data_offsets for %s", src, e->string);
            goto out;
        }
        from[k] = (uint64_t)b->valuedouble;
        len[k] = (uint64_t)x->valuedouble - from[k];
        cJSON *noff = cJSON_CreateArray();
        cJSON_AddItemToArray(noff, cJSON_CreateNumber((double)pos));
        cJSON_AddItemToArray(noff, cJSON_CreateNumber((double)(pos + len[k])));
        cJSON_ReplaceItemInObjectCaseSensitive(e, "data_offsets", noff);
        pos += len[k];
        k++;
    }
    text = cJSON_PrintUnformatted(root);
    if (!text) {
        st = FPTQ_FAIL(FPTQ_ERR_NOMEM, "cannot print the patched header of %s", src);
        goto out;
    }
    /* pad the header with spaces to 8 bytes, as the reference writer does */
    size_t tl = strlen(text), padded = (tl + 7) / 8 * 8;
    FPTQ_TRY_GOTO(fptq_calloc(8 + padded + pos, 1, "patched model", &outbuf), st, out);
    for (int i = 0; i < 8; i++)
        outbuf[i] = (unsigned char)((uint64_t)padded >> (8 * i));
    memcpy(outbuf + 8, text, tl);
    memset(outbuf + 8 + tl, ' ', padded - tl);
    unsigned char *dst = outbuf + 8 + padded;
    for (size_t i = 0; i < k; i++) {
        memcpy(dst, in + 8 + hlen + from[i], len[i]);
        dst += len[i];
    }
    FPTQ_TRY_GOTO(write_in(dir, "model.safetensors", outbuf, 8 + padded + pos), st, out);
out:
    free(outbuf);
    cJSON_free(text);
    free(len);
    free(from);
    cJSON_Delete(root);
    free(in);
    return st;
}

#define UP_PROJ "model.layers.0.mlp.up_proj.weight"

static fptq_status drop_up_proj(cJSON *h, const char *path)
{
    if (!cJSON_GetObjectItemCaseSensitive(h, UP_PROJ))
        return FPTQ_FAIL(FPTQ_ERR_FORMAT, "%s: has no %s to remove", path, UP_PROJ);
    cJSON_DeleteItemFromObjectCaseSensitive(h, UP_PROJ);
    return FPTQ_OK;
}

/* Same element count, so the file itself stays valid: only the config check catches it. */
static fptq_status reshape_up_proj(cJSON *h, const char *path)
{
    cJSON *t = cJSON_GetObjectItemCaseSensitive(h, UP_PROJ);
    cJSON *s = cJSON_GetObjectItemCaseSensitive(t, "shape");
    cJSON *d0 = cJSON_GetArrayItem(s, 0), *d1 = cJSON_GetArrayItem(s, 1);
    if (!cJSON_IsNumber(d0) || !cJSON_IsNumber(d1) || ((int64_t)d0->valuedouble % 2) != 0)
        return FPTQ_FAIL(FPTQ_ERR_FORMAT, "%s: %s has no even 2-D shape to change", path, UP_PROJ);
    const int dims[2] = {(int)d0->valuedouble / 2, (int)d1->valuedouble * 2};
    cJSON_ReplaceItemInObjectCaseSensitive(t, "shape", cJSON_CreateIntArray(dims, 2));
    return FPTQ_OK;
}

static fptq_status w_missing_tensor(const char *good, const char *dir)
{
    return patched_model(good, dir, drop_up_proj);
}

static fptq_status w_wrong_shape(const char *good, const char *dir)
{
    return patched_model(good, dir, reshape_up_proj);
}

/* ---- crafted single files -------------------------------------------------------- */

static fptq_status w_truncated(const char *good, const char *dir)
{
    static const unsigned char bytes[5] = {0x40, 0, 0, 0, 0};
    return raw_model(good, dir, bytes, sizeof bytes);
}

static fptq_status w_header_zero_length(const char *good, const char *dir)
{
    static const unsigned char bytes[16] = {0};
    return raw_model(good, dir, bytes, sizeof bytes);
}

static fptq_status w_header_past_end(const char *good, const char *dir)
{
    static const char hdr[] = "{\"w\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]}}";
    unsigned char bytes[8 + sizeof hdr + 16] = {0x40, 0x42, 0x0f, 0, 0, 0, 0, 0}; /* 1000000 */
    memcpy(bytes + 8, hdr, sizeof hdr - 1);
    return raw_model(good, dir, bytes, sizeof bytes);
}

#define ENTRY(name, dtype, shape, offs) \
    "\"" name "\":{\"dtype\":" dtype ",\"shape\":" shape ",\"data_offsets\":" offs "}"

#define HEADER_CASE(fn, header, data_len)                        \
    static fptq_status fn(const char *good, const char *dir)     \
    {                                                            \
        return crafted_model(good, dir, header, data_len);       \
    }

HEADER_CASE(w_header_not_json,
            "{\"w\":{\"dtype\":\"F32\",\"shape\":[4,4],\"data_offsets\":[0,64]", 64)
HEADER_CASE(w_header_not_object, "[1, 2, 3]", 64)
HEADER_CASE(w_entry_not_object, "{\"w\":[0, 64]}", 64)
HEADER_CASE(w_missing_offsets, "{\"w\":{\"dtype\":\"F32\",\"shape\":[4,4]}}", 64)
HEADER_CASE(w_dtype_not_string, "{" ENTRY("w", "32", "[4,4]", "[0,64]") "}", 64)
HEADER_CASE(w_unknown_dtype, "{" ENTRY("w", "\"F33\"", "[4,4]", "[0,64]") "}", 64)
HEADER_CASE(w_shape_negative, "{" ENTRY("w", "\"F32\"", "[-1,4]", "[0,64]") "}", 64)
HEADER_CASE(w_shape_fraction, "{" ENTRY("w", "\"F32\"", "[2.5,4]", "[0,40]") "}", 64)
HEADER_CASE(w_shape_string, "{" ENTRY("w", "\"F32\"", "[\"4\",4]", "[0,64]") "}", 64)
HEADER_CASE(w_shape_too_many_dims,
            "{" ENTRY("w", "\"F32\"", "[1,1,1,1,1,1,1,1,1]", "[0,4]") "}", 64)
HEADER_CASE(w_shape_overflow,
            "{" ENTRY("w", "\"F32\"", "[4294967296,4294967296,4294967296]", "[0,64]") "}", 64)
HEADER_CASE(w_offsets_out_of_range,
            "{" ENTRY("w", "\"F32\"", "[250]", "[0,1000]") "}", 64)
HEADER_CASE(w_offsets_reversed, "{" ENTRY("w", "\"F32\"", "[0]", "[64,0]") "}", 64)
HEADER_CASE(w_offsets_negative, "{" ENTRY("w", "\"F32\"", "[4,4]", "[-64,0]") "}", 64)
HEADER_CASE(w_size_mismatch, "{" ENTRY("w", "\"F32\"", "[4,4]", "[0,60]") "}", 64)
HEADER_CASE(w_overlap,
            "{" ENTRY("a.weight", "\"F32\"", "[4,4]", "[0,64]") ","
                ENTRY("b.weight", "\"F32\"", "[4,4]", "[32,96]") "}", 96)
HEADER_CASE(w_duplicate_name,
            "{" ENTRY("w", "\"F32\"", "[4,4]", "[0,64]") ","
                ENTRY("w", "\"F32\"", "[4,4]", "[64,128]") "}", 128)

/* the second "dtype" is the one Python's json would keep */
HEADER_CASE(w_header_duplicate_key,
            "{\"w\":{\"dtype\":\"F32\",\"dtype\":\"F16\",\"shape\":[4,4],\"data_offsets\":[0,64]}}", 64)

static fptq_status w_no_weights(const char *good, const char *dir)
{
    return copy_config(good, dir);
}

/* ---- sharded models ------------------------------------------------------------ */

#define SMALL_A "{" ENTRY("a", "\"F32\"", "[4,4]", "[0,64]") "}"
#define SMALL_AB \
    "{" ENTRY("a", "\"F32\"", "[4,4]", "[0,64]") "," ENTRY("b", "\"F32\"", "[4]", "[64,80]") "}"
#define SMALL_B "{" ENTRY("b", "\"F32\"", "[4]", "[0,16]") "}"

static fptq_status sharded(const char *good, const char *dir, const char *index, const char *s1,
                           size_t n1, const char *s2, size_t n2)
{
    FPTQ_TRY(copy_config(good, dir));
    FPTQ_TRY(write_in(dir, "model.safetensors.index.json", index, strlen(index)));
    if (s1)
        FPTQ_TRY(write_st(dir, SHARD1, s1, n1));
    if (s2)
        FPTQ_TRY(write_st(dir, SHARD2, s2, n2));
    return FPTQ_OK;
}

static fptq_status w_index_missing_shard(const char *good, const char *dir)
{
    return sharded(good, dir,
                   "{\"weight_map\": {\"a\": \"" SHARD1 "\", \"b\": \"" SHARD2 "\"}}",
                   SMALL_A, 64, NULL, 0);
}

static fptq_status w_index_tensor_absent(const char *good, const char *dir)
{
    return sharded(good, dir,
                   "{\"weight_map\": {\"a\": \"" SHARD1 "\", \"b\": \"" SHARD1 "\"}}",
                   SMALL_A, 64, SMALL_B, 16);
}

static fptq_status w_index_bad_shard_name(const char *good, const char *dir)
{
    return sharded(good, dir,
                   "{\"weight_map\": {\"a\": \"" SHARD1 "\", \"b\": \"../stories260K/model.safetensors\"}}",
                   SMALL_A, 64, NULL, 0);
}

static fptq_status w_index_duplicate_tensor(const char *good, const char *dir)
{
    return sharded(good, dir,
                   "{\"weight_map\": {\"a\": \"" SHARD1 "\", \"b\": \"" SHARD2 "\"}}",
                   SMALL_A, 64, SMALL_AB, 80);
}

static fptq_status w_index_not_json(const char *good, const char *dir)
{
    return sharded(good, dir, "{\"weight_map\": {\"a\": \"" SHARD1 "\",", SMALL_A, 64, NULL, 0);
}

/* fptq read the first weight_map, Python's json the second */
static fptq_status w_index_duplicate_key(const char *good, const char *dir)
{
    return sharded(good, dir,
                   "{\"weight_map\": {\"a\": \"" SHARD1 "\"}, \"weight_map\": {\"a\": \"" SHARD1 "\", \"b\": \""
                   SHARD2 "\"}}",
                   SMALL_A, 64, NULL, 0);
}

/* A sparse index one byte over the JSON cap: refused by its size, before
 * anything is read (a 2 GB one once took 2.3 GB of memory to refuse). */
static fptq_status w_index_too_big(const char *good, const char *dir)
{
    FPTQ_TRY(sharded(good, dir, "{}", SMALL_A, 64, NULL, 0));
    char path[PATH_CAP];
    FPTQ_TRY(make_path(path, dir, "model.safetensors.index.json"));
    if (truncate(path, (off_t)(FPTQ_JSON_MAX_BYTES + 1)) != 0)
        return FPTQ_FAIL(FPTQ_ERR_IO, "cannot extend %s: %s", path, strerror(errno));
    return FPTQ_OK;
}

/* ---- tokens and config ------------------------------------------------------------ */

/* .npy v1.0 of little-endian int32, header padded so the data is 64-byte aligned. */
static fptq_status write_npy_i32(const char *path, const int32_t *ids, size_t n)
{
    char dict[128];
    int dl = snprintf(dict, sizeof dict, "{'descr': '<i4', 'fortran_order': False, 'shape': (%zu,), }",
                      n);
    size_t hlen = (10 + (size_t)dl + 1 + 63) / 64 * 64 - 10;  /* dict + spaces + '\n' */
    size_t total = 10 + hlen + 4 * n;
    unsigned char *buf;
    FPTQ_TRY(fptq_calloc(total, 1, "npy image", &buf));
    memcpy(buf, "\x93NUMPY\x01\x00", 8);
    buf[8] = (unsigned char)(hlen & 0xff);
    buf[9] = (unsigned char)(hlen >> 8);
    memcpy(buf + 10, dict, (size_t)dl);
    memset(buf + 10 + dl, ' ', hlen - (size_t)dl - 1);
    buf[10 + hlen - 1] = '\n';
    for (size_t i = 0; i < n; i++)
        for (int b = 0; b < 4; b++)
            buf[10 + hlen + 4 * i + (size_t)b] = (unsigned char)((uint32_t)ids[i] >> (8 * b));
    fptq_status st = write_file(path, buf, total);
    free(buf);
    return st;
}

static fptq_status w_tokens_out_of_vocab(const char *good, const char *dir)
{
    (void)good;
    int32_t ids[64];
    for (int i = 0; i < 64; i++)
        ids[i] = 1 + (i * 37) % 500;
    ids[9] = 600;   /* the stories260K vocabulary has 512 entries */
    char path[PATH_CAP];
    FPTQ_TRY(make_path(path, dir, BADFILE_TOKENS_NAME));
    FPTQ_TRY(write_npy_i32(path, ids, 64));
    return FPTQ_OK;
}

static fptq_status w_config_gpt2(const char *good, const char *dir)
{
    char src[PATH_CAP];
    unsigned char *text;
    size_t n;
    FPTQ_TRY(make_path(src, good, "config.json"));
    FPTQ_TRY(read_file(src, &text, &n));
    cJSON *root = cJSON_ParseWithLength((const char *)text, n);
    free(text);
    if (!cJSON_IsObject(root)) {
        cJSON_Delete(root);
        return FPTQ_FAIL(FPTQ_ERR_FORMAT, "%s: not a JSON object", src);
    }
    const char *arch[1] = {"GPT2LMHeadModel"};
    cJSON_DeleteItemFromObjectCaseSensitive(root, "model_type");
    cJSON_DeleteItemFromObjectCaseSensitive(root, "architectures");
    cJSON_AddStringToObject(root, "model_type", "gpt2");
    cJSON_AddItemToObject(root, "architectures", cJSON_CreateStringArray(arch, 1));
    fptq_status st = write_json(dir, "config.json", root);
    cJSON_Delete(root);
    FPTQ_TRY(st);
    /* real weights, so nothing but the architecture is wrong */
    FPTQ_TRY(copy_in(good, dir, "model.safetensors"));
    return FPTQ_OK;
}

/* The good config.json with `edits` (a JSON object) applied, and the real weights. */
static fptq_status edited_config(const char *good, const char *dir, const char *edits)
{
    char src[PATH_CAP];
    unsigned char *text;
    size_t n;
    FPTQ_TRY(make_path(src, good, "config.json"));
    FPTQ_TRY(read_file(src, &text, &n));
    cJSON *root = cJSON_ParseWithLength((const char *)text, n);
    free(text);
    cJSON *ed = cJSON_Parse(edits);
    fptq_status st = FPTQ_OK;
    if (!cJSON_IsObject(root) || !cJSON_IsObject(ed)) {
        st = FPTQ_FAIL(FPTQ_ERR_FORMAT, "%s or the edits %s: not a JSON object", src, edits);
        goto out;
    }
    for (cJSON *it = ed->child; it; it = it->next)
        cJSON_ReplaceItemInObjectCaseSensitive(root, it->string, cJSON_Duplicate(it, 1));
    FPTQ_TRY_GOTO(write_json(dir, "config.json", root), st, out);
    FPTQ_TRY_GOTO(copy_in(good, dir, "model.safetensors"), st, out);
out:
    cJSON_Delete(ed);
    cJSON_Delete(root);
    return st;
}

/* heads x head_dim = 406961350020066 x 90656 wraps modulo 2^64 to a small
 * number: it passed every check and crashed eval and quantize (SIGSEGV) */
static fptq_status w_config_heads_wrap(const char *good, const char *dir)
{
    return edited_config(good, dir,
                         "{\"num_attention_heads\": 406961350020066, \"num_key_value_heads\": 203480675010033,"
                         " \"head_dim\": 90656}");
}

/* one more than the checkpoint holds */
static fptq_status w_config_too_many_layers(const char *good, const char *dir)
{
    return edited_config(good, dir, "{\"num_hidden_layers\": 65537}");
}

/* the real config with a second num_hidden_layers at the end: fptq kept the
 * first (5) and ran; transformers would build a 3-layer model */
static fptq_status w_config_duplicate_key(const char *good, const char *dir)
{
    char src[PATH_CAP];
    unsigned char *text;
    size_t n;
    FPTQ_TRY(make_path(src, good, "config.json"));
    FPTQ_TRY(read_file(src, &text, &n));
    while (n > 0 && text[n - 1] != '}')
        n--;
    if (n == 0) {
        free(text);
        return FPTQ_FAIL(FPTQ_ERR_FORMAT, "%s: no closing brace", src);
    }
    static const char tail[] = ",\n  \"num_hidden_layers\": 3\n}\n";
    unsigned char *out;
    fptq_status st = fptq_calloc(n + sizeof tail, 1, "config text", &out);
    if (st == FPTQ_OK) {
        memcpy(out, text, n - 1);
        memcpy(out + n - 1, tail, sizeof tail - 1);
        st = write_in(dir, "config.json", out, n - 1 + sizeof tail - 1);
        free(out);
    }
    free(text);
    FPTQ_TRY(st);
    FPTQ_TRY(copy_in(good, dir, "model.safetensors"));
    return FPTQ_OK;
}

/* The good model with one row of the (tied) embedding set to NaN, as a
 * damaged checkpoint would have: every logit row then holds a NaN. */
static fptq_status w_nan_embedding(const char *good, const char *dir)
{
    char src[PATH_CAP];
    unsigned char *in = NULL;
    size_t n = 0;
    cJSON *root = NULL;
    fptq_status st = FPTQ_OK;
    FPTQ_TRY(copy_config(good, dir));
    FPTQ_TRY(make_path(src, good, "model.safetensors"));
    FPTQ_TRY(read_file(src, &in, &n));
    uint64_t hlen = 0;
    for (int i = 7; n >= 8 && i >= 0; i--)
        hlen = (hlen << 8) | in[i];
    if (n < 8 || hlen > n - 8) {
        st = FPTQ_FAIL(FPTQ_ERR_FORMAT, "%s: not a safetensors file", src);
        goto out;
    }
    root = cJSON_ParseWithLength((const char *)in + 8, (size_t)hlen);
    const cJSON *e = cJSON_GetObjectItemCaseSensitive(root, "model.embed_tokens.weight");
    const cJSON *dt = cJSON_GetObjectItemCaseSensitive(e, "dtype");
    const cJSON *shape = cJSON_GetObjectItemCaseSensitive(e, "shape");
    const cJSON *off = cJSON_GetObjectItemCaseSensitive(e, "data_offsets");
    if (!cJSON_IsString(dt) || strcmp(dt->valuestring, "F32") != 0 || cJSON_GetArraySize(shape) != 2 ||
        cJSON_GetArraySize(off) != 2) {
        st = FPTQ_FAIL(FPTQ_ERR_FORMAT, "%s: expected an F32 [vocab, hidden] model.embed_tokens.weight", src);
        goto out;
    }
    const uint64_t rows = (uint64_t)cJSON_GetArrayItem(shape, 0)->valuedouble;
    const uint64_t hidden = (uint64_t)cJSON_GetArrayItem(shape, 1)->valuedouble;
    const uint64_t begin = (uint64_t)cJSON_GetArrayItem(off, 0)->valuedouble;
    const uint64_t row = 7;
    if (rows <= row || begin + (row + 1) * hidden * 4 > n - 8 - hlen) {
        st = FPTQ_FAIL(FPTQ_ERR_FORMAT, "%s: model.embed_tokens.weight is too small", src);
        goto out;
    }
    unsigned char *p = in + 8 + hlen + begin + row * hidden * 4;
    static const unsigned char quiet_nan[4] = {0x00, 0x00, 0xc0, 0x7f}; /* little-endian */
    for (uint64_t i = 0; i < hidden; i++)
        memcpy(p + 4 * i, quiet_nan, 4);
    FPTQ_TRY_GOTO(write_in(dir, "model.safetensors", in, n), st, out);
out:
    cJSON_Delete(root);
    free(in);
    return st;
}

/* ---- the table -------------------------------------------------------------------- */

#define MODEL_CASE(name, expect, fn) \
    {name, BADFILE_MODEL, {expect, NULL}, BADFILE_AT_OPEN, NULL, 0, {0, 0}, fn}

static const badfile_case cases[] = {
    MODEL_CASE("truncated", "shorter than 8 bytes", w_truncated),
    MODEL_CASE("header_zero_length", "header length is 0", w_header_zero_length),
    MODEL_CASE("header_past_end", "past the end of file", w_header_past_end),
    MODEL_CASE("header_not_json", "not valid JSON", w_header_not_json),
    MODEL_CASE("header_not_object", "not a JSON object", w_header_not_object),
    MODEL_CASE("entry_not_object", "entry is not a JSON object", w_entry_not_object),
    MODEL_CASE("missing_offsets", "no data_offsets", w_missing_offsets),
    MODEL_CASE("dtype_not_string", "dtype is not a string", w_dtype_not_string),
    MODEL_CASE("unknown_dtype", "unknown dtype", w_unknown_dtype),
    MODEL_CASE("shape_negative", "not a non-negative integer", w_shape_negative),
    MODEL_CASE("shape_fraction", "not a non-negative integer", w_shape_fraction),
    MODEL_CASE("shape_string", "not a non-negative integer", w_shape_string),
    MODEL_CASE("shape_too_many_dims", "dimensions", w_shape_too_many_dims),
    MODEL_CASE("shape_overflow", "overflows", w_shape_overflow),
    MODEL_CASE("offsets_out_of_range", "out of range", w_offsets_out_of_range),
    MODEL_CASE("offsets_reversed", "begin > end", w_offsets_reversed),
    MODEL_CASE("offsets_negative", "data_offsets must be", w_offsets_negative),
    MODEL_CASE("size_mismatch", "does not match", w_size_mismatch),
    MODEL_CASE("overlap", "overlap", w_overlap),
    MODEL_CASE("duplicate_name", "duplicate", w_duplicate_name),
    MODEL_CASE("header_duplicate_key", "duplicate key \"dtype\"", w_header_duplicate_key),
    MODEL_CASE("no_weights", "model.safetensors.index.json", w_no_weights),
    MODEL_CASE("index_not_json", "not valid JSON", w_index_not_json),
    MODEL_CASE("index_bad_shard_name", "plain file name", w_index_bad_shard_name),
    MODEL_CASE("index_missing_shard", "is missing", w_index_missing_shard),
    MODEL_CASE("index_tensor_absent", "missing from shard", w_index_tensor_absent),
    MODEL_CASE("index_duplicate_tensor", "duplicate", w_index_duplicate_tensor),
    MODEL_CASE("index_duplicate_key", "duplicate key \"weight_map\"", w_index_duplicate_key),
    /* FPTQ_JSON_MAX_BYTES + 1 */
    MODEL_CASE("index_too_big", "67108865 bytes", w_index_too_big),
    {"missing_tensor", BADFILE_MODEL, {"missing from model", NULL}, BADFILE_AT_GET, UP_PROJ, 0,
     {0, 0}, w_missing_tensor},
    {"wrong_shape", BADFILE_MODEL, {"expected", NULL}, BADFILE_AT_READ, UP_PROJ, 2, {172, 64},
     w_wrong_shape},
    {"tokens_out_of_vocab", BADFILE_TOKENS, {"position", "vocab"}, BADFILE_AT_OPEN, NULL, 0,
     {0, 0}, w_tokens_out_of_vocab},
    /* matched case-insensitively, so "gpt2" also finds "GPT2LMHeadModel" */
    {"config_gpt2", BADFILE_CONFIG, {"gpt2", NULL}, BADFILE_AT_OPEN, NULL, 0, {0, 0},
     w_config_gpt2},
    {"config_heads_wrap", BADFILE_CONFIG, {"num_attention_heads 406961350020066", "at most 2048"},
     BADFILE_AT_OPEN, NULL, 0, {0, 0}, w_config_heads_wrap},
    {"config_too_many_layers", BADFILE_CONFIG, {"num_hidden_layers 65537", "at most 65536"},
     BADFILE_AT_OPEN, NULL, 0, {0, 0}, w_config_too_many_layers},
    {"config_duplicate_key", BADFILE_CONFIG, {"duplicate key \"num_hidden_layers\"", NULL},
     BADFILE_AT_OPEN, NULL, 0, {0, 0}, w_config_duplicate_key},
    /* a non-finite loss is an error, not a prediction left out */
    {"nan_embedding", BADFILE_WEIGHTS, {"window 0", "position 0"}, BADFILE_AT_OPEN, NULL, 0, {0, 0},
     w_nan_embedding},
};

const badfile_case *badfiles_cases(size_t *n)
{
    *n = sizeof cases / sizeof cases[0];
    return cases;
}

const badfile_case *badfiles_find(const char *name)
{
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        if (strcmp(cases[i].name, name) == 0)
            return &cases[i];
    return NULL;
}

const char *badfile_kind_name(badfile_kind k)
{
    switch (k) {
    case BADFILE_MODEL: return "model";
    case BADFILE_TOKENS: return "tokens";
    case BADFILE_CONFIG: return "config";
    case BADFILE_WEIGHTS: return "weights";
    }
    return "?";
}

fptq_status badfiles_write(const badfile_case *c, const char *good_dir, const char *case_dir)
{
    if (mkdir(case_dir, 0755) != 0 && errno != EEXIST)
        return FPTQ_FAIL(FPTQ_ERR_IO, "cannot create %s: %s", case_dir, strerror(errno));
    FPTQ_TRY(c->write(good_dir, case_dir));
    return FPTQ_OK;
}

int badfiles_contains(const char *haystack, const char *needle)
{
    size_t n = strlen(needle);
    for (const char *p = haystack; *p; p++) {
        size_t i = 0;
        while (i < n && p[i] &&
               tolower((unsigned char)p[i]) == tolower((unsigned char)needle[i]))
            i++;
        if (i == n)
            return 1;
    }
    return n == 0;
}

int badfiles_matches(const badfile_case *c, const char *msg)
{
    for (int i = 0; i < BADFILE_MAX_EXPECT; i++)
        if (c->expect[i] && !badfiles_contains(msg, c->expect[i]))
            return 0;
    return 1;
}
