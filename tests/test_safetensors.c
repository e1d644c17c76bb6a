/*
 * safetensors reader tests: the bundled models open and agree across F32 and
 * sharded BF16, fp16/bf16 conversion is exact, and every handcrafted bad
 * model is refused with a message naming the file and the problem.
 */
#define _XOPEN_SOURCE 700
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <ftw.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "io/safetensors.h"
#include "badfiles.h"

#ifndef FPTQ_EXAMPLES
#error "FPTQ_EXAMPLES must name the examples directory"
#endif

#define GOOD_DIR FPTQ_EXAMPLES "/stories260K"
#define BF16_DIR FPTQ_EXAMPLES "/stories260K-bf16-sharded"
#define N_TENSORS 47   /* embed + 5 layers x 9 + final norm; tied LM head */

static char tmp_root[] = "/tmp/fptq_test_st_XXXXXX";

static void check_ok(fptq_status st)
{
    if (st != FPTQ_OK)
        fail_msg("status %s: %s", fptq_status_name(st), fptq_last_error());
}

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb; (void)flag; (void)ftw;
    return remove(path);
}

static int group_setup(void **state)
{
    (void)state;
    return mkdtemp(tmp_root) ? 0 : -1;
}

static int group_teardown(void **state)
{
    (void)state;
    return nftw(tmp_root, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

static int clear_error(void **state)
{
    (void)state;
    fptq_clear_error();
    return 0;
}

/* ---- dtypes and conversions ------------------------------------------------------ */

static void test_dtype_table(void **state)
{
    (void)state;
    for (int i = 0; i < ST_DTYPE_COUNT; i++) {
        st_dtype d;
        assert_int_equal(st_dtype_parse(st_dtype_name((st_dtype)i), &d), 0);
        assert_int_equal(d, i);
        assert_true(st_dtype_size(d) >= 1 && st_dtype_size(d) <= 8);
    }
    st_dtype d = ST_F32;
    assert_int_equal(st_dtype_parse("F33", &d), -1);
    assert_int_equal(st_dtype_parse("f32", &d), -1);
    assert_int_equal(st_dtype_parse(NULL, &d), -1);
    assert_int_equal(st_dtype_size(ST_BF16), 2);
    assert_int_equal(st_dtype_size(ST_F64), 8);
    assert_string_equal(st_dtype_name(ST_F8_E4M3), "F8_E4M3");
}

/* Reference decoding of fp16 from the IEEE formula, independent of bit tricks. */
static double f16_reference(uint16_t h)
{
    int sign = h >> 15, exp = (h >> 10) & 31, man = h & 1023;
    double v;
    if (exp == 0)
        v = ldexp(man, -24);
    else if (exp == 31)
        v = man ? NAN : INFINITY;
    else
        v = ldexp(1024 + man, exp - 25);
    return sign ? -v : v;
}

static void test_f16_exhaustive(void **state)
{
    (void)state;
    for (uint32_t h = 0; h <= 0xffff; h++) {
        float got = st_f16_to_f32((uint16_t)h);
        double want = f16_reference((uint16_t)h);
        if (isnan(want)) {
            if (!isnan(got))
                fail_msg("f16 0x%04x: want NaN, got %g", h, got);
        } else if ((double)got != want || !signbit(got) != !signbit(want)) {
            fail_msg("f16 0x%04x: want %.10g, got %.10g", h, want, got);
        }
    }
}

static void test_f16_edges(void **state)
{
    (void)state;
    assert_true(st_f16_to_f32(0x0001) == ldexpf(1.0f, -24));   /* smallest subnormal */
    assert_true(st_f16_to_f32(0x03ff) == ldexpf(1023.0f, -24)); /* largest subnormal */
    assert_true(st_f16_to_f32(0x0400) == ldexpf(1.0f, -14));   /* smallest normal */
    assert_true(st_f16_to_f32(0x8001) == -ldexpf(1.0f, -24));
    assert_true(st_f16_to_f32(0x3c00) == 1.0f);
    assert_true(st_f16_to_f32(0xc000) == -2.0f);
    assert_true(st_f16_to_f32(0x7bff) == 65504.0f);
    assert_true(isinf(st_f16_to_f32(0x7c00)) && st_f16_to_f32(0x7c00) > 0);
    assert_true(isinf(st_f16_to_f32(0xfc00)) && st_f16_to_f32(0xfc00) < 0);
    assert_true(isnan(st_f16_to_f32(0x7e00)));
    assert_true(isnan(st_f16_to_f32(0x7c01)));   /* signalling NaN stays NaN */
    assert_true(isnan(st_f16_to_f32(0xfe00)));
    float z = st_f16_to_f32(0x8000);
    assert_true(z == 0.0f && signbit(z));
    z = st_f16_to_f32(0x0000);
    assert_true(z == 0.0f && !signbit(z));
}

static void test_bf16_edges(void **state)
{
    (void)state;
    assert_true(st_bf16_to_f32(0x3f80) == 1.0f);
    assert_true(st_bf16_to_f32(0xc040) == -3.0f);
    assert_true(st_bf16_to_f32(0x0001) == ldexpf(1.0f, -133));  /* subnormal */
    assert_true(st_bf16_to_f32(0x7f7f) == ldexpf(255.0f, 120));  /* largest finite */
    assert_true(isinf(st_bf16_to_f32(0x7f80)) && st_bf16_to_f32(0x7f80) > 0);
    assert_true(isinf(st_bf16_to_f32(0xff80)) && st_bf16_to_f32(0xff80) < 0);
    assert_true(isnan(st_bf16_to_f32(0x7fc0)));
    assert_true(isnan(st_bf16_to_f32(0x7f81)));
    float z = st_bf16_to_f32(0x8000);
    assert_true(z == 0.0f && signbit(z));
}

/* A tensor over a caller's buffer, as st_file_open would build it. */
static st_tensor fake_tensor(st_dtype dt, const unsigned char *data, int64_t rows, int64_t cols)
{
    st_tensor t;
    memset(&t, 0, sizeof t);
    t.name = "fake.weight";
    t.dtype = dt;
    t.ndim = 2;
    t.shape[0] = rows;
    t.shape[1] = cols;
    t.numel = rows * cols;
    t.data = data;
    t.nbytes = (size_t)t.numel * st_dtype_size(dt);
    t.path = "/nowhere/fake.safetensors";
    return t;
}

static void test_to_f32_conversions(void **state)
{
    (void)state;
    /* odd offset: tensors in a mapping need not be aligned */
    unsigned char buf[1 + 4 * 6];
    const float want[6] = {1.5f, -2.25f, 0.0f, 1e-30f, 3e38f, -0.0f};
    memcpy(buf + 1, want, sizeof want);
    float got[6];
    st_tensor t = fake_tensor(ST_F32, buf + 1, 2, 3);
    check_ok(st_tensor_to_f32(&t, got, 6));
    assert_memory_equal(got, want, sizeof want);

    const unsigned char f16[] = {0x00, 0x3c, 0x01, 0x00, 0x00, 0x7c, 0x00, 0x80};
    t = fake_tensor(ST_F16, f16, 2, 2);
    check_ok(st_tensor_to_f32(&t, got, 4));
    assert_true(got[0] == 1.0f && got[1] == ldexpf(1.0f, -24) && isinf(got[2]));
    assert_true(got[3] == 0.0f && signbit(got[3]));

    const unsigned char bf16[] = {0x80, 0x3f, 0xc0, 0x7f, 0x40, 0xc0, 0x01, 0x00};
    t = fake_tensor(ST_BF16, bf16, 4, 1);
    check_ok(st_tensor_to_f32(&t, got, 4));
    assert_true(got[0] == 1.0f && isnan(got[1]) && got[2] == -3.0f);
    assert_true(got[3] == ldexpf(1.0f, -133));

    /* rows 1..2 of a 4 x 1 BF16 tensor */
    check_ok(st_tensor_rows_to_f32(&t, 1, 2, got));
    assert_true(isnan(got[0]) && got[1] == -3.0f);
    t = fake_tensor(ST_F32, buf + 1, 3, 2);
    check_ok(st_tensor_rows_to_f32(&t, 2, 1, got));
    assert_true(got[0] == 3e38f && got[1] == 0.0f && signbit(got[1]));
}

static void test_to_f32_errors(void **state)
{
    (void)state;
    unsigned char buf[16] = {0};
    float dst[16];
    st_tensor t = fake_tensor(ST_F32, buf, 2, 2);
    assert_int_equal(st_tensor_to_f32(&t, dst, 3), FPTQ_ERR_FORMAT);
    assert_non_null(strstr(fptq_last_error(), "fake.weight"));
    assert_non_null(strstr(fptq_last_error(), "/nowhere/fake.safetensors"));
    assert_non_null(strstr(fptq_last_error(), "has 4 elements"));
    fptq_clear_error();

    t = fake_tensor(ST_I8, buf, 2, 2);
    assert_int_equal(st_tensor_to_f32(&t, dst, 4), FPTQ_ERR_UNSUPPORTED);
    assert_non_null(strstr(fptq_last_error(), "fake.weight"));
    assert_non_null(strstr(fptq_last_error(), "I8"));
    fptq_clear_error();

    t = fake_tensor(ST_F32, buf, 2, 2);
    assert_int_not_equal(st_tensor_rows_to_f32(&t, 1, 2, dst), FPTQ_OK);
    assert_non_null(strstr(fptq_last_error(), "rows [1, 3) out of range"));
    fptq_clear_error();
    assert_int_not_equal(st_tensor_rows_to_f32(&t, -1, 1, dst), FPTQ_OK);
    assert_non_null(strstr(fptq_last_error(), "fake.weight"));
}

/* ---- the bundled models ---------------------------------------------------------- */

static void assert_shape(const st_tensor *t, int ndim, int64_t d0, int64_t d1)
{
    assert_non_null(t);
    assert_int_equal(t->ndim, ndim);
    assert_int_equal(t->shape[0], d0);
    if (ndim > 1)
        assert_int_equal(t->shape[1], d1);
    assert_int_equal(t->numel, ndim > 1 ? d0 * d1 : d0);
    assert_int_equal(t->nbytes, (size_t)t->numel * st_dtype_size(t->dtype));
}

static void check_stories_layout(const st_model *m, st_dtype dt)
{
    assert_int_equal(st_model_count(m), N_TENSORS);
    assert_null(st_model_tensor(m, N_TENSORS));
    for (size_t i = 0; i < st_model_count(m); i++) {
        const st_tensor *t = st_model_tensor(m, i);
        assert_int_equal(t->dtype, dt);
        assert_ptr_equal(st_model_find(m, t->name), t);
        if (i > 0)
            assert_true(strcmp(st_model_tensor(m, i - 1)->name, t->name) < 0);
    }
    assert_shape(st_model_find(m, "model.embed_tokens.weight"), 2, 512, 64);
    assert_shape(st_model_find(m, "model.norm.weight"), 1, 64, 0);
    char name[128];
    for (int l = 0; l < 5; l++) {
        snprintf(name, sizeof name, "model.layers.%d.self_attn.q_proj.weight", l);
        assert_shape(st_model_find(m, name), 2, 64, 64);
        snprintf(name, sizeof name, "model.layers.%d.self_attn.k_proj.weight", l);
        assert_shape(st_model_find(m, name), 2, 32, 64);
        snprintf(name, sizeof name, "model.layers.%d.mlp.up_proj.weight", l);
        assert_shape(st_model_find(m, name), 2, 172, 64);
        snprintf(name, sizeof name, "model.layers.%d.mlp.down_proj.weight", l);
        assert_shape(st_model_find(m, name), 2, 64, 172);
        snprintf(name, sizeof name, "model.layers.%d.input_layernorm.weight", l);
        assert_shape(st_model_find(m, name), 1, 64, 0);
    }
    assert_null(st_model_find(m, "lm_head.weight"));
    assert_null(st_model_find(m, "__metadata__"));
    assert_null(st_model_find(m, ""));
}

static void test_open_single_file(void **state)
{
    (void)state;
    st_model *m = NULL;
    check_ok(st_model_open(GOOD_DIR, &m));
    assert_string_equal(st_model_dir(m), GOOD_DIR);
    check_stories_layout(m, ST_F32);
    const st_tensor *t = st_model_find(m, "model.embed_tokens.weight");
    assert_string_equal(t->path, GOOD_DIR "/model.safetensors");
    st_model_close(m);

    /* a trailing slash does not double up in paths */
    check_ok(st_model_open(GOOD_DIR "/", &m));
    t = st_model_find(m, "model.norm.weight");
    assert_string_equal(t->path, GOOD_DIR "/model.safetensors");
    st_model_close(m);
}

static void test_file_api(void **state)
{
    (void)state;
    st_file *f = NULL;
    check_ok(st_file_open(GOOD_DIR "/model.safetensors", &f));
    assert_int_equal(st_file_count(f), N_TENSORS);
    /* header order is kept for enumeration */
    assert_string_equal(st_file_tensor(f, 0)->name, "model.embed_tokens.weight");
    assert_null(st_file_tensor(f, N_TENSORS));
    const st_tensor *t = st_file_find(f, "model.layers.4.mlp.gate_proj.weight");
    assert_shape(t, 2, 172, 64);
    assert_null(st_file_find(f, "model.layers.5.mlp.gate_proj.weight"));
    st_file_close(f);
    st_file_close(NULL);
    st_model_close(NULL);
}

static void test_open_sharded_bf16(void **state)
{
    (void)state;
    st_model *m = NULL;
    check_ok(st_model_open(BF16_DIR, &m));
    check_stories_layout(m, ST_BF16);
    const st_tensor *a = st_model_find(m, "model.embed_tokens.weight");
    const st_tensor *b = st_model_find(m, "model.norm.weight");
    assert_string_equal(a->path, BF16_DIR "/model-00001-of-00002.safetensors");
    assert_string_equal(b->path, BF16_DIR "/model-00002-of-00002.safetensors");
    st_model_close(m);
}

/* bf16 keeps 8 significant bits, so round-to-nearest is within 2^-9 relative;
 * 2^-8 allows for either rounding direction. */
static void test_f32_matches_bf16(void **state)
{
    (void)state;
    st_model *f32 = NULL, *bf16 = NULL;
    float *a = NULL, *b = NULL;
    check_ok(st_model_open(GOOD_DIR, &f32));
    check_ok(st_model_open(BF16_DIR, &bf16));
    check_ok(fptq_calloc(512 * 64, sizeof(float), "a", &a));
    check_ok(fptq_calloc(512 * 64, sizeof(float), "b", &b));
    double checked = 0;
    for (size_t i = 0; i < st_model_count(f32); i++) {
        const st_tensor *t = st_model_tensor(f32, i);
        assert_true(t->numel <= 512 * 64);
        check_ok(st_model_read_f32(f32, t->name, t->ndim, t->shape, a));
        check_ok(st_model_read_f32(bf16, t->name, t->ndim, t->shape, b));
        for (int64_t k = 0; k < t->numel; k++) {
            if (!(fabsf(a[k] - b[k]) <= ldexpf(fabsf(a[k]), -8)))
                fail_msg("%s[%lld]: f32 %.9g vs bf16 %.9g", t->name, (long long)k, a[k], b[k]);
        }
        checked += (double)t->numel;
    }
    assert_true(checked > 200000);
    free(a);
    free(b);
    st_model_close(f32);
    st_model_close(bf16);
}

static void test_read_shape_mismatch(void **state)
{
    (void)state;
    st_model *m = NULL;
    float *dst = NULL;
    check_ok(st_model_open(GOOD_DIR, &m));
    check_ok(fptq_calloc(172 * 64, sizeof(float), "dst", &dst));
    const int64_t wrong[2] = {172, 32};
    assert_int_equal(st_model_read_f32(m, "model.layers.0.mlp.up_proj.weight", 2, wrong, dst),
                     FPTQ_ERR_FORMAT);
    assert_string_equal(fptq_last_error(),
                        "tensor model.layers.0.mlp.up_proj.weight in " GOOD_DIR
                        "/model.safetensors: shape [172, 64], expected [172, 32]");
    fptq_clear_error();

    const int64_t flat[1] = {172 * 64};
    assert_int_equal(st_model_read_f32(m, "model.layers.0.mlp.up_proj.weight", 1, flat, dst),
                     FPTQ_ERR_FORMAT);
    assert_non_null(strstr(fptq_last_error(), "shape [172, 64], expected [11008]"));
    fptq_clear_error();

    const int64_t right[2] = {172, 64};
    check_ok(st_model_read_f32(m, "model.layers.0.mlp.up_proj.weight", 2, right, dst));
    free(dst);
    st_model_close(m);
}

static void test_get_missing(void **state)
{
    (void)state;
    st_model *m = NULL;
    const st_tensor *t = (const st_tensor *)&t;
    check_ok(st_model_open(GOOD_DIR, &m));
    assert_int_equal(st_model_get(m, "lm_head.weight", &t), FPTQ_ERR_FORMAT);
    assert_null(t);
    assert_string_equal(fptq_last_error(), "tensor lm_head.weight missing from model " GOOD_DIR);
    st_model_close(m);
}

static void test_missing_dir(void **state)
{
    (void)state;
    st_model *m = (st_model *)&m;
    assert_int_not_equal(st_model_open(FPTQ_EXAMPLES "/no-such-model", &m), FPTQ_OK);
    assert_null(m);
    assert_non_null(strstr(fptq_last_error(), FPTQ_EXAMPLES "/no-such-model"));
    fptq_clear_error();
    /* a file where a directory is expected */
    assert_int_not_equal(st_model_open(GOOD_DIR "/config.json", &m), FPTQ_OK);
    assert_non_null(strstr(fptq_last_error(), "not a directory"));
}

/* Legal corners of the format: metadata, a scalar, an empty tensor, F16/BF16
 * at odd offsets, entries out of offset order, a hole, space padding. */
static void test_crafted_good_file(void **state)
{
    (void)state;
    char dir[512], path[600];
    snprintf(dir, sizeof dir, "%s/crafted_good", tmp_root);
    assert_int_equal(mkdir(dir, 0755), 0);
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    static const char hdr[] =
        "{\"__metadata__\":{\"format\":\"pt\"},"
        "\"h\":{\"dtype\":\"F16\",\"shape\":[2],\"data_offsets\":[5,9]},"
        "\"s\":{\"dtype\":\"F32\",\"shape\":[],\"data_offsets\":[0,4]},"
        "\"e\":{\"dtype\":\"F16\",\"shape\":[0,3],\"data_offsets\":[4,4]},"
        "\"b\":{\"dtype\":\"BF16\",\"shape\":[1,2],\"data_offsets\":[9,13]},"
        "\"i\":{\"dtype\":\"I8\",\"shape\":[3],\"data_offsets\":[16,19]}}    ";
    unsigned char file[8 + sizeof hdr - 1 + 19];
    memset(file, 0, sizeof file);
    for (int k = 0; k < 8; k++)
        file[k] = (unsigned char)((uint64_t)(sizeof hdr - 1) >> (8 * k));
    memcpy(file + 8, hdr, sizeof hdr - 1);
    unsigned char *d = file + 8 + sizeof hdr - 1;
    const float s = 2.5f;
    memcpy(d, &s, 4);
    d[4] = 0x77;   /* the hole byte [4,5) belongs to no tensor */
    const unsigned char h[4] = {0x00, 0xbc, 0xff, 0x03};
    memcpy(d + 5, h, 4);
    const unsigned char b[4] = {0x80, 0xbf, 0x80, 0x7f};
    memcpy(d + 9, b, 4);
    FILE *fp = fopen(path, "wb");
    assert_non_null(fp);
    assert_int_equal(fwrite(file, 1, sizeof file, fp), sizeof file);
    assert_int_equal(fclose(fp), 0);

    st_model *m = NULL;
    check_ok(st_model_open(dir, &m));
    assert_int_equal(st_model_count(m), 5);
    float out[4];
    const int64_t scalar_shape[1] = {0};
    check_ok(st_model_read_f32(m, "s", 0, scalar_shape, out));
    assert_true(out[0] == 2.5f);
    const int64_t hs[1] = {2};
    check_ok(st_model_read_f32(m, "h", 1, hs, out));
    assert_true(out[0] == -1.0f && out[1] == ldexpf(1023.0f, -24));
    const int64_t bs[2] = {1, 2};
    check_ok(st_model_read_f32(m, "b", 2, bs, out));
    assert_true(out[0] == -1.0f && isinf(out[1]));
    const int64_t es[2] = {0, 3};
    check_ok(st_model_read_f32(m, "e", 2, es, out));
    const st_tensor *t;
    check_ok(st_model_get(m, "i", &t));
    assert_int_equal(st_tensor_to_f32(t, out, 3), FPTQ_ERR_UNSUPPORTED);
    assert_non_null(strstr(fptq_last_error(), "I8"));
    st_model_close(m);
}

/* ---- the bad files ----------------------------------------------------------------- */

static void run_bad_case(const char *name)
{
    const badfile_case *c = badfiles_find(name);
    if (!c)
        fail_msg("no bad-file case named %s", name);
    assert_int_equal(c->kind, BADFILE_MODEL);
    char dir[512];
    snprintf(dir, sizeof dir, "%s/%s", tmp_root, name);
    check_ok(badfiles_write(c, GOOD_DIR, dir));
    fptq_clear_error();

    st_model *m = NULL;
    fptq_status st = st_model_open(dir, &m);
    if (c->stage == BADFILE_AT_OPEN) {
        if (st == FPTQ_OK)
            fail_msg("case %s: st_model_open succeeded", name);
        assert_null(m);
    } else {
        check_ok(st);
        if (c->stage == BADFILE_AT_GET) {
            const st_tensor *t;
            st = st_model_get(m, c->tensor, &t);
        } else {
            float *dst = NULL;
            check_ok(fptq_calloc((size_t)(c->shape[0] * c->shape[1]), sizeof(float), "dst", &dst));
            st = st_model_read_f32(m, c->tensor, c->ndim, c->shape, dst);
            free(dst);
        }
        st_model_close(m);
        if (st == FPTQ_OK)
            fail_msg("case %s: reading %s succeeded", name, c->tensor);
    }
    const char *msg = fptq_last_error();
    assert_int_equal(fptq_last_status(), st);
    if (st != FPTQ_ERR_FORMAT && st != FPTQ_ERR_IO && st != FPTQ_ERR_UNSUPPORTED)
        fail_msg("case %s: status %s: %s", name, fptq_status_name(st), msg);
    if (!strstr(msg, dir))
        fail_msg("case %s: message does not name %s: %s", name, dir, msg);
    if (!badfiles_matches(c, msg))
        fail_msg("case %s: message lacks \"%s\": %s", name, c->expect[0], msg);
    print_message("      %s: %s\n", name, msg);
}

/* One test per model case of tests/badfiles.c; test_every_case_tested keeps
 * this list and the table in step. */
#define MODEL_CASES(X)                                                                  \
    X(truncated) X(header_zero_length) X(header_past_end) X(header_not_json)            \
    X(header_not_object) X(entry_not_object) X(missing_offsets) X(dtype_not_string)     \
    X(unknown_dtype) X(shape_negative) X(shape_fraction) X(shape_string)                \
    X(shape_too_many_dims) X(shape_overflow) X(offsets_out_of_range)                    \
    X(offsets_reversed) X(offsets_negative) X(size_mismatch) X(overlap)                 \
    X(duplicate_name) X(no_weights) X(index_not_json) X(index_bad_shard_name)           \
    X(index_missing_shard) X(index_tensor_absent) X(index_duplicate_tensor)             \
    X(missing_tensor) X(wrong_shape) X(header_duplicate_key) X(index_duplicate_key)     \
    X(index_too_big)

#define DEFINE_BAD_TEST(name) \
    static void test_bad_##name(void **state) { (void)state; run_bad_case(#name); }
MODEL_CASES(DEFINE_BAD_TEST)

#define NAME_OF(name) #name,
static const char *const tested_cases[] = {MODEL_CASES(NAME_OF)};

static void test_every_case_tested(void **state)
{
    (void)state;
    size_t n, n_model = 0, n_tested = sizeof tested_cases / sizeof tested_cases[0];
    const badfile_case *cases = badfiles_cases(&n);
    for (size_t i = 0; i < n; i++) {
        assert_non_null(cases[i].expect[0]);
        if (cases[i].kind != BADFILE_MODEL)
            continue;
        n_model++;
        int found = 0;
        for (size_t k = 0; k < n_tested; k++)
            found |= strcmp(tested_cases[k], cases[i].name) == 0;
        if (!found)
            fail_msg("bad-file case %s has no test in test_safetensors.c", cases[i].name);
    }
    assert_int_equal(n_model, n_tested);
}

/* The writers of the non-model cases run too, though their files are read by
 * config.c and npy.c, which the command-line test covers. */
static void test_other_cases_write(void **state)
{
    (void)state;
    size_t n;
    const badfile_case *cases = badfiles_cases(&n);
    for (size_t i = 0; i < n; i++) {
        if (cases[i].kind == BADFILE_MODEL)
            continue;
        char dir[512];
        snprintf(dir, sizeof dir, "%s/%s", tmp_root, cases[i].name);
        check_ok(badfiles_write(&cases[i], GOOD_DIR, dir));
    }
    assert_true(badfiles_contains("Unsupported GPT2LMHeadModel", "gpt2"));
    assert_false(badfiles_contains("llama", "gpt2"));
}

#define BAD_TEST_ENTRY(name) cmocka_unit_test_setup(test_bad_##name, clear_error),

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_dtype_table, clear_error),
        cmocka_unit_test_setup(test_f16_exhaustive, clear_error),
        cmocka_unit_test_setup(test_f16_edges, clear_error),
        cmocka_unit_test_setup(test_bf16_edges, clear_error),
        cmocka_unit_test_setup(test_to_f32_conversions, clear_error),
        cmocka_unit_test_setup(test_to_f32_errors, clear_error),
        cmocka_unit_test_setup(test_open_single_file, clear_error),
        cmocka_unit_test_setup(test_file_api, clear_error),
        cmocka_unit_test_setup(test_open_sharded_bf16, clear_error),
        cmocka_unit_test_setup(test_f32_matches_bf16, clear_error),
        cmocka_unit_test_setup(test_read_shape_mismatch, clear_error),
        cmocka_unit_test_setup(test_get_missing, clear_error),
        cmocka_unit_test_setup(test_missing_dir, clear_error),
        cmocka_unit_test_setup(test_crafted_good_file, clear_error),
        cmocka_unit_test_setup(test_every_case_tested, clear_error),
        cmocka_unit_test_setup(test_other_cases_write, clear_error),
        MODEL_CASES(BAD_TEST_ENTRY)
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
