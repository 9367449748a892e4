/*
 * load_verify.c: what the CRC-32C of format 1.2 costs at load. On one model
 * file, warm page cache, the median CPU time of RUNS runs of each of:
 *   - load 1.2: vbs_model_load of the file as it is (checksums verified),
 *     and vbs_model_load_memory of its bytes;
 *   - load 1.0: the same for the model written without checksums
 *     (VBS_WRITE_NO_CHECKSUMS), so nothing but the CRCs differs; the two
 *     alternate, so that a busy neighbour slows both alike;
 *   - verify: the CRC-32C of every tensor alone, on the mapped bytes, on
 *     the SSE4.2 path and on the table path (data in the CPU's caches), and
 *     on the SSE4.2 path after the caches are flushed (a 256 MB buffer
 *     written first, not timed), as at the first pass of a load;
 *   - parse 1.2 and 1.0: vbs_format_parse alone (preamble, header,
 *     tensors, padding, and in 1.2 the CRCs with the finite check made in
 *     the same pass; no graph), from memory: the reader's part of a load.
 * Not a test: timings are noisy on a shared machine. bench/load_verify.sh
 * builds it, makes the reference model and runs it; by hand, from the top
 * of a built tree:
 *
 *   cc -O2 -Iruntime -Iruntime/include -Ibuild/gen bench/load_verify.c build/libvbseg_static.a \
 *      -lopenblas -lprotobuf-c -lnifti2 -lznz -lstb -ljansson -lz -lm -fopenmp -o /tmp/load_verify
 *   /tmp/load_verify MODEL.vbseg [RUNS]
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "internal.h"

static double now_ms(void) {
    struct timespec t;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t); /* CPU time: a shared machine preempts us (as conv_backward.c) */
    return (double)t.tv_sec * 1e3 + (double)t.tv_nsec * 1e-6;
}

static int cmp_d(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(double *t, int n) {
    qsort(t, (size_t)n, sizeof *t, cmp_d);
    return n % 2 ? t[n / 2] : 0.5 * (t[n / 2 - 1] + t[n / 2]);
}

/* one load of path (or of buf, len from memory): ms, or -1 on a refusal */
static double load_once(const char *path, const void *buf, size_t len) {
    double t0 = now_ms();
    vbs_model *m;
    vbs_status st = buf ? vbs_model_load_memory(buf, len, path, &m) : vbs_model_load(path, &m);
    double dt = now_ms() - t0;
    if (st) fprintf(stderr, "load_verify: %s\n", vbs_model_errmsg(m));
    vbs_model_free(m);
    return st ? -1 : dt;
}

int main(int argc, char **argv) {
    if (argc < 2) { fprintf(stderr, "usage: load_verify MODEL.vbseg [RUNS]\n"); return 2; }
    const char *path = argv[1];
    int runs = argc > 2 ? atoi(argv[2]) : 200;
    if (runs < 1) runs = 1;
    double *t = malloc(sizeof(double) * (size_t)runs);
    vbs_model *m;
    if (!t || vbs_model_load(path, &m)) { fprintf(stderr, "load_verify: %s\n", t ? vbs_model_errmsg(m) : "out of memory"); return 1; }
    if (!m->def.checksummed) { fprintf(stderr, "load_verify: %s: not checksummed (format 1.%d)\n", path, m->def.format_minor); return 1; }
    char old[4096], err[VBS_ERRLEN];
    snprintf(old, sizeof old, "/tmp/load_verify.%d.vbseg", (int)getpid());
    if (vbs_format_write_flags(&m->def, old, VBS_WRITE_NO_CHECKSUMS, err)) { fprintf(stderr, "load_verify: %s\n", err); return 1; }
    uint64_t bytes = 0;
    for (int i = 0; i < m->def.n_tensors; i++) bytes += m->def.tensors[i].nbytes;
    printf("%s: %d tensors, %.2f MB of weights (%zu-byte file), median CPU time of %d runs, warm cache\n", path, m->def.n_tensors, bytes / 1e6,
           m->map_len, runs);

    /* the two files alternate, so that a busy neighbour slows both alike; 3 warm-up rounds */
    double *t2 = malloc(sizeof(double) * (size_t)runs);
    if (!t2) return 1;
    double with[2], without[2];
    vbs_model *m0;
    if (vbs_model_load(old, &m0)) { fprintf(stderr, "load_verify: %s\n", vbs_model_errmsg(m0)); return 1; }
    for (int mem = 0; mem < 2; mem++) {
        for (int r = -3; r < runs; r++) {
            double a = load_once(path, mem ? m->map : NULL, m->map_len), b = load_once(old, mem ? m0->map : NULL, m0->map_len);
            if (a < 0 || b < 0) return 1;
            if (r >= 0) { t[r] = a; t2[r] = b; }
        }
        with[mem] = median(t, runs);
        without[mem] = median(t2, runs);
    }
    free(t2);
    unlink(old);
    /* the CRCs alone, over the mapped tensors; path 2: SSE4.2 again, the CPU caches flushed
     * first by writing a buffer larger than they are (not timed) */
    double verify[3] = {0, 0, 0};
    size_t flush_n = (size_t)256 << 20;
    uint8_t *flush = malloc(flush_n);
    for (int path_i = 0; path_i < 3; path_i++) {
        if (path_i != 1 && !vbs_crc32c_hw_available()) continue;
        if (path_i == 2 && !flush) continue;
        uint32_t sink = 0;
        for (int r = -3; r < (path_i == 2 ? runs / 4 + 1 : runs); r++) {
            if (path_i == 2) memset(flush, r & 0xff, flush_n);
            double t0 = now_ms();
            for (int i = 0; i < m->def.n_tensors; i++) {
                const vbs_tensor_def *x = &m->def.tensors[i];
                sink ^= path_i == 1 ? vbs_crc32c_sw(0, x->data, x->nbytes) : vbs_crc32c_hw(0, x->data, x->nbytes);
            }
            if (r >= 0) t[r] = now_ms() - t0;
        }
        verify[path_i] = median(t, path_i == 2 ? runs / 4 + 1 : runs);
        if (sink == 0x5a5a5a5a) printf(" ");
    }
    /* the reader alone, from memory */
    double parse[2];
    for (int v = 0; v < 2; v++) {
        const vbs_model *x = v ? m0 : m;
        for (int r = -3; r < runs; r++) {
            vbs_def d;
            double t0 = now_ms();
            vbs_status st = vbs_format_parse(x->map, x->map_len, path, &d, err);
            if (r >= 0) t[r] = now_ms() - t0;
            if (st) { fprintf(stderr, "load_verify: %s\n", err); return 1; }
            vbs_def_free(&d);
        }
        parse[v] = median(t, runs);
    }
    for (int mem = 0; mem < 2; mem++) {
        const char *how = mem ? "memory" : "file  ";
        printf("load from %s, 1.2 (verified):     %8.3f ms\n", how, with[mem]);
        printf("load from %s, 1.0 (no checksums): %8.3f ms\n", how, without[mem]);
        printf("load from %s, difference:         %8.3f ms\n", how, with[mem] - without[mem]);
    }
    if (verify[0] > 0) printf("verify alone, SSE4.2:                  %8.3f ms (%.1f GB/s)\n", verify[0], bytes / verify[0] * 1e-6);
    printf("verify alone, table:                   %8.3f ms (%.1f GB/s)\n", verify[1], bytes / verify[1] * 1e-6);
    if (verify[2] > 0)
        printf("verify alone, SSE4.2, caches flushed:  %8.3f ms (%.1f GB/s; median of %d)\n", verify[2], bytes / verify[2] * 1e-6, runs / 4 + 1);
    printf("parse 1.2 (from memory):               %8.3f ms\n", parse[0]);
    printf("parse 1.0 (from memory):               %8.3f ms\n", parse[1]);
    vbs_model_free(m);
    vbs_model_free(m0);
    free(flush);
    free(t);
    return 0;
}
