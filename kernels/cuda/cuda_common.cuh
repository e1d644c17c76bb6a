/*
 * Shared by the CUDA sources of fptq (not a public header): the one device
 * context (stream, cuBLAS and cuSOLVER handles, scratch), and the checks that
 * turn every CUDA / cuBLAS / cuSOLVER failure into an fptq_status whose
 * message names file:line, the call and the library's own error string.
 */
#ifndef FPTQ_CUDA_COMMON_CUH
#define FPTQ_CUDA_COMMON_CUH

#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <cusolverDn.h>

#include <stdint.h>

#include "cuda_ops.h" /* C linkage, brings backend.h, quant.h and status.h */

/* ---- checks at the call site -------------------------------------------------- */

/* Records "<file>:<line>: <call>: <error string>" (the call cut to a readable
 * length) as an FPTQ_ERR_BACKEND failure and returns that status. */
fptq_status cuda_fail(const char *lib, const char *file, int line, const char *call, const char *err);
const char *cusolver_status_string(cusolverStatus_t s);

#define cudaCheck(call)                                                                       \
    do {                                                                                      \
        cudaError_t e_ = (call);                                                              \
        if (e_ != cudaSuccess)                                                                \
            return cuda_fail(cudaGetErrorName(e_), __FILE__, __LINE__, #call,                 \
                             cudaGetErrorString(e_));                                         \
    } while (0)
#define cublasCheck(call)                                                                     \
    do {                                                                                      \
        cublasStatus_t e_ = (call);                                                           \
        if (e_ != CUBLAS_STATUS_SUCCESS)                                                      \
            return cuda_fail("cuBLAS", __FILE__, __LINE__, #call, cublasGetStatusString(e_)); \
    } while (0)
#define cusolverCheck(call)                                                                   \
    do {                                                                                      \
        cusolverStatus_t e_ = (call);                                                         \
        if (e_ != CUSOLVER_STATUS_SUCCESS)                                                    \
            return cuda_fail("cuSOLVER", __FILE__, __LINE__, #call,                           \
                             cusolver_status_string(e_));                                     \
    } while (0)
/* After a kernel launch: a bad configuration shows here, a fault at the next sync. */
#define launchCheck() cudaCheck(cudaGetLastError())

/* Variants for functions with cleanup: store the status in st and jump. */
#define cudaCheckGoto(call, st, label)                                                        \
    do {                                                                                      \
        cudaError_t e_ = (call);                                                              \
        if (e_ != cudaSuccess) {                                                              \
            (st) = cuda_fail(cudaGetErrorName(e_), __FILE__, __LINE__, #call,                 \
                             cudaGetErrorString(e_));                                         \
            goto label;                                                                       \
        }                                                                                     \
    } while (0)
#define cublasCheckGoto(call, st, label)                                                      \
    do {                                                                                      \
        cublasStatus_t e_ = (call);                                                           \
        if (e_ != CUBLAS_STATUS_SUCCESS) {                                                    \
            (st) = cuda_fail("cuBLAS", __FILE__, __LINE__, #call, cublasGetStatusString(e_)); \
            goto label;                                                                       \
        }                                                                                     \
    } while (0)
#define cusolverCheckGoto(call, st, label)                                                    \
    do {                                                                                      \
        cusolverStatus_t e_ = (call);                                                         \
        if (e_ != CUSOLVER_STATUS_SUCCESS) {                                                  \
            (st) = cuda_fail("cuSOLVER", __FILE__, __LINE__, #call,                           \
                             cusolver_status_string(e_));                                     \
            goto label;                                                                       \
        }                                                                                     \
    } while (0)
#define launchCheckGoto(st, label) cudaCheckGoto(cudaGetLastError(), st, label)

/* ---- the device context ---------------------------------------------------------- */

/* One per process: the device, the stream every op is queued on (a blocking
 * stream, so legacy default-stream work by other code stays ordered with it),
 * and the library handles bound to that stream. Not thread-safe: one host
 * thread drives the GPU, as the worker does. */
typedef struct cuda_ctx {
    int ready;
    int device;
    cudaStream_t stream;
    cublasHandle_t blas;
    cusolverDnHandle_t solver;
    cusolverDnParams_t solver_params;
    int *d_info;            /* cuSOLVER's info word */
    cudaStream_t copy_stream; /* weight uploads (upload_async), beside the ops */
    cudaEvent_t marks[2];   /* mark(slot): where the ops were */
    cudaEvent_t copied;     /* wait_uploads: where the uploads were */
    void *scratch;          /* grown on demand, reused by ops in stream order */
    size_t scratch_bytes;
} cuda_ctx;

/* The context, created on first use (device 0 unless fptq_cuda_init chose one). */
fptq_status cuda_ctx_get(cuda_ctx **out);
/* A scratch buffer of at least `bytes`, valid until the next call (ops on the
 * one stream run in order, so an op may reuse what the previous op used). */
fptq_status cuda_scratch(size_t bytes, void **out);

/* Launch geometry: blocks of `threads` covering n items, capped for grid-stride loops. */
static inline unsigned cuda_blocks(int64_t n, int threads)
{
    int64_t b = (n + threads - 1) / threads;
    if (b < 1)
        b = 1;
    return (unsigned)(b > 65535 * 8 ? 65535 * 8 : b);
}

#define FPTQ_INT_LIMIT 2147483647LL

/* Fills the calibration and quantization entries of the backend table (cuda_quant.cu). */
void cuda_quant_table(fptq_backend *b);

#endif
