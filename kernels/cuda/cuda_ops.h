/*
 * The CUDA backend beyond the op table of kernels/backend.h: device set-up,
 * memory, bf16 GEMM, calibration statistics, RTN / FP8 quantizers, packing and
 * GPTQ, all on device memory, each the twin of a CPU function in quant.h.
 * C linkage; every function returns an fptq_status and never exits. Unless a
 * comment says "host", a pointer argument is device memory. Work is queued on
 * one stream (fptq_cuda_stream); functions that hand results to the host
 * (download, the GPTQ result) wait for it.
 */
#ifndef FPTQ_CUDA_OPS_H
#define FPTQ_CUDA_OPS_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" { /* the C headers below have no guards of their own */
#endif

#include "../backend.h"
#include "../quant.h"

/* ---- device, stream, memory ------------------------------------------------------ */

/* Chooses the device (the node-local rank's GPU in multi-rank runs); call it
 * before any other function, else device 0 is taken on first use. */
fptq_status fptq_cuda_init(int device);
/* Releases the handles, the stream and the scratch memory. */
void fptq_cuda_shutdown(void);
/* The cudaStream_t every op is queued on (void * to keep CUDA out of C code). */
void *fptq_cuda_stream(void);
/* Host: name, free and total memory, multiprocessors of the current device. */
fptq_status fptq_cuda_device_info(char *name, size_t name_cap, size_t *free_bytes,
                                  size_t *total_bytes, int *sm_count);

/* The memory ops of the table, also callable directly. alloc zeroes. */
fptq_status fptq_cuda_alloc(size_t bytes, const char *what, void **out);
void fptq_cuda_free(void *p);
fptq_status fptq_cuda_upload(void *dst, const void *host_src, size_t bytes);
fptq_status fptq_cuda_download(void *host_dst, const void *src, size_t bytes);
fptq_status fptq_cuda_copy(void *dst, const void *src, size_t bytes);
fptq_status fptq_cuda_memset(void *dst, int byte, size_t bytes);
fptq_status fptq_cuda_sync(void);
/* Page-locked host memory: uploads from it run at the bus rate. */
fptq_status fptq_cuda_host_alloc(size_t bytes, const char *what, void **out);
void fptq_cuda_host_free(void *p);

/* How the table's `linear` multiplies: "fp32" (default: fp32 inputs and
 * products, no TF32), "tf32" (tensor cores, 10-bit mantissa inputs) or
 * "bf16" (inputs rounded to bf16, fp32 products and sums). Other GEMMs
 * (statistics, GPTQ) stay fp32. */
fptq_status fptq_cuda_set_gemm(const char *mode);
const char *fptq_cuda_gemm_name(void);

/* ---- bf16 GEMM (inputs bf16, products and sums fp32) ---------------------------------- */

/* bf16 is stored as uint16_t: the top half of an fp32, rounded to nearest even. */
fptq_status fptq_cuda_f32_to_bf16(const float *x, int64_t n, uint16_t *y);
fptq_status fptq_cuda_bf16_to_f32(const uint16_t *x, int64_t n, float *y);
/* Y[n, out] (fp32) = X[n, in] W[out, in]^T (+ bias[out]), X and W bf16, fp32 accumulation. */
fptq_status fptq_cuda_linear_bf16(const uint16_t *X, int64_t n, int64_t in, const uint16_t *W,
                                  int64_t out, const float *bias, float *Y);

/* Synthetic data: x[i] uniform in [lo, hi), a counter-based hash of (seed, i). */
fptq_status fptq_cuda_fill_uniform(float *x, int64_t n, uint64_t seed, float lo, float hi);

/* ---- calibration statistics: a linear_stats whose arrays are device memory --------------- */

fptq_status fptq_cuda_stats_init(int64_t cols, linear_stats *s);
void fptq_cuda_stats_free(linear_stats *s);
fptq_status fptq_cuda_stats_reset(linear_stats *s);
/* xtx += X^T X (upper triangle, row-major, cublasSsyrk in fp32), sum |x|
 * (double), max |x|; deterministic: the same input gives the same bits. */
fptq_status fptq_cuda_stats_accumulate(linear_stats *s, const float *X, int64_t rows);
/* H = 2 xtx / tokens, full symmetric; H may be s->xtx (in place). */
fptq_status fptq_cuda_stats_hessian(const linear_stats *s, float *H);

/* ---- quantized tensors whose arrays are device memory ----------------------------------- */

fptq_status fptq_cuda_quant_tensor_alloc(const quant_spec *s, int64_t rows, int64_t cols,
                                         int with_g_idx, quant_tensor *q);
void fptq_cuda_quant_tensor_free(quant_tensor *q);
/* Copies a host tensor into a device one of the same spec and shape. */
fptq_status fptq_cuda_quant_tensor_upload(const quant_tensor *host, quant_tensor *d);
/* Copies a device tensor into a host one of the same spec and shape (quant_tensor_alloc). */
fptq_status fptq_cuda_quant_tensor_download(const quant_tensor *d, quant_tensor *host);
/* quant_rtn: identical codes, scales and zeros (same float operations). */
fptq_status fptq_cuda_quant_rtn(const float *W, int64_t rows, int64_t cols, const float *clip,
                                quant_tensor *q);
fptq_status fptq_cuda_quant_dequantize(const quant_tensor *q, float *W);
fptq_status fptq_cuda_quant_pack_int32(const uint8_t *codes, int64_t rows, int64_t cols, int bits,
                                       int32_t *packed);
fptq_status fptq_cuda_quant_unpack_int32(const int32_t *packed, int64_t rows, int64_t cols,
                                         int bits, uint8_t *codes);
/* fp8_e4m3_from_f32 / fp8_e4m3_to_f32, bit for bit. */
fptq_status fptq_cuda_fp8_from_f32(const float *x, int64_t n, uint8_t *y);
fptq_status fptq_cuda_fp8_to_f32(const uint8_t *x, int64_t n, float *y);

/* ---- GPTQ ---------------------------------------------------------------------------------- */

/* Host wall-clock seconds of the phases of one call. */
typedef struct fptq_cuda_gptq_times {
    double prepare_s;  /* copy, dead columns, up-front group fits, act-order permutation */
    double factor_s;   /* damped H, Cholesky, triangular inverse (retries included) */
    double blocks_s;   /* in-block column kernels and the lazy trailing sgemm */
    double finish_s;   /* un-permutation, losses to the host */
} fptq_cuda_gptq_times;

/* gptq_quantize on the GPU, with the same options, conventions and result
 * (quant.h). H^-1's upper Cholesky factor comes from cuSOLVER (potrf and
 * trtri of the reversed matrix, see cuda_quant.cu); the in-block column
 * updates are fptq's kernel with the CPU's float operations; the trailing
 * update is an fp32 sgemm. W and H are not modified; Q (device, optional)
 * gets the dequantized weights; times (host, optional). */
fptq_status fptq_cuda_gptq_quantize(const float *W, int64_t rows, int64_t cols, const float *H,
                                    const gptq_opts *o, quant_tensor *q, float *Q, gptq_result *r,
                                    fptq_cuda_gptq_times *times);
/* The same with W as the work buffer (no rows x cols copy): W ends holding
 * the dequantized weights, in the original column order. */
fptq_status fptq_cuda_gptq_quantize_inplace(float *W, int64_t rows, int64_t cols, const float *H,
                                            const gptq_opts *o, quant_tensor *q, gptq_result *r,
                                            fptq_cuda_gptq_times *times);

#ifdef __cplusplus
}
#endif

#endif
