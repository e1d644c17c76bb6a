/*
 * gptq_quantize timed against this machine's own limit: the FLOPs GPTQ must
 * do, divided by the sgemm rate measured here, is the floor; time / floor
 * says how far the implementation is from it. Prints one table.
 */
#include "kernels/quant.h"

#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static uint64_t rng_state = 0x9E3779B97F4A7C15ull;
static float frand(void) /* uniform in [-1, 1) */
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (float)((rng_state >> 11) * (1.0 / 9007199254740992.0)) * 2.0f - 1.0f;
}

static fptq_status alloc_rand(int64_t n, float **out)
{
    FPTQ_TRY(fptq_calloc((size_t)n, sizeof(float), "benchmark matrix", out));
    for (int64_t i = 0; i < n; i++)
        (*out)[i] = frand();
    return FPTQ_OK;
}

/* best of 3 runs of a 2048^3 sgemm, in FLOP/s */
static fptq_status sgemm_rate(double *rate)
{
    const int n = 2048;
    float *A = NULL, *B = NULL, *C = NULL;
    fptq_status st;
    FPTQ_TRY_GOTO(alloc_rand((int64_t)n * n, &A), st, out);
    FPTQ_TRY_GOTO(alloc_rand((int64_t)n * n, &B), st, out);
    FPTQ_TRY_GOTO(alloc_rand((int64_t)n * n, &C), st, out);
    double best = 1e30;
    for (int k = 0; k < 4; k++) { /* the first one warms threads and pages up */
        const double t0 = fptq_now();
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1.0f, A, n, B, n, 0.0f, C, n);
        const double t = fptq_now() - t0;
        if (k > 0 && t < best)
            best = t;
    }
    *rate = 2.0 * n * (double)n * n / best;
out:
    free(A);
    free(B);
    free(C);
    return st;
}

/* H = 2 X^T X / n of X = Z A: A uniform in [-0.4, 0.6) mixes every input
 * into every other, so H is dense and correlated like an LLM's. */
static fptq_status make_hessian(int64_t cols, int64_t tokens, float *H)
{
    float *Z = NULL, *A = NULL, *X = NULL;
    linear_stats s = {0};
    fptq_status st;
    FPTQ_TRY_GOTO(alloc_rand(tokens * cols, &Z), st, out);
    FPTQ_TRY_GOTO(alloc_rand(cols * cols, &A), st, out);
    FPTQ_TRY_GOTO(fptq_calloc((size_t)(tokens * cols), sizeof(float), "benchmark X", &X), st, out);
    for (int64_t i = 0; i < cols * cols; i++)
        A[i] = 0.5f * A[i] + 0.1f;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)tokens, (int)cols, (int)cols, 1.0f, Z,
                (int)cols, A, (int)cols, 0.0f, X, (int)cols);
    FPTQ_TRY_GOTO(linear_stats_init(cols, &s), st, out);
    FPTQ_TRY_GOTO(linear_stats_accumulate(&s, X, tokens), st, out);
    FPTQ_TRY_GOTO(linear_stats_hessian(&s, H), st, out);
out:
    linear_stats_free(&s);
    free(Z);
    free(A);
    free(X);
    return st;
}

/* FLOPs (one multiply-add = 2) of GPTQ as gptq_quantize does it:
 *   inverse factor: potrf n^3/3 + potri 2n^3/3 + potrf n^3/3 = 4/3 n^3
 *   in-block:       per row and block of B, sum_i 2 (B - 1 - i) ~ B^2: rows cols B
 *   trailing sgemm: sum over blocks of 2 rows B (cols - i2) ~ rows cols^2 */
static double gptq_flops(int64_t rows, int64_t cols, int64_t B, double *parts)
{
    const double n = (double)cols;
    double inblock = 0.0, trailing = 0.0;
    for (int64_t i1 = 0; i1 < cols; i1 += B) {
        const int64_t i2 = i1 + B < cols ? i1 + B : cols, cnt = i2 - i1;
        inblock += (double)rows * (double)cnt * (double)(cnt - 1);
        trailing += 2.0 * (double)rows * (double)cnt * (double)(cols - i2);
    }
    parts[0] = 4.0 / 3.0 * n * n * n;
    parts[1] = inblock;
    parts[2] = trailing;
    return parts[0] + parts[1] + parts[2];
}

static fptq_status bench(void)
{
    const int64_t cols = 4096, tokens = 8192, block = 128;
    const int64_t shapes[] = {4096, 11008};
    float *H = NULL, *W = NULL, *Q = NULL;
    quant_tensor q = {0};
    fptq_status st;
    double rate;
    FPTQ_TRY(sgemm_rate(&rate));
    printf("sgemm 2048^3, best of 3: %.1f GFLOP/s (OpenBLAS, %d threads)\n", rate / 1e9,
           openblas_get_num_threads());
    printf("FLOPs = 4/3 cols^3 (potrf + potri + potrf) + rows cols B (in-block, B = %lld)\n"
           "      + sum over blocks 2 rows B (cols - i2) (~ rows cols^2, trailing sgemm)\n"
           "floor = FLOPs / sgemm rate; time = best of runs 2 and 3; ratio = time / floor\n\n",
           (long long)block);

    FPTQ_TRY_GOTO(fptq_calloc((size_t)(cols * cols), sizeof(float), "benchmark H", &H), st, out);
    const double th = fptq_now();
    FPTQ_TRY_GOTO(make_hessian(cols, tokens, H), st, out);
    printf("Hessian of %lld x %lld correlated tokens: %.2f s\n\n", (long long)tokens, (long long)cols,
           fptq_now() - th);

    printf("%-12s %-15s %7s %6s %7s %6s %7s %7s %7s %6s %10s\n", "rows x cols", "variant", "GFLOP",
           "fact.", "inblock", "trail.", "first s", "time s", "floor s", "ratio", "loss");
    for (size_t si = 0; si < sizeof shapes / sizeof shapes[0]; si++) {
        const int64_t rows = shapes[si];
        FPTQ_TRY_GOTO(alloc_rand(rows * cols, &W), st, out);
        FPTQ_TRY_GOTO(fptq_calloc((size_t)(rows * cols), sizeof(float), "benchmark Q", &Q), st, out);
        for (int act = 0; act < 2; act++) {
            const quant_spec spec = {QFMT_INT, 4, 128, 0};
            FPTQ_TRY_GOTO(quant_tensor_alloc(&spec, rows, cols, act, &q), st, out);
            const gptq_opts o = {.block_size = block, .act_order = act};
            gptq_result r;
            /* the first run also pays the first touch of the fresh output pages */
            double best = 1e30, first = 0.0;
            for (int k = 0; k < 3; k++) {
                const double t0 = fptq_now();
                FPTQ_TRY_GOTO(gptq_quantize(W, rows, cols, H, &o, &q, Q, &r), st, out);
                const double t = fptq_now() - t0;
                if (k == 0)
                    first = t;
                else
                    best = t < best ? t : best;
            }
            double parts[3];
            const double flops = gptq_flops(rows, cols, block, parts), floor = flops / rate;
            char shape[32];
            snprintf(shape, sizeof shape, "%lldx%lld", (long long)rows, (long long)cols);
            printf("%-12s %-15s %7.1f %6.1f %7.1f %6.1f %7.3f %7.3f %7.3f %6.2f %10.4g\n", shape,
                   act ? "4-bit g128 act" : "4-bit g128", flops / 1e9, parts[0] / 1e9, parts[1] / 1e9,
                   parts[2] / 1e9, first, best, floor, best / floor, r.loss);
            quant_tensor_free(&q);
        }
        free(W);
        free(Q);
        W = Q = NULL;
    }
out:
    quant_tensor_free(&q);
    free(H);
    free(W);
    free(Q);
    return st;
}

int main(int argc, char **argv)
{
    /* -v: gptq_quantize's own phase timings (debug log) */
    if (argc > 1 && strcmp(argv[1], "-v") == 0)
        fptq_log_set_level(FPTQ_LOG_DEBUG);
    const fptq_status st = bench();
    if (st != FPTQ_OK) {
        fprintf(stderr, "bench_gptq: %s: %s\n", fptq_status_name(st), fptq_last_error());
        return 1;
    }
    return 0;
}
