/*
 * Quantizers of kernels/quant.h against hand-computed cases, exhaustive FP8
 * checks, plain loops (X^T X, an unblocked double-precision GPTQ) and GPTQ's
 * own algebra (H = I is RTN; the returned loss is the damped proxy loss / 2).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "kernels/quant.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static uint64_t rng_state = 0x9E3779B97F4A7C15ull;
static void rng_seed(uint64_t s) { rng_state = s * 0x9E3779B97F4A7C15ull + 1; }
static float frand(void) /* uniform in [-1, 1) */
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (float)((rng_state >> 11) * (1.0 / 9007199254740992.0)) * 2.0f - 1.0f;
}
static float *rand_vec(int64_t n)
{
    float *v = malloc((size_t)n * sizeof(float));
    assert_non_null(v);
    for (int64_t i = 0; i < n; i++)
        v[i] = frand();
    return v;
}
static void *xmalloc(size_t n)
{
    void *p = calloc(n ? n : 1, 1);
    assert_non_null(p);
    return p;
}

/* ---- INT fit and RTN -------------------------------------------------------- */

typedef struct fit_case {
    int bits, sym;
    float clip;
    int n;
    float w[6];
    float scale;
    int32_t zero;
    uint8_t codes[6];
} fit_case;

/* Scales chosen exactly representable (range / maxq = 1 or 0.5), so that
 * every expected code, ties included, is computed by hand without rounding
 * doubts: x.5 values pin round-half-to-even. */
static void test_fit_int_hand(void **state)
{
    (void)state;
    static const fit_case cases[] = {
        /* asym 4-bit, range [-3, 12]: s = 15/15, zero = 3; 2.5 -> 2, 3.5 -> 4 (even) */
        {4, 0, 1.0f, 5, {-3.0f, 2.5f, 3.5f, 12.0f, 0.49f}, 1.0f, 3, {0, 5, 7, 15, 3}},
        /* asym 8-bit, range [-51, 204]: s = 1, zero = 51; 0.5 -> 0, 1.5 -> 2, -0.5 -> -0 */
        {8, 0, 1.0f, 5, {-51.0f, 204.0f, 0.5f, 1.5f, -0.5f}, 1.0f, 51, {0, 255, 51, 53, 51}},
        /* asym 3-bit, only positive: range [0, 7], zero 0 */
        {3, 0, 1.0f, 4, {1.0f, 2.5f, 7.0f, 6.5f}, 1.0f, 0, {1, 2, 7, 6}},
        /* asym 4-bit clipped to half of [-3, 12]: [-1.5, 6], s = 0.5, zero = 3; 12 clamps */
        {4, 0, 0.5f, 3, {-3.0f, 12.0f, 1.25f}, 0.5f, 3, {0, 15, 5}},
        /* sym 3-bit, max|w| = 3.5: s = 7/7, zero = 4; -3.5 -> -4, 3.5 -> 4 clamps to 7 */
        {3, 1, 1.0f, 5, {-3.5f, 1.5f, 2.5f, -0.5f, 3.5f}, 1.0f, 4, {0, 6, 6, 4, 7}},
        /* sym 4-bit, max|w| = 7.5: s = 1, zero = 8; all positive still uses 2 max|w| */
        {4, 1, 1.0f, 3, {7.5f, 0.5f, 1.5f}, 1.0f, 8, {15, 8, 10}},
        {4, 1, 1.0f, 3, {-7.5f, -0.5f, 6.5f}, 1.0f, 8, {0, 8, 14}},
        /* sym 8-bit, max|w| = 127.5: s = 1, zero = 128 */
        {8, 1, 1.0f, 4, {127.5f, -127.5f, 0.5f, -1.5f}, 1.0f, 128, {255, 0, 128, 126}},
        /* all-zero groups: s = 1; zero 0 (asym) or 2^(b-1) (sym), and 0 dequantizes to 0 */
        {4, 0, 1.0f, 3, {0.0f, 0.0f, 0.0f}, 1.0f, 0, {0, 0, 0}},
        {4, 1, 1.0f, 3, {0.0f, 0.0f, 0.0f}, 1.0f, 8, {8, 8, 8}},
    };
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        const fit_case *c = &cases[k];
        float s;
        int32_t z;
        quant_fit_int(c->w, c->n, 1, c->bits, c->sym, c->clip, &s, &z);
        assert_true(s == c->scale); /* exact: the ranges above divide exactly */
        assert_int_equal(z, c->zero);
        for (int i = 0; i < c->n; i++)
            assert_int_equal(quant_int_code(c->w[i], s, z, c->bits), c->codes[i]);
    }
    /* a scale that does not divide exactly: the documented formula, in float */
    const float w[] = {-1.0f, 3.0f, 9.0f, -9.0f};
    float s;
    int32_t z;
    quant_fit_int(w, 2, 1, 4, 0, 1.0f, &s, &z);
    assert_true(s == 4.0f / 15.0f); /* the same single float division */
    assert_int_equal(z, 4);          /* round(3.75) */
    /* stride picks every other value: {-1, 9} */
    quant_fit_int(w, 2, 2, 4, 0, 1.0f, &s, &z);
    assert_true(s == 10.0f / 15.0f);
    assert_int_equal(z, 2); /* 1 / s is 1.5 in float, and 1.5 goes to 2 */
    /* NaN codes to 0 instead of an undefined conversion */
    assert_int_equal(quant_int_code(NAN, 1.0f, 3, 4), 0);
}

static void test_rtn_matrix_and_dequantize(void **state)
{
    (void)state;
    /* 2 x 8, groups of 4, asym 4-bit; row 1, group 1 is all zero */
    const float W[16] = {-3, 12, 2.5f, 3.5f, 0, 7.5f, 15, 1, /* */ 1, 2, 3, 4, 0, 0, 0, 0};
    const quant_spec spec = {QFMT_INT, 4, 4, 0};
    quant_tensor q;
    assert_int_equal(quant_tensor_alloc(&spec, 2, 8, 0, &q), FPTQ_OK);
    assert_int_equal(q.n_groups, 2);
    assert_int_equal(quant_rtn(W, 2, 8, NULL, &q), FPTQ_OK);
    /* row 1: s = 4/15 rounds up in float, so 2 / s is the float just below 7.5 */
    const uint8_t codes[16] = {0, 15, 5, 7, 0, 8, 15, 1, /* */ 4, 7, 11, 15, 0, 0, 0, 0};
    const float scales[4] = {1.0f, 1.0f, 4.0f / 15.0f, 1.0f};
    const int32_t zeros[4] = {3, 0, 0, 0};
    assert_memory_equal(q.codes, codes, sizeof codes);
    assert_memory_equal(q.scales, scales, sizeof scales);
    assert_memory_equal(q.zeros, zeros, sizeof zeros);
    float D[16];
    quant_dequantize(&q, D);
    for (int i = 0; i < 16; i++) {
        const int64_t g = (i / 8) * 2 + (i % 8) / 4;
        /* exact: (code - zero) * scale is one float product of small integers */
        assert_true(D[i] == (float)(codes[i] - zeros[g]) * scales[g]);
    }
    /* a clip ratio per [row, group] */
    const float clip[4] = {0.5f, 1.0f, 1.0f, 1.0f};
    assert_int_equal(quant_rtn(W, 2, 8, clip, &q), FPTQ_OK);
    assert_true(q.scales[0] == 0.5f);
    assert_int_equal(q.zeros[0], 3);
    /* g_idx, when present, decides the group of each column in dequantize */
    quant_tensor p;
    assert_int_equal(quant_tensor_alloc(&spec, 1, 8, 1, &p), FPTQ_OK);
    for (int c = 0; c < 8; c++) {
        assert_int_equal(p.g_idx[c], c / 4); /* allocated as contiguous groups */
        p.g_idx[c] = c % 2;
        p.codes[c] = 5;
    }
    p.scales[0] = 1.0f, p.scales[1] = 2.0f, p.zeros[0] = 4, p.zeros[1] = 3;
    assert_int_equal(quant_group_of(&p, 3), 1);
    quant_dequantize(&p, D);
    for (int c = 0; c < 8; c++)
        assert_true(D[c] == (c % 2 ? 4.0f : 1.0f)); /* exact small integers */
    quant_tensor_free(&p);
    quant_tensor_free(&q);
    assert_null(q.codes);
}

static void test_rtn_ragged_groups(void **state)
{
    (void)state;
    const int64_t rows = 3, cols = 172, G = 32;
    const quant_spec spec = {QFMT_INT, 4, G, 0};
    assert_int_equal(quant_n_groups(&spec, cols), 6);
    const quant_spec per_row = {QFMT_INT, 4, 0, 0}, fp8 = {QFMT_FP8_E4M3, 8, 32, 0};
    assert_int_equal(quant_n_groups(&per_row, cols), 1);
    assert_int_equal(quant_n_groups(&fp8, cols), 1);
    /* w = column + 1 (row 0): each group's scale is its last column + 1 over 15,
     * so a group boundary in the wrong place shows in the scale */
    float *W = rand_vec(rows * cols);
    for (int64_t c = 0; c < cols; c++)
        W[c] = (float)(c + 1);
    quant_tensor q;
    assert_int_equal(quant_tensor_alloc(&spec, rows, cols, 0, &q), FPTQ_OK);
    assert_int_equal(q.n_groups, 6);
    assert_int_equal(quant_rtn(W, rows, cols, NULL, &q), FPTQ_OK);
    for (int64_t g = 0; g < 6; g++) {
        const int64_t last = g < 5 ? (g + 1) * G : cols; /* the ragged group ends at 172 */
        assert_true(q.scales[g] == (float)last / 15.0f); /* the same float division */
        assert_int_equal(q.zeros[g], 0);
    }
    assert_int_equal(quant_group_of(&q, 159), 4);
    assert_int_equal(quant_group_of(&q, 160), 5);
    assert_int_equal(quant_group_of(&q, 171), 5);
    float *D = xmalloc((size_t)(rows * cols) * sizeof(float));
    quant_dequantize(&q, D);
    for (int64_t r = 0; r < rows; r++)
        for (int64_t c = 0; c < cols; c++) {
            const float s = q.scales[r * 6 + c / G];
            const float d = fabsf(D[r * cols + c] - W[r * cols + c]);
            /* half a step, plus the float roundings of s, w / s and (code - z) s,
             * a few units of 2^-24 of |W| and |D| (a tie is exactly s / 2 away) */
            assert_true(d <= 0.5f * s + 4 * 0x1p-24f * (fabsf(W[r * cols + c]) + fabsf(D[r * cols + c])));
        }
    quant_tensor_free(&q);
    free(W);
    free(D);
}

static void test_tensor_alloc_checks(void **state)
{
    (void)state;
    quant_tensor q;
    const quant_spec bad_bits = {QFMT_INT, 9, 0, 0}, fp8 = {QFMT_FP8_E4M3, 8, 0, 0};
    fptq_clear_error();
    assert_int_equal(quant_tensor_alloc(&bad_bits, 2, 2, 0, &q), FPTQ_ERR_ARG);
    fptq_clear_error();
    /* rows * cols overflows int64: refused before any allocation */
    const quant_spec s4 = {QFMT_INT, 4, 128, 0};
    assert_int_equal(quant_tensor_alloc(&s4, INT64_MAX / 2, 3, 0, &q), FPTQ_ERR_ARG);
    assert_null(q.codes);
    fptq_clear_error();
    assert_int_equal(quant_tensor_alloc(&fp8, 2, 5, 0, &q), FPTQ_OK);
    assert_null(q.zeros);
    assert_int_equal(q.n_groups, 1);
    quant_tensor_free(&q);
}

/* ---- packing ---------------------------------------------------------------------- */

static void test_pack_roundtrip(void **state)
{
    (void)state;
    const int bits_list[] = {2, 3, 4, 5, 8};
    const int64_t cols_list[] = {1, 7, 10, 33, 172, 173};
    const int64_t rows = 3;
    for (size_t b = 0; b < sizeof bits_list / sizeof bits_list[0]; b++)
        for (size_t k = 0; k < sizeof cols_list / sizeof cols_list[0]; k++) {
            const int bits = bits_list[b];
            const int64_t cols = cols_list[k], pc = quant_packed_cols(cols, bits);
            assert_int_equal(pc, (cols + 32 / bits - 1) / (32 / bits));
            uint8_t *codes = xmalloc((size_t)(rows * cols)), *back = xmalloc((size_t)(rows * cols));
            int32_t *packed = xmalloc((size_t)(rows * pc) * sizeof(int32_t));
            for (int64_t i = 0; i < rows * cols; i++)
                codes[i] = (uint8_t)((frand() + 1.0f) * 0.5f * (float)(1 << bits)) & ((1 << bits) - 1);
            codes[0] = (uint8_t)((1 << bits) - 1); /* the top code, sign bit of a word for 2/4/8 bits */
            quant_pack_int32(codes, rows, cols, bits, packed);
            quant_unpack_int32(packed, rows, cols, bits, back);
            assert_memory_equal(codes, back, (size_t)(rows * cols));
            free(codes);
            free(back);
            free(packed);
        }
    /* the layout: least significant bits first */
    const uint8_t c4[8] = {1, 2, 3, 4, 5, 6, 7, 8};
    int32_t w4;
    quant_pack_int32(c4, 1, 8, 4, &w4);
    assert_int_equal((uint32_t)w4, 0x87654321u);
    /* 3 bits: 10 codes per word, the top 2 bits zero */
    uint8_t c3[11];
    memset(c3, 7, sizeof c3);
    int32_t w3[2];
    assert_int_equal(quant_packed_cols(11, 3), 2);
    quant_pack_int32(c3, 1, 11, 3, w3);
    assert_int_equal((uint32_t)w3[0], 0x3FFFFFFFu);
    assert_int_equal((uint32_t)w3[1], 7u);
    const uint8_t c2[3] = {1, 2, 3};
    int32_t w2;
    quant_pack_int32(c2, 1, 3, 2, &w2);
    assert_int_equal((uint32_t)w2, 0x39u); /* 11 10 01 */
}

/* ---- FP8 E4M3 ------------------------------------------------------------------------ */

static void test_fp8_every_code(void **state)
{
    (void)state;
    for (int b = 0; b < 256; b++) {
        const float f = fp8_e4m3_to_f32((uint8_t)b);
        const uint8_t back = fp8_e4m3_from_f32(f);
        if ((b & 0x7F) == 0x7F) {
            assert_true(isnan(f));
            assert_int_equal(back & 0x7F, 0x7F); /* a NaN code */
        } else {
            assert_false(isnan(f));
            assert_int_equal(back, b);
            assert_int_equal(!!signbit(f), b >> 7); /* -0 stays -0 */
        }
    }
    /* magnitudes increase strictly with the code, up to 448 */
    for (int b = 0; b < 0x7E; b++)
        assert_true(fp8_e4m3_to_f32((uint8_t)b) < fp8_e4m3_to_f32((uint8_t)(b + 1)));
    /* exact known values: powers of two and 448 are exact in fp32 */
    assert_true(fp8_e4m3_to_f32(0x7E) == 448.0f);
    assert_true(fp8_e4m3_to_f32(0xFE) == -448.0f);
    assert_true(fp8_e4m3_to_f32(0x38) == 1.0f);
    assert_true(fp8_e4m3_to_f32(0x01) == 0x1p-9f); /* smallest subnormal */
    assert_true(fp8_e4m3_to_f32(0x07) == 7 * 0x1p-9f);
    assert_true(fp8_e4m3_to_f32(0x08) == 0x1p-6f); /* smallest normal */
    assert_true(fp8_e4m3_to_f32(0x80) == 0.0f && signbit(fp8_e4m3_to_f32(0x80)));
    assert_int_equal(fp8_e4m3_from_f32(-0.0f), 0x80);
    assert_int_equal(fp8_e4m3_from_f32(0.0f), 0x00);
}

static void test_fp8_rounding_and_saturation(void **state)
{
    (void)state;
    /* ties to even: 1.0625 lies halfway between 1.0 (m=0) and 1.125 (m=1) */
    assert_int_equal(fp8_e4m3_from_f32(1.0625f), 0x38);
    assert_int_equal(fp8_e4m3_from_f32(1.1875f), 0x3A); /* 1.125 | 1.25: to m=2 */
    assert_int_equal(fp8_e4m3_from_f32(-1.0625f), 0xB8);
    assert_int_equal(fp8_e4m3_from_f32(1.06f), 0x38); /* below the tie */
    assert_int_equal(fp8_e4m3_from_f32(1.07f), 0x39); /* above it */
    assert_int_equal(fp8_e4m3_from_f32(1.96875f), 0x40); /* 1.875 | 2.0: carries into the exponent */
    /* subnormals: multiples of 2^-9, ties to even */
    assert_int_equal(fp8_e4m3_from_f32(0x1p-10f), 0x00);      /* 0.5 ulp -> 0 */
    assert_int_equal(fp8_e4m3_from_f32(-0x1p-10f), 0x80);     /* -> -0 */
    assert_int_equal(fp8_e4m3_from_f32(3 * 0x1p-10f), 0x02);  /* 1.5 -> 2 */
    assert_int_equal(fp8_e4m3_from_f32(5 * 0x1p-10f), 0x02);  /* 2.5 -> 2 */
    assert_int_equal(fp8_e4m3_from_f32(0x1.4p-7f), 0x05);     /* 5 * 2^-9, exact */
    assert_int_equal(fp8_e4m3_from_f32(15 * 0x1p-10f), 0x08); /* 7.5 -> 8, the smallest normal */
    assert_int_equal(fp8_e4m3_from_f32(1e-30f), 0x00);
    /* saturation: 432 is the tie between 416 (m=5) and 448 (m=6) */
    assert_int_equal(fp8_e4m3_from_f32(432.0f), 0x7E);
    assert_int_equal(fp8_e4m3_from_f32(431.0f), 0x7D);
    assert_int_equal(fp8_e4m3_from_f32(448.0f), 0x7E);
    assert_int_equal(fp8_e4m3_from_f32(449.0f), 0x7E);
    assert_int_equal(fp8_e4m3_from_f32(464.0f), 0x7E); /* would round to 480 */
    assert_int_equal(fp8_e4m3_from_f32(1e30f), 0x7E);
    assert_int_equal(fp8_e4m3_from_f32(-500.0f), 0xFE);
    assert_int_equal(fp8_e4m3_from_f32(INFINITY), 0x7E); /* saturating, like __NV_SATFINITE */
    assert_int_equal(fp8_e4m3_from_f32(-INFINITY), 0xFE);
    assert_int_equal(fp8_e4m3_from_f32(NAN), 0x7F);
}

static void test_fp8_rtn(void **state)
{
    (void)state;
    /* row 0: max 896 -> scale 2; row 1 all zero -> scale 1 */
    const float W[6] = {896.0f, -3.0f, 1.0f, 0.0f, 0.0f, 0.0f};
    const quant_spec spec = {QFMT_FP8_E4M3, 8, 0, 0};
    quant_tensor q;
    assert_int_equal(quant_tensor_alloc(&spec, 2, 3, 0, &q), FPTQ_OK);
    assert_int_equal(quant_rtn(W, 2, 3, NULL, &q), FPTQ_OK);
    assert_true(q.scales[0] == 2.0f && q.scales[1] == 1.0f); /* 896 / 448 is exact */
    const uint8_t codes[6] = {0x7E, 0xBC, 0x30, 0, 0, 0};    /* 448, -1.5, 0.5 */
    assert_memory_equal(q.codes, codes, 6);
    float D[6];
    quant_dequantize(&q, D);
    for (int i = 0; i < 6; i++)
        assert_true(D[i] == W[i]); /* every value is representable after scaling */
    quant_tensor_free(&q);
}

/* ---- activation fake-quant ---------------------------------------------------------- */

static void test_act_quant(void **state)
{
    (void)state;
    /* values whose quotients by the scale are exact, ties included */
    float x[6] = {0.25f, 0.75f, -0.25f, 100.0f, -100.0f, 1.0f};
    const act_quant st = {ACTQ_INT8_STATIC, 0.5f};
    act_quant_apply(&st, x, 1, 6);
    const float xs[6] = {0.0f, 1.0f, -0.0f, 63.5f, -63.5f, 1.0f}; /* 0.5->0, 1.5->2, clamp 127 */
    for (int i = 0; i < 6; i++)
        assert_true(x[i] == xs[i]); /* exact: integers times 0.5 */

    /* dynamic: scale per row = max|x| / 127 -> 1 and 2; a zero row stays zero */
    float y[12] = {127.0f, -63.5f, 0.4f, 0.6f, 254.0f, 1.0f, 3.0f, -2.0f, 0, 0, 0, 0};
    const act_quant dyn = {ACTQ_INT8_DYNAMIC, 0.0f};
    act_quant_apply(&dyn, y, 3, 4);
    const float ys[12] = {127.0f, -64.0f, 0.0f, 1.0f, 254.0f, 0.0f, 4.0f, -2.0f, 0, 0, 0, 0};
    for (int i = 0; i < 12; i++)
        assert_true(y[i] == ys[i]); /* exact, as above */

    /* FP8 static, scale 2: 900/2 saturates to 448, 2.125/2 = 1.0625 ties to 1 */
    float z[4] = {2.0f, 900.0f, -1000.0f, 2.125f};
    const act_quant f8 = {ACTQ_FP8_STATIC, 2.0f};
    act_quant_apply(&f8, z, 1, 4);
    const float zs[4] = {2.0f, 896.0f, -896.0f, 2.0f};
    for (int i = 0; i < 4; i++)
        assert_true(z[i] == zs[i]); /* exact: E4M3 values times 2 */

    float n[2] = {0.123f, -7.0f};
    const act_quant none = {ACTQ_NONE, 0.0f};
    act_quant_apply(&none, n, 1, 2);
    assert_true(n[0] == 0.123f && n[1] == -7.0f);
}

/* ---- calibration statistics ---------------------------------------------------------- */

static void test_linear_stats(void **state)
{
    (void)state;
    const int64_t n = 37, cols = 19;
    float *X = rand_vec(n * cols);
    linear_stats a, b;
    assert_int_equal(linear_stats_init(cols, &a), FPTQ_OK);
    assert_int_equal(linear_stats_init(cols, &b), FPTQ_OK);
    assert_int_equal(linear_stats_accumulate(&a, X, 20), FPTQ_OK);
    assert_int_equal(linear_stats_accumulate(&a, X + 20 * cols, n - 20), FPTQ_OK);
    assert_int_equal(linear_stats_accumulate(&b, X, n), FPTQ_OK);
    assert_int_equal(a.tokens, n);
    assert_int_equal(b.tokens, n);
    /* fp32 sums of n products in any order: each within n 2^-24 sum|x_i x_j|
     * of the exact sum (the classic gamma_n bound), so two within twice that */
    double *bound = xmalloc((size_t)(cols * cols) * sizeof(double));
    for (int64_t i = 0; i < cols; i++)
        for (int64_t j = 0; j < cols; j++) {
            double s = 0.0;
            for (int64_t t = 0; t < n; t++)
                s += fabs((double)X[t * cols + i] * X[t * cols + j]);
            bound[i * cols + j] = (double)n * 0x1p-24 * s;
        }
    for (int64_t i = 0; i < cols; i++)
        for (int64_t j = i; j < cols; j++)
            assert_true(fabs((double)a.xtx[i * cols + j] - b.xtx[i * cols + j]) <= 2 * bound[i * cols + j]);
    /* row by row in the same order in both: identical */
    assert_memory_equal(a.abs_sum, b.abs_sum, (size_t)cols * sizeof(double));
    assert_memory_equal(a.abs_max, b.abs_max, (size_t)cols * sizeof(float));

    float *H = xmalloc((size_t)(cols * cols) * sizeof(float));
    assert_int_equal(linear_stats_hessian(&a, H), FPTQ_OK);
    for (int64_t i = 0; i < cols; i++) {
        double s = 0.0, m = 0.0;
        for (int64_t t = 0; t < n; t++) {
            s += fabs((double)X[t * cols + i]);
            m = fmax(m, fabs((double)X[t * cols + i]));
        }
        assert_true(fabs(a.abs_sum[i] - s) < 1e-12); /* double sums of the same floats */
        assert_true(a.abs_max[i] == (float)m);
        for (int64_t j = 0; j < cols; j++) {
            assert_true(H[i * cols + j] == H[j * cols + i]); /* mirrored, bit for bit */
            double ref = 0.0;
            for (int64_t t = 0; t < n; t++)
                ref += (double)X[t * cols + i] * X[t * cols + j];
            ref = 2.0 * ref / (double)n;
            /* the sum's bound above, scaled by 2 / n, plus the rounding of the
             * scaled sum to float (half an ulp; one ulp allowed) */
            assert_true(fabs(H[i * cols + j] - ref) <=
                        2.0 / (double)n * bound[i * cols + j] + 0x1p-23 * fabs(ref));
        }
    }
    linear_stats_reset(&a);
    assert_int_equal(a.tokens, 0);
    assert_true(a.xtx[0] == 0.0f && a.abs_sum[0] == 0.0 && a.abs_max[0] == 0.0f);
    fptq_clear_error();
    assert_int_equal(linear_stats_hessian(&a, H), FPTQ_ERR_ARG); /* no tokens */
    fptq_clear_error();
    linear_stats_free(&a);
    linear_stats_free(&b);
    free(bound);
    free(H);
    free(X);
}

/* ---- GPTQ ---------------------------------------------------------------------------------- */

/* H = 2 X^T X / n of X = Z A, Z uniform. mix 0: A = I; 1: A uniform in
 * [-1, 1) (H non-diagonal, well conditioned); 2: A uniform in [-0.5, 1.5)
 * and columns scaled by e^u, u in [-1, 1): a common component correlates
 * every pair of inputs (|corr| ~ 0.4) and the diagonal varies, as in LLMs. */
static float *correlated_hessian(int64_t cols, int64_t tokens, int mix)
{
    float *Z = rand_vec(tokens * cols), *X = xmalloc((size_t)(tokens * cols) * sizeof(float));
    float *A = rand_vec(cols * cols), *colscale = rand_vec(cols);
    for (int64_t j = 0; j < cols; j++)
        colscale[j] = mix == 2 ? expf(colscale[j]) : 1.0f;
    for (int64_t t = 0; t < tokens; t++)
        for (int64_t j = 0; j < cols; j++) {
            double s = 0.0;
            if (mix)
                for (int64_t k = 0; k < cols; k++)
                    s += (double)Z[t * cols + k] * (A[k * cols + j] + (mix == 2 ? 0.5 : 0.0));
            else
                s = Z[t * cols + j];
            X[t * cols + j] = (float)(s * colscale[j]);
        }
    linear_stats st;
    assert_int_equal(linear_stats_init(cols, &st), FPTQ_OK);
    assert_int_equal(linear_stats_accumulate(&st, X, tokens), FPTQ_OK);
    float *H = xmalloc((size_t)(cols * cols) * sizeof(float));
    assert_int_equal(linear_stats_hessian(&st, H), FPTQ_OK);
    linear_stats_free(&st);
    free(Z);
    free(X);
    free(A);
    free(colscale);
    return H;
}

/* sum over rows of (W - Q) H (W - Q)^T, in double; H + damp I when damp != 0 */
static double proxy_loss(const float *W, const float *Q, const float *H, int64_t rows, int64_t cols,
                         double damp)
{
    double *d = xmalloc((size_t)cols * sizeof(double)), total = 0.0;
    for (int64_t r = 0; r < rows; r++) {
        for (int64_t c = 0; c < cols; c++)
            d[c] = (double)W[r * cols + c] - (double)Q[r * cols + c];
        for (int64_t i = 0; i < cols; i++) {
            double s = 0.0;
            for (int64_t j = 0; j < cols; j++)
                s += (double)H[i * cols + j] * d[j];
            total += d[i] * (s + damp * d[i]);
        }
    }
    free(d);
    return total;
}

static void test_gptq_identity_hessian_is_rtn(void **state)
{
    (void)state;
    const int64_t rows = 16, cols = 172;
    const int64_t groups[] = {0, 32, 64}; /* 32 and 64 leave ragged last groups of 12 and 44 */
    float *W = rand_vec(rows * cols), *H = xmalloc((size_t)(cols * cols) * sizeof(float));
    float *Q = xmalloc((size_t)(rows * cols) * sizeof(float));
    float *D = xmalloc((size_t)(rows * cols) * sizeof(float));
    for (int64_t c = 0; c < cols; c++)
        H[c * cols + c] = 1.0f;
    for (size_t gi = 0; gi < 3; gi++)
        for (int sym = 0; sym < 2; sym++)
            for (int act = 0; act < 2; act++) {
                const quant_spec spec = {QFMT_INT, 4, groups[gi], sym};
                quant_tensor rtn, gq;
                assert_int_equal(quant_tensor_alloc(&spec, rows, cols, 0, &rtn), FPTQ_OK);
                assert_int_equal(quant_tensor_alloc(&spec, rows, cols, act, &gq), FPTQ_OK);
                assert_int_equal(quant_rtn(W, rows, cols, NULL, &rtn), FPTQ_OK);
                /* Hinv is diagonal: no update reaches another column, so every
                 * weight is rounded as RTN rounds it; equal diagonals keep
                 * act-order's stable permutation the identity */
                const gptq_opts o = {.act_order = act};
                gptq_result res;
                assert_int_equal(gptq_quantize(W, rows, cols, H, &o, &gq, Q, &res), FPTQ_OK);
                assert_memory_equal(gq.codes, rtn.codes, (size_t)(rows * cols));
                assert_memory_equal(gq.scales, rtn.scales, (size_t)(rows * rtn.n_groups) * sizeof(float));
                assert_memory_equal(gq.zeros, rtn.zeros, (size_t)(rows * rtn.n_groups) * sizeof(int32_t));
                quant_dequantize(&rtn, D);
                assert_memory_equal(Q, D, (size_t)(rows * cols) * sizeof(float));
                assert_int_equal(res.retries, 0);
                assert_true(res.damp == 0.01f); /* 0.01 * mean(diag I), one float product */
                quant_tensor_free(&rtn);
                quant_tensor_free(&gq);
            }
    free(W);
    free(H);
    free(Q);
    free(D);
}

/* Plain GPTQ in double: column by column, every later column updated at
 * once, groups fitted on the weights as updated so far. The inverse factor is
 * computed here too (Cholesky of H + damp I, its inverse, Cholesky of that). */
static void cholesky_lower(double *A, int64_t n) /* A = L L^T, L in the lower triangle */
{
    for (int64_t j = 0; j < n; j++) {
        double s = A[j * n + j];
        for (int64_t k = 0; k < j; k++)
            s -= A[j * n + k] * A[j * n + k];
        assert_true(s > 0.0);
        A[j * n + j] = sqrt(s);
        for (int64_t i = j + 1; i < n; i++) {
            double t = A[i * n + j];
            for (int64_t k = 0; k < j; k++)
                t -= A[i * n + k] * A[j * n + k];
            A[i * n + j] = t / A[j * n + j];
        }
        for (int64_t i = 0; i < j; i++)
            A[i * n + j] = 0.0;
    }
}

static void ref_inverse_factor(const double *Hd, int64_t n, double *U)
{
    double *L = xmalloc((size_t)(n * n) * sizeof(double)), *Li = xmalloc((size_t)(n * n) * sizeof(double));
    memcpy(L, Hd, (size_t)(n * n) * sizeof(double));
    cholesky_lower(L, n);
    for (int64_t j = 0; j < n; j++) /* Li = L^-1 by forward substitution, column j */
        for (int64_t i = j; i < n; i++) {
            double s = i == j ? 1.0 : 0.0;
            for (int64_t k = j; k < i; k++)
                s -= L[i * n + k] * Li[k * n + j];
            Li[i * n + j] = s / L[i * n + i];
        }
    for (int64_t i = 0; i < n; i++) /* U = (L^-T L^-1), then its Cholesky, transposed */
        for (int64_t j = 0; j < n; j++) {
            double s = 0.0;
            for (int64_t k = i > j ? i : j; k < n; k++)
                s += Li[k * n + i] * Li[k * n + j];
            U[i * n + j] = s;
        }
    cholesky_lower(U, n);
    for (int64_t i = 0; i < n; i++) /* lower L -> upper L^T: U^T U = H^-1 */
        for (int64_t j = i + 1; j < n; j++) {
            U[i * n + j] = U[j * n + i];
            U[j * n + i] = 0.0;
        }
    free(L);
    free(Li);
}

static float group_min(const float *v, int64_t n)
{
    float m = 0.0f;
    for (int64_t i = 0; i < n; i++)
        m = v[i] < m ? v[i] : m;
    return m;
}

static double ref_gptq(const float *W0, int64_t rows, int64_t cols, const float *H0, double damp,
                       const quant_spec *spec, int act_order, uint8_t *codes, float *Q, float *wq,
                       float *sq, float *zq)
{
    const int64_t gs = spec->group_size, ng = quant_n_groups(spec, cols);
    double *W = xmalloc((size_t)(rows * cols) * sizeof(double));
    double *Hd = xmalloc((size_t)(cols * cols) * sizeof(double));
    double *U = xmalloc((size_t)(cols * cols) * sizeof(double));
    int64_t *perm = xmalloc((size_t)cols * sizeof(int64_t));
    float *scale = xmalloc((size_t)(rows * ng) * sizeof(float)), *buf = xmalloc((size_t)cols * sizeof(float));
    int32_t *zero = xmalloc((size_t)(rows * ng) * sizeof(int32_t));
    float *zt = xmalloc((size_t)(rows * ng) * sizeof(float)); /* -xmin / s, before rounding */
    for (int64_t r = 0; r < rows; r++)
        for (int64_t c = 0; c < cols; c++)
            W[r * cols + c] = H0[c * cols + c] == 0.0f ? 0.0 : W0[r * cols + c];
    /* per-row or static groups: fitted on the dead-zeroed W before any update */
    for (int64_t r = 0; r < rows; r++)
        for (int64_t g = 0; g < ng; g++) {
            const int64_t c0 = g * (gs ? gs : cols), c1 = gs && c0 + gs < cols ? c0 + gs : cols;
            for (int64_t c = c0; c < c1; c++)
                buf[c - c0] = (float)W[r * cols + c];
            quant_fit_int(buf, c1 - c0, 1, spec->bits, spec->sym, 1.0f, &scale[r * ng + g], &zero[r * ng + g]);
            zt[r * ng + g] = -group_min(buf, c1 - c0) / scale[r * ng + g];
        }
    for (int64_t c = 0; c < cols; c++)
        perm[c] = c;
    if (act_order) /* insertion sort: stable, descending diag (dead counts as 1) */
        for (int64_t i = 1; i < cols; i++) {
            const int64_t p = perm[i];
            const float hp = H0[p * cols + p] == 0.0f ? 1.0f : H0[p * cols + p];
            int64_t k = i;
            while (k > 0) {
                const int64_t o = perm[k - 1];
                const float ho = H0[o * cols + o] == 0.0f ? 1.0f : H0[o * cols + o];
                if (ho >= hp)
                    break;
                perm[k] = o;
                k--;
            }
            perm[k] = p;
        }
    for (int64_t i = 0; i < cols; i++)
        for (int64_t j = 0; j < cols; j++) {
            double h = H0[perm[i] * cols + perm[j]];
            if (i == j)
                h = (h == 0.0 ? 1.0 : h) + damp;
            Hd[i * cols + j] = h;
        }
    ref_inverse_factor(Hd, cols, U);
    double loss = 0.0;
    for (int64_t j = 0; j < cols; j++) {
        const int64_t col = perm[j];
        for (int64_t r = 0; r < rows; r++) {
            double *w = W + r * cols; /* row r, permuted order below */
            int64_t g = 0;
            if (gs > 0 && !act_order) {
                g = j / gs;
                if (j % gs == 0) {
                    const int64_t gend = j + gs < cols ? j + gs : cols;
                    for (int64_t c = j; c < gend; c++)
                        buf[c - j] = (float)w[perm[c]];
                    quant_fit_int(buf, gend - j, 1, spec->bits, spec->sym, 1.0f, &scale[r * ng + g],
                                  &zero[r * ng + g]);
                    zt[r * ng + g] = -group_min(buf, gend - j) / scale[r * ng + g];
                }
            } else if (gs > 0) {
                g = col / gs;
            }
            const float s = scale[r * ng + g];
            const int32_t z = zero[r * ng + g];
            const uint8_t code = quant_int_code((float)w[col], s, z, spec->bits);
            const double q = (double)((float)(code - z) * s);
            const double err = (w[col] - q) / U[j * cols + j];
            loss += err * err;
            for (int64_t k = j + 1; k < cols; k++)
                w[perm[k]] -= err * U[j * cols + k];
            codes[r * cols + col] = code;
            Q[r * cols + col] = (float)q;
            wq[r * cols + col] = (float)w[col]; /* what was rounded, and by which step */
            sq[r * cols + col] = s;
            zq[r * cols + col] = spec->sym ? 0.0f : zt[r * ng + g];
        }
    }
    free(W);
    free(Hd);
    free(U);
    free(perm);
    free(scale);
    free(zero);
    free(zt);
    free(buf);
    return loss / 2.0;
}

/* Blocked GPTQ (fp32, BLAS) against the unblocked double reference. The two
 * w differ by fp32 noise (~1e-6 relative); where w / s, or a group's zero
 * -min / s, sits on a half-integer that noise decides the rounding and the
 * codes differ by 1. Ties are not
 * rare: in symmetric mode the largest |w| of a group is exactly
 * (2^(b-1) - 1/2) steps from zero, by construction of s. After such a flip
 * the row diverges (a different error feeds its later columns) while other
 * rows, independent given H, are unaffected. So each row must either match
 * entirely (codes identical, Q within 1e-5 relative: fp32 rounding over at
 * most 172 updates, 2e-6 measured) or first differ by exactly 1 at a weight
 * whose reference w / s or zero is within 1e-4 of a half-integer (fp32 noise is
 * ~1e-6 relative, |w / s| <= 8 here, so <= 1e-5 in steps; 10x margin). */
static int compare_with_reference(const uint8_t *codes, const float *Q, const uint8_t *rcodes,
                                  const float *rQ, const float *wq, const float *sq, const float *zq,
                                  const int64_t *order, int64_t rows, int64_t cols, const char *what)
{
    int diverged = 0;
    double worst = 0.0;
    for (int64_t r = 0; r < rows; r++) {
        int64_t first = -1;
        for (int64_t j = 0; j < cols && first < 0; j++) /* in the order columns were quantized */
            if (codes[r * cols + order[j]] != rcodes[r * cols + order[j]])
                first = order[j];
        if (first >= 0) {
            const int64_t i = r * cols + first;
            const int d = (int)codes[i] - (int)rcodes[i];
            const double t = (double)wq[i] / (double)sq[i], z = zq[i];
            const double off_tie = fmin(fabs(fabs(t - floor(t)) - 0.5), fabs(fabs(z - floor(z)) - 0.5));
            printf("  %s: row %lld diverges at column %lld (code %+d; w / s = %.7f, zero %.7f)\n",
                   what, (long long)r, (long long)first, d, t, z);
            assert_int_equal(abs(d), 1);
            assert_true(off_tie <= 1e-4);
            diverged++;
            continue;
        }
        for (int64_t c = 0; c < cols; c++) {
            const double a = Q[r * cols + c], b = rQ[r * cols + c];
            worst = a == b ? worst : fmax(worst, fabs(a - b) / fabs(b));
        }
    }
    if (worst > 1e-5)
        printf("  %s: worst Q relative difference %.3g\n", what, worst);
    assert_true(worst <= 1e-5);
    /* a sanity bound: ties are a few percent of groups, not most rows */
    assert_true(diverged <= rows / 4);
    return diverged;
}

static void test_gptq_blocked_equals_unblocked(void **state)
{
    (void)state;
    const int64_t rows = 64, cols = 172, tokens = 2048;
    rng_seed(7);
    float *H = correlated_hessian(cols, tokens, 1);
    float *W = rand_vec(rows * cols);
    float *Q = xmalloc((size_t)(rows * cols) * sizeof(float)), *rQ = xmalloc((size_t)(rows * cols) * sizeof(float));
    uint8_t *rcodes = xmalloc((size_t)(rows * cols));
    float *wq = xmalloc((size_t)(rows * cols) * sizeof(float)), *sq = xmalloc((size_t)(rows * cols) * sizeof(float));
    float *zq = xmalloc((size_t)(rows * cols) * sizeof(float));
    int64_t *order = xmalloc((size_t)cols * sizeof(int64_t));
    static const struct {
        int64_t block, group;
        int bits, sym, act;
    } cfg[] = {
        {128, 32, 4, 0, 0}, {16, 32, 4, 0, 0},  {16, 24, 4, 0, 0}, {128, 24, 3, 1, 0},
        {16, 128, 4, 0, 0}, {128, 0, 4, 0, 0},  {5, 24, 4, 1, 0},  {16, 24, 4, 0, 1},
        {128, 32, 3, 0, 1}, {300, 32, 4, 0, 0},
    };
    for (size_t k = 0; k < sizeof cfg / sizeof cfg[0]; k++) {
        const quant_spec spec = {QFMT_INT, cfg[k].bits, cfg[k].group, cfg[k].sym};
        quant_tensor q;
        assert_int_equal(quant_tensor_alloc(&spec, rows, cols, cfg[k].act, &q), FPTQ_OK);
        const gptq_opts o = {.block_size = cfg[k].block, .act_order = cfg[k].act};
        gptq_result res;
        assert_int_equal(gptq_quantize(W, rows, cols, H, &o, &q, Q, &res), FPTQ_OK);
        double mean = 0.0;
        for (int64_t c = 0; c < cols; c++)
            mean += H[c * cols + c];
        const double damp = 0.01 * mean / (double)cols;
        assert_true(fabs(res.damp - damp) <= 1e-6 * damp); /* float vs double product */
        const double rloss = ref_gptq(W, rows, cols, H, res.damp, &spec, cfg[k].act, rcodes, rQ, wq, sq, zq);
        char what[96];
        snprintf(what, sizeof what, "block %lld group %lld %d-bit%s%s", (long long)cfg[k].block,
                 (long long)cfg[k].group, cfg[k].bits, cfg[k].sym ? " sym" : "", cfg[k].act ? " act-order" : "");
        /* the order the columns were quantized in: act-order's by diag H, stable */
        for (int64_t c = 0; c < cols; c++)
            order[c] = c;
        for (int64_t i = 1; cfg[k].act && i < cols; i++)
            for (int64_t m = i; m > 0 && H[order[m - 1] * (cols + 1)] < H[order[m] * (cols + 1)]; m--) {
                const int64_t t = order[m];
                order[m] = order[m - 1];
                order[m - 1] = t;
            }
        const int diverged = compare_with_reference(q.codes, Q, rcodes, rQ, wq, sq, zq, order, rows, cols, what);
        /* with no tie flip, the loss is the same sum of 11008 positive terms,
         * each within ~1e-5 relative of the reference's */
        if (diverged == 0)
            assert_true(fabs(res.loss - rloss) <= 1e-4 * rloss);
        /* codes and scales say the same thing as Q */
        float *D = xmalloc((size_t)(rows * cols) * sizeof(float));
        quant_dequantize(&q, D);
        assert_memory_equal(D, Q, (size_t)(rows * cols) * sizeof(float));
        free(D);
        quant_tensor_free(&q);
    }
    free(H);
    free(W);
    free(Q);
    free(rQ);
    free(rcodes);
    free(wq);
    free(sq);
    free(zq);
    free(order);
}

/* GPTQ beats RTN on the proxy loss tr((W - Q) H (W - Q)^T); and its returned
 * loss is that proxy loss for the damped Hessian, halved. Why: fasterquant's
 * Losses add (w - q)^2 / [H_F^-1]_jj (d^2 = U_jj^2 is that diagonal of the
 * inverse of the Hessian of the still free columns F), which is exactly the
 * rise of 1/2 dW (H + damp I) dW^T when column j is fixed and the free
 * columns are re-optimized; summed over all columns, every column ends
 * fixed at Q, so sum Losses / 2 = 1/2 tr((W - Q)(H + damp I)(W - Q)^T)
 * exactly, in exact arithmetic. Not the undamped one: that is smaller by
 * damp ||W - Q||^2 / 2. */
static void test_gptq_beats_rtn_and_loss_identity(void **state)
{
    (void)state;
    const int64_t rows = 64, cols = 172, tokens = 2048;
    rng_seed(11);
    float *H = correlated_hessian(cols, tokens, 2);
    float *W = rand_vec(rows * cols);
    float *Q = xmalloc((size_t)(rows * cols) * sizeof(float)), *R = xmalloc((size_t)(rows * cols) * sizeof(float));
    /* far from diagonal: the mean |off-diagonal| correlation is large */
    double corr = 0.0;
    for (int64_t i = 0; i < cols; i++)
        for (int64_t j = 0; j < cols; j++)
            if (i != j)
                corr += fabs(H[i * cols + j]) / sqrt((double)H[i * cols + i] * H[j * cols + j]);
    corr /= (double)(cols * (cols - 1));
    assert_true(corr > 0.3);
    const int bits_list[] = {4, 3};
    for (int b = 0; b < 2; b++)
        for (int act = 0; act < 2; act++) {
            const quant_spec spec = {QFMT_INT, bits_list[b], 32, 0};
            quant_tensor q, rtn;
            assert_int_equal(quant_tensor_alloc(&spec, rows, cols, act, &q), FPTQ_OK);
            assert_int_equal(quant_tensor_alloc(&spec, rows, cols, 0, &rtn), FPTQ_OK);
            const gptq_opts o = {.act_order = act};
            gptq_result res;
            assert_int_equal(gptq_quantize(W, rows, cols, H, &o, &q, Q, &res), FPTQ_OK);
            assert_int_equal(quant_rtn(W, rows, cols, NULL, &rtn), FPTQ_OK);
            quant_dequantize(&rtn, R);
            const double lg = proxy_loss(W, Q, H, rows, cols, 0.0);
            const double lr = proxy_loss(W, R, H, rows, cols, 0.0);
            const double ld = proxy_loss(W, Q, H, rows, cols, res.damp);
            printf("  %d-bit%s: proxy loss GPTQ %.4g, RTN %.4g (ratio %.3f); loss / (damped proxy / 2) - 1 = %.2g\n",
                   bits_list[b], act ? " act-order" : "", lg, lr, lg / lr, res.loss / (ld / 2) - 1);
            assert_true(lg < lr);
            /* the identity holds to fp32 rounding of the updates: relative 1e-4
             * is 250x the largest deviation measured (4e-7, see the printout) */
            assert_true(fabs(res.loss - ld / 2) <= 1e-4 * ld / 2);
            quant_tensor_free(&q);
            quant_tensor_free(&rtn);
        }
    free(H);
    free(W);
    free(Q);
    free(R);
}

static void test_gptq_dead_columns(void **state)
{
    (void)state;
    const int64_t rows = 8, cols = 40;
    rng_seed(3);
    float *H = correlated_hessian(cols, 256, 0);
    float *W = rand_vec(rows * cols), *Q = xmalloc((size_t)(rows * cols) * sizeof(float));
    const int64_t dead[] = {0, 13, 39};
    for (size_t k = 0; k < 3; k++) /* an input that never fires: its row and column of H are 0 */
        for (int64_t j = 0; j < cols; j++)
            H[dead[k] * cols + j] = H[j * cols + dead[k]] = 0.0f;
    for (int act = 0; act < 2; act++) {
        const quant_spec spec = {QFMT_INT, 4, 16, 0};
        quant_tensor q;
        assert_int_equal(quant_tensor_alloc(&spec, rows, cols, act, &q), FPTQ_OK);
        const gptq_opts o = {.act_order = act};
        gptq_result res;
        assert_int_equal(gptq_quantize(W, rows, cols, H, &o, &q, Q, &res), FPTQ_OK);
        for (size_t k = 0; k < 3; k++)
            for (int64_t r = 0; r < rows; r++) {
                assert_true(Q[r * cols + dead[k]] == 0.0f); /* zero is exact: code = zero point */
                assert_int_equal(q.codes[r * cols + dead[k]], q.zeros[r * q.n_groups + dead[k] / 16]);
            }
        /* the loss identity with H[dead, dead] = 1 and W[:, dead] = 0 */
        float *Hd = xmalloc((size_t)(cols * cols) * sizeof(float)), *W0 = xmalloc((size_t)(rows * cols) * sizeof(float));
        memcpy(Hd, H, (size_t)(cols * cols) * sizeof(float));
        memcpy(W0, W, (size_t)(rows * cols) * sizeof(float));
        for (size_t k = 0; k < 3; k++) {
            Hd[dead[k] * cols + dead[k]] = 1.0f;
            for (int64_t r = 0; r < rows; r++)
                W0[r * cols + dead[k]] = 0.0f;
        }
        const double ld = proxy_loss(W0, Q, Hd, rows, cols, res.damp);
        assert_true(fabs(res.loss - ld / 2) <= 1e-4 * ld / 2); /* as in the test above */
        free(Hd);
        free(W0);
        quant_tensor_free(&q);
    }
    free(H);
    free(W);
    free(Q);
}

static void test_gptq_failures(void **state)
{
    (void)state;
    const int64_t rows = 4, cols = 8;
    float *W = rand_vec(rows * cols), *H = xmalloc((size_t)(cols * cols) * sizeof(float));
    const quant_spec spec = {QFMT_INT, 4, 0, 0};
    quant_tensor q;
    assert_int_equal(quant_tensor_alloc(&spec, rows, cols, 0, &q), FPTQ_OK);
    gptq_result res = {0};

    /* a negative diagonal: the damping (a share of a negative mean) never helps */
    for (int64_t c = 0; c < cols; c++)
        H[c * cols + c] = -1.0f;
    fptq_clear_error();
    assert_int_equal(gptq_quantize(W, rows, cols, H, NULL, &q, NULL, &res), FPTQ_ERR_NUMERIC);
    assert_int_equal(fptq_last_status(), FPTQ_ERR_NUMERIC);
    assert_non_null(strstr(fptq_last_error(), "Cholesky"));
    fptq_clear_error();

    /* one slightly negative diagonal: damp 0.01 * mean is not enough, 10x is */
    for (int64_t c = 0; c < cols; c++)
        H[c * cols + c] = 1.0f;
    H[3 * cols + 3] = -0.05f;
    assert_int_equal(gptq_quantize(W, rows, cols, H, NULL, &q, NULL, &res), FPTQ_OK);
    assert_int_equal(res.retries, 1);
    const float mean = (7.0f - 0.05f) / 8.0f;
    assert_true(fabsf(res.damp - 0.1f * mean) <= 1e-6f); /* float products of the same values */

    /* FP8 is RTN's business */
    const quant_spec fp8 = {QFMT_FP8_E4M3, 8, 0, 0};
    quant_tensor f;
    assert_int_equal(quant_tensor_alloc(&fp8, rows, cols, 0, &f), FPTQ_OK);
    assert_int_equal(gptq_quantize(W, rows, cols, H, NULL, &f, NULL, &res), FPTQ_ERR_UNSUPPORTED);
    fptq_clear_error();
    quant_tensor_free(&f);
    /* act-order needs g_idx */
    const gptq_opts act = {.act_order = 1};
    assert_int_equal(gptq_quantize(W, rows, cols, H, &act, &q, NULL, &res), FPTQ_ERR_ARG);
    fptq_clear_error();
    /* a tensor of another shape */
    assert_int_equal(gptq_quantize(W, rows, cols - 1, H, NULL, &q, NULL, &res), FPTQ_ERR_ARG);
    fptq_clear_error();
    quant_tensor_free(&q);
    free(W);
    free(H);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fit_int_hand),
        cmocka_unit_test(test_rtn_matrix_and_dequantize),
        cmocka_unit_test(test_rtn_ragged_groups),
        cmocka_unit_test(test_tensor_alloc_checks),
        cmocka_unit_test(test_pack_roundtrip),
        cmocka_unit_test(test_fp8_every_code),
        cmocka_unit_test(test_fp8_rounding_and_saturation),
        cmocka_unit_test(test_fp8_rtn),
        cmocka_unit_test(test_act_quant),
        cmocka_unit_test(test_linear_stats),
        cmocka_unit_test(test_gptq_identity_hessian_is_rtn),
        cmocka_unit_test(test_gptq_blocked_equals_unblocked),
        cmocka_unit_test(test_gptq_beats_rtn_and_loss_identity),
        cmocka_unit_test(test_gptq_dead_columns),
        cmocka_unit_test(test_gptq_failures),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
