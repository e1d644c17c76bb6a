/*
 * The compute backend: a table of the math ops a decoder layer needs. The
 * CPU backend (OpenBLAS) is the reference; a CUDA backend fills the same
 * table. Pointers passed to an op live in the backend's memory space.
 * Matrices are row-major; weights W are [out, in] as in safetensors.
 */
#ifndef FPTQ_BACKEND_H
#define FPTQ_BACKEND_H

#include "../common/status.h"
#include "quant.h"

/* Rotary embedding parameters (HF rotate-half convention). */
typedef struct rope_params {
    int64_t head_dim;
    double theta;
    /* llama3 frequency scaling; factor == 0 means none */
    double factor, low_freq_factor, high_freq_factor;
    int64_t original_max_position_embeddings;
} rope_params;

/* cos / sin of position x frequency for positions [0, seq_len):
 * [seq_len, head_dim / 2] each, host memory. */
typedef struct rope_table {
    int64_t seq_len, half;
    float *cos, *sin;
} rope_table;

fptq_status rope_table_init(const rope_params *p, int64_t seq_len, rope_table *t);
void rope_table_free(rope_table *t);
/* The per-pair inverse frequencies after llama3 scaling, half of them. */
void rope_inv_freq(const rope_params *p, double *inv_freq);

typedef struct fptq_backend {
    const char *name;

    /* Y[n, out] = X[n, in] W[out, in]^T (+ bias[out] when bias != NULL) */
    fptq_status (*linear)(const float *X, int64_t n, int64_t in, const float *W, int64_t out,
                          const float *bias, float *Y);
    /* Y[i, :] = X[i, :] / sqrt(mean(X[i, :]^2) + eps) * w; Y may equal X */
    fptq_status (*rmsnorm)(const float *X, int64_t n, int64_t dim, const float *w, float eps,
                           float *Y);
    /* In place on X[n_seq * seq_len, n_heads * head_dim]; row r is at position r % seq_len. */
    fptq_status (*rope)(float *X, int64_t n_seq, int64_t seq_len, int64_t n_heads,
                        const rope_table *rt);
    /* Causal grouped-query attention, each sequence on its own.
     * Q, O: [n_seq * seq_len, n_heads * head_dim]; K, V: [.., n_kv_heads * head_dim]. */
    fptq_status (*attention)(const float *Q, const float *K, const float *V, int64_t n_seq,
                             int64_t seq_len, int64_t n_heads, int64_t n_kv_heads,
                             int64_t head_dim, float *O);
    /* gate[i] = silu(gate[i]) * up[i] */
    fptq_status (*swiglu)(float *gate, const float *up, int64_t n);
    /* x[i] += y[i] */
    fptq_status (*add)(float *x, const float *y, int64_t n);
    /* Fake-quantizes a linear's input X[rows, cols] in place (quant.h act_quant_apply). */
    fptq_status (*act_quant)(const act_quant *a, float *X, int64_t rows, int64_t cols);
    /* Online log-sum-exp over column blocks: folds logits[n, cols] (row stride ld)
     * into the running row max m[n] and sum s[n] = sum exp(l - m). Start with m = -inf, s = 0. */
    fptq_status (*logsumexp_accumulate)(const float *logits, int64_t n, int64_t cols, int64_t ld,
                                        double *m, double *s);

    /* ---- memory in the backend's space. The CPU's are calloc / free / memcpy;
     * the CUDA backend's are device memory, and its ops above are queued on one
     * stream: upload and download wait for them, sync reports their failures.
     * The data pointers of the ops live in this space; the parameter structs
     * (rope_table, act_quant) are host memory on every backend. ---- */
    /* bytes of zeroed memory (0 bytes gives a valid pointer) */
    fptq_status (*mem_alloc)(size_t bytes, const char *what, void **out);
    void (*mem_free)(void *p);                                  /* NULL is a no-op */
    fptq_status (*upload)(void *dst, const void *host_src, size_t bytes);
    fptq_status (*download)(void *host_dst, const void *src, size_t bytes);
    fptq_status (*mem_copy)(void *dst, const void *src, size_t bytes); /* within the space */
    fptq_status (*sync)(void);
} fptq_backend;

extern const fptq_backend fptq_backend_cpu;

/* The CUDA table (kernels/cuda/cuda_backend.cu), whose ops take device
 * pointers; NULL in a build without CUDA. For the GPU parity test and the
 * benchmark: the pipeline does not run on it yet (fptq_backend_select). */
const fptq_backend *fptq_backend_cuda_table(void);

/* "cpu", "cuda" or "auto" (CUDA where a device is usable, else the CPU). */
fptq_status fptq_backend_select(const char *name, const fptq_backend **out);

/* Whether a CUDA device can be used; on no, why (no CUDA build, no device). */
int fptq_cuda_available(char *why, size_t why_cap);

#endif
