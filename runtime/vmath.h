/*
 * vmath.h: exp and log in float written for the vectoriser (branch-free
 * selects, type punning through unions), for loops over arrays that libm's
 * scalar calls would serialise. Cephes' polynomials, within a few ulps, so
 * not libm's bits: where a value must match libm's (vbs_softplus, which
 * sigma is made of when a model is loaded), call libm.
 */
#ifndef VBS_VMATH_H
#define VBS_VMATH_H

#include <stdint.h>

/* type punning through a union: the vectoriser handles it, memcpy it does not */
static inline float vbs_as_float(uint32_t u) { union { uint32_t u; float f; } c = {.u = u}; return c.f; }
static inline uint32_t vbs_as_uint(float f) { union { float f; uint32_t u; } c = {.f = f}; return c.u; }

/* natural log of a positive normal float: Cephes' logf polynomial on [sqrt(1/2), sqrt(2)) */
static inline float vbs_log_poly(float x) {
    uint32_t b = vbs_as_uint(x);
    float e = (float)((int32_t)(b >> 23) - 127);
    float m = vbs_as_float((b & 0x7fffffu) | 0x3f800000u);
    uint32_t big = 0u - (uint32_t)(m > 1.41421356f); /* halve m, bump e: branch-free */
    m = vbs_as_float(vbs_as_uint(m) - (big & 0x00800000u));
    e += (float)(big & 1u);
    float f = m - 1.f, z = f * f;
    float y = 7.0376836292e-2f;
    y = y * f - 1.1514610310e-1f;
    y = y * f + 1.1676998740e-1f;
    y = y * f - 1.2420140846e-1f;
    y = y * f + 1.4249322787e-1f;
    y = y * f - 1.6668057665e-1f;
    y = y * f + 2.0000714765e-1f;
    y = y * f - 2.4999993993e-1f;
    y = y * f + 3.3333331174e-1f;
    y = y * f * z;
    y += e * -2.12194440e-4f;
    y += -0.5f * z;
    return f + y + e * 0.693359375f;
}

/* exp in float for the vectoriser: Cephes' expf (x = n ln 2 + r, |r| <= ln 2 / 2,
 * a degree-7 polynomial), x clamped to [-87.3, 88] so that 2^n stays a normal
 * float; within 2 ulps there. NaN in, NaN out. */
static inline float vbs_exp_poly(float x) {
    int nan = x != x;
    float c = nan ? 0.f : x < -87.3f ? -87.3f : x > 88.f ? 88.f : x;
    float n = c * 1.44269504088896341f + 12582912.f; /* round to nearest by the float grid at 2^23 */
    n -= 12582912.f;
    float r = c - n * 0.693359375f;
    r = r - n * -2.12194440e-4f;
    float y = 1.9875691500e-4f;
    y = y * r + 1.3981999507e-3f;
    y = y * r + 8.3334519073e-3f;
    y = y * r + 4.1665795894e-2f;
    y = y * r + 1.6666665459e-1f;
    y = y * r + 5.0000001201e-1f;
    y = y * r * r + r + 1.f;
    y = y * vbs_as_float((uint32_t)((int32_t)n + 127) << 23);
    return nan ? x : y;
}

#endif
