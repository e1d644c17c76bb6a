/*
 * CPU reference of quant.h: min-max INT fits and RTN, int32 packing, FP8 E4M3,
 * activation fake-quant, calibration statistics, and GPTQ laid out like
 * IST-DASLab/gptq GPTQ.fasterquant (W, H, Hinv, Q, Err1, Losses, lazy blocks).
 */
#include "quant.h"
#include "quant_scalar.h"

#include <cblas.h>
#include <lapacke.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Every rounding to an integer here is nearbyintf under the default rounding
 * mode, i.e. round-half-to-even, the rounding torch.round uses in GPTQ and AWQ
 * (and the one CUDA's __float2int_rn gives), so codes agree across backends. */

fptq_status quant_spec_check(const quant_spec *s)
{
    if (s->format == QFMT_INT) {
        if (s->bits < 2 || s->bits > 8)
            return FPTQ_FAIL(FPTQ_ERR_ARG, "quant: INT bits %d outside 2..8", s->bits);
        if (s->group_size < 0)
            return FPTQ_FAIL(FPTQ_ERR_ARG, "quant: group size %lld is negative",
                             (long long)s->group_size);
        return FPTQ_OK;
    }
    if (s->format == QFMT_FP8_E4M3) {
        if (s->bits != 8)
            return FPTQ_FAIL(FPTQ_ERR_ARG, "quant: FP8 E4M3 has 8 bits, not %d", s->bits);
        return FPTQ_OK;
    }
    return FPTQ_FAIL(FPTQ_ERR_ARG, "quant: unknown format %d", (int)s->format);
}

int64_t quant_n_groups(const quant_spec *s, int64_t cols)
{
    if (s->format != QFMT_INT || s->group_size <= 0)
        return 1;
    /* written so that cols near INT64_MAX cannot overflow */
    return cols / s->group_size + (cols % s->group_size != 0);
}

fptq_status quant_tensor_shape(const quant_spec *s, int64_t rows, int64_t cols, quant_tensor *q)
{
    memset(q, 0, sizeof *q);
    FPTQ_TRY(quant_spec_check(s));
    if (rows <= 0 || cols <= 0 || rows > INT64_MAX / cols)
        return FPTQ_FAIL(FPTQ_ERR_ARG, "quant: bad tensor shape [%lld, %lld]", (long long)rows,
                         (long long)cols);
    q->spec = *s;
    q->rows = rows;
    q->cols = cols;
    q->n_groups = quant_n_groups(s, cols);
    return FPTQ_OK;
}

fptq_status quant_tensor_alloc(const quant_spec *s, int64_t rows, int64_t cols, int with_g_idx,
                               quant_tensor *q)
{
    FPTQ_TRY(quant_tensor_shape(s, rows, cols, q));
    fptq_status st;
    FPTQ_TRY_GOTO(fptq_calloc((size_t)(rows * cols), 1, "quantized codes", &q->codes), st, fail);
    FPTQ_TRY_GOTO(fptq_calloc((size_t)(rows * q->n_groups), sizeof(float), "quantization scales",
                              &q->scales), st, fail);
    if (s->format == QFMT_INT)
        FPTQ_TRY_GOTO(fptq_calloc((size_t)(rows * q->n_groups), sizeof(int32_t),
                                  "quantization zeros", &q->zeros), st, fail);
    if (with_g_idx) {
        FPTQ_TRY_GOTO(fptq_calloc((size_t)cols, sizeof(int32_t), "group index", &q->g_idx), st,
                      fail);
        for (int64_t c = 0; c < cols; c++)
            q->g_idx[c] = (int32_t)(s->format == QFMT_INT && s->group_size > 0 ? c / s->group_size : 0);
    }
    return FPTQ_OK;
fail:
    quant_tensor_free(q);
    return st;
}

void quant_tensor_free(quant_tensor *q)
{
    if (!q)
        return;
    free(q->codes);
    free(q->scales);
    free(q->zeros);
    free(q->g_idx);
    memset(q, 0, sizeof *q);
}

int64_t quant_group_of(const quant_tensor *q, int64_t c)
{
    if (q->g_idx)
        return q->g_idx[c];
    if (q->spec.format == QFMT_INT && q->spec.group_size > 0)
        return c / q->spec.group_size;
    return 0;
}

void quant_dequantize(const quant_tensor *q, float *W)
{
    const int64_t rows = q->rows, cols = q->cols, ng = q->n_groups;
    const int is_int = q->spec.format == QFMT_INT;
    const int64_t gs = is_int && q->spec.group_size > 0 ? q->spec.group_size : cols;
    for (int64_t r = 0; r < rows; r++) {
        const uint8_t *code = q->codes + r * cols;
        const float *scale = q->scales + r * ng;
        const int32_t *zero = is_int ? q->zeros + r * ng : NULL;
        float *w = W + r * cols;
        for (int64_t c0 = 0; c0 < cols; c0 += gs) {
            const int64_t c1 = c0 + gs < cols ? c0 + gs : cols;
            for (int64_t c = c0; c < c1; c++) {
                /* g_idx (act-order) may send neighbouring columns to different groups */
                const int64_t g = q->g_idx ? q->g_idx[c] : c0 / gs;
                w[c] = is_int ? (float)((int32_t)code[c] - zero[g]) * scale[g]
                              : fp8_e4m3_to_f32(code[c]) * scale[g];
            }
        }
    }
}

/* ---- INT min-max fit and RTN ------------------------------------------------ */

void quant_fit_int(const float *w, int64_t n, int64_t stride, int bits, int sym, float clip_ratio,
                   float *scale, int32_t *zero)
{
    float xmin = 0.0f, xmax = 0.0f; /* the range always holds 0, as in find_params */
    for (int64_t i = 0; i < n; i++) {
        const float v = w[i * stride];
        xmin = v < xmin ? v : xmin;
        xmax = v > xmax ? v : xmax;
    }
    qs_fit_range(xmin, xmax, bits, sym, clip_ratio, scale, zero);
}

uint8_t quant_int_code(float w, float scale, int32_t zero, int bits)
{
    return qs_int_code(w, scale, zero, bits);
}

/* scale = max|w| / 448 per row: the largest weight lands on E4M3's largest finite. */
static float fp8_row_scale(const float *w, int64_t n, float clip_ratio)
{
    float amax = 0.0f;
    for (int64_t i = 0; i < n; i++) {
        const float a = fabsf(w[i]);
        amax = a > amax ? a : amax;
    }
    const float s = clip_ratio * amax / 448.0f;
    return s > 0.0f && isfinite(s) ? s : 1.0f;
}

fptq_status quant_rtn(const float *W, int64_t rows, int64_t cols, const float *clip, quant_tensor *q)
{
    FPTQ_TRY(quant_spec_check(&q->spec));
    if (q->rows != rows || q->cols != cols || !q->codes || !q->scales)
        return FPTQ_FAIL(FPTQ_ERR_ARG, "quant_rtn: tensor is [%lld, %lld], weights [%lld, %lld]",
                         (long long)q->rows, (long long)q->cols, (long long)rows, (long long)cols);
    const int64_t ng = q->n_groups;
    if (q->spec.format == QFMT_FP8_E4M3) {
        for (int64_t r = 0; r < rows; r++) {
            const float *w = W + r * cols;
            const float s = fp8_row_scale(w, cols, clip ? clip[r * ng] : 1.0f);
            q->scales[r * ng] = s;
            for (int64_t c = 0; c < cols; c++)
                q->codes[r * cols + c] = fp8_e4m3_from_f32(w[c] / s);
        }
        return FPTQ_OK;
    }
    if (!q->zeros)
        return FPTQ_FAIL(FPTQ_ERR_ARG, "quant_rtn: INT tensor without zeros");
    const int bits = q->spec.bits, sym = q->spec.sym;
    const int64_t gs = q->spec.group_size > 0 ? q->spec.group_size : cols;
    /* RTN has no column order: groups are contiguous, g_idx (if any) says so */
    if (q->g_idx)
        for (int64_t c = 0; c < cols; c++)
            q->g_idx[c] = (int32_t)(c / gs);
    for (int64_t r = 0; r < rows; r++) {
        const float *w = W + r * cols;
        for (int64_t g = 0; g < ng; g++) {
            const int64_t c0 = g * gs, c1 = c0 + gs < cols ? c0 + gs : cols;
            float s;
            int32_t z;
            quant_fit_int(w + c0, c1 - c0, 1, bits, sym, clip ? clip[r * ng + g] : 1.0f, &s, &z);
            q->scales[r * ng + g] = s;
            q->zeros[r * ng + g] = z;
            for (int64_t c = c0; c < c1; c++)
                q->codes[r * cols + c] = quant_int_code(w[c], s, z, bits);
        }
    }
    return FPTQ_OK;
}

/* ---- int32 packing ------------------------------------------------------------ */

int64_t quant_packed_cols(int64_t cols, int bits)
{
    const int64_t per_word = 32 / bits;
    return cols / per_word + (cols % per_word != 0);
}

void quant_pack_int32(const uint8_t *codes, int64_t rows, int64_t cols, int bits, int32_t *packed)
{
    const int per_word = 32 / bits;
    const uint32_t mask = (1u << bits) - 1u;
    const int64_t pc = quant_packed_cols(cols, bits);
    for (int64_t r = 0; r < rows; r++) {
        const uint8_t *code = codes + r * cols;
        for (int64_t p = 0; p < pc; p++) {
            uint32_t word = 0;
            for (int k = 0; k < per_word; k++) {
                const int64_t c = p * per_word + k;
                if (c < cols)
                    word |= ((uint32_t)code[c] & mask) << (k * bits);
            }
            /* the bit pattern, not the value: words with the top bit set are negative */
            memcpy(&packed[r * pc + p], &word, sizeof word);
        }
    }
}

void quant_unpack_int32(const int32_t *packed, int64_t rows, int64_t cols, int bits, uint8_t *codes)
{
    const int per_word = 32 / bits;
    const uint32_t mask = (1u << bits) - 1u;
    const int64_t pc = quant_packed_cols(cols, bits);
    for (int64_t r = 0; r < rows; r++)
        for (int64_t c = 0; c < cols; c++) {
            uint32_t word;
            memcpy(&word, &packed[r * pc + c / per_word], sizeof word);
            codes[r * cols + c] = (uint8_t)((word >> ((c % per_word) * bits)) & mask);
        }
}

/* ---- FP8 E4M3 ------------------------------------------------------------------- */

/* (the arithmetic is kernels/quant_scalar.h's, shared with the GPU) */
uint8_t fp8_e4m3_from_f32(float x) { return qs_fp8_e4m3_from_f32(x); }

float fp8_e4m3_to_f32(uint8_t b) { return qs_fp8_e4m3_to_f32(b); }

/* ---- activation fake-quant ---------------------------------------------------- */

static void int8_fake_quant(float *x, int64_t n, float scale)
{
    /* a zero scale means a calibration maximum of 0: every x was 0 */
    const float s = scale > 0.0f && isfinite(scale) ? scale : 1.0f;
    for (int64_t i = 0; i < n; i++) {
        float v = nearbyintf(x[i] / s);
        v = v > 127.0f ? 127.0f : v < -127.0f ? -127.0f : v;
        x[i] = v * s;
    }
}

void act_quant_apply(const act_quant *a, float *X, int64_t rows, int64_t cols)
{
    if (!a || a->kind == ACTQ_NONE)
        return;
    for (int64_t r = 0; r < rows; r++) {
        float *x = X + r * cols;
        if (a->kind == ACTQ_INT8_STATIC) {
            int8_fake_quant(x, cols, a->scale);
        } else if (a->kind == ACTQ_INT8_DYNAMIC) {
            float amax = 0.0f;
            for (int64_t c = 0; c < cols; c++)
                amax = fabsf(x[c]) > amax ? fabsf(x[c]) : amax;
            int8_fake_quant(x, cols, amax / 127.0f);
        } else if (a->kind == ACTQ_FP8_STATIC) {
            const float s = a->scale > 0.0f && isfinite(a->scale) ? a->scale : 1.0f;
            for (int64_t c = 0; c < cols; c++)
                x[c] = fp8_e4m3_to_f32(fp8_e4m3_from_f32(x[c] / s)) * s;
        }
    }
}

/* ---- calibration statistics ------------------------------------------------------ */

fptq_status linear_stats_init(int64_t cols, linear_stats *s)
{
    memset(s, 0, sizeof *s);
    if (cols <= 0 || cols > INT32_MAX)
        return FPTQ_FAIL(FPTQ_ERR_ARG, "linear_stats: %lld input columns (BLAS takes 1..2^31-1)",
                         (long long)cols);
    s->cols = cols;
    fptq_status st;
    FPTQ_TRY_GOTO(fptq_calloc((size_t)cols * (size_t)cols, sizeof(float), "X^T X statistics",
                              &s->xtx), st, fail);
    FPTQ_TRY_GOTO(fptq_calloc((size_t)cols, sizeof(double), "sum |x| statistics", &s->abs_sum), st,
                  fail);
    FPTQ_TRY_GOTO(fptq_calloc((size_t)cols, sizeof(float), "max |x| statistics", &s->abs_max), st,
                  fail);
    return FPTQ_OK;
fail:
    linear_stats_free(s);
    return st;
}

void linear_stats_free(linear_stats *s)
{
    if (!s)
        return;
    free(s->xtx);
    free(s->abs_sum);
    free(s->abs_max);
    memset(s, 0, sizeof *s);
}

void linear_stats_reset(linear_stats *s)
{
    const size_t n = (size_t)s->cols;
    memset(s->xtx, 0, n * n * sizeof(float));
    memset(s->abs_sum, 0, n * sizeof(double));
    memset(s->abs_max, 0, n * sizeof(float));
    s->tokens = 0;
}

fptq_status linear_stats_accumulate(linear_stats *s, const float *X, int64_t rows)
{
    if (rows < 0)
        return FPTQ_FAIL(FPTQ_ERR_ARG, "linear_stats: %lld rows", (long long)rows);
    const int64_t cols = s->cols;
    /* ssyrk counts rows in an int: feed it slices */
    for (int64_t r0 = 0; r0 < rows; r0 += INT32_MAX) {
        const int64_t k = rows - r0 < INT32_MAX ? rows - r0 : INT32_MAX;
        cblas_ssyrk(CblasRowMajor, CblasUpper, CblasTrans, (int)cols, (int)k, 1.0f, X + r0 * cols,
                    (int)cols, 1.0f, s->xtx, (int)cols);
    }
    for (int64_t r = 0; r < rows; r++) {
        const float *x = X + r * cols;
        for (int64_t c = 0; c < cols; c++) {
            const float a = fabsf(x[c]);
            s->abs_sum[c] += a;
            s->abs_max[c] = a > s->abs_max[c] ? a : s->abs_max[c];
        }
    }
    s->tokens += rows;
    return FPTQ_OK;
}

fptq_status linear_stats_hessian(const linear_stats *s, float *H)
{
    if (s->tokens <= 0)
        return FPTQ_FAIL(FPTQ_ERR_ARG, "Hessian of a %lld-input linear: no calibration tokens",
                         (long long)s->cols);
    const int64_t n = s->cols;
    const double f = 2.0 / (double)s->tokens;
    for (int64_t i = 0; i < n; i++)
        for (int64_t j = i; j < n; j++) {
            const float h = (float)(f * s->xtx[i * n + j]);
            H[i * n + j] = h;
            H[j * n + i] = h;
        }
    return FPTQ_OK;
}

/* ---- GPTQ ------------------------------------------------------------------------------ */

/* Rows handled together in the in-block loop: a [block, GPTQ_TILE] slice of
 * W1 (32 KiB for block 128) stays in L1 while its 128 columns are quantized,
 * and every column step is a vector operation across the tile's rows. */
#define GPTQ_TILE 64

typedef struct gptq_ctx {
    int64_t rows, cols, gs, ng; /* gs = 0: one group per row */
    int bits, sym, act_order;
    float maxq;
    const float *W;       /* [rows, cols], permuted, trailing columns updated up to this block */
    const float *Hinv;    /* [cols, cols] upper Cholesky factor of H^-1 */
    const int64_t *perm;  /* permuted column -> original column, or NULL */
    float *Err1;          /* [block, rows]: Err1 transposed, the A of the trailing sgemm */
    double *Losses;       /* [rows]: sum over columns of (w - q)^2 / d^2 */
    const float *gscale;  /* act-order: [ng, rows] static group scales, transposed */
    const float *gzero;   /* act-order: [ng, rows] their zeros, as floats */
    quant_tensor *q;
    uint8_t *codes;       /* [rows, cols] out, in the order columns are quantized */
    float *Q;             /* [rows, cols] out, the same order, or NULL */
} gptq_ctx;

/* Min-max fit, at its first column j = i1 + i, of the group [j, gend) of the
 * tile's rows, on the weights as an unblocked GPTQ would see them: columns in
 * this block from W1 (already updated in-block), columns past the block end
 * from W minus this block's pending update -Err1[:, :i] @ Hinv[i1:i1+i, c]. */
static void gptq_fit_group_tile(const gptq_ctx *x, int64_t i1, int64_t i2, int64_t i, int64_t r0,
                                int64_t nr, const float *W1, const float *E1, float *scale,
                                float *zero)
{
    const int64_t j = i1 + i, gend = j + x->gs < x->cols ? j + x->gs : x->cols;
    const int64_t g = j / x->gs;
    float xmin[GPTQ_TILE], xmax[GPTQ_TILE], v[GPTQ_TILE];
    for (int r = 0; r < GPTQ_TILE; r++)
        xmin[r] = xmax[r] = 0.0f;
    for (int64_t c = j; c < (gend < i2 ? gend : i2); c++) {
        const float *w = W1 + (c - i1) * GPTQ_TILE;
        for (int r = 0; r < GPTQ_TILE; r++) {
            xmin[r] = w[r] < xmin[r] ? w[r] : xmin[r];
            xmax[r] = w[r] > xmax[r] ? w[r] : xmax[r];
        }
    }
    for (int64_t c = i2; c < gend; c++) {
        for (int r = 0; r < GPTQ_TILE; r++)
            v[r] = r < nr ? x->W[(r0 + r) * x->cols + c] : 0.0f;
        for (int64_t k = 0; k < i; k++) {
            const float h = x->Hinv[(i1 + k) * x->cols + c];
            const float *e = E1 + k * GPTQ_TILE;
            for (int r = 0; r < GPTQ_TILE; r++)
                v[r] -= e[r] * h;
        }
        for (int r = 0; r < GPTQ_TILE; r++) {
            xmin[r] = v[r] < xmin[r] ? v[r] : xmin[r];
            xmax[r] = v[r] > xmax[r] ? v[r] : xmax[r];
        }
    }
    for (int64_t r = 0; r < nr; r++) {
        float s;
        int32_t z;
        qs_fit_range(xmin[r], xmax[r], x->bits, x->sym, 1.0f, &s, &z);
        x->q->scales[(r0 + r) * x->ng + g] = s;
        x->q->zeros[(r0 + r) * x->ng + g] = z;
        scale[r] = s;
        zero[r] = (float)z;
    }
}

/* One column of the tile: q = quantize(w), Losses1 += (w - q)^2 / d^2,
 * err1 = (w - q) / d. The same float operations as quant_int_code; restrict
 * lets the compiler use vectors across the tile's rows. */
static inline void gptq_quant_column(const float *restrict w, const float *restrict scale,
                                     const float *restrict zero, float maxq, float d,
                                     float *restrict code, float *restrict Q1,
                                     float *restrict err1, double *restrict loss)
{
    for (int r = 0; r < GPTQ_TILE; r++) {
        float v = nearbyintf(w[r] / scale[r]) + zero[r];
        v = v > 0.0f ? (v < maxq ? v : maxq) : 0.0f;
        code[r] = v;
        Q1[r] = (v - zero[r]) * scale[r];
        err1[r] = (w[r] - Q1[r]) / d;
    }
    for (int r = 0; r < GPTQ_TILE; r++)
        loss[r] += (double)err1[r] * (double)err1[r];
}

/* W1[:, i:] -= err1 (outer) Hinv1[i, i:] for columns k0..count-1 (column i
 * itself is done); restrict, again, for vectors across the rows. */
static inline void gptq_update_columns(float *restrict W1, const float *restrict err1,
                                       const float *restrict Hinv1, int64_t k0, int64_t count)
{
    for (int64_t k = k0; k < count; k++) {
        const float h = Hinv1[k];
        float *wk = W1 + k * GPTQ_TILE;
        for (int r = 0; r < GPTQ_TILE; r++)
            wk[r] -= err1[r] * h;
    }
}

/* fasterquant's in-block loop over columns i1..i2 for rows r0..r0+nr. The
 * tile's W1, Err1 (E1), Q1 and codes are [count, GPTQ_TILE] scratch, column
 * i at i * GPTQ_TILE; codes and Q go out row by row once the block is done.
 * Padding rows (nr < GPTQ_TILE) carry w = 0, scale 1, zero 0, hence err = 0. */
#if defined(__GNUC__) && defined(__x86_64__) && !defined(__clang__)
/* one binary, vector width of the machine it runs on; under -std=c11 (as
 * CMake builds it) fp-contract is off, so every clone rounds like the scalar code */
__attribute__((target_clones("avx512f", "avx2", "default")))
#endif
static void gptq_block_tile(const gptq_ctx *x, int64_t i1, int64_t i2, int64_t r0, float *W1,
                            float *E1, float *Q1, float *code)
{
    const int64_t cols = x->cols, rows = x->rows, count = i2 - i1, gs = x->gs, ng = x->ng;
    const int64_t nr = rows - r0 < GPTQ_TILE ? rows - r0 : GPTQ_TILE;
    const float *Hinv = x->Hinv;
    const int64_t *perm = x->perm;
    float *Err1 = x->Err1;
    float scale[GPTQ_TILE], zero[GPTQ_TILE];
    double loss[GPTQ_TILE];

    /* W1 = W[r0:r0+nr, i1:i2], transposed so that column i is W1 + i * GPTQ_TILE */
    for (int64_t r = 0; r < GPTQ_TILE; r++) {
        if (r < nr) {
            const float *w = x->W + (r0 + r) * cols + i1;
            for (int64_t i = 0; i < count; i++)
                W1[i * GPTQ_TILE + r] = w[i];
        } else {
            for (int64_t i = 0; i < count; i++)
                W1[i * GPTQ_TILE + r] = 0.0f;
        }
        loss[r] = 0.0;
        scale[r] = 1.0f;
        zero[r] = 0.0f;
    }
#if defined(__GNUC__)
    /* The rows of W the next tile reads and the outputs this one writes are
     * far apart in memory (a row is cols floats): ask for them now, so that
     * DRAM latency hides behind this tile's ~100 microseconds of work. */
    for (int64_t r = 0; r < GPTQ_TILE && r0 + GPTQ_TILE + r < rows; r++)
        for (int64_t i = 0; i < count; i += 16)
            __builtin_prefetch(x->W + (r0 + GPTQ_TILE + r) * cols + i1 + i, 0);
    for (int64_t r = 0; r < nr; r++) {
        for (int64_t i = 0; i < count; i += 64)
            __builtin_prefetch(x->codes + (r0 + r) * cols + i1 + i, 1);
        for (int64_t i = 0; x->Q && i < count; i += 16)
            __builtin_prefetch(x->Q + (r0 + r) * cols + i1 + i, 1);
    }
#endif
    /* per-row params, or a group fitted in an earlier block that runs into this one */
    if (gs == 0 || (!x->act_order && i1 % gs != 0)) {
        const int64_t g = gs == 0 ? 0 : i1 / gs;
        for (int64_t r = 0; r < nr; r++) {
            scale[r] = x->q->scales[(r0 + r) * ng + g];
            zero[r] = (float)x->q->zeros[(r0 + r) * ng + g];
        }
    }

    for (int64_t i = 0; i < count; i++) {
        const int64_t j = i1 + i;
        float *w = W1 + i * GPTQ_TILE, *err1 = E1 + i * GPTQ_TILE;
        if (gs > 0) {
            if (!x->act_order) {
                if (j % gs == 0)
                    gptq_fit_group_tile(x, i1, i2, i, r0, nr, W1, E1, scale, zero);
            } else {
                /* static groups, fitted before any update, by original column */
                const int64_t g = perm[j] / gs;
                memcpy(scale, x->gscale + g * rows + r0, (size_t)nr * sizeof(float));
                memcpy(zero, x->gzero + g * rows + r0, (size_t)nr * sizeof(float));
            }
        }
        gptq_quant_column(w, scale, zero, x->maxq, Hinv[j * cols + j], code + i * GPTQ_TILE,
                          Q1 + i * GPTQ_TILE, err1, loss);
        memcpy(Err1 + i * rows + r0, err1, (size_t)nr * sizeof(float));
        gptq_update_columns(W1, err1, Hinv + j * cols + i1, i + 1, count);
    }
    /* Q[:, i1:i2] = Q1, and the codes */
    for (int64_t r = 0; r < nr; r++) {
        uint8_t *codes_r = x->codes + (r0 + r) * cols + i1;
        for (int64_t i = 0; i < count; i++)
            codes_r[i] = (uint8_t)code[i * GPTQ_TILE + r];
        if (x->Q) {
            float *Q_r = x->Q + (r0 + r) * cols + i1;
            for (int64_t i = 0; i < count; i++)
                Q_r[i] = Q1[i * GPTQ_TILE + r];
        }
        x->Losses[r0 + r] += loss[r];
    }
}

/* H (with act-order, H[perm][:, perm]) with dead diagonals set to 1. */
static void gptq_build_hessian(const float *H_in, int64_t n, const int64_t *perm, float *H)
{
    for (int64_t i = 0; i < n; i++) {
        const int64_t pi = perm ? perm[i] : i;
        const float *src = H_in + pi * n;
        float *dst = H + i * n;
        if (perm)
            for (int64_t j = 0; j < n; j++)
                dst[j] = src[perm[j]];
        else
            memcpy(dst, src, (size_t)n * sizeof(float));
        if (dst[i] == 0.0f)
            dst[i] = 1.0f;
    }
}

/* H -> Hinv in place: fasterquant's cholesky, cholesky_inverse, cholesky(upper).
 * LAPACK is column-major; a row-major symmetric matrix is its own transpose,
 * so column-major 'U' is row-major lower and no transposed copies are made.
 * Returns 0, or the step that failed (1: Cholesky of H, 2: inverse, 3:
 * Cholesky of the inverse) with *info the LAPACK info. */
static int gptq_inverse_factor(float *H, int64_t n, lapack_int *info)
{
    const lapack_int ln = (lapack_int)n;
    *info = LAPACKE_spotrf_work(LAPACK_COL_MAJOR, 'U', ln, H, ln); /* row-major L, H = L L^T */
    if (*info != 0)
        return 1;
    *info = LAPACKE_spotri_work(LAPACK_COL_MAJOR, 'U', ln, H, ln); /* row-major lower of H^-1 */
    if (*info != 0)
        return 2;
    /* mirror the lower triangle into the upper one, in tiles that stay in cache */
    const int64_t T = 64;
    for (int64_t i0 = 0; i0 < n; i0 += T)
        for (int64_t j0 = 0; j0 <= i0; j0 += T)
            for (int64_t i = i0; i < i0 + T && i < n; i++)
                for (int64_t jj = j0; jj < j0 + T && jj < i; jj++)
                    H[jj * n + i] = H[i * n + jj];
    /* column-major lower = row-major upper U with U^T U = H^-1 */
    *info = LAPACKE_spotrf_work(LAPACK_COL_MAJOR, 'L', ln, H, ln);
    if (*info != 0)
        return 3;
    for (int64_t i = 1; i < n; i++)
        memset(H + i * n, 0, (size_t)i * sizeof(float));
    return 0;
}

typedef struct diag_key {
    float h;
    int64_t idx;
} diag_key;

/* descending diag H, ties by index: a total order, hence a stable argsort
 * (NaNs last; the Cholesky will report them anyway) */
static int diag_key_cmp(const void *pa, const void *pb)
{
    const diag_key *a = pa, *b = pb;
    const int na = isnan(a->h), nb = isnan(b->h);
    if (na != nb)
        return na - nb;
    if (!na && a->h != b->h)
        return a->h > b->h ? -1 : 1;
    return (a->idx > b->idx) - (a->idx < b->idx);
}

fptq_status gptq_hinv_compute(const float *H_in, int64_t cols, const gptq_opts *o, gptq_hinv *h)
{
    memset(h, 0, sizeof *h);
    const float percdamp = o && o->damp_percent != 0.0f ? o->damp_percent : 0.01f;
    const int max_retries = o && o->max_retries != 0 ? o->max_retries : 4;
    const int actorder = o ? o->act_order : 0;
    if (!(percdamp >= 0.0f) || max_retries < 0)
        return FPTQ_FAIL(FPTQ_ERR_ARG, "GPTQ: bad options (damp %g, retries %d)", (double)percdamp, max_retries);
    if (cols <= 0 || cols > INT32_MAX)
        return FPTQ_FAIL(FPTQ_ERR_ARG, "GPTQ: %lld columns outside 1..2^31-1", (long long)cols);
    const double t_start = fptq_now();
    diag_key *keys = NULL;
    fptq_status st = FPTQ_OK;
    h->cols = cols;
    h->act_order = actorder;
    FPTQ_TRY_GOTO(fptq_calloc((size_t)cols * (size_t)cols, sizeof(float), "GPTQ inverse Hessian", &h->Hinv), st, out);
    FPTQ_TRY_GOTO(fptq_calloc((size_t)cols, sizeof(float), "GPTQ Hessian diagonal", &h->diag), st, out);
    for (int64_t c = 0; c < cols; c++)
        h->diag[c] = H_in[c * cols + c];

    if (actorder) {
        /* perm = argsort(diag(H), descending) */
        FPTQ_TRY_GOTO(fptq_calloc((size_t)cols, sizeof(int64_t), "GPTQ permutation", &h->perm), st, out);
        FPTQ_TRY_GOTO(fptq_calloc((size_t)cols, sizeof(diag_key), "GPTQ permutation keys", &keys), st, out);
        for (int64_t c = 0; c < cols; c++) {
            const float d = h->diag[c];
            keys[c] = (diag_key){d == 0.0f ? 1.0f : d, c};
        }
        qsort(keys, (size_t)cols, sizeof *keys, diag_key_cmp);
        for (int64_t c = 0; c < cols; c++)
            h->perm[c] = keys[c].idx;
    }

    /* damp = percdamp * mean(diag(H)); H += damp I; Hinv = cholesky(cholesky_inverse(
     * cholesky(H)), upper); a failed Cholesky is retried with 10x the damping */
    float *H = h->Hinv;
    gptq_build_hessian(H_in, cols, h->perm, H);
    double mean_diag = 0.0;
    for (int64_t c = 0; c < cols; c++)
        mean_diag += H[c * cols + c];
    mean_diag /= (double)cols;
    float damp = (float)(percdamp * mean_diag);
    int retries = 0, step;
    lapack_int info;
    for (;;) {
        for (int64_t c = 0; c < cols; c++)
            H[c * cols + c] += damp;
        step = gptq_inverse_factor(H, cols, &info);
        if (step == 0 || retries == max_retries)
            break;
        retries++;
        damp *= 10.0f;
        gptq_build_hessian(H_in, cols, h->perm, H);
    }
    if (step != 0) {
        static const char *what[] = {"", "Cholesky of H + damp I: not positive definite",
                                     "inverse from the Cholesky factor: singular",
                                     "Cholesky of (H + damp I)^-1: not positive definite"};
        st = FPTQ_FAIL(FPTQ_ERR_NUMERIC,
                       "GPTQ: %s (LAPACK info %d) after %d damping retries, last damp %g, mean "
                       "diag H %g; is the calibration Hessian NaN, negative or degenerate?",
                       what[step], (int)info, retries, (double)damp, mean_diag);
        goto out;
    }
    h->damp = damp;
    h->retries = retries;
    fptq_debug("GPTQ inverse Hessian [%lld]: %.3f s", (long long)cols, fptq_now() - t_start);
out:
    free(keys);
    if (st != FPTQ_OK)
        gptq_hinv_free(h);
    return st;
}

void gptq_hinv_free(gptq_hinv *h)
{
    free(h->Hinv);
    free(h->diag);
    free(h->perm);
    memset(h, 0, sizeof *h);
}

fptq_status gptq_quantize_hinv(const float *W_in, int64_t rows, int64_t cols, const gptq_hinv *h,
                               const gptq_opts *o, quant_tensor *q, float *Q, gptq_result *res)
{
    const int64_t blocksize = o && o->block_size != 0 ? o->block_size : 128;
    const int actorder = h->act_order;
    if (blocksize < 1)
        return FPTQ_FAIL(FPTQ_ERR_ARG, "GPTQ: bad block size %lld", (long long)blocksize);
    FPTQ_TRY(quant_spec_check(&q->spec));
    if (q->spec.format != QFMT_INT)
        return FPTQ_FAIL(FPTQ_ERR_UNSUPPORTED, "GPTQ quantizes to INT codes only, not FP8 (use RTN)");
    if (rows <= 0 || cols <= 0 || rows > INT32_MAX || cols > INT32_MAX || cols != h->cols)
        return FPTQ_FAIL(FPTQ_ERR_ARG, "GPTQ: shape [%lld, %lld] outside 1..2^31-1 or not the Hessian's %lld columns",
                         (long long)rows, (long long)cols, (long long)h->cols);
    if (q->rows != rows || q->cols != cols || !q->codes || !q->scales || !q->zeros)
        return FPTQ_FAIL(FPTQ_ERR_ARG, "GPTQ: quantized tensor is [%lld, %lld], weights [%lld, %lld]",
                         (long long)q->rows, (long long)q->cols, (long long)rows, (long long)cols);
    if (actorder && !q->g_idx)
        return FPTQ_FAIL(FPTQ_ERR_ARG, "GPTQ: act-order needs a tensor allocated with g_idx");

    const int64_t gs = q->spec.group_size, ng = q->n_groups;
    const int bits = q->spec.bits, sym = q->spec.sym;
    const int64_t *perm = h->perm;
    const double t_start = fptq_now();
    double t_inblock = 0.0, t_trailing = 0.0;
    const int64_t bs = blocksize < cols ? blocksize : cols;
    float *W = NULL, *Err1 = NULL, *scratch = NULL, *gscale = NULL, *row = NULL;
    double *Losses = NULL;
    fptq_status st = FPTQ_OK;
    FPTQ_TRY_GOTO(fptq_calloc((size_t)rows * (size_t)cols, sizeof(float), "GPTQ weights", &W), st, out);
    FPTQ_TRY_GOTO(fptq_calloc((size_t)bs * (size_t)rows, sizeof(float), "GPTQ block errors", &Err1),
                  st, out);
    FPTQ_TRY_GOTO(fptq_calloc(4 * (size_t)bs * GPTQ_TILE, sizeof(float), "GPTQ row tiles", &scratch),
                  st, out);
    FPTQ_TRY_GOTO(fptq_calloc((size_t)rows, sizeof(double), "GPTQ losses", &Losses), st, out);
    FPTQ_TRY_GOTO(fptq_calloc((size_t)cols, sizeof(float), "GPTQ row", &row), st, out);

    /* dead = diag(H) == 0: W[:, dead] = 0 (H[dead, dead] = 1 in gptq_build_hessian) */
    memcpy(W, W_in, (size_t)rows * (size_t)cols * sizeof(float));
    for (int64_t c = 0; c < cols; c++)
        if (h->diag[c] == 0.0f)
            for (int64_t r = 0; r < rows; r++)
                W[r * cols + c] = 0.0f;

    /* groups fitted before any update: one per row (fasterquant's find_params
     * on the whole W), or act-order's static groups by original column */
    if (gs == 0 || actorder) {
        const int64_t g_cols = gs > 0 ? gs : cols;
        for (int64_t r = 0; r < rows; r++)
            for (int64_t g = 0; g < ng; g++) {
                const int64_t c0 = g * g_cols, c1 = c0 + g_cols < cols ? c0 + g_cols : cols;
                quant_fit_int(W + r * cols + c0, c1 - c0, 1, bits, sym, 1.0f,
                              &q->scales[r * ng + g], &q->zeros[r * ng + g]);
            }
    }
    if (q->g_idx)
        for (int64_t c = 0; c < cols; c++)
            q->g_idx[c] = (int32_t)(gs > 0 ? c / gs : 0);
    if (actorder && gs > 0) {
        /* the in-block loop fetches a group's params for a tile of rows at
         * every column: keep them [group, row] so that the fetch is contiguous */
        FPTQ_TRY_GOTO(fptq_calloc(2 * (size_t)ng * (size_t)rows, sizeof(float), "GPTQ static groups",
                                  &gscale), st, out);
        for (int64_t r = 0; r < rows; r++)
            for (int64_t g = 0; g < ng; g++) {
                gscale[g * rows + r] = q->scales[r * ng + g];
                gscale[(ng + g) * rows + r] = (float)q->zeros[r * ng + g];
            }
    }
    if (actorder) {
        /* W = W[:, perm] */
        for (int64_t r = 0; r < rows; r++) {
            float *w = W + r * cols;
            for (int64_t c = 0; c < cols; c++)
                row[c] = w[perm[c]];
            memcpy(w, row, (size_t)cols * sizeof(float));
        }
    }
    const float *Hinv = h->Hinv;
    const double t_prepared = fptq_now();

    gptq_ctx x = {.rows = rows, .cols = cols, .gs = gs, .ng = ng, .bits = bits, .sym = sym,
                  .act_order = actorder, .maxq = (float)((1 << bits) - 1), .W = W, .Hinv = Hinv,
                  .perm = perm, .Err1 = Err1, .Losses = Losses, .gscale = gscale,
                  .gzero = gscale ? gscale + ng * rows : NULL, .q = q, .codes = q->codes,
                  /* act-order: Q in permuted order goes where W's finished columns were */
                  .Q = actorder ? W : Q};
    float *W1 = scratch, *E1 = W1 + bs * GPTQ_TILE, *Q1 = E1 + bs * GPTQ_TILE;
    float *code = Q1 + bs * GPTQ_TILE;
    for (int64_t i1 = 0; i1 < cols; i1 += bs) {
        const int64_t i2 = i1 + bs < cols ? i1 + bs : cols, count = i2 - i1;
        const double t0 = fptq_now();
        /* rows are independent given Hinv: the in-block loop runs tile by tile.
         * Not over threads: on 2 cores that measured no faster (OpenBLAS's
         * workers still spin after each sgemm) and OpenMP's spinning slowed
         * the next sgemm by half. */
        for (int64_t r0 = 0; r0 < rows; r0 += GPTQ_TILE)
            gptq_block_tile(&x, i1, i2, r0, W1, E1, Q1, code);
        const double t1 = fptq_now();
        /* W[:, i2:] -= Err1 @ Hinv[i1:i2, i2:]  (Err1 is stored transposed) */
        if (i2 < cols)
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)rows, (int)(cols - i2),
                        (int)count, -1.0f, Err1, (int)rows, Hinv + i1 * cols + i2, (int)cols, 1.0f,
                        W + i2, (int)cols);
        t_inblock += t1 - t0;
        t_trailing += fptq_now() - t1;
    }
    if (actorder) {
        /* undo the permutation: quantized column j is original column perm[j];
         * one pass at the end, rather than scattered writes in the block loop */
        uint8_t *crow = (uint8_t *)row;
        for (int64_t r = 0; r < rows; r++) {
            uint8_t *c = q->codes + r * cols;
            for (int64_t j = 0; j < cols; j++)
                crow[perm[j]] = c[j];
            memcpy(c, crow, (size_t)cols);
            if (Q)
                for (int64_t j = 0; j < cols; j++)
                    Q[r * cols + perm[j]] = W[r * cols + j];
        }
    }
    fptq_debug("GPTQ [%lld x %lld]: prepare %.3f s, in-block %.3f s, trailing sgemm %.3f s", (long long)rows,
               (long long)cols, t_prepared - t_start, t_inblock, t_trailing);

    if (res) {
        double loss = 0.0;
        for (int64_t r = 0; r < rows; r++)
            loss += Losses[r];
        res->loss = loss / 2.0; /* Losses[:, i1:i2] = Losses1 / 2 in fasterquant */
        res->damp = h->damp;
        res->retries = h->retries;
    }
out:
    free(W);
    free(Err1);
    free(scratch);
    free(Losses);
    free(gscale);
    free(row);
    return st;
}

fptq_status gptq_quantize(const float *W, int64_t rows, int64_t cols, const float *H, const gptq_opts *o,
                          quant_tensor *q, float *Q, gptq_result *r)
{
    FPTQ_TRY(quant_spec_check(&q->spec));
    if (q->spec.format != QFMT_INT)
        return FPTQ_FAIL(FPTQ_ERR_UNSUPPORTED, "GPTQ quantizes to INT codes only, not FP8 (use RTN)");
    if (o && o->act_order && !q->g_idx)
        return FPTQ_FAIL(FPTQ_ERR_ARG, "GPTQ: act-order needs a tensor allocated with g_idx");
    gptq_hinv h;
    FPTQ_TRY(gptq_hinv_compute(H, cols, o, &h));
    fptq_status st = gptq_quantize_hinv(W, rows, cols, &h, o, q, Q, r);
    gptq_hinv_free(&h);
    return st;
}
