/*
 * run.c: `vbseg run`: Monte-Carlo inference on one input (NIfTI volume,
 * one file per channel or one 4D file, or a .npy array), writing the
 * uncertainty maps next to each other in OUT, in the input's format and
 * geometry. A 2D model runs slice by slice over a 3D volume.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "cli.h"

static const char *help =
    "usage: vbseg run --model M --input FILE [--input FILE ...] --out DIR\n"
    "                 [--samples 20] [--seed 0] [--mode sample|mean] [--threads T] [--raw] [--verbose]\n"
    "\n"
    "Inputs: .nii/.nii.gz (one file per channel, in the model card's channel order,\n"
    "or one 4D file with the channels along t) or one .npy array shaped (C,H,W) or\n"
    "(C,D,H,W). Intensities are normalised as the model card says.\n"
    "Writes to DIR (NIfTI inputs: .nii.gz with the input's affine; .npy inputs: .npy):\n"
    "  labels             hard labels in the card's label values\n"
    "  prob_mean          mean class probabilities (K channels)\n"
    "  prob_var           variance of each class probability across samples\n"
    "  entropy            predictive entropy H[E p] (nats)\n"
    "  aleatoric_entropy  expected entropy E[H p]\n"
    "  epistemic_mi       mutual information H[E p] - E[H p]\n"
    "  aleatoric_het, epistemic_het   heteroscedastic models only (eq. 10-11)\n"
    "--raw instead runs one pass (mean mode, or the weight draw of sample 0 under\n"
    "--seed) on the data as given (no normalisation) and writes each graph output\n"
    "as DIR/<output>.npy, for checking against other runtimes.\n";

static int ends_with(const char *s, const char *t) {
    size_t n = strlen(s), m = strlen(t);
    return n >= m && !strcmp(s + n - m, t);
}

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

int cmd_run(int argc, char **argv) {
    const char *model = NULL, *outdir = NULL, *inputs[64];
    int n_inputs = 0, raw = 0;
    long long samples = 20, seed = 0, threads = 0;
    vbs_mode mode = VBS_MODE_SAMPLE;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) { fputs(help, stdout); return 0; }
        if (!strcmp(a, "--raw")) { raw = 1; continue; }
        if (!strcmp(a, "--verbose")) { vbs_set_log(cli_log, NULL); continue; }
        if (!(v = cli_value("run", argc, argv, &i))) return 2;
        if (!strcmp(a, "--model")) model = v;
        else if (!strcmp(a, "--input")) {
            if (n_inputs == 64) { cli_error("run", "at most 64 --input files"); return 2; }
            inputs[n_inputs++] = v;
        } else if (!strcmp(a, "--out")) outdir = v;
        else if (!strcmp(a, "--samples")) { if (!cli_int("run", a, v, 1, 100000, &samples)) return 2; }
        else if (!strcmp(a, "--seed")) { if (!cli_int("run", a, v, 0, 0x7fffffffffffffffLL, &seed)) return 2; }
        else if (!strcmp(a, "--threads")) { if (!cli_int("run", a, v, 0, 256, &threads)) return 2; }
        else if (!strcmp(a, "--mode")) {
            if (!strcmp(v, "sample")) mode = VBS_MODE_SAMPLE;
            else if (!strcmp(v, "mean")) mode = VBS_MODE_MEAN;
            else { cli_error("run", "--mode must be sample or mean, not '%s'", v); return 2; }
        } else { cli_error("run", "unknown option '%s' (see --help)", a); return 2; }
    }
    if (!model || !n_inputs || !outdir) { cli_error("run", "--model, --input and --out are required (see --help)"); return 2; }
    int npy = ends_with(inputs[0], ".npy");
    if (!npy && !ends_with(inputs[0], ".nii") && !ends_with(inputs[0], ".nii.gz"))
        return cli_error("run", "%s: input must be .nii, .nii.gz or .npy", inputs[0]);
    if (npy && n_inputs > 1) return cli_error("run", "a .npy input holds all channels: give one file");

    vbs_model *m = NULL;
    vbs_session *s = NULL;
    vbs_volume *vols[64] = {0};
    float *x = NULL;
    int rc = 1;
    char err[1024];
    if (vbs_model_load(model, &m)) { cli_error("run", "%s", vbs_model_errmsg(m)); goto out; }
    const vbs_card *card = vbs_model_card(m);
    vbs_value_info in;
    vbs_model_input(m, 0, &in);
    for (int i = 0; i < n_inputs; i++) {
        vbs_status st = npy ? vbs_volume_read_npy(inputs[i], &vols[i], err, sizeof err)
                            : vbs_volume_read_nifti(inputs[i], &vols[i], err, sizeof err);
        if (st) { cli_error("run", "%s", err); goto out; }
        if (vbs_volume_nan_count(vols[i]))
            fprintf(stderr, "vbseg run: warning: %s: %lld NaN/Inf voxels set to 0\n", inputs[i], (long long)vbs_volume_nan_count(vols[i]));
    }
    int64_t d0[4];
    vbs_volume_dims(vols[0], d0);
    int64_t channels = 0;
    for (int i = 0; i < n_inputs; i++) {
        int64_t d[4];
        vbs_volume_dims(vols[i], d);
        if (d[0] != d0[0] || d[1] != d0[1] || d[2] != d0[2]) {
            cli_error("run", "%s: field dim: %lldx%lldx%lld differs from %s (%lldx%lldx%lld)", inputs[i], (long long)d[0], (long long)d[1],
                      (long long)d[2], inputs[0], (long long)d0[0], (long long)d0[1], (long long)d0[2]);
            goto out;
        }
        channels += d[3];
    }
    if (in.dims[1] >= 0 && channels != in.dims[1]) {
        char names[512] = "";
        for (int i = 0, p = 0; i < card->n_channels && p < (int)sizeof names; i++)
            p += snprintf(names + p, sizeof names - (size_t)p, "%s%s", i ? ", " : "", card->channels[i]);
        cli_error("run", "%s: the model takes %lld channels (%s), the input has %lld", model, (long long)in.dims[1], names,
                  (long long)channels);
        goto out;
    }
    int64_t nvox = d0[0] * d0[1] * d0[2];
    x = malloc(sizeof(float) * (size_t)(nvox * channels));
    if (!x) { cli_error("run", "out of memory"); goto out; }
    for (int i = 0, c = 0; i < n_inputs; i++) {
        int64_t d[4];
        vbs_volume_dims(vols[i], d);
        memcpy(x + c * nvox, vbs_volume_data(vols[i]), sizeof(float) * (size_t)(nvox * d[3]));
        c += (int)d[3];
    }
    if (!raw) vbs_normalize(card, x, (int)channels, nvox);
    /* tensor (1, C, z, y, x): NIfTI x is the fastest axis, so no transpose */
    int64_t shape[5] = {1, channels, d0[2], d0[1], d0[0]};
    int nd = 5;
    if (in.ndim == 4) {
        if (d0[2] == 1) { shape[2] = d0[1]; shape[3] = d0[0]; nd = 4; }
    } else if (in.ndim != 5) {
        cli_error("run", "%s: input rank %d unsupported by run", model, in.ndim);
        goto out;
    }
    if (mkdir(outdir, 0755) && errno != EEXIST) { cli_error("run", "%s: cannot create: %s", outdir, strerror(errno)); goto out; }
    vbs_session_new(m, &s);
    if (raw) {
        if (nd != in.ndim) { cli_error("run", "--raw needs an input of the graph's rank (one slice for a 2D model)"); goto out; }
        if (vbs_session_forward(s, x, shape, nd, mode, (uint64_t)seed, 0)) { cli_error("run", "%s", vbs_session_errmsg(s)); goto out; }
        for (int i = 0; i < vbs_model_n_outputs(m); i++) {
            const float *y;
            vbs_value_info info;
            vbs_session_output(s, i, &y, &info);
            char path[4096];
            snprintf(path, sizeof path, "%s/%s.npy", outdir, info.name);
            if (vbs_write_npy(path, y, info.dims, info.ndim, err, sizeof err)) { cli_error("run", "%s", err); goto out; }
            printf("wrote %s\n", path);
        }
        rc = 0;
        goto out;
    }
    vbs_mc_opts o = {(int)samples, (uint64_t)seed, mode, (int)threads, 0.5f, 0.f, 0};
    double t0 = now();
    if (vbs_session_run_mc(s, x, shape, nd, &o)) { cli_error("run", "%s", vbs_session_errmsg(s)); goto out; }
    double dt = now() - t0;
    const float *lab, *mi, *ent, *ale;
    vbs_map_info li;
    vbs_session_map(s, VBS_MAP_LABELS, &lab, &li);
    vbs_session_map(s, VBS_MAP_MUTUAL_INFO, &mi, NULL);
    vbs_session_map(s, VBS_MAP_ENTROPY, &ent, NULL);
    vbs_session_map(s, VBS_MAP_EXPECTED_ENTROPY, &ale, NULL);
    for (int w = 0; w < VBS_MAP_COUNT; w++) {
        const float *data;
        vbs_map_info mi_;
        if (vbs_session_map(s, (vbs_map)w, &data, &mi_)) continue; /* heteroscedastic maps on a plain model */
        char path[4096];
        snprintf(path, sizeof path, "%s/%s.%s", outdir, vbs_map_name((vbs_map)w), npy ? "npy" : "nii.gz");
        vbs_status st;
        if (npy) st = vbs_write_npy(path, data, mi_.dims, mi_.ndim, err, sizeof err);
        else {
            int64_t k = mi_.ndim == li.ndim ? 1 : mi_.dims[0];
            int64_t dims[4] = {d0[0], d0[1], d0[2], k};
            st = vbs_volume_write_nifti(vols[0], path, data, dims, w == VBS_MAP_LABELS, err, sizeof err);
        }
        if (st) { cli_error("run", "%s", err); goto out; }
    }
    /* summary */
    double mi_sum = 0, ent_sum = 0, ale_sum = 0, fg = 0, mi_fg = 0;
    float mi_max = 0;
    const float bg = card->n_labels ? (float)card->labels[0].value : 0.f;
    for (int64_t i = 0; i < nvox; i++) {
        mi_sum += mi[i]; ent_sum += ent[i]; ale_sum += ale[i];
        if (mi[i] > mi_max) mi_max = mi[i];
        if (lab[i] != bg) { fg++; mi_fg += mi[i]; }
    }
    printf("ran %lld %s sample%s on %lldx%lldx%lld x %lld channels in %.2f s (%.1f ms per sample)\n", (long long)li.n_samples,
           mode == VBS_MODE_MEAN ? "mean" : "MC", li.n_samples == 1 ? "" : "s", (long long)d0[0], (long long)d0[1],
           (long long)d0[2], (long long)channels, dt, dt * 1e3 / (double)li.n_samples);
    printf("foreground voxels: %.0f (%.2f%%)\n", fg, 100.0 * fg / (double)nvox);
    printf("mean predictive entropy %.4f, aleatoric %.4f, epistemic (MI) %.4f nats; max MI %.4f; MI in foreground %.4f\n",
           ent_sum / (double)nvox, ale_sum / (double)nvox, mi_sum / (double)nvox, mi_max, fg ? mi_fg / fg : 0.0);
    printf("maps written to %s/\n", outdir);
    rc = 0;
out:
    for (int i = 0; i < n_inputs; i++) vbs_volume_free(vols[i]);
    free(x);
    vbs_session_free(s);
    vbs_model_free(m);
    return rc;
}
