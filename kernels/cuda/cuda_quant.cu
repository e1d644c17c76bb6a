/*
 * The quantizers of quant.h on the GPU: calibration statistics (cublasSsyrk
 * in fp32, |x| sums and maxima), RTN, dequantize, int32 packing, FP8 E4M3,
 * and GPTQ. Each repeats its CPU twin's float operations, so RTN, packing
 * and FP8 codes agree bit for bit; GPTQ differs only where cuSOLVER's
 * factor and cuBLAS's sums round differently from LAPACK's and OpenBLAS's.
 */
#include "cuda_common.cuh"
#include "../quant_scalar.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define GRID_STRIDE(i, n)                                                                   \
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < (n);               \
         i += (int64_t)gridDim.x * blockDim.x)


/* ---- calibration statistics ------------------------------------------------------------ */

extern "C" fptq_status fptq_cuda_stats_init(int64_t cols, linear_stats *s)
{
    memset(s, 0, sizeof *s);
    if (cols <= 0 || cols > FPTQ_INT_LIMIT)
        return FPTQ_FAIL(FPTQ_ERR_ARG, "linear_stats: %lld input columns (1..2^31-1)", (long long)cols);
    fptq_status st;
    FPTQ_TRY_GOTO(fptq_cuda_alloc((size_t)cols * (size_t)cols * sizeof(float), "X^T X statistics (GPU)",
                                  (void **)&s->xtx), st, fail);
    FPTQ_TRY_GOTO(fptq_cuda_alloc((size_t)cols * sizeof(double), "sum |x| statistics (GPU)",
                                  (void **)&s->abs_sum), st, fail);
    FPTQ_TRY_GOTO(fptq_cuda_alloc((size_t)cols * sizeof(float), "max |x| statistics (GPU)",
                                  (void **)&s->abs_max), st, fail);
    s->cols = cols;
    return FPTQ_OK;
fail:
    fptq_cuda_stats_free(s);
    return st;
}

extern "C" void fptq_cuda_stats_free(linear_stats *s)
{
    if (!s)
        return;
    fptq_cuda_free(s->xtx);
    fptq_cuda_free(s->abs_sum);
    fptq_cuda_free(s->abs_max);
    memset(s, 0, sizeof *s);
}

extern "C" fptq_status fptq_cuda_stats_reset(linear_stats *s)
{
    const size_t n = (size_t)s->cols;
    FPTQ_TRY(fptq_cuda_memset(s->xtx, 0, n * n * sizeof(float)));
    FPTQ_TRY(fptq_cuda_memset(s->abs_sum, 0, n * sizeof(double)));
    FPTQ_TRY(fptq_cuda_memset(s->abs_max, 0, n * sizeof(float)));
    s->tokens = 0;
    return FPTQ_OK;
}

/* Per column (thread), a slice of rows (blockIdx.y): the partial sum and max
 * of |x|. Coalesced: neighbouring threads read neighbouring columns. */
__global__ void abs_stats_partial_kernel(const float *X, int64_t rows, int64_t cols,
                                         int64_t rows_per_slice, double *psum, float *pmax)
{
    const int64_t c = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
    if (c >= cols)
        return;
    const int64_t r0 = (int64_t)blockIdx.y * rows_per_slice;
    const int64_t r1 = r0 + rows_per_slice < rows ? r0 + rows_per_slice : rows;
    double acc = 0.0;
    float mx = 0.0f;
    for (int64_t r = r0; r < r1; r++) {
        const float a = fabsf(X[r * cols + c]);
        acc += (double)a;
        mx = a > mx ? a : mx;
    }
    psum[(int64_t)blockIdx.y * cols + c] = acc;
    pmax[(int64_t)blockIdx.y * cols + c] = mx;
}

/* The slices in a fixed order: the same input gives the same bits every run. */
__global__ void abs_stats_combine_kernel(int64_t cols, int64_t slices, const double *psum,
                                         const float *pmax, double *abs_sum, float *abs_max)
{
    GRID_STRIDE(c, cols)
    {
        double acc = 0.0;
        float mx = abs_max[c];
        for (int64_t k = 0; k < slices; k++) {
            acc += psum[k * cols + c];
            const float m = pmax[k * cols + c];
            mx = m > mx ? m : mx;
        }
        abs_sum[c] += acc;
        abs_max[c] = mx;
    }
}

extern "C" fptq_status fptq_cuda_stats_accumulate(linear_stats *s, const float *X, int64_t rows)
{
    if (rows < 0)
        return FPTQ_FAIL(FPTQ_ERR_ARG, "linear_stats: %lld rows", (long long)rows);
    if (rows == 0)
        return FPTQ_OK;
    cuda_ctx *c;
    FPTQ_TRY(cuda_ctx_get(&c));
    const int64_t cols = s->cols;
    /* Row-major X [rows, cols] is column-major X^T (cols x rows): X^T X = A A^T,
     * whose column-major lower triangle is the row-major upper one the CPU keeps. */
    const float one = 1.0f;
    cublasCheck(cublasSsyrk_64(c->blas, CUBLAS_FILL_MODE_LOWER, CUBLAS_OP_N, cols, rows, &one, X,
                               cols, &one, s->xtx, cols));
    int64_t slices = (rows + 127) / 128;
    slices = slices > 64 ? 64 : slices;
    const int64_t per_slice = (rows + slices - 1) / slices;
    void *scratch;
    FPTQ_TRY(cuda_scratch((size_t)(slices * cols) * (sizeof(double) + sizeof(float)), &scratch));
    double *psum = (double *)scratch;
    float *pmax = (float *)(psum + slices * cols);
    const dim3 grid((unsigned)((cols + 255) / 256), (unsigned)slices);
    abs_stats_partial_kernel<<<grid, 256, 0, c->stream>>>(X, rows, cols, per_slice, psum, pmax);
    launchCheck();
    abs_stats_combine_kernel<<<cuda_blocks(cols, 256), 256, 0, c->stream>>>(cols, slices, psum, pmax,
                                                                             s->abs_sum, s->abs_max);
    launchCheck();
    s->tokens += rows;
    return FPTQ_OK;
}

/* H = 2 xtx / tokens from the upper triangle, mirrored; safe in place: the
 * thread of (i <= j) alone reads and writes [i, j], and writes [j, i]. */
__global__ void hessian_kernel(const float *xtx, int64_t n, double f, float *H)
{
    GRID_STRIDE(idx, n * n)
    {
        const int64_t i = idx / n, j = idx % n;
        if (i > j)
            continue;
        const float h = (float)__dmul_rn(f, (double)xtx[idx]);
        H[i * n + j] = h;
        H[j * n + i] = h;
    }
}

extern "C" fptq_status fptq_cuda_stats_hessian(const linear_stats *s, float *H)
{
    if (s->tokens <= 0)
        return FPTQ_FAIL(FPTQ_ERR_ARG, "Hessian of a %lld-input linear: no calibration tokens",
                         (long long)s->cols);
    cuda_ctx *c;
    FPTQ_TRY(cuda_ctx_get(&c));
    const int64_t n = s->cols;
    hessian_kernel<<<cuda_blocks(n * n, 256), 256, 0, c->stream>>>(s->xtx, n, 2.0 / (double)s->tokens, H);
    launchCheck();
    return FPTQ_OK;
}

/* ---- quantized tensors ---------------------------------------------------------------------- */

extern "C" fptq_status fptq_cuda_quant_tensor_alloc(const quant_spec *s, int64_t rows, int64_t cols,
                                                    int with_g_idx, quant_tensor *q)
{
    FPTQ_TRY(quant_tensor_shape(s, rows, cols, q));
    fptq_status st;
    int32_t *g = NULL;
    FPTQ_TRY_GOTO(fptq_cuda_alloc((size_t)(rows * cols), "quantized codes (GPU)", (void **)&q->codes),
                  st, fail);
    FPTQ_TRY_GOTO(fptq_cuda_alloc((size_t)(rows * q->n_groups) * sizeof(float),
                                  "quantization scales (GPU)", (void **)&q->scales), st, fail);
    if (s->format == QFMT_INT)
        FPTQ_TRY_GOTO(fptq_cuda_alloc((size_t)(rows * q->n_groups) * sizeof(int32_t),
                                      "quantization zeros (GPU)", (void **)&q->zeros), st, fail);
    if (with_g_idx) {
        FPTQ_TRY_GOTO(fptq_cuda_alloc((size_t)cols * sizeof(int32_t), "group index (GPU)",
                                      (void **)&q->g_idx), st, fail);
        FPTQ_TRY_GOTO(fptq_calloc((size_t)cols, sizeof(int32_t), "group index", &g), st, fail);
        for (int64_t c = 0; c < cols; c++)
            g[c] = (int32_t)(s->format == QFMT_INT && s->group_size > 0 ? c / s->group_size : 0);
        FPTQ_TRY_GOTO(fptq_cuda_upload(q->g_idx, g, (size_t)cols * sizeof(int32_t)), st, fail);
        free(g);
    }
    return FPTQ_OK;
fail:
    free(g);
    fptq_cuda_quant_tensor_free(q);
    return st;
}

extern "C" void fptq_cuda_quant_tensor_free(quant_tensor *q)
{
    if (!q)
        return;
    fptq_cuda_free(q->codes);
    fptq_cuda_free(q->scales);
    fptq_cuda_free(q->zeros);
    fptq_cuda_free(q->g_idx);
    memset(q, 0, sizeof *q);
}

/* Host <-> device copy of a quantized tensor's arrays, same spec and shape on both sides. */
static fptq_status quant_tensor_move(const quant_tensor *src, quant_tensor *dst, int to_device)
{
    if (dst->rows != src->rows || dst->cols != src->cols || dst->n_groups != src->n_groups ||
        dst->spec.format != src->spec.format || (!dst->g_idx) != (!src->g_idx) || (!dst->zeros) != (!src->zeros))
        return FPTQ_FAIL(FPTQ_ERR_ARG, "quant tensor %s: [%lld, %lld] x %lld groups into [%lld, %lld] x %lld groups",
                         to_device ? "upload" : "download", (long long)src->rows, (long long)src->cols,
                         (long long)src->n_groups, (long long)dst->rows, (long long)dst->cols,
                         (long long)dst->n_groups);
    fptq_status (*move)(void *, const void *, size_t) = to_device ? fptq_cuda_upload : fptq_cuda_download;
    const size_t nrg = (size_t)(src->rows * src->n_groups);
    FPTQ_TRY(move(dst->codes, src->codes, (size_t)(src->rows * src->cols)));
    FPTQ_TRY(move(dst->scales, src->scales, nrg * sizeof(float)));
    if (src->zeros)
        FPTQ_TRY(move(dst->zeros, src->zeros, nrg * sizeof(int32_t)));
    if (src->g_idx)
        FPTQ_TRY(move(dst->g_idx, src->g_idx, (size_t)src->cols * sizeof(int32_t)));
    dst->spec = src->spec;
    return FPTQ_OK;
}

extern "C" fptq_status fptq_cuda_quant_tensor_download(const quant_tensor *d, quant_tensor *h)
{
    return quant_tensor_move(d, h, 0);
}

extern "C" fptq_status fptq_cuda_quant_tensor_upload(const quant_tensor *h, quant_tensor *d)
{
    return quant_tensor_move(h, d, 1);
}

/* ---- RTN ----------------------------------------------------------------------------------------- */

__device__ __forceinline__ float warp_min_f(float v)
{
    for (int o = 16; o > 0; o >>= 1) {
        const float u = __shfl_xor_sync(0xffffffffu, v, o);
        v = u < v ? u : v;
    }
    return v;
}

__device__ __forceinline__ float warp_max_f(float v)
{
    for (int o = 16; o > 0; o >>= 1) {
        const float u = __shfl_xor_sync(0xffffffffu, v, o);
        v = u > v ? u : v;
    }
    return v;
}

/* One warp per (row, group): the min-max fit (quant_fit_int; min and max are
 * exact in any order), then the codes when `codes` is given. gs is the
 * group width (cols for one group per row). */
__global__ void rtn_int_kernel(const float *W, int64_t rows, int64_t cols, int64_t gs, int64_t ng,
                               int bits, int sym, const float *clip, uint8_t *codes, float *scales,
                               int32_t *zeros)
{
    const int lane = threadIdx.x & 31;
    const int64_t warp = (blockIdx.x * (int64_t)blockDim.x + threadIdx.x) >> 5;
    const int64_t n_warps = ((int64_t)gridDim.x * blockDim.x) >> 5;
    for (int64_t task = warp; task < rows * ng; task += n_warps) {
        const int64_t r = task / ng, g = task % ng;
        const int64_t c0 = g * gs, c1 = c0 + gs < cols ? c0 + gs : cols;
        const float *w = W + r * cols;
        float xmin = 0.0f, xmax = 0.0f;
        for (int64_t c = c0 + lane; c < c1; c += 32) {
            const float v = w[c];
            xmin = v < xmin ? v : xmin;
            xmax = v > xmax ? v : xmax;
        }
        xmin = warp_min_f(xmin);
        xmax = warp_max_f(xmax);
        float s;
        int32_t z;
        qs_fit_range(xmin, xmax, bits, sym, clip ? clip[r * ng + g] : 1.0f, &s, &z);
        if (lane == 0) {
            scales[r * ng + g] = s;
            zeros[r * ng + g] = z;
        }
        if (codes)
            for (int64_t c = c0 + lane; c < c1; c += 32)
                codes[r * cols + c] = qs_int_code(w[c], s, z, bits);
    }
}

/* One warp per row: scale = clip * max|w| / 448, codes e4m3(w / scale). */
__global__ void rtn_fp8_kernel(const float *W, int64_t rows, int64_t cols, const float *clip,
                               uint8_t *codes, float *scales)
{
    const int lane = threadIdx.x & 31;
    const int64_t warp = (blockIdx.x * (int64_t)blockDim.x + threadIdx.x) >> 5;
    const int64_t n_warps = ((int64_t)gridDim.x * blockDim.x) >> 5;
    for (int64_t r = warp; r < rows; r += n_warps) {
        const float *w = W + r * cols;
        float amax = 0.0f;
        for (int64_t c = lane; c < cols; c += 32) {
            const float a = fabsf(w[c]);
            amax = a > amax ? a : amax;
        }
        amax = warp_max_f(amax);
        float s = __fdiv_rn(__fmul_rn(clip ? clip[r] : 1.0f, amax), 448.0f);
        s = s > 0.0f && isfinite(s) ? s : 1.0f;
        if (lane == 0)
            scales[r] = s;
        for (int64_t c = lane; c < cols; c += 32)
            codes[r * cols + c] = qs_fp8_e4m3_from_f32(__fdiv_rn(w[c], s));
    }
}

__global__ void g_idx_fill_kernel(int32_t *g_idx, int64_t cols, int64_t gs)
{
    GRID_STRIDE(c, cols)
    g_idx[c] = (int32_t)(gs > 0 ? c / gs : 0);
}

static unsigned warp_blocks(int64_t tasks)
{
    /* 8 warps a block */
    return cuda_blocks(tasks * 32, 256);
}

extern "C" fptq_status fptq_cuda_quant_rtn(const float *W, int64_t rows, int64_t cols,
                                           const float *clip, quant_tensor *q)
{
    FPTQ_TRY(quant_spec_check(&q->spec));
    if (q->rows != rows || q->cols != cols || !q->codes || !q->scales)
        return FPTQ_FAIL(FPTQ_ERR_ARG, "quant_rtn: tensor is [%lld, %lld], weights [%lld, %lld]",
                         (long long)q->rows, (long long)q->cols, (long long)rows, (long long)cols);
    cuda_ctx *c;
    FPTQ_TRY(cuda_ctx_get(&c));
    const int64_t ng = q->n_groups;
    if (q->spec.format == QFMT_FP8_E4M3) {
        rtn_fp8_kernel<<<warp_blocks(rows), 256, 0, c->stream>>>(W, rows, cols, clip, q->codes,
                                                                 q->scales);
        launchCheck();
        return FPTQ_OK;
    }
    if (!q->zeros)
        return FPTQ_FAIL(FPTQ_ERR_ARG, "quant_rtn: INT tensor without zeros");
    const int64_t gs = q->spec.group_size > 0 ? q->spec.group_size : cols;
    if (q->g_idx) {
        g_idx_fill_kernel<<<cuda_blocks(cols, 256), 256, 0, c->stream>>>(q->g_idx, cols, gs);
        launchCheck();
    }
    rtn_int_kernel<<<warp_blocks(rows * ng), 256, 0, c->stream>>>(
        W, rows, cols, gs, ng, q->spec.bits, q->spec.sym, clip, q->codes, q->scales, q->zeros);
    launchCheck();
    return FPTQ_OK;
}

__global__ void dequantize_kernel(const uint8_t *codes, const float *scales, const int32_t *zeros,
                                  const int32_t *g_idx, int64_t rows, int64_t cols, int64_t ng,
                                  int64_t gs, int is_int, float *W)
{
    GRID_STRIDE(idx, rows * cols)
    {
        const int64_t r = idx / cols, c = idx % cols;
        const int64_t g = g_idx ? g_idx[c] : c / gs;
        const float s = scales[r * ng + g];
        W[idx] = is_int ? __fmul_rn((float)((int32_t)codes[idx] - zeros[r * ng + g]), s)
                        : __fmul_rn(qs_fp8_e4m3_to_f32(codes[idx]), s);
    }
}

extern "C" fptq_status fptq_cuda_quant_dequantize(const quant_tensor *q, float *W)
{
    cuda_ctx *c;
    FPTQ_TRY(cuda_ctx_get(&c));
    const int is_int = q->spec.format == QFMT_INT;
    if (is_int && !q->zeros)
        return FPTQ_FAIL(FPTQ_ERR_ARG, "dequantize: INT tensor without zeros");
    const int64_t gs = is_int && q->spec.group_size > 0 ? q->spec.group_size : q->cols;
    dequantize_kernel<<<cuda_blocks(q->rows * q->cols, 256), 256, 0, c->stream>>>(
        q->codes, q->scales, q->zeros, q->g_idx, q->rows, q->cols, q->n_groups, gs, is_int, W);
    launchCheck();
    return FPTQ_OK;
}

/* ---- int32 packing ---------------------------------------------------------------------------------- */

__global__ void pack_kernel(const uint8_t *codes, int64_t rows, int64_t cols, int bits, int64_t pc,
                            int32_t *packed)
{
    const int per_word = 32 / bits;
    const uint32_t mask = (1u << bits) - 1u;
    GRID_STRIDE(idx, rows * pc)
    {
        const int64_t r = idx / pc, p = idx % pc;
        uint32_t word = 0;
        for (int k = 0; k < per_word; k++) {
            const int64_t c = p * per_word + k;
            if (c < cols)
                word |= ((uint32_t)codes[r * cols + c] & mask) << (k * bits);
        }
        packed[idx] = (int32_t)word; /* the bit pattern */
    }
}

__global__ void unpack_kernel(const int32_t *packed, int64_t rows, int64_t cols, int bits, int64_t pc,
                              uint8_t *codes)
{
    const int per_word = 32 / bits;
    const uint32_t mask = (1u << bits) - 1u;
    GRID_STRIDE(idx, rows * cols)
    {
        const int64_t r = idx / cols, c = idx % cols;
        const uint32_t word = (uint32_t)packed[r * pc + c / per_word];
        codes[idx] = (uint8_t)((word >> ((c % per_word) * bits)) & mask);
    }
}

extern "C" fptq_status fptq_cuda_quant_pack_int32(const uint8_t *codes, int64_t rows, int64_t cols,
                                                  int bits, int32_t *packed)
{
    if (bits < 1 || bits > 8)
        return FPTQ_FAIL(FPTQ_ERR_ARG, "pack: %d bits", bits);
    if (rows <= 0 || cols <= 0)
        return FPTQ_OK;
    cuda_ctx *c;
    FPTQ_TRY(cuda_ctx_get(&c));
    const int64_t pc = quant_packed_cols(cols, bits);
    pack_kernel<<<cuda_blocks(rows * pc, 256), 256, 0, c->stream>>>(codes, rows, cols, bits, pc, packed);
    launchCheck();
    return FPTQ_OK;
}

extern "C" fptq_status fptq_cuda_quant_unpack_int32(const int32_t *packed, int64_t rows, int64_t cols,
                                                    int bits, uint8_t *codes)
{
    if (bits < 1 || bits > 8)
        return FPTQ_FAIL(FPTQ_ERR_ARG, "unpack: %d bits", bits);
    if (rows <= 0 || cols <= 0)
        return FPTQ_OK;
    cuda_ctx *c;
    FPTQ_TRY(cuda_ctx_get(&c));
    const int64_t pc = quant_packed_cols(cols, bits);
    unpack_kernel<<<cuda_blocks(rows * cols, 256), 256, 0, c->stream>>>(packed, rows, cols, bits, pc, codes);
    launchCheck();
    return FPTQ_OK;
}

/* ---- FP8 E4M3 --------------------------------------------------------------------------------------- */

__global__ void fp8_from_f32_kernel(const float *x, int64_t n, uint8_t *y)
{
    GRID_STRIDE(i, n)
    y[i] = qs_fp8_e4m3_from_f32(x[i]);
}

__global__ void fp8_to_f32_kernel(const uint8_t *x, int64_t n, float *y)
{
    GRID_STRIDE(i, n)
    y[i] = qs_fp8_e4m3_to_f32(x[i]);
}

extern "C" fptq_status fptq_cuda_fp8_from_f32(const float *x, int64_t n, uint8_t *y)
{
    if (n <= 0)
        return FPTQ_OK;
    cuda_ctx *c;
    FPTQ_TRY(cuda_ctx_get(&c));
    fp8_from_f32_kernel<<<cuda_blocks(n, 256), 256, 0, c->stream>>>(x, n, y);
    launchCheck();
    return FPTQ_OK;
}

extern "C" fptq_status fptq_cuda_fp8_to_f32(const uint8_t *x, int64_t n, float *y)
{
    if (n <= 0)
        return FPTQ_OK;
    cuda_ctx *c;
    FPTQ_TRY(cuda_ctx_get(&c));
    fp8_to_f32_kernel<<<cuda_blocks(n, 256), 256, 0, c->stream>>>(x, n, y);
    launchCheck();
    return FPTQ_OK;
}

/* ---- GPTQ ------------------------------------------------------------------------------------------------ */

/*
 * The layout follows gptq_quantize (quant.c) and GPTQ.fasterquant:
 *   W (work, [rows, cols], columns permuted under act-order), dead columns zeroed;
 *   Hinv = upper Cholesky factor of (H + damp I)^-1;
 *   for each block [i1, i2): the in-block kernel quantizes the block's columns
 *   one by one for every row (rows are independent: one thread per row),
 *   writes Err1 [count, rows] (transposed, as the CPU), then the trailing
 *   update W[:, i2:] -= Err1^T Hinv[i1:i2, i2:] is one fp32 sgemm.
 *
 * The factor. fasterquant computes cholesky(cholesky_inverse(cholesky(H)),
 * upper): three O(n^3) steps. With J the reversal permutation, if
 * J H J = L L^T (Cholesky, L lower) then H = R R^T with R = J L J upper,
 * H^-1 = R^-T R^-1, so U = R^-1 = J L^-1 J is upper with U^T U = H^-1: the
 * same unique factor, from one potrf and one trtri (2/3 n^3 flops against
 * 4/3). J H J is H with its flat storage reversed, and U's row-major storage
 * is L^-1's column-major storage reversed and transposed: two cheap passes.
 */

/* diag[c] = H[c, c] */
__global__ void diag_kernel(const float *H, int64_t n, float *diag)
{
    GRID_STRIDE(c, n)
    diag[c] = H[c * n + c];
}

/* W[:, c] = 0 where H[c, c] == 0 */
__global__ void zero_dead_kernel(float *W, int64_t rows, int64_t cols, const uint8_t *dead)
{
    GRID_STRIDE(idx, rows * cols)
    if (dead[idx % cols])
        W[idx] = 0.0f;
}

/* dst[r, j] = src[r, perm[j]] */
__global__ void permute_cols_kernel(const float *src, int64_t rows, int64_t cols, const int32_t *perm,
                                    float *dst)
{
    GRID_STRIDE(idx, rows * cols)
    {
        const int64_t r = idx / cols, j = idx % cols;
        dst[idx] = src[r * cols + perm[j]];
    }
}

/* dst[r, perm[j]] = src[r, j], for floats (Q) and bytes (codes) */
template <typename T>
__global__ void unpermute_cols_kernel(const T *src, int64_t rows, int64_t cols, const int32_t *perm,
                                      T *dst)
{
    GRID_STRIDE(idx, rows * cols)
    {
        const int64_t r = idx / cols, j = idx % cols;
        dst[r * cols + perm[j]] = src[idx];
    }
}

/* A = J (H[perm][:, perm] with dead diagonals 1, + damp I) J, i.e. stored reversed */
__global__ void build_damped_reversed_kernel(const float *H, int64_t n, const int32_t *perm,
                                             float damp, float *A)
{
    GRID_STRIDE(idx, n * n)
    {
        const int64_t i = idx / n, j = idx % n;
        const int64_t pi = perm ? perm[i] : i, pj = perm ? perm[j] : j;
        float v = H[pi * n + pj];
        if (i == j) {
            if (v == 0.0f)
                v = 1.0f;
            v = __fadd_rn(v, damp);
        }
        A[n * n - 1 - idx] = v;
    }
}

/* In place: column-major lower L^-1 -> row-major upper U = J L^-1 J, zeros below.
 * Position p = (i, j) takes q = (n-1-j, n-1-i) and q takes p; each pair once. */
__global__ void reverse_transpose_upper_kernel(float *A, int64_t n)
{
    GRID_STRIDE(p, n * n)
    {
        const int64_t i = p / n, j = p % n;
        const int64_t q = (n - 1 - j) * n + (n - 1 - i);
        if (p > q)
            continue;
        if (i <= j) {
            const float a = A[p], b = A[q];
            A[p] = b;
            A[q] = a;
        } else {
            A[p] = 0.0f;
            A[q] = 0.0f;
        }
    }
}

typedef struct gptq_kargs {
    int64_t rows, cols, gs, ng, i1, count;
    int bits, sym, act_order;
    float maxq;
    float *W;             /* [rows, cols] work; finished columns take Q */
    const float *Hinv;    /* [cols, cols] row-major upper factor */
    const int32_t *perm;  /* act-order: permuted column -> original column */
    float *Err1;          /* [count, rows] */
    float *W1t;           /* [count, rows] when the block does not fit shared memory */
    double *Losses;       /* [rows] */
    float *scales;        /* [rows, ng] */
    int32_t *zeros;       /* [rows, ng] */
    uint8_t *codes;       /* [rows, cols], in the order columns are quantized */
} gptq_kargs;

/* One thread per row, the block's columns in order, the CPU's operations
 * (gptq_fit_group_tile, gptq_quant_column, gptq_update_columns) one for one.
 * The row's slice of the block lives in shared memory, column-major across
 * the thread block's rows (conflict-free), or in W1t when it does not fit. */
__global__ void gptq_block_kernel(gptq_kargs a, int use_shared)
{
    extern __shared__ float smem[];
    const int64_t r = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
    if (r >= a.rows)
        return;
    const int64_t rows = a.rows, cols = a.cols, i1 = a.i1, count = a.count, i2 = i1 + count;
    const int64_t gs = a.gs, ng = a.ng;
    float *w1 = use_shared ? smem + threadIdx.x : a.W1t + r;
    const int64_t stride = use_shared ? blockDim.x : rows;
    float *Wr = a.W + r * cols;
    for (int64_t i = 0; i < count; i++)
        w1[i * stride] = Wr[i1 + i];

    float scale = 1.0f, zero = 0.0f;
    if (gs == 0 || (!a.act_order && i1 % gs != 0)) {
        const int64_t g = gs == 0 ? 0 : i1 / gs;
        scale = a.scales[r * ng + g];
        zero = (float)a.zeros[r * ng + g];
    }
    double loss = 0.0;
    for (int64_t i = 0; i < count; i++) {
        const int64_t j = i1 + i;
        if (gs > 0) {
            if (!a.act_order) {
                if (j % gs == 0) {
                    /* the group [j, gend) as an unblocked GPTQ sees it */
                    const int64_t gend = j + gs < cols ? j + gs : cols;
                    float xmin = 0.0f, xmax = 0.0f;
                    for (int64_t c = j; c < (gend < i2 ? gend : i2); c++) {
                        const float v = w1[(c - i1) * stride];
                        xmin = v < xmin ? v : xmin;
                        xmax = v > xmax ? v : xmax;
                    }
                    for (int64_t c = i2; c < gend; c++) {
                        float v = Wr[c];
                        for (int64_t k = 0; k < i; k++)
                            v = __fsub_rn(v, __fmul_rn(a.Err1[k * rows + r],
                                                       __ldg(&a.Hinv[(i1 + k) * cols + c])));
                        xmin = v < xmin ? v : xmin;
                        xmax = v > xmax ? v : xmax;
                    }
                    int32_t z;
                    qs_fit_range(xmin, xmax, a.bits, a.sym, 1.0f, &scale, &z);
                    a.scales[r * ng + j / gs] = scale;
                    a.zeros[r * ng + j / gs] = z;
                    zero = (float)z;
                }
            } else {
                const int64_t g = a.perm[j] / gs;
                scale = a.scales[r * ng + g];
                zero = (float)a.zeros[r * ng + g];
            }
        }
        const float w = w1[i * stride];
        const float d = __ldg(&a.Hinv[j * cols + j]);
        float v = __fadd_rn(rintf(__fdiv_rn(w, scale)), zero);
        v = v > 0.0f ? (v < a.maxq ? v : a.maxq) : 0.0f;
        const float q1 = __fmul_rn(__fsub_rn(v, zero), scale);
        const float err = __fdiv_rn(__fsub_rn(w, q1), d);
        a.codes[r * cols + j] = (uint8_t)v;
        Wr[j] = q1; /* column j is finished: nothing reads W[:, j] again */
        a.Err1[i * rows + r] = err;
        loss = __dadd_rn(loss, __dmul_rn((double)err, (double)err));
        const float *h = a.Hinv + j * cols + i1;
        for (int64_t k = i + 1; k < count; k++)
            w1[k * stride] = __fsub_rn(w1[k * stride], __fmul_rn(err, __ldg(&h[k])));
    }
    a.Losses[r] += loss;
}

/* act-order: descending diag H, ties by index (quant.c's diag_key_cmp) */
typedef struct diag_key {
    float h;
    int64_t idx;
} diag_key;

static int diag_key_cmp(const void *pa, const void *pb)
{
    const diag_key *a = (const diag_key *)pa, *b = (const diag_key *)pb;
    const int na = isnan(a->h), nb = isnan(b->h);
    if (na != nb)
        return na - nb;
    if (!na && a->h != b->h)
        return a->h > b->h ? -1 : 1;
    return (a->idx > b->idx) - (a->idx < b->idx);
}

static fptq_status read_info(cuda_ctx *c, int *info)
{
    cudaCheck(cudaMemcpyAsync(info, c->d_info, sizeof(int), cudaMemcpyDeviceToHost, c->stream));
    cudaCheck(cudaStreamSynchronize(c->stream));
    return FPTQ_OK;
}

/* Hinv (A, cols x cols) from H: damping retried as the CPU does. Returns 0 or
 * the failing step (1: Cholesky, 2: triangular inverse) in *step. */
static fptq_status gptq_factor(cuda_ctx *c, const float *H, int64_t n, const int32_t *d_perm,
                               float damp0, int max_retries, float *A, float *damp_out,
                               int *retries_out, int *step, int *info)
{
    fptq_status st = FPTQ_OK;
    size_t dev_bytes = 0, host_bytes = 0, d2 = 0, h2 = 0;
    void *d_work = NULL, *h_work = NULL;
    cusolverCheck(cusolverDnXpotrf_bufferSize(c->solver, c->solver_params, CUBLAS_FILL_MODE_LOWER, n,
                                              CUDA_R_32F, A, n, CUDA_R_32F, &dev_bytes, &host_bytes));
    cusolverCheck(cusolverDnXtrtri_bufferSize(c->solver, CUBLAS_FILL_MODE_LOWER,
                                              CUBLAS_DIAG_NON_UNIT, n, CUDA_R_32F, A, n, &d2, &h2));
    dev_bytes = dev_bytes > d2 ? dev_bytes : d2;
    host_bytes = host_bytes > h2 ? host_bytes : h2;
    FPTQ_TRY(fptq_cuda_alloc(dev_bytes, "cuSOLVER workspace", &d_work));
    if (host_bytes)
        FPTQ_TRY_GOTO(fptq_calloc(host_bytes, 1, "cuSOLVER host workspace", &h_work), st, out);

    {
        float damp = damp0;
        int retries = 0;
        for (;;) {
            build_damped_reversed_kernel<<<cuda_blocks(n * n, 256), 256, 0, c->stream>>>(H, n, d_perm,
                                                                                          damp, A);
            launchCheckGoto(st, out);
            cusolverCheckGoto(cusolverDnXpotrf(c->solver, c->solver_params, CUBLAS_FILL_MODE_LOWER, n,
                                               CUDA_R_32F, A, n, CUDA_R_32F, d_work, dev_bytes, h_work,
                                               host_bytes, c->d_info), st, out);
            FPTQ_TRY_GOTO(read_info(c, info), st, out);
            *step = *info != 0 ? 1 : 0;
            if (*step == 0) {
                cusolverCheckGoto(cusolverDnXtrtri(c->solver, CUBLAS_FILL_MODE_LOWER,
                                                   CUBLAS_DIAG_NON_UNIT, n, CUDA_R_32F, A, n, d_work,
                                                   dev_bytes, h_work, host_bytes, c->d_info), st, out);
                FPTQ_TRY_GOTO(read_info(c, info), st, out);
                *step = *info != 0 ? 2 : 0;
            }
            if (*step == 0 || retries == max_retries) {
                *damp_out = damp;
                *retries_out = retries;
                break;
            }
            retries++;
            damp *= 10.0f;
        }
    }
    if (*step == 0) {
        reverse_transpose_upper_kernel<<<cuda_blocks(n * n, 256), 256, 0, c->stream>>>(A, n);
        launchCheckGoto(st, out);
    }
out:
    fptq_cuda_free(d_work);
    free(h_work);
    return st;
}

static const int GPTQ_THREADS = 64;

/* What GPTQ needs of one Hessian, for every linear that reads the same
 * input (q/k/v, gate/up) and every rank's rows of them: diag H, its dead
 * columns, act-order's permutation, the damping, and the upper Cholesky
 * factor of (H + damp I)^-1 (permuted), as quant.c's gptq_hinv. */
typedef struct cuda_hinv {
    int64_t cols;
    int actorder;
    float *A;             /* device, [cols, cols] */
    float *h_diag;        /* host */
    uint8_t *d_dead;      /* device, NULL when no column is dead */
    int32_t *h_perm, *d_perm; /* act-order, else NULL */
    double mean_diag;
    float damp;
    int retries;
} cuda_hinv;

static void gptq_factor_free(cuda_hinv *f)
{
    fptq_cuda_free(f->A);
    fptq_cuda_free(f->d_dead);
    fptq_cuda_free(f->d_perm);
    free(f->h_diag);
    free(f->h_perm);
    memset(f, 0, sizeof *f);
}

static fptq_status gptq_options(const gptq_opts *o, float *percdamp, int64_t *blocksize, int *max_retries)
{
    *percdamp = o && o->damp_percent != 0.0f ? o->damp_percent : 0.01f;
    *blocksize = o && o->block_size != 0 ? o->block_size : 128;
    *max_retries = o && o->max_retries != 0 ? o->max_retries : 4;
    if (!(*percdamp >= 0.0f) || *blocksize < 1 || *max_retries < 0)
        return FPTQ_FAIL(FPTQ_ERR_ARG, "GPTQ: bad options (damp %g, block %lld, retries %d)",
                         (double)*percdamp, (long long)*blocksize, *max_retries);
    return FPTQ_OK;
}

/* The factor of H [cols, cols] (device). prep_s / factor_s (optional): host
 * seconds of the preparation and of the factorization. */
static fptq_status gptq_factor_make(const float *H, int64_t cols, const gptq_opts *o, cuda_hinv *f,
                                    double *prep_s, double *factor_s)
{
    memset(f, 0, sizeof *f);
    float percdamp;
    int64_t blocksize;
    int max_retries;
    FPTQ_TRY(gptq_options(o, &percdamp, &blocksize, &max_retries));
    if (cols <= 0 || cols > FPTQ_INT_LIMIT)
        return FPTQ_FAIL(FPTQ_ERR_ARG, "GPTQ: %lld columns outside 1..2^31-1", (long long)cols);
    cuda_ctx *c;
    FPTQ_TRY(cuda_ctx_get(&c));
    f->cols = cols;
    f->actorder = o ? o->act_order : 0;
    const double t0 = fptq_now();
    fptq_status st = FPTQ_OK;
    float *d_diag = NULL;
    uint8_t *h_dead = NULL;
    diag_key *keys = NULL;
    int step = 0, info = 0;

    /* diag H on the host: dead columns, the permutation and the damping */
    FPTQ_TRY_GOTO(fptq_calloc((size_t)cols, sizeof(float), "GPTQ diag H", &f->h_diag), st, out);
    FPTQ_TRY_GOTO(fptq_calloc((size_t)cols, 1, "GPTQ dead columns", &h_dead), st, out);
    FPTQ_TRY_GOTO(fptq_cuda_alloc((size_t)cols * sizeof(float), "GPTQ diag H (GPU)", (void **)&d_diag), st, out);
    diag_kernel<<<cuda_blocks(cols, 256), 256, 0, c->stream>>>(H, cols, d_diag);
    launchCheckGoto(st, out);
    FPTQ_TRY_GOTO(fptq_cuda_download(f->h_diag, d_diag, (size_t)cols * sizeof(float)), st, out);
    {
        int any_dead = 0;
        for (int64_t k = 0; k < cols; k++) {
            h_dead[k] = f->h_diag[k] == 0.0f;
            any_dead |= h_dead[k];
        }
        if (any_dead) {
            FPTQ_TRY_GOTO(fptq_cuda_alloc((size_t)cols, "GPTQ dead columns (GPU)", (void **)&f->d_dead), st, out);
            FPTQ_TRY_GOTO(fptq_cuda_upload(f->d_dead, h_dead, (size_t)cols), st, out);
        }
    }
    if (f->actorder) {
        FPTQ_TRY_GOTO(fptq_calloc((size_t)cols, sizeof(diag_key), "GPTQ permutation keys", &keys), st, out);
        FPTQ_TRY_GOTO(fptq_calloc((size_t)cols, sizeof(int32_t), "GPTQ permutation", &f->h_perm), st, out);
        for (int64_t k = 0; k < cols; k++) {
            keys[k].h = f->h_diag[k] == 0.0f ? 1.0f : f->h_diag[k];
            keys[k].idx = k;
        }
        qsort(keys, (size_t)cols, sizeof *keys, diag_key_cmp);
        for (int64_t k = 0; k < cols; k++)
            f->h_perm[k] = (int32_t)keys[k].idx;
        FPTQ_TRY_GOTO(fptq_cuda_alloc((size_t)cols * sizeof(int32_t), "GPTQ permutation (GPU)",
                                      (void **)&f->d_perm), st, out);
        FPTQ_TRY_GOTO(fptq_cuda_upload(f->d_perm, f->h_perm, (size_t)cols * sizeof(int32_t)), st, out);
    }
    /* mean of the (permuted, dead = 1) diagonal, summed in the CPU's order */
    for (int64_t k = 0; k < cols; k++) {
        const float h = f->h_diag[f->h_perm ? f->h_perm[k] : k];
        f->mean_diag += h == 0.0f ? 1.0f : h;
    }
    f->mean_diag /= (double)cols;
    if (prep_s)
        *prep_s = fptq_now() - t0;

    {
        const double t1 = fptq_now();
        FPTQ_TRY_GOTO(fptq_cuda_alloc((size_t)cols * (size_t)cols * sizeof(float), "GPTQ inverse Hessian (GPU)",
                                      (void **)&f->A), st, out);
        FPTQ_TRY_GOTO(gptq_factor(c, H, cols, f->d_perm, (float)(percdamp * f->mean_diag), max_retries, f->A,
                                  &f->damp, &f->retries, &step, &info), st, out);
        if (step != 0) {
            static const char *what[] = {"", "Cholesky of H + damp I: not positive definite",
                                         "triangular inverse of the Cholesky factor: singular"};
            st = FPTQ_FAIL(FPTQ_ERR_NUMERIC,
                           "GPTQ (CUDA): %s (cuSOLVER info %d) after %d damping retries, last damp %g, "
                           "mean diag H %g; is the calibration Hessian NaN, negative or degenerate?",
                           what[step], info, f->retries, (double)f->damp, f->mean_diag);
            goto out;
        }
        if (factor_s) {
            FPTQ_TRY_GOTO(fptq_cuda_sync(), st, out);
            *factor_s = fptq_now() - t1;
        }
    }
out:
    fptq_cuda_free(d_diag);
    free(h_dead);
    free(keys);
    if (st != FPTQ_OK)
        gptq_factor_free(f);
    return st;
}


/* One weight matrix W [rows, f->cols] with a Hessian's factor. W is the
 * work buffer (destroyed); Q_dst (NULL, W, or another buffer) gets the
 * dequantized weights in the original column order. times: the run's
 * preparation, blocks and finish (factor_s is left as it is). */
static fptq_status gptq_run(const cuda_hinv *f, float *W, int64_t rows, const gptq_opts *o, quant_tensor *q,
                            float *Q_dst, gptq_result *res, fptq_cuda_gptq_times *times)
{
    float percdamp;
    int64_t blocksize;
    int max_retries;
    FPTQ_TRY(gptq_options(o, &percdamp, &blocksize, &max_retries));
    const int64_t cols = f->cols;
    const int actorder = f->actorder;
    FPTQ_TRY(quant_spec_check(&q->spec));
    if (q->spec.format != QFMT_INT)
        return FPTQ_FAIL(FPTQ_ERR_UNSUPPORTED, "GPTQ quantizes to INT codes only, not FP8 (use RTN)");
    if (rows <= 0 || cols <= 0 || rows > FPTQ_INT_LIMIT || cols > FPTQ_INT_LIMIT)
        return FPTQ_FAIL(FPTQ_ERR_ARG, "GPTQ: shape [%lld, %lld] outside 1..2^31-1", (long long)rows,
                         (long long)cols);
    if (q->rows != rows || q->cols != cols || !q->codes || !q->scales || !q->zeros)
        return FPTQ_FAIL(FPTQ_ERR_ARG, "GPTQ: quantized tensor is [%lld, %lld], weights [%lld, %lld]",
                         (long long)q->rows, (long long)q->cols, (long long)rows, (long long)cols);
    if (actorder && !q->g_idx)
        return FPTQ_FAIL(FPTQ_ERR_ARG, "GPTQ: act-order needs a tensor allocated with g_idx");
    cuda_ctx *c;
    FPTQ_TRY(cuda_ctx_get(&c));

    const int64_t gs = q->spec.group_size, ng = q->n_groups;
    const int bits = q->spec.bits, sym = q->spec.sym;
    const int64_t bs = blocksize < cols ? blocksize : cols;
    const double t0 = fptq_now();
    fptq_status st = FPTQ_OK;
    float *Err1 = NULL, *W1t = NULL, *Wp = NULL;
    uint8_t *codes_p = NULL;
    double *Losses = NULL, *h_losses = NULL;
    double t2, t3;
    float *Wk = W;            /* the work buffer the blocks run on */
    uint8_t *codes_k = q->codes;

    if (f->d_dead) {
        zero_dead_kernel<<<cuda_blocks(rows * cols, 256), 256, 0, c->stream>>>(W, rows, cols, f->d_dead);
        launchCheckGoto(st, out);
    }
    /* groups fitted before any update: per row, or act-order's static groups */
    if (gs == 0 || actorder) {
        const int64_t g_cols = gs > 0 ? gs : cols;
        rtn_int_kernel<<<warp_blocks(rows * ng), 256, 0, c->stream>>>(W, rows, cols, g_cols, ng, bits,
                                                                       sym, NULL, NULL, q->scales,
                                                                       q->zeros);
        launchCheckGoto(st, out);
    }
    if (q->g_idx) {
        g_idx_fill_kernel<<<cuda_blocks(cols, 256), 256, 0, c->stream>>>(q->g_idx, cols, gs);
        launchCheckGoto(st, out);
    }
    if (actorder) {
        FPTQ_TRY_GOTO(fptq_cuda_alloc((size_t)rows * (size_t)cols * sizeof(float),
                                      "GPTQ permuted weights (GPU)", (void **)&Wp), st, out);
        FPTQ_TRY_GOTO(fptq_cuda_alloc((size_t)rows * (size_t)cols, "GPTQ permuted codes (GPU)",
                                      (void **)&codes_p), st, out);
        permute_cols_kernel<<<cuda_blocks(rows * cols, 256), 256, 0, c->stream>>>(W, rows, cols, f->d_perm, Wp);
        launchCheckGoto(st, out);
        Wk = Wp;
        codes_k = codes_p;
    }
    if (times)
        FPTQ_TRY_GOTO(fptq_cuda_sync(), st, out);
    t2 = fptq_now();

    {
        const float *Hinv = f->A;
        FPTQ_TRY_GOTO(fptq_cuda_alloc((size_t)bs * (size_t)rows * sizeof(float), "GPTQ block errors (GPU)",
                                      (void **)&Err1), st, out);
        FPTQ_TRY_GOTO(fptq_cuda_alloc((size_t)rows * sizeof(double), "GPTQ losses (GPU)",
                                      (void **)&Losses), st, out);
        const size_t smem = (size_t)bs * GPTQ_THREADS * sizeof(float);
        const int use_shared = smem <= 48 * 1024;
        if (!use_shared)
            FPTQ_TRY_GOTO(fptq_cuda_alloc((size_t)bs * (size_t)rows * sizeof(float),
                                          "GPTQ block weights (GPU)", (void **)&W1t), st, out);
        gptq_kargs ka;
        memset(&ka, 0, sizeof ka);
        ka.rows = rows;
        ka.cols = cols;
        ka.gs = gs;
        ka.ng = ng;
        ka.bits = bits;
        ka.sym = sym;
        ka.act_order = actorder;
        ka.maxq = (float)((1 << bits) - 1);
        ka.W = Wk;
        ka.Hinv = Hinv;
        ka.perm = f->d_perm;
        ka.Err1 = Err1;
        ka.W1t = W1t;
        ka.Losses = Losses;
        ka.scales = q->scales;
        ka.zeros = q->zeros;
        ka.codes = codes_k;
        const unsigned blocks = (unsigned)((rows + GPTQ_THREADS - 1) / GPTQ_THREADS);
        const float minus_one = -1.0f, one = 1.0f;
        for (int64_t i1 = 0; i1 < cols; i1 += bs) {
            const int64_t i2 = i1 + bs < cols ? i1 + bs : cols, count = i2 - i1;
            ka.i1 = i1;
            ka.count = count;
            gptq_block_kernel<<<blocks, GPTQ_THREADS, use_shared ? (size_t)count * GPTQ_THREADS * sizeof(float) : 0,
                                c->stream>>>(ka, use_shared);
            launchCheckGoto(st, out);
            /* W[:, i2:] -= Err1^T Hinv[i1:i2, i2:]; column-major: C ((cols-i2) x rows,
             * ld cols) -= Hinv block (as (cols-i2) x count, ld cols) x Err1 (count x rows) */
            if (i2 < cols)
                cublasCheckGoto(cublasGemmEx_64(c->blas, CUBLAS_OP_N, CUBLAS_OP_T, cols - i2, rows, count,
                                                &minus_one, Hinv + i1 * cols + i2, CUDA_R_32F, cols,
                                                Err1, CUDA_R_32F, rows, &one, Wk + i2, CUDA_R_32F, cols,
                                                CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT), st, out);
        }
    }
    if (times)
        FPTQ_TRY_GOTO(fptq_cuda_sync(), st, out);
    t3 = fptq_now();

    /* Wk holds Q (permuted under act-order), the codes are in codes_k */
    if (actorder) {
        unpermute_cols_kernel<uint8_t><<<cuda_blocks(rows * cols, 256), 256, 0, c->stream>>>(
            codes_p, rows, cols, f->d_perm, q->codes);
        launchCheckGoto(st, out);
        if (Q_dst) {
            unpermute_cols_kernel<float><<<cuda_blocks(rows * cols, 256), 256, 0, c->stream>>>(
                Wp, rows, cols, f->d_perm, Q_dst);
            launchCheckGoto(st, out);
        }
    } else if (Q_dst && Q_dst != W) {
        FPTQ_TRY_GOTO(fptq_cuda_copy(Q_dst, W, (size_t)rows * (size_t)cols * sizeof(float)), st, out);
    }
    FPTQ_TRY_GOTO(fptq_calloc((size_t)rows, sizeof(double), "GPTQ losses", &h_losses), st, out);
    FPTQ_TRY_GOTO(fptq_cuda_download(h_losses, Losses, (size_t)rows * sizeof(double)), st, out);
    if (res) {
        double loss = 0.0;
        for (int64_t r = 0; r < rows; r++)
            loss += h_losses[r];
        res->loss = loss / 2.0;
        res->damp = f->damp;
        res->retries = f->retries;
    }
    if (times) {
        times->prepare_s += t2 - t0;
        times->blocks_s = t3 - t2;
        times->finish_s = fptq_now() - t3;
    }
    fptq_debug("GPTQ (CUDA) [%lld x %lld]: prepare %.3f s, blocks %.3f s", (long long)rows, (long long)cols,
               t2 - t0, t3 - t2);
out:
    fptq_cuda_free(Err1);
    fptq_cuda_free(W1t);
    fptq_cuda_free(Losses);
    fptq_cuda_free(Wp);
    fptq_cuda_free(codes_p);
    free(h_losses);
    return st;
}

/* Factor and run in one: the entry points below. */
static fptq_status gptq_once(float *W, int64_t rows, int64_t cols, const float *H, const gptq_opts *o,
                             quant_tensor *q, float *Q_dst, gptq_result *res, fptq_cuda_gptq_times *times)
{
    cuda_hinv f;
    double prep = 0.0, fac = 0.0;
    FPTQ_TRY(gptq_factor_make(H, cols, o, &f, times ? &prep : NULL, times ? &fac : NULL));
    if (times) {
        times->prepare_s = prep;
        times->factor_s = fac;
    }
    fptq_status st = gptq_run(&f, W, rows, o, q, Q_dst, res, times);
    gptq_factor_free(&f);
    return st;
}

extern "C" fptq_status fptq_cuda_gptq_quantize(const float *W, int64_t rows, int64_t cols,
                                               const float *H, const gptq_opts *o, quant_tensor *q,
                                               float *Q, gptq_result *r, fptq_cuda_gptq_times *times)
{
    if (rows <= 0 || cols <= 0 || rows > INT64_MAX / cols)
        return FPTQ_FAIL(FPTQ_ERR_ARG, "GPTQ: shape [%lld, %lld]", (long long)rows, (long long)cols);
    const size_t bytes = (size_t)rows * (size_t)cols * sizeof(float);
    /* the caller's Q doubles as the work buffer: it ends holding Q anyway */
    float *work = Q;
    if (!work)
        FPTQ_TRY(fptq_cuda_alloc(bytes, "GPTQ weights (GPU)", (void **)&work));
    fptq_status st = fptq_cuda_copy(work, W, bytes);
    if (st == FPTQ_OK)
        st = gptq_once(work, rows, cols, H, o, q, Q, r, times);
    if (!Q)
        fptq_cuda_free(work);
    return st;
}

extern "C" fptq_status fptq_cuda_gptq_quantize_inplace(float *W, int64_t rows, int64_t cols,
                                                       const float *H, const gptq_opts *o,
                                                       quant_tensor *q, gptq_result *r,
                                                       fptq_cuda_gptq_times *times)
{
    return gptq_once(W, rows, cols, H, o, q, W, r, times);
}

/* ---- the quantization entries of the backend table (backend.h) ----------------------------------- *
 * Quantized tensors and clip ratios are host memory there: they go to the checkpoint. Each entry
 * runs the device quantizer on a device tensor and moves the result across. */

/* The plan is the Hessian's factor (cuda_hinv): one Cholesky and
 * triangular inverse per linear group, as the CPU's gptq_hinv. */
static fptq_status tbl_gptq_prepare(const float *H, int64_t cols, const gptq_opts *o, void **plan,
                                    gptq_result *r)
{
    cuda_hinv *f;
    *plan = NULL;
    FPTQ_TRY(fptq_calloc(1, sizeof *f, "GPTQ plan", &f));
    fptq_status st = gptq_factor_make(H, cols, o, f, NULL, NULL);
    if (st != FPTQ_OK) {
        free(f);
        return st;
    }
    if (r) {
        r->loss = 0.0;
        r->damp = f->damp;
        r->retries = f->retries;
    }
    *plan = f;
    return FPTQ_OK;
}

static fptq_status tbl_gptq_rows(void *plan, const float *W, int64_t rows, int64_t cols,
                                 const gptq_opts *o, quant_tensor *q, gptq_result *r)
{
    const cuda_hinv *f = (const cuda_hinv *)plan;
    if (f->cols != cols)
        return FPTQ_FAIL(FPTQ_ERR_INTERNAL, "GPTQ: plan for %lld columns, weights have %lld",
                         (long long)f->cols, (long long)cols);
    if (rows <= 0 || rows > INT64_MAX / cols)
        return FPTQ_FAIL(FPTQ_ERR_ARG, "GPTQ: shape [%lld, %lld]", (long long)rows, (long long)cols);
    quant_tensor d;
    float *work = NULL;
    const size_t bytes = (size_t)rows * (size_t)cols * sizeof(float);
    FPTQ_TRY(fptq_cuda_quant_tensor_alloc(&q->spec, rows, cols, q->g_idx != NULL, &d));
    fptq_status st = fptq_cuda_alloc(bytes, "GPTQ weights (GPU)", (void **)&work);
    if (st == FPTQ_OK)
        st = fptq_cuda_copy(work, W, bytes); /* W stays as it was: the proxy loss reads it */
    if (st == FPTQ_OK)
        st = gptq_run(f, work, rows, o, &d, NULL, r, NULL);
    if (st == FPTQ_OK)
        st = fptq_cuda_quant_tensor_download(&d, q);
    fptq_cuda_free(work);
    fptq_cuda_quant_tensor_free(&d);
    return st;
}

static void tbl_gptq_release(void *plan)
{
    if (plan)
        gptq_factor_free((cuda_hinv *)plan);
    free(plan);
}

static fptq_status tbl_rtn(const float *W, int64_t rows, int64_t cols, const float *clip, quant_tensor *q)
{
    quant_tensor d;
    float *d_clip = NULL;
    FPTQ_TRY(fptq_cuda_quant_tensor_alloc(&q->spec, rows, cols, q->g_idx != NULL, &d));
    fptq_status st = FPTQ_OK;
    if (clip) {
        const size_t bytes = (size_t)(rows * d.n_groups) * sizeof(float);
        st = fptq_cuda_alloc(bytes, "AWQ clip ratios (GPU)", (void **)&d_clip);
        if (st == FPTQ_OK)
            st = fptq_cuda_upload(d_clip, clip, bytes);
    }
    if (st == FPTQ_OK)
        st = fptq_cuda_quant_rtn(W, rows, cols, d_clip, &d);
    if (st == FPTQ_OK)
        st = fptq_cuda_quant_tensor_download(&d, q);
    fptq_cuda_free(d_clip);
    fptq_cuda_quant_tensor_free(&d);
    return st;
}

static fptq_status tbl_dequantize(const quant_tensor *q, float *W)
{
    quant_tensor d;
    FPTQ_TRY(fptq_cuda_quant_tensor_alloc(&q->spec, q->rows, q->cols, q->g_idx != NULL, &d));
    fptq_status st = fptq_cuda_quant_tensor_upload(q, &d);
    if (st == FPTQ_OK)
        st = fptq_cuda_quant_dequantize(&d, W);
    /* the kernel reads d: it must finish before d is freed (cudaFree waits anyway; be explicit) */
    if (st == FPTQ_OK)
        st = fptq_cuda_sync();
    fptq_cuda_quant_tensor_free(&d);
    return st;
}

__global__ void sub_kernel(const float *a, const float *b, int64_t n, float *d)
{
    GRID_STRIDE(i, n)
    d[i] = __fsub_rn(a[i], b[i]);
}

enum { DOT_THREADS = 256, DOT_BLOCKS = 256 };

/* part[block] = sum over the block's grid-stride share of a[i] * b[i], in double */
__global__ void dot_partial_kernel(const float *a, const float *b, int64_t n, double *part)
{
    __shared__ double acc[DOT_THREADS];
    double s = 0.0;
    GRID_STRIDE(i, n)
    s = __dadd_rn(s, __dmul_rn((double)a[i], (double)b[i]));
    acc[threadIdx.x] = s;
    __syncthreads();
    for (int half = DOT_THREADS / 2; half > 0; half >>= 1) {
        if ((int)threadIdx.x < half)
            acc[threadIdx.x] = __dadd_rn(acc[threadIdx.x], acc[threadIdx.x + half]);
        __syncthreads();
    }
    if (threadIdx.x == 0)
        part[blockIdx.x] = acc[0];
}

/* In row chunks of at most 2^27 elements, so that the scratch (D and D H)
 * stays within 1 GiB whatever the linear's size. */
static fptq_status tbl_proxy_loss(const float *W, const float *Q, int64_t rows, int64_t cols,
                                  const float *H, double *loss)
{
    if (rows <= 0 || cols <= 0 || rows > FPTQ_INT_LIMIT || cols > FPTQ_INT_LIMIT)
        return FPTQ_FAIL(FPTQ_ERR_ARG, "proxy loss: shape [%lld, %lld]", (long long)rows, (long long)cols);
    cuda_ctx *c;
    FPTQ_TRY(cuda_ctx_get(&c));
    int64_t chunk = ((int64_t)1 << 27) / cols;
    chunk = chunk < 1 ? 1 : chunk > rows ? rows : chunk;
    const int64_t cap = chunk * cols;
    void *scratch;
    FPTQ_TRY(cuda_scratch((size_t)cap * 2 * sizeof(float) + DOT_BLOCKS * sizeof(double), &scratch));
    float *D = (float *)scratch, *DH = D + cap;
    double *part = (double *)(DH + cap), h_part[DOT_BLOCKS];
    const float one = 1.0f, zero = 0.0f;
    double sum = 0.0;
    for (int64_t r0 = 0; r0 < rows; r0 += chunk) {
        const int64_t nr = rows - r0 < chunk ? rows - r0 : chunk, n = nr * cols;
        sub_kernel<<<cuda_blocks(n, 256), 256, 0, c->stream>>>(W + r0 * cols, Q + r0 * cols, n, D);
        launchCheck();
        /* row-major DH = D H is column-major (H D^T) with H symmetric: C (cols x nr) = H (cols x cols) Dcm */
        cublasCheck(cublasGemmEx_64(c->blas, CUBLAS_OP_N, CUBLAS_OP_N, cols, nr, cols, &one, H, CUDA_R_32F, cols,
                                    D, CUDA_R_32F, cols, &zero, DH, CUDA_R_32F, cols, CUBLAS_COMPUTE_32F,
                                    CUBLAS_GEMM_DEFAULT));
        dot_partial_kernel<<<DOT_BLOCKS, DOT_THREADS, 0, c->stream>>>(D, DH, n, part);
        launchCheck();
        FPTQ_TRY(fptq_cuda_download(h_part, part, sizeof h_part));
        for (int i = 0; i < DOT_BLOCKS; i++)
            sum += h_part[i];
    }
    *loss = sum;
    return FPTQ_OK;
}

__global__ void scale_columns_kernel(float *X, int64_t rows, int64_t cols, const float *s)
{
    GRID_STRIDE(i, rows * cols)
    X[i] = __fdiv_rn(X[i], s[i % cols]);
}

static fptq_status tbl_scale_columns(float *X, int64_t rows, int64_t cols, const float *s)
{
    if (rows <= 0 || cols <= 0)
        return FPTQ_OK;
    cuda_ctx *c;
    FPTQ_TRY(cuda_ctx_get(&c));
    void *scratch;
    FPTQ_TRY(cuda_scratch((size_t)cols * sizeof(float), &scratch));
    cudaCheck(cudaMemcpyAsync(scratch, s, (size_t)cols * sizeof(float), cudaMemcpyHostToDevice, c->stream));
    scale_columns_kernel<<<cuda_blocks(rows * cols, 256), 256, 0, c->stream>>>(X, rows, cols, (const float *)scratch);
    launchCheck();
    return FPTQ_OK;
}

__global__ void pick_targets_kernel(const float *logits, int64_t n, int64_t cols, int64_t v0,
                                    const int32_t *targets, double *out)
{
    GRID_STRIDE(i, n)
    {
        const int64_t t = targets[i];
        if (t >= v0 && t < v0 + cols)
            out[i] = (double)logits[i * cols + (t - v0)];
    }
}

static fptq_status tbl_pick_targets(const float *logits, int64_t n, int64_t cols, int64_t v0,
                                    const int32_t *targets, double *out)
{
    if (n <= 0)
        return FPTQ_OK;
    cuda_ctx *c;
    FPTQ_TRY(cuda_ctx_get(&c));
    pick_targets_kernel<<<cuda_blocks(n, 256), 256, 0, c->stream>>>(logits, n, cols, v0, targets, out);
    launchCheck();
    return FPTQ_OK;
}

static fptq_status tbl_stats_reset(linear_stats *s) { return fptq_cuda_stats_reset(s); }

void cuda_quant_table(fptq_backend *b)
{
    b->stats_init = fptq_cuda_stats_init;
    b->stats_free = fptq_cuda_stats_free;
    b->stats_reset = tbl_stats_reset;
    b->stats_accumulate = fptq_cuda_stats_accumulate;
    b->stats_hessian = fptq_cuda_stats_hessian;
    b->gptq_prepare = tbl_gptq_prepare;
    b->gptq_rows = tbl_gptq_rows;
    b->gptq_release = tbl_gptq_release;
    b->rtn = tbl_rtn;
    b->dequantize = tbl_dequantize;
    b->proxy_loss = tbl_proxy_loss;
    b->scale_columns = tbl_scale_columns;
    b->pick_targets = tbl_pick_targets;
}
