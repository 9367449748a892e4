/*
 * test_rng.c: Philox4x32-10 against Random123's published known-answer
 * vectors; the normals it feeds are N(0,1) (moments), independent of how
 * a range is split into calls, and distinct across seeds, samples and
 * streams.
 */
#include <stdlib.h>

#include "check.h"
#include "internal.h"

int main(void) {
    static const uint32_t kat[3][10] = {
        {0, 0, 0, 0, 0, 0, 0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8},
        {0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff, 0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd},
        {0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344, 0xa4093822, 0x299f31d0, 0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1}};
    for (int i = 0; i < 3; i++) {
        uint32_t out[4];
        vbs_philox4x32(kat[i] + 4, kat[i], out);
        CHECK(!memcmp(out, kat[i] + 6, sizeof out), "KAT %d: got %08x %08x %08x %08x", i, out[0], out[1], out[2], out[3]);
    }
    enum { N = 1 << 20 };
    float *z = malloc(sizeof(float) * N), *w = malloc(sizeof(float) * N);
    vbs_randn(42, 0, 1, 0, N, z);
    double m1 = 0, m2 = 0, m3 = 0, m4 = 0;
    long tail = 0;
    for (int i = 0; i < N; i++) {
        double x = z[i];
        m1 += x; m2 += x * x; m3 += x * x * x; m4 += x * x * x * x;
        tail += fabs(x) > 1.959964;
    }
    m1 /= N; m2 /= N; m3 /= N; m4 /= N;
    /* standard errors at N = 2^20: mean 0.001, var 0.0014, skew 0.0024, kurtosis 0.0048 */
    CHECK(fabs(m1) < 0.005, "mean %g", m1);
    CHECK(fabs(m2 - 1) < 0.007, "variance %g", m2);
    CHECK(fabs(m3) < 0.012, "third moment %g", m3);
    CHECK(fabs(m4 - 3) < 0.05, "fourth moment %g", m4);
    CHECK(fabs((double)tail / N - 0.05) < 0.002, "two-sided 5%% tail holds %g", (double)tail / N);
    /* splitting a range into calls at any offset gives the same values */
    int same = 1;
    for (int first = 0; first < 9; first++) {
        vbs_randn(42, 0, 1, (uint64_t)first, 1000, w);
        for (int i = 0; i < 1000; i++) same &= w[i] == z[first + i];
    }
    CHECK(same, "randn depends on the split of its range");
    vbs_randn(42, 0, 1, 1000, 3, w);
    CHECK(w[0] == z[1000] && w[2] == z[1002], "single-element calls differ");
    /* different keys and counters give different streams */
    vbs_randn(43, 0, 1, 0, 64, w);
    CHECK(memcmp(w, z, 64 * sizeof(float)), "seed does not change the stream");
    vbs_randn(42, 1, 1, 0, 64, w);
    CHECK(memcmp(w, z, 64 * sizeof(float)), "sample index does not change the stream");
    vbs_randn(42, 0, 2, 0, 64, w);
    CHECK(memcmp(w, z, 64 * sizeof(float)), "stream id does not change the stream");
    vbs_randn(42, (uint64_t)1 << 32, 1, 0, 64, w);
    CHECK(memcmp(w, z, 64 * sizeof(float)), "high bits of the sample index are ignored");
    free(z);
    free(w);
    return finish("test_rng");
}
