/*
 * bench.c: `vbseg bench`: the time of one Monte-Carlo sample (weights
 * re-drawn every pass, statistics accumulated) on a random input, and the
 * throughput against the model's FLOP count. Timing lives here, never in
 * the tests.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli.h"

static const char *help =
    "usage: vbseg bench --model M [--samples N] [--threads T] [--shape 1x4x240x240] [--mode sample|mean]\n"
    "                   [--repeat R]\n"
    "\n"
    "Runs one warm-up pass, then R timed runs of N Monte-Carlo samples on a seeded\n"
    "random input and reports the best run. --shape is one image (N = 1) of a size\n"
    "the network takes as given (default: the graph's fixed dims, else the card's\n"
    "patch, else 64); other sizes are refused with the sizes it takes. The last\n"
    "line reads\n"
    "  per-sample: X ms, Y GFLOP/s\n"
    "`vbseg bench --train --help` describes the training benchmark.\n";

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

int cmd_bench(int argc, char **argv) {
    const char *path = NULL, *shape_s = NULL;
    long long samples = 10, threads = 0, repeat = 3;
    vbs_mode mode = VBS_MODE_SAMPLE;
    for (int i = 1; i < argc; i++)
        if (!strcmp(argv[i], "--train")) return cmd_bench_train(argc, argv);
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) { fputs(help, stdout); return 0; }
        if (!(v = cli_value("bench", argc, argv, &i))) return 2;
        if (!strcmp(a, "--model")) path = v;
        else if (!strcmp(a, "--shape")) shape_s = v;
        else if (!strcmp(a, "--samples")) { if (!cli_int("bench", a, v, 1, 100000, &samples)) return 2; }
        else if (!strcmp(a, "--threads")) { if (!cli_int("bench", a, v, 0, 256, &threads)) return 2; }
        else if (!strcmp(a, "--repeat")) { if (!cli_int("bench", a, v, 1, 1000, &repeat)) return 2; }
        else if (!strcmp(a, "--mode")) {
            if (!strcmp(v, "sample")) mode = VBS_MODE_SAMPLE;
            else if (!strcmp(v, "mean")) mode = VBS_MODE_MEAN;
            else { cli_error("bench", "--mode must be sample or mean"); return 2; }
        } else { cli_error("bench", "unknown option '%s'", a); return 2; }
    }
    if (!path) { cli_error("bench", "--model is required"); return 2; }
    vbs_model *m;
    if (vbs_model_load(path, &m)) {
        cli_error("bench", "%s", vbs_model_errmsg(m));
        vbs_model_free(m);
        return 1;
    }
    int64_t dims[8], pass[8];
    int nd;
    vbs_value_info in;
    vbs_model_input(m, 0, &in);
    if (shape_s) {
        nd = cli_shape(shape_s, dims, 8);
        if (nd < 3) { vbs_model_free(m); return cli_error("bench", "--shape '%s' is not like 1x4x240x240", shape_s); }
        if (dims[0] != 1) {
            vbs_model_free(m);
            return cli_error("bench", "--shape %s: bench times Monte-Carlo runs of one image; N must be 1", shape_s);
        }
    } else {
        const vbs_card *c = vbs_model_card(m);
        nd = in.ndim;
        for (int i = 0; i < nd; i++) {
            int sp = i - (nd - c->n_patch);
            dims[i] = i == 0 ? 1 : in.dims[i] >= 0 ? in.dims[i] : (sp >= 0 && c->n_patch ? c->patch[sp] : 64);
        }
    }
    /* one pass runs the graph's fixed batch (one slot used), else 1; the
     * network must take the size as given, so that the FLOPs are those run */
    memcpy(pass, dims, sizeof dims);
    if (in.ndim == nd && in.dims[0] > 0) pass[0] = in.dims[0];
    vbs_session *s;
    if (vbs_session_new(m, &s)) { vbs_model_free(m); return cli_error("bench", "out of memory"); }
    if (vbs_session_check_input(s, pass, nd)) {
        int r = cli_error("bench", "%s: --shape: %s", path, vbs_session_errmsg(s));
        vbs_session_free(s);
        vbs_model_free(m);
        return r;
    }
    double flops;
    if (vbs_model_flops(m, pass, nd, &flops)) {
        int r = cli_error("bench", "%s", vbs_model_errmsg(m));
        vbs_session_free(s);
        vbs_model_free(m);
        return r;
    }
    int64_t n = 1;
    for (int i = 0; i < nd; i++) n *= dims[i];
    float *x = malloc(sizeof(float) * (size_t)n);
    if (!x) { vbs_session_free(s); vbs_model_free(m); return cli_error("bench", "out of memory"); }
    uint64_t r = 0x9E3779B97F4A7C15ull;
    for (int64_t i = 0; i < n; i++) {
        r ^= r << 13; r ^= r >> 7; r ^= r << 17;
        x[i] = (float)((double)(r >> 11) / 9007199254740992.0 * 2.0 - 1.0);
    }
    vbs_mc_opts o = {.n_samples = 1, .seed = 1, .mode = mode, .threads = (int)threads, .overlap = 0.5f, .adaptive_tol = 0.f, .adaptive_block = 0};
    int rc = 0;
    if (vbs_session_run_mc(s, x, dims, nd, &o)) { rc = cli_error("bench", "%s", vbs_session_errmsg(s)); goto out; }
    o.n_samples = (int)samples;
    double best = 1e30;
    for (int k = 0; k < repeat; k++) {
        double t0 = now();
        if (vbs_session_run_mc(s, x, dims, nd, &o)) { rc = cli_error("bench", "%s", vbs_session_errmsg(s)); goto out; }
        double t = now() - t0;
        if (t < best) best = t;
    }
    int ns = mode == VBS_MODE_MEAN ? 1 : (int)samples;
    double per = best / ns;
    printf("model: %s\nshape: ", path);
    for (int i = 0; i < nd; i++) printf("%s%lld", i ? "x" : "", (long long)dims[i]);
    printf("\nmode: %s, samples: %d, threads: %d, repeats: %lld (best)\n", mode == VBS_MODE_MEAN ? "mean" : "sample", ns,
           threads ? (int)threads : vbs_default_threads(), repeat);
    printf("flops per pass: %.3f GFLOP\n", flops * 1e-9);
    printf("per-sample: %.2f ms, %.1f GFLOP/s\n", per * 1e3, flops / per * 1e-9);
out:
    vbs_session_free(s);
    vbs_model_free(m);
    free(x);
    return rc;
}
