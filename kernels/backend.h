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
    int host_memory;   /* 1: the backend's memory is the host's, so host data can be used in place */

    /* ---- weight streaming (worker/layer_stream.c): page-locked host memory,
     * and uploads on a second stream that overlap the ops' work. mark(slot)
     * notes the point the queued ops have reached; upload_async copies once
     * the ops have passed slot's last mark, and returns at once (src must
     * stay untouched until uploads_sync); wait_uploads makes the ops queued
     * after it wait for every upload queued so far, without blocking the
     * host. upload_async may be called from another host thread than the
     * ops (one at a time). slot is 0 or 1. Host backends: calloc / free,
     * memcpy, no-ops. mem_info: free and total bytes (NULL: not known). ---- */
    fptq_status (*host_alloc)(size_t bytes, const char *what, void **out);
    void (*host_free)(void *p);
    fptq_status (*mark)(int slot);
    fptq_status (*upload_async)(void *dst, const void *src, size_t bytes, int slot);
    fptq_status (*wait_uploads)(void);
    fptq_status (*uploads_sync)(void);
    fptq_status (*mem_info)(size_t *free_bytes, size_t *total_bytes);

    /* ---- calibration and quantization (worker/layer_quant.c), the twins of
     * quant.h's functions. Statistics arrays, X, W, Q and H are in the
     * backend's space (the token count of a linear_stats is a host field);
     * quantized tensors, clip ratios and scales s are host memory: they go
     * to the checkpoint and come from the host-side searches. ---- */
    fptq_status (*stats_init)(int64_t cols, linear_stats *s);
    void (*stats_free)(linear_stats *s);
    fptq_status (*stats_reset)(linear_stats *s);
    fptq_status (*stats_accumulate)(linear_stats *s, const float *X, int64_t rows);
    fptq_status (*stats_hessian)(const linear_stats *s, float *H);
    /* GPTQ in two steps (quant.h's gptq_hinv): prepare once per Hessian H
     * (which must stay untouched until release), then the rows of every
     * linear that reads the same input. prepare factors H (both backends)
     * and reports the damping it needed in r (damp, retries). */
    fptq_status (*gptq_prepare)(const float *H, int64_t cols, const gptq_opts *o, void **plan,
                                gptq_result *r);
    fptq_status (*gptq_rows)(void *plan, const float *W, int64_t rows, int64_t cols,
                             const gptq_opts *o, quant_tensor *q, gptq_result *r);
    void (*gptq_release)(void *plan);                           /* NULL is a no-op */
    fptq_status (*rtn)(const float *W, int64_t rows, int64_t cols, const float *clip,
                       quant_tensor *q);
    fptq_status (*dequantize)(const quant_tensor *q, float *W);
    /* tr((W - Q) H (W - Q)^T) over W, Q [rows, cols]: the output error every method is scored by */
    fptq_status (*proxy_loss)(const float *W, const float *Q, int64_t rows, int64_t cols,
                              const float *H, double *loss);
    /* X[rows, cols] /= s per column (smooth.h scale_input_columns) */
    fptq_status (*scale_columns)(float *X, int64_t rows, int64_t cols, const float *s);
    /* out[i] = logits[i, targets[i] - v0] (row stride cols) for targets in [v0, v0 + cols):
     * the target logits from one vocabulary block; targets and out in the backend's space. */
    fptq_status (*pick_targets)(const float *logits, int64_t n, int64_t cols, int64_t v0,
                                const int32_t *targets, double *out);
} fptq_backend;

extern const fptq_backend fptq_backend_cpu;

/* The CUDA table (kernels/cuda/cuda_backend.cu), whose ops take device
 * pointers; NULL in a build without CUDA. */
const fptq_backend *fptq_backend_cuda_table(void);

/* "cpu", "cuda" or "auto" (CUDA where a device is usable, else the CPU). */
fptq_status fptq_backend_select(const char *name, const fptq_backend **out);

/* "cpu", "cuda (fp32 GEMMs)": the backend as the progress lines name it. */
void fptq_backend_describe(const fptq_backend *be, char *buf, size_t cap);

/* GPUs on this node the backend can use (0 for host backends). */
int fptq_backend_devices(const fptq_backend *be);

/* Binds this process to its GPU before any other CUDA work: device
 * local_rank % (devices on the node), and FPTQ_CUDA_GEMM (fp32, tf32 or
 * bf16: how `linear` multiplies; default fp32). A no-op for host backends. */
fptq_status fptq_backend_bind(const fptq_backend *be, int local_rank);

/* Whether a CUDA device can be used; on no, why (no CUDA build, no device). */
int fptq_cuda_available(char *why, size_t why_cap);

#endif
