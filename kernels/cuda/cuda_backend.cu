/*
 * CUDA backend: device discovery, the one device context, memory, and the
 * ops of the fptq_backend table on device pointers.
 *
 * Precision. `linear` is cuBLAS fp32 with fp32 compute (CUBLAS_COMPUTE_32F,
 * default math mode: no TF32 tensor ops), so the parity test holds it to fp32
 * tolerances against the CPU's OpenBLAS sgemm; fptq_cuda_linear_bf16 (bf16
 * inputs, fp32 products and accumulation) is the fast path beside it, used by
 * the benchmark. fptq's own kernels repeat the CPU's float operations in the
 * CPU's order where an element is computed alone (__fmul_rn / __fadd_rn keep
 * nvcc from fusing a multiply and an add the CPU rounds twice), so RoPE, add,
 * act_quant agree bit for bit; reductions run in a tree, in double where the
 * CPU sums in double, and agree to the last bits.
 */
#include "cuda_common.cuh"

#include <cuda_bf16.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

/* ---- errors ------------------------------------------------------------------------ */

fptq_status cuda_fail(const char *lib, const char *file, int line, const char *call, const char *err)
{
    /* kernels/cuda/x.cu rather than the absolute path CMake hands nvcc */
    const char *short_file = file;
    for (const char *p = file; *p; p++)
        if (strncmp(p, "kernels/", 8) == 0)
            short_file = p;
    return fptq_fail(FPTQ_ERR_BACKEND, file, line, "%s:%d: %.200s failed: %s (%s)", short_file,
                     line, call, err ? err : "unknown error", lib);
}

const char *cusolver_status_string(cusolverStatus_t s)
{
    switch (s) {
    case CUSOLVER_STATUS_SUCCESS: return "success";
    case CUSOLVER_STATUS_NOT_INITIALIZED: return "CUSOLVER_STATUS_NOT_INITIALIZED: library not initialized";
    case CUSOLVER_STATUS_ALLOC_FAILED: return "CUSOLVER_STATUS_ALLOC_FAILED: resource allocation failed";
    case CUSOLVER_STATUS_INVALID_VALUE: return "CUSOLVER_STATUS_INVALID_VALUE: an unsupported value or parameter was passed";
    case CUSOLVER_STATUS_ARCH_MISMATCH: return "CUSOLVER_STATUS_ARCH_MISMATCH: feature absent from the device architecture";
    case CUSOLVER_STATUS_EXECUTION_FAILED: return "CUSOLVER_STATUS_EXECUTION_FAILED: the GPU program failed to execute";
    case CUSOLVER_STATUS_INTERNAL_ERROR: return "CUSOLVER_STATUS_INTERNAL_ERROR: an internal operation failed";
    case CUSOLVER_STATUS_MATRIX_TYPE_NOT_SUPPORTED: return "CUSOLVER_STATUS_MATRIX_TYPE_NOT_SUPPORTED";
    case CUSOLVER_STATUS_NOT_SUPPORTED: return "CUSOLVER_STATUS_NOT_SUPPORTED";
    default: return "cuSOLVER error";
    }
}

/* ---- device discovery (kernels/backend.c asks here) --------------------------------- */

__global__ void probe_kernel(int *x)
{
    if (x)
        *x = 1;
}

extern "C" int fptq_cuda_device_count(char *why, size_t why_cap)
{
    int n = 0;
    cudaError_t err = cudaGetDeviceCount(&n);
    if (err != cudaSuccess) {
        /* no driver at all reads as an insufficient one */
        snprintf(why, why_cap, "cudaGetDeviceCount: %s: %s%s", cudaGetErrorName(err),
                 cudaGetErrorString(err),
                 err == cudaErrorInsufficientDriver ? " (no NVIDIA driver, or one older than the CUDA runtime)" : "");
        return 0;
    }
    if (n == 0) {
        snprintf(why, why_cap, "no CUDA device found");
        return 0;
    }
    /* a device this binary has no kernel image (nor PTX) for is no use either */
    cudaFuncAttributes attr;
    err = cudaFuncGetAttributes(&attr, probe_kernel);
    if (err != cudaSuccess) {
        cudaDeviceProp prop;
        int major = 0, minor = 0;
        if (cudaGetDeviceProperties(&prop, 0) == cudaSuccess) {
            major = prop.major;
            minor = prop.minor;
        }
        snprintf(why, why_cap, "CUDA device 0 (compute capability %d.%d) cannot run this build's "
                 "kernels (%s: %s); rebuild with CMAKE_CUDA_ARCHITECTURES for it",
                 major, minor, cudaGetErrorName(err), cudaGetErrorString(err));
        return 0;
    }
    return n;
}

/* ---- the device context ------------------------------------------------------------------ */

static cuda_ctx g_ctx;
static int g_device = 0;

static void ctx_destroy(cuda_ctx *c)
{
    /* teardown: failures here have nowhere to go and change nothing */
    if (c->scratch)
        cudaFree(c->scratch);
    if (c->d_info)
        cudaFree(c->d_info);
    if (c->solver_params)
        cusolverDnDestroyParams(c->solver_params);
    if (c->solver)
        cusolverDnDestroy(c->solver);
    if (c->blas)
        cublasDestroy(c->blas);
    for (int i = 0; i < 2; i++)
        if (c->marks[i])
            cudaEventDestroy(c->marks[i]);
    if (c->copied)
        cudaEventDestroy(c->copied);
    if (c->copy_stream)
        cudaStreamDestroy(c->copy_stream);
    if (c->stream)
        cudaStreamDestroy(c->stream);
    memset(c, 0, sizeof *c);
}

static fptq_status ctx_create(cuda_ctx *c, int device)
{
    memset(c, 0, sizeof *c);
    cudaCheck(cudaSetDevice(device));
    cudaCheck(cudaStreamCreate(&c->stream));
    /* uploads of the next layer's weights: a stream of its own, not ordered
     * with the legacy default stream */
    cudaCheck(cudaStreamCreateWithFlags(&c->copy_stream, cudaStreamNonBlocking));
    for (int i = 0; i < 2; i++)
        cudaCheck(cudaEventCreateWithFlags(&c->marks[i], cudaEventDisableTiming));
    cudaCheck(cudaEventCreateWithFlags(&c->copied, cudaEventDisableTiming));
    cublasCheck(cublasCreate(&c->blas));
    cublasCheck(cublasSetStream(c->blas, c->stream));
    /* default math: fp32 GEMMs stay fp32 (TF32 only with CUBLAS_TF32_TENSOR_OP_MATH);
     * atomics stay off (cuBLAS's default), so results repeat bit for bit */
    cublasCheck(cublasSetMathMode(c->blas, CUBLAS_DEFAULT_MATH));
    cublasCheck(cublasSetPointerMode(c->blas, CUBLAS_POINTER_MODE_HOST));
    cusolverCheck(cusolverDnCreate(&c->solver));
    cusolverCheck(cusolverDnSetStream(c->solver, c->stream));
    cusolverCheck(cusolverDnSetDeterministicMode(c->solver, CUSOLVER_DETERMINISTIC_RESULTS));
    cusolverCheck(cusolverDnCreateParams(&c->solver_params));
    cudaCheck(cudaMalloc((void **)&c->d_info, sizeof(int)));
    c->device = device;
    c->ready = 1;
    return FPTQ_OK;
}

fptq_status cuda_ctx_get(cuda_ctx **out)
{
    *out = NULL;
    if (!g_ctx.ready) {
        fptq_status st = ctx_create(&g_ctx, g_device);
        if (st != FPTQ_OK) {
            ctx_destroy(&g_ctx);
            fptq_error_context("CUDA device %d set-up", g_device);
            return st;
        }
    }
    *out = &g_ctx;
    return FPTQ_OK;
}

fptq_status cuda_scratch(size_t bytes, void **out)
{
    cuda_ctx *c;
    FPTQ_TRY(cuda_ctx_get(&c));
    if (bytes > c->scratch_bytes) {
        /* no queued op may still read the old buffer */
        if (c->scratch) {
            cudaCheck(cudaStreamSynchronize(c->stream));
            cudaCheck(cudaFree(c->scratch));
        }
        c->scratch = NULL;
        c->scratch_bytes = 0;
        const size_t grown = bytes + bytes / 4;
        cudaError_t e = cudaMalloc(&c->scratch, grown);
        if (e != cudaSuccess) {
            (void)cudaGetLastError();
            return FPTQ_FAIL(FPTQ_ERR_NOMEM, "CUDA scratch: cannot allocate %zu bytes on the GPU (%s)",
                             grown, cudaGetErrorString(e));
        }
        c->scratch_bytes = grown;
    }
    *out = c->scratch;
    return FPTQ_OK;
}

extern "C" fptq_status fptq_cuda_init(int device)
{
    if (g_ctx.ready && g_ctx.device == device)
        return FPTQ_OK;
    if (g_ctx.ready)
        ctx_destroy(&g_ctx);
    int n = 0;
    cudaCheck(cudaGetDeviceCount(&n));
    if (device < 0 || device >= n)
        return FPTQ_FAIL(FPTQ_ERR_BACKEND, "CUDA device %d requested, %d present", device, n);
    g_device = device;
    cuda_ctx *c;
    return cuda_ctx_get(&c);
}

extern "C" void fptq_cuda_shutdown(void)
{
    if (g_ctx.ready) {
        cudaStreamSynchronize(g_ctx.stream);
        ctx_destroy(&g_ctx);
    }
}

extern "C" void *fptq_cuda_stream(void)
{
    cuda_ctx *c;
    if (cuda_ctx_get(&c) != FPTQ_OK)
        return NULL;
    return (void *)c->stream;
}

extern "C" fptq_status fptq_cuda_device_info(char *name, size_t name_cap, size_t *free_bytes,
                                             size_t *total_bytes, int *sm_count)
{
    cuda_ctx *c;
    FPTQ_TRY(cuda_ctx_get(&c));
    cudaDeviceProp prop;
    cudaCheck(cudaGetDeviceProperties(&prop, c->device));
    if (name && name_cap)
        snprintf(name, name_cap, "%s (sm_%d%d)", prop.name, prop.major, prop.minor);
    if (sm_count)
        *sm_count = prop.multiProcessorCount;
    size_t f = 0, t = 0;
    cudaCheck(cudaMemGetInfo(&f, &t));
    if (free_bytes)
        *free_bytes = f;
    if (total_bytes)
        *total_bytes = t;
    return FPTQ_OK;
}

/* ---- memory ---------------------------------------------------------------------------------- */

extern "C" fptq_status fptq_cuda_alloc(size_t bytes, const char *what, void **out)
{
    *out = NULL;
    cuda_ctx *c;
    FPTQ_TRY(cuda_ctx_get(&c));
    void *p = NULL;
    cudaError_t e = cudaMalloc(&p, bytes ? bytes : 1);
    if (e != cudaSuccess) {
        (void)cudaGetLastError(); /* an allocation failure is not sticky: clear it */
        size_t f = 0, t = 0;
        cudaMemGetInfo(&f, &t);
        return FPTQ_FAIL(e == cudaErrorMemoryAllocation ? FPTQ_ERR_NOMEM : FPTQ_ERR_BACKEND,
                         "%s: cannot allocate %zu bytes (%.2f GiB) on the GPU, %.2f of %.2f GiB "
                         "free (%s)", what, bytes, bytes / 1073741824.0, f / 1073741824.0,
                         t / 1073741824.0, cudaGetErrorString(e));
    }
    e = cudaMemsetAsync(p, 0, bytes, c->stream);
    if (e != cudaSuccess) {
        cudaFree(p);
        return cuda_fail(cudaGetErrorName(e), __FILE__, __LINE__, "cudaMemsetAsync(new allocation)",
                         cudaGetErrorString(e));
    }
    *out = p;
    return FPTQ_OK;
}

extern "C" void fptq_cuda_free(void *p)
{
    if (!p)
        return;
    /* queued ops may still use p: let them finish. An error here is an
     * earlier op's, and the next check on the stream reports it. */
    if (g_ctx.ready)
        cudaStreamSynchronize(g_ctx.stream);
    cudaFree(p);
}

extern "C" fptq_status fptq_cuda_upload(void *dst, const void *host_src, size_t bytes)
{
    if (!bytes)
        return FPTQ_OK;
    cuda_ctx *c;
    FPTQ_TRY(cuda_ctx_get(&c));
    cudaCheck(cudaMemcpyAsync(dst, host_src, bytes, cudaMemcpyHostToDevice, c->stream));
    /* the caller may reuse host_src at once */
    cudaCheck(cudaStreamSynchronize(c->stream));
    return FPTQ_OK;
}

extern "C" fptq_status fptq_cuda_download(void *host_dst, const void *src, size_t bytes)
{
    if (!bytes)
        return FPTQ_OK;
    cuda_ctx *c;
    FPTQ_TRY(cuda_ctx_get(&c));
    cudaCheck(cudaMemcpyAsync(host_dst, src, bytes, cudaMemcpyDeviceToHost, c->stream));
    cudaCheck(cudaStreamSynchronize(c->stream));
    return FPTQ_OK;
}

extern "C" fptq_status fptq_cuda_copy(void *dst, const void *src, size_t bytes)
{
    if (!bytes)
        return FPTQ_OK;
    cuda_ctx *c;
    FPTQ_TRY(cuda_ctx_get(&c));
    cudaCheck(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, c->stream));
    return FPTQ_OK;
}

extern "C" fptq_status fptq_cuda_memset(void *dst, int byte, size_t bytes)
{
    if (!bytes)
        return FPTQ_OK;
    cuda_ctx *c;
    FPTQ_TRY(cuda_ctx_get(&c));
    cudaCheck(cudaMemsetAsync(dst, byte, bytes, c->stream));
    return FPTQ_OK;
}

extern "C" fptq_status fptq_cuda_sync(void)
{
    cuda_ctx *c;
    FPTQ_TRY(cuda_ctx_get(&c));
    cudaCheck(cudaStreamSynchronize(c->stream));
    cudaCheck(cudaGetLastError());
    return FPTQ_OK;
}

extern "C" fptq_status fptq_cuda_host_alloc(size_t bytes, const char *what, void **out)
{
    *out = NULL;
    cuda_ctx *c;
    FPTQ_TRY(cuda_ctx_get(&c));
    cudaError_t e = cudaMallocHost(out, bytes ? bytes : 1);
    if (e != cudaSuccess) {
        (void)cudaGetLastError();
        *out = NULL;
        return FPTQ_FAIL(FPTQ_ERR_NOMEM, "%s: cannot allocate %zu bytes of page-locked host memory (%s)",
                         what, bytes, cudaGetErrorString(e));
    }
    return FPTQ_OK;
}

extern "C" void fptq_cuda_host_free(void *p)
{
    if (p)
        cudaFreeHost(p);
}

/* ---- weight streaming: the second stream ------------------------------------------------------ */

static fptq_status cuda_mark(int slot)
{
    cuda_ctx *c;
    FPTQ_TRY(cuda_ctx_get(&c));
    cudaCheck(cudaEventRecord(c->marks[slot & 1], c->stream));
    return FPTQ_OK;
}

static fptq_status cuda_upload_async(void *dst, const void *src, size_t bytes, int slot)
{
    if (!bytes)
        return FPTQ_OK;
    cuda_ctx *c;
    FPTQ_TRY(cuda_ctx_get(&c));
    /* the calling thread may be the layer loader: the current device is per thread */
    cudaCheck(cudaSetDevice(c->device));
    /* dst may still be read by ops queued before the slot's mark */
    cudaCheck(cudaStreamWaitEvent(c->copy_stream, c->marks[slot & 1], 0));
    cudaCheck(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, c->copy_stream));
    return FPTQ_OK;
}

static fptq_status cuda_wait_uploads(void)
{
    cuda_ctx *c;
    FPTQ_TRY(cuda_ctx_get(&c));
    cudaCheck(cudaEventRecord(c->copied, c->copy_stream));
    cudaCheck(cudaStreamWaitEvent(c->stream, c->copied, 0));
    return FPTQ_OK;
}

static fptq_status cuda_uploads_sync(void)
{
    cuda_ctx *c;
    FPTQ_TRY(cuda_ctx_get(&c));
    cudaCheck(cudaStreamSynchronize(c->copy_stream));
    return FPTQ_OK;
}

static fptq_status cuda_mem_info(size_t *free_bytes, size_t *total_bytes)
{
    cuda_ctx *c;
    FPTQ_TRY(cuda_ctx_get(&c));
    cudaCheck(cudaMemGetInfo(free_bytes, total_bytes));
    return FPTQ_OK;
}

/* ---- block reductions ------------------------------------------------------------------------- */

template <typename T> __device__ T warp_sum(T v)
{
    for (int o = 16; o > 0; o >>= 1)
        v += __shfl_down_sync(0xffffffffu, v, o);
    return v;
}

template <typename T> __device__ T warp_max(T v)
{
    for (int o = 16; o > 0; o >>= 1) {
        T u = __shfl_down_sync(0xffffffffu, v, o);
        v = u > v ? u : v;
    }
    return v;
}

/* Sum (or max) over the block, the result in every thread; blockDim.x a multiple of 32, <= 1024. */
template <typename T, bool IS_MAX> __device__ T block_reduce(T v)
{
    __shared__ T part[32];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, n_warps = blockDim.x >> 5;
    v = IS_MAX ? warp_max(v) : warp_sum(v);
    __syncthreads(); /* part[] may still be read by a previous call */
    if (lane == 0)
        part[warp] = v;
    __syncthreads();
    if (warp == 0) {
        v = lane < n_warps ? part[lane] : part[0];
        if (!IS_MAX && lane >= n_warps)
            v = (T)0;
        v = IS_MAX ? warp_max(v) : warp_sum(v);
        if (lane == 0)
            part[0] = v;
    }
    __syncthreads();
    return part[0];
}

static int threads_for(int64_t n)
{
    int t = 32;
    while (t < 256 && t < n)
        t *= 2;
    return t;
}

/* ---- linear ----------------------------------------------------------------------------------- */

__global__ void bias_rows_kernel(float *Y, const float *bias, int64_t n, int64_t out)
{
    const int64_t total = n * out;
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < total;
         i += (int64_t)gridDim.x * blockDim.x)
        Y[i] = bias ? bias[i % out] : 0.0f;
}

/* How the table's `linear` multiplies (fptq_cuda_set_gemm): fp32 inputs and
 * products (the default; the parity test's tolerances), TF32 tensor cores,
 * or bf16 inputs with fp32 products and sums. */
enum { GEMM_FP32, GEMM_TF32, GEMM_BF16 };
static int g_gemm = GEMM_FP32;

extern "C" fptq_status fptq_cuda_set_gemm(const char *mode)
{
    if (strcmp(mode, "fp32") == 0)
        g_gemm = GEMM_FP32;
    else if (strcmp(mode, "tf32") == 0)
        g_gemm = GEMM_TF32;
    else if (strcmp(mode, "bf16") == 0)
        g_gemm = GEMM_BF16;
    else
        return FPTQ_FAIL(FPTQ_ERR_ARG, "CUDA GEMM mode '%s': expected fp32, tf32 or bf16", mode);
    return FPTQ_OK;
}

extern "C" const char *fptq_cuda_gemm_name(void)
{
    return g_gemm == GEMM_TF32 ? "tf32" : g_gemm == GEMM_BF16 ? "bf16" : "fp32";
}

/* Y[n, out] = X[n, in] W[out, in]^T: in cuBLAS's column-major terms
 * Y^T (out x n) = W (out x in, stored as in x out) ^T  X^T (in x n). */
static fptq_status gemm_xwt_c(cudaDataType type, cublasComputeType_t compute, const void *X, int64_t n, int64_t in,
                              const void *W, int64_t out, const float *bias, float *Y)
{
    if (n <= 0 || out <= 0)
        return FPTQ_OK;
    if (n > FPTQ_INT_LIMIT || in > FPTQ_INT_LIMIT || out > FPTQ_INT_LIMIT)
        return FPTQ_FAIL(FPTQ_ERR_UNSUPPORTED, "linear: dimension over 2^31 (%lld x %lld x %lld)",
                         (long long)n, (long long)in, (long long)out);
    cuda_ctx *c;
    FPTQ_TRY(cuda_ctx_get(&c));
    float beta = 0.0f;
    if (bias || in <= 0) {
        bias_rows_kernel<<<cuda_blocks(n * out, 256), 256, 0, c->stream>>>(Y, bias, n, out);
        launchCheck();
        beta = 1.0f;
        if (in <= 0)
            return FPTQ_OK;
    }
    const float alpha = 1.0f;
    cublasCheck(cublasGemmEx(c->blas, CUBLAS_OP_T, CUBLAS_OP_N, (int)out, (int)n, (int)in, &alpha, W,
                             type, (int)in, X, type, (int)in, &beta, Y, CUDA_R_32F, (int)out,
                             compute, CUBLAS_GEMM_DEFAULT));
    return FPTQ_OK;
}

static fptq_status gemm_xwt(cudaDataType type, const void *X, int64_t n, int64_t in, const void *W,
                            int64_t out, const float *bias, float *Y)
{
    return gemm_xwt_c(type, CUBLAS_COMPUTE_32F, X, n, in, W, out, bias, Y);
}

__global__ void f32_to_bf16_kernel(const float *x, int64_t n, uint16_t *y);

/* bf16 GEMMs: W and X rounded to bf16 in scratch (X in chunks of rows, so
 * the scratch stays within W's copy plus 256 MiB), fp32 products and sums. */
static fptq_status linear_via_bf16(const float *X, int64_t n, int64_t in, const float *W, int64_t out,
                                   const float *bias, float *Y)
{
    if (n <= 0 || out <= 0 || in <= 0)
        return gemm_xwt(CUDA_R_32F, X, n, in, W, out, bias, Y);
    cuda_ctx *c;
    FPTQ_TRY(cuda_ctx_get(&c));
    int64_t chunk = ((int64_t)1 << 27) / in;
    chunk = chunk < 1 ? 1 : chunk > n ? n : chunk;
    void *scratch;
    FPTQ_TRY(cuda_scratch((size_t)(out * in + chunk * in) * sizeof(uint16_t), &scratch));
    uint16_t *Wb = (uint16_t *)scratch, *Xb = Wb + out * in;
    f32_to_bf16_kernel<<<cuda_blocks(out * in, 256), 256, 0, c->stream>>>(W, out * in, Wb);
    launchCheck();
    for (int64_t r0 = 0; r0 < n; r0 += chunk) {
        const int64_t nr = n - r0 < chunk ? n - r0 : chunk;
        f32_to_bf16_kernel<<<cuda_blocks(nr * in, 256), 256, 0, c->stream>>>(X + r0 * in, nr * in, Xb);
        launchCheck();
        FPTQ_TRY(gemm_xwt(CUDA_R_16BF, Xb, nr, in, Wb, out, bias, Y + r0 * out));
    }
    return FPTQ_OK;
}

static fptq_status cuda_linear(const float *X, int64_t n, int64_t in, const float *W, int64_t out,
                               const float *bias, float *Y)
{
    if (g_gemm == GEMM_BF16)
        return linear_via_bf16(X, n, in, W, out, bias, Y);
    return gemm_xwt_c(CUDA_R_32F, g_gemm == GEMM_TF32 ? CUBLAS_COMPUTE_32F_FAST_TF32 : CUBLAS_COMPUTE_32F, X, n,
                      in, W, out, bias, Y);
}

extern "C" fptq_status fptq_cuda_linear_bf16(const uint16_t *X, int64_t n, int64_t in,
                                             const uint16_t *W, int64_t out, const float *bias,
                                             float *Y)
{
    return gemm_xwt(CUDA_R_16BF, X, n, in, W, out, bias, Y);
}

__global__ void f32_to_bf16_kernel(const float *x, int64_t n, uint16_t *y)
{
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x)
        y[i] = __bfloat16_as_ushort(__float2bfloat16_rn(x[i]));
}

__global__ void bf16_to_f32_kernel(const uint16_t *x, int64_t n, float *y)
{
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x)
        y[i] = __bfloat162float(__ushort_as_bfloat16(x[i]));
}

extern "C" fptq_status fptq_cuda_f32_to_bf16(const float *x, int64_t n, uint16_t *y)
{
    if (n <= 0)
        return FPTQ_OK;
    cuda_ctx *c;
    FPTQ_TRY(cuda_ctx_get(&c));
    f32_to_bf16_kernel<<<cuda_blocks(n, 256), 256, 0, c->stream>>>(x, n, y);
    launchCheck();
    return FPTQ_OK;
}

extern "C" fptq_status fptq_cuda_bf16_to_f32(const uint16_t *x, int64_t n, float *y)
{
    if (n <= 0)
        return FPTQ_OK;
    cuda_ctx *c;
    FPTQ_TRY(cuda_ctx_get(&c));
    bf16_to_f32_kernel<<<cuda_blocks(n, 256), 256, 0, c->stream>>>(x, n, y);
    launchCheck();
    return FPTQ_OK;
}

/* splitmix64 of (seed, index): the same numbers whatever the launch shape */
__global__ void fill_uniform_kernel(float *x, int64_t n, uint64_t seed, float lo, float hi)
{
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x) {
        uint64_t z = seed + 0x9E3779B97F4A7C15ull * (uint64_t)(i + 1);
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
        z ^= z >> 31;
        const float u = (float)(z >> 40) * (1.0f / 16777216.0f);
        x[i] = lo + (hi - lo) * u;
    }
}

extern "C" fptq_status fptq_cuda_fill_uniform(float *x, int64_t n, uint64_t seed, float lo, float hi)
{
    if (n <= 0)
        return FPTQ_OK;
    cuda_ctx *c;
    FPTQ_TRY(cuda_ctx_get(&c));
    fill_uniform_kernel<<<cuda_blocks(n, 256), 256, 0, c->stream>>>(x, n, seed, lo, hi);
    launchCheck();
    return FPTQ_OK;
}

/* ---- RMSNorm ----------------------------------------------------------------------------------- */

/* One block per row: sum of squares in double (float products are exact in
 * double), r in double then float, y = (x * r) * w in float as on the CPU. */
__global__ void rmsnorm_kernel(const float *X, int64_t dim, const float *w, float eps, float *Y)
{
    const float *x = X + (int64_t)blockIdx.x * dim;
    float *y = Y + (int64_t)blockIdx.x * dim;
    double ss = 0.0;
    for (int64_t j = threadIdx.x; j < dim; j += blockDim.x)
        ss += (double)x[j] * (double)x[j];
    ss = block_reduce<double, false>(ss);
    const float r = (float)(1.0 / sqrt(ss / (double)dim + (double)eps));
    for (int64_t j = threadIdx.x; j < dim; j += blockDim.x)
        y[j] = __fmul_rn(__fmul_rn(x[j], r), w[j]);
}

static fptq_status cuda_rmsnorm(const float *X, int64_t n, int64_t dim, const float *w, float eps,
                                float *Y)
{
    if (n <= 0 || dim <= 0)
        return FPTQ_OK;
    if (n > FPTQ_INT_LIMIT)
        return FPTQ_FAIL(FPTQ_ERR_UNSUPPORTED, "rmsnorm: %lld rows", (long long)n);
    cuda_ctx *c;
    FPTQ_TRY(cuda_ctx_get(&c));
    rmsnorm_kernel<<<(unsigned)n, threads_for(dim), 0, c->stream>>>(X, dim, w, eps, Y);
    launchCheck();
    return FPTQ_OK;
}

/* ---- RoPE ---------------------------------------------------------------------------------------- */

__global__ void rope_kernel(float *X, int64_t rows, int64_t seq_len, int64_t n_heads, int64_t half_dim,
                            const float *cos_t, const float *sin_t)
{
    const int64_t total = rows * n_heads * half_dim;
    for (int64_t idx = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; idx < total;
         idx += (int64_t)gridDim.x * blockDim.x) {
        const int64_t i = idx % half_dim, t = idx / half_dim, h = t % n_heads, r = t / n_heads;
        const int64_t pos = r % seq_len;
        const float c = cos_t[pos * half_dim + i], s = sin_t[pos * half_dim + i];
        float *x = X + r * n_heads * 2 * half_dim + h * 2 * half_dim;
        const float x1 = x[i], x2 = x[i + half_dim];
        x[i] = __fsub_rn(__fmul_rn(x1, c), __fmul_rn(x2, s));
        x[i + half_dim] = __fadd_rn(__fmul_rn(x2, c), __fmul_rn(x1, s));
    }
}

static fptq_status cuda_rope(float *X, int64_t n_seq, int64_t seq_len, int64_t n_heads,
                             const rope_table *rt)
{
    if (seq_len > rt->seq_len)
        return FPTQ_FAIL(FPTQ_ERR_INTERNAL, "rope: sequence length %lld over table length %lld",
                         (long long)seq_len, (long long)rt->seq_len);
    const int64_t rows = n_seq * seq_len, half_dim = rt->half;
    if (rows <= 0 || n_heads <= 0 || half_dim <= 0)
        return FPTQ_OK;
    cuda_ctx *c;
    FPTQ_TRY(cuda_ctx_get(&c));
    /* the table is host memory (backend.h): its first seq_len rows go to scratch */
    const size_t tbytes = (size_t)(seq_len * half_dim) * sizeof(float);
    void *scratch;
    FPTQ_TRY(cuda_scratch(2 * tbytes, &scratch));
    float *d_cos = (float *)scratch, *d_sin = d_cos + seq_len * half_dim;
    cudaCheck(cudaMemcpyAsync(d_cos, rt->cos, tbytes, cudaMemcpyHostToDevice, c->stream));
    cudaCheck(cudaMemcpyAsync(d_sin, rt->sin, tbytes, cudaMemcpyHostToDevice, c->stream));
    rope_kernel<<<cuda_blocks(rows * n_heads * half_dim, 256), 256, 0, c->stream>>>(
        X, rows, seq_len, n_heads, half_dim, d_cos, d_sin);
    launchCheck();
    return FPTQ_OK;
}

/* ---- causal GQA attention --------------------------------------------------------------------------- */

/* Row i of one [T, T] score matrix: softmax over j <= i exactly as the CPU
 * (float max, expf, double sum, float 1/sum), zeros above the diagonal. */
__global__ void causal_softmax_kernel(float *S, int64_t T)
{
    const int64_t i = blockIdx.x;
    float *row = S + ((int64_t)blockIdx.y * T + i) * T;
    float mx = -INFINITY;
    for (int64_t j = threadIdx.x; j <= i; j += blockDim.x)
        mx = row[j] > mx ? row[j] : mx;
    mx = block_reduce<float, true>(mx);
    double sum = 0.0;
    for (int64_t j = threadIdx.x; j <= i; j += blockDim.x) {
        const float e = expf(__fsub_rn(row[j], mx));
        row[j] = e;
        sum += (double)e;
    }
    sum = block_reduce<double, false>(sum);
    const float inv = (float)(1.0 / sum);
    for (int64_t j = threadIdx.x; j < T; j += blockDim.x)
        row[j] = j <= i ? __fmul_rn(row[j], inv) : 0.0f;
}

/* For each sequence b and each head h = g * group + j of kv group g:
 * S = Q_h K_g^T / sqrt(d), causal softmax, O_h = P V_g. The heads with the
 * same j in every group have evenly strided Q, K, V and O, so one strided
 * batched sgemm covers a run of groups; S lives in scratch. */
static fptq_status cuda_attention(const float *Q, const float *K, const float *V, int64_t n_seq,
                                  int64_t T, int64_t n_heads, int64_t n_kv_heads, int64_t hd,
                                  float *O)
{
    if (n_kv_heads <= 0 || n_heads % n_kv_heads != 0)
        return FPTQ_FAIL(FPTQ_ERR_INTERNAL, "attention: %lld heads not a multiple of %lld kv heads",
                         (long long)n_heads, (long long)n_kv_heads);
    if (T > 46340)
        return FPTQ_FAIL(FPTQ_ERR_UNSUPPORTED, "attention: sequence length %lld too long", (long long)T);
    if (n_seq <= 0 || T <= 0 || hd <= 0)
        return FPTQ_OK;
    if (n_heads * hd > FPTQ_INT_LIMIT)
        return FPTQ_FAIL(FPTQ_ERR_UNSUPPORTED, "attention: row width %lld", (long long)(n_heads * hd));
    cuda_ctx *c;
    FPTQ_TRY(cuda_ctx_get(&c));
    const int64_t q_ld = n_heads * hd, kv_ld = n_kv_heads * hd, group = n_heads / n_kv_heads;
    /* at most 2^28 scores (1 GiB) at a time */
    int64_t per_batch = ((int64_t)1 << 28) / (T * T);
    per_batch = per_batch < 1 ? 1 : per_batch > n_kv_heads ? n_kv_heads : per_batch;
    void *scratch;
    FPTQ_TRY(cuda_scratch((size_t)(per_batch * T * T) * sizeof(float), &scratch));
    float *S = (float *)scratch;
    const float scale = (float)(1.0 / sqrt((double)hd)), one = 1.0f, zero = 0.0f;
    const int iT = (int)T, ihd = (int)hd;
    for (int64_t b = 0; b < n_seq; b++) {
        const float *Qb = Q + b * T * q_ld, *Kb = K + b * T * kv_ld, *Vb = V + b * T * kv_ld;
        float *Ob = O + b * T * q_ld;
        for (int64_t j = 0; j < group; j++) {
            for (int64_t g0 = 0; g0 < n_kv_heads; g0 += per_batch) {
                const int nb = (int)(n_kv_heads - g0 < per_batch ? n_kv_heads - g0 : per_batch);
                const float *Qh = Qb + (g0 * group + j) * hd, *Kg = Kb + g0 * hd, *Vg = Vb + g0 * hd;
                float *Oh = Ob + (g0 * group + j) * hd;
                /* S^T (col-major T x T) = K_g (T x hd) Q_h^T: row-major S = Q_h K_g^T */
                cublasCheck(cublasSgemmStridedBatched(
                    c->blas, CUBLAS_OP_T, CUBLAS_OP_N, iT, iT, ihd, &scale, Kg, (int)kv_ld, hd, Qh,
                    (int)q_ld, group * hd, &zero, S, iT, T * T, nb));
                causal_softmax_kernel<<<dim3((unsigned)T, (unsigned)nb), threads_for(T), 0,
                                        c->stream>>>(S, T);
                launchCheck();
                /* O_h^T (hd x T) = V_g^T (hd x T) P^T: row-major O_h = P V_g */
                cublasCheck(cublasSgemmStridedBatched(
                    c->blas, CUBLAS_OP_N, CUBLAS_OP_N, ihd, iT, iT, &one, Vg, (int)kv_ld, hd, S, iT,
                    T * T, &zero, Oh, (int)q_ld, group * hd, nb));
            }
        }
    }
    return FPTQ_OK;
}

/* ---- SwiGLU, add ---------------------------------------------------------------------------------------- */

__global__ void swiglu_kernel(float *gate, const float *up, int64_t n)
{
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x) {
        const float g = gate[i];
        gate[i] = __fmul_rn(__fdiv_rn(g, __fadd_rn(1.0f, expf(-g))), up[i]);
    }
}

static fptq_status cuda_swiglu(float *gate, const float *up, int64_t n)
{
    if (n <= 0)
        return FPTQ_OK;
    cuda_ctx *c;
    FPTQ_TRY(cuda_ctx_get(&c));
    swiglu_kernel<<<cuda_blocks(n, 256), 256, 0, c->stream>>>(gate, up, n);
    launchCheck();
    return FPTQ_OK;
}

__global__ void add_kernel(float *x, const float *y, int64_t n)
{
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x)
        x[i] = __fadd_rn(x[i], y[i]);
}

static fptq_status cuda_add(float *x, const float *y, int64_t n)
{
    if (n <= 0)
        return FPTQ_OK;
    cuda_ctx *c;
    FPTQ_TRY(cuda_ctx_get(&c));
    add_kernel<<<cuda_blocks(n, 256), 256, 0, c->stream>>>(x, y, n);
    launchCheck();
    return FPTQ_OK;
}

/* ---- activation fake-quant ------------------------------------------------------------------------------ */

#include "../quant_scalar.h"

__device__ __forceinline__ float int8_fq(float x, float s)
{
    float v = rintf(__fdiv_rn(x, s));
    v = v > 127.0f ? 127.0f : v < -127.0f ? -127.0f : v;
    return __fmul_rn(v, s);
}

__global__ void act_int8_static_kernel(float *X, int64_t n, float s)
{
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x)
        X[i] = int8_fq(X[i], s);
}

__global__ void act_fp8_static_kernel(float *X, int64_t n, float s)
{
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x)
        X[i] = __fmul_rn(qs_fp8_e4m3_to_f32(qs_fp8_e4m3_from_f32(__fdiv_rn(X[i], s))), s);
}

/* one block per row: the row's max |x| / 127 is its scale */
__global__ void act_int8_dynamic_kernel(float *X, int64_t cols)
{
    float *x = X + (int64_t)blockIdx.x * cols;
    float amax = 0.0f;
    for (int64_t c = threadIdx.x; c < cols; c += blockDim.x)
        amax = fabsf(x[c]) > amax ? fabsf(x[c]) : amax;
    amax = block_reduce<float, true>(amax);
    float s = __fdiv_rn(amax, 127.0f);
    s = s > 0.0f && isfinite(s) ? s : 1.0f;
    for (int64_t c = threadIdx.x; c < cols; c += blockDim.x)
        x[c] = int8_fq(x[c], s);
}

static fptq_status cuda_act_quant(const act_quant *a, float *X, int64_t rows, int64_t cols)
{
    if (!a || a->kind == ACTQ_NONE || rows <= 0 || cols <= 0)
        return FPTQ_OK;
    cuda_ctx *c;
    FPTQ_TRY(cuda_ctx_get(&c));
    const float s = a->scale > 0.0f && isfinite(a->scale) ? a->scale : 1.0f;
    const int64_t n = rows * cols;
    switch (a->kind) {
    case ACTQ_INT8_STATIC:
        act_int8_static_kernel<<<cuda_blocks(n, 256), 256, 0, c->stream>>>(X, n, s);
        break;
    case ACTQ_FP8_STATIC:
        act_fp8_static_kernel<<<cuda_blocks(n, 256), 256, 0, c->stream>>>(X, n, s);
        break;
    case ACTQ_INT8_DYNAMIC:
        if (rows > FPTQ_INT_LIMIT)
            return FPTQ_FAIL(FPTQ_ERR_UNSUPPORTED, "act_quant: %lld rows", (long long)rows);
        act_int8_dynamic_kernel<<<(unsigned)rows, threads_for(cols), 0, c->stream>>>(X, cols);
        break;
    default:
        return FPTQ_FAIL(FPTQ_ERR_ARG, "act_quant: unknown kind %d", (int)a->kind);
    }
    launchCheck();
    return FPTQ_OK;
}

/* ---- online log-sum-exp ------------------------------------------------------------------------------- */

__global__ void logsumexp_kernel(const float *logits, int64_t cols, int64_t ld, double *m, double *s)
{
    const int64_t i = blockIdx.x;
    const float *l = logits + i * ld;
    double mx = -INFINITY;
    for (int64_t j = threadIdx.x; j < cols; j += blockDim.x)
        mx = (double)l[j] > mx ? (double)l[j] : mx;
    mx = block_reduce<double, true>(mx);
    const double m_old = m[i];
    mx = m_old > mx ? m_old : mx;
    double sum = 0.0;
    for (int64_t j = threadIdx.x; j < cols; j += blockDim.x)
        sum += exp((double)l[j] - mx);
    sum = block_reduce<double, false>(sum);
    if (threadIdx.x == 0) {
        const double prev = isinf(m_old) ? 0.0 : s[i] * exp(m_old - mx);
        m[i] = mx;
        s[i] = prev + sum;
    }
}

static fptq_status cuda_logsumexp_accumulate(const float *logits, int64_t n, int64_t cols,
                                             int64_t ld, double *m, double *s)
{
    if (n <= 0)
        return FPTQ_OK;
    if (n > FPTQ_INT_LIMIT)
        return FPTQ_FAIL(FPTQ_ERR_UNSUPPORTED, "logsumexp: %lld rows", (long long)n);
    cuda_ctx *c;
    FPTQ_TRY(cuda_ctx_get(&c));
    logsumexp_kernel<<<(unsigned)n, threads_for(cols), 0, c->stream>>>(logits, cols, ld, m, s);
    launchCheck();
    return FPTQ_OK;
}

/* ---- the table ---------------------------------------------------------------------------------------- */

static fptq_status cuda_table_alloc(size_t bytes, const char *what, void **out)
{
    return fptq_cuda_alloc(bytes, what, out);
}

static fptq_backend make_cuda_table(void)
{
    fptq_backend b;
    memset(&b, 0, sizeof b);
    b.name = "cuda";
    b.linear = cuda_linear;
    b.rmsnorm = cuda_rmsnorm;
    b.rope = cuda_rope;
    b.attention = cuda_attention;
    b.swiglu = cuda_swiglu;
    b.add = cuda_add;
    b.act_quant = cuda_act_quant;
    b.logsumexp_accumulate = cuda_logsumexp_accumulate;
    b.mem_alloc = cuda_table_alloc;
    b.mem_free = fptq_cuda_free;
    b.upload = fptq_cuda_upload;
    b.download = fptq_cuda_download;
    b.mem_copy = fptq_cuda_copy;
    b.sync = fptq_cuda_sync;
    b.host_memory = 0;
    b.host_alloc = fptq_cuda_host_alloc;
    b.host_free = fptq_cuda_host_free;
    b.mark = cuda_mark;
    b.upload_async = cuda_upload_async;
    b.wait_uploads = cuda_wait_uploads;
    b.uploads_sync = cuda_uploads_sync;
    b.mem_info = cuda_mem_info;
    cuda_quant_table(&b);
    return b;
}

extern "C" const fptq_backend fptq_backend_cuda = make_cuda_table();
