/*
 * test_crc.c: CRC-32C (runtime/crc32c.c). Oracles: the catalogue's check
 * value CRC32C("123456789") = 0xE3069283, the iSCSI vectors of RFC 3720
 * B.4, and a bitwise loop over the polynomial written here, against which
 * the hardware path (where the CPU has SSE4.2), the table path and the
 * dispatcher are held on random buffers of every length 0..300 at every
 * misalignment 0..7, on large buffers that cross the 3-stream block sizes,
 * and when a buffer is split in two calls.
 */
#include <stdlib.h>

#include "check.h"
#include "internal.h"

static uint32_t bitwise(uint32_t crc, const uint8_t *p, size_t n) {
    crc = ~crc;
    for (size_t i = 0; i < n; i++) {
        crc ^= p[i];
        for (int k = 0; k < 8; k++) crc = crc & 1 ? (crc >> 1) ^ 0x82F63B78u : crc >> 1;
    }
    return ~crc;
}

typedef uint32_t (*crc_fn)(uint32_t, const void *, size_t);

int main(void) {
    int hw = vbs_crc32c_hw_available();
    printf("hardware CRC32C (SSE4.2): %s\n", hw ? "yes" : "no (the hardware path is not exercised)");
    crc_fn fns[3] = {vbs_crc32c, vbs_crc32c_sw, vbs_crc32c_hw};
    const char *names[3] = {"dispatch", "table", "hardware"};
    int nf = hw ? 3 : 2;

    uint8_t v[4][32];
    memset(v[0], 0, 32);
    memset(v[1], 0xff, 32);
    for (int i = 0; i < 32; i++) { v[2][i] = (uint8_t)i; v[3][i] = (uint8_t)(31 - i); }
    const uint32_t want[4] = {0x8A9136AA, 0x62A8AB43, 0x46DD794E, 0x113FDB5C};
    for (int f = 0; f < nf; f++) {
        uint32_t c = fns[f](0, "123456789", 9);
        CHECK(c == 0xE3069283u, "%s: check value 0x%08X", names[f], c);
        for (int k = 0; k < 4; k++) {
            c = fns[f](0, v[k], 32);
            CHECK(c == want[k], "%s: RFC 3720 vector %d: 0x%08X, want 0x%08X", names[f], k, c, want[k]);
        }
        CHECK(fns[f](0, "", 0) == 0, "%s: empty buffer", names[f]);
    }
    CHECK(bitwise(0, (const uint8_t *)"123456789", 9) == 0xE3069283u, "the bitwise oracle itself");

    /* random buffers: every length 0..300 at every misalignment 0..7 */
    size_t big = 3 * 8192 * 3 + 3 * 256 * 2 + 77; /* two long blocks, two short blocks, a tail */
    uint8_t *buf = malloc(big + 64);
    uint64_t r = 0x243F6A8885A308D3ull;
    for (size_t i = 0; i < big + 64; i++) {
        r ^= r << 13; r ^= r >> 7; r ^= r << 17;
        buf[i] = (uint8_t)(r >> 32);
    }
    int bad = 0, cases = 0;
    for (int mis = 0; mis < 8; mis++)
        for (size_t n = 0; n <= 300; n++) {
            uint32_t ref = bitwise(0, buf + mis, n);
            for (int f = 0; f < nf; f++) {
                uint32_t c = fns[f](0, buf + mis, n);
                if (c != ref && bad++ < 5) printf("  %s: length %zu at +%d: 0x%08X, want 0x%08X\n", names[f], n, mis, c, ref);
                cases++;
            }
        }
    CHECK(!bad, "%d of %d small buffers differ from the bitwise loop", bad, cases);
    /* large buffers across the 3 x 8192 and 3 x 256 blocks, misaligned, with a seed carried in */
    const size_t lens[] = {3 * 256, 3 * 256 + 1, 3 * 8192 - 1, 3 * 8192, 3 * 8192 + 8, 3 * 8192 + 3 * 256, 5 * 8192 + 13, big};
    bad = 0;
    for (size_t k = 0; k < sizeof lens / sizeof *lens; k++)
        for (int mis = 0; mis < 8; mis += 3) {
            uint32_t ref = bitwise(0x12345678u, buf + mis, lens[k]);
            for (int f = 0; f < nf; f++) {
                uint32_t c = fns[f](0x12345678u, buf + mis, lens[k]);
                if (c != ref && bad++ < 5) printf("  %s: length %zu at +%d: 0x%08X, want 0x%08X\n", names[f], lens[k], mis, c, ref);
            }
        }
    CHECK(!bad, "%d large buffers differ from the bitwise loop", bad);
    /* chaining: CRC(A B) = crc(crc(A), B) at any split */
    bad = 0;
    for (size_t cut = 0; cut <= big; cut += 1009)
        for (int f = 0; f < nf; f++)
            bad += fns[f](fns[f](0, buf, cut), buf + cut, big - cut) != bitwise(0, buf, big);
    CHECK(!bad, "%d chained CRCs differ", bad);
    free(buf);
    return finish("test_crc");
}
