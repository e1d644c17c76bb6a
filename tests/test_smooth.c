/*
 * kernels/smooth: the folds keep the unquantized function, AWQ's searches never
 * do worse than their plain-RTN / unclipped starting point and pick real gains
 * on outlier data, SmoothQuant's scales match hand values and balance maxima.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "kernels/smooth.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static uint64_t rng_state = 0x9E3779B97F4A7C15ull;
static double urand(void) /* uniform in [0, 1) */
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (double)(rng_state >> 11) * (1.0 / 9007199254740992.0);
}
static float frand(void) { return (float)(urand() * 2.0 - 1.0); } /* [-1, 1) */
static float *alloc_f(int64_t n)
{
    float *v = calloc((size_t)n, sizeof(float));
    assert_non_null(v);
    return v;
}
static float *rand_vec(int64_t n)
{
    float *v = alloc_f(n);
    for (int64_t i = 0; i < n; i++)
        v[i] = frand();
    return v;
}
/* Scales spread over e^-2..e^2 and not powers of two, so the folds really round. */
static float *rand_scales(int64_t n)
{
    float *s = alloc_f(n);
    for (int64_t i = 0; i < n; i++)
        s[i] = (float)exp(4.0 * urand() - 2.0);
    return s;
}
static double *abs_mean_of(const float *X, int64_t n, int64_t cols)
{
    double *a = calloc((size_t)cols, sizeof(double));
    assert_non_null(a);
    for (int64_t t = 0; t < n; t++)
        for (int64_t j = 0; j < cols; j++)
            a[j] += fabs(X[t * cols + j]);
    for (int64_t j = 0; j < cols; j++)
        a[j] /= (double)n;
    return a;
}

/* ---- folds -------------------------------------------------------------- */

static void rmsnorm(const float *x, const float *w, int64_t cols, float *y)
{
    float ss = 0.0f;
    for (int64_t j = 0; j < cols; j++)
        ss += x[j] * x[j];
    float inv = 1.0f / sqrtf(ss / (float)cols + 1e-5f);
    for (int64_t j = 0; j < cols; j++)
        y[j] = x[j] * inv * w[j];
}
static float dot_f(const float *a, const float *b, int64_t n) /* fp32, in order */
{
    float acc = 0.0f;
    for (int64_t j = 0; j < n; j++)
        acc += a[j] * b[j];
    return acc;
}

/* y = rmsnorm(x, w) W^T == rmsnorm(x, w / s) (W s)^T. Both sides in fp32: each
 * term differs by at most ~6 roundings (the /s, *s and two products) and each
 * in-order sum of cols terms by (cols - 1) u, u = 2^-24, so
 * |y - y'| <= (2 cols + 4) u S = (cols + 2) 2^-23 S, S = sum_j |n_j w_j W_rj|;
 * we allow (cols + 4) 2^-23 S. */
static void test_fold_norm_then_linear(void **state)
{
    (void)state;
    const int64_t cols = 64, rows = 48, n = 16;
    float *X = rand_vec(n * cols), *w = rand_vec(cols), *W = rand_vec(rows * cols), *s = rand_scales(cols);
    float *w2 = alloc_f(cols), *W2 = alloc_f(rows * cols), *h = alloc_f(cols), *h2 = alloc_f(cols);
    memcpy(w2, w, (size_t)cols * sizeof(float));
    memcpy(W2, W, (size_t)(rows * cols) * sizeof(float));
    fold_scale_into_norm(w2, cols, s);
    fold_scale_into_input(W2, rows, cols, s);
    for (int64_t t = 0; t < n; t++) {
        rmsnorm(X + t * cols, w, cols, h);
        rmsnorm(X + t * cols, w2, cols, h2);
        for (int64_t r = 0; r < rows; r++) {
            float y = dot_f(h, W + r * cols, cols), y2 = dot_f(h2, W2 + r * cols, cols);
            double S = 0.0;
            for (int64_t j = 0; j < cols; j++)
                S += fabs((double)h[j] * W[r * cols + j]);
            double tol = (double)(cols + 4) * ldexp(1.0, -23) * S;
            if (fabs((double)y - y2) > tol)
                fail_msg("token %lld row %lld: %.9g vs folded %.9g, tol %.3g", (long long)t, (long long)r, y,
                         y2, tol);
        }
    }
    free(X); free(w); free(W); free(s); free(w2); free(W2); free(h); free(h2);
}

/* (x A^T + a) B^T == (x (A / s rows)^T + a / s) (B s cols)^T. h'_j s_j differs
 * from h_j by <= (2 colsA + 4) u T_j (T_j = sum_k |x_k A_jk| + |a_j|), the outer
 * products add ~3 u and the outer sums 2 (colsB - 1) u, all relative to
 * sum_j |B_rj| T_j, so (colsA + colsB + 8) 2^-23 sum_j |B_rj| T_j bounds it. */
static void test_fold_linear_then_linear(void **state)
{
    (void)state;
    const int64_t ca = 40, mid = 56, rows = 24, n = 12;
    float *X = rand_vec(n * ca), *A = rand_vec(mid * ca), *a = rand_vec(mid), *B = rand_vec(rows * mid);
    float *s = rand_scales(mid);
    float *A2 = alloc_f(mid * ca), *a2 = alloc_f(mid), *B2 = alloc_f(rows * mid);
    float *h = alloc_f(mid), *h2 = alloc_f(mid);
    double *T = calloc((size_t)mid, sizeof(double));
    assert_non_null(T);
    memcpy(A2, A, (size_t)(mid * ca) * sizeof(float));
    memcpy(a2, a, (size_t)mid * sizeof(float));
    memcpy(B2, B, (size_t)(rows * mid) * sizeof(float));
    fold_scale_into_output(A2, a2, mid, ca, s);
    fold_scale_into_input(B2, rows, mid, s);
    for (int64_t t = 0; t < n; t++) {
        const float *x = X + t * ca;
        for (int64_t j = 0; j < mid; j++) {
            h[j] = dot_f(x, A + j * ca, ca) + a[j];
            h2[j] = dot_f(x, A2 + j * ca, ca) + a2[j];
            T[j] = fabs((double)a[j]);
            for (int64_t k = 0; k < ca; k++)
                T[j] += fabs((double)x[k] * A[j * ca + k]);
        }
        for (int64_t r = 0; r < rows; r++) {
            float y = dot_f(h, B + r * mid, mid), y2 = dot_f(h2, B2 + r * mid, mid);
            double S = 0.0;
            for (int64_t j = 0; j < mid; j++)
                S += fabs((double)B[r * mid + j]) * T[j];
            double tol = (double)(ca + mid + 8) * ldexp(1.0, -23) * S;
            if (fabs((double)y - y2) > tol)
                fail_msg("token %lld row %lld: %.9g vs folded %.9g, tol %.3g", (long long)t, (long long)r, y,
                         y2, tol);
        }
    }
    /* a NULL bias is allowed (Llama's linears have none) */
    fold_scale_into_output(A2, NULL, mid, ca, s);
    free(X); free(A); free(a); free(B); free(s); free(A2); free(a2); free(B2); free(h); free(h2); free(T);
}

/* The captured input is rescaled in place after an upstream fold:
 * (X / s) (W s)^T == X W^T, same bound as the norm fold with no norm. */
static void test_scale_input_columns(void **state)
{
    (void)state;
    const int64_t cols = 64, rows = 20, n = 10;
    float *X = rand_vec(n * cols), *W = rand_vec(rows * cols), *s = rand_scales(cols);
    float *X2 = alloc_f(n * cols), *W2 = alloc_f(rows * cols);
    memcpy(X2, X, (size_t)(n * cols) * sizeof(float));
    memcpy(W2, W, (size_t)(rows * cols) * sizeof(float));
    scale_input_columns(X2, n, cols, s);
    fold_scale_into_input(W2, rows, cols, s);
    for (int64_t j = 0; j < cols; j++)
        assert_true(X2[j] == X[j] / s[j]);
    for (int64_t t = 0; t < n; t++)
        for (int64_t r = 0; r < rows; r++) {
            float y = dot_f(X + t * cols, W + r * cols, cols), y2 = dot_f(X2 + t * cols, W2 + r * cols, cols);
            double S = 0.0;
            for (int64_t j = 0; j < cols; j++)
                S += fabs((double)X[t * cols + j] * W[r * cols + j]);
            assert_true(fabs((double)y - y2) <= (double)(cols + 4) * ldexp(1.0, -23) * S);
        }
    free(X); free(W); free(s); free(X2); free(W2);
}

/* ---- AWQ scale search ---------------------------------------------------- */

/* The error awq_search_scale defines, recomputed here: the weight error
 * D = W - dequant(RTN(W s)) / s in fp32 exactly as the search forms it, then
 * ||X D^T||^2 in double. *bound gets how far an fp32 X D^T may move that sum:
 * each product is off by <= cols 2^-24 sum_j |x d| =: delta, so the sum of
 * squares by <= 2 sqrt(sum e^2) sqrt(sum delta^2) + sum delta^2 (Cauchy-Schwarz). */
static double scaled_rtn_err(const float *X, int64_t n, const smooth_group *g, const quant_spec *spec,
                             const float *s, double *bound)
{
    const int64_t cols = g->cols;
    double err = 0.0, dd = 0.0;
    for (int i = 0; i < g->n_lin; i++) {
        const int64_t rows = g->rows[i];
        float *Ws = alloc_f(rows * cols), *Q = alloc_f(rows * cols);
        for (int64_t r = 0; r < rows; r++)
            for (int64_t j = 0; j < cols; j++)
                Ws[r * cols + j] = g->W[i][r * cols + j] * s[j];
        quant_tensor q;
        assert_int_equal(quant_tensor_alloc(spec, rows, cols, 0, &q), FPTQ_OK);
        assert_int_equal(quant_rtn(Ws, rows, cols, NULL, &q), FPTQ_OK);
        quant_dequantize(&q, Q);
        quant_tensor_free(&q);
        for (int64_t r = 0; r < rows; r++)
            for (int64_t j = 0; j < cols; j++)
                Q[r * cols + j] = g->W[i][r * cols + j] - Q[r * cols + j] / s[j];
        for (int64_t t = 0; t < n; t++)
            for (int64_t r = 0; r < rows; r++) {
                double e = 0.0, a = 0.0;
                for (int64_t j = 0; j < cols; j++) {
                    double p = (double)X[t * cols + j] * Q[r * cols + j];
                    e += p;
                    a += fabs(p);
                }
                err += e * e;
                double delta = (double)cols * ldexp(1.0, -24) * a;
                dd += delta * delta;
            }
        free(Ws);
        free(Q);
    }
    *bound = 2.0 * sqrt(err) * sqrt(dd) + dd;
    return err;
}

static void make_group(smooth_group *g, int64_t cols, int n_lin, const int64_t *rows)
{
    memset(g, 0, sizeof *g);
    g->n_lin = n_lin;
    g->cols = cols;
    for (int i = 0; i < n_lin; i++) {
        g->rows[i] = rows[i];
        g->W[i] = rand_vec(rows[i] * cols);
    }
}
static void free_group(smooth_group *g)
{
    for (int i = 0; i < g->n_lin; i++)
        free(g->W[i]);
}

/* Plain data: grid 1 is alpha 0 alone, i.e. s = 1 and plain RTN, and its error
 * is the RTN error recomputed here; the full grid never does worse (alpha 0 is
 * on it, and both runs form that candidate identically), and the error it
 * reports is that of the scales it returns. */
static void test_awq_scale_not_worse_than_rtn(void **state)
{
    (void)state;
    const int64_t cols = 64, n = 256, rows[3] = {64, 32, 32};
    smooth_group g;
    make_group(&g, cols, 3, rows);
    float *X = rand_vec(n * cols), *s = alloc_f(cols), *s1 = alloc_f(cols);
    double *am = abs_mean_of(X, n, cols);
    quant_spec spec = {.format = QFMT_INT, .bits = 4, .group_size = 32, .sym = 0};

    awq_opts o1 = {.grid = 1, .max_tokens = 4096, .clip_grid = 20};
    float alpha1 = -1.0f;
    double err_rtn = -1.0, bound;
    assert_int_equal(awq_search_scale(X, n, &g, &spec, am, &o1, s1, &alpha1, &err_rtn), FPTQ_OK);
    assert_true(alpha1 == 0.0f);
    for (int64_t j = 0; j < cols; j++)
        assert_true(s1[j] == 1.0f);
    double ref = scaled_rtn_err(X, n, &g, &spec, s1, &bound);
    if (fabs(err_rtn - ref) > bound)
        fail_msg("RTN error %.10g, recomputed %.10g, bound %.3g", err_rtn, ref, bound);

    awq_opts o = {.grid = 20, .max_tokens = 4096, .clip_grid = 20};
    float alpha;
    double err;
    assert_int_equal(awq_search_scale(X, n, &g, &spec, am, &o, s, &alpha, &err), FPTQ_OK);
    assert_true(err <= err_rtn);
    assert_true(alpha >= 0.0f && alpha < 1.0f);
    ref = scaled_rtn_err(X, n, &g, &spec, s, &bound);
    if (fabs(err - ref) > bound)
        fail_msg("alpha %g: error %.10g, recomputed with the returned s %.10g, bound %.3g", alpha, err, ref, bound);
    /* s is normalised so that max(s) min(s) = 1 (up to the fp32 rounding of s). */
    float smax = 0.0f, smin = INFINITY;
    for (int64_t j = 0; j < cols; j++) {
        smax = fmaxf(smax, s[j]);
        smin = fminf(smin, s[j]);
    }
    assert_true(fabs((double)smax * smin - 1.0) < 4.0 * ldexp(1.0, -23));

    free(X); free(s); free(s1); free(am);
    free_group(&g);
}

/* Three channels whose mean |x| is 50x the rest: scaling them up before RTN
 * keeps their weights precise, which is AWQ's premise, so the search must
 * pick alpha > 0 and strictly beat plain RTN. */
static void test_awq_scale_outlier_channels(void **state)
{
    (void)state;
    const int64_t cols = 64, n = 512, rows[2] = {96, 96};
    const int64_t outl[3] = {5, 17, 40};
    smooth_group g;
    make_group(&g, cols, 2, rows);
    float *X = rand_vec(n * cols), *s = alloc_f(cols), *s1 = alloc_f(cols);
    for (int64_t t = 0; t < n; t++)
        for (int k = 0; k < 3; k++)
            X[t * cols + outl[k]] *= 50.0f;
    double *am = abs_mean_of(X, n, cols);
    quant_spec spec = {.format = QFMT_INT, .bits = 4, .group_size = 32, .sym = 0};

    awq_opts o1 = {.grid = 1, .max_tokens = 4096, .clip_grid = 20};
    double err_rtn, err;
    float alpha;
    assert_int_equal(awq_search_scale(X, n, &g, &spec, am, &o1, s1, &alpha, &err_rtn), FPTQ_OK);
    awq_opts o = {.grid = 20, .max_tokens = 4096, .clip_grid = 20};
    assert_int_equal(awq_search_scale(X, n, &g, &spec, am, &o, s, &alpha, &err), FPTQ_OK);
    print_message("outliers: alpha %.2f, error %.6g vs RTN %.6g (%.3f)\n", alpha, err, err_rtn, err / err_rtn);
    assert_true(alpha > 0.0f);
    assert_true(err < err_rtn);
    /* the outlier channels get the largest scales */
    for (int k = 0; k < 3; k++)
        for (int64_t j = 0; j < cols; j++)
            if (j != outl[0] && j != outl[1] && j != outl[2])
                assert_true(s[outl[k]] > s[j]);
    free(X); free(s); free(s1); free(am);
    free_group(&g);
}

/* FP8 weights (per-row E4M3 scales) go through the same search: never worse
 * than plain FP8 rounding. */
static void test_awq_scale_fp8(void **state)
{
    (void)state;
    const int64_t cols = 64, n = 256, rows[1] = {48};
    smooth_group g;
    make_group(&g, cols, 1, rows);
    float *X = rand_vec(n * cols), *s = alloc_f(cols);
    for (int64_t t = 0; t < n; t++)
        X[t * cols + 9] *= 50.0f;
    double *am = abs_mean_of(X, n, cols);
    quant_spec spec = {.format = QFMT_FP8_E4M3, .bits = 8, .group_size = 0, .sym = 1};
    awq_opts o1 = {.grid = 1}, o = {.grid = 20};
    float alpha;
    double err_rtn, err, bound;
    assert_int_equal(awq_search_scale(X, n, &g, &spec, am, &o1, s, &alpha, &err_rtn), FPTQ_OK);
    assert_int_equal(awq_search_scale(X, n, &g, &spec, am, &o, s, &alpha, &err), FPTQ_OK);
    assert_true(err <= err_rtn);
    double ref = scaled_rtn_err(X, n, &g, &spec, s, &bound);
    if (fabs(err - ref) > bound)
        fail_msg("alpha %g: error %.10g, recomputed %.10g, bound %.3g", alpha, err, ref, bound);
    free(X); free(s); free(am);
    free_group(&g);
}

/* With more tokens than max_tokens the search scores rows t * n / max_tokens:
 * the same call on that subsample, made by hand, gives identical results. */
static void test_awq_scale_subsample(void **state)
{
    (void)state;
    const int64_t cols = 32, n = 100, m = 25, rows[1] = {40};
    smooth_group g;
    make_group(&g, cols, 1, rows);
    float *X = rand_vec(n * cols), *Xs = alloc_f(m * cols), *s = alloc_f(cols), *s2 = alloc_f(cols);
    for (int64_t i = 0; i < m; i++)
        memcpy(Xs + i * cols, X + (i * n / m) * cols, (size_t)cols * sizeof(float));
    double *am = abs_mean_of(X, n, cols); /* statistics still come from all tokens */
    quant_spec spec = {.format = QFMT_INT, .bits = 3, .group_size = 16, .sym = 1};
    awq_opts o = {.grid = 10, .max_tokens = m, .clip_grid = 20};
    float a1, a2;
    double e1, e2;
    assert_int_equal(awq_search_scale(X, n, &g, &spec, am, &o, s, &a1, &e1), FPTQ_OK);
    assert_int_equal(awq_search_scale(Xs, m, &g, &spec, am, &o, s2, &a2, &e2), FPTQ_OK);
    assert_true(a1 == a2);
    assert_true(e1 == e2);
    assert_memory_equal(s, s2, (size_t)cols * sizeof(float));
    free(X); free(Xs); free(s); free(s2); free(am);
    free_group(&g);
}

static void test_awq_scale_bad_inputs(void **state)
{
    (void)state;
    const int64_t cols = 16, n = 8, rows[1] = {8};
    smooth_group g;
    make_group(&g, cols, 1, rows);
    float *X = rand_vec(n * cols), *s = alloc_f(cols);
    double *am = abs_mean_of(X, n, cols);
    quant_spec spec = {.format = QFMT_INT, .bits = 4, .group_size = 16, .sym = 0};

    fptq_clear_error();
    g.n_lin = 0;
    assert_int_equal(awq_search_scale(X, n, &g, &spec, am, NULL, s, NULL, NULL), FPTQ_ERR_ARG);
    assert_true(strlen(fptq_last_error()) > 0);
    g.n_lin = 1;

    fptq_clear_error();
    awq_opts neg = {.grid = -1};
    assert_int_equal(awq_search_scale(X, n, &g, &spec, am, &neg, s, NULL, NULL), FPTQ_ERR_ARG);

    fptq_clear_error();
    X[3] = NAN;
    assert_int_equal(awq_search_scale(X, n, &g, &spec, am, NULL, s, NULL, NULL), FPTQ_ERR_NUMERIC);
    assert_true(strstr(fptq_last_error(), "NaN") != NULL);
    fptq_clear_error();
    float clip[8];
    assert_int_equal(awq_search_clip(X, n, g.W[0], 8, cols, &spec, NULL, clip), FPTQ_ERR_NUMERIC);
    fptq_clear_error();
    free(X); free(s); free(am);
    free_group(&g);
}

/* ---- AWQ clip search ------------------------------------------------------- */

/* One group's output error with range ratio r, straight from the definition:
 * sum over tokens of (x_g . (w_g - q_g))^2 in double. *abs gets
 * sum_t (sum_j |x_tj d_j|)^2, which bounds the rounding of any double
 * evaluation of it (direct or via X^T X) at ~(n + G) 2^-53 abs. */
static double group_err(const float *X, int64_t n, int64_t cols, const float *w, int64_t c0, int64_t G,
                        const quant_spec *spec, float r, double *abs)
{
    double *d = calloc((size_t)G, sizeof(double));
    assert_non_null(d);
    float scale;
    int32_t zero;
    quant_fit_int(w + c0, G, 1, spec->bits, spec->sym, r, &scale, &zero);
    for (int64_t j = 0; j < G; j++) {
        int32_t code = quant_int_code(w[c0 + j], scale, zero, spec->bits);
        d[j] = (double)w[c0 + j] - (double)((float)(code - zero) * scale);
    }
    double err = 0.0, a = 0.0;
    for (int64_t t = 0; t < n; t++) {
        double e = 0.0, ea = 0.0;
        for (int64_t j = 0; j < G; j++) {
            e += X[t * cols + c0 + j] * d[j];
            ea += fabs(X[t * cols + c0 + j] * d[j]);
        }
        err += e * e;
        a += ea * ea;
    }
    free(d);
    *abs = a;
    return err;
}

/* Every chosen ratio lies on the grid 1 - 0.5 k / clip_grid (so in (0.5, 1]) and
 * is a minimiser over it of that (row, group)'s output error, clip 1 included,
 * up to the double rounding of the two evaluations, 2 (n + G + 2) 2^-53 (abs
 * sums). Returns how many (row, group) chose a ratio below 1. */
static int64_t check_clip(const float *X, int64_t n, const float *W, int64_t rows, int64_t cols,
                          const quant_spec *spec, int clip_grid, const float *clip)
{
    const int64_t ng = quant_n_groups(spec, cols);
    const int64_t gs = spec->group_size > 0 && spec->group_size < cols ? spec->group_size : cols;
    int64_t clipped = 0;
    for (int64_t r = 0; r < rows; r++)
        for (int64_t g = 0; g < ng; g++) {
            const int64_t c0 = g * gs, G = cols - c0 < gs ? cols - c0 : gs;
            const float c = clip[r * ng + g];
            assert_true(c > 0.5f && c <= 1.0f);
            int on_grid = 0;
            for (int k = 0; k < clip_grid; k++)
                on_grid |= c == (float)(1.0 - 0.5 * k / clip_grid);
            assert_true(on_grid);
            double abs_c, abs_k;
            double err_c = group_err(X, n, cols, W + r * cols, c0, G, spec, c, &abs_c);
            for (int k = 0; k < clip_grid; k++) {
                float rk = (float)(1.0 - 0.5 * k / clip_grid);
                double err_k = group_err(X, n, cols, W + r * cols, c0, G, spec, rk, &abs_k);
                double tol = 2.0 * (double)(n + G + 2) * ldexp(1.0, -53) * (abs_c + abs_k);
                if (err_c > err_k + tol)
                    fail_msg("row %lld group %lld: clip %g gives %.12g, ratio %g gives %.12g", (long long)r,
                             (long long)g, c, err_c, rk, err_k);
            }
            clipped += c < 1.0f;
        }
    return clipped;
}

/* Heavy-tailed weights (a few entries 8x the rest) make clipping pay off for
 * many groups; groups of 16 with n > G take the X^T X path, and a ragged last
 * group (cols 72) is covered; asymmetric and symmetric. */
static void test_awq_clip_grouped(void **state)
{
    (void)state;
    const int64_t rows = 40, cols = 72, n = 300;
    float *X = rand_vec(n * cols), *W = rand_vec(rows * cols);
    for (int64_t i = 0; i < rows * cols; i += 23)
        W[i] *= 8.0f;
    for (int sym = 0; sym <= 1; sym++) {
        quant_spec spec = {.format = QFMT_INT, .bits = 3, .group_size = 16, .sym = sym};
        const int64_t ng = quant_n_groups(&spec, cols);
        float *clip = alloc_f(rows * ng);
        awq_opts o = {.grid = 20, .max_tokens = 4096, .clip_grid = 20};
        assert_int_equal(awq_search_clip(X, n, W, rows, cols, &spec, &o, clip), FPTQ_OK);
        int64_t clipped = check_clip(X, n, W, rows, cols, &spec, o.clip_grid, clip);
        print_message("sym %d: %lld of %lld groups clipped\n", sym, (long long)clipped, (long long)(rows * ng));
        assert_true(clipped > 0);
        free(clip);
    }
    free(X);
    free(W);
}

/* One group per row, wider than the token sample: the direct X D^T path. */
static void test_awq_clip_per_row_direct(void **state)
{
    (void)state;
    const int64_t rows = 24, cols = 96, n = 40;
    float *X = rand_vec(n * cols), *W = rand_vec(rows * cols), clip[24];
    for (int64_t i = 0; i < rows * cols; i += 31)
        W[i] *= 8.0f;
    quant_spec spec = {.format = QFMT_INT, .bits = 3, .group_size = 0, .sym = 0};
    awq_opts o = {.grid = 20, .max_tokens = 4096, .clip_grid = 10};
    assert_int_equal(awq_search_clip(X, n, W, rows, cols, &spec, &o, clip), FPTQ_OK);
    assert_true(check_clip(X, n, W, rows, cols, &spec, o.clip_grid, clip) > 0);
    free(X);
    free(W);
}

/* Weights 8x larger in columns j % 50 == 7; 50 special tokens (the first or
 * the last) read only those columns, at 100x, the others never do. The
 * special tokens then dominate the error and forbid clipping the large
 * weights, which the rest alone would clip: a search that lost a chunk of
 * tokens, or read one twice, picks other ratios. */
static void make_special_tokens(float *X, int64_t n, float *W, int64_t rows, int64_t cols, int at_end)
{
    for (int64_t t = 0; t < n; t++)
        for (int64_t j = 0; j < cols; j++) {
            int col = j % 50 == 7, tok = at_end ? t >= n - 50 : t < 50;
            X[t * cols + j] *= col == tok ? (tok ? 100.0f : 1.0f) : 0.0f;
        }
    for (int64_t r = 0; r < rows; r++)
        for (int64_t j = 7; j < cols; j += 50)
            W[r * cols + j] *= 8.0f;
}

/* A per-row group wider than the Gram limit (2048 columns) over more tokens
 * than fit one 2^22-element chunk (2100 > 2^22 / 2100): the direct path,
 * summed over token chunks (special tokens last). */
static void test_awq_clip_wide_rows_chunked(void **state)
{
    (void)state;
    const int64_t rows = 3, cols = 2100, n = 2100;
    float *X = rand_vec(n * cols), *W = rand_vec(rows * cols), clip[3];
    make_special_tokens(X, n, W, rows, cols, 1);
    quant_spec spec = {.format = QFMT_INT, .bits = 2, .group_size = 0, .sym = 0};
    awq_opts o = {.grid = 20, .max_tokens = 4096, .clip_grid = 6};
    assert_int_equal(awq_search_clip(X, n, W, rows, cols, &spec, &o, clip), FPTQ_OK);
    check_clip(X, n, W, rows, cols, &spec, o.clip_grid, clip);
    free(X);
    free(W);
}

/* The X^T X path with the Gram summed over two token chunks (4200 tokens of a
 * 1024-wide group > 2^22 elements; special tokens first). */
static void test_awq_clip_gram_chunked(void **state)
{
    (void)state;
    const int64_t rows = 3, cols = 1024, n = 4200;
    float *X = rand_vec(n * cols), *W = rand_vec(rows * cols), clip[3];
    make_special_tokens(X, n, W, rows, cols, 0);
    quant_spec spec = {.format = QFMT_INT, .bits = 2, .group_size = 0, .sym = 1};
    awq_opts o = {.grid = 20, .max_tokens = 8192, .clip_grid = 6};
    assert_int_equal(awq_search_clip(X, n, W, rows, cols, &spec, &o, clip), FPTQ_OK);
    check_clip(X, n, W, rows, cols, &spec, o.clip_grid, clip);
    free(X);
    free(W);
}

static void test_awq_clip_fp8_is_one(void **state)
{
    (void)state;
    const int64_t rows = 8, cols = 16, n = 4;
    float *X = rand_vec(n * cols), *W = rand_vec(rows * cols), clip[8];
    for (int i = 0; i < 8; i++)
        clip[i] = 0.0f;
    quant_spec spec = {.format = QFMT_FP8_E4M3, .bits = 8, .group_size = 0, .sym = 1};
    assert_int_equal(awq_search_clip(X, n, W, rows, cols, &spec, NULL, clip), FPTQ_OK);
    for (int i = 0; i < 8; i++)
        assert_true(clip[i] == 1.0f);
    free(X);
    free(W);
}

/* ---- SmoothQuant ------------------------------------------------------------- */

/* Two linears share the input; max|W_j| is taken over both. Values chosen so
 * the answers are exact: sqrt(4 / 1) = 2, sqrt(1 / 16) = 1/4, 16^.75 / 16^.25 = 4. */
static void test_smoothquant_hand_values(void **state)
{
    (void)state;
    float W0[2 * 5] = {1.0f, 0.5f, 0.0f, -2.0f, 3.0f,
                       -0.5f, -2.0f, 0.0f, 16.0f, 1.0f};
    float W1[1 * 5] = {0.25f, 1.0f, 0.0f, 4.0f, -16.0f};
    smooth_group g = {.n_lin = 2, .W = {W0, W1}, .rows = {2, 1}, .cols = 5};
    /* max|W_j| = {1, 2, 0, 16, 16} */
    const float act_max[5] = {4.0f, 0.0f, 9.0f, 1.0f, 16.0f};
    float s[5];
    smoothquant_scales(act_max, &g, 0.5f, s);
    const float want[5] = {2.0f, 1.0f /* act max 0 */, 1.0f /* weight max 0 */, 0.25f, 1.0f};
    for (int j = 0; j < 5; j++)
        if (fabsf(s[j] - want[j]) > 2.0f * ldexp(1.0, -24) * want[j])
            fail_msg("alpha 0.5 channel %d: s %.9g, want %.9g", j, s[j], want[j]);
    smoothquant_scales(act_max, &g, 0.75f, s);
    const float want75[5] = {2.8284271247461903f /* 4^.75 / 1^.25 */, 1.0f, 1.0f, 0.5f /* 1 / 16^.25 */,
                             4.0f};
    for (int j = 0; j < 5; j++)
        if (fabsf(s[j] - want75[j]) > 2.0f * ldexp(1.0, -24) * want75[j])
            fail_msg("alpha 0.75 channel %d: s %.9g, want %.9g", j, s[j], want75[j]);
    /* the weights themselves are untouched */
    assert_true(W0[8] == 16.0f && W1[4] == -16.0f);
}

/* alpha 0.5 is the balance point: after smoothing, max|X_j / s_j| = sqrt(a_j w_j)
 * = max|W_j s_j|. s carries ~3 roundings (two pows, a division), each side one
 * more, so the two maxima agree to within 8 2^-24 relative. */
static void test_smoothquant_balance(void **state)
{
    (void)state;
    const int64_t cols = 48, n = 64, rows[2] = {30, 20};
    smooth_group g;
    make_group(&g, cols, 2, rows);
    float *X = rand_vec(n * cols), *act_max = alloc_f(cols), *s = alloc_f(cols);
    for (int64_t t = 0; t < n; t++)
        for (int64_t j = 0; j < cols; j++) {
            X[t * cols + j] *= (float)(1 + j % 7) * (j % 11 == 3 ? 40.0f : 1.0f);
            act_max[j] = fmaxf(act_max[j], fabsf(X[t * cols + j]));
        }
    smoothquant_scales(act_max, &g, 0.5f, s);
    scale_input_columns(X, n, cols, s);
    for (int i = 0; i < 2; i++)
        fold_scale_into_input(g.W[i], g.rows[i], cols, s);
    for (int64_t j = 0; j < cols; j++) {
        float xm = 0.0f, wm = 0.0f;
        for (int64_t t = 0; t < n; t++)
            xm = fmaxf(xm, fabsf(X[t * cols + j]));
        for (int i = 0; i < 2; i++)
            for (int64_t r = 0; r < g.rows[i]; r++)
                wm = fmaxf(wm, fabsf(g.W[i][r * cols + j]));
        if (fabsf(xm - wm) > 8.0f * ldexp(1.0, -24) * wm)
            fail_msg("channel %lld: max|X/s| %.9g, max|W s| %.9g", (long long)j, xm, wm);
    }
    free(X); free(act_max); free(s);
    free_group(&g);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fold_norm_then_linear),
        cmocka_unit_test(test_fold_linear_then_linear),
        cmocka_unit_test(test_scale_input_columns),
        cmocka_unit_test(test_awq_scale_not_worse_than_rtn),
        cmocka_unit_test(test_awq_scale_outlier_channels),
        cmocka_unit_test(test_awq_scale_fp8),
        cmocka_unit_test(test_awq_scale_subsample),
        cmocka_unit_test(test_awq_scale_bad_inputs),
        cmocka_unit_test(test_awq_clip_grouped),
        cmocka_unit_test(test_awq_clip_per_row_direct),
        cmocka_unit_test(test_awq_clip_wide_rows_chunked),
        cmocka_unit_test(test_awq_clip_gram_chunked),
        cmocka_unit_test(test_awq_clip_fp8_is_one),
        cmocka_unit_test(test_smoothquant_hand_values),
        cmocka_unit_test(test_smoothquant_balance),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
