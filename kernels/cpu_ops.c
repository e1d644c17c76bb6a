/*
 * CPU backend: the reference implementation of every op in backend.h.
 * Matrix products go through OpenBLAS; everything else is plain loops
 * accumulating in double where a sum runs over a whole row.
 */
#include "backend.h"
#include "smooth.h"

#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

static fptq_status cpu_linear(const float *X, int64_t n, int64_t in, const float *W, int64_t out,
                              const float *bias, float *Y)
{
    if (n <= 0 || out <= 0)
        return FPTQ_OK;
    if (n > INT32_MAX || in > INT32_MAX || out > INT32_MAX)
        return FPTQ_FAIL(FPTQ_ERR_UNSUPPORTED, "linear: dimension over 2^31 (%lld x %lld x %lld)",
                         (long long)n, (long long)in, (long long)out);
    if (bias) {
        for (int64_t i = 0; i < n; i++)
            memcpy(Y + i * out, bias, (size_t)out * sizeof(float));
    }
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)n, (int)out, (int)in, 1.0f, X,
                (int)in, W, (int)in, bias ? 1.0f : 0.0f, Y, (int)out);
    return FPTQ_OK;
}

static fptq_status cpu_rmsnorm(const float *X, int64_t n, int64_t dim, const float *w, float eps,
                               float *Y)
{
    for (int64_t i = 0; i < n; i++) {
        const float *x = X + i * dim;
        double ss = 0.0;
        for (int64_t j = 0; j < dim; j++)
            ss += (double)x[j] * x[j];
        float r = (float)(1.0 / sqrt(ss / (double)dim + (double)eps));
        float *y = Y + i * dim;
        for (int64_t j = 0; j < dim; j++)
            y[j] = x[j] * r * w[j];
    }
    return FPTQ_OK;
}

static fptq_status cpu_rope(float *X, int64_t n_seq, int64_t seq_len, int64_t n_heads,
                            const rope_table *rt)
{
    if (seq_len > rt->seq_len)
        return FPTQ_FAIL(FPTQ_ERR_INTERNAL, "rope: sequence length %lld over table length %lld",
                         (long long)seq_len, (long long)rt->seq_len);
    const int64_t half = rt->half, hd = 2 * half, width = n_heads * hd;
    for (int64_t r = 0; r < n_seq * seq_len; r++) {
        const float *c = rt->cos + (r % seq_len) * half;
        const float *s = rt->sin + (r % seq_len) * half;
        for (int64_t h = 0; h < n_heads; h++) {
            float *x = X + r * width + h * hd;
            for (int64_t i = 0; i < half; i++) {
                float x1 = x[i], x2 = x[i + half];
                x[i] = x1 * c[i] - x2 * s[i];
                x[i + half] = x2 * c[i] + x1 * s[i];
            }
        }
    }
    return FPTQ_OK;
}

/* For each sequence and head: S = Q_h K_g^T / sqrt(d), causal softmax, O_h = P V_g,
 * where g = h / (n_heads / n_kv_heads) is the head's key/value group. */
static fptq_status cpu_attention(const float *Q, const float *K, const float *V, int64_t n_seq,
                                 int64_t T, int64_t n_heads, int64_t n_kv_heads, int64_t hd,
                                 float *O)
{
    if (n_kv_heads <= 0 || n_heads % n_kv_heads != 0)
        return FPTQ_FAIL(FPTQ_ERR_INTERNAL, "attention: %lld heads not a multiple of %lld kv heads",
                         (long long)n_heads, (long long)n_kv_heads);
    if (T > 46340) /* T*T must fit an int for cblas */
        return FPTQ_FAIL(FPTQ_ERR_UNSUPPORTED, "attention: sequence length %lld too long", (long long)T);
    float *S;
    FPTQ_TRY(fptq_calloc((size_t)(T * T), sizeof(float), "attention scores", &S));
    const int64_t q_ld = n_heads * hd, kv_ld = n_kv_heads * hd, group = n_heads / n_kv_heads;
    const float scale = (float)(1.0 / sqrt((double)hd));
    for (int64_t b = 0; b < n_seq; b++) {
        const float *Qb = Q + b * T * q_ld, *Kb = K + b * T * kv_ld, *Vb = V + b * T * kv_ld;
        float *Ob = O + b * T * q_ld;
        for (int64_t h = 0; h < n_heads; h++) {
            const int64_t g = h / group;
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)T, (int)T, (int)hd, scale,
                        Qb + h * hd, (int)q_ld, Kb + g * hd, (int)kv_ld, 0.0f, S, (int)T);
            for (int64_t i = 0; i < T; i++) {
                float *row = S + i * T;
                float mx = row[0];
                for (int64_t j = 1; j <= i; j++)
                    mx = row[j] > mx ? row[j] : mx;
                double sum = 0.0;
                for (int64_t j = 0; j <= i; j++) {
                    row[j] = expf(row[j] - mx);
                    sum += row[j];
                }
                const float inv = (float)(1.0 / sum);
                for (int64_t j = 0; j <= i; j++)
                    row[j] *= inv;
                for (int64_t j = i + 1; j < T; j++)
                    row[j] = 0.0f;
            }
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)T, (int)hd, (int)T, 1.0f, S,
                        (int)T, Vb + g * hd, (int)kv_ld, 0.0f, Ob + h * hd, (int)q_ld);
        }
    }
    free(S);
    return FPTQ_OK;
}

static fptq_status cpu_swiglu(float *gate, const float *up, int64_t n)
{
    for (int64_t i = 0; i < n; i++) {
        float g = gate[i];
        gate[i] = g / (1.0f + expf(-g)) * up[i];
    }
    return FPTQ_OK;
}

static fptq_status cpu_add(float *x, const float *y, int64_t n)
{
    for (int64_t i = 0; i < n; i++)
        x[i] += y[i];
    return FPTQ_OK;
}

static fptq_status cpu_logsumexp_accumulate(const float *logits, int64_t n, int64_t cols,
                                            int64_t ld, double *m, double *s)
{
    for (int64_t i = 0; i < n; i++) {
        const float *l = logits + i * ld;
        double mx = m[i];
        for (int64_t j = 0; j < cols; j++)
            mx = l[j] > mx ? l[j] : mx;
        double sum = isinf(m[i]) ? 0.0 : s[i] * exp(m[i] - mx);
        for (int64_t j = 0; j < cols; j++)
            sum += exp((double)l[j] - mx);
        m[i] = mx;
        s[i] = sum;
    }
    return FPTQ_OK;
}

static fptq_status cpu_act_quant(const act_quant *a, float *X, int64_t rows, int64_t cols)
{
    act_quant_apply(a, X, rows, cols);
    return FPTQ_OK;
}

/* ---- memory: the host's own ------------------------------------------------ */

static fptq_status cpu_mem_alloc(size_t bytes, const char *what, void **out)
{
    return fptq_calloc(bytes, 1, what, out);
}

static void cpu_mem_free(void *p) { free(p); }

static fptq_status cpu_memcpy(void *dst, const void *src, size_t bytes)
{
    if (bytes)
        memcpy(dst, src, bytes);
    return FPTQ_OK;
}

static fptq_status cpu_sync(void) { return FPTQ_OK; }
static fptq_status cpu_mark(int slot) { return FPTQ_OK; }
static fptq_status cpu_upload_async(void *dst, const void *src, size_t bytes, int slot)
{
    return cpu_memcpy(dst, src, bytes);
}

/* ---- calibration and quantization: quant.h's functions on host memory ---------- */

static fptq_status cpu_stats_reset(linear_stats *s)
{
    linear_stats_reset(s);
    return FPTQ_OK;
}

static fptq_status cpu_gptq_prepare(const float *H, int64_t cols, const gptq_opts *o, void **plan,
                                    gptq_result *r)
{
    gptq_hinv *h;
    *plan = NULL;
    FPTQ_TRY(fptq_calloc(1, sizeof *h, "GPTQ plan", &h));
    fptq_status st = gptq_hinv_compute(H, cols, o, h);
    if (st != FPTQ_OK) {
        free(h);
        return st;
    }
    if (r) {
        r->damp = h->damp;
        r->retries = h->retries;
        r->loss = 0.0;
    }
    *plan = h;
    return FPTQ_OK;
}

static fptq_status cpu_gptq_rows(void *plan, const float *W, int64_t rows, int64_t cols,
                                 const gptq_opts *o, quant_tensor *q, gptq_result *r)
{
    return gptq_quantize_hinv(W, rows, cols, plan, o, q, NULL, r);
}

static void cpu_gptq_release(void *plan)
{
    if (plan)
        gptq_hinv_free(plan);
    free(plan);
}

static fptq_status cpu_dequantize(const quant_tensor *q, float *W)
{
    quant_dequantize(q, W);
    return FPTQ_OK;
}

static fptq_status cpu_proxy_loss(const float *W, const float *Q, int64_t rows, int64_t cols,
                                  const float *H, double *loss)
{
    float *D = NULL, *DH = NULL;
    fptq_status st;
    FPTQ_TRY_GOTO(fptq_calloc((size_t)(rows * cols), sizeof(float), "weight error", &D), st, done);
    FPTQ_TRY_GOTO(fptq_calloc((size_t)(rows * cols), sizeof(float), "weight error x H", &DH), st, done);
    for (int64_t i = 0; i < rows * cols; i++)
        D[i] = W[i] - Q[i];
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)rows, (int)cols, (int)cols, 1.0f, D,
                (int)cols, H, (int)cols, 0.0f, DH, (int)cols);
    double sum = 0.0;
    for (int64_t i = 0; i < rows * cols; i++)
        sum += (double)D[i] * DH[i];
    *loss = sum;
    st = FPTQ_OK;
done:
    free(D);
    free(DH);
    return st;
}

static fptq_status cpu_scale_columns(float *X, int64_t rows, int64_t cols, const float *s)
{
    scale_input_columns(X, rows, cols, s);
    return FPTQ_OK;
}

static fptq_status cpu_pick_targets(const float *logits, int64_t n, int64_t cols, int64_t v0,
                                    const int32_t *targets, double *out)
{
    for (int64_t i = 0; i < n; i++)
        if (targets[i] >= v0 && targets[i] < v0 + cols)
            out[i] = logits[i * cols + (targets[i] - v0)];
    return FPTQ_OK;
}

const fptq_backend fptq_backend_cpu = {
    .name = "cpu",
    .linear = cpu_linear,
    .rmsnorm = cpu_rmsnorm,
    .rope = cpu_rope,
    .attention = cpu_attention,
    .swiglu = cpu_swiglu,
    .add = cpu_add,
    .act_quant = cpu_act_quant,
    .logsumexp_accumulate = cpu_logsumexp_accumulate,
    .mem_alloc = cpu_mem_alloc,
    .mem_free = cpu_mem_free,
    .upload = cpu_memcpy,
    .download = cpu_memcpy,
    .mem_copy = cpu_memcpy,
    .sync = cpu_sync,
    .host_memory = 1,
    .host_alloc = cpu_mem_alloc,
    .host_free = cpu_mem_free,
    .mark = cpu_mark,
    .upload_async = cpu_upload_async,
    .wait_uploads = cpu_sync,
    .uploads_sync = cpu_sync,
    .mem_info = NULL,
    .stats_init = linear_stats_init,
    .stats_free = linear_stats_free,
    .stats_reset = cpu_stats_reset,
    .stats_accumulate = linear_stats_accumulate,
    .stats_hessian = linear_stats_hessian,
    .gptq_prepare = cpu_gptq_prepare,
    .gptq_rows = cpu_gptq_rows,
    .gptq_release = cpu_gptq_release,
    .rtn = quant_rtn,
    .dequantize = cpu_dequantize,
    .proxy_loss = cpu_proxy_loss,
    .scale_columns = cpu_scale_columns,
    .pick_targets = cpu_pick_targets,
};
