/*
 * AWQ's scale and clip searches (after llm-awq auto_scale_block / auto_clip_layer),
 * SmoothQuant's closed-form scales (smoothquant smooth_ln_fcs), and the folds
 * that move a per-input-channel scale into the op that feeds a linear.
 */
#include "smooth.h"

#include <cblas.h>
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* llm-awq clamps the activation statistic so a dead channel cannot give s = 0
 * (which would divide by zero when the scale is folded back). */
#define AWQ_MIN_ABS_MEAN 1e-4

/* Products are formed a block of output rows at a time so that the [tokens, rows]
 * intermediate stays bounded (at most 32 MiB) for 11008-row MLP weights. */
#define BLOCK_ELEMS ((int64_t)1 << 22)

/* The clip search's per-group X^T X is G^2 doubles; wider groups (per-row on
 * big layers) use the direct product instead, at most ~2x slower there. */
#define GRAM_MAX_COLS 2048

/* Zero fields take the defaults so a zero-initialised awq_opts (or NULL) works. */
static fptq_status awq_resolve_opts(const awq_opts *o, awq_opts *out)
{
    awq_opts d = {.grid = 20, .max_tokens = 4096, .clip_grid = 20};
    if (o) {
        if (o->grid < 0 || o->max_tokens < 0 || o->clip_grid < 0)
            return FPTQ_FAIL(FPTQ_ERR_ARG, "awq: negative option (grid %d, max_tokens %lld, clip_grid %d)",
                             o->grid, (long long)o->max_tokens, o->clip_grid);
        if (o->grid > 0) d.grid = o->grid;
        if (o->max_tokens > 0) d.max_tokens = o->max_tokens;
        if (o->clip_grid > 0) d.clip_grid = o->clip_grid;
    }
    *out = d;
    return FPTQ_OK;
}

/* Up to max_tokens evenly spaced rows of X (as llm-awq strides its samples).
 * *Xs is X itself when every row is kept, else a copy in *owned to free. */
static fptq_status awq_subsample(const float *X, int64_t n, int64_t cols, int64_t max_tokens,
                                 const float **Xs, float **owned, int64_t *m)
{
    *owned = NULL;
    if (n <= max_tokens) {
        *Xs = X;
        *m = n;
        return FPTQ_OK;
    }
    float *copy;
    FPTQ_TRY(fptq_calloc((size_t)(max_tokens * cols), sizeof(float), "awq token subsample", &copy));
    for (int64_t i = 0; i < max_tokens; i++)
        memcpy(copy + i * cols, X + (i * n / max_tokens) * cols, (size_t)cols * sizeof(float));
    *Xs = copy;
    *owned = copy;
    *m = max_tokens;
    return FPTQ_OK;
}

/* BLAS takes int dimensions; the sizes fptq meets are far below, but say so
 * rather than wrap. */
static fptq_status awq_check_blas_dims(int64_t m, int64_t cols, int64_t rows, const char *who)
{
    if (m > INT_MAX || cols > INT_MAX || rows > INT_MAX)
        return FPTQ_FAIL(FPTQ_ERR_UNSUPPORTED, "%s: %lld tokens x %lld cols x %lld rows exceed BLAS int sizes",
                         who, (long long)m, (long long)cols, (long long)rows);
    return FPTQ_OK;
}

/* sum ||X D^T||^2 over D's rows: the output error of a weight error D, formed
 * directly from D rather than as X W^T - X Q^T, which would cancel in fp32. */
static double output_sq_err(const float *X, int64_t m, int64_t cols, const float *D, int64_t rows,
                            float *E, int64_t row_block)
{
    double err = 0.0;
    for (int64_t r0 = 0; r0 < rows; r0 += row_block) {
        int64_t nr = rows - r0 < row_block ? rows - r0 : row_block;
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)m, (int)nr, (int)cols, 1.0f, X,
                    (int)cols, D + r0 * cols, (int)cols, 0.0f, E, (int)nr);
        for (int64_t i = 0; i < m * nr; i++)
            err += (double)E[i] * (double)E[i];
    }
    return err;
}

/* ---- AWQ scale search ----------------------------------------------------- */

fptq_status awq_search_scale(const float *X, int64_t n, const smooth_group *g, const quant_spec *spec,
                             const double *abs_mean, const awq_opts *o, float *s, float *best_alpha,
                             double *best_err)
{
    if (!X || !g || !spec || !abs_mean || !s || n <= 0 || g->cols <= 0 || g->n_lin < 1 || g->n_lin > 4)
        return FPTQ_FAIL(FPTQ_ERR_ARG, "awq scale search: bad arguments (n %lld, cols %lld, n_lin %d)",
                         (long long)n, g ? (long long)g->cols : -1LL, g ? g->n_lin : -1);
    const int64_t cols = g->cols;
    int64_t max_rows = 0;
    for (int i = 0; i < g->n_lin; i++) {
        if (!g->W[i] || g->rows[i] <= 0)
            return FPTQ_FAIL(FPTQ_ERR_ARG, "awq scale search: linear %d of the group has no weights", i);
        if (g->rows[i] > max_rows) max_rows = g->rows[i];
    }
    for (int64_t j = 0; j < cols; j++)
        if (!(abs_mean[j] >= 0.0) || isinf(abs_mean[j]))
            return FPTQ_FAIL(FPTQ_ERR_NUMERIC, "awq scale search: mean |x| of channel %lld is %g",
                             (long long)j, abs_mean[j]);
    awq_opts opt;
    FPTQ_TRY(awq_resolve_opts(o, &opt));

    fptq_status st = FPTQ_OK;
    const float *Xs;
    float *Xs_owned = NULL, *s_try = NULL, *Ws = NULL, *D = NULL, *E = NULL;
    quant_tensor q[4];
    int n_q = 0;
    int64_t m;
    FPTQ_TRY(awq_check_blas_dims(n < opt.max_tokens ? n : opt.max_tokens, cols, max_rows, "awq scale search"));
    FPTQ_TRY(awq_subsample(X, n, cols, opt.max_tokens, &Xs, &Xs_owned, &m));

    int64_t row_block = BLOCK_ELEMS / m;
    if (row_block < 1) row_block = 1;
    if (row_block > max_rows) row_block = max_rows;
    FPTQ_TRY_GOTO(fptq_calloc((size_t)cols, sizeof(float), "awq candidate scales", &s_try), st, done);
    FPTQ_TRY_GOTO(fptq_calloc((size_t)(max_rows * cols), sizeof(float), "awq scaled weights", &Ws), st, done);
    FPTQ_TRY_GOTO(fptq_calloc((size_t)(max_rows * cols), sizeof(float), "awq weight error", &D), st, done);
    FPTQ_TRY_GOTO(fptq_calloc((size_t)(m * row_block), sizeof(float), "awq output error", &E), st, done);
    for (; n_q < g->n_lin; n_q++)
        FPTQ_TRY_GOTO(quant_tensor_alloc(spec, g->rows[n_q], cols, 0, &q[n_q]), st, done);

    double err_best = INFINITY;
    float alpha_best = 0.0f;
    for (int k = 0; k < opt.grid; k++) {
        double alpha = (double)k / opt.grid;
        /* s = mean|x|^alpha / sqrt(max s * min s): centring s around 1 in log
         * scale keeps W s inside the range the original weights used. */
        double smax = 0.0, smin = INFINITY;
        for (int64_t j = 0; j < cols; j++) {
            double v = pow(fmax(abs_mean[j], AWQ_MIN_ABS_MEAN), alpha);
            smax = fmax(smax, v);
            smin = fmin(smin, v);
        }
        double norm = sqrt(smax * smin);
        for (int64_t j = 0; j < cols; j++)
            s_try[j] = (float)(pow(fmax(abs_mean[j], AWQ_MIN_ABS_MEAN), alpha) / norm);

        double err = 0.0;
        for (int i = 0; i < g->n_lin; i++) {
            const int64_t rows = g->rows[i];
            const float *W = g->W[i];
            for (int64_t r = 0; r < rows; r++)
                for (int64_t j = 0; j < cols; j++)
                    Ws[r * cols + j] = W[r * cols + j] * s_try[j];
            FPTQ_TRY_GOTO(quant_rtn(Ws, rows, cols, NULL, &q[i]), st, done);
            quant_dequantize(&q[i], D);
            for (int64_t r = 0; r < rows; r++)
                for (int64_t j = 0; j < cols; j++)
                    D[r * cols + j] = W[r * cols + j] - D[r * cols + j] / s_try[j];
            err += output_sq_err(Xs, m, cols, D, rows, E, row_block);
        }
        /* alpha 0 is plain RTN (s = 1 exactly); if even that is not finite the
         * inputs hold NaN or Inf and no choice would mean anything. */
        if (k == 0 && !isfinite(err)) {
            st = FPTQ_FAIL(FPTQ_ERR_NUMERIC, "awq scale search: RTN output error is %g (NaN or Inf in X or W)", err);
            goto done;
        }
        if (err < err_best) {
            err_best = err;
            alpha_best = (float)alpha;
            memcpy(s, s_try, (size_t)cols * sizeof(float));
        }
    }
    if (best_alpha) *best_alpha = alpha_best;
    if (best_err) *best_err = err_best;

done:
    for (int i = 0; i < n_q; i++)
        quant_tensor_free(&q[i]);
    free(E);
    free(D);
    free(Ws);
    free(s_try);
    free(Xs_owned);
    return st;
}

/* ---- AWQ clip search ------------------------------------------------------ */

/* Columns c0..c0+G of tokens t0..t0+tc, widened to double. */
static void gather_group(const float *Xs, int64_t cols, int64_t t0, int64_t tc, int64_t c0, int64_t G,
                         double *Xg)
{
    for (int64_t t = 0; t < tc; t++)
        for (int64_t j = 0; j < G; j++)
            Xg[t * G + j] = Xs[(t0 + t) * cols + c0 + j];
}

fptq_status awq_search_clip(const float *X, int64_t n, const float *W, int64_t rows, int64_t cols,
                            const quant_spec *spec, const awq_opts *o, float *clip)
{
    if (!X || !W || !spec || !clip || n <= 0 || rows <= 0 || cols <= 0)
        return FPTQ_FAIL(FPTQ_ERR_ARG, "awq clip search: bad arguments (n %lld, rows %lld, cols %lld)",
                         (long long)n, (long long)rows, (long long)cols);
    const int64_t ng = quant_n_groups(spec, cols);
    for (int64_t i = 0; i < rows * ng; i++)
        clip[i] = 1.0f;
    /* FP8 scales map max|w| to 448 with no integer grid to trade range against;
     * like llm-awq we search clips for integer formats only. */
    if (spec->format == QFMT_FP8_E4M3)
        return FPTQ_OK;
    if (spec->format != QFMT_INT)
        return FPTQ_FAIL(FPTQ_ERR_UNSUPPORTED, "awq clip search: unknown weight format %d", (int)spec->format);
    if (spec->bits < 2 || spec->bits > 8)
        return FPTQ_FAIL(FPTQ_ERR_ARG, "awq clip search: %d-bit integer weights (2..8 supported)", spec->bits);
    awq_opts opt;
    FPTQ_TRY(awq_resolve_opts(o, &opt));
    FPTQ_TRY(awq_check_blas_dims(n < opt.max_tokens ? n : opt.max_tokens, cols, rows, "awq clip search"));

    const int64_t gs = spec->group_size > 0 && spec->group_size < cols ? spec->group_size : cols;
    const int K = opt.clip_grid;
    fptq_status st = FPTQ_OK;
    const float *Xs;
    float *Xs_owned = NULL;
    double *Xg = NULL, *H = NULL, *D = NULL, *E = NULL, *errs = NULL;
    int64_t m;
    FPTQ_TRY(awq_subsample(X, n, cols, opt.max_tokens, &Xs, &Xs_owned, &m));

    /* A group's error over m tokens is ||X_g d||^2 = d^T (X_g^T X_g) d. With the
     * Gram matrix each (row, ratio) costs G^2 instead of m G, which wins when
     * the group is narrower than the sample (the usual g128); wide per-row
     * groups keep the direct product, taken over chunks of tokens so memory
     * stays bounded. Double precision, so that ratios whose errors differ
     * little still rank as the exact errors do. */
    const int use_gram = gs <= m && gs <= GRAM_MAX_COLS;
    int64_t tok_chunk = BLOCK_ELEMS / gs;
    if (tok_chunk < 1) tok_chunk = 1;
    if (tok_chunk > m) tok_chunk = m;
    const int64_t width = use_gram ? gs : tok_chunk;
    int64_t row_block = BLOCK_ELEMS / width;
    if (row_block < 1) row_block = 1;
    if (row_block > rows) row_block = rows;
    FPTQ_TRY_GOTO(fptq_calloc((size_t)(tok_chunk * gs), sizeof(double), "awq clip group inputs", &Xg), st, done);
    if (use_gram)
        FPTQ_TRY_GOTO(fptq_calloc((size_t)(gs * gs), sizeof(double), "awq clip group Gram", &H), st, done);
    FPTQ_TRY_GOTO(fptq_calloc((size_t)(row_block * gs), sizeof(double), "awq clip weight error", &D), st, done);
    FPTQ_TRY_GOTO(fptq_calloc((size_t)(row_block * width), sizeof(double), "awq clip output error", &E), st, done);
    FPTQ_TRY_GOTO(fptq_calloc((size_t)(row_block * K), sizeof(double), "awq clip errors", &errs), st, done);

    for (int64_t grp = 0; grp < ng; grp++) {
        const int64_t c0 = grp * gs;
        const int64_t G = cols - c0 < gs ? cols - c0 : gs;
        if (use_gram)
            for (int64_t t0 = 0; t0 < m; t0 += tok_chunk) {
                const int64_t tc = m - t0 < tok_chunk ? m - t0 : tok_chunk;
                gather_group(Xs, cols, t0, tc, c0, G, Xg);
                cblas_dsyrk(CblasRowMajor, CblasUpper, CblasTrans, (int)G, (int)tc, 1.0, Xg, (int)G,
                            t0 == 0 ? 0.0 : 1.0, H, (int)G);
            }

        for (int64_t r0 = 0; r0 < rows; r0 += row_block) {
            const int64_t nr = rows - r0 < row_block ? rows - r0 : row_block;
            memset(errs, 0, (size_t)(nr * K) * sizeof(double));
            /* the Gram path has every token in H already: one pass */
            for (int64_t t0 = 0; t0 < (use_gram ? 1 : m); t0 += tok_chunk) {
                const int64_t tc = m - t0 < tok_chunk ? m - t0 : tok_chunk;
                if (!use_gram)
                    gather_group(Xs, cols, t0, tc, c0, G, Xg);
                for (int k = 0; k < K; k++) {
                    const float ratio = (float)(1.0 - 0.5 * k / K);
                    for (int64_t r = 0; r < nr; r++) {
                        const float *w = W + (r0 + r) * cols + c0;
                        float scale;
                        int32_t zero;
                        quant_fit_int(w, G, 1, spec->bits, spec->sym, ratio, &scale, &zero);
                        for (int64_t j = 0; j < G; j++) {
                            int32_t code = quant_int_code(w[j], scale, zero, spec->bits);
                            D[r * G + j] = (double)w[j] - (double)((float)(code - zero) * scale);
                        }
                    }
                    if (use_gram) {
                        cblas_dsymm(CblasRowMajor, CblasRight, CblasUpper, (int)nr, (int)G, 1.0, H, (int)G, D,
                                    (int)G, 0.0, E, (int)G);
                        for (int64_t r = 0; r < nr; r++)
                            for (int64_t j = 0; j < G; j++)
                                errs[r * K + k] += D[r * G + j] * E[r * G + j];
                    } else {
                        cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)nr, (int)tc, (int)G, 1.0, D,
                                    (int)G, Xg, (int)G, 0.0, E, (int)tc);
                        for (int64_t r = 0; r < nr; r++)
                            for (int64_t t = 0; t < tc; t++)
                                errs[r * K + k] += E[r * tc + t] * E[r * tc + t];
                    }
                }
            }
            for (int64_t r = 0; r < nr; r++) {
                const double *e = errs + r * K;
                if (!isfinite(e[0])) {
                    st = FPTQ_FAIL(FPTQ_ERR_NUMERIC,
                                   "awq clip search: output error of row %lld group %lld is %g (NaN or Inf in X or W)",
                                   (long long)(r0 + r), (long long)grp, e[0]);
                    goto done;
                }
                /* Strictly smaller: ties keep the wider range, so clip 1 stands
                 * unless clipping actually helps. */
                int best = 0;
                for (int k = 1; k < K; k++)
                    if (e[k] < e[best])
                        best = k;
                clip[(r0 + r) * ng + grp] = (float)(1.0 - 0.5 * best / K);
            }
        }
    }

done:
    free(errs);
    free(E);
    free(D);
    free(H);
    free(Xg);
    free(Xs_owned);
    return st;
}

/* ---- SmoothQuant ------------------------------------------------------------ */

void smoothquant_scales(const float *act_max, const smooth_group *g, float alpha, float *s)
{
    const int64_t cols = g->cols;
    /* s doubles as the accumulator of max|W_j| so that no allocation (and no
     * failure) is needed; rows are walked in memory order. */
    for (int64_t j = 0; j < cols; j++)
        s[j] = 0.0f;
    for (int i = 0; i < g->n_lin; i++)
        for (int64_t r = 0; r < g->rows[i]; r++) {
            const float *w = g->W[i] + r * cols;
            for (int64_t j = 0; j < cols; j++)
                s[j] = fmaxf(s[j], fabsf(w[j]));
        }
    for (int64_t j = 0; j < cols; j++) {
        double a = act_max[j], w = s[j], v = 1.0;
        /* A channel that never fires (or has no weight) has nothing to balance;
         * a non-finite statistic must not leak an Inf or NaN scale into the folds. */
        if (a > 0.0 && w > 0.0 && isfinite(a) && isfinite(w))
            v = pow(a, alpha) / pow(w, 1.0 - alpha);
        s[j] = isfinite(v) && v > 0.0 && (float)v > 0.0f && isfinite((float)v) ? (float)v : 1.0f;
    }
}

/* ---- folds -------------------------------------------------------------------- */

void fold_scale_into_input(float *W, int64_t rows, int64_t cols, const float *s)
{
    for (int64_t r = 0; r < rows; r++)
        for (int64_t j = 0; j < cols; j++)
            W[r * cols + j] *= s[j];
}

void fold_scale_into_norm(float *norm_w, int64_t cols, const float *s)
{
    for (int64_t j = 0; j < cols; j++)
        norm_w[j] /= s[j];
}

void fold_scale_into_output(float *W, float *bias, int64_t rows, int64_t cols, const float *s)
{
    for (int64_t r = 0; r < rows; r++) {
        for (int64_t j = 0; j < cols; j++)
            W[r * cols + j] /= s[r];
        if (bias)
            bias[r] /= s[r];
    }
}

void scale_input_columns(float *X, int64_t n, int64_t cols, const float *s)
{
    for (int64_t t = 0; t < n; t++)
        for (int64_t j = 0; j < cols; j++)
            X[t * cols + j] /= s[j];
}
