/*
 * Weight and activation quantizers, CPU reference: integer codes with
 * per-group min-max scales (RTN), GPTQ, FP8 E4M3, activation fake-quant,
 * and the calibration statistics they need.
 * Conventions (docs/architecture): W is [rows = out, cols = in];
 * q = clamp(round(w / s) + z, 0, 2^b - 1), symmetric uses z = 2^(b-1);
 * groups of group_size run along `in`, the last one may be ragged.
 */
#ifndef FPTQ_QUANT_H
#define FPTQ_QUANT_H

#include "../common/status.h"

typedef enum { QFMT_INT = 0, QFMT_FP8_E4M3 = 1 } quant_format;

typedef struct quant_spec {
    quant_format format;
    int bits;             /* INT: 2..8; FP8: 8 */
    int64_t group_size;   /* INT: 0 = one group per output row; FP8: ignored (per row) */
    int sym;              /* INT only: symmetric, zero = 2^(bits-1) */
} quant_spec;

/* FPTQ_ERR_ARG unless the spec is one the quantizers handle (INT 2..8 bits
 * with a group size >= 0, or FP8 E4M3 with 8 bits). */
fptq_status quant_spec_check(const quant_spec *s);

/* ceil(cols / group_size), or 1 for per-row (group_size 0, and FP8). */
int64_t quant_n_groups(const quant_spec *s, int64_t cols);

/* One quantized [rows, cols] linear, unpacked: one code byte per weight. */
typedef struct quant_tensor {
    quant_spec spec;
    int64_t rows, cols, n_groups;
    uint8_t *codes;     /* [rows, cols]: INT codes in [0, 2^b), or E4M3 bytes */
    float *scales;      /* [rows, n_groups] */
    int32_t *zeros;     /* [rows, n_groups] INT zero codes; NULL for FP8 */
    int32_t *g_idx;     /* [cols] group of each column (act-order), or NULL: group = col / group_size */
} quant_tensor;

fptq_status quant_tensor_alloc(const quant_spec *s, int64_t rows, int64_t cols, int with_g_idx,
                               quant_tensor *q);
/* The checks and fields of quant_tensor_alloc, no arrays (for other allocators). */
fptq_status quant_tensor_shape(const quant_spec *s, int64_t rows, int64_t cols, quant_tensor *q);
void quant_tensor_free(quant_tensor *q);
/* Group of column c: g_idx[c], or c / group_size (0 for per-row). */
int64_t quant_group_of(const quant_tensor *q, int64_t c);
/* W = (code - zero) * scale (INT) or e4m3(code) * scale (FP8), for every weight. */
void quant_dequantize(const quant_tensor *q, float *W);

/* Min-max fit of one group (GPTQ's Quantizer.find_params): n values at
 * stride, range shrunk by clip_ratio (1 = none, AWQ's clip search < 1).
 * Asymmetric: range [min(0, min w), max(0, max w)], zero = round(-min / s);
 * symmetric: s = 2 max|w| / (2^b - 1), zero = 2^(b-1). An all-zero group gets s = 1. */
void quant_fit_int(const float *w, int64_t n, int64_t stride, int bits, int sym, float clip_ratio,
                   float *scale, int32_t *zero);
/* clamp(round-half-even(w / scale) + zero, 0, 2^bits - 1) */
uint8_t quant_int_code(float w, float scale, int32_t zero, int bits);

/* Round-to-nearest of a whole matrix into q (allocated with its spec).
 * clip: [rows, n_groups] range ratios, or NULL for 1. */
fptq_status quant_rtn(const float *W, int64_t rows, int64_t cols, const float *clip, quant_tensor *q);

/* Codes packed into int32 words along `in`, least significant bits first,
 * 32 / bits codes per word (3 bits: 10 per word, top 2 bits zero);
 * packed is [rows, quant_packed_cols(cols, bits)]. */
int64_t quant_packed_cols(int64_t cols, int bits);
void quant_pack_int32(const uint8_t *codes, int64_t rows, int64_t cols, int bits, int32_t *packed);
void quant_unpack_int32(const int32_t *packed, int64_t rows, int64_t cols, int bits, uint8_t *codes);

/* ---- FP8 E4M3 (OCP, "fn": no infinities, NaN = S.1111.111, max 448) ---- */
uint8_t fp8_e4m3_from_f32(float x); /* round to nearest even, saturate to +-448, NaN -> 0x7F */
float fp8_e4m3_to_f32(uint8_t b);

/* ---- activation fake-quantization, applied to a linear's input ---------- */
typedef enum { ACTQ_NONE = 0, ACTQ_INT8_STATIC, ACTQ_INT8_DYNAMIC, ACTQ_FP8_STATIC } act_quant_kind;
typedef struct act_quant {
    act_quant_kind kind;
    float scale;          /* static: max|x| / 127 (INT8) or / 448 (FP8), from calibration */
} act_quant;
/* In place on X[rows, cols]: x -> dequant(quant(x)); INT8 symmetric, zero 0,
 * dynamic takes its scale per row (token) as max|x_row| / 127. */
void act_quant_apply(const act_quant *a, float *X, int64_t rows, int64_t cols);

/* ---- calibration statistics of one linear's input ----------------------- */
typedef struct linear_stats {
    int64_t cols, tokens;
    float *xtx;          /* [cols, cols] raw sum of x x^T (fp32, ssyrk), full symmetric after _hessian */
    double *abs_sum;     /* [cols] sum |x| (AWQ) */
    float *abs_max;      /* [cols] max |x| (SmoothQuant, activation scales) */
} linear_stats;
fptq_status linear_stats_init(int64_t cols, linear_stats *s);
void linear_stats_free(linear_stats *s);
void linear_stats_reset(linear_stats *s);
/* Adds X[rows, cols]: xtx += X^T X (upper triangle), abs sums, maxima, token count. */
fptq_status linear_stats_accumulate(linear_stats *s, const float *X, int64_t rows);
/* H = 2 xtx / tokens, full symmetric [cols, cols] (scaled once, after any
 * reduction); H may be s->xtx itself. */
fptq_status linear_stats_hessian(const linear_stats *s, float *H);

/* ---- GPTQ (Frantar et al.; names and loop shape of GPTQ.fasterquant) ----- */
typedef struct gptq_opts {
    float damp_percent;   /* lambda = damp_percent * mean(diag H); default 0.01 */
    int64_t block_size;   /* lazy batch width; default 128 */
    int act_order;        /* columns by descending diag H, with static groups */
    int max_retries;      /* Cholesky failures retried with damping x10; default 4 */
} gptq_opts;
typedef struct gptq_result {
    double loss;          /* sum over rows and columns of (w - q)^2 / Hinv_jj^2 / 2 */
    float damp;           /* the lambda finally used */
    int retries;
} gptq_result;
/* Quantizes W [rows, cols] with Hessian H [cols, cols] into q (allocated with
 * its spec, g_idx present when act_order); Q (optional, [rows, cols]) gets the
 * dequantized weights. W and H are not modified. Dead columns (H_jj = 0) are
 * zeroed. Groups are fitted on the weights as updated so far (exactly as an
 * unblocked GPTQ would), or, with act_order, on the original weights (static
 * groups, g_idx[c] = c / group_size). Fails with FPTQ_ERR_NUMERIC when the
 * Cholesky fails even after max_retries damping increases. */
fptq_status gptq_quantize(const float *W, int64_t rows, int64_t cols, const float *H,
                          const gptq_opts *o, quant_tensor *q, float *Q, gptq_result *r);

/* The same in two steps, for linears that share one Hessian (q/k/v,
 * gate/up) and for a linear's rows split over ranks: the permutation,
 * damping and inverse-Hessian factor once, then each weight matrix. */
typedef struct gptq_hinv {
    int64_t cols;
    float *Hinv;          /* [cols, cols] upper Cholesky factor of (H + damp I)^-1, permuted */
    float *diag;          /* [cols] diag of the undamped H: zero marks a dead column */
    int64_t *perm;        /* act-order column order, or NULL */
    int act_order, retries;
    float damp;
} gptq_hinv;
fptq_status gptq_hinv_compute(const float *H, int64_t cols, const gptq_opts *o, gptq_hinv *h);
void gptq_hinv_free(gptq_hinv *h);
fptq_status gptq_quantize_hinv(const float *W, int64_t rows, int64_t cols, const gptq_hinv *h,
                               const gptq_opts *o, quant_tensor *q, float *Q, gptq_result *r);

#endif
