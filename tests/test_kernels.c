/*
 * CPU backend ops against plain loops written here and against algebraic
 * properties (RoPE keeps norms and depends only on relative position,
 * attention is causal, chunked log-sum-exp equals the one-shot one).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "kernels/backend.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static const fptq_backend *be = &fptq_backend_cpu;

static uint64_t rng_state = 0x9E3779B97F4A7C15ull;
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

/* max |a - b| / max(1, max |b|): fp32 sums of k terms of size ~1 err by ~k * 2^-24. */
static double max_rel_err(const float *a, const float *b, int64_t n)
{
    double scale = 1.0, err = 0.0;
    for (int64_t i = 0; i < n; i++)
        scale = fmax(scale, fabs((double)b[i]));
    for (int64_t i = 0; i < n; i++)
        err = fmax(err, fabs((double)a[i] - (double)b[i]));
    return err / scale;
}

static void test_linear_matches_loops(void **state)
{
    (void)state;
    const int64_t sizes[][3] = {{1, 1, 1}, {3, 31, 33}, {17, 172, 64}, {5, 64, 172}};
    for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
        const int64_t n = sizes[s][0], in = sizes[s][1], out = sizes[s][2];
        float *X = rand_vec(n * in), *W = rand_vec(out * in), *b = rand_vec(out);
        float *Y = rand_vec(n * out), *R = malloc((size_t)(n * out) * sizeof(float));
        for (int with_bias = 0; with_bias < 2; with_bias++) {
            for (int64_t i = 0; i < n; i++)
                for (int64_t o = 0; o < out; o++) {
                    double acc = with_bias ? b[o] : 0.0;
                    for (int64_t k = 0; k < in; k++)
                        acc += (double)X[i * in + k] * W[o * in + k];
                    R[i * out + o] = (float)acc;
                }
            assert_int_equal(be->linear(X, n, in, W, out, with_bias ? b : NULL, Y), FPTQ_OK);
            assert_true(max_rel_err(Y, R, n * out) < 1e-5);
        }
        free(X); free(W); free(b); free(Y); free(R);
    }
}

static void test_rmsnorm_unit_rms(void **state)
{
    (void)state;
    const int64_t n = 7, dim = 172;
    float *X = rand_vec(n * dim), *Y = malloc((size_t)(n * dim) * sizeof(float));
    float *w = malloc((size_t)dim * sizeof(float));
    for (int64_t j = 0; j < dim; j++)
        w[j] = 1.0f;
    assert_int_equal(be->rmsnorm(X, n, dim, w, 0.0f, Y), FPTQ_OK);
    for (int64_t i = 0; i < n; i++) {
        double ss = 0;
        for (int64_t j = 0; j < dim; j++)
            ss += (double)Y[i * dim + j] * Y[i * dim + j];
        assert_true(fabs(sqrt(ss / dim) - 1.0) < 1e-6);
    }
    /* a weight scales its channel; in place (Y == X) gives the same */
    for (int64_t j = 0; j < dim; j++)
        w[j] = (float)(j % 5) - 2.0f;
    assert_int_equal(be->rmsnorm(X, n, dim, w, 1e-5f, Y), FPTQ_OK);
    assert_int_equal(be->rmsnorm(X, n, dim, w, 1e-5f, X), FPTQ_OK);
    assert_memory_equal(X, Y, (size_t)(n * dim) * sizeof(float));
    free(X); free(Y); free(w);
}

static rope_params plain_rope(int64_t hd) { return (rope_params){.head_dim = hd, .theta = 10000.0}; }

static double dot(const float *a, const float *b, int64_t n)
{
    double s = 0;
    for (int64_t i = 0; i < n; i++)
        s += (double)a[i] * b[i];
    return s;
}

static void test_rope_properties(void **state)
{
    (void)state;
    const int64_t hd = 16, T = 40, nh = 2;
    rope_params p = plain_rope(hd);
    rope_table rt;
    assert_int_equal(rope_table_init(&p, T, &rt), FPTQ_OK);
    /* the same q at every position, the same k at every position */
    float *q0 = rand_vec(nh * hd), *k0 = rand_vec(nh * hd);
    float *Q = malloc((size_t)(T * nh * hd) * sizeof(float)), *K = malloc((size_t)(T * nh * hd) * sizeof(float));
    for (int64_t t = 0; t < T; t++) {
        memcpy(Q + t * nh * hd, q0, (size_t)(nh * hd) * sizeof(float));
        memcpy(K + t * nh * hd, k0, (size_t)(nh * hd) * sizeof(float));
    }
    assert_int_equal(be->rope(Q, 1, T, nh, &rt), FPTQ_OK);
    assert_int_equal(be->rope(K, 1, T, nh, &rt), FPTQ_OK);
    /* position 0 is the identity; every position keeps the norm */
    assert_memory_equal(Q, q0, (size_t)(nh * hd) * sizeof(float));
    for (int64_t t = 0; t < T; t++)
        assert_true(fabs(dot(Q + t * nh * hd, Q + t * nh * hd, hd) - dot(q0, q0, hd)) < 1e-4);
    /* <rope(q, m), rope(k, n)> depends on m - n only */
    const double d_ref = dot(Q + 7 * nh * hd, K + 3 * nh * hd, hd);
    for (int64_t m = 4; m < T; m++)
        assert_true(fabs(dot(Q + m * nh * hd, K + (m - 4) * nh * hd, hd) - d_ref) < 1e-4);
    /* rotate-half pairs: element i with i + hd/2, angle pos * theta^(-2i/hd) */
    const int64_t pos = 5, i = 3;
    const double ang = pos * pow(10000.0, -2.0 * i / hd);
    const double x1 = q0[i], x2 = q0[i + hd / 2];
    assert_true(fabs(Q[pos * nh * hd + i] - (x1 * cos(ang) - x2 * sin(ang))) < 1e-5);
    assert_true(fabs(Q[pos * nh * hd + i + hd / 2] - (x2 * cos(ang) + x1 * sin(ang))) < 1e-5);
    rope_table_free(&rt);
    free(q0); free(k0); free(Q); free(K);
}

/* Llama 3.1: theta 500000, factor 8, low 1, high 4, original context 8192. */
static void test_rope_llama3_scaling(void **state)
{
    (void)state;
    rope_params p = {.head_dim = 128, .theta = 500000.0, .factor = 8.0, .low_freq_factor = 1.0,
                     .high_freq_factor = 4.0, .original_max_position_embeddings = 8192};
    rope_params plain = p;
    plain.factor = 0.0;
    double f[64], g[64];
    rope_inv_freq(&p, f);
    rope_inv_freq(&plain, g);
    int kept = 0, divided = 0, blended = 0;
    for (int i = 0; i < 64; i++) {
        const double wavelen = 2 * 3.14159265358979323846 / g[i];
        if (wavelen < 8192.0 / 4.0) {
            assert_true(f[i] == g[i]);
            kept++;
        } else if (wavelen > 8192.0) {
            assert_true(fabs(f[i] - g[i] / 8.0) <= 1e-15 * g[i]);
            divided++;
        } else {
            assert_true(f[i] < g[i] && f[i] > g[i] / 8.0);
            blended++;
        }
    }
    /* all three bands occur at these parameters */
    assert_true(kept > 0 && divided > 0 && blended > 0);
}

static void attention_loops(const float *Q, const float *K, const float *V, int64_t T, int64_t nh,
                            int64_t nkv, int64_t hd, float *O)
{
    const int64_t group = nh / nkv;
    double *p = malloc((size_t)T * sizeof(double));
    for (int64_t h = 0; h < nh; h++)
        for (int64_t i = 0; i < T; i++) {
            const int64_t g = h / group;
            double mx = -INFINITY, sum = 0;
            for (int64_t j = 0; j <= i; j++) {
                p[j] = dot(Q + i * nh * hd + h * hd, K + j * nkv * hd + g * hd, hd) / sqrt((double)hd);
                mx = fmax(mx, p[j]);
            }
            for (int64_t j = 0; j <= i; j++)
                sum += (p[j] = exp(p[j] - mx));
            for (int64_t d = 0; d < hd; d++) {
                double acc = 0;
                for (int64_t j = 0; j <= i; j++)
                    acc += p[j] / sum * V[j * nkv * hd + g * hd + d];
                O[i * nh * hd + h * hd + d] = (float)acc;
            }
        }
    free(p);
}

static void test_attention_matches_loops_and_is_causal(void **state)
{
    (void)state;
    const int64_t Ts[] = {1, 5, 33};
    const int64_t nh = 8, nkv = 4, hd = 8, n_seq = 2;
    for (size_t s = 0; s < 3; s++) {
        const int64_t T = Ts[s], rows = n_seq * T;
        float *Q = rand_vec(rows * nh * hd), *K = rand_vec(rows * nkv * hd), *V = rand_vec(rows * nkv * hd);
        float *O = malloc((size_t)(rows * nh * hd) * sizeof(float)), *R = malloc((size_t)(rows * nh * hd) * sizeof(float));
        assert_int_equal(be->attention(Q, K, V, n_seq, T, nh, nkv, hd, O), FPTQ_OK);
        for (int64_t b = 0; b < n_seq; b++)
            attention_loops(Q + b * T * nh * hd, K + b * T * nkv * hd, V + b * T * nkv * hd, T, nh, nkv, hd,
                            R + b * T * nh * hd);
        assert_true(max_rel_err(O, R, rows * nh * hd) < 1e-5);
        /* changing the last position's keys and values leaves earlier outputs alone */
        float *O2 = malloc((size_t)(rows * nh * hd) * sizeof(float));
        for (int64_t d = 0; d < nkv * hd; d++) {
            K[(T - 1) * nkv * hd + d] += 3.0f;
            V[(T - 1) * nkv * hd + d] -= 2.0f;
        }
        assert_int_equal(be->attention(Q, K, V, n_seq, T, nh, nkv, hd, O2), FPTQ_OK);
        assert_memory_equal(O, O2, (size_t)((T - 1) * nh * hd) * sizeof(float));
        if (T > 1) /* and the last one does change */
            assert_true(memcmp(O + (T - 1) * nh * hd, O2 + (T - 1) * nh * hd, (size_t)(nh * hd) * sizeof(float)) != 0);
        free(Q); free(K); free(V); free(O); free(R); free(O2);
    }
}

static void test_swiglu_and_add(void **state)
{
    (void)state;
    const int64_t n = 33;
    float *g = rand_vec(n), *u = rand_vec(n), *g0 = malloc((size_t)n * sizeof(float));
    memcpy(g0, g, (size_t)n * sizeof(float));
    assert_int_equal(be->swiglu(g, u, n), FPTQ_OK);
    for (int64_t i = 0; i < n; i++)
        assert_true(fabs(g[i] - g0[i] / (1.0 + exp(-g0[i])) * u[i]) < 1e-6);
    assert_int_equal(be->add(g, u, n), FPTQ_OK);
    for (int64_t i = 0; i < n; i++)
        assert_true(fabs(g[i] - (g0[i] / (1.0 + exp(-g0[i])) * u[i] + u[i])) < 1e-6);
    free(g); free(u); free(g0);
}

static void test_logsumexp_chunks_equal_whole(void **state)
{
    (void)state;
    const int64_t n = 3, cols = 517;
    float *L = rand_vec(n * cols);
    for (int64_t i = 0; i < n * cols; i++)
        L[i] *= 30.0f; /* large logits: overflow without the max shift */
    double m1[3], s1[3], m2[3], s2[3];
    for (int i = 0; i < 3; i++) {
        m1[i] = m2[i] = -INFINITY;
        s1[i] = s2[i] = 0;
    }
    assert_int_equal(be->logsumexp_accumulate(L, n, cols, cols, m1, s1), FPTQ_OK);
    for (int64_t c0 = 0; c0 < cols; c0 += 100) {
        const int64_t nc = cols - c0 < 100 ? cols - c0 : 100;
        assert_int_equal(be->logsumexp_accumulate(L + c0, n, nc, cols, m2, s2), FPTQ_OK);
    }
    for (int i = 0; i < 3; i++) {
        double direct = 0;
        for (int64_t j = 0; j < cols; j++)
            direct += exp((double)L[i * cols + j] - m1[i]);
        assert_true(fabs(m1[i] + log(s1[i]) - (m2[i] + log(s2[i]))) < 1e-12 * fabs(m1[i]) + 1e-12);
        assert_true(fabs(log(s1[i]) - log(direct)) < 1e-12);
    }
    free(L);
}

static void test_backend_select(void **state)
{
    (void)state;
    const fptq_backend *b = NULL;
    assert_int_equal(fptq_backend_select("cpu", &b), FPTQ_OK);
    assert_ptr_equal(b, &fptq_backend_cpu);
    fptq_clear_error();
    assert_int_equal(fptq_backend_select("tpu", &b), FPTQ_ERR_ARG);
    assert_non_null(strstr(fptq_last_error(), "tpu"));
    fptq_clear_error();
    /* with no usable GPU, cuda is refused with a reason and auto falls back to the CPU */
    char why[256];
    if (!fptq_cuda_available(why, sizeof why)) {
        assert_int_equal(fptq_backend_select("cuda", &b), FPTQ_ERR_BACKEND);
        assert_non_null(strstr(fptq_last_error(), "--backend cuda"));
        fptq_clear_error();
        assert_int_equal(fptq_backend_select("auto", &b), FPTQ_OK);
        assert_ptr_equal(b, &fptq_backend_cpu);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_linear_matches_loops),
        cmocka_unit_test(test_rmsnorm_unit_rms),
        cmocka_unit_test(test_rope_properties),
        cmocka_unit_test(test_rope_llama3_scaling),
        cmocka_unit_test(test_attention_matches_loops_and_is_causal),
        cmocka_unit_test(test_swiglu_and_add),
        cmocka_unit_test(test_logsumexp_chunks_equal_whole),
        cmocka_unit_test(test_backend_select),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
