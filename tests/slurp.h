/*
 * slurp.h: a whole file into a malloc'd buffer, for the tests that damage
 * .vbseg files (test_format, corrupt_sweep).
 */
#ifndef VBS_TESTS_SLURP_H
#define VBS_TESTS_SLURP_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

/* the bytes of path (*n of them, plus one spare), or NULL */
static inline uint8_t *slurp(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long sz = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *b = sz >= 0 ? malloc((size_t)sz + 1) : NULL;
    *n = sz >= 0 ? (size_t)sz : 0;
    if (b && fread(b, 1, *n, f) != *n) { free(b); b = NULL; }
    fclose(f);
    return b;
}

#endif
