/*
 * Per-input-channel scales that move quantization difficulty between
 * activations and weights: AWQ's scale and clip searches, SmoothQuant's
 * closed form, and the folds that keep the unquantized function unchanged:
 * X W^T == (X / s) (W s)^T, with X / s absorbed by the preceding op.
 */
#ifndef FPTQ_SMOOTH_H
#define FPTQ_SMOOTH_H

#include "quant.h"

/* The linears that read one input X [n, cols] (q/k/v, or gate/up, or one). */
typedef struct smooth_group {
    int n_lin;
    float *W[4];          /* [rows[i], cols] fp32, modified by the folds */
    int64_t rows[4];
    int64_t cols;
} smooth_group;

typedef struct awq_opts {
    int grid;             /* alpha in {0, 1/grid, ..., (grid-1)/grid}; default 20 */
    int64_t max_tokens;   /* tokens of X used for scoring (evenly spaced rows); default 4096 */
    int clip_grid;        /* clip ratios 1, 1 - 1/clip_grid*0.5, ... down to 0.5; default 20 */
} awq_opts;

/* AWQ scale search: s = mean|x|^alpha normalised by sqrt(max(s) min(s)); for
 * each alpha the group's weights are scaled, RTN-quantized with spec,
 * unscaled, and scored by sum over linears of ||X W^T - X Q(W s)^T / s||^2.
 * abs_mean[cols] is mean |x| over all calibration tokens. Writes the best s
 * (alpha 0 gives s = 1, so the result is never worse than plain RTN). */
fptq_status awq_search_scale(const float *X, int64_t n, const smooth_group *g, const quant_spec *spec,
                             const double *abs_mean, const awq_opts *o, float *s, float *best_alpha,
                             double *best_err);

/* AWQ clip search for one linear: for each output row and group, the range
 * ratio (1 down to 0.5) minimising that group's output error on X.
 * clip is [rows, quant_n_groups(spec, cols)]. */
fptq_status awq_search_clip(const float *X, int64_t n, const float *W, int64_t rows, int64_t cols,
                            const quant_spec *spec, const awq_opts *o, float *clip);

/* SmoothQuant: s_j = max|X_j|^alpha / max|W_j|^(1 - alpha), with max|W_j|
 * over all linears of the group; channels with a zero maximum get s = 1. */
void smoothquant_scales(const float *act_max, const smooth_group *g, float alpha, float *s);

/* Folds: W[:, j] *= s_j (a linear reading the scaled input); preceding
 * RMSNorm weight w_j /= s_j; preceding linear's output rows (and bias) /= s_i. */
void fold_scale_into_input(float *W, int64_t rows, int64_t cols, const float *s);
void fold_scale_into_norm(float *norm_w, int64_t cols, const float *s);
void fold_scale_into_output(float *W, float *bias, int64_t rows, int64_t cols, const float *s);
/* X[n, cols] /= s per column (the captured input, after a fold upstream). */
void scale_input_columns(float *X, int64_t n, int64_t cols, const float *s);

#endif
