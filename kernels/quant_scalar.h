/*
 * The quantizers' scalar arithmetic, one definition for the host
 * (kernels/quant.c, the reference) and the GPU (kernels/cuda): FP8 E4M3
 * both ways, the INT min-max fit of a group's range, and an INT code.
 *
 * The GPU must round exactly as the host does, so that codes agree bit for
 * bit. Every multiply, add, subtract and divide of a float is written with
 * QS_MUL / QS_ADD / QS_SUB / QS_DIV: __fmul_rn and friends under nvcc, which
 * would otherwise fuse a * b + c into one rounding where the host rounds
 * twice; the plain operators in C, which fptq compiles in ISO C mode
 * (-std=c11: no contraction). QS_RINT rounds half to even in both.
 */
#ifndef FPTQ_QUANT_SCALAR_H
#define FPTQ_QUANT_SCALAR_H

#include <math.h>
#include <stdint.h>
#include <string.h>

#ifdef __CUDACC__
#define QS_FN static __device__ __forceinline__ /* the device twins; the host has quant.c */
#define QS_MUL(a, b) __fmul_rn((a), (b))
#define QS_ADD(a, b) __fadd_rn((a), (b))
#define QS_SUB(a, b) __fsub_rn((a), (b))
#define QS_DIV(a, b) __fdiv_rn((a), (b))
#define QS_RINT(x) rintf(x)
QS_FN uint32_t qs_bits(float x) { return __float_as_uint(x); }
QS_FN float qs_float(uint32_t u) { return __uint_as_float(u); }
#else
#define QS_FN static inline
#define QS_MUL(a, b) ((a) * (b))
#define QS_ADD(a, b) ((a) + (b))
#define QS_SUB(a, b) ((a) - (b))
#define QS_DIV(a, b) ((a) / (b))
#define QS_RINT(x) nearbyintf(x)
QS_FN uint32_t qs_bits(float x)
{
    uint32_t u;
    memcpy(&u, &x, sizeof u);
    return u;
}
QS_FN float qs_float(uint32_t u)
{
    float x;
    memcpy(&x, &u, sizeof x);
    return x;
}
#endif

/* E4M3 ("fn": no infinities, NaN = S.1111.111, max 448) from fp32: round to
 * nearest even, saturate to +-448 (infinities too, as CUDA's __NV_SATFINITE
 * conversion does: RNE would send [448, 464) to 448 and beyond to 480,
 * which E4M3fn lacks), NaN -> 0x7F. */
QS_FN uint8_t qs_fp8_e4m3_from_f32(float x)
{
    const uint32_t u = qs_bits(x);
    const uint8_t sign = (uint8_t)((u >> 24) & 0x80u);
    if (isnan(x))
        return 0x7F;
    const float a = fabsf(x);
    if (a >= 448.0f)
        return sign | 0x7E;
    /* subnormals are multiples of 2^-9; the scaling is exact, and a result
     * of 8 is the smallest normal, whose bits are again 8 */
    if (a < 0.015625f) /* 2^-6 */
        return sign | (uint8_t)QS_RINT(QS_MUL(a, 512.0f));
    /* normal: drop 20 of fp32's 23 mantissa bits with round-half-even; a
     * carry out of the mantissa moves into the exponent, as it should */
    const uint32_t ua = u & 0x7FFFFFFFu;
    const uint32_t rounded = ua + 0x7FFFFu + ((ua >> 20) & 1u);
    return sign | (uint8_t)((rounded >> 20) - ((127u - 7u) << 3));
}

QS_FN float qs_fp8_e4m3_to_f32(uint8_t b)
{
    const uint32_t sign = (uint32_t)(b & 0x80u) << 24;
    const uint32_t e = (b >> 3) & 0xFu, man = b & 7u;
    if (e == 15 && man == 7)
        return qs_float(0x7FC00000u); /* the quiet NaN of C's NAN */
    if (e == 0) {
        const float v = QS_MUL((float)man, 0.001953125f); /* 2^-9 */
        return sign ? -v : v;
    }
    return qs_float(sign | ((e + 127u - 7u) << 23) | (man << 20));
}

/* Scale and zero of an INT group from its range (xmin <= 0 <= xmax), shrunk
 * by clip_ratio (AWQ's clip search; 1 = none). Symmetric: 2 max|w| over the
 * range always (GPTQ's find_params keeps xmin = 0 when a group has no
 * negative value, which halves the usable range), zero 2^(bits-1). */
QS_FN void qs_fit_range(float xmin, float xmax, int bits, int sym, float clip_ratio, float *scale, int32_t *zero)
{
    const int32_t maxq = (1 << bits) - 1;
    xmin = QS_MUL(xmin, clip_ratio);
    xmax = QS_MUL(xmax, clip_ratio);
    float s;
    int32_t z;
    if (sym) {
        const float amax = -xmin > xmax ? -xmin : xmax;
        s = QS_DIV(QS_MUL(2.0f, amax), (float)maxq);
        z = 1 << (bits - 1);
        if (!(s > 0.0f) || !isfinite(s))
            s = 1.0f;
    } else {
        s = QS_DIV(QS_SUB(xmax, xmin), (float)maxq);
        if (!(s > 0.0f) || !isfinite(s))
            s = 1.0f;
        const float zf = QS_RINT(QS_DIV(-xmin, s));
        z = zf < 0.0f ? 0 : zf > (float)maxq ? maxq : (int32_t)zf;
    }
    *scale = s;
    *zero = z;
}

/* clamp(round-half-even(w / scale) + zero, 0, 2^bits - 1); NaN lands on 0. */
QS_FN uint8_t qs_int_code(float w, float scale, int32_t zero, int bits)
{
    const float maxq = (float)((1 << bits) - 1);
    const float v = QS_ADD(QS_RINT(QS_DIV(w, scale)), (float)zero);
    return (uint8_t)(v > 0.0f ? (v < maxq ? v : maxq) : 0.0f);
}

#endif
