// CPU emulation of the CUDA / cuBLAS / cuSOLVER subset fptq uses: every CUDA
// thread is a fiber (ucontext), __syncthreads and warp shuffles are barriers
// among fibers; cuBLAS -> column-major CBLAS, cuSOLVER -> column-major LAPACKE.
#pragma once
#include <atomic>
#include <cblas.h>
#include <lapacke.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <ucontext.h>
#include <vector>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __shared__ static
#define CUDART_CB

struct dim3 {
    unsigned x, y, z;
    dim3(unsigned a = 1, unsigned b = 1, unsigned c = 1) : x(a), y(b), z(c) {}
};
struct uint3e { unsigned x, y, z; };
extern uint3e threadIdx, blockIdx;
extern dim3 blockDim, gridDim;

typedef int cudaError_t;
enum { cudaSuccess = 0, cudaErrorMemoryAllocation = 2, cudaErrorInsufficientDriver = 35, cudaErrorNotReady = 600 };
typedef void *cudaStream_t;
enum cudaMemcpyKind { cudaMemcpyHostToDevice, cudaMemcpyDeviceToHost, cudaMemcpyDeviceToDevice };
struct cudaDeviceProp { char name[256]; int major, minor, multiProcessorCount; };
struct cudaFuncAttributes { int x; };
typedef int cudaDataType;
enum { CUDA_R_32F = 0, CUDA_R_16BF = 14 };

// one device, or FPTQ_EMU_GPUS of them (all the same CPU; tests of one rank per GPU)
inline cudaError_t cudaGetDeviceCount(int *n) {
    const char *e = getenv("FPTQ_EMU_GPUS");
    *n = e && atoi(e) > 0 ? atoi(e) : 1;
    return 0;
}
inline cudaError_t cudaSetDevice(int) { return 0; }
inline cudaError_t cudaStreamCreate(cudaStream_t *s) { *s = (void *)1; return 0; }
inline cudaError_t cudaStreamDestroy(cudaStream_t) { return 0; }
inline cudaError_t cudaStreamSynchronize(cudaStream_t) { return 0; }
enum { cudaStreamNonBlocking = 1, cudaEventDisableTiming = 2 };
inline cudaError_t cudaStreamCreateWithFlags(cudaStream_t *s, unsigned) { *s = (void *)2; return 0; }
// one emulated stream runs everything at once, in call order: events order nothing more
typedef void *cudaEvent_t;
inline cudaError_t cudaEventCreateWithFlags(cudaEvent_t *e, unsigned) { *e = (void *)1; return 0; }
inline cudaError_t cudaEventDestroy(cudaEvent_t) { return 0; }
inline cudaError_t cudaEventRecord(cudaEvent_t, cudaStream_t = 0) { return 0; }
inline cudaError_t cudaStreamWaitEvent(cudaStream_t, cudaEvent_t, unsigned = 0) { return 0; }
inline cudaError_t cudaStreamQuery(cudaStream_t) { return 0; }
inline cudaError_t cudaGetLastError() { return 0; }
inline const char *cudaGetErrorName(cudaError_t) { return "cudaErrorEmu"; }
inline const char *cudaGetErrorString(cudaError_t) { return "emulated error"; }
// Device memory: the emulated GPU holds 8 GiB, or FPTQ_EMU_GPU_BYTES, and
// refuses an allocation past it, so that a run under a small
// FPTQ_EMU_GPU_BYTES shows whether fptq's up-front estimate of its device
// memory covers what it allocates. Each block carries its size in front.
inline size_t emu_gpu_total() {
    const char *e = getenv("FPTQ_EMU_GPU_BYTES");
    return e ? (size_t)strtoull(e, NULL, 10) : (size_t)8 << 30;
}
inline std::atomic<size_t> &emu_gpu_used() { static std::atomic<size_t> used{0}; return used; }
enum { EMU_BLOCK_HEAD = 64 };
inline cudaError_t cudaMalloc(void **p, size_t n) {
    *p = NULL;
    if (n > ((size_t)1 << 40) || emu_gpu_used() + n > emu_gpu_total()) return cudaErrorMemoryAllocation;
    char *b = (char *)malloc(n + EMU_BLOCK_HEAD);
    if (!b) return cudaErrorMemoryAllocation;
    memcpy(b, &n, sizeof n);
    emu_gpu_used() += n;
    *p = b + EMU_BLOCK_HEAD;
    return 0;
}
template <typename T> inline cudaError_t cudaMalloc(T **p, size_t n) { return cudaMalloc((void **)p, n); }
inline cudaError_t cudaFree(void *p) {
    if (!p) return 0;
    char *b = (char *)p - EMU_BLOCK_HEAD;
    size_t n;
    memcpy(&n, b, sizeof n);
    emu_gpu_used() -= n;
    free(b);
    return 0;
}
inline cudaError_t cudaMallocHost(void **p, size_t n) { *p = malloc(n); return *p ? 0 : cudaErrorMemoryAllocation; }
inline cudaError_t cudaFreeHost(void *p) { free(p); return 0; }
inline cudaError_t cudaMemsetAsync(void *p, int v, size_t n, cudaStream_t = 0) { memset(p, v, n); return 0; }
inline cudaError_t cudaMemcpyAsync(void *d, const void *s, size_t n, cudaMemcpyKind, cudaStream_t = 0) { memmove(d, s, n); return 0; }
inline cudaError_t cudaGetDeviceProperties(cudaDeviceProp *p, int) { strcpy(p->name, "CPU emulation"); p->major = 9; p->minor = 0; p->multiProcessorCount = 1; return 0; }
inline cudaError_t cudaMemGetInfo(size_t *f, size_t *t) {
    *t = emu_gpu_total();
    *f = *t - emu_gpu_used();
    return 0;
}
template <typename F> inline cudaError_t cudaFuncGetAttributes(cudaFuncAttributes *, F) { return 0; }

// ---- intrinsics (compile with -ffp-contract=off) ----
inline float __fmul_rn(float a, float b) { return a * b; }
inline float __fadd_rn(float a, float b) { return a + b; }
inline float __fsub_rn(float a, float b) { return a - b; }
inline float __fdiv_rn(float a, float b) { return a / b; }
inline double __dmul_rn(double a, double b) { return a * b; }
inline double __dadd_rn(double a, double b) { return a + b; }
inline uint32_t __float_as_uint(float x) { uint32_t u; memcpy(&u, &x, 4); return u; }
inline float __uint_as_float(uint32_t u) { float x; memcpy(&x, &u, 4); return x; }
template <typename T> inline T __ldg(const T *p) { return *p; }
struct __nv_bfloat16 { uint16_t b; };
inline __nv_bfloat16 __float2bfloat16_rn(float x) {
    uint32_t u = __float_as_uint(x);
    if (isnan(x)) return {(uint16_t)((u >> 16) | 0x40)};
    return {(uint16_t)((u + 0x7FFFu + ((u >> 16) & 1u)) >> 16)};
}
inline uint16_t __bfloat16_as_ushort(__nv_bfloat16 b) { return b.b; }
inline __nv_bfloat16 __ushort_as_bfloat16(uint16_t u) { return {u}; }
inline float __bfloat162float(__nv_bfloat16 b) { return __uint_as_float((uint32_t)b.b << 16); }

// ---- fibers ----
void emu_barrier(int warp_scope);
void emu_exchange(const void *v, size_t bytes, int src_lane, void *out);
inline void __syncthreads() { emu_barrier(0); }
template <typename T> inline T __shfl_down_sync(unsigned, T v, int o) {
    T out; emu_exchange(&v, sizeof v, (int)(threadIdx.x & 31) + o, &out); return out;
}
template <typename T> inline T __shfl_xor_sync(unsigned, T v, int o) {
    T out; emu_exchange(&v, sizeof v, (int)(threadIdx.x & 31) ^ o, &out); return out;
}
void emu_run(dim3 g, dim3 b, void (*body)(void *), void *arg);

template <typename K> struct emu_launcher;
template <typename... P> struct emu_launcher<void (*)(P...)> {
    void (*k)(P...); dim3 g, b;
    void operator()(P... a) {
        auto call = [&]() { k(a...); };
        using C = decltype(call);
        emu_run(g, b, [](void *p) { (*(C *)p)(); }, &call);
    }
};
template <typename K, typename G, typename B, typename S, typename St>
emu_launcher<K> emu_make_launcher(K k, G g, B b, S, St) { return emu_launcher<K>{k, dim3(g), dim3(b)}; }
inline dim3 emu_dim(dim3 d) { return d; }

// ---- cuBLAS ----
typedef void *cublasHandle_t;
typedef int cublasStatus_t;
enum { CUBLAS_STATUS_SUCCESS = 0 };
typedef int cublasOperation_t;
enum { CUBLAS_OP_N = 0, CUBLAS_OP_T = 1 };
typedef int cublasFillMode_t;
enum { CUBLAS_FILL_MODE_LOWER = 0, CUBLAS_FILL_MODE_UPPER = 1 };
typedef int cublasDiagType_t;
enum { CUBLAS_DIAG_NON_UNIT = 0, CUBLAS_DIAG_UNIT = 1 };
enum { CUBLAS_DEFAULT_MATH = 0, CUBLAS_TF32_TENSOR_OP_MATH = 3, CUBLAS_POINTER_MODE_HOST = 0,
       CUBLAS_COMPUTE_32F = 68, CUBLAS_COMPUTE_32F_FAST_TF32 = 77, CUBLAS_GEMM_DEFAULT = -1 };
typedef int cublasComputeType_t;
typedef int cublasGemmAlgo_t;
inline cublasStatus_t cublasCreate(cublasHandle_t *h) { *h = (void *)1; return 0; }
inline cublasStatus_t cublasDestroy(cublasHandle_t) { return 0; }
inline cublasStatus_t cublasSetStream(cublasHandle_t, cudaStream_t) { return 0; }
inline cublasStatus_t cublasSetMathMode(cublasHandle_t, int) { return 0; }
inline cublasStatus_t cublasSetPointerMode(cublasHandle_t, int) { return 0; }
inline const char *cublasGetStatusString(cublasStatus_t) { return "CUBLAS_STATUS_EMU"; }
inline CBLAS_TRANSPOSE emu_tr(int t) { return t == CUBLAS_OP_T ? CblasTrans : CblasNoTrans; }
static inline std::vector<float> emu_f32(const void *p, int type, int64_t rows, int64_t cols, int64_t ld) {
    // a column-major operand with `cols` columns of `rows` (ld) as float
    std::vector<float> v((size_t)(ld * cols));
    for (int64_t j = 0; j < cols; j++)
        for (int64_t i = 0; i < rows; i++) {
            const int64_t k = j * ld + i;
            v[(size_t)k] = type == CUDA_R_16BF ? __bfloat162float(__ushort_as_bfloat16(((const uint16_t *)p)[k])) : ((const float *)p)[k];
        }
    return v;
}
inline cublasStatus_t cublasGemmEx_64(cublasHandle_t, int ta, int tb, int64_t m, int64_t n, int64_t k, const void *alpha,
                                      const void *A, int at, int64_t lda, const void *B, int bt, int64_t ldb, const void *beta,
                                      void *C, int, int64_t ldc, int, int) {
    if (lda < (ta == CUBLAS_OP_N ? m : k) || ldb < (tb == CUBLAS_OP_N ? k : n) || ldc < m) return 7;
    std::vector<float> a = emu_f32(A, at, ta == CUBLAS_OP_N ? m : k, ta == CUBLAS_OP_N ? k : m, lda);
    std::vector<float> b = emu_f32(B, bt, tb == CUBLAS_OP_N ? k : n, tb == CUBLAS_OP_N ? n : k, ldb);
    cblas_sgemm(CblasColMajor, emu_tr(ta), emu_tr(tb), (int)m, (int)n, (int)k, *(const float *)alpha, a.data(), (int)lda,
                b.data(), (int)ldb, *(const float *)beta, (float *)C, (int)ldc);
    return 0;
}
inline cublasStatus_t cublasGemmEx(cublasHandle_t h, int ta, int tb, int m, int n, int k, const void *alpha, const void *A,
                                   int at, int lda, const void *B, int bt, int ldb, const void *beta, void *C, int ct,
                                   int ldc, int comp, int algo) {
    return cublasGemmEx_64(h, ta, tb, m, n, k, alpha, A, at, lda, B, bt, ldb, beta, C, ct, ldc, comp, algo);
}
inline cublasStatus_t cublasSgemmStridedBatched(cublasHandle_t, int ta, int tb, int m, int n, int k, const float *alpha,
                                                const float *A, int lda, long long sa, const float *B, int ldb,
                                                long long sb, const float *beta, float *C, int ldc, long long sc, int batch) {
    for (int i = 0; i < batch; i++)
        cblas_sgemm(CblasColMajor, emu_tr(ta), emu_tr(tb), m, n, k, *alpha, A + i * sa, lda, B + i * sb, ldb, *beta,
                    C + i * sc, ldc);
    return 0;
}
inline cublasStatus_t cublasSsyrk_64(cublasHandle_t, int uplo, int t, int64_t n, int64_t k, const float *alpha,
                                     const float *A, int64_t lda, const float *beta, float *C, int64_t ldc) {
    cblas_ssyrk(CblasColMajor, uplo == CUBLAS_FILL_MODE_LOWER ? CblasLower : CblasUpper, emu_tr(t), (int)n, (int)k, *alpha,
                A, (int)lda, *beta, C, (int)ldc);
    return 0;
}

// ---- cuSOLVER ----
typedef void *cusolverDnHandle_t;
typedef void *cusolverDnParams_t;
typedef int cusolverStatus_t;
enum { CUSOLVER_STATUS_SUCCESS = 0, CUSOLVER_STATUS_NOT_INITIALIZED, CUSOLVER_STATUS_ALLOC_FAILED,
       CUSOLVER_STATUS_INVALID_VALUE, CUSOLVER_STATUS_ARCH_MISMATCH, CUSOLVER_STATUS_MAPPING_ERROR,
       CUSOLVER_STATUS_EXECUTION_FAILED, CUSOLVER_STATUS_INTERNAL_ERROR, CUSOLVER_STATUS_MATRIX_TYPE_NOT_SUPPORTED,
       CUSOLVER_STATUS_NOT_SUPPORTED };
typedef int cusolverDeterministicMode_t;
enum { CUSOLVER_DETERMINISTIC_RESULTS = 1 };
inline cusolverStatus_t cusolverDnCreate(cusolverDnHandle_t *h) { *h = (void *)1; return 0; }
inline cusolverStatus_t cusolverDnDestroy(cusolverDnHandle_t) { return 0; }
inline cusolverStatus_t cusolverDnSetStream(cusolverDnHandle_t, cudaStream_t) { return 0; }
inline cusolverStatus_t cusolverDnSetDeterministicMode(cusolverDnHandle_t, int) { return 0; }
inline cusolverStatus_t cusolverDnCreateParams(cusolverDnParams_t *p) { *p = (void *)1; return 0; }
inline cusolverStatus_t cusolverDnDestroyParams(cusolverDnParams_t) { return 0; }
inline cusolverStatus_t cusolverDnXpotrf_bufferSize(cusolverDnHandle_t, cusolverDnParams_t, int, int64_t, int, const void *,
                                                    int64_t, int, size_t *d, size_t *h) { *d = 16; *h = 0; return 0; }
inline cusolverStatus_t cusolverDnXpotrf(cusolverDnHandle_t, cusolverDnParams_t, int uplo, int64_t n, int, void *A,
                                         int64_t lda, int, void *, size_t, void *, size_t, int *info) {
    *info = LAPACKE_spotrf(LAPACK_COL_MAJOR, uplo == CUBLAS_FILL_MODE_LOWER ? 'L' : 'U', (int)n, (float *)A, (int)lda);
    return 0;
}
inline cusolverStatus_t cusolverDnXtrtri_bufferSize(cusolverDnHandle_t, int, int, int64_t, int, void *, int64_t, size_t *d,
                                                    size_t *h) { *d = 16; *h = 0; return 0; }
inline cusolverStatus_t cusolverDnXtrtri(cusolverDnHandle_t, int uplo, int diag, int64_t n, int, void *A, int64_t lda,
                                         void *, size_t, void *, size_t, int *info) {
    *info = LAPACKE_strtri(LAPACK_COL_MAJOR, uplo == CUBLAS_FILL_MODE_LOWER ? 'L' : 'U', diag == CUBLAS_DIAG_UNIT ? 'U' : 'N',
                           (int)n, (float *)A, (int)lda);
    return 0;
}
