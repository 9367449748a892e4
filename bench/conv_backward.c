/*
 * conv_backward.c: forward and backward time of each convolution of the
 * reference U-Net (bench/unet_layers.txt) at batch 1 on one thread, through
 * the op table's fast kernels, as the trainer will call them; the PyTorch
 * side is bench/torch_conv_backward.py. Best of REPS runs per kernel. Not a
 * test: timings are noisy on a shared machine. From the top of a built tree:
 *
 *   cc -O2 -Iruntime -Iruntime/include -Imodels -Itests -Ibuild/gen bench/conv_backward.c build/libvbseg_static.a \
 *      -lopenblas -lprotobuf-c -lnifti2 -lznz -lstb -lz -lm -fopenmp -o /tmp/conv_backward
 *   /tmp/conv_backward bench/unet_layers.txt [REPS] [BATCH]
 *
 * Prints per layer: forward ms, backward ms (all wanted gradients), and the
 * backward split into dW+dB only and dX only; then the totals.
 */
#include <time.h>

#include "gradcheck.h"

static double now_ms(void) {
    struct timespec t;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t); /* CPU time: a shared machine preempts us */
    return t.tv_sec * 1e3 + t.tv_nsec * 1e-6;
}

/* best time of reps calls of the backward with the given inputs wanted */
static double time_backward(gc_case *c, float **dx, int want_x, int want_wb, int reps) {
    const vbs_op_info *oi = &vbs_ops[c->node->op];
    vbs_op_args a;
    gc_args(c, &a);
    vbs_grad_args g;
    memset(&g, 0, sizeof g);
    g.fwd = &a;
    g.dy[0] = c->dy[0];
    g.dx[0] = want_x ? dx[0] : NULL;
    g.dx[1] = want_wb ? dx[1] : NULL;
    g.dx[2] = want_wb ? dx[2] : NULL;
    g.work = c->work;
    double best = 1e30;
    for (int r = 0; r < reps + 1; r++) {
        double t0 = now_ms();
        oi->backward(&g);
        double t = now_ms() - t0;
        if (r && t < best) best = t; /* the first run warms caches and pages */
    }
    return best;
}

int main(int argc, char **argv) {
    if (argc < 2) { fprintf(stderr, "usage: conv_backward LAYERS.txt [REPS] [BATCH]\n"); return 2; }
    int reps = argc > 2 ? atoi(argv[2]) : 20, batch = argc > 3 ? atoi(argv[3]) : 1;
    FILE *f = fopen(argv[1], "r");
    if (!f) { fprintf(stderr, "conv_backward: %s: cannot open\n", argv[1]); return 1; }
    vbs_blas_set_threads(1);
    char line[256];
    double tf = 0, tb = 0, tw = 0, tx = 0;
    printf("%-6s %8s %8s %8s %8s\n", "layer", "fwd", "bwd", "dW+dB", "dX");
    while (fgets(line, sizeof line, f)) {
        char name[32], kind[16];
        int cin, cout, k, s, p, h, w, wdx;
        if (line[0] == '#' || sscanf(line, "%31s %15s %d %d %d %d %d %d %d %d", name, kind, &cin, &cout, &k, &s, &p, &h, &w, &wdx) != 10)
            continue;
        int tr = !strcmp(kind, "convT");
        vbs_shape sh[3] = {{4, {batch, cin, h, w}}, {4, {tr ? cin : cout, tr ? cout : cin, k, k}}, {1, {cout}}};
        int64_t st[2] = {s, s}, pads[4] = {p, p, p, p};
        vbs_builder *b = vbs_b_new(1);
        vbs_attr at[2] = {vbs_b_ints(b, "strides", 2, st), vbs_b_ints(b, "pads", 4, pads)};
        gc_case c;
        if (!gc_new(&c, tr ? VBS_OP_CONV_TRANSPOSE : VBS_OP_CONV, 3, sh, 2, at, b, name)) return 1;
        float **dx = gc_alloc_dx(&c, 0.f);
        double fwd = 1e30;
        for (int r = 0; r < reps + 1; r++) {
            double t0 = now_ms();
            gc_forward(&c, 0);
            double t = now_ms() - t0;
            if (r && t < fwd) fwd = t;
        }
        double bwd = time_backward(&c, dx, wdx, 1, reps), bw = time_backward(&c, dx, 0, 1, reps);
        double bx = wdx ? time_backward(&c, dx, 1, 0, reps) : 0;
        printf("%-6s %8.3f %8.3f %8.3f %8.3f\n", name, fwd, bwd, bw, bx);
        tf += fwd; tb += bwd; tw += bw; tx += bx;
        gc_free_dx(dx);
        gc_free(&c);
    }
    fclose(f);
    printf("%-6s %8.3f %8.3f %8.3f %8.3f\n", "total", tf, tb, tw, tx);
    return 0;
}
