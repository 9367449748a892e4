/*
 * test_longrun.c: 10^4 Monte-Carlo runs of the public API in one process
 * (issue 10, item 9): a tiny U-Net (latent, heteroscedastic head) saved and
 * loaded from a file, one session cycling through three input shapes (each
 * change replans the buffers), the session and the model freed and loaded
 * again every 1000 runs, every 50th run on 2 threads, every map read
 * after every run. Checked:
 *  - resident memory (VmRSS, /proc/self/status) after the last run within
 *    5% of after the tenth (not under ASan, whose quarantine holds freed
 *    memory on purpose: there LeakSanitizer checks that nothing leaks);
 *  - the open file descriptors (/proc/self/fd) the same after the last run
 *    as after the tenth;
 *  - the same input gives the same bytes at the last run as at the first
 *    ones of its shape: nothing carried from run to run changes the result.
 * Not timing: the figures are printed for the README.
 */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "unet.h"
#include "vbseg.h"

#if defined(__SANITIZE_ADDRESS__)
#define ASAN 1
#else
#define ASAN 0
#endif

static long vm_rss_kb(void) {
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    long kb = -1;
    while (f && fgets(line, sizeof line, f))
        if (!strncmp(line, "VmRSS:", 6)) kb = atol(line + 6);
    if (f) fclose(f);
    return kb;
}

static int open_fds(void) {
    DIR *d = opendir("/proc/self/fd");
    int n = 0;
    struct dirent *e;
    while (d && (e = readdir(d)))
        n += e->d_name[0] != '.';
    if (d) closedir(d);
    return n - 1; /* the listing's own */
}

/* a checksum of every map of the last run (order-sensitive, exact) */
static uint64_t maps_hash(vbs_session *s) {
    static const vbs_map which[] = {VBS_MAP_LABELS, VBS_MAP_PROB_MEAN, VBS_MAP_ENTROPY, VBS_MAP_MUTUAL_INFO, VBS_MAP_EXPECTED_ENTROPY,
                                    VBS_MAP_HET_ALEATORIC, VBS_MAP_HET_EPISTEMIC};
    uint64_t h = 1469598103934665603ull;
    for (size_t k = 0; k < sizeof which / sizeof which[0]; k++) {
        const float *p;
        vbs_map_info info;
        if (vbs_session_map(s, which[k], &p, &info)) return 0;
        int64_t n = 1;
        for (int d = 0; d < info.ndim; d++) n *= info.dims[d];
        const unsigned char *b = (const unsigned char *)p;
        for (int64_t i = 0; i < n * (int64_t)sizeof(float); i++) h = (h ^ b[i]) * 1099511628211ull;
    }
    return h;
}

int main(void) {
    const int runs = ASAN ? 2000 : 10000;
    char path[] = "/tmp/vbs_longrun.XXXXXX";
    int tfd = mkstemp(path);
    CHECK(tfd >= 0, "mkstemp");
    close(tfd);
    vbs_unet_opts u = vbs_unet_defaults();
    u.in_channels = 2; u.classes = 3; u.base = 2; u.depth = 2; u.latent = 2; u.hetero = 1; u.rho0 = -3.f;
    vbs_model *m;
    CHECK(vbs_unet_build(&u, &m) == VBS_OK, "build: %s", vbs_model_errmsg(m));
    CHECK(vbs_model_save(m, path) == VBS_OK, "save: %s", vbs_model_errmsg(m));
    vbs_model_free(m);
    /* three shapes: 8x8, 8x12, 2 slices of 8x8 */
    static const int64_t shapes[3][5] = {{1, 2, 8, 8, 0}, {1, 2, 8, 12, 0}, {1, 2, 2, 8, 8}};
    static const int nds[3] = {4, 4, 5};
    float *x = malloc(sizeof(float) * 2 * 2 * 8 * 8);
    uint64_t r = 7;
    for (int i = 0; i < 2 * 2 * 8 * 8; i++) { r = r * 6364136223846793005ull + 1442695040888963407ull; x[i] = (float)((r >> 40) % 1000) / 250.f - 2.f; }
    vbs_mc_opts o = vbs_mc_defaults();
    o.n_samples = 2;
    o.seed = 11;
    o.threads = 1;
    uint64_t first[3] = {0, 0, 0};
    long rss10 = 0, rss_last = 0;
    int fd10 = 0, fd_last = 0, same = 1, failed = 0;
    vbs_session *s = NULL;
    m = NULL;
    for (int i = 0; i < runs && !failed; i++) {
        if (i % 1000 == 0) {
            vbs_session_free(s);
            vbs_model_free(m);
            s = NULL;
            if (vbs_model_load(path, &m) || vbs_session_new(m, &s)) { failed = 1; break; }
        }
        int k = i % 3;
        o.threads = i % 50 == 5 ? 2 : 1; /* the worker pool too, now and then (the same bytes at any thread count) */
        if (vbs_session_run_mc(s, x, shapes[k], nds[k], &o)) { printf("run %d: %s\n", i, vbs_session_errmsg(s)); failed = 1; break; }
        uint64_t h = maps_hash(s);
        if (i < 3) first[k] = h;
        else if (h != first[k]) {
            if (same) printf("run %d (shape %d): maps differ from the first run of that shape\n", i, k);
            same = 0;
        }
        if (i == 9) { rss10 = vm_rss_kb(); fd10 = open_fds(); }
        if (getenv("VBS_LONGRUN_TRACE") && i % 250 == 249) printf("run %d: VmRSS %ld kB, fds %d\n", i + 1, vm_rss_kb(), open_fds());
    }
    rss_last = vm_rss_kb();
    fd_last = open_fds();
    CHECK(!failed, "every run succeeds");
    CHECK(same, "the same input gives the same maps at every run");
    CHECK(first[0] && first[1] && first[2] && first[0] != first[1], "the maps were read");
    printf("longrun: %d session runs%s: VmRSS %ld kB after 10, %ld kB after %d (%+.2f%%); open fds %d after 10, %d after %d\n", runs,
           ASAN ? " (ASan build)" : "", rss10, rss_last, runs, 100.0 * (double)(rss_last - rss10) / (double)rss10, fd10, fd_last, runs);
    if (!ASAN) CHECK(rss_last <= rss10 * 1.05 && rss_last >= rss10 * 0.95, "VmRSS after %d runs (%ld kB) within 5%% of after 10 (%ld kB)", runs, rss_last, rss10);
    CHECK(fd_last == fd10, "open fds after %d runs (%d) equal those after 10 (%d)", runs, fd_last, fd10);
    vbs_session_free(s);
    vbs_model_free(m);
    free(x);
    unlink(path);
    return finish("test_longrun");
}
