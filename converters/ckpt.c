/*
 * ckpt.c: what the checkpoint readers share: the element conversions to
 * float32, and freeing what they read.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "ckpt.h"

void vbs_ckpt_free(vbs_ckpt *c) {
    if (!c) return;
    for (int i = 0; i < c->n; i++) {
        free(c->t[i].name);
        free(c->t[i].data);
    }
    free(c->t);
    free(c->metadata);
    free(c->key);
    memset(c, 0, sizeof *c);
}

float vbs_ckpt_half(uint16_t h) {
    uint32_t sign = (uint32_t)(h >> 15) << 31, e = h >> 10 & 31, m = h & 1023, bits;
    if (e == 31) bits = sign | 0x7f800000u | m << 13;
    else if (e) bits = sign | (e + 112) << 23 | m << 13;
    else if (!m) bits = sign;
    else {
        float f = (float)m * 0x1p-24f; /* subnormal: m * 2^-24, exact in float */
        return sign ? -f : f;
    }
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

float vbs_ckpt_bf16(uint16_t h) {
    uint32_t bits = (uint32_t)h << 16;
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

float vbs_ckpt_double(double d) {
    if (d >= 0x1.ffffffp127) return INFINITY; /* 2^128 - 2^103 and above round to Inf */
    if (d <= -0x1.ffffffp127) return -INFINITY;
    return (float)d;
}
