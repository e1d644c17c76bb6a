/*
 * Device twins of fp8_e4m3_from_f32 / fp8_e4m3_to_f32 (kernels/quant.c), and
 * of the INT min-max fit and code, with the same operations in the same
 * order, so that codes agree bit for bit with the CPU reference. (CUDA's own
 * __nv_cvt_float_to_fp8 with __NV_SATFINITE agrees too, but the reference
 * is quant.c, and this keeps one definition to compare against.)
 */
#ifndef FPTQ_FP8_E4M3_CUH
#define FPTQ_FP8_E4M3_CUH

#include <stdint.h>

__device__ __forceinline__ uint8_t fp8_e4m3_from_f32_dev(float x)
{
    const uint32_t u = __float_as_uint(x);
    const uint8_t sign = (uint8_t)((u >> 24) & 0x80u);
    if (isnan(x))
        return 0x7F;
    const float a = fabsf(x);
    if (a >= 448.0f) /* saturate, infinities too */
        return sign | 0x7E;
    if (a < 0.015625f) /* 2^-6: subnormals, multiples of 2^-9, exact scaling */
        return sign | (uint8_t)rintf(__fmul_rn(a, 512.0f));
    const uint32_t ua = u & 0x7FFFFFFFu;
    const uint32_t rounded = ua + 0x7FFFFu + ((ua >> 20) & 1u);
    return sign | (uint8_t)((rounded >> 20) - ((127u - 7u) << 3));
}

__device__ __forceinline__ float fp8_e4m3_to_f32_dev(uint8_t b)
{
    const uint32_t sign = (uint32_t)(b & 0x80u) << 24;
    const uint32_t e = (b >> 3) & 0xFu, man = b & 7u;
    if (e == 15 && man == 7)
        return __uint_as_float(0x7FC00000u); /* NAN, as the C library's */
    if (e == 0) {
        const float v = __fmul_rn((float)man, 0.001953125f); /* 2^-9 */
        return sign ? -v : v;
    }
    return __uint_as_float(sign | ((e + 127u - 7u) << 23) | (man << 20));
}

/* quant.c fit_range: scale and zero of a group from its range (xmin <= 0 <= xmax). */
__device__ __forceinline__ void fit_range_dev(float xmin, float xmax, int bits, int sym,
                                              float clip_ratio, float *scale, int32_t *zero)
{
    const int32_t maxq = (1 << bits) - 1;
    xmin = __fmul_rn(xmin, clip_ratio);
    xmax = __fmul_rn(xmax, clip_ratio);
    float s;
    int32_t z;
    if (sym) {
        const float amax = -xmin > xmax ? -xmin : xmax;
        s = __fdiv_rn(__fmul_rn(2.0f, amax), (float)maxq);
        z = 1 << (bits - 1);
        if (!(s > 0.0f) || !isfinite(s))
            s = 1.0f;
    } else {
        s = __fdiv_rn(__fsub_rn(xmax, xmin), (float)maxq);
        if (!(s > 0.0f) || !isfinite(s))
            s = 1.0f;
        const float zf = rintf(__fdiv_rn(-xmin, s));
        z = zf < 0.0f ? 0 : zf > (float)maxq ? maxq : (int32_t)zf;
    }
    *scale = s;
    *zero = z;
}

/* quant.c quant_int_code: clamp(round-half-even(w / scale) + zero, 0, 2^bits - 1). */
__device__ __forceinline__ uint8_t quant_int_code_dev(float w, float scale, int32_t zero, int bits)
{
    const float maxq = (float)((1 << bits) - 1);
    const float v = __fadd_rn(rintf(__fdiv_rn(w, scale)), (float)zero);
    return (uint8_t)(v > 0.0f ? (v < maxq ? v : maxq) : 0.0f);
}

#endif
