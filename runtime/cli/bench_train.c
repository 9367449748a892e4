/*
 * bench_train.c: `vbseg bench --train`: the time of the trainer's optimiser
 * steps on random data (a minibatch of random images and random targets;
 * weights redrawn every step; loss, backward, KL, Adam), with the images per
 * second and the process's peak resident memory. Timing lives here, never
 * in the tests.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "cli.h"
#include "trainer.h"

static const char *help =
    "usage: vbseg bench --train --model M [--batch 16] [--shape 4x128x128] [--threads T] [--steps 3] [--repeat 3]\n"
    "                   [--flipout]\n"
    "\n"
    "Runs one warm-up step, then R timed runs of N optimiser steps (Adam, lr 1e-3)\n"
    "on a seeded random minibatch of --batch images of --shape (channels x spatial)\n"
    "with random targets, and reports the best run. The last line reads\n"
    "  train-step: X ms, Y img/s, peak RSS Z MB\n";

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

int cmd_bench_train(int argc, char **argv) {
    const char *path = NULL, *shape_s = "4x128x128";
    long long batch = 16, threads = 0, steps = 3, repeat = 3;
    int flipout = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) { fputs(help, stdout); return 0; }
        if (!strcmp(a, "--train")) continue;
        if (!strcmp(a, "--flipout")) { flipout = 1; continue; }
        if (!(v = cli_value("bench", argc, argv, &i))) return 2;
        if (!strcmp(a, "--model")) path = v;
        else if (!strcmp(a, "--shape")) shape_s = v;
        else if (!strcmp(a, "--batch")) { if (!cli_int("bench", a, v, 1, 4096, &batch)) return 2; }
        else if (!strcmp(a, "--threads")) { if (!cli_int("bench", a, v, 0, 64, &threads)) return 2; }
        else if (!strcmp(a, "--steps")) { if (!cli_int("bench", a, v, 1, 100000, &steps)) return 2; }
        else if (!strcmp(a, "--repeat")) { if (!cli_int("bench", a, v, 1, 1000, &repeat)) return 2; }
        else { cli_error("bench", "unknown option '%s' (see --train --help)", a); return 2; }
    }
    if (!path) { cli_error("bench", "--model is required"); return 2; }
    int64_t dims[8];
    int nd = cli_shape(shape_s, dims, 8);
    if (nd < 2 || nd > 4) return cli_error("bench", "--shape '%s' is not like 4x128x128 (channels x spatial)", shape_s) ? 2 : 2;
    vbs_model *m;
    if (vbs_model_load(path, &m)) {
        cli_error("bench", "%s", vbs_model_errmsg(m));
        vbs_model_free(m);
        return 1;
    }
    int rc = 1;
    char err[VBS_ERRLEN];
    vbs_trainer t;
    vbs_trainer_cfg cfg = {.opt = {.kind = VBS_OPT_ADAM, .lr = 1e-3f, .beta1 = 0.9f, .beta2 = 0.999f, .eps = 1e-8f},
                           .seed = 1, .threads = threads ? (int)threads : vbs_default_threads(), .flipout = flipout,
                           .kl_weight = 1e-7f, .latent_kl_weight = 1e-4f};
    int64_t V = 1;
    for (int i = 1; i < nd; i++) V *= dims[i];
    float *x = malloc(sizeof(float) * (size_t)(batch * dims[0] * V));
    uint8_t *y = malloc((size_t)(batch * V));
    if (!x || !y) { cli_error("bench", "out of memory"); goto out; }
    if (vbs_trainer_init(&t, m, &cfg, err)) { cli_error("bench", "%s: %s", path, err); vbs_trainer_free(&t); goto out; }
    const vbs_card *card = vbs_model_card(m);
    vbs_value_info o;
    vbs_model_output(m, 0, &o);
    int k = o.ndim > 1 && o.dims[1] > 0 ? (int)o.dims[1] : (card->n_labels ? card->n_labels : 2);
    vbs_loss_spec_from_card(card, k, t.hetero, &t.loss);
    uint64_t r = 0x9E3779B97F4A7C15ull;
    for (int64_t i = 0; i < batch * dims[0] * V; i++) {
        r ^= r << 13; r ^= r >> 7; r ^= r << 17;
        x[i] = (float)((double)(r >> 11) / 9007199254740992.0 * 2.0 - 1.0);
    }
    for (int64_t i = 0; i < batch * V; i++) {
        r ^= r << 13; r ^= r >> 7; r ^= r << 17;
        y[i] = (uint8_t)((r >> 20) % (uint64_t)(k > 1 ? k : 2));
    }
    vbs_batch b = {(int)batch, (int)dims[0], nd - 1, {1, 1, 1}, x, y};
    for (int i = 1; i < nd; i++) b.spatial[i - 1] = dims[i];
    vbs_step_stats st;
    int64_t step = 0;
    if (vbs_trainer_step(&t, &b, step++, 1e-3f, &st, err)) { cli_error("bench", "%s", err); vbs_trainer_free(&t); goto out; }
    double best = 1e30;
    for (int rp = 0; rp < repeat; rp++) {
        double t0 = now();
        for (int s = 0; s < steps; s++)
            if (vbs_trainer_step(&t, &b, step++, 1e-3f, &st, err)) { cli_error("bench", "%s", err); vbs_trainer_free(&t); goto out; }
        double dt = (now() - t0) / (double)steps;
        if (dt < best) best = dt;
    }
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    printf("model: %s\nminibatch: %lld x %s, threads %d, %s\nloss after %lld steps: %.5f\n", path, batch, shape_s, t.threads,
           flipout ? "Flipout" : "one weight draw per minibatch", (long long)step, st.loss);
    printf("train-step: %.1f ms, %.2f img/s, peak RSS %.0f MB\n", best * 1e3, (double)batch / best, (double)ru.ru_maxrss / 1024.0);
    vbs_trainer_free(&t);
    rc = 0;
out:
    free(x);
    free(y);
    vbs_model_free(m);
    return rc;
}
