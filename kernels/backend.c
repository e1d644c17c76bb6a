/*
 * Backend selection and the tables shared by every backend (RoPE
 * frequencies with llama3 scaling, computed once on the host).
 */
#include "backend.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* HF transformers' _compute_llama3_parameters: long wavelengths are slowed
 * by `factor`, short ones kept, and the band between blended smoothly. */
void rope_inv_freq(const rope_params *p, double *inv_freq)
{
    const int64_t half = p->head_dim / 2;
    for (int64_t i = 0; i < half; i++) {
        double f = 1.0 / pow(p->theta, (double)(2 * i) / (double)p->head_dim);
        if (p->factor > 0.0) {
            const double old_ctx = (double)p->original_max_position_embeddings;
            const double low_wavelen = old_ctx / p->low_freq_factor;
            const double high_wavelen = old_ctx / p->high_freq_factor;
            const double wavelen = 2.0 * 3.14159265358979323846 / f;
            if (wavelen > low_wavelen) {
                f = f / p->factor;
            } else if (wavelen >= high_wavelen) {
                double smooth = (old_ctx / wavelen - p->low_freq_factor) /
                                (p->high_freq_factor - p->low_freq_factor);
                f = (1.0 - smooth) * f / p->factor + smooth * f;
            }
        }
        inv_freq[i] = f;
    }
}

fptq_status rope_table_init(const rope_params *p, int64_t seq_len, rope_table *t)
{
    memset(t, 0, sizeof *t);
    if (p->head_dim <= 0 || p->head_dim % 2 != 0 || seq_len <= 0)
        return FPTQ_FAIL(FPTQ_ERR_ARG, "rope: head_dim %lld must be even and positive, seq_len %lld positive",
                         (long long)p->head_dim, (long long)seq_len);
    const int64_t half = p->head_dim / 2;
    double *inv = NULL;
    fptq_status st;
    FPTQ_TRY_GOTO(fptq_calloc((size_t)half, sizeof(double), "rope frequencies", &inv), st, fail);
    FPTQ_TRY_GOTO(fptq_calloc((size_t)(seq_len * half), sizeof(float), "rope cos table", &t->cos), st, fail);
    FPTQ_TRY_GOTO(fptq_calloc((size_t)(seq_len * half), sizeof(float), "rope sin table", &t->sin), st, fail);
    rope_inv_freq(p, inv);
    for (int64_t pos = 0; pos < seq_len; pos++) {
        for (int64_t i = 0; i < half; i++) {
            /* the angle in float, as the reference implementations compute it */
            float angle = (float)pos * (float)inv[i];
            t->cos[pos * half + i] = cosf(angle);
            t->sin[pos * half + i] = sinf(angle);
        }
    }
    t->seq_len = seq_len;
    t->half = half;
    free(inv);
    return FPTQ_OK;
fail:
    free(inv);
    rope_table_free(t);
    return st;
}

void rope_table_free(rope_table *t)
{
    free(t->cos);
    free(t->sin);
    memset(t, 0, sizeof *t);
}

#ifdef FPTQ_HAVE_CUDA
int fptq_cuda_device_count(char *why, size_t why_cap); /* kernels/cuda/cuda_backend.cu */
fptq_status fptq_cuda_init(int device);                /* kernels/cuda/cuda_backend.cu */
fptq_status fptq_cuda_set_gemm(const char *mode);
const char *fptq_cuda_gemm_name(void);
fptq_status fptq_cuda_device_info(char *name, size_t name_cap, size_t *free_bytes, size_t *total_bytes,
                                  int *sm_count);
extern const fptq_backend fptq_backend_cuda;          /* kernels/cuda/cuda_backend.cu */
#endif

const fptq_backend *fptq_backend_cuda_table(void)
{
#ifdef FPTQ_HAVE_CUDA
    return &fptq_backend_cuda;
#else
    return NULL;
#endif
}

int fptq_cuda_available(char *why, size_t why_cap)
{
#ifdef FPTQ_HAVE_CUDA
    return fptq_cuda_device_count(why, why_cap) > 0;
#else
    snprintf(why, why_cap, "fptq was built without the CUDA backend (-DFPTQ_CUDA=OFF or no nvcc)");
    return 0;
#endif
}

fptq_status fptq_backend_select(const char *name, const fptq_backend **out)
{
    char why[256] = "";
    *out = NULL;
    if (strcmp(name, "cpu") == 0) {
        *out = &fptq_backend_cpu;
        return FPTQ_OK;
    }
    if (strcmp(name, "cuda") == 0 || strcmp(name, "auto") == 0) {
        if (fptq_cuda_available(why, sizeof why)) {
            *out = fptq_backend_cuda_table();
            return FPTQ_OK;
        }
        if (strcmp(name, "cuda") == 0)
            return FPTQ_FAIL(FPTQ_ERR_BACKEND, "--backend cuda: %s", why);
        fptq_debug("backend auto: using the CPU (%s)", why);
        *out = &fptq_backend_cpu;
        return FPTQ_OK;
    }
    return FPTQ_FAIL(FPTQ_ERR_ARG, "--backend: unknown backend '%s' (expected cpu, cuda or auto)", name);
}

int fptq_backend_devices(const fptq_backend *be)
{
    if (be->host_memory)
        return 0;
#ifdef FPTQ_HAVE_CUDA
    char why[256];
    const int n = fptq_cuda_device_count(why, sizeof why);
    return n > 0 ? n : 0;
#else
    return 0;
#endif
}

fptq_status fptq_backend_bind(const fptq_backend *be, int local_rank)
{
    if (be->host_memory)
        return FPTQ_OK;
#ifdef FPTQ_HAVE_CUDA
    char why[256] = "";
    const int n = fptq_cuda_device_count(why, sizeof why);
    if (n <= 0)
        return FPTQ_FAIL(FPTQ_ERR_BACKEND, "CUDA: %s", why);
    const int dev = local_rank % n;
    if (local_rank >= n)
        fptq_warn("node-local rank %d shares GPU %d with another rank (%d GPU(s) on this node)", local_rank, dev, n);
    fptq_status st = fptq_cuda_init(dev);
    if (st != FPTQ_OK) {
        fptq_error_context("binding node-local rank %d to GPU %d", local_rank, dev);
        return st;
    }
    const char *gemm = getenv("FPTQ_CUDA_GEMM");
    if (gemm && *gemm) {
        st = fptq_cuda_set_gemm(gemm);
        if (st != FPTQ_OK) {
            fptq_error_context("FPTQ_CUDA_GEMM");
            return st;
        }
    }
    char name[256] = "?";
    size_t free_b = 0, total_b = 0;
    int sms = 0;
    if (fptq_cuda_device_info(name, sizeof name, &free_b, &total_b, &sms) == FPTQ_OK)
        fptq_debug("node-local rank %d: GPU %d, %s, %.1f of %.1f GiB free, %d SMs, %s GEMMs", local_rank, dev, name,
                   (double)free_b / 1073741824.0, (double)total_b / 1073741824.0, sms, fptq_cuda_gemm_name());
    fptq_clear_error();
    return FPTQ_OK;
#else
    return FPTQ_FAIL(FPTQ_ERR_BACKEND, "backend %s: no device to bind in this build", be->name);
#endif
}

void fptq_backend_describe(const fptq_backend *be, char *buf, size_t cap)
{
#ifdef FPTQ_HAVE_CUDA
    if (!be->host_memory) {
        snprintf(buf, cap, "%s (%s GEMMs)", be->name, fptq_cuda_gemm_name());
        return;
    }
#endif
    snprintf(buf, cap, "%s", be->name);
}
