/*
 * run.c: `vbseg run`: Monte-Carlo inference on one input (NIfTI volume,
 * one file per channel or one 4D file, or a .npy array of one image or a
 * batch), writing the uncertainty maps next to each other in OUT, in the
 * input's format and geometry. What the axes of an array mean is decided
 * here, from the model's input rank; padding, windows and slices are the
 * session's. It does not crop to the brain as `vbseg infer` does.
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
    "or one 4D file with the channels along t), or one .npy array. For a model whose\n"
    "input has rank R (4 for 2D: N,C,H,W; 5 for 3D: N,C,D,H,W), an array of rank R is\n"
    "a batch (N,C,spatial...), rank R-1 one image (C,spatial...), and for a 2D model\n"
    "rank 5 is a batch of volumes (N,C,D,H,W) run slice by slice. C must be the\n"
    "model's channel count; other shapes are refused with the shapes accepted.\n"
    "Intensities are normalised as the model card says, each image on its own.\n"
    "Any size works: the network's input is zero-padded, or run in overlapping\n"
    "windows where the graph fixes a smaller size, and every map cropped back.\n"
    "Writes to DIR (NIfTI inputs: .nii.gz with the input's affine; .npy inputs: .npy,\n"
    "with N as the leading dim for a batch of rank R or R+1):\n"
    "  labels             hard labels in the card's label values\n"
    "  prob_mean          mean class probabilities (K channels)\n"
    "  prob_var           variance of each class probability across samples\n"
    "  entropy            predictive entropy H[E p] (nats)\n"
    "  aleatoric_entropy  expected entropy E[H p]\n"
    "  epistemic_mi       mutual information H[E p] - E[H p]\n"
    "  aleatoric_het, epistemic_het   heteroscedastic models only (eq. 10-11)\n"
    "--mode mean uses the weight means and makes Dropout the identity; sample draws\n"
    "the weights and the Dropout masks of every sample.\n"
    "--raw instead runs one pass (mean mode, or the weight draw and Dropout masks of\n"
    "sample 0 under --seed) on the data as given (no normalisation, no padding; an\n"
    "array of rank R with any batch the graph allows, or of rank R-1 as a batch of\n"
    "one) and writes each graph output as DIR/<output>.npy with N as the leading dim.\n";

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static const char *dims_str(char *buf, size_t n, const int64_t *d, int k) {
    size_t p = (size_t)snprintf(buf, n, "(");
    for (int i = 0; i < k && p < n; i++) p += (size_t)snprintf(buf + p, n - p, "%s%lld", i ? "," : "", (long long)d[i]);
    if (p < n) snprintf(buf + p, n - p, "%s)", k == 1 ? "," : "");
    return buf;
}

/* The arrays a model of input rank `rank` and `c` channels (< 0: any) accepts. */
static const char *accepted(char *buf, size_t n, int rank, int64_t c, int raw) {
    static const char *const sp[6] = {"", "", "", "L", "H,W", "D,H,W"};
    char cs[32];
    if (c > 0) snprintf(cs, sizeof cs, "%lld", (long long)c);
    else snprintf(cs, sizeof cs, "C");
    if (rank == 4 && !raw)
        snprintf(buf, n, "(%s,%s) one image, (N,%s,%s) a batch, or (N,%s,D,H,W) volumes run slice by slice", cs, sp[rank], cs, sp[rank], cs);
    else snprintf(buf, n, "(%s,%s) one image or (N,%s,%s) a batch", cs, sp[rank], cs, sp[rank]);
    return buf;
}

/* What `vbseg run` feeds the session: n images of img floats each, each
 * run_mc'd as shape[0..nd) (N = 1), or all at once by --raw as rshape. */
typedef struct {
    float *x;
    int64_t n, img, nvox, channels;
    int batched;              /* the maps carry N as their leading dim */
    int64_t shape[5], rshape[8];
    int nd, rnd;
    int64_t d0[4];            /* NIfTI x, y, z, t of the first file (for the maps' geometry) */
} job;

/* Reads one .npy array and decides what its axes are (see help). */
static int read_array(const char *path, const vbs_value_info *in, const vbs_card *card, int raw, job *j) {
    char err[1024], a[160], acc[256];
    int64_t d[VBS_MAX_DIMS], n_bad;
    int an;
    if (vbs_read_npy(path, &j->x, d, &an, &n_bad, err, sizeof err)) return cli_error("run", "%s", err);
    if (n_bad) fprintf(stderr, "vbseg run: warning: %s: %lld NaN/Inf values set to 0\n", path, (long long)n_bad);
    int rank = in->ndim;
    int64_t c = in->dims[1] >= 0 ? in->dims[1] : card->n_channels > 0 ? card->n_channels : -1;
    dims_str(a, sizeof a, d, an);
    accepted(acc, sizeof acc, rank, c, raw);
    const char *as;
    if (an == rank) { j->batched = 1; as = rank == 4 ? "(N,C,H,W)" : rank == 5 ? "(N,C,D,H,W)" : "(N,C,L)"; }
    else if (an == rank - 1) { j->batched = 0; as = rank == 4 ? "(C,H,W)" : rank == 5 ? "(C,D,H,W)" : "(C,L)"; }
    else if (rank == 4 && an == 5 && !raw) { j->batched = 1; as = "(N,C,D,H,W)"; }
    else return cli_error("run", "%s: array %s has %d dims; this %dD model takes %s", path, a, an, rank - 2, acc);
    const int64_t *im = d + j->batched; /* (C, spatial...) */
    if (c > 0 && im[0] != c)
        return cli_error("run", "%s: array %s read as %s has %lld channels, the model takes %lld; it takes %s", path, a, as, (long long)im[0],
                         (long long)c, acc);
    j->n = j->batched ? d[0] : 1;
    j->channels = im[0];
    j->nd = 1 + (an - j->batched);
    j->shape[0] = 1;
    j->nvox = 1;
    for (int i = 1; i < j->nd; i++) {
        j->shape[i] = im[i - 1];
        if (i > 1) j->nvox *= im[i - 1];
    }
    j->img = j->nvox * j->channels;
    j->rnd = rank;
    j->rshape[0] = j->n;
    for (int i = 1; i < rank; i++) j->rshape[i] = im[i - 1];
    /* the maps' dims for the summary line: x, y, z */
    int nsp = j->nd - 2;
    for (int i = 0; i < 3; i++) j->d0[i] = i < nsp ? j->shape[j->nd - 1 - i] : 1;
    j->d0[3] = j->channels;
    return 0;
}

/* Reads the NIfTI files (one per channel, or one 4D file) as one image. */
static int read_nifti(char **inputs, int n_inputs, vbs_volume **vols, const char *model, const vbs_value_info *in,
                      const vbs_card *card, job *j) {
    char err[1024];
    for (int i = 0; i < n_inputs; i++) {
        if (vbs_volume_read_nifti(inputs[i], &vols[i], err, sizeof err)) return cli_error("run", "%s", err);
        if (vbs_volume_nan_count(vols[i]))
            fprintf(stderr, "vbseg run: warning: %s: %lld NaN/Inf voxels set to 0\n", inputs[i], (long long)vbs_volume_nan_count(vols[i]));
    }
    int64_t *d0 = j->d0;
    vbs_volume_dims(vols[0], d0);
    int64_t channels = 0;
    for (int i = 0; i < n_inputs; i++) {
        int64_t d[4];
        vbs_volume_dims(vols[i], d);
        if (d[0] != d0[0] || d[1] != d0[1] || d[2] != d0[2])
            return cli_error("run", "%s: field dim: %lldx%lldx%lld differs from %s (%lldx%lldx%lld)", inputs[i], (long long)d[0],
                             (long long)d[1], (long long)d[2], inputs[0], (long long)d0[0], (long long)d0[1], (long long)d0[2]);
        channels += d[3];
    }
    if (in->dims[1] >= 0 && channels != in->dims[1]) {
        char names[512] = "";
        for (int i = 0, p = 0; i < card->n_channels && p < (int)sizeof names; i++)
            p += snprintf(names + p, sizeof names - (size_t)p, "%s%s", i ? ", " : "", card->channels[i]);
        return cli_error("run", "%s: the model takes %lld channels (%s), the input has %lld", model, (long long)in->dims[1], names,
                         (long long)channels);
    }
    j->n = 1;
    j->channels = channels;
    j->nvox = d0[0] * d0[1] * d0[2];
    j->img = j->nvox * channels;
    if (!(j->x = malloc(sizeof(float) * (size_t)j->img))) return cli_error("run", "out of memory");
    for (int i = 0, c = 0; i < n_inputs; i++) {
        int64_t d[4];
        vbs_volume_dims(vols[i], d);
        memcpy(j->x + c * j->nvox, vbs_volume_data(vols[i]), sizeof(float) * (size_t)(j->nvox * d[3]));
        c += (int)d[3];
    }
    /* tensor (1, C, z, y, x): NIfTI x is the fastest axis, so no transpose */
    int64_t shape[5] = {1, channels, d0[2], d0[1], d0[0]};
    memcpy(j->shape, shape, sizeof shape);
    j->nd = 5;
    if (in->ndim == 4) {
        if (d0[2] == 1) { j->shape[2] = d0[1]; j->shape[3] = d0[0]; j->nd = 4; }
    } else if (in->ndim != 5)
        return cli_error("run", "%s: input rank %d unsupported by run", model, in->ndim);
    memcpy(j->rshape, j->shape, sizeof j->shape);
    j->rnd = j->nd;
    return 0;
}

static int make_dir(const char *dir) {
    if (mkdir(dir, 0755) && errno != EEXIST) return cli_error("run", "%s: cannot create: %s", dir, strerror(errno));
    return 0;
}

/* Writes one map: for NIfTI inputs with ref's geometry (k volumes along t). */
static int write_map(const char *path, const float *data, const int64_t *dims, int nd, const vbs_volume *ref, const int64_t *d0,
                     int64_t k, int labels) {
    char err[1024];
    vbs_status st;
    if (!ref) st = vbs_write_npy(path, data, dims, nd, err, sizeof err);
    else {
        int64_t nd4[4] = {d0[0], d0[1], d0[2], k};
        st = vbs_volume_write_nifti(ref, path, data, nd4, labels, err, sizeof err);
    }
    return st ? cli_error("run", "%s", err) : 0;
}

int cmd_run(int argc, char **argv) {
    const char *model = NULL, *outdir = NULL;
    char *inputs[64];
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
            inputs[n_inputs++] = argv[i];
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
    int npy = cli_ends_with(inputs[0], ".npy");
    if (!npy && !cli_ends_with(inputs[0], ".nii") && !cli_ends_with(inputs[0], ".nii.gz"))
        return cli_error("run", "%s: input must be .nii, .nii.gz or .npy", inputs[0]);
    if (npy && n_inputs > 1) return cli_error("run", "a .npy input holds all channels: give one file");

    vbs_model *m = NULL;
    vbs_session *s = NULL;
    vbs_volume *vols[64] = {0};
    job j = {0};
    float *gathered[VBS_MAP_COUNT] = {0};
    int rc = 1;
    char err[1024];
    if (vbs_model_load(model, &m)) { cli_error("run", "%s", vbs_model_errmsg(m)); goto out; }
    const vbs_card *card = vbs_model_card(m);
    vbs_value_info in;
    vbs_model_input(m, 0, &in);
    if (npy && (in.ndim < 3 || in.ndim > 5)) { cli_error("run", "%s: input rank %d unsupported by run", model, in.ndim); goto out; }
    if (npy ? read_array(inputs[0], &in, card, raw, &j) : read_nifti(inputs, n_inputs, vols, model, &in, card, &j)) goto out;
    if (vbs_session_new(m, &s)) { cli_error("run", "out of memory"); goto out; }
    if (raw) {
        if (j.rnd != in.ndim) { cli_error("run", "--raw needs an input of the graph's rank (one slice for a 2D model)"); goto out; }
        if (vbs_session_forward(s, j.x, j.rshape, j.rnd, mode, (uint64_t)seed, 0)) {
            cli_error("run", "%s: %s", inputs[0], vbs_session_errmsg(s));
            goto out;
        }
        if (make_dir(outdir)) goto out;
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
    /* each image normalised on its own (in place) and run as a batch of one */
    vbs_mc_opts o = {.n_samples = (int)samples, .seed = (uint64_t)seed, .mode = mode, .threads = (int)threads, .overlap = 0.5f, .adaptive_tol = 0.f, .adaptive_block = 0};
    int64_t msize[VBS_MAP_COUNT] = {0}, mdims[VBS_MAP_COUNT][VBS_MAX_DIMS + 1];
    int mnd[VBS_MAP_COUNT] = {0};
    double mi_sum = 0, ent_sum = 0, ale_sum = 0, fg = 0, mi_fg = 0, dt = 0;
    float mi_max = 0;
    int64_t n_samples = 0;
    const float bg = card->n_labels ? (float)card->labels[0].value : 0.f;
    for (int64_t n = 0; n < j.n; n++) {
        float *x = j.x + n * j.img;
        vbs_normalize(card, x, (int)j.channels, j.nvox);
        double t0 = now();
        if (vbs_session_run_mc(s, x, j.shape, j.nd, &o)) {
            if (j.n > 1) cli_error("run", "%s: image %lld: %s", inputs[0], (long long)n, vbs_session_errmsg(s));
            else cli_error("run", "%s: %s", inputs[0], vbs_session_errmsg(s));
            goto out;
        }
        dt += now() - t0;
        if (n == 0 && make_dir(outdir)) goto out; /* once the model has taken the input: a refusal leaves nothing */
        for (int w = 0; w < VBS_MAP_COUNT; w++) {
            const float *data;
            vbs_map_info mi_;
            if (vbs_session_map(s, (vbs_map)w, &data, &mi_)) continue; /* heteroscedastic maps on a plain model */
            if (!j.batched) {
                char path[4096];
                snprintf(path, sizeof path, "%s/%s.%s", outdir, vbs_map_name((vbs_map)w), npy ? "npy" : "nii.gz");
                int per_class = w == VBS_MAP_PROB_MEAN || w == VBS_MAP_PROB_VAR || w == VBS_MAP_HET_ALEATORIC || w == VBS_MAP_HET_EPISTEMIC;
                if (write_map(path, data, mi_.dims, mi_.ndim, npy ? NULL : vols[0], j.d0, per_class ? mi_.dims[0] : 1, w == VBS_MAP_LABELS))
                    goto out;
                continue;
            }
            /* a batch: the maps of all images, N leading */
            if (!gathered[w]) {
                msize[w] = 1;
                for (int i = 0; i < mi_.ndim; i++) msize[w] *= mi_.dims[i];
                mdims[w][0] = j.n;
                memcpy(mdims[w] + 1, mi_.dims, sizeof(int64_t) * (size_t)mi_.ndim);
                mnd[w] = mi_.ndim + 1;
                if (!(gathered[w] = malloc(sizeof(float) * (size_t)(msize[w] * j.n)))) { cli_error("run", "out of memory"); goto out; }
            }
            memcpy(gathered[w] + n * msize[w], data, sizeof(float) * (size_t)msize[w]);
        }
        /* summary over all images */
        const float *lab, *mi, *ent, *ale;
        vbs_map_info li;
        vbs_session_map(s, VBS_MAP_LABELS, &lab, &li);
        vbs_session_map(s, VBS_MAP_MUTUAL_INFO, &mi, NULL);
        vbs_session_map(s, VBS_MAP_ENTROPY, &ent, NULL);
        vbs_session_map(s, VBS_MAP_EXPECTED_ENTROPY, &ale, NULL);
        n_samples = li.n_samples;
        for (int64_t i = 0; i < j.nvox; i++) {
            mi_sum += mi[i]; ent_sum += ent[i]; ale_sum += ale[i];
            if (mi[i] > mi_max) mi_max = mi[i];
            if (lab[i] != bg) { fg++; mi_fg += mi[i]; }
        }
    }
    for (int w = 0; w < VBS_MAP_COUNT; w++) {
        if (!gathered[w]) continue;
        char path[4096];
        snprintf(path, sizeof path, "%s/%s.npy", outdir, vbs_map_name((vbs_map)w));
        if (write_map(path, gathered[w], mdims[w], mnd[w], NULL, NULL, 0, 0)) goto out;
    }
    double tot = (double)j.nvox * (double)j.n;
    char imgs[64] = "";
    if (j.batched) snprintf(imgs, sizeof imgs, "%lld image%s of ", (long long)j.n, j.n == 1 ? "" : "s");
    printf("ran %lld %s sample%s on %s%lldx%lldx%lld x %lld channels in %.2f s (%.1f ms per sample)\n", (long long)n_samples,
           mode == VBS_MODE_MEAN ? "mean" : "MC", n_samples == 1 ? "" : "s", imgs, (long long)j.d0[0], (long long)j.d0[1],
           (long long)j.d0[2], (long long)j.channels, dt, dt * 1e3 / (double)(n_samples * j.n));
    printf("foreground voxels: %.0f (%.2f%%)\n", fg, 100.0 * fg / tot);
    printf("mean predictive entropy %.4f, aleatoric %.4f, epistemic (MI) %.4f nats; max MI %.4f; MI in foreground %.4f\n", ent_sum / tot,
           ale_sum / tot, mi_sum / tot, mi_max, fg ? mi_fg / fg : 0.0);
    printf("maps written to %s/\n", outdir);
    rc = 0;
out:
    for (int i = 0; i < n_inputs; i++) vbs_volume_free(vols[i]);
    for (int w = 0; w < VBS_MAP_COUNT; w++) free(gathered[w]);
    free(j.x);
    vbs_session_free(s);
    vbs_model_free(m);
    return rc;
}
