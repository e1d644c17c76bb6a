/*
 * Unit tests for io/export.c and io/safetensors_write.c: dense int32 packing
 * on hand-worked cases (3-bit values straddling words included), fp16 / bf16
 * rounding, the safetensors writer read back by io/safetensors.c, and exports
 * of a handmade checkpoint: codes, zero points and scales where each format
 * puts them, shards and index, and the refusals (ragged group, GPTQ zero
 * point 0), which leave nothing behind.
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
#include <unistd.h>

#include "io/checkpoint.h"
#include "io/export.h"
#include "io/safetensors.h"
#include "io/safetensors_write.h"
#include "kernels/quant.h"

static char tmpdir[64];

static int setup_dir(void **state)
{
    (void)state;
    snprintf(tmpdir, sizeof tmpdir, "/tmp/fptq_test_export.XXXXXX");
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

static const char *tpath(const char *name)
{
    static char buf[16][512];
    static int k;
    char *b = buf[k++ % 16];
    snprintf(b, 512, "%s/%s", tmpdir, name);
    return b;
}

static int exists(const char *p)
{
    struct stat sb;
    return stat(p, &sb) == 0;
}

/* ---- packing --------------------------------------------------------------------- */

static void test_pack_4_and_8_bits(void **state)
{
    (void)state;
    uint8_t v[16];
    for (int i = 0; i < 16; i++)
        v[i] = (uint8_t)i;
    uint32_t w[4] = {0};
    export_pack_dense(v, 16, 1, 4, w);
    assert_int_equal(export_packed_words(16, 4), 2);
    assert_int_equal(w[0], 0x76543210u);
    assert_int_equal(w[1], 0xFEDCBA98u);
    /* a partial last word: the unused nibbles are zero */
    export_pack_dense(v, 9, 1, 4, w);
    assert_int_equal(export_packed_words(9, 4), 2);
    assert_int_equal(w[1], 0x8u);
    const uint8_t b[5] = {1, 2, 3, 4, 0xFF};
    export_pack_dense(b, 5, 1, 8, w);
    assert_int_equal(w[0], 0x04030201u);
    assert_int_equal(w[1], 0xFFu);
    /* stride: a column of a row-major matrix */
    const uint8_t m[3][2] = {{1, 9}, {2, 9}, {3, 9}};
    export_pack_dense(&m[0][0], 3, 2, 4, w);
    assert_int_equal(w[0], 0x321u);
}

static void test_pack_3_bits_straddles(void **state)
{
    (void)state;
    uint8_t v[32] = {0};
    uint32_t w[3];
    assert_int_equal(export_packed_words(32, 3), 3);
    assert_int_equal(export_packed_words(33, 3), 4);
    /* value 10 sits at bits 30..32: its low two bits end word 0, its high bit starts word 1 */
    v[10] = 5;   /* 101b */
    export_pack_dense(v, 32, 1, 3, w);
    assert_int_equal(w[0], 1u << 30);
    assert_int_equal(w[1], 1u);
    assert_int_equal(w[2], 0u);
    /* value 21 at bits 63..65: low bit ends word 1, two high bits start word 2 */
    v[10] = 0;
    v[21] = 6;   /* 110b */
    export_pack_dense(v, 32, 1, 3, w);
    assert_int_equal(w[0], 0u);
    assert_int_equal(w[1], 0u);
    assert_int_equal(w[2], 3u);
    /* every value 7: 96 ones */
    memset(v, 7, sizeof v);
    export_pack_dense(v, 32, 1, 3, w);
    assert_int_equal(w[0], 0xFFFFFFFFu);
    assert_int_equal(w[1], 0xFFFFFFFFu);
    assert_int_equal(w[2], 0xFFFFFFFFu);
    /* value 31 is the last one: bits 29..31 of word 2 */
    memset(v, 0, sizeof v);
    v[31] = 4;
    export_pack_dense(v, 32, 1, 3, w);
    assert_int_equal(w[2], 1u << 31);
}

static void test_pack_matches_fptq_layout(void **state)
{
    (void)state;
    /* for 2, 4 and 8 bits the dense layout is fptq's own per-word packing */
    const int64_t cols = 37;
    uint8_t codes[37];
    int32_t ref[16];
    uint32_t got[16];
    const int bits_list[3] = {2, 4, 8};
    for (int b = 0; b < 3; b++) {
        const int bits = bits_list[b];
        for (int64_t i = 0; i < cols; i++)
            codes[i] = (uint8_t)((i * 7 + 3) & ((1 << bits) - 1));
        quant_pack_int32(codes, 1, cols, bits, ref);
        export_pack_dense(codes, cols, 1, bits, got);
        assert_int_equal(quant_packed_cols(cols, bits), export_packed_words(cols, bits));
        for (int64_t k = 0; k < export_packed_words(cols, bits); k++)
            assert_int_equal((uint32_t)ref[k], got[k]);
    }
}

/* ---- fp16 / bf16 ------------------------------------------------------------------ */

static void test_half_rounding(void **state)
{
    (void)state;
    assert_int_equal(export_f32_to_f16(1.0f), 0x3C00);
    assert_int_equal(export_f32_to_f16(-2.0f), 0xC000);
    assert_int_equal(export_f32_to_f16(65504.0f), 0x7BFF);
    assert_int_equal(export_f32_to_f16(65519.0f), 0x7BFF);
    assert_int_equal(export_f32_to_f16(65520.0f), 0x7C00);        /* the tie rounds to even: infinity */
    assert_int_equal(export_f32_to_f16(0x1p-14f), 0x0400);        /* smallest normal */
    assert_int_equal(export_f32_to_f16(0x1p-24f), 0x0001);        /* smallest subnormal */
    assert_int_equal(export_f32_to_f16(0x1p-25f), 0x0000);        /* tie to even: 0 */
    assert_int_equal(export_f32_to_f16(0x3p-25f), 0x0002);        /* tie to even: 2 */
    assert_int_equal(export_f32_to_f16(1.0f + 0x1p-11f), 0x3C00); /* tie, even */
    assert_int_equal(export_f32_to_f16(1.0f + 0x3p-11f), 0x3C02); /* tie, up to even */
    assert_int_equal(export_f32_to_f16(0x1.ffcp-15f), 0x0400);    /* subnormal rounding up to the smallest normal */
    assert_true((export_f32_to_f16(NAN) & 0x7C00) == 0x7C00 && (export_f32_to_f16(NAN) & 0x3FF) != 0);
    assert_int_equal(export_f32_to_bf16(1.0f), 0x3F80);
    assert_int_equal(export_f32_to_bf16(1.0f + 0x1p-8f), 0x3F80);
    assert_int_equal(export_f32_to_bf16(1.0f + 0x3p-8f), 0x3F82);
    assert_int_equal(export_f32_to_bf16(-0.0f), 0x8000);
    assert_true((export_f32_to_bf16(NAN) & 0x7F80) == 0x7F80 && (export_f32_to_bf16(NAN) & 0x7F) != 0);
}

/* ---- the writer, read back by the reader --------------------------------------------- */

static void test_writer_round_trip(void **state)
{
    (void)state;
    const float a[6] = {1, -2, 3.5f, 0, 1e-3f, -7};
    const int32_t b[5] = {-1, 0, 1, 0x7FFFFFFF, -0x7FFFFFFF};
    const uint16_t c[2] = {0x3F80, 0xC000};
    const st_wtensor t[3] = {
        {.name = "a.weight", .dtype = ST_F32, .ndim = 2, .shape = {2, 3}},
        {.name = "b", .dtype = ST_I32, .ndim = 1, .shape = {5}},
        {.name = "c\"quoted\"", .dtype = ST_BF16, .ndim = 1, .shape = {2}},
    };
    const char *meta[] = {"format", "pt", "note", "x"};
    const char *path = tpath("rt.safetensors");
    st_writer *w;
    assert_int_equal(st_writer_open(path, t, 3, meta, 2, &w), FPTQ_OK);
    /* pieces that do not follow tensor boundaries */
    assert_int_equal(st_writer_write(w, a, 10), FPTQ_OK);
    assert_int_equal(st_writer_current(w), 0);
    assert_int_equal(st_writer_write(w, (const char *)a + 10, 14), FPTQ_OK);
    assert_int_equal(st_writer_current(w), 1);
    assert_int_equal(st_writer_write(w, b, sizeof b), FPTQ_OK);
    assert_int_equal(st_writer_write(w, c, sizeof c), FPTQ_OK);
    assert_int_equal(st_writer_current(w), 3);
    assert_int_not_equal(st_writer_write(w, c, 1), FPTQ_OK);   /* past the end */
    assert_int_equal(st_writer_close(w), FPTQ_OK);

    FILE *f = fopen(path, "rb");
    unsigned char len8[8];
    assert_int_equal(fread(len8, 1, 8, f), 8);
    fclose(f);
    uint64_t hlen = 0;
    for (int i = 0; i < 8; i++)
        hlen |= (uint64_t)len8[i] << (8 * i);
    assert_int_equal(hlen % 8, 0);

    st_file *sf;
    assert_int_equal(st_file_open(path, &sf), FPTQ_OK);
    assert_int_equal(st_file_count(sf), 3);
    const st_tensor *ta = st_file_find(sf, "a.weight"), *tb = st_file_find(sf, "b"),
                    *tc = st_file_find(sf, "c\"quoted\"");
    assert_non_null(ta);
    assert_non_null(tb);
    assert_non_null(tc);
    assert_int_equal(ta->dtype, ST_F32);
    assert_int_equal(ta->ndim, 2);
    assert_int_equal(ta->shape[0], 2);
    assert_int_equal(ta->shape[1], 3);
    assert_memory_equal(ta->data, a, sizeof a);
    assert_int_equal(tb->dtype, ST_I32);
    assert_memory_equal(tb->data, b, sizeof b);
    assert_int_equal(tc->dtype, ST_BF16);
    assert_memory_equal(tc->data, c, sizeof c);
    st_file_close(sf);

    /* an existing file is refused; a short write is caught at close */
    assert_int_not_equal(st_writer_open(path, t, 3, NULL, 0, &w), FPTQ_OK);
    assert_int_equal(st_writer_open(tpath("short.safetensors"), t, 3, NULL, 0, &w), FPTQ_OK);
    assert_int_equal(st_writer_write(w, a, sizeof a), FPTQ_OK);
    assert_int_not_equal(st_writer_close(w), FPTQ_OK);
    /* duplicate names */
    const st_wtensor d[2] = {{.name = "x", .dtype = ST_U8, .ndim = 1, .shape = {1}},
                             {.name = "x", .dtype = ST_U8, .ndim = 1, .shape = {1}}};
    assert_int_not_equal(st_writer_open(tpath("dup.safetensors"), d, 2, NULL, 0, &w), FPTQ_OK);
}

/* ---- exports of a handmade checkpoint --------------------------------------------------- */

#define H 32      /* hidden; q_dim 32, kv_dim 16, intermediate 64 */
#define INTER 64
#define VOCAB 16

static const char *const lin_names[7] = {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj",
                                         "self_attn.o_proj", "mlp.gate_proj",    "mlp.up_proj",
                                         "mlp.down_proj"};
static const int64_t lin_out[7] = {32, 16, 16, 32, INTER, INTER, 32};
static const int64_t lin_in[7] = {32, 32, 32, 32, 32, 32, INTER};

static const char *config_json =
    "{\"architectures\": [\"LlamaForCausalLM\"], \"model_type\": \"llama\", \"hidden_size\": 32, "
    "\"intermediate_size\": 64, \"num_hidden_layers\": 1, \"num_attention_heads\": 2, \"num_key_value_heads\": 1, "
    "\"vocab_size\": 16, \"max_position_embeddings\": 64, \"rms_norm_eps\": 1e-05, \"tie_word_embeddings\": true, "
    "\"torch_dtype\": \"float32\"}";

/* A one-layer checkpoint of 4-bit codes in groups of `gs`; zero points of an
 * asymmetric one are 1 + (row + group) % 15, or 0 at [0][0] when zero_at_origin. */
static void make_checkpoint(const char *dir, int bits, int64_t gs, int sym, int zero_at_origin)
{
    char recipe[512];
    snprintf(recipe, sizeof recipe,
             "{\"scheme\":\"w%da16\",\"method\":\"rtn\",\"weight_format\":\"int\",\"bits\":%d,\"group_size\":%lld,"
             "\"sym\":%s,\"act_order\":false,\"damp\":0.01,\"activations\":\"none\"}",
             bits, bits, (long long)gs, sym ? "true" : "false");
    ckpt_meta meta = {.config_json = config_json, .recipe_json = recipe, .provenance_json = "{}", .n_layers = 1};
    ckpt *c;
    assert_int_equal(ckpt_create(dir, &meta, &c), FPTQ_OK);
    float embed[VOCAB * H], norm[H];
    for (int i = 0; i < VOCAB * H; i++)
        embed[i] = (float)(i % 13) * 0.25f - 1.0f;
    for (int i = 0; i < H; i++)
        norm[i] = 1.0f + (float)i / 64.0f;
    ckpt_raw_tensor sh[2] = {
        {.name = "embed_tokens", .dtype = "F32", .ndim = 2, .shape = {VOCAB, H}, .data = embed},
        {.name = "norm", .dtype = "F32", .ndim = 1, .shape = {H, 0}, .data = norm},
    };
    assert_int_equal(ckpt_write_shared(c, sh, 2), FPTQ_OK);
    ckpt_layer L = {.index = 0, .hidden = H, .n_linears = 7};
    L.attn_norm = calloc(H, sizeof(float));
    L.mlp_norm = calloc(H, sizeof(float));
    for (int i = 0; i < H; i++)
        L.attn_norm[i] = L.mlp_norm[i] = 0.5f + (float)i;
    const quant_spec spec = {.format = QFMT_INT, .bits = bits, .group_size = gs, .sym = sym};
    for (int k = 0; k < 7; k++) {
        ckpt_linear *lin = &L.lin[k];
        snprintf(lin->name, sizeof lin->name, "%s", lin_names[k]);
        snprintf(lin->method, sizeof lin->method, "rtn");
        assert_int_equal(quant_tensor_alloc(&spec, lin_out[k], lin_in[k], 0, &lin->q), FPTQ_OK);
        quant_tensor *q = &lin->q;
        for (int64_t i = 0; i < q->rows * q->cols; i++)
            q->codes[i] = (uint8_t)((i * 5 + k) % (1 << bits));
        for (int64_t r = 0; r < q->rows; r++)
            for (int64_t g = 0; g < q->n_groups; g++) {
                q->scales[r * q->n_groups + g] = 0.01f * (float)(1 + (r + 3 * g) % 7) + 1e-7f * (float)k;
                q->zeros[r * q->n_groups + g] = sym ? 1 << (bits - 1) : 1 + (int32_t)((r + g) % 15);
            }
        if (zero_at_origin && k == 6)
            q->zeros[0] = 0;
    }
    char digest[65];
    assert_int_equal(ckpt_write_layer(c, &L, digest), FPTQ_OK);
    ckpt_layer_free(&L);
    ckpt_close(c);
}

static const st_tensor *get(const st_model *m, const char *lin, const char *part)
{
    char name[128];
    snprintf(name, sizeof name, "model.layers.0.%s.%s", lin, part);
    const st_tensor *t = st_model_find(m, name);
    if (!t)
        fail_msg("missing %s", name);
    return t;
}

static void read_layer(const char *ck, ckpt_layer *L)
{
    ckpt *c;
    assert_int_equal(ckpt_open(ck, &c), FPTQ_OK);
    assert_int_equal(ckpt_read_layer(c, 0, L), FPTQ_OK);
    ckpt_close(c);
}

static uint32_t word_at(const st_tensor *t, int64_t i)
{
    uint32_t w;
    memcpy(&w, t->data + 4 * i, 4);
    return w;
}

/* Value i of a dense bit stream of words at stride `stride` (in words). */
static unsigned dense_at(const st_tensor *t, int64_t first, int64_t stride, int64_t i, int bits)
{
    const int64_t bit = i * bits, w = bit / 32;
    const int off = (int)(bit % 32);
    uint64_t v = word_at(t, first + w * stride);
    if (off + bits > 32)
        v |= (uint64_t)word_at(t, first + (w + 1) * stride) << 32;
    return (unsigned)((v >> off) & ((1u << bits) - 1));
}

static void test_export_compressed_tensors(void **state)
{
    (void)state;
    char ck[512];
    snprintf(ck, sizeof ck, "%s", tpath("ck_ct"));
    make_checkpoint(ck, 4, 16, 0, 0);
    export_opts o = {.format = EXPORT_COMPRESSED_TENSORS};
    export_result r;
    assert_int_equal(fptq_export(ck, tpath("out_ct"), &o, &r), FPTQ_OK);
    assert_int_equal(r.layers, 1);
    assert_int_equal(r.shards, 1);
    st_model *m;
    assert_int_equal(st_model_open(tpath("out_ct"), &m), FPTQ_OK);
    ckpt_layer L;
    read_layer(ck, &L);
    for (int k = 0; k < 7; k++) {
        const quant_tensor *q = &L.lin[k].q;
        const st_tensor *wp = get(m, lin_names[k], "weight_packed"), *sc = get(m, lin_names[k], "weight_scale"),
                        *zp = get(m, lin_names[k], "weight_zero_point"), *sh = get(m, lin_names[k], "weight_shape");
        assert_int_equal(wp->dtype, ST_I32);
        assert_int_equal(wp->shape[0], q->rows);
        assert_int_equal(wp->shape[1], q->cols * 4 / 32);
        for (int64_t r0 = 0; r0 < q->rows; r0++)
            for (int64_t c = 0; c < q->cols; c++)
                assert_int_equal(dense_at(wp, r0 * wp->shape[1], 1, c, 4), q->codes[r0 * q->cols + c]);
        assert_int_equal(sc->dtype, ST_F32);
        assert_int_equal(sc->shape[1], q->n_groups);
        assert_memory_equal(sc->data, q->scales, (size_t)(q->rows * q->n_groups) * 4);
        /* zero points packed along the output rows: [rows / 8, groups] */
        assert_int_equal(zp->shape[0], q->rows * 4 / 32);
        assert_int_equal(zp->shape[1], q->n_groups);
        for (int64_t g = 0; g < q->n_groups; g++)
            for (int64_t r0 = 0; r0 < q->rows; r0++)
                assert_int_equal(dense_at(zp, g, q->n_groups, r0, 4), (unsigned)q->zeros[r0 * q->n_groups + g]);
        int64_t shape[2];
        memcpy(shape, sh->data, 16);
        assert_int_equal(shape[0], q->rows);
        assert_int_equal(shape[1], q->cols);
    }
    /* unquantized tensors in the model's dtype, as stored */
    const st_tensor *n = st_model_find(m, "model.layers.0.input_layernorm.weight");
    assert_non_null(n);
    assert_int_equal(n->dtype, ST_F32);
    assert_memory_equal(n->data, L.attn_norm, H * 4);
    assert_non_null(st_model_find(m, "model.embed_tokens.weight"));
    assert_null(st_model_find(m, "lm_head.weight"));   /* tied */
    ckpt_layer_free(&L);
    st_model_close(m);
    assert_true(exists(tpath("out_ct/config.json")));
}

static void test_export_gptq_layout(void **state)
{
    (void)state;
    char ck[512];
    snprintf(ck, sizeof ck, "%s", tpath("ck_gptq"));
    make_checkpoint(ck, 4, 16, 0, 0);
    export_opts o = {.format = EXPORT_GPTQ, .max_shard_bytes = 2000};
    export_result r;
    assert_int_equal(fptq_export(ck, tpath("out_gptq"), &o, &r), FPTQ_OK);
    assert_true(r.shards > 1);
    assert_true(exists(tpath("out_gptq/quantize_config.json")));
    st_model *m;
    assert_int_equal(st_model_open(tpath("out_gptq"), &m), FPTQ_OK);
    ckpt_layer L;
    read_layer(ck, &L);
    for (int k = 0; k < 7; k++) {
        const quant_tensor *q = &L.lin[k].q;
        const int64_t out = q->rows, in = q->cols, ng = q->n_groups;
        const st_tensor *qw = get(m, lin_names[k], "qweight"), *qz = get(m, lin_names[k], "qzeros"),
                        *sc = get(m, lin_names[k], "scales"), *gi = get(m, lin_names[k], "g_idx");
        /* qweight [in / 8, out]: column j packs input column k of row j */
        assert_int_equal(qw->shape[0], in / 8);
        assert_int_equal(qw->shape[1], out);
        for (int64_t j = 0; j < out; j++)
            for (int64_t c = 0; c < in; c++)
                assert_int_equal(dense_at(qw, j, out, c, 4), q->codes[j * in + c]);
        /* qzeros [groups, out / 8], zero minus one */
        assert_int_equal(qz->shape[0], ng);
        assert_int_equal(qz->shape[1], out / 8);
        for (int64_t g = 0; g < ng; g++)
            for (int64_t j = 0; j < out; j++)
                assert_int_equal(dense_at(qz, g * (out / 8), 1, j, 4) + 1, (unsigned)q->zeros[j * ng + g]);
        /* scales [groups, out] */
        for (int64_t g = 0; g < ng; g++)
            for (int64_t j = 0; j < out; j++) {
                float s;
                memcpy(&s, sc->data + 4 * (g * out + j), 4);
                assert_true(s == q->scales[j * ng + g]);
            }
        for (int64_t c = 0; c < in; c++)
            assert_int_equal((int32_t)word_at(gi, c), (int32_t)(c / 16));
    }
    ckpt_layer_free(&L);
    st_model_close(m);
}

static float f16_value(uint16_t h)   /* normal numbers only, as the scales here are */
{
    const int e = (h >> 10) & 0x1F, m = h & 0x3FF;
    const float v = ldexpf((float)(m | 0x400), e - 25);
    return (h & 0x8000) ? -v : v;
}

static void test_export_dequantized_and_scale_dtype(void **state)
{
    (void)state;
    char ck[512];
    snprintf(ck, sizeof ck, "%s", tpath("ck_deq"));
    make_checkpoint(ck, 4, 16, 1, 0);
    export_opts o = {.format = EXPORT_DEQUANTIZED, .scales = EXPORT_SCALES_F16};
    export_result r;
    assert_int_equal(fptq_export(ck, tpath("out_deq"), &o, &r), FPTQ_OK);
    assert_true(r.scales_rounded > 0 && r.max_scale_rel_change < 1e-3);
    st_model *m;
    assert_int_equal(st_model_open(tpath("out_deq"), &m), FPTQ_OK);
    ckpt_layer L;
    read_layer(ck, &L);
    quant_tensor *q = &L.lin[6].q;
    for (int64_t i = 0; i < q->rows * q->n_groups; i++)   /* what --scale-dtype f16 stores */
        q->scales[i] = f16_value(export_f32_to_f16(q->scales[i]));
    float *W = calloc((size_t)(q->rows * q->cols), sizeof(float));
    quant_dequantize(q, W);
    const st_tensor *t = get(m, "mlp.down_proj", "weight");
    assert_int_equal(t->dtype, ST_F32);
    assert_memory_equal(t->data, W, (size_t)(q->rows * q->cols) * 4);
    free(W);
    ckpt_layer_free(&L);
    st_model_close(m);
}

static void test_export_refusals_leave_nothing(void **state)
{
    (void)state;
    export_opts o = {.format = EXPORT_GPTQ};
    export_result r;
    /* a GPTQ zero point of 0: found in the data, after shards were started */
    char ck[512];
    snprintf(ck, sizeof ck, "%s", tpath("ck_zero"));
    make_checkpoint(ck, 4, 16, 0, 1);
    fptq_clear_error();
    assert_int_equal(fptq_export(ck, tpath("out_zero"), &o, &r), FPTQ_ERR_UNSUPPORTED);
    assert_non_null(strstr(fptq_last_error(), "zero point 0"));
    assert_non_null(strstr(fptq_last_error(), "compressed-tensors holds it"));
    assert_false(exists(tpath("out_zero")));
    fptq_clear_error();
    o.format = EXPORT_COMPRESSED_TENSORS;   /* which holds it */
    assert_int_equal(fptq_export(ck, tpath("out_zero_ct"), &o, &r), FPTQ_OK);
    /* a ragged last group: 64 input columns of down_proj in groups of 24 */
    char ck2[512];
    snprintf(ck2, sizeof ck2, "%s", tpath("ck_ragged"));
    make_checkpoint(ck2, 4, 24, 1, 0);
    for (int f = 0; f < 2; f++) {
        o.format = f ? EXPORT_GPTQ : EXPORT_COMPRESSED_TENSORS;
        assert_int_equal(fptq_export(ck2, tpath("out_ragged"), &o, &r), FPTQ_ERR_UNSUPPORTED);
        assert_non_null(strstr(fptq_last_error(), "ragged"));
        assert_false(exists(tpath("out_ragged")));
        fptq_clear_error();
    }
    o.format = EXPORT_DEQUANTIZED;   /* holds any scheme */
    assert_int_equal(fptq_export(ck2, tpath("out_ragged_deq"), &o, &r), FPTQ_OK);
    /* an existing directory is never written into */
    assert_int_equal(fptq_export(ck2, tpath("out_ragged_deq"), &o, &r), FPTQ_ERR_ARG);
    fptq_clear_error();
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_pack_4_and_8_bits),
        cmocka_unit_test(test_pack_3_bits_straddles),
        cmocka_unit_test(test_pack_matches_fptq_layout),
        cmocka_unit_test(test_half_rounding),
        cmocka_unit_test(test_writer_round_trip),
        cmocka_unit_test(test_export_compressed_tensors),
        cmocka_unit_test(test_export_gptq_layout),
        cmocka_unit_test(test_export_dequantized_and_scale_dtype),
        cmocka_unit_test(test_export_refusals_leave_nothing),
    };
    return cmocka_run_group_tests(tests, setup_dir, remove_dir);
}
