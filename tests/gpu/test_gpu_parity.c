/*
 * GPU parity: every op of the CUDA backend table, and every CUDA quantizer,
 * against its CPU twin (the reference) on fresh random inputs of odd sizes,
 * with guard bytes around every device output (ggml's test-backend-ops:
 * normalized error, sentinels). Integer and FP8 codes must be identical.
 * Prints one table row per check ("| op | shape | status | error | tolerance |").
 * Exit 0: every check passed; 1: a check failed; 77: no usable CUDA device.
 * FPTQ_SEED=<n> repeats a run's inputs (the seed is printed).
 */
#include "kernels/backend.h"
#include "kernels/cuda/cuda_ops.h"
#include "kernels/quant.h"
#ifdef FPTQ_HAVE_NCCL
#include "kernels/cuda/nccl_coll.h"
#endif

#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* ---- inputs -------------------------------------------------------------------------- */

static uint64_t rng_state;
static float frand(void) /* uniform in [-1, 1) */
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (float)((rng_state >> 40) * (1.0 / 16777216.0)) * 2.0f - 1.0f;
}

static float *rand_vec(int64_t n, float lo, float hi)
{
    float *v = malloc((size_t)(n > 0 ? n : 1) * sizeof(float));
    if (!v) {
        fprintf(stderr, "out of host memory\n");
        exit(1);
    }
    for (int64_t i = 0; i < n; i++)
        v[i] = lo + (hi - lo) * 0.5f * (frand() + 1.0f);
    return v;
}

static void *xmalloc(size_t bytes)
{
    void *p = calloc(bytes ? bytes : 1, 1);
    if (!p) {
        fprintf(stderr, "out of host memory (%zu bytes)\n", bytes);
        exit(1);
    }
    return p;
}

/* ---- the results table ----------------------------------------------------------------- */

static int n_pass, n_fail;
static const fptq_backend *G; /* CUDA */
static const fptq_backend *C; /* CPU */

static void row(const char *op, const char *shape, int ok, const char *metric, double err, double tol)
{
    printf("| %-24s | %-34s | %-4s | %s %.3g | %.3g |\n", op, shape, ok ? "PASS" : "FAIL", metric, err,
           tol);
    fflush(stdout);
    if (ok)
        n_pass++;
    else
        n_fail++;
}

/* A failing call: the row says why; the error is cleared for the next check. */
static int call_ok(fptq_status st, const char *op, const char *shape)
{
    if (st == FPTQ_OK)
        return 1;
    printf("| %-24s | %-34s | FAIL | %s: %s | - |\n", op, shape, fptq_status_name(st), fptq_last_error());
    n_fail++;
    fptq_clear_error();
    return 0;
}

/* sum (a - b)^2 / sum b^2, the normalized error of test-backend-ops */
static double nmse(const float *a, const float *b, int64_t n)
{
    double num = 0.0, den = 0.0;
    for (int64_t i = 0; i < n; i++) {
        const double d = (double)a[i] - (double)b[i];
        if (isnan(a[i]) != isnan(b[i]))
            return INFINITY;
        if (isnan(a[i]))
            continue;
        num += d * d;
        den += (double)b[i] * b[i];
    }
    return den > 0.0 ? num / den : num;
}

static double max_abs_diff(const float *a, const float *b, int64_t n)
{
    double m = 0.0;
    for (int64_t i = 0; i < n; i++) {
        if (isnan(a[i]) || isnan(b[i])) {
            if (isnan(a[i]) != isnan(b[i]))
                return INFINITY;
            continue;
        }
        const double d = fabs((double)a[i] - (double)b[i]);
        m = d > m ? d : m;
    }
    return m;
}

static int64_t count_diff_bytes(const void *a, const void *b, size_t n)
{
    const unsigned char *x = a, *y = b;
    int64_t k = 0;
    for (size_t i = 0; i < n; i++)
        k += x[i] != y[i];
    return k;
}

/* ---- device buffers with guard bytes ------------------------------------------------------ */

#define GUARD 256 /* bytes on each side; keeps the payload 256-byte aligned */
static unsigned char guard_pattern[GUARD];

typedef struct dbuf {
    unsigned char *raw;
    void *p;
    size_t bytes;
} dbuf;

static dbuf dnew(size_t bytes)
{
    dbuf b = {0};
    void *raw = NULL;
    if (G->mem_alloc(bytes + 2 * GUARD, "parity test buffer", &raw) != FPTQ_OK) {
        fprintf(stderr, "device allocation of %zu bytes failed: %s\n", bytes, fptq_last_error());
        exit(1);
    }
    b.raw = raw;
    b.p = b.raw + GUARD;
    b.bytes = bytes;
    if (G->upload(b.raw, guard_pattern, GUARD) != FPTQ_OK ||
        G->upload(b.raw + GUARD + bytes, guard_pattern, GUARD) != FPTQ_OK) {
        fprintf(stderr, "guard upload failed: %s\n", fptq_last_error());
        exit(1);
    }
    return b;
}

static void dfree(dbuf *b)
{
    G->mem_free(b->raw);
    memset(b, 0, sizeof *b);
}

static dbuf dfrom(const void *host, size_t bytes)
{
    dbuf b = dnew(bytes);
    if (G->upload(b.p, host, bytes) != FPTQ_OK) {
        fprintf(stderr, "upload failed: %s\n", fptq_last_error());
        exit(1);
    }
    return b;
}

static void dget(void *host, const dbuf *b)
{
    if (G->download(host, b->p, b->bytes) != FPTQ_OK) {
        fprintf(stderr, "download failed: %s\n", fptq_last_error());
        exit(1);
    }
}

/* The guards of an output after an op: any change is an out-of-bounds write. */
static int guards_ok(const dbuf *b, const char *op, const char *shape, const char *what)
{
    unsigned char before[GUARD], after[GUARD];
    if (G->sync() != FPTQ_OK || G->download(before, b->raw, GUARD) != FPTQ_OK ||
        G->download(after, b->raw + GUARD + b->bytes, GUARD) != FPTQ_OK) {
        printf("| %-24s | %-34s | FAIL | device error: %s | - |\n", op, shape, fptq_last_error());
        n_fail++;
        fptq_clear_error();
        return 0;
    }
    const int64_t nb = count_diff_bytes(before, guard_pattern, GUARD);
    const int64_t na = count_diff_bytes(after, guard_pattern, GUARD);
    if (nb || na) {
        printf("| %-24s | %-34s | FAIL | %s: %lld guard bytes overwritten before, %lld after | 0 |\n",
               op, shape, what, (long long)nb, (long long)na);
        n_fail++;
        return 0;
    }
    return 1;
}

/* ---- linear ------------------------------------------------------------------------------------ */

static uint16_t bf16_bits(float x) /* round to nearest even, as __float2bfloat16_rn */
{
    uint32_t u;
    memcpy(&u, &x, sizeof u);
    if (isnan(x))
        return (uint16_t)((u >> 16) | 0x40);
    return (uint16_t)((u + 0x7FFFu + ((u >> 16) & 1u)) >> 16);
}

static float bf16_value(uint16_t b)
{
    const uint32_t u = (uint32_t)b << 16;
    float x;
    memcpy(&x, &u, sizeof x);
    return x;
}

static void test_linear(int64_t n, int64_t in, int64_t out, int with_bias)
{
    char shape[64];
    snprintf(shape, sizeof shape, "n=%lld in=%lld out=%lld%s", (long long)n, (long long)in,
             (long long)out, with_bias ? " +bias" : "");
    float *X = rand_vec(n * in, -1, 1), *W = rand_vec(out * in, -1, 1), *b = rand_vec(out, -1, 1);
    float *Yc = xmalloc((size_t)(n * out) * sizeof(float)), *Yg = xmalloc((size_t)(n * out) * sizeof(float));
    dbuf dX = dfrom(X, (size_t)(n * in) * 4), dW = dfrom(W, (size_t)(out * in) * 4),
         db = dfrom(b, (size_t)out * 4), dY = dnew((size_t)(n * out) * 4);

    /* fp32 with TF32 off. Two fp32 dot products of length `in` summed in
     * different orders differ by NMSE ~ eps^2 in / 3 (eps = 2^-24): 5e-12 at
     * in = 4097. TF32 inputs (10-bit mantissa) would give ~3e-7, so 1e-9
     * passes fp32 with 200x margin and catches TF32 by 300x. */
    if (call_ok(C->linear(X, n, in, W, out, with_bias ? b : NULL, Yc), "linear fp32 (cpu)", shape) &&
        call_ok(G->linear(dX.p, n, in, dW.p, out, with_bias ? db.p : NULL, dY.p), "linear fp32", shape) &&
        guards_ok(&dY, "linear fp32", shape, "Y")) {
        dget(Yg, &dY);
        const double e = nmse(Yg, Yc, n * out);
        row("linear fp32", shape, e <= 1e-9, "nmse", e, 1e-9);
    }

    /* bf16 inputs, fp32 accumulation. Against the CPU on the same
     * bf16-rounded inputs: bf16 x bf16 products are exact in fp32, so only
     * the summation order differs (same bound as fp32, 1e-9). Against the
     * unrounded inputs: each input carries a relative rounding error uniform
     * in +-2^-9, NMSE ~ 2 (2^-9)^2 / 3 = 2.5e-6 on average over many sums;
     * tolerance 1e-5, checked where there are enough terms and outputs to
     * average (a single product alone can be off by 2^-8, NMSE 1.5e-5). */
    uint16_t *Xb = xmalloc((size_t)(n * in) * 2), *Wb = xmalloc((size_t)(out * in) * 2);
    float *Xr = xmalloc((size_t)(n * in) * 4), *Wr = xmalloc((size_t)(out * in) * 4);
    float *Yr = xmalloc((size_t)(n * out) * 4);
    dbuf dXb = dnew((size_t)(n * in) * 2), dWb = dnew((size_t)(out * in) * 2), dY2 = dnew((size_t)(n * out) * 4);
    if (call_ok(fptq_cuda_f32_to_bf16(dX.p, n * in, dXb.p), "f32 -> bf16", shape) &&
        call_ok(fptq_cuda_f32_to_bf16(dW.p, out * in, dWb.p), "f32 -> bf16", shape) &&
        guards_ok(&dXb, "f32 -> bf16", shape, "X bf16") && guards_ok(&dWb, "f32 -> bf16", shape, "W bf16")) {
        dget(Xb, &dXb);
        dget(Wb, &dWb);
        int64_t bad = 0;
        for (int64_t i = 0; i < n * in; i++) {
            bad += Xb[i] != bf16_bits(X[i]);
            Xr[i] = bf16_value(bf16_bits(X[i]));
        }
        for (int64_t i = 0; i < out * in; i++) {
            bad += Wb[i] != bf16_bits(W[i]);
            Wr[i] = bf16_value(bf16_bits(W[i]));
        }
        row("f32 -> bf16 (RNE)", shape, bad == 0, "bits differing", (double)bad, 0);
        if (call_ok(fptq_cuda_linear_bf16(dXb.p, n, in, dWb.p, out, with_bias ? db.p : NULL, dY2.p),
                    "linear bf16", shape) &&
            guards_ok(&dY2, "linear bf16", shape, "Y") &&
            call_ok(C->linear(Xr, n, in, Wr, out, with_bias ? b : NULL, Yr), "linear (cpu)", shape)) {
            dget(Yg, &dY2);
            const double e1 = nmse(Yg, Yr, n * out), e2 = nmse(Yg, Yc, n * out);
            row("linear bf16 vs bf16 in", shape, e1 <= 1e-9, "nmse", e1, 1e-9);
            if (in >= 32 && n * out >= 32)
                row("linear bf16 vs fp32 in", shape, e2 <= 1e-5, "nmse", e2, 1e-5);
        }
    }
    dfree(&dX), dfree(&dW), dfree(&db), dfree(&dY), dfree(&dXb), dfree(&dWb), dfree(&dY2);
    free(X), free(W), free(b), free(Yc), free(Yg), free(Xb), free(Wb), free(Xr), free(Wr), free(Yr);
}

/* ---- rmsnorm, rope, attention, swiglu, add ------------------------------------------------------ */

static void test_rmsnorm(int64_t n, int64_t dim, int in_place)
{
    char shape[64];
    snprintf(shape, sizeof shape, "n=%lld dim=%lld%s", (long long)n, (long long)dim,
             in_place ? " in place" : "");
    float *X = rand_vec(n * dim, -2, 2), *w = rand_vec(dim, 0.5f, 1.5f);
    float *Yc = xmalloc((size_t)(n * dim) * 4), *Yg = xmalloc((size_t)(n * dim) * 4);
    dbuf dX = dfrom(X, (size_t)(n * dim) * 4), dw = dfrom(w, (size_t)dim * 4);
    dbuf dY = in_place ? dX : dnew((size_t)(n * dim) * 4);
    /* sums of squares in double on both (float products are exact in
     * double), so 1/rms agrees to within 1 ulp of float and the products
     * x * r * w are the same float operations: NMSE <= (2^-24)^2 ~ 4e-15 */
    if (call_ok(C->rmsnorm(X, n, dim, w, 1e-5f, Yc), "rmsnorm (cpu)", shape) &&
        call_ok(G->rmsnorm(dX.p, n, dim, dw.p, 1e-5f, dY.p), "rmsnorm", shape) &&
        guards_ok(&dY, "rmsnorm", shape, "Y")) {
        dget(Yg, &dY);
        const double e = nmse(Yg, Yc, n * dim);
        row("rmsnorm", shape, e <= 1e-12, "nmse", e, 1e-12);
    }
    dfree(&dX), dfree(&dw);
    if (!in_place)
        dfree(&dY);
    free(X), free(w), free(Yc), free(Yg);
}

static void test_rope(int64_t n_seq, int64_t seq_len, int64_t n_heads, int64_t head_dim, int llama3)
{
    char shape[64];
    snprintf(shape, sizeof shape, "seqs=%lld T=%lld heads=%lld d=%lld%s", (long long)n_seq,
             (long long)seq_len, (long long)n_heads, (long long)head_dim, llama3 ? " llama3" : "");
    rope_params p = {.head_dim = head_dim, .theta = 500000.0};
    if (llama3) {
        p.factor = 8.0;
        p.low_freq_factor = 1.0;
        p.high_freq_factor = 4.0;
        p.original_max_position_embeddings = 8192;
    }
    rope_table rt;
    if (!call_ok(rope_table_init(&p, seq_len + 2, &rt), "rope table", shape))
        return;
    const int64_t n = n_seq * seq_len * n_heads * head_dim;
    float *X = rand_vec(n, -3, 3), *Xg = xmalloc((size_t)n * 4);
    dbuf dX = dfrom(X, (size_t)n * 4);
    /* the same table, the same float multiplies and adds, no fused
     * multiply-add on either side: identical bits */
    if (call_ok(C->rope(X, n_seq, seq_len, n_heads, &rt), "rope (cpu)", shape) &&
        call_ok(G->rope(dX.p, n_seq, seq_len, n_heads, &rt), "rope", shape) &&
        guards_ok(&dX, "rope", shape, "X")) {
        dget(Xg, &dX);
        const double e = max_abs_diff(Xg, X, n);
        row("rope", shape, e == 0.0, "max|diff|", e, 0);
    }
    dfree(&dX);
    free(X), free(Xg);
    rope_table_free(&rt);
}

static void test_attention(int64_t n_seq, int64_t T, int64_t nh, int64_t nkv, int64_t hd)
{
    char shape[64];
    snprintf(shape, sizeof shape, "seqs=%lld T=%lld h=%lld kv=%lld d=%lld", (long long)n_seq,
             (long long)T, (long long)nh, (long long)nkv, (long long)hd);
    const int64_t nq = n_seq * T * nh * hd, nk = n_seq * T * nkv * hd;
    float *Q = rand_vec(nq, -1, 1), *K = rand_vec(nk, -1, 1), *V = rand_vec(nk, -1, 1);
    float *Oc = xmalloc((size_t)nq * 4), *Og = xmalloc((size_t)nq * 4);
    dbuf dQ = dfrom(Q, (size_t)nq * 4), dK = dfrom(K, (size_t)nk * 4), dV = dfrom(V, (size_t)nk * 4),
         dO = dnew((size_t)nq * 4);
    /* scores: fp32 dots of length d; softmax: expf within 2 ulp of the C
     * library's; output: fp32 dots of length T. NMSE ~ eps^2 (d + T) / 3,
     * under 1e-12 here; 1e-10 leaves room and still catches a wrong mask,
     * head mapping or TF32 (~1e-7). */
    if (call_ok(C->attention(Q, K, V, n_seq, T, nh, nkv, hd, Oc), "attention (cpu)", shape) &&
        call_ok(G->attention(dQ.p, dK.p, dV.p, n_seq, T, nh, nkv, hd, dO.p), "attention", shape) &&
        guards_ok(&dO, "attention", shape, "O")) {
        dget(Og, &dO);
        const double e = nmse(Og, Oc, nq);
        row("attention (causal GQA)", shape, e <= 1e-10, "nmse", e, 1e-10);
    }
    dfree(&dQ), dfree(&dK), dfree(&dV), dfree(&dO);
    free(Q), free(K), free(V), free(Oc), free(Og);
}

static void test_swiglu_add(int64_t n)
{
    char shape[64];
    snprintf(shape, sizeof shape, "n=%lld", (long long)n);
    float *g = rand_vec(n, -8, 8), *u = rand_vec(n, -2, 2), *out = xmalloc((size_t)n * 4);
    dbuf dg = dfrom(g, (size_t)n * 4), du = dfrom(u, (size_t)n * 4);
    /* expf on the GPU is within 2 ulp of the C library's; one division and
     * one multiply after it: relative error <= ~4 ulp, NMSE < 1e-13 */
    if (call_ok(C->swiglu(g, u, n), "swiglu (cpu)", shape) &&
        call_ok(G->swiglu(dg.p, du.p, n), "swiglu", shape) && guards_ok(&dg, "swiglu", shape, "gate")) {
        dget(out, &dg);
        const double e = nmse(out, g, n);
        row("swiglu", shape, e <= 1e-12, "nmse", e, 1e-12);
    }
    /* one float addition: identical */
    if (call_ok(C->add(u, g, n), "add (cpu)", shape) && call_ok(G->add(du.p, dg.p, n), "add", shape) &&
        guards_ok(&du, "add", shape, "x")) {
        dget(out, &du);
        const double e = max_abs_diff(out, u, n);
        row("add", shape, e == 0.0, "max|diff|", e, 0);
    }
    dfree(&dg), dfree(&du);
    free(g), free(u), free(out);
}

static void test_act_quant(act_quant_kind kind, float scale, int64_t rows, int64_t cols)
{
    static const char *names[] = {"none", "int8 static", "int8 dynamic", "fp8 static"};
    char shape[64], op[48];
    snprintf(shape, sizeof shape, "%lld x %lld scale %g", (long long)rows, (long long)cols, (double)scale);
    snprintf(op, sizeof op, "act_quant %s", names[kind]);
    const int64_t n = rows * cols;
    float *X = rand_vec(n, -3, 3), *Xg = xmalloc((size_t)n * 4);
    dbuf dX = dfrom(X, (size_t)n * 4);
    act_quant a = {.kind = kind, .scale = scale};
    /* one IEEE division, round-half-even, clamp and multiply per element,
     * the same on both: identical */
    if (call_ok(C->act_quant(&a, X, rows, cols), op, shape) &&
        call_ok(G->act_quant(&a, dX.p, rows, cols), op, shape) && guards_ok(&dX, op, shape, "X")) {
        dget(Xg, &dX);
        const double e = max_abs_diff(Xg, X, n);
        row(op, shape, e == 0.0, "max|diff|", e, 0);
    }
    dfree(&dX);
    free(X), free(Xg);
}

static void test_logsumexp(int64_t n, int64_t ld, const int64_t *blocks, int n_blocks)
{
    char shape[64];
    int64_t cols = 0;
    for (int k = 0; k < n_blocks; k++)
        cols += blocks[k];
    snprintf(shape, sizeof shape, "n=%lld cols=%lld in %d blocks", (long long)n, (long long)cols, n_blocks);
    float *L = rand_vec(n * ld, -20, 20);
    double *m = xmalloc((size_t)n * 8), *s = xmalloc((size_t)n * 8), *mg = xmalloc((size_t)n * 8),
           *sg = xmalloc((size_t)n * 8);
    for (int64_t i = 0; i < n; i++)
        m[i] = -INFINITY, s[i] = 0.0;
    dbuf dL = dfrom(L, (size_t)(n * ld) * 4), dm = dfrom(m, (size_t)n * 8), ds = dfrom(s, (size_t)n * 8);
    int ok = 1;
    int64_t c0 = 0;
    for (int k = 0; k < n_blocks && ok; k++) {
        ok = call_ok(C->logsumexp_accumulate(L + c0, n, blocks[k], ld, m, s), "logsumexp (cpu)", shape) &&
             call_ok(G->logsumexp_accumulate((float *)dL.p + c0, n, blocks[k], ld, dm.p, ds.p),
                     "logsumexp", shape);
        c0 += blocks[k];
    }
    if (ok && guards_ok(&dm, "logsumexp", shape, "m") && guards_ok(&ds, "logsumexp", shape, "s")) {
        dget(mg, &dm);
        dget(sg, &ds);
        /* the max is exact in any order; the sums are double, a tree against
         * a loop: relative difference ~ 1e-16 x log2(cols) */
        double em = 0.0, es = 0.0;
        for (int64_t i = 0; i < n; i++) {
            em = fmax(em, fabs(mg[i] - m[i]));
            es = fmax(es, fabs(sg[i] - s[i]) / fabs(s[i]));
        }
        row("logsumexp max", shape, em == 0.0, "max|diff|", em, 0);
        row("logsumexp sum", shape, es <= 1e-12, "max rel", es, 1e-12);
    }
    dfree(&dL), dfree(&dm), dfree(&ds);
    free(L), free(m), free(s), free(mg), free(sg);
}

/* ---- statistics and Hessian ----------------------------------------------------------------------- */

static void test_stats(int64_t cols, int64_t rows1, int64_t rows2)
{
    char shape[64];
    snprintf(shape, sizeof shape, "cols=%lld rows=%lld+%lld", (long long)cols, (long long)rows1,
             (long long)rows2);
    float *X1 = rand_vec(rows1 * cols, -2, 2), *X2 = rand_vec(rows2 * cols, -2, 2);
    linear_stats sc, sg;
    if (!call_ok(linear_stats_init(cols, &sc), "stats init (cpu)", shape))
        return;
    if (!call_ok(fptq_cuda_stats_init(cols, &sg), "stats init", shape)) {
        linear_stats_free(&sc);
        return;
    }
    const int64_t nn = cols * cols;
    float *xtx = xmalloc((size_t)nn * 4), *amax = xmalloc((size_t)cols * 4);
    float *Hc = xmalloc((size_t)nn * 4), *Hg = xmalloc((size_t)nn * 4);
    double *asum = xmalloc((size_t)cols * 8);
    dbuf dX1 = dfrom(X1, (size_t)(rows1 * cols) * 4), dX2 = dfrom(X2, (size_t)(rows2 * cols) * 4);
    dbuf dH = dnew((size_t)nn * 4);
    if (call_ok(linear_stats_accumulate(&sc, X1, rows1), "stats (cpu)", shape) &&
        call_ok(linear_stats_accumulate(&sc, X2, rows2), "stats (cpu)", shape) &&
        call_ok(fptq_cuda_stats_accumulate(&sg, dX1.p, rows1), "stats accumulate", shape) &&
        call_ok(fptq_cuda_stats_accumulate(&sg, dX2.p, rows2), "stats accumulate", shape) &&
        call_ok(G->download(xtx, sg.xtx, (size_t)nn * 4), "stats download", shape) &&
        call_ok(G->download(asum, sg.abs_sum, (size_t)cols * 8), "stats download", shape) &&
        call_ok(G->download(amax, sg.abs_max, (size_t)cols * 4), "stats download", shape)) {
        /* X^T X: fp32 dots of length rows (ssyrk, TF32 off), as linear: 1e-9 */
        const double e = nmse(xtx, sc.xtx, nn);
        row("stats X^T X (ssyrk)", shape, e <= 1e-9 && sg.tokens == sc.tokens, "nmse", e, 1e-9);
        double es = 0.0;
        for (int64_t c = 0; c < cols; c++)
            es = fmax(es, fabs(asum[c] - sc.abs_sum[c]) / fmax(sc.abs_sum[c], 1e-300));
        /* double sums of floats in another order: relative ~ 1e-16 x rows */
        row("stats sum |x|", shape, es <= 1e-12, "max rel", es, 1e-12);
        const double em = max_abs_diff(amax, sc.abs_max, cols);
        row("stats max |x|", shape, em == 0.0, "max|diff|", em, 0);
    }
    /* the Hessian of the same raw sums: the same double arithmetic, identical;
     * out of place, then in place over xtx */
    if (call_ok(G->upload(sg.xtx, sc.xtx, (size_t)nn * 4), "stats upload", shape) &&
        call_ok(linear_stats_hessian(&sc, Hc), "hessian (cpu)", shape) &&
        call_ok(fptq_cuda_stats_hessian(&sg, dH.p), "hessian", shape) && guards_ok(&dH, "hessian", shape, "H")) {
        dget(Hg, &dH);
        const double e = max_abs_diff(Hg, Hc, nn);
        row("hessian 2 X^T X / n", shape, e == 0.0, "max|diff|", e, 0);
        if (call_ok(fptq_cuda_stats_hessian(&sg, sg.xtx), "hessian in place", shape) &&
            call_ok(G->download(Hg, sg.xtx, (size_t)nn * 4), "hessian download", shape)) {
            const double e2 = max_abs_diff(Hg, Hc, nn);
            row("hessian in place", shape, e2 == 0.0, "max|diff|", e2, 0);
        }
    }
    dfree(&dX1), dfree(&dX2), dfree(&dH);
    fptq_cuda_stats_free(&sg);
    linear_stats_free(&sc);
    free(X1), free(X2), free(xtx), free(amax), free(Hc), free(Hg), free(asum);
}

/* ---- RTN, dequantize, packing, FP8 ----------------------------------------------------------------- */

/* codes, scales, zeros and g_idx of a device tensor against a host one */
static int64_t quant_diff(const quant_tensor *d, const quant_tensor *h, const char *op, const char *shape)
{
    quant_tensor back;
    if (!call_ok(quant_tensor_alloc(&h->spec, h->rows, h->cols, h->g_idx != NULL, &back), op, shape))
        return -1;
    int64_t bad = -1;
    if (call_ok(fptq_cuda_quant_tensor_download(d, &back), op, shape)) {
        const size_t nrg = (size_t)(h->rows * h->n_groups);
        bad = count_diff_bytes(back.codes, h->codes, (size_t)(h->rows * h->cols)) +
              count_diff_bytes(back.scales, h->scales, nrg * 4);
        if (h->zeros)
            bad += count_diff_bytes(back.zeros, h->zeros, nrg * 4);
        if (h->g_idx)
            bad += count_diff_bytes(back.g_idx, h->g_idx, (size_t)h->cols * 4);
    }
    quant_tensor_free(&back);
    return bad;
}

static void test_rtn(quant_format fmt, int bits, int sym, int64_t gs, int64_t rows, int64_t cols,
                     int with_clip, int with_g_idx)
{
    char shape[80], op[48];
    snprintf(shape, sizeof shape, "%lld x %lld g%lld%s%s", (long long)rows, (long long)cols,
             (long long)gs, with_clip ? " clip" : "", with_g_idx ? " g_idx" : "");
    if (fmt == QFMT_INT)
        snprintf(op, sizeof op, "rtn int%d %s", bits, sym ? "sym" : "asym");
    else
        snprintf(op, sizeof op, "rtn fp8 e4m3");
    quant_spec spec = {.format = fmt, .bits = bits, .group_size = gs, .sym = sym};
    const int64_t ng = quant_n_groups(&spec, cols);
    float *W = rand_vec(rows * cols, -1, 1), *clip = rand_vec(rows * ng, 0.7f, 1.0f);
    /* a few exact zeros and ties (w / s = k + 1/2) come from small integers */
    for (int64_t i = 0; i < rows * cols; i += 7)
        W[i] = (float)((int)(W[i] * 8.0f)) / 8.0f;
    quant_tensor qc, qg;
    if (!call_ok(quant_tensor_alloc(&spec, rows, cols, with_g_idx, &qc), op, shape))
        return;
    if (!call_ok(fptq_cuda_quant_tensor_alloc(&spec, rows, cols, with_g_idx, &qg), op, shape)) {
        quant_tensor_free(&qc);
        return;
    }
    dbuf dW = dfrom(W, (size_t)(rows * cols) * 4), dclip = dfrom(clip, (size_t)(rows * ng) * 4);
    /* the same float operations in the same order: identical codes, scales, zeros */
    if (call_ok(quant_rtn(W, rows, cols, with_clip ? clip : NULL, &qc), op, shape) &&
        call_ok(fptq_cuda_quant_rtn(dW.p, rows, cols, with_clip ? dclip.p : NULL, &qg), op, shape)) {
        const int64_t bad = quant_diff(&qg, &qc, op, shape);
        if (bad >= 0)
            row(op, shape, bad == 0, "bytes differing", (double)bad, 0);
    }
    /* dequantize the CPU's tensor on both; act-order-like g_idx when present */
    if (with_g_idx)
        for (int64_t c = 0; c < cols; c++)
            qc.g_idx[c] = (int32_t)((c * 7) % ng);
    float *Wc = xmalloc((size_t)(rows * cols) * 4), *Wg = xmalloc((size_t)(rows * cols) * 4);
    dbuf dQ = dnew((size_t)(rows * cols) * 4);
    const size_t nrg = (size_t)(rows * ng);
    if (call_ok(G->upload(qg.codes, qc.codes, (size_t)(rows * cols)), "dequantize", shape) &&
        call_ok(G->upload(qg.scales, qc.scales, nrg * 4), "dequantize", shape) &&
        (!qc.zeros || call_ok(G->upload(qg.zeros, qc.zeros, nrg * 4), "dequantize", shape)) &&
        (!qc.g_idx || call_ok(G->upload(qg.g_idx, qc.g_idx, (size_t)cols * 4), "dequantize", shape)) &&
        call_ok(fptq_cuda_quant_dequantize(&qg, dQ.p), "dequantize", shape) &&
        guards_ok(&dQ, "dequantize", shape, "W")) {
        quant_dequantize(&qc, Wc);
        dget(Wg, &dQ);
        const double e = max_abs_diff(Wg, Wc, rows * cols);
        char dop[48];
        snprintf(dop, sizeof dop, "dequantize %s", fmt == QFMT_INT ? "int" : "fp8");
        row(dop, shape, e == 0.0, "max|diff|", e, 0);
    }
    dfree(&dW), dfree(&dclip), dfree(&dQ);
    quant_tensor_free(&qc);
    fptq_cuda_quant_tensor_free(&qg);
    free(W), free(clip), free(Wc), free(Wg);
}

static void test_pack(int bits, int64_t rows, int64_t cols)
{
    char shape[64];
    snprintf(shape, sizeof shape, "%d bits, %lld x %lld", bits, (long long)rows, (long long)cols);
    const int64_t pc = quant_packed_cols(cols, bits), n = rows * cols;
    uint8_t *codes = xmalloc((size_t)n), *back = xmalloc((size_t)n);
    int32_t *pk = xmalloc((size_t)(rows * pc) * 4), *pg = xmalloc((size_t)(rows * pc) * 4);
    for (int64_t i = 0; i < n; i++)
        codes[i] = (uint8_t)((uint32_t)((frand() + 1.0f) * 1000.0f) % (1u << bits));
    dbuf dc = dfrom(codes, (size_t)n), dp = dnew((size_t)(rows * pc) * 4), du = dnew((size_t)n);
    quant_pack_int32(codes, rows, cols, bits, pk);
    if (call_ok(fptq_cuda_quant_pack_int32(dc.p, rows, cols, bits, dp.p), "pack int32", shape) &&
        guards_ok(&dp, "pack int32", shape, "packed") &&
        call_ok(fptq_cuda_quant_unpack_int32(dp.p, rows, cols, bits, du.p), "unpack int32", shape) &&
        guards_ok(&du, "unpack int32", shape, "codes")) {
        dget(pg, &dp);
        dget(back, &du);
        const int64_t b1 = count_diff_bytes(pg, pk, (size_t)(rows * pc) * 4);
        const int64_t b2 = count_diff_bytes(back, codes, (size_t)n);
        row("pack int32", shape, b1 == 0, "bytes differing", (double)b1, 0);
        row("unpack int32", shape, b2 == 0, "bytes differing", (double)b2, 0);
    }
    dfree(&dc), dfree(&dp), dfree(&du);
    free(codes), free(back), free(pk), free(pg);
}

static float f32_from_bits(uint32_t u)
{
    float x;
    memcpy(&x, &u, sizeof x);
    return x;
}

static void test_fp8(void)
{
    /* decode: all 256 codes; encode: a stride through every float bit
     * pattern, and each rounding boundary of E4M3 (midpoints between
     * neighbours, +-3 ulp, both signs), saturation and NaN */
    uint8_t all[256];
    for (int b = 0; b < 256; b++)
        all[b] = (uint8_t)b;
    float dec_c[256], dec_g[256];
    dbuf dcodes = dfrom(all, 256), ddec = dnew(256 * 4);
    if (call_ok(fptq_cuda_fp8_to_f32(dcodes.p, 256, ddec.p), "fp8 e4m3 -> f32", "256 codes") &&
        guards_ok(&ddec, "fp8 e4m3 -> f32", "256 codes", "out")) {
        dget(dec_g, &ddec);
        int64_t bad = 0;
        for (int b = 0; b < 256; b++) {
            dec_c[b] = fp8_e4m3_to_f32((uint8_t)b);
            bad += isnan(dec_c[b]) ? !isnan(dec_g[b]) : memcmp(&dec_c[b], &dec_g[b], 4) != 0;
        }
        row("fp8 e4m3 -> f32", "all 256 codes", bad == 0, "values differing", (double)bad, 0);
    }
    const int64_t stride = 509, n_sweep = (int64_t)(4294967296.0 / stride) + 1;
    const int64_t n_edge = 127 * 7 * 2 + 32;
    const int64_t n = n_sweep + n_edge;
    float *x = xmalloc((size_t)n * 4);
    uint8_t *yc = xmalloc((size_t)n), *yg = xmalloc((size_t)n);
    int64_t k = 0;
    for (int64_t i = 0; i < n_sweep; i++)
        x[k++] = f32_from_bits((uint32_t)(i * stride));
    for (int b = 0; b < 127; b++) {
        const float lo = fp8_e4m3_to_f32((uint8_t)b), hi = b == 126 ? 464.0f : fp8_e4m3_to_f32((uint8_t)(b + 1));
        const float mid = (lo + hi) / 2.0f;
        for (int d = -3; d <= 3; d++) {
            uint32_t u;
            memcpy(&u, &mid, 4);
            const float v = f32_from_bits(u + (uint32_t)d);
            x[k++] = v;
            x[k++] = -v;
        }
    }
    const float special[] = {0.0f, -0.0f, INFINITY, -INFINITY, NAN, -NAN, FLT_MIN, -FLT_MIN,
                             FLT_TRUE_MIN, 447.99997f, 448.0f, -448.0f, 463.99997f, 464.0f, 480.0f,
                             -480.0f, 1e30f, -1e30f, 0.015625f, 0.0156249991f, 0.001953125f,
                             0.0009765625f, 0.00097656256f, 0.0029296875f, 240.0f, 256.0f, 1.0f,
                             -1.0f, 1.0625f, 1.1875f, 0.5f, FLT_MAX};
    for (size_t i = 0; i < sizeof special / sizeof special[0] && k < n; i++)
        x[k++] = special[i];
    dbuf dx = dfrom(x, (size_t)k * 4), dy = dnew((size_t)k);
    if (call_ok(fptq_cuda_fp8_from_f32(dx.p, k, dy.p), "f32 -> fp8 e4m3", "sweep") &&
        guards_ok(&dy, "f32 -> fp8 e4m3", "sweep", "out")) {
        dget(yg, &dy);
        for (int64_t i = 0; i < k; i++)
            yc[i] = fp8_e4m3_from_f32(x[i]);
        const int64_t bad = count_diff_bytes(yg, yc, (size_t)k);
        char shape[64];
        snprintf(shape, sizeof shape, "%lld floats (stride, edges)", (long long)k);
        row("f32 -> fp8 e4m3", shape, bad == 0, "codes differing", (double)bad, 0);
    }
    dfree(&dcodes), dfree(&ddec), dfree(&dx), dfree(&dy);
    free(x), free(yc), free(yg);
}

/* ---- GPTQ --------------------------------------------------------------------------------------------- */

/* H = 2 X^T X / n of correlated X = Z A (as bench_gptq), computed by the CUDA
 * statistics and downloaded: both GPTQs then read the same H. dead: columns
 * whose inputs are all zero (H_jj = 0). */
static float *make_hessian(int64_t cols, int64_t tokens, int n_dead)
{
    float *Z = rand_vec(tokens * cols, -1, 1), *A = rand_vec(cols * cols, -1, 1);
    float *X = xmalloc((size_t)(tokens * cols) * 4), *H = xmalloc((size_t)(cols * cols) * 4);
    for (int64_t i = 0; i < cols * cols; i++)
        A[i] = 0.5f * A[i] + (i % (cols + 1) == 0 ? 1.0f : 0.02f);
    dbuf dZ = dfrom(Z, (size_t)(tokens * cols) * 4), dA = dfrom(A, (size_t)(cols * cols) * 4),
         dX = dnew((size_t)(tokens * cols) * 4);
    linear_stats s;
    int ok = call_ok(fptq_cuda_stats_init(cols, &s), "gptq hessian", "") &&
             call_ok(G->linear(dZ.p, tokens, cols, dA.p, cols, NULL, dX.p), "gptq hessian", "");
    if (ok) {
        dget(X, &dX);
        for (int d = 0; d < n_dead; d++) {
            const int64_t c = (d * 37 + 5) % cols;
            for (int64_t t = 0; t < tokens; t++)
                X[t * cols + c] = 0.0f;
        }
        G->upload(dX.p, X, (size_t)(tokens * cols) * 4);
        ok = call_ok(fptq_cuda_stats_accumulate(&s, dX.p, tokens), "gptq hessian", "") &&
             call_ok(fptq_cuda_stats_hessian(&s, s.xtx), "gptq hessian", "") &&
             call_ok(G->download(H, s.xtx, (size_t)(cols * cols) * 4), "gptq hessian", "");
    }
    fptq_cuda_stats_free(&s);
    dfree(&dZ), dfree(&dA), dfree(&dX);
    free(Z), free(A), free(X);
    if (!ok) {
        free(H);
        return NULL;
    }
    return H;
}

static double gptq_loss_cpu, gptq_loss_gpu; /* over the cases held to 0.1% */

/* tol: the proxy loss's relative difference allowed, 1e-3 (issue 5) but
 * where the quantizer itself makes the loss hypersensitive (see main). */
static void test_gptq(int64_t rows, int64_t cols, int bits, int sym, int64_t gs, int act_order,
                      int64_t block, int64_t tokens, int n_dead, double tol)
{
    char shape[96];
    snprintf(shape, sizeof shape, "%lldx%lld int%d%s g%lld%s b%lld%s", (long long)rows, (long long)cols,
             bits, sym ? "s" : "", (long long)gs, act_order ? " act" : "", (long long)block,
             n_dead ? " dead" : "");
    float *H = make_hessian(cols, tokens, n_dead);
    if (!H)
        return;
    float *W = rand_vec(rows * cols, -1, 1);
    float *Qc = xmalloc((size_t)(rows * cols) * 4), *Qg = xmalloc((size_t)(rows * cols) * 4);
    float *Qd = xmalloc((size_t)(rows * cols) * 4);
    quant_spec spec = {.format = QFMT_INT, .bits = bits, .group_size = gs, .sym = sym};
    gptq_opts o = {.damp_percent = 0.01f, .block_size = block, .act_order = act_order, .max_retries = 4};
    quant_tensor qc = {0}, qg = {0}, qback = {0};
    gptq_result rc = {0}, rg = {0};
    if (!call_ok(quant_tensor_alloc(&spec, rows, cols, act_order, &qc), "gptq", shape) ||
        !call_ok(quant_tensor_alloc(&spec, rows, cols, act_order, &qback), "gptq", shape) ||
        !call_ok(fptq_cuda_quant_tensor_alloc(&spec, rows, cols, act_order, &qg), "gptq", shape))
        goto out_early;
    {
        dbuf dW = dfrom(W, (size_t)(rows * cols) * 4), dH = dfrom(H, (size_t)(cols * cols) * 4),
             dQ = dnew((size_t)(rows * cols) * 4), dQd = dnew((size_t)(rows * cols) * 4);
        fptq_cuda_gptq_times t;
        if (call_ok(gptq_quantize(W, rows, cols, H, &o, &qc, Qc, &rc), "gptq (cpu)", shape) &&
            call_ok(fptq_cuda_gptq_quantize(dW.p, rows, cols, dH.p, &o, &qg, dQ.p, &rg, &t), "gptq", shape) &&
            guards_ok(&dQ, "gptq", shape, "Q") &&
            call_ok(fptq_cuda_quant_tensor_download(&qg, &qback), "gptq", shape)) {
            dget(Qg, &dQ);
            /* the proxy loss sum (w - q)^2 / Hinv_jj^2: cuSOLVER's factor and
             * cuBLAS's sums round differently from LAPACK's and OpenBLAS's,
             * which flips a few codes at rounding ties; the loss must stay
             * within 0.1% (issue 5) */
            const double rel = fabs(rg.loss - rc.loss) / fmax(rc.loss, 1e-30);
            row("gptq proxy loss", shape, rel <= tol && rg.retries == rc.retries, "rel diff", rel, tol);
            if (tol <= 1e-3) {
                gptq_loss_cpu += rc.loss;
                gptq_loss_gpu += rg.loss;
            }
            const int64_t nd = count_diff_bytes(qback.codes, qc.codes, (size_t)(rows * cols));
            printf("|   %-22s | %-34s | info | codes equal %.4f%%, damp %g/%g, loss %.6g/%.6g, "
                   "factor %.4f s, blocks %.4f s | - |\n", "gptq detail", shape,
                   100.0 * (1.0 - (double)nd / (double)(rows * cols)), (double)rg.damp, (double)rc.damp,
                   rg.loss, rc.loss, t.factor_s, t.blocks_s);
            /* Q must be exactly the dequantized codes (same operations) */
            if (call_ok(fptq_cuda_quant_dequantize(&qg, dQd.p), "gptq", shape)) {
                dget(Qd, &dQd);
                const double e = max_abs_diff(Qg, Qd, rows * cols);
                row("gptq Q = dequant(codes)", shape, e == 0.0, "max|diff|", e, 0);
            }
            /* groups fitted before any update (per row, act-order's static groups) are identical */
            if (gs == 0 || act_order) {
                const size_t nrg = (size_t)(rows * qc.n_groups);
                const int64_t bad = count_diff_bytes(qback.scales, qc.scales, nrg * 4) +
                                    count_diff_bytes(qback.zeros, qc.zeros, nrg * 4) +
                                    (act_order ? count_diff_bytes(qback.g_idx, qc.g_idx, (size_t)cols * 4) : 0);
                row("gptq up-front groups", shape, bad == 0, "bytes differing", (double)bad, 0);
            }
            /* dead columns: quantized as zeros on both */
            if (n_dead) {
                double e = 0.0;
                for (int d = 0; d < n_dead; d++) {
                    const int64_t c = (d * 37 + 5) % cols;
                    for (int64_t r = 0; r < rows; r++)
                        e = fmax(e, fabs(Qg[r * cols + c]) + fabs(Qc[r * cols + c]));
                }
                row("gptq dead columns", shape, e == 0.0, "max|Q|", e, 0);
            }
            /* in place: W becomes Q, the same as the copying call's */
            gptq_result ri;
            if (call_ok(fptq_cuda_gptq_quantize_inplace(dW.p, rows, cols, dH.p, &o, &qg, &ri, NULL),
                        "gptq in place", shape) && guards_ok(&dW, "gptq in place", shape, "W")) {
                dget(Qd, &dW);
                const double e = max_abs_diff(Qd, Qg, rows * cols);
                row("gptq in place", shape, e == 0.0 && ri.loss == rg.loss, "max|diff|", e, 0);
            }
        }
        dfree(&dW), dfree(&dH), dfree(&dQ), dfree(&dQd);
    }
out_early:
    quant_tensor_free(&qc);
    quant_tensor_free(&qback);
    fptq_cuda_quant_tensor_free(&qg);
    free(H), free(W), free(Qc), free(Qg), free(Qd);
}

/* GPTQ with H = I: no error feedback, so GPTQ is RTN, bit for bit, on both sides. */
static void test_gptq_identity(int64_t rows, int64_t cols, int bits, int64_t gs)
{
    char shape[64];
    snprintf(shape, sizeof shape, "%lldx%lld int%d g%lld, H = I", (long long)rows, (long long)cols, bits,
             (long long)gs);
    float *W = rand_vec(rows * cols, -1, 1), *H = xmalloc((size_t)(cols * cols) * 4);
    for (int64_t c = 0; c < cols; c++)
        H[c * cols + c] = 1.0f;
    quant_spec spec = {.format = QFMT_INT, .bits = bits, .group_size = gs, .sym = 0};
    quant_tensor qr, qg;
    if (call_ok(quant_tensor_alloc(&spec, rows, cols, 0, &qr), "gptq identity", shape)) {
        if (call_ok(fptq_cuda_quant_tensor_alloc(&spec, rows, cols, 0, &qg), "gptq identity", shape)) {
            dbuf dW = dfrom(W, (size_t)(rows * cols) * 4), dH = dfrom(H, (size_t)(cols * cols) * 4);
            if (call_ok(quant_rtn(W, rows, cols, NULL, &qr), "gptq identity", shape) &&
                call_ok(fptq_cuda_gptq_quantize(dW.p, rows, cols, dH.p, NULL, &qg, NULL, NULL, NULL),
                        "gptq identity", shape)) {
                const int64_t bad = quant_diff(&qg, &qr, "gptq identity", shape);
                if (bad >= 0)
                    row("gptq (H = I) = cpu rtn", shape, bad == 0, "bytes differing", (double)bad, 0);
            }
            dfree(&dW), dfree(&dH);
            fptq_cuda_quant_tensor_free(&qg);
        }
        quant_tensor_free(&qr);
    }
    free(W), free(H);
}

/* ---- failures travel as statuses ------------------------------------------------------------------- */

static void test_failures(void)
{
    void *p = NULL;
    fptq_status st = G->mem_alloc((size_t)1 << 60, "an impossible buffer", &p);
    const int nomem = st == FPTQ_ERR_NOMEM && strstr(fptq_last_error(), "an impossible buffer");
    fptq_clear_error();
    /* the failed allocation is not sticky: the next op works */
    float one = 1.0f, back = 0.0f;
    dbuf d = dfrom(&one, 4);
    st = G->add(d.p, d.p, 1);
    const int after = st == FPTQ_OK && G->download(&back, d.p, 4) == FPTQ_OK && back == 2.0f;
    row("alloc failure -> status", "2^60 bytes", nomem && after, "ok", nomem && after, 1);
    fptq_clear_error();

    /* a Hessian no damping rescues: FPTQ_ERR_NUMERIC on both, no abort */
    const int64_t cols = 33;
    float *H = xmalloc((size_t)(cols * cols) * 4), *W = rand_vec(cols * 4, -1, 1);
    for (int64_t c = 0; c < cols; c++)
        H[c * cols + c] = -1.0f;
    quant_spec spec = {.format = QFMT_INT, .bits = 4, .group_size = 0};
    quant_tensor qc, qg;
    gptq_opts o = {.max_retries = 2};
    if (call_ok(quant_tensor_alloc(&spec, 4, cols, 0, &qc), "gptq failure", "") &&
        call_ok(fptq_cuda_quant_tensor_alloc(&spec, 4, cols, 0, &qg), "gptq failure", "")) {
        dbuf dW = dfrom(W, (size_t)(cols * 4) * 4), dH = dfrom(H, (size_t)(cols * cols) * 4);
        const fptq_status sc = gptq_quantize(W, 4, cols, H, &o, &qc, NULL, NULL);
        fptq_clear_error();
        const fptq_status sg = fptq_cuda_gptq_quantize(dW.p, 4, cols, dH.p, &o, &qg, NULL, NULL, NULL);
        const int named = strstr(fptq_last_error(), "Cholesky") != NULL;
        fptq_clear_error();
        row("gptq H = -I -> numeric", "4x33", sc == FPTQ_ERR_NUMERIC && sg == FPTQ_ERR_NUMERIC && named,
            "status", (double)sg, (double)FPTQ_ERR_NUMERIC);
        dfree(&dW), dfree(&dH);
        fptq_cuda_quant_tensor_free(&qg);
    }
    quant_tensor_free(&qc);
    dfree(&d);
    free(H), free(W);
}

/* ---- NCCL over one rank ------------------------------------------------------------------------------ */

#ifdef FPTQ_HAVE_NCCL
static void test_nccl_single(void)
{
    const char *shape = "1 rank, 4097 floats";
    unsigned char id[256];
    fptq_collectives coll;
    if (!call_ok(fptq_nccl_make_id(id, sizeof id), "nccl id", shape) ||
        !call_ok(fptq_nccl_init(id, fptq_nccl_id_bytes(), 0, 1, 0, &coll), "nccl init", shape))
        return;
    const int64_t n = 4097;
    float *x = rand_vec(n, -1, 1), *y = xmalloc((size_t)n * 4), *z = xmalloc((size_t)n * 4);
    dbuf dx = dfrom(x, (size_t)n * 4), dz = dnew((size_t)n * 4);
    const size_t counts[1] = {(size_t)n * 4};
    /* one member: every collective is the identity, bit for bit */
    if (call_ok(coll.allreduce(coll.ctx, dx.p, (size_t)n, FPTQ_DT_F32, FPTQ_OP_SUM), "nccl allreduce", shape) &&
        call_ok(coll.allreduce(coll.ctx, dx.p, (size_t)n, FPTQ_DT_F32, FPTQ_OP_MAX), "nccl allreduce", shape) &&
        call_ok(coll.broadcast(coll.ctx, dx.p, (size_t)n * 4, 0), "nccl broadcast", shape) &&
        call_ok(coll.allgatherv(coll.ctx, dx.p, dz.p, counts), "nccl allgatherv", shape) &&
        guards_ok(&dx, "nccl", shape, "buf") && guards_ok(&dz, "nccl allgatherv", shape, "recv")) {
        dget(y, &dx);
        dget(z, &dz);
        const double e = max_abs_diff(y, x, n) + max_abs_diff(z, x, n);
        row("nccl collectives", shape, e == 0.0, "max|diff|", e, 0);
    }
    fptq_nccl_free(&coll);
    dfree(&dx), dfree(&dz);
    free(x), free(y), free(z);
}
#endif

int main(void)
{
    char why[256] = "";
    if (!fptq_cuda_available(why, sizeof why)) {
        printf("SKIP: no usable CUDA device (%s)\n", why);
        return 77;
    }
    G = fptq_backend_cuda_table();
    C = &fptq_backend_cpu;
    if (!G) {
        printf("SKIP: no usable CUDA device (built without the CUDA backend)\n");
        return 77;
    }
    const char *seed_env = getenv("FPTQ_SEED");
    const uint64_t seed = seed_env ? strtoull(seed_env, NULL, 10) : (uint64_t)time(NULL);
    rng_state = seed * 0x9E3779B97F4A7C15ull + 1;
    for (int i = 0; i < GUARD; i++)
        guard_pattern[i] = (unsigned char)(0xA5 ^ (i * 29));
    char name[256] = "";
    size_t free_b = 0, total_b = 0;
    if (fptq_cuda_device_info(name, sizeof name, &free_b, &total_b, NULL) != FPTQ_OK) {
        printf("FAIL: CUDA set-up: %s\n", fptq_last_error());
        return 1;
    }
    printf("GPU parity on %s, %.1f of %.1f GiB free; FPTQ_SEED=%llu\n", name, free_b / 1073741824.0,
           total_b / 1073741824.0, (unsigned long long)seed);
    printf("| op | shape | status | error | tolerance |\n|---|---|---|---|---|\n");

    test_linear(1, 1, 1, 0);
    test_linear(1, 31, 33, 1);
    test_linear(31, 33, 127, 1);
    test_linear(33, 172, 31, 0);
    test_linear(127, 4097, 33, 1);
    test_linear(4097, 127, 172, 0);

    test_rmsnorm(1, 1, 0);
    test_rmsnorm(31, 33, 0);
    test_rmsnorm(33, 172, 1);
    test_rmsnorm(3, 4097, 0);
    test_rmsnorm(127, 4097, 1);

    test_rope(1, 1, 1, 2, 0);
    test_rope(2, 31, 3, 64, 0);
    test_rope(3, 33, 5, 128, 1);
    test_rope(1, 172, 8, 128, 1);

    test_attention(1, 1, 1, 1, 2);
    test_attention(2, 31, 4, 2, 32);
    test_attention(2, 33, 6, 3, 16);
    test_attention(1, 127, 8, 1, 64);
    test_attention(1, 172, 4, 4, 128);

    const int64_t sizes[] = {1, 31, 33, 127, 172, 4097};
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++)
        test_swiglu_add(sizes[i]);

    test_act_quant(ACTQ_INT8_STATIC, 0.02f, 31, 172);
    test_act_quant(ACTQ_INT8_STATIC, 0.0f, 1, 33);
    test_act_quant(ACTQ_INT8_DYNAMIC, 0.0f, 31, 172);
    test_act_quant(ACTQ_INT8_DYNAMIC, 0.0f, 1, 4097);
    test_act_quant(ACTQ_FP8_STATIC, 0.01f, 127, 33);
    test_act_quant(ACTQ_FP8_STATIC, 0.003f, 1, 4097);

    const int64_t b1[] = {33, 33, 1}, b2[] = {4097}, b3[] = {1};
    test_logsumexp(31, 127, b1, 3);
    test_logsumexp(1, 4097, b2, 1);
    test_logsumexp(127, 1, b3, 1);

    test_stats(1, 1, 31);
    test_stats(31, 127, 33);
    test_stats(172, 4097, 127);

    const int bits_list[] = {2, 3, 4, 8};
    for (size_t b = 0; b < 4; b++)
        for (int sym = 0; sym <= 1; sym++) {
            test_rtn(QFMT_INT, bits_list[b], sym, 0, 31, 172, 0, 0);
            test_rtn(QFMT_INT, bits_list[b], sym, 32, 31, 172, 1, 1);
            test_rtn(QFMT_INT, bits_list[b], sym, 128, 127, 33, 0, 0);
        }
    test_rtn(QFMT_INT, 4, 0, 128, 1, 4097, 0, 1);
    test_rtn(QFMT_FP8_E4M3, 8, 0, 0, 33, 4097, 1, 0);
    test_rtn(QFMT_FP8_E4M3, 8, 0, 0, 1, 31, 0, 1);

    for (size_t b = 0; b < 4; b++) {
        test_pack(bits_list[b], 31, 1);
        test_pack(bits_list[b], 31, 33);
        test_pack(bits_list[b], 1, 172);
    }
    test_fp8();

    test_gptq_identity(31, 172, 4, 32);
    test_gptq_identity(127, 33, 3, 0);
    /* The proxy loss within 0.1% of the CPU's (issue 5), and the sum over
     * those cases. One exception, held to 1%: symmetric groups fitted inside
     * the loop. Their min-max fit puts the group's extreme weight exactly on
     * a rounding tie (|w| / s = (2^b - 1) / 2), so the last bit of the
     * updated weight decides its code, a flipped code feeds a different
     * error into every later column, and the loss moves: the CPU against
     * itself with H changed by one ulp moves it by up to 0.1% at 127 x 172
     * (asymmetric: 1e-7), and cuSOLVER's factor differs from LAPACK's by more
     * than an ulp. */
    test_gptq(127, 172, 4, 0, 0, 0, 128, 512, 0, 1e-3);
    test_gptq(127, 172, 4, 1, 32, 0, 128, 512, 2, 1e-2); /* symmetric, groups in the loop */
    test_gptq(31, 172, 3, 0, 128, 0, 31, 256, 0, 1e-3);  /* groups straddle blocks */
    test_gptq(33, 172, 4, 0, 32, 1, 128, 512, 1, 1e-3);  /* act-order, static groups */
    test_gptq(1, 31, 2, 0, 0, 0, 128, 64, 0, 1e-3);
    test_gptq(1031, 172, 4, 0, 32, 0, 128, 512, 2, 1e-3);
    test_gptq(523, 1024, 3, 0, 33, 0, 127, 2048, 1, 1e-3); /* ragged groups across blocks */
    test_gptq(64, 4097, 4, 0, 128, 0, 128, 8192, 3, 1e-3);
    test_gptq(172, 1024, 4, 1, 128, 1, 128, 2048, 0, 1e-3); /* symmetric, static groups */
    {
        const double rel = fabs(gptq_loss_gpu - gptq_loss_cpu) / fmax(gptq_loss_cpu, 1e-30);
        row("gptq proxy loss, sum", "the cases held to 0.1%", rel <= 1e-3, "rel diff", rel, 1e-3);
    }

    test_failures();
#ifdef FPTQ_HAVE_NCCL
    test_nccl_single();
#endif

    printf("%d passed, %d failed\n", n_pass, n_fail);
    fptq_cuda_shutdown();
    return n_fail ? 1 : 0;
}
