/*
 * Unit tests for io/checkpoint.c and common/sha256.c: SHA-256 test vectors,
 * checkpoint round trips bit for bit, identical content giving identical
 * digests and files, and every way a checkpoint can be damaged or unfinished.
 */
#define _XOPEN_SOURCE 700
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/sha256.h"
#include "io/checkpoint.h"
#include "io/export.h"
#include "worker/model.h"

#include <cjson/cJSON.h>

#define HIDDEN 64
#define INTER 172   /* not a multiple of 32: down_proj has a ragged last group */

static char tmpdir[64];

static int setup_dir(void **state)
{
    (void)state;
    snprintf(tmpdir, sizeof tmpdir, "/tmp/fptq_test_ckpt.XXXXXX");
    return mkdtemp(tmpdir) ? 0 : -1;
}

static int rm_entry(const char *p, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb, (void)flag, (void)ftw;
    return remove(p);
}

static int remove_dir(void **state)
{
    (void)state;
    return nftw(tmpdir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

static const char *tpath(const char *fmt, ...)
{
    static char buf[8][512];
    static int next;
    char *p = buf[next++ % 8];
    char name[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(name, sizeof name, fmt, ap);
    va_end(ap);
    snprintf(p, sizeof buf[0], "%s/%s", tmpdir, name);
    return p;
}

static void *read_file(const char *path, size_t *n)
{
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *p = malloc((size_t)len + 1);
    assert_non_null(p);
    assert_int_equal(fread(p, 1, (size_t)len, f), (size_t)len);
    fclose(f);
    *n = (size_t)len;
    return p;
}

static void write_file(const char *path, const void *p, size_t n)
{
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(p, 1, n, f), n);
    fclose(f);
}

/* The status, and a message naming what it should (FPTQ_TEST_VERBOSE=1 prints them). */
static void expect_error2(fptq_status got, fptq_status want, const char *needle, const char *needle2)
{
    if (getenv("FPTQ_TEST_VERBOSE"))
        print_message("    [%s] %s\n", fptq_status_name(got), fptq_last_error());
    assert_int_equal(got, want);
    if (!strstr(fptq_last_error(), needle))
        fail_msg("error \"%s\" does not mention \"%s\"", fptq_last_error(), needle);
    if (needle2 && !strstr(fptq_last_error(), needle2))
        fail_msg("error \"%s\" does not mention \"%s\"", fptq_last_error(), needle2);
    fptq_clear_error();
}

/* Clears any earlier message first: only the first failure's message is kept. */
#define EXPECT_ERROR2(call, want, needle, needle2)                  \
    do {                                                            \
        fptq_clear_error();                                         \
        expect_error2((call), (want), (needle), (needle2));          \
    } while (0)
#define EXPECT_ERROR(call, want, needle) EXPECT_ERROR2(call, want, needle, NULL)

/* ---- SHA-256 ------------------------------------------------------------------ */

static void hex_of(const void *p, size_t n, char hex[65])
{
    sha256_ctx c;
    uint8_t d[32];
    sha256_init(&c);
    sha256_update(&c, p, n);
    sha256_final(&c, d);
    sha256_hex(d, hex);
}

static void test_sha256_vectors(void **state)
{
    (void)state;
    char hex[65];
    hex_of("", 0, hex);
    assert_string_equal(hex, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    hex_of("abc", 3, hex);
    assert_string_equal(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    const char *m448 = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
    hex_of(m448, strlen(m448), hex);
    assert_string_equal(hex, "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");

    /* one million 'a', fed in uneven pieces so the block carry-over is exercised */
    char chunk[997];
    memset(chunk, 'a', sizeof chunk);
    sha256_ctx c;
    sha256_init(&c);
    size_t left = 1000000;
    for (size_t step = 1; left > 0; step = (step * 31 + 7) % sizeof chunk + 1) {
        size_t n = step < left ? step : left;
        sha256_update(&c, chunk, n);
        left -= n;
    }
    uint8_t d[32];
    sha256_final(&c, d);
    sha256_hex(d, hex);
    assert_string_equal(hex, "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
}

static void test_sha256_file(void **state)
{
    (void)state;
    const char *p = tpath("abc.txt");
    write_file(p, "abc", 3);
    char hex[65];
    assert_int_equal(sha256_file(p, hex), FPTQ_OK);
    assert_string_equal(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    const char *missing = tpath("no-such-file");
    EXPECT_ERROR(sha256_file(missing, hex), FPTQ_ERR_IO, missing);
}

/* ---- a synthetic layer --------------------------------------------------------- */

static uint32_t rng_next(uint32_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 17;
    *s ^= *s << 5;
    return *s;
}

static float rng_float(uint32_t *s) { return (float)(rng_next(s) >> 8) / 16777216.0f * 2.0f - 1.0f; }

typedef struct lin_plan {
    const char *name;
    quant_format fmt;
    int bits;
    int64_t group_size;
    int sym;
    int64_t rows, cols;
    int g_idx, bias;
    act_quant_kind act;
    const char *method;
} lin_plan;

static const lin_plan plan[CKPT_MAX_LINEARS] = {
    {"self_attn.q_proj", QFMT_INT, 4, 32, 1, HIDDEN, HIDDEN, 0, 0, ACTQ_NONE, "gptq"},
    {"self_attn.k_proj", QFMT_INT, 4, 32, 0, 32, HIDDEN, 0, 1, ACTQ_NONE, "gptq"},   /* asym, bias */
    {"self_attn.v_proj", QFMT_INT, 4, 32, 1, 32, HIDDEN, 1, 0, ACTQ_NONE, "gptq"},   /* act-order g_idx */
    {"self_attn.o_proj", QFMT_FP8_E4M3, 8, 0, 0, HIDDEN, HIDDEN, 0, 0, ACTQ_FP8_STATIC, "rtn"},
    {"mlp.gate_proj", QFMT_INT, 4, 32, 1, INTER, HIDDEN, 0, 0, ACTQ_INT8_DYNAMIC, "awq"},
    {"mlp.up_proj", QFMT_INT, 3, 32, 1, INTER, HIDDEN, 0, 0, ACTQ_NONE, "awq"},     /* 10 codes a word */
    {"mlp.down_proj", QFMT_INT, 4, 32, 1, HIDDEN, INTER, 0, 0, ACTQ_INT8_STATIC, "gptq"},  /* ragged */
};

static void make_layer(ckpt_layer *L, int64_t index, uint32_t seed)
{
    memset(L, 0, sizeof *L);
    uint32_t s = seed * 2654435761u + 1;
    L->index = index;
    L->hidden = HIDDEN;
    L->seconds = 1.5 + (double)index;
    L->attn_norm = malloc(HIDDEN * sizeof(float));
    L->mlp_norm = malloc(HIDDEN * sizeof(float));
    assert_non_null(L->attn_norm);
    assert_non_null(L->mlp_norm);
    for (int i = 0; i < HIDDEN; i++) {
        L->attn_norm[i] = 1.0f + rng_float(&s);
        L->mlp_norm[i] = 1.0f + rng_float(&s);
    }
    L->n_linears = CKPT_MAX_LINEARS;
    for (int i = 0; i < CKPT_MAX_LINEARS; i++) {
        const lin_plan *p = &plan[i];
        ckpt_linear *lin = &L->lin[i];
        snprintf(lin->name, sizeof lin->name, "%s", p->name);
        snprintf(lin->method, sizeof lin->method, "%s", p->method);
        quant_spec spec = {p->fmt, p->bits, p->group_size, p->sym};
        assert_int_equal(quant_tensor_alloc(&spec, p->rows, p->cols, p->g_idx, &lin->q), FPTQ_OK);
        quant_tensor *q = &lin->q;
        for (int64_t k = 0; k < p->rows * p->cols; k++)
            q->codes[k] = (uint8_t)(rng_next(&s) & ((1u << p->bits) - 1));
        for (int64_t k = 0; k < p->rows * q->n_groups; k++) {
            q->scales[k] = 0.01f + 0.001f * rng_float(&s);
            if (q->zeros)
                q->zeros[k] = p->sym ? 1 << (p->bits - 1) : (int32_t)(rng_next(&s) % (1u << p->bits));
        }
        if (q->g_idx)
            for (int64_t c = 0; c < p->cols; c++)
                q->g_idx[c] = (int32_t)((c * 7) % q->n_groups);   /* any valid group, not c / g */
        if (p->bias) {
            lin->bias = malloc((size_t)p->rows * sizeof(float));
            assert_non_null(lin->bias);
            for (int64_t r = 0; r < p->rows; r++)
                lin->bias[r] = rng_float(&s);
        }
        lin->act.kind = p->act;
        lin->act.scale = p->act == ACTQ_NONE || p->act == ACTQ_INT8_DYNAMIC ? 0.0f : 0.0123f + 0.001f * (float)i;
        lin->damp = strcmp(p->method, "gptq") == 0 ? 0.01f * (1.0f + rng_float(&s)) : 0.0f;
        lin->loss = 1e-3 * (2.0 + rng_float(&s));
    }
}

static void assert_layers_equal(const ckpt_layer *a, const ckpt_layer *b)
{
    assert_int_equal(a->index, b->index);
    assert_int_equal(a->hidden, b->hidden);
    assert_int_equal(a->n_linears, b->n_linears);
    assert_memory_equal(a->attn_norm, b->attn_norm, (size_t)a->hidden * sizeof(float));
    assert_memory_equal(a->mlp_norm, b->mlp_norm, (size_t)a->hidden * sizeof(float));
    for (int i = 0; i < a->n_linears; i++) {
        const ckpt_linear *x = &a->lin[i], *y = &b->lin[i];
        const quant_tensor *p = &x->q, *q = &y->q;
        assert_string_equal(x->name, y->name);
        assert_string_equal(x->method, y->method);
        assert_int_equal(p->spec.format, q->spec.format);
        assert_int_equal(p->spec.bits, q->spec.bits);
        assert_int_equal(p->spec.group_size, q->spec.group_size);
        assert_int_equal(p->spec.sym, q->spec.sym);
        assert_int_equal(p->rows, q->rows);
        assert_int_equal(p->cols, q->cols);
        assert_int_equal(p->n_groups, q->n_groups);
        assert_memory_equal(p->codes, q->codes, (size_t)(p->rows * p->cols));
        assert_memory_equal(p->scales, q->scales, (size_t)(p->rows * p->n_groups) * sizeof(float));
        assert_int_equal(p->zeros == NULL, q->zeros == NULL);
        if (p->zeros)
            assert_memory_equal(p->zeros, q->zeros, (size_t)(p->rows * p->n_groups) * sizeof(int32_t));
        assert_int_equal(p->g_idx == NULL, q->g_idx == NULL);
        if (p->g_idx)
            assert_memory_equal(p->g_idx, q->g_idx, (size_t)p->cols * sizeof(int32_t));
        assert_int_equal(x->bias == NULL, y->bias == NULL);
        if (x->bias)
            assert_memory_equal(x->bias, y->bias, (size_t)p->rows * sizeof(float));
        assert_int_equal(x->act.kind, y->act.kind);
        assert_memory_equal(&x->act.scale, &y->act.scale, sizeof(float));
        assert_memory_equal(&x->damp, &y->damp, sizeof(float));
        assert_memory_equal(&x->loss, &y->loss, sizeof(double));
    }
}

/* ---- shared tensors --------------------------------------------------------------- */

#define VOCAB 16
static uint16_t embed_bf16[VOCAB * HIDDEN];
static float norm_f32[HIDDEN];
static uint16_t head_f16[VOCAB * HIDDEN];

static void make_shared(ckpt_raw_tensor t[3])
{
    for (int i = 0; i < VOCAB * HIDDEN; i++) {
        float v = (float)(i % 97) / 32.0f - 1.5f;   /* exact in bf16 and f16 */
        uint32_t u;
        memcpy(&u, &v, 4);
        embed_bf16[i] = (uint16_t)(u >> 16);
        /* f16 bits 0x3c00 + k: 1 + k/1024, every mantissa value */
        head_f16[i] = (uint16_t)(0x3c00 + i % 1024);   /* 1 + k/1024 */
    }
    for (int i = 0; i < HIDDEN; i++)
        norm_f32[i] = 0.5f + (float)i / 128.0f;
    ckpt_raw_tensor v[3] = {
        {"embed_tokens", "BF16", 2, {VOCAB, HIDDEN}, embed_bf16},
        {"norm", "F32", 1, {HIDDEN, 0}, norm_f32},
        {"lm_head", "F16", 2, {VOCAB, HIDDEN}, head_f16},
    };
    memcpy(t, v, sizeof v);
}

static const ckpt_meta META = {
    "{\"model_type\": \"llama\", \"hidden_size\": 64}",
    "{\"method\": \"gptq\", \"bits\": 4, \"group_size\": 32}",
    "{\"fptq\": \"0.1.0\", \"world\": 1}",
    2,
};

/* A whole checkpoint: shared tensors and every layer, digests returned. */
static void build_checkpoint(const char *dir, char layer_hex[][65], char ckpt_hex[65])
{
    ckpt *c;
    assert_int_equal(ckpt_create(dir, &META, &c), FPTQ_OK);
    ckpt_raw_tensor t[3];
    make_shared(t);
    assert_int_equal(ckpt_write_shared(c, t, 3), FPTQ_OK);
    for (int64_t l = 0; l < META.n_layers; l++) {
        ckpt_layer L;
        make_layer(&L, l, (uint32_t)(100 + l));
        assert_int_equal(ckpt_write_layer(c, &L, layer_hex[l]), FPTQ_OK);
        assert_int_equal(strlen(layer_hex[l]), 64);
        ckpt_layer_free(&L);
    }
    assert_int_equal(ckpt_digest(c, ckpt_hex), FPTQ_OK);
    ckpt_close(c);
}

/* ---- tests ----------------------------------------------------------------------- */

static void test_roundtrip(void **state)
{
    (void)state;
    const char *dir = tpath("rt");
    char lh[2][65], ch[65];
    build_checkpoint(dir, lh, ch);

    ckpt *c;
    assert_int_equal(ckpt_open(dir, &c), FPTQ_OK);
    assert_string_equal(ckpt_config_json(c), META.config_json);
    assert_string_equal(ckpt_recipe_json(c), META.recipe_json);
    assert_string_equal(ckpt_provenance_json(c), META.provenance_json);
    assert_int_equal(ckpt_n_layers(c), 2);
    for (int64_t l = 0; l < 2; l++) {
        assert_true(ckpt_layer_done(c, l));
        assert_string_equal(ckpt_layer_digest(c, l), lh[l]);
        const char *mj = ckpt_layer_manifest_json(c, l);
        assert_non_null(strstr(mj, "\"status\": \"done\""));
        assert_non_null(strstr(mj, lh[l]));
        assert_non_null(strstr(mj, "\"mlp.down_proj\": {\"loss\": "));

        ckpt_layer want, got;
        make_layer(&want, l, (uint32_t)(100 + l));
        /* losses round-trip through the manifest text (%.17g) */
        char frag[96];
        snprintf(frag, sizeof frag, "\"self_attn.q_proj\": {\"loss\": %.17g, \"damp\": %.9g}",
                 want.lin[0].loss, (double)want.lin[0].damp);
        assert_non_null(strstr(mj, frag));
        assert_int_equal(ckpt_read_layer(c, l, &got), FPTQ_OK);
        assert_layers_equal(&want, &got);
        assert_true(got.seconds == want.seconds);
        ckpt_layer_free(&want);
        ckpt_layer_free(&got);
    }
    char again[65];
    assert_int_equal(ckpt_digest(c, again), FPTQ_OK);
    assert_string_equal(again, ch);

    /* shared tensors: rows of a BF16 and an F16 matrix, the whole 1-D F32 one */
    assert_true(ckpt_has_shared(c));
    assert_true(ckpt_has_shared_tensor(c, "lm_head"));
    assert_false(ckpt_has_shared_tensor(c, "missing"));
    float rows[3 * HIDDEN];
    assert_int_equal(ckpt_read_shared_rows(c, "embed_tokens", 5, 3, rows), FPTQ_OK);
    for (int i = 0; i < 3 * HIDDEN; i++) {
        int k = 5 * HIDDEN + i;
        assert_true(rows[i] == (float)(k % 97) / 32.0f - 1.5f);
    }
    assert_int_equal(ckpt_read_shared_rows(c, "lm_head", VOCAB - 1, 1, rows), FPTQ_OK);
    for (int i = 0; i < HIDDEN; i++) {
        int k = (VOCAB - 1) * HIDDEN + i;
        assert_true(rows[i] == 1.0f + (float)(k % 1024) / 1024.0f);
    }
    assert_int_equal(ckpt_read_shared_rows(c, "norm", 0, 1, rows), FPTQ_OK);
    assert_memory_equal(rows, norm_f32, sizeof norm_f32);
    EXPECT_ERROR(ckpt_read_shared_rows(c, "lm_headx", 0, 1, rows), FPTQ_ERR_FORMAT, "lm_headx");
    EXPECT_ERROR(ckpt_read_shared_rows(c, "embed_tokens", VOCAB - 1, 2, rows), FPTQ_ERR_ARG, "embed_tokens");
    ckpt_close(c);
}

/* Same content in two directories: same digests, and byte-identical files
 * (no timestamps in HDF5 object headers, nothing path-dependent inside). */
static void test_deterministic(void **state)
{
    (void)state;
    const char *a = tpath("det-a"), *b = tpath("det-b");
    char lha[2][65], lhb[2][65], cha[65], chb[65];
    build_checkpoint(a, lha, cha);
    build_checkpoint(b, lhb, chb);
    assert_string_equal(lha[0], lhb[0]);
    assert_string_equal(lha[1], lhb[1]);
    assert_string_not_equal(lha[0], lha[1]);
    assert_string_equal(cha, chb);
    const char *files[] = {"layers/layer-00000.h5", "layers/layer-00001.h5", "shared.h5"};
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        size_t na, nb;
        char pa[512], pb[512];
        snprintf(pa, sizeof pa, "%s/%s", a, files[i]);
        snprintf(pb, sizeof pb, "%s/%s", b, files[i]);
        unsigned char *x = read_file(pa, &na), *y = read_file(pb, &nb);
        assert_int_equal(na, nb);
        assert_memory_equal(x, y, na);
        free(x);
        free(y);
    }
    /* the digest recomputed from a reopened index is the same */
    ckpt *c;
    assert_int_equal(ckpt_open(a, &c), FPTQ_OK);
    char hex[65];
    assert_int_equal(ckpt_digest(c, hex), FPTQ_OK);
    assert_string_equal(hex, cha);
    ckpt_close(c);
}

static void test_refuses_existing_dir(void **state)
{
    (void)state;
    const char *dir = tpath("exists");
    assert_int_equal(mkdir(dir, 0777), 0);
    const char *keep = tpath("exists/keep.txt");
    write_file(keep, "precious", 8);
    ckpt *c = (ckpt *)1;
    EXPECT_ERROR2(ckpt_create(dir, &META, &c), FPTQ_ERR_ARG, dir, "--resume");
    assert_null(c);
    /* untouched: the one file, its bytes, nothing added */
    size_t n;
    char *p = read_file(keep, &n);
    assert_int_equal(n, 8);
    assert_memory_equal(p, "precious", 8);
    free(p);
    DIR *d = opendir(dir);
    assert_non_null(d);
    int entries = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL)
        if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0)
            entries++;
    closedir(d);
    assert_int_equal(entries, 1);

    /* a plain file in the way is refused too */
    const char *file = tpath("a-file");
    write_file(file, "x", 1);
    EXPECT_ERROR(ckpt_create(file, &META, &c), FPTQ_ERR_ARG, file);
}

static ckpt *one_layer_checkpoint(const char *dir)
{
    ckpt *c;
    assert_int_equal(ckpt_create(dir, &META, &c), FPTQ_OK);
    ckpt_layer L;
    make_layer(&L, 0, 7);
    char hex[65];
    assert_int_equal(ckpt_write_layer(c, &L, hex), FPTQ_OK);
    ckpt_layer_free(&L);
    return c;
}

static void test_truncated_layer(void **state)
{
    (void)state;
    const char *dir = tpath("trunc");
    ckpt *c = one_layer_checkpoint(dir);
    const char *lp = tpath("trunc/layers/layer-00000.h5");
    struct stat sb;
    assert_int_equal(stat(lp, &sb), 0);
    assert_int_equal(truncate(lp, sb.st_size / 2), 0);
    ckpt_layer got;
    EXPECT_ERROR2(ckpt_read_layer(c, 0, &got), FPTQ_ERR_FORMAT, lp, "layer 0");
    assert_null(got.attn_norm);   /* nothing handed back */
    ckpt_close(c);
}

/* A flipped bit inside the data: HDF5 reads it without complaint (raw data
 * carries no checksum), so only the digest can catch it. */
static void test_flipped_byte(void **state)
{
    (void)state;
    const char *dir = tpath("flip");
    ckpt *c = one_layer_checkpoint(dir);
    const char *lp = tpath("flip/layers/layer-00000.h5");
    ckpt_layer L;
    make_layer(&L, 0, 7);
    size_t n;
    unsigned char *bytes = read_file(lp, &n);
    unsigned char *hit = NULL;
    size_t norm_bytes = HIDDEN * sizeof(float);
    for (size_t i = 0; i + norm_bytes <= n && !hit; i++)
        if (memcmp(bytes + i, L.mlp_norm, norm_bytes) == 0)
            hit = bytes + i;
    assert_non_null(hit);
    hit[norm_bytes / 2] ^= 0x10;
    write_file(lp, bytes, n);
    free(bytes);
    ckpt_layer_free(&L);

    ckpt_layer got;
    EXPECT_ERROR2(ckpt_read_layer(c, 0, &got), FPTQ_ERR_FORMAT, lp, "does not match its manifest digest");
    ckpt_close(c);
}

/* Layer 0's file put where layer 1's should be: readable, but the wrong layer. */
static void test_swapped_layer_file(void **state)
{
    (void)state;
    const char *dir = tpath("swap");
    char lh[2][65], ch[65];
    build_checkpoint(dir, lh, ch);
    size_t n;
    unsigned char *b = read_file(tpath("swap/layers/layer-00000.h5"), &n);
    write_file(tpath("swap/layers/layer-00001.h5"), b, n);
    free(b);
    ckpt *c;
    assert_int_equal(ckpt_open(dir, &c), FPTQ_OK);
    ckpt_layer got;
    EXPECT_ERROR(ckpt_read_layer(c, 1, &got), FPTQ_ERR_FORMAT, "layer-00001.h5");
    ckpt_close(c);
}

static void test_pending_and_incomplete(void **state)
{
    (void)state;
    const char *dir = tpath("pending");
    ckpt *c = one_layer_checkpoint(dir);
    char hex[65];
    EXPECT_ERROR(ckpt_digest(c, hex), FPTQ_ERR_ARG, "shared tensors not written");
    assert_false(ckpt_has_shared(c));
    ckpt_raw_tensor t[3];
    make_shared(t);
    assert_int_equal(ckpt_write_shared(c, t, 3), FPTQ_OK);
    EXPECT_ERROR(ckpt_write_shared(c, t, 3), FPTQ_ERR_ARG, "already written");
    ckpt_close(c);

    assert_int_equal(ckpt_open(dir, &c), FPTQ_OK);
    assert_true(ckpt_layer_done(c, 0));
    assert_false(ckpt_layer_done(c, 1));
    assert_false(ckpt_layer_done(c, 2));   /* out of range is not done */
    assert_string_equal(ckpt_layer_digest(c, 1), "");
    assert_non_null(strstr(ckpt_layer_manifest_json(c, 1), "\"status\": \"pending\""));
    ckpt_layer got;
    EXPECT_ERROR(ckpt_read_layer(c, 1, &got), FPTQ_ERR_ARG, "layer 1 is not done");
    EXPECT_ERROR(ckpt_digest(c, hex), FPTQ_ERR_ARG, "layer 1 is pending");
    assert_string_equal(hex, "");
    ckpt_close(c);
}

/* A kill during a layer write leaves layer-N.h5.tmp.PID.K behind (and one
 * during an index rewrite, index.h5.tmp.PID.K): the layer stays pending, the
 * index that was there before counts, and writing the layer again works.
 * The leftovers are another process's temporary files: left as they are
 * (a process removes only its own, which two runs at once rely on). */
static void test_leftover_tmp(void **state)
{
    (void)state;
    const char *dir = tpath("leftover");
    ckpt *c = one_layer_checkpoint(dir);
    ckpt_close(c);
    const char *tmp = tpath("leftover/layers/layer-00001.h5.tmp");
    write_file(tmp, "\x89HDF\r\n\x1a\n half a file", 20);
    write_file(tpath("leftover/index.h5.tmp"), "\x89HDF\r\n\x1a\n half an index", 22);

    assert_int_equal(ckpt_open(dir, &c), FPTQ_OK);
    assert_true(ckpt_layer_done(c, 0));
    assert_false(ckpt_layer_done(c, 1));
    ckpt_layer L, got;
    make_layer(&L, 1, 8);
    char hex[65];
    assert_int_equal(ckpt_write_layer(c, &L, hex), FPTQ_OK);
    assert_true(ckpt_layer_done(c, 1));
    struct stat sb;
    assert_int_equal(stat(tmp, &sb), 0);   /* not this process's: untouched */
    ckpt_close(c);

    assert_int_equal(ckpt_open(dir, &c), FPTQ_OK);
    assert_true(ckpt_layer_done(c, 1));
    assert_int_equal(ckpt_read_layer(c, 1, &got), FPTQ_OK);
    assert_layers_equal(&L, &got);
    ckpt_layer_free(&got);
    ckpt_layer_free(&L);
    ckpt_close(c);
}

/* A layer the reader would not accept is not written either, and stays pending. */
static void test_rejects_bad_layer(void **state)
{
    (void)state;
    const char *dir = tpath("bad");
    ckpt *c;
    assert_int_equal(ckpt_create(dir, &META, &c), FPTQ_OK);
    ckpt_layer L;
    char hex[65];
    make_layer(&L, 0, 9);
    L.lin[0].q.codes[3] = 16;   /* does not fit 4 bits */
    EXPECT_ERROR(ckpt_write_layer(c, &L, hex), FPTQ_ERR_INTERNAL, "self_attn.q_proj");
    L.lin[0].q.codes[3] = 1;
    L.lin[6].q.n_groups = 5;     /* 172 columns in groups of 32 make 6 */
    EXPECT_ERROR(ckpt_write_layer(c, &L, hex), FPTQ_ERR_INTERNAL, "mlp.down_proj");
    L.lin[6].q.n_groups = 6;
    L.index = 2;
    EXPECT_ERROR(ckpt_write_layer(c, &L, hex), FPTQ_ERR_ARG, "layer 2");
    assert_false(ckpt_layer_done(c, 0));
    struct stat sb;
    assert_int_equal(stat(tpath("bad/layers/layer-00000.h5"), &sb), -1);
    ckpt_layer_free(&L);
    ckpt_close(c);
}

static void test_open_not_a_checkpoint(void **state)
{
    (void)state;
    const char *dir = tpath("empty");
    assert_int_equal(mkdir(dir, 0777), 0);
    ckpt *c;
    EXPECT_ERROR(ckpt_open(dir, &c), FPTQ_ERR_FORMAT, dir);
    write_file(tpath("empty/index.h5"), "not hdf5 at all", 15);
    EXPECT_ERROR(ckpt_open(dir, &c), FPTQ_ERR_FORMAT, "index.h5");
}

/* The checkpoint stores config.json and the model parses it again with the
 * same parser: sizes whose products wrap (issue 14) are refused there too,
 * naming index.h5, instead of crashing eval --checkpoint later. */
static void test_config_in_index_is_bounded(void **state)
{
    (void)state;
    FILE *f = fopen(FPTQ_EXAMPLES "/stories260K/config.json", "rb");
    assert_non_null(f);
    char text[4096];
    size_t n = fread(text, 1, sizeof text - 1, f);
    fclose(f);
    text[n] = '\0';
    cJSON *cfg = cJSON_Parse(text);
    assert_non_null(cfg);
    cJSON_ReplaceItemInObjectCaseSensitive(cfg, "num_attention_heads", cJSON_CreateNumber(406961350020066.0));
    cJSON_ReplaceItemInObjectCaseSensitive(cfg, "num_key_value_heads", cJSON_CreateNumber(203480675010033.0));
    cJSON_ReplaceItemInObjectCaseSensitive(cfg, "head_dim", cJSON_CreateNumber(90656.0));
    char *json = cJSON_PrintUnformatted(cfg);
    cJSON_Delete(cfg);
    assert_non_null(json);
    const ckpt_meta meta = {json, META.recipe_json, META.provenance_json, 5};
    const char *dir = tpath("wrapping-heads");
    ckpt *c;
    assert_int_equal(ckpt_create(dir, &meta, &c), FPTQ_OK);
    ckpt_close(c);
    fptq_model m;
    EXPECT_ERROR2(fptq_model_open_checkpoint(dir, &m), FPTQ_ERR_FORMAT, "index.h5 (config)",
                  "num_attention_heads 406961350020066");
    /* export parses it with the same parser (and once wrote it out) */
    const export_opts eo = {0};
    export_result er;
    EXPECT_ERROR2(fptq_export(dir, tpath("wrapping-heads-export"), &eo, &er), FPTQ_ERR_FORMAT,
                  "index.h5 (config)", "num_attention_heads 406961350020066");
    struct stat sb;
    assert_int_equal(stat(tpath("wrapping-heads-export"), &sb), -1);
    free(json);
}


/* ---- integrity of shared.h5 and index.h5 (issue 14, items 2 and 3) ------------ */

/* Offset of `needle` in file `path`, -1 if absent. */
static long find_bytes(const char *path, const void *needle, size_t n)
{
    size_t len;
    unsigned char *b = read_file(path, &len);
    long at = -1;
    for (size_t i = 0; len >= n && i <= len - n; i++)
        if (memcmp(b + i, needle, n) == 0) {
            at = (long)i;
            break;
        }
    free(b);
    return at;
}

static void patch_byte(const char *path, long at, unsigned char xor_mask, int set, unsigned char value)
{
    size_t len;
    unsigned char *b = read_file(path, &len);
    assert_true(at >= 0 && (size_t)at < len);
    b[at] = set ? value : (unsigned char)(b[at] ^ xor_mask);
    write_file(path, b, len);
    free(b);
}

/* One flipped bit in the embedding's data is refused by every reader that
 * opens the checkpoint, naming shared.h5 and the digests. */
static void test_shared_flipped_bit(void **state)
{
    (void)state;
    const char *dir = tpath("sharedbit");
    char lh[2][65], ch[65];
    build_checkpoint(dir, lh, ch);
    const char *sp = tpath("sharedbit/shared.h5");
    long at = find_bytes(sp, embed_bf16, 32);
    assert_true(at > 0);
    patch_byte(sp, at + 101, 0x01, 0, 0);
    ckpt *c = (ckpt *)1;
    EXPECT_ERROR2(ckpt_open(dir, &c), FPTQ_ERR_FORMAT, "shared.h5", "does not match its digest");
    assert_null(c);
}

/* A shared.h5 replaced by another HDF5 file (a layer's: no embed_tokens) is refused too. */
static void test_shared_replaced(void **state)
{
    (void)state;
    const char *dir = tpath("sharedswap");
    char lh[2][65], ch[65];
    build_checkpoint(dir, lh, ch);
    size_t n;
    unsigned char *b = read_file(tpath("sharedswap/layers/layer-00000.h5"), &n);
    write_file(tpath("sharedswap/shared.h5"), b, n);
    free(b);
    ckpt *c;
    EXPECT_ERROR(ckpt_open(dir, &c), FPTQ_ERR_FORMAT, "shared.h5");
    unlink(tpath("sharedswap/shared.h5"));
    EXPECT_ERROR(ckpt_open(dir, &c), FPTQ_ERR_FORMAT, "shared.h5");
}

/* One byte of the stored config (hidden_size 64 -> 94), of the recipe, of
 * the provenance or of a layer's losses: index.h5 no longer matches its
 * digest, and the checkpoint is refused naming index.h5. */
static void test_index_text_patched(void **state)
{
    (void)state;
    static const struct { const char *needle; int off; unsigned char to; } cases[] = {
        {"\"hidden_size\": 64", 15, '9'},
        {"\"group_size\": 32", 14, '6'},
        {"\"world\": 1", 9, '2'},
        {"\"loss\": ", 8, '9'},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const char *dir = tpath("idxpatch%zu", i);
        char lh[2][65], ch[65];
        build_checkpoint(dir, lh, ch);
        const char *ip = tpath("idxpatch%zu/index.h5", i);
        long at = find_bytes(ip, cases[i].needle, strlen(cases[i].needle));
        assert_true(at > 0);
        patch_byte(ip, at + cases[i].off, 0, 1, cases[i].to);
        ckpt *c = (ckpt *)1;
        EXPECT_ERROR2(ckpt_open(dir, &c), FPTQ_ERR_FORMAT, "index.h5", "digest");
        assert_null(c);
    }
}

/* ---- creation (item 10) ---------------------------------------------------------- */

/* A run killed between mkdir CKPT/layers and its first index leaves the
 * skeleton: that is not a checkpoint yet, and creating one there works. */
static void test_skeleton_dir_is_not_created(void **state)
{
    (void)state;
    const char *dir = tpath("skeleton");
    assert_int_equal(mkdir(dir, 0777), 0);
    assert_int_equal(mkdir(tpath("skeleton/layers"), 0777), 0);
    write_file(tpath("skeleton/index.h5.tmp.123.0"), "\x89HDF\r\n\x1a\n half an index", 22);
    ckpt *c;
    assert_int_equal(ckpt_create(dir, &META, &c), FPTQ_OK);
    ckpt_close(c);
    assert_int_equal(ckpt_open(dir, &c), FPTQ_OK);
    ckpt_close(c);
    /* with index.h5 it is a checkpoint, refused as before */
    EXPECT_ERROR2(ckpt_create(dir, &META, &c), FPTQ_ERR_ARG, dir, "--resume");
}
/* ---- resume's repair of shared.h5, and the lock (items 2, 9, 13) -------------- */

/* ckpt_open_resume sets a damaged shared.h5 aside; written again, the
 * checkpoint has the digest it had. */
static void test_resume_repairs_shared(void **state)
{
    (void)state;
    const char *dir = tpath("repair");
    char lh[2][65], ch[65];
    build_checkpoint(dir, lh, ch);
    const char *sp = tpath("repair/shared.h5");
    patch_byte(sp, find_bytes(sp, embed_bf16, 32) + 7, 0x10, 0, 0);
    ckpt *c;
    /* the layers-only handle of the other ranks neither reads shared.h5 nor rewrites the index */
    assert_int_equal(ckpt_open_layers(dir, &c), FPTQ_OK);
    assert_false(ckpt_has_shared(c));
    assert_true(ckpt_layer_done(c, 1));
    EXPECT_ERROR(ckpt_mark_done(c, 1, lh[1], 0.0, "{}"), FPTQ_ERR_INTERNAL, "layers only");
    ckpt_close(c);
    assert_int_equal(ckpt_open_resume(dir, &c), FPTQ_OK);
    assert_false(ckpt_has_shared(c));
    assert_non_null(ckpt_shared_problem(c));
    assert_non_null(strstr(ckpt_shared_problem(c), "shared.h5"));
    ckpt_raw_tensor t[3];
    make_shared(t);
    assert_int_equal(ckpt_write_shared(c, t, 3), FPTQ_OK);
    assert_null(ckpt_shared_problem(c));
    char hex[65];
    assert_int_equal(ckpt_digest(c, hex), FPTQ_OK);
    assert_string_equal(hex, ch);
    ckpt_close(c);
    assert_int_equal(ckpt_open(dir, &c), FPTQ_OK);
    ckpt_close(c);
}

static int count_entries(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d)
        return -1;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL)
        n += strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0;
    closedir(d);
    return n;
}

static void test_lock(void **state)
{
    (void)state;
    const char *dir = tpath("locked");
    char lh[2][65], ch[65];
    build_checkpoint(dir, lh, ch);
    const int entries = count_entries(dir);
    ckpt_lock *a = NULL, *b = (ckpt_lock *)1;
    assert_int_equal(ckpt_lock_take(dir, 1, &a), FPTQ_OK);
    char pid[32];
    snprintf(pid, sizeof pid, "pid %ld on host ", (long)getpid());
    /* a second holder (another open file: flock conflicts within a process too) */
    EXPECT_ERROR2(ckpt_lock_take(dir, 1, &b), FPTQ_ERR_IO, "in use", pid);
    assert_null(b);
    ckpt_lock_release(a);
    assert_int_equal(count_entries(dir), entries);   /* the lock file went with it */
    assert_int_equal(ckpt_lock_take(dir, 1, &a), FPTQ_OK);
    ckpt_lock_release(a);
    /* without resume a finished checkpoint is refused, and nothing is added */
    EXPECT_ERROR2(ckpt_lock_take(dir, 0, &b), FPTQ_ERR_ARG, dir, "--resume");
    assert_int_equal(count_entries(dir), entries);
    /* a folder that is not a checkpoint is refused untouched */
    const char *other = tpath("notckpt");
    assert_int_equal(mkdir(other, 0777), 0);
    write_file(tpath("notckpt/notes.txt"), "x", 1);
    EXPECT_ERROR(ckpt_lock_take(other, 1, &b), FPTQ_ERR_ARG, "not an fptq checkpoint");
    assert_int_equal(count_entries(other), 1);
    /* a new one: the folder is made for the lock, and removed with it when
     * no checkpoint came of it */
    const char *fresh = tpath("fresh/deeper");
    assert_int_equal(ckpt_lock_take(fresh, 0, &a), FPTQ_OK);
    struct stat sb;
    assert_int_equal(stat(fresh, &sb), 0);
    ckpt_lock_release(a);
    assert_int_equal(stat(fresh, &sb), -1);
    /* one that did come of it stays, without the lock file */
    assert_int_equal(ckpt_lock_take(fresh, 0, &a), FPTQ_OK);
    ckpt *c;
    assert_int_equal(ckpt_create(fresh, &META, &c), FPTQ_OK);
    ckpt_close(c);
    ckpt_lock_release(a);
    assert_int_equal(stat(tpath("fresh/deeper/index.h5"), &sb), 0);
    assert_int_equal(stat(tpath("fresh/deeper/fptq.lock"), &sb), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sha256_vectors),
        cmocka_unit_test(test_sha256_file),
        cmocka_unit_test(test_roundtrip),
        cmocka_unit_test(test_deterministic),
        cmocka_unit_test(test_refuses_existing_dir),
        cmocka_unit_test(test_truncated_layer),
        cmocka_unit_test(test_flipped_byte),
        cmocka_unit_test(test_swapped_layer_file),
        cmocka_unit_test(test_pending_and_incomplete),
        cmocka_unit_test(test_leftover_tmp),
        cmocka_unit_test(test_rejects_bad_layer),
        cmocka_unit_test(test_open_not_a_checkpoint),
        cmocka_unit_test(test_config_in_index_is_bounded),
        cmocka_unit_test(test_shared_flipped_bit),
        cmocka_unit_test(test_shared_replaced),
        cmocka_unit_test(test_index_text_patched),
        cmocka_unit_test(test_skeleton_dir_is_not_created),
        cmocka_unit_test(test_resume_repairs_shared),
        cmocka_unit_test(test_lock),                 
    };
    return cmocka_run_group_tests(tests, setup_dir, remove_dir);
}
