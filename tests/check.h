/*
 * check.h: the tiny harness every test program shares: pass/fail counts,
 * tolerance comparison (atol + rtol*|ref|) that prints the first
 * mismatches and the maximum error, and the closing "N passed, N failed"
 * line that ctest's log and CI read.
 */
#ifndef VBS_TESTS_CHECK_H
#define VBS_TESTS_CHECK_H

#include <math.h>
#include <stdio.h>
#include <string.h>

static int g_pass, g_fail;

#define CHECK(cond, ...)                                                  \
    do {                                                                  \
        if (cond) g_pass++;                                               \
        else {                                                            \
            g_fail++;                                                     \
            printf("FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond);        \
            printf(__VA_ARGS__);                                          \
            printf("\n");                                                 \
        }                                                                 \
    } while (0)

/* Compares n floats; returns 1 when all are within atol + rtol*|ref|. */
static inline int close_enough(const char *what, const float *got, const float *ref, long n, double atol, double rtol) {
    double maxerr = 0;
    long bad = 0, worst = -1;
    for (long i = 0; i < n; i++) {
        double e = fabs((double)got[i] - ref[i]);
        int ok = e <= atol + rtol * fabs(ref[i]) && got[i] == got[i];
        if (!ok) {
            if (bad < 3) printf("  %s[%ld]: got %.7g, want %.7g\n", what, i, got[i], ref[i]);
            bad++;
        }
        if (e > maxerr || got[i] != got[i]) { maxerr = e; worst = i; }
    }
    if (bad) printf("  %s: %ld of %ld differ, max error %.3g at %ld\n", what, bad, n, maxerr, worst);
    return bad == 0;
}

static inline int finish(const char *name) {
    printf("%s: %d passed, %d failed\n", name, g_pass, g_fail);
    return g_fail ? 1 : 0;
}

#endif
