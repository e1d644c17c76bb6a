/*
 * One Llama decoder layer through fptq's CUDA backend at Llama-3.1-70B and
 * 405B shapes, synthetic weights and calibration tokens: the time of each
 * phase of quantizing a layer (upload, forward + statistics, Cholesky, GPTQ,
 * forward with the quantized weights, write-back), against the floor that
 * the GEMM and copy rates measured in the same run allow, and what that
 * means for the whole 405B model on 16 GPUs. Exit 77 without a usable GPU.
 *
 *   bench_layer_cuda [--shapes 70b,405b,tiny] [--samples 128] [--seqlen 2048]
 *                    [--chunk 2] [--gpus 16] [--stages 2] [--busbw 400] [--rate-size 8192]
 */
#include "kernels/backend.h"
#include "kernels/cuda/cuda_ops.h"
#include "kernels/quant.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define GiB 1073741824.0

static const fptq_backend *G;

#define CHECK(expr)                                                                 \
    do {                                                                            \
        fptq_status st_ = (expr);                                                   \
        if (st_ != FPTQ_OK) {                                                       \
            fprintf(stderr, "bench: %s:%d: %s: %s\n", __FILE__, __LINE__, #expr,    \
                    fptq_last_error());                                             \
            return st_;                                                             \
        }                                                                           \
    } while (0)

typedef struct shape {
    const char *name;
    int64_t H, I, nh, nkv, hd;
} shape;

static const shape SHAPES[] = {
    {"70b", 8192, 28672, 64, 8, 128},
    {"405b", 16384, 53248, 128, 8, 128},
    {"tiny", 256, 688, 4, 2, 64}, /* a smoke test of the code paths, in seconds (--shapes tiny) */
};

/* ---- rates measured here -------------------------------------------------------------- */

typedef struct rates {
    double sgemm, bf16, h2d, d2h; /* FLOP/s, FLOP/s, byte/s, byte/s */
} rates;

static fptq_status measure_rates(rates *r, int64_t n)
{
    float *A = NULL, *B = NULL, *Cm = NULL;
    uint16_t *Ab = NULL, *Bb = NULL;
    void *host = NULL, *dev = NULL;
    CHECK(G->mem_alloc((size_t)(n * n) * 4, "rate A", (void **)&A));
    CHECK(G->mem_alloc((size_t)(n * n) * 4, "rate B", (void **)&B));
    CHECK(G->mem_alloc((size_t)(n * n) * 4, "rate C", (void **)&Cm));
    CHECK(G->mem_alloc((size_t)(n * n) * 2, "rate A bf16", (void **)&Ab));
    CHECK(G->mem_alloc((size_t)(n * n) * 2, "rate B bf16", (void **)&Bb));
    CHECK(fptq_cuda_fill_uniform(A, n * n, 1, -1, 1));
    CHECK(fptq_cuda_fill_uniform(B, n * n, 2, -1, 1));
    CHECK(fptq_cuda_f32_to_bf16(A, n * n, Ab));
    CHECK(fptq_cuda_f32_to_bf16(B, n * n, Bb));
    double best32 = 1e30, best16 = 1e30;
    for (int k = 0; k < 4; k++) { /* the first warms up */
        CHECK(G->sync());
        double t0 = fptq_now();
        CHECK(G->linear(A, n, n, B, n, NULL, Cm));
        CHECK(G->sync());
        const double t32 = fptq_now() - t0;
        t0 = fptq_now();
        for (int j = 0; j < 4; j++)
            CHECK(fptq_cuda_linear_bf16(Ab, n, n, Bb, n, NULL, Cm));
        CHECK(G->sync());
        const double t16 = (fptq_now() - t0) / 4;
        if (k > 0) {
            best32 = t32 < best32 ? t32 : best32;
            best16 = t16 < best16 ? t16 : best16;
        }
    }
    r->sgemm = 2.0 * n * n * (double)n / best32;
    r->bf16 = 2.0 * n * n * (double)n / best16;
    G->mem_free(A), G->mem_free(B), G->mem_free(Cm), G->mem_free(Ab), G->mem_free(Bb);

    const size_t bytes = (size_t)(n * n) * 16; /* 1 GiB at n = 8192 */
    CHECK(fptq_cuda_host_alloc(bytes, "rate host buffer", &host));
    CHECK(G->mem_alloc(bytes, "rate device buffer", &dev));
    memset(host, 1, bytes);
    double bu = 1e30, bd = 1e30;
    for (int k = 0; k < 3; k++) {
        double t0 = fptq_now();
        CHECK(G->upload(dev, host, bytes));
        const double tu = fptq_now() - t0;
        t0 = fptq_now();
        CHECK(G->download(host, dev, bytes));
        const double td = fptq_now() - t0;
        bu = tu < bu ? tu : bu;
        bd = td < bd ? td : bd;
    }
    r->h2d = bytes / bu;
    r->d2h = bytes / bd;
    G->mem_free(dev);
    fptq_cuda_host_free(host);
    return FPTQ_OK;
}

/* ---- the layer ------------------------------------------------------------------------------ */

enum { L_QKV, L_O, L_GU, L_DOWN, N_LIN };
static const char *LIN_NAME[N_LIN] = {"q,k,v", "o", "gate,up", "down"};

typedef struct layer {
    shape s;
    int64_t kvd, rows[N_LIN], cols[N_LIN];
    uint16_t *W[N_LIN];      /* bf16 [rows, cols], q|k|v and gate|up stacked (one GPTQ each) */
    uint16_t *Wh[N_LIN];     /* the same, page-locked host: what "load" uploads */
    float *norm1, *norm2;
    linear_stats st[N_LIN];
    quant_tensor q[N_LIN];   /* device; codes freed once packed */
    int32_t *packed[N_LIN];  /* device int4 words */
    void *host_out[N_LIN];   /* page-locked: packed codes, scales, zeros */
    /* chunk buffers */
    float *xn, *qa, *ka, *va, *att, *o, *h, *gate, *up;
    uint16_t *xb;
    rope_table rt;
} layer;

static int64_t lin_params(const layer *L)
{
    int64_t p = 0;
    for (int i = 0; i < N_LIN; i++)
        p += L->rows[i] * L->cols[i];
    return p;
}

static void layer_dims(layer *L, const shape *s)
{
    memset(L, 0, sizeof *L);
    L->s = *s;
    L->kvd = s->nkv * s->hd;
    L->rows[L_QKV] = s->H + 2 * L->kvd, L->cols[L_QKV] = s->H;
    L->rows[L_O] = s->H, L->cols[L_O] = s->H;
    L->rows[L_GU] = 2 * s->I, L->cols[L_GU] = s->H;
    L->rows[L_DOWN] = s->H, L->cols[L_DOWN] = s->I;
}

static double chunk_bytes(const layer *L, int64_t c)
{
    const double H = (double)L->s.H, I = (double)L->s.I, kvd = (double)L->kvd;
    const double mx = H > I ? H : I;
    return (double)c * (4.0 * (5.0 * H + 2.0 * kvd + 2.0 * I) + 2.0 * mx);
}

/* Device bytes at the peak: weights and activations throughout, then the
 * larger of (statistics + forward chunk) and (statistics + the largest
 * GPTQ: fp32 weights, codes, packed words, inverse Hessian). */
static double plan_bytes(const layer *L, int64_t tokens, int64_t chunk_tokens, int64_t T)
{
    const double weights = 2.0 * (double)lin_params(L);
    double stats = 0.0, gptq = 0.0, packed = 0.0;
    for (int i = 0; i < N_LIN; i++) {
        const double r = (double)L->rows[i], c = (double)L->cols[i];
        stats += 4.0 * c * c + 12.0 * c;
        const double g = 5.0 * r * c + 4.0 * c * c + 2.0 * 4.0 * 128.0 * r;
        gptq = g > gptq ? g : gptq;
        packed += r * c / 2.0 + 8.0 * r * c / 128.0;
    }
    const double act = 4.0 * (double)tokens * (double)L->s.H;
    const double attn = 4.0 * (double)L->s.nkv * (double)T * (double)T;
    const double fwd = chunk_bytes(L, chunk_tokens) + attn;
    return weights + act + packed + stats + (fwd > gptq ? fwd : gptq);
}

static fptq_status layer_alloc(layer *L, int64_t chunk_tokens, int64_t seqlen)
{
    const shape *s = &L->s;
    const int64_t c = chunk_tokens, mx = s->H > s->I ? s->H : s->I;
    for (int i = 0; i < N_LIN; i++) {
        const size_t n = (size_t)(L->rows[i] * L->cols[i]);
        CHECK(G->mem_alloc(n * 2, "bf16 weights", (void **)&L->W[i]));
        CHECK(fptq_cuda_host_alloc(n * 2, "host bf16 weights", (void **)&L->Wh[i]));
        CHECK(fptq_cuda_stats_init(L->cols[i], &L->st[i]));
    }
    CHECK(G->mem_alloc((size_t)s->H * 4, "norm", (void **)&L->norm1));
    CHECK(G->mem_alloc((size_t)s->H * 4, "norm", (void **)&L->norm2));
    CHECK(G->mem_alloc((size_t)(c * s->H) * 4, "xn", (void **)&L->xn));
    CHECK(G->mem_alloc((size_t)(c * mx) * 2, "xb", (void **)&L->xb));
    CHECK(G->mem_alloc((size_t)(c * s->H) * 4, "q", (void **)&L->qa));
    CHECK(G->mem_alloc((size_t)(c * L->kvd) * 4, "k", (void **)&L->ka));
    CHECK(G->mem_alloc((size_t)(c * L->kvd) * 4, "v", (void **)&L->va));
    CHECK(G->mem_alloc((size_t)(c * s->H) * 4, "attention out", (void **)&L->att));
    CHECK(G->mem_alloc((size_t)(c * s->H) * 4, "o", (void **)&L->o));
    CHECK(G->mem_alloc((size_t)(c * s->H) * 4, "h", (void **)&L->h));
    CHECK(G->mem_alloc((size_t)(c * s->I) * 4, "gate", (void **)&L->gate));
    CHECK(G->mem_alloc((size_t)(c * s->I) * 4, "up", (void **)&L->up));
    rope_params rp = {.head_dim = s->hd, .theta = 500000.0, .factor = 8.0, .low_freq_factor = 1.0,
                      .high_freq_factor = 4.0, .original_max_position_embeddings = 8192};
    CHECK(rope_table_init(&rp, seqlen, &L->rt));
    return FPTQ_OK;
}

static void free_chunk_buffers(layer *L)
{
    float **f[] = {&L->xn, &L->qa, &L->ka, &L->va, &L->att, &L->o, &L->h, &L->gate, &L->up};
    for (size_t i = 0; i < sizeof f / sizeof f[0]; i++) {
        G->mem_free(*f[i]);
        *f[i] = NULL;
    }
    G->mem_free(L->xb);
    L->xb = NULL;
}

static void layer_free(layer *L)
{
    free_chunk_buffers(L);
    for (int i = 0; i < N_LIN; i++) {
        G->mem_free(L->W[i]);
        fptq_cuda_host_free(L->Wh[i]);
        fptq_cuda_host_free(L->host_out[i]);
        fptq_cuda_stats_free(&L->st[i]);
        fptq_cuda_quant_tensor_free(&L->q[i]);
        G->mem_free(L->packed[i]);
    }
    G->mem_free(L->norm1);
    G->mem_free(L->norm2);
    rope_table_free(&L->rt);
    memset(L, 0, sizeof *L);
}

/* Synthetic weights, uniform with variance 1/in (activations stay O(1)),
 * made on the GPU, kept in page-locked host memory for the timed upload. */
static fptq_status make_weights(layer *L)
{
    const int64_t piece = (int64_t)1 << 27;
    float *tmp = NULL;
    CHECK(G->mem_alloc((size_t)piece * 4, "weight generation", (void **)&tmp));
    for (int i = 0; i < N_LIN; i++) {
        const int64_t n = L->rows[i] * L->cols[i];
        const float a = (float)sqrt(3.0 / (double)L->cols[i]);
        for (int64_t p0 = 0; p0 < n; p0 += piece) {
            const int64_t m = n - p0 < piece ? n - p0 : piece;
            CHECK(fptq_cuda_fill_uniform(tmp, m, (uint64_t)(1000 * i) + (uint64_t)p0, -a, a));
            CHECK(fptq_cuda_f32_to_bf16(tmp, m, L->W[i] + p0));
        }
        CHECK(G->download(L->Wh[i], L->W[i], (size_t)n * 2));
    }
    G->mem_free(tmp);
    CHECK(fptq_cuda_fill_uniform(L->norm1, L->s.H, 7, 0.8f, 1.2f));
    CHECK(fptq_cuda_fill_uniform(L->norm2, L->s.H, 8, 0.8f, 1.2f));
    return G->sync();
}

static fptq_status linear_bf16(layer *L, const float *x, int64_t n, int64_t in, const uint16_t *W,
                               int64_t out, float *y)
{
    CHECK(fptq_cuda_f32_to_bf16(x, n * in, L->xb));
    return fptq_cuda_linear_bf16(L->xb, n, in, W, out, NULL, y);
}

/* The decoder layer on a chunk of whole sequences, X [c, H] in place when
 * write_out. Statistics of the four linears' inputs when with_stats. The
 * calibration pass needs no down projection: its output is not used (the
 * next layer is calibrated on the quantized layer's output). */
static fptq_status layer_forward(layer *L, float *X, int64_t c, int64_t T, int with_stats, int write_out)
{
    const shape *s = &L->s;
    const int64_t H = s->H, I = s->I, kvd = L->kvd, n_seq = c / T;
    const uint16_t *Wq = L->W[L_QKV], *Wk = Wq + H * H, *Wv = Wk + kvd * H;
    const uint16_t *Wg = L->W[L_GU], *Wu = Wg + I * H;
    CHECK(G->rmsnorm(X, c, H, L->norm1, 1e-5f, L->xn));
    if (with_stats)
        CHECK(fptq_cuda_stats_accumulate(&L->st[L_QKV], L->xn, c));
    CHECK(fptq_cuda_f32_to_bf16(L->xn, c * H, L->xb));
    CHECK(fptq_cuda_linear_bf16(L->xb, c, H, Wq, H, NULL, L->qa));
    CHECK(fptq_cuda_linear_bf16(L->xb, c, H, Wk, kvd, NULL, L->ka));
    CHECK(fptq_cuda_linear_bf16(L->xb, c, H, Wv, kvd, NULL, L->va));
    CHECK(G->rope(L->qa, n_seq, T, s->nh, &L->rt));
    CHECK(G->rope(L->ka, n_seq, T, s->nkv, &L->rt));
    CHECK(G->attention(L->qa, L->ka, L->va, n_seq, T, s->nh, s->nkv, s->hd, L->att));
    if (with_stats)
        CHECK(fptq_cuda_stats_accumulate(&L->st[L_O], L->att, c));
    CHECK(linear_bf16(L, L->att, c, H, L->W[L_O], H, L->o));
    CHECK(G->mem_copy(L->h, X, (size_t)(c * H) * 4));
    CHECK(G->add(L->h, L->o, c * H));
    CHECK(G->rmsnorm(L->h, c, H, L->norm2, 1e-5f, L->xn));
    if (with_stats)
        CHECK(fptq_cuda_stats_accumulate(&L->st[L_GU], L->xn, c));
    CHECK(fptq_cuda_f32_to_bf16(L->xn, c * H, L->xb));
    CHECK(fptq_cuda_linear_bf16(L->xb, c, H, Wg, I, NULL, L->gate));
    CHECK(fptq_cuda_linear_bf16(L->xb, c, H, Wu, I, NULL, L->up));
    CHECK(G->swiglu(L->gate, L->up, c * I));
    if (with_stats)
        CHECK(fptq_cuda_stats_accumulate(&L->st[L_DOWN], L->gate, c));
    if (write_out) {
        CHECK(linear_bf16(L, L->gate, c, I, L->W[L_DOWN], H, L->o));
        CHECK(G->add(L->h, L->o, c * H));
        CHECK(G->mem_copy(X, L->h, (size_t)(c * H) * 4));
    }
    return FPTQ_OK;
}

/* ---- one shape ---------------------------------------------------------------------------------- */

enum { P_LOAD, P_FWD_STATS, P_CHOL, P_GPTQ, P_FWD_Q, P_WRITE, N_PHASE };
static const char *PHASE_NAME[N_PHASE] = {"load (upload)", "forward + statistics", "Cholesky + inverse",
                                          "GPTQ", "forward, quantized", "write-back"};

typedef struct opts {
    int64_t samples, seqlen, chunk, rate_n;
    int gpus, stages;
    double busbw;
} opts;

static fptq_status run_shape(const shape *s, const opts *op, const rates *R)
{
    layer L;
    layer_dims(&L, s);
    const int64_t T = op->seqlen, ct = op->chunk * T;
    size_t free_b = 0, total_b = 0;
    CHECK(fptq_cuda_device_info(NULL, 0, &free_b, &total_b, NULL));
    /* room for cuBLAS / cuSOLVER workspaces and the allocator's slack */
    const double avail = (double)free_b * 0.95 - 2.0 * GiB;
    int64_t samples = op->samples;
    const double want = plan_bytes(&L, samples * T, ct, T);
    if (want > avail) {
        const double per_sample = 4.0 * (double)T * (double)s->H;
        const double fixed = plan_bytes(&L, 0, ct, T);
        int64_t fit = avail > fixed ? (int64_t)((avail - fixed) / per_sample) : 0;
        fit -= fit % op->chunk;
        printf("%s: %lld x %lld calibration tokens need %.1f GiB of device memory at the peak, "
               "%.1f GiB usable of %.1f free: using %lld samples (activations %.1f GiB per sample)\n",
               s->name, (long long)samples, (long long)T, want / GiB, avail / GiB, free_b / GiB,
               (long long)fit, per_sample / GiB);
        samples = fit;
        if (samples < op->chunk) {
            printf("| bench %s | all | SKIP: does not fit in this GPU's memory | - | - |\n", s->name);
            return FPTQ_OK;
        }
    }
    const int64_t N = samples * T;
    printf("%s: hidden %lld, intermediate %lld, heads %lld/%lld, %.2fG parameters in the layer's "
           "linears; %lld x %lld = %lld tokens, chunks of %lld; peak plan %.1f GiB of %.1f\n",
           s->name, (long long)s->H, (long long)s->I, (long long)s->nh, (long long)s->nkv,
           lin_params(&L) / 1e9, (long long)samples, (long long)T, (long long)N, (long long)ct,
           plan_bytes(&L, N, ct, T) / GiB, total_b / GiB);
    fflush(stdout);

    float *X = NULL;
    double t[N_PHASE] = {0}, flops[N_PHASE] = {0}, floor_s[N_PHASE] = {0};
    fptq_status st = layer_alloc(&L, ct, T);
    if (st == FPTQ_OK)
        st = make_weights(&L);
    if (st == FPTQ_OK)
        st = G->mem_alloc((size_t)N * (size_t)s->H * 4, "calibration activations", (void **)&X);
    if (st == FPTQ_OK)
        st = fptq_cuda_fill_uniform(X, N * s->H, 42, -1.0f, 1.0f);
    if (st == FPTQ_OK)
        st = G->sync();
    if (st != FPTQ_OK)
        goto out;

    const double P = (double)lin_params(&L), H = (double)s->H, I = (double)s->I;
    const double attn_flops = 2.0 * (double)T * (double)T * (double)s->hd * (double)s->nh * (double)samples;

    /* load: the layer's bf16 weights from page-locked host memory */
    double t0 = fptq_now();
    for (int i = 0; i < N_LIN; i++)
        if ((st = G->upload(L.W[i], L.Wh[i], (size_t)(L.rows[i] * L.cols[i]) * 2)) != FPTQ_OK)
            goto out;
    t[P_LOAD] = fptq_now() - t0;
    floor_s[P_LOAD] = 2.0 * P / R->h2d;

    /* forward + statistics, then H = 2 X^T X / n in place */
    t0 = fptq_now();
    for (int64_t c0 = 0; c0 < N; c0 += ct)
        if ((st = layer_forward(&L, X + c0 * s->H, ct, T, 1, 0)) != FPTQ_OK)
            goto out;
    for (int i = 0; i < N_LIN; i++)
        if ((st = fptq_cuda_stats_hessian(&L.st[i], L.st[i].xtx)) != FPTQ_OK)
            goto out;
    if ((st = G->sync()) != FPTQ_OK)
        goto out;
    t[P_FWD_STATS] = fptq_now() - t0;
    {
        const double lin = 2.0 * (double)N * (P - H * I); /* no down projection */
        const double syrk = (double)N * (3.0 * H * H + I * I);
        flops[P_FWD_STATS] = lin + attn_flops + syrk;
        floor_s[P_FWD_STATS] = lin / R->bf16 + (attn_flops + syrk) / R->sgemm;
    }
    free_chunk_buffers(&L);

    /* GPTQ of each linear (q,k,v and gate,up share their Hessians and go as one) */
    quant_spec spec = {.format = QFMT_INT, .bits = 4, .group_size = 128, .sym = 0};
    gptq_opts go = {.damp_percent = 0.01f, .block_size = 128};
    for (int i = 0; i < N_LIN; i++) {
        const int64_t r = L.rows[i], c = L.cols[i], pc = quant_packed_cols(c, 4);
        float *Wf = NULL;
        fptq_cuda_gptq_times gt;
        gptq_result res;
        t0 = fptq_now();
        if ((st = G->mem_alloc((size_t)(r * c) * 4, "GPTQ fp32 weights", (void **)&Wf)) != FPTQ_OK ||
            (st = fptq_cuda_bf16_to_f32(L.W[i], r * c, Wf)) != FPTQ_OK ||
            (st = fptq_cuda_quant_tensor_alloc(&spec, r, c, 0, &L.q[i])) != FPTQ_OK ||
            (st = fptq_cuda_gptq_quantize_inplace(Wf, r, c, L.st[i].xtx, &go, &L.q[i], &res, &gt)) != FPTQ_OK ||
            (st = fptq_cuda_f32_to_bf16(Wf, r * c, L.W[i])) != FPTQ_OK ||
            (st = G->mem_alloc((size_t)(r * pc) * 4, "packed codes", (void **)&L.packed[i])) != FPTQ_OK ||
            (st = fptq_cuda_quant_pack_int32(L.q[i].codes, r, c, 4, L.packed[i])) != FPTQ_OK ||
            (st = G->sync()) != FPTQ_OK) {
            G->mem_free(Wf);
            goto out;
        }
        const double total = fptq_now() - t0;
        G->mem_free(Wf);
        G->mem_free(L.q[i].codes);
        L.q[i].codes = NULL;
        fptq_cuda_stats_free(&L.st[i]);
        t[P_CHOL] += gt.factor_s;
        t[P_GPTQ] += total - gt.factor_s;
        const double chol = 2.0 * (double)c * c * c / 3.0, trailing = (double)r * c * c;
        flops[P_CHOL] += chol;
        flops[P_GPTQ] += trailing;
        floor_s[P_CHOL] += chol / R->sgemm;
        floor_s[P_GPTQ] += trailing / R->sgemm;
        printf("  GPTQ %-8s [%6lld x %6lld]: factor %.3f s, blocks %.3f s, other %.3f s, loss %.4g, damp %g\n",
               LIN_NAME[i], (long long)r, (long long)c, gt.factor_s, gt.blocks_s,
               total - gt.factor_s - gt.blocks_s, res.loss, (double)res.damp);
        fflush(stdout);
    }

    /* forward with the quantized (dequantized, bf16) weights: the next layer's input, in place */
    {
        const int64_t mx = s->H > s->I ? s->H : s->I;
        st = G->mem_alloc((size_t)(ct * s->H) * 4, "xn", (void **)&L.xn);
        if (st == FPTQ_OK) st = G->mem_alloc((size_t)(ct * mx) * 2, "xb", (void **)&L.xb);
        if (st == FPTQ_OK) st = G->mem_alloc((size_t)(ct * s->H) * 4, "q", (void **)&L.qa);
        if (st == FPTQ_OK) st = G->mem_alloc((size_t)(ct * L.kvd) * 4, "k", (void **)&L.ka);
        if (st == FPTQ_OK) st = G->mem_alloc((size_t)(ct * L.kvd) * 4, "v", (void **)&L.va);
        if (st == FPTQ_OK) st = G->mem_alloc((size_t)(ct * s->H) * 4, "att", (void **)&L.att);
        if (st == FPTQ_OK) st = G->mem_alloc((size_t)(ct * s->H) * 4, "o", (void **)&L.o);
        if (st == FPTQ_OK) st = G->mem_alloc((size_t)(ct * s->H) * 4, "h", (void **)&L.h);
        if (st == FPTQ_OK) st = G->mem_alloc((size_t)(ct * s->I) * 4, "gate", (void **)&L.gate);
        if (st == FPTQ_OK) st = G->mem_alloc((size_t)(ct * s->I) * 4, "up", (void **)&L.up);
        if (st == FPTQ_OK) st = G->sync();
        if (st != FPTQ_OK)
            goto out;
    }
    t0 = fptq_now();
    for (int64_t c0 = 0; c0 < N; c0 += ct)
        if ((st = layer_forward(&L, X + c0 * s->H, ct, T, 0, 1)) != FPTQ_OK)
            goto out;
    if ((st = G->sync()) != FPTQ_OK)
        goto out;
    t[P_FWD_Q] = fptq_now() - t0;
    flops[P_FWD_Q] = 2.0 * (double)N * P + attn_flops;
    floor_s[P_FWD_Q] = 2.0 * (double)N * P / R->bf16 + attn_flops / R->sgemm;

    /* write-back: packed int4 codes, scales and zeros to page-locked host memory */
    {
        double bytes = 0.0;
        for (int i = 0; i < N_LIN; i++) {
            const int64_t r = L.rows[i], pc = quant_packed_cols(L.cols[i], 4), ng = L.q[i].n_groups;
            const size_t b = (size_t)(r * pc) * 4 + (size_t)(r * ng) * 8;
            if ((st = fptq_cuda_host_alloc(b, "written layer", &L.host_out[i])) != FPTQ_OK)
                goto out;
        }
        t0 = fptq_now();
        for (int i = 0; i < N_LIN; i++) {
            const int64_t r = L.rows[i], pc = quant_packed_cols(L.cols[i], 4), ng = L.q[i].n_groups;
            char *h = L.host_out[i];
            if ((st = G->download(h, L.packed[i], (size_t)(r * pc) * 4)) != FPTQ_OK ||
                (st = G->download(h + (size_t)(r * pc) * 4, L.q[i].scales, (size_t)(r * ng) * 4)) != FPTQ_OK ||
                (st = G->download(h + (size_t)(r * pc) * 4 + (size_t)(r * ng) * 4, L.q[i].zeros,
                                  (size_t)(r * ng) * 4)) != FPTQ_OK)
                goto out;
            bytes += (double)(r * pc) * 4 + (double)(r * ng) * 8;
        }
        t[P_WRITE] = fptq_now() - t0;
        floor_s[P_WRITE] = bytes / R->d2h;
    }

    {
        double tt = 0.0, tf = 0.0;
        printf("| bench %s | phase | seconds | floor s | ratio | TFLOP |\n|---|---|---|---|---|---|\n", s->name);
        for (int p = 0; p < N_PHASE; p++) {
            printf("| bench %s | %s | %.3f | %.3f | %.2f | %.1f |\n", s->name, PHASE_NAME[p], t[p],
                   floor_s[p], floor_s[p] > 0 ? t[p] / floor_s[p] : 0.0, flops[p] / 1e12);
            tt += t[p];
            tf += floor_s[p];
        }
        printf("| bench %s | layer total (%lld tokens) | %.3f | %.3f | %.2f | - |\n", s->name, (long long)N,
               tt, tf, tt / tf);

        /* the whole model: 126 layers, `stages` stages of gpus/stages ranks; each
         * rank forwards 1/G of the calibration samples, the Hessians are summed
         * over the stage (NCCL all-reduce at busbw), every rank factors every
         * Hessian (not split), GPTQ rows and the write are split G ways */
        if (!strcmp(s->name, "405b")) {
            const int Gs = op->gpus / op->stages;
            const double full_tokens = (double)op->samples * (double)T;
            const double tok_scale = full_tokens / Gs / (double)N;
            const double hess_bytes = 4.0 * (3.0 * H * H + I * I);
            const double allreduce = 2.0 * (Gs - 1) / Gs * hess_bytes / (op->busbw * 1e9);
            const double per_layer = t[P_LOAD] + t[P_FWD_STATS] * tok_scale + allreduce + t[P_CHOL] +
                                     t[P_GPTQ] / Gs + t[P_FWD_Q] * tok_scale + t[P_WRITE] / Gs;
            const int layers = 126, per_stage = layers / op->stages;
            const double fp_fwd = t[P_FWD_Q] * tok_scale; /* a full-precision pass costs a quantized one */
            printf("405B on %d GPUs (%d stages x %d): per layer %.1f s = load %.1f + fwd+stats %.1f + "
                   "all-reduce %.1f (%.1f GB at %.0f GB/s bus) + Cholesky %.1f + GPTQ %.1f + fwd %.1f + "
                   "write %.1f, for %.0f calibration tokens (%.0f per rank)\n",
                   op->gpus, op->stages, Gs, per_layer, t[P_LOAD], t[P_FWD_STATS] * tok_scale, allreduce,
                   hess_bytes / 1e9, op->busbw, t[P_CHOL], t[P_GPTQ] / Gs, t[P_FWD_Q] * tok_scale,
                   t[P_WRITE] / Gs, full_tokens, full_tokens / Gs);
            printf("| extrapolation 405b | --propagate quantized (stages in turn) | %.1f min | - | - | - |\n",
                   layers * per_layer / 60.0);
            printf("| extrapolation 405b | --propagate stage (stages at once, after a %d-layer fp pass) | "
                   "%.1f min | - | - | - |\n", per_stage, (per_stage * fp_fwd + per_stage * per_layer) / 60.0);
            printf("405B layer within 2x of its floor: %s (%.2fx)\n", tt <= 2.0 * tf ? "yes" : "no", tt / tf);
        }
    }
out:
    if (st != FPTQ_OK)
        fprintf(stderr, "bench %s: %s\n", s->name, fptq_last_error());
    G->mem_free(X);
    layer_free(&L);
    return st;
}

int main(int argc, char **argv)
{
    opts op = {.samples = 128, .seqlen = 2048, .chunk = 2, .rate_n = 8192, .gpus = 16, .stages = 2,
               .busbw = 400.0};
    const char *shapes = "70b,405b";
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!v) {
            fprintf(stderr, "bench_layer_cuda: %s needs a value\n", a);
            return 2;
        }
        if (!strcmp(a, "--shapes")) shapes = v;
        else if (!strcmp(a, "--samples")) op.samples = atoll(v);
        else if (!strcmp(a, "--seqlen")) op.seqlen = atoll(v);
        else if (!strcmp(a, "--chunk")) op.chunk = atoll(v);
        else if (!strcmp(a, "--rate-size")) op.rate_n = atoll(v);
        else if (!strcmp(a, "--gpus")) op.gpus = atoi(v);
        else if (!strcmp(a, "--stages")) op.stages = atoi(v);
        else if (!strcmp(a, "--busbw")) op.busbw = atof(v);
        else {
            fprintf(stderr, "bench_layer_cuda: unknown option %s\n", a);
            return 2;
        }
        i++;
    }
    if (op.samples < 1 || op.seqlen < 1 || op.chunk < 1 || op.gpus < op.stages || op.stages < 1 ||
        op.rate_n < 64) {
        fprintf(stderr, "bench_layer_cuda: bad sizes\n");
        return 2;
    }
    if (op.chunk > op.samples)
        op.chunk = op.samples;
    if (op.samples % op.chunk != 0) {
        op.samples -= op.samples % op.chunk;
        printf("samples rounded down to %lld, a multiple of the chunk (%lld sequences)\n",
               (long long)op.samples, (long long)op.chunk);
    }
    char why[256] = "";
    if (!fptq_cuda_available(why, sizeof why) || !(G = fptq_backend_cuda_table())) {
        printf("SKIP: no usable CUDA device (%s)\n", why[0] ? why : "built without CUDA");
        return 77;
    }
    char name[256] = "";
    size_t free_b = 0, total_b = 0;
    int sms = 0;
    if (fptq_cuda_device_info(name, sizeof name, &free_b, &total_b, &sms) != FPTQ_OK) {
        fprintf(stderr, "bench: %s\n", fptq_last_error());
        return 1;
    }
    rates R;
    if (measure_rates(&R, op.rate_n) != FPTQ_OK)
        return 1;
    printf("%s, %d SMs, %.1f GiB: sgemm fp32 (no TF32) %.1f TFLOP/s, bf16 GEMM (fp32 accumulate) "
           "%.1f TFLOP/s, host->device %.1f GB/s, device->host %.1f GB/s (page-locked)\n",
           name, sms, total_b / GiB, R.sgemm / 1e12, R.bf16 / 1e12, R.h2d / 1e9, R.d2h / 1e9);
    printf("floor: each phase's FLOPs over the rate of its precision (bf16 for the layer's linears, "
           "fp32 for attention, X^T X, Cholesky, GPTQ), bytes over the copy rates for load and write\n");
    fflush(stdout);
    int rc = 0;
    for (size_t k = 0; k < sizeof SHAPES / sizeof SHAPES[0]; k++) {
        if (!strstr(shapes, SHAPES[k].name))
            continue;
        if (run_shape(&SHAPES[k], &op, &R) != FPTQ_OK) {
            rc = 1;
            fptq_clear_error();
        }
    }
    fptq_cuda_shutdown();
    return rc;
}
