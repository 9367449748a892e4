/*
 * infer.c: `vbseg infer`: Monte-Carlo inference over a folder of scans.
 * This file is the command: options; the checks made before the first
 * case (cases found, the output folder writable and apart from the
 * inputs, no output path that is an input file); the manifest of an
 * earlier run; the loop with its progress line; and interruption (SIGINT
 * or SIGTERM abandon the case in flight, keep what is finished, and say
 * how to resume). One case is infer_case.c; the reports infer_report.c.
 */
#define _XOPEN_SOURCE 700 /* realpath */
#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "infer.h"

static const char *help =
    "usage: vbseg infer --model M --input DIR --output DIR [--layout auto|nnunet|brats2021|brats2023|flat]\n"
    "                   [--samples 20] [--seed 0] [--mode sample|mean] [--threads T] [--save-probabilities]\n"
    "                   [--overlap 0.5] [--no-png] [--no-crop] [--adaptive TOL] [--remap contiguous|brats]\n"
    "                   [--shard I/N] [--overwrite] [--quiet] [--preview-max X]\n"
    "\n"
    "Runs every case of DIR and writes, per case, to the output folder:\n"
    "  CASE.nii.gz                 labels in the model card's label values (--remap contiguous:\n"
    "                              class indices; --remap brats: 3 written as 4)\n"
    "  CASE_entropy.nii.gz         predictive entropy (nats)\n"
    "  CASE_epistemic.nii.gz       mutual information (epistemic)\n"
    "  CASE_aleatoric.nii.gz       expected entropy (aleatoric)\n"
    "  CASE_regions.nii.gz         BraTS-convention models: P(WT), P(TC), P(ET)\n"
    "  CASE_probabilities.nii.gz   with --save-probabilities: the mean class probabilities\n"
    "  CASE_aleatoric_het.nii.gz   heteroscedastic models: mean predicted logit variance (eq. 10)\n"
    "  CASE_epistemic_het.nii.gz   heteroscedastic models: variance of the logit means (eq. 11)\n"
    "  CASE_preview.png            slices through the lesion: scan, labels, MI heat map (--no-png: none;\n"
    "                              --preview-max X: the MI colour bar's top, else each case's max)\n"
    "and summary.csv / summary.json (one row per case, failures first, then the most\n"
    "uncertain; notes such as ignored files or NaN voxels in their own column) and\n"
    "manifest.tsv (what is done, for re-runs). A 3D model runs in sliding windows of its\n"
    "card's patch size, neighbours sharing --overlap of a patch, blended with Gaussian\n"
    "weights. --adaptive TOL stops a case's sampling once its mutual-information map\n"
    "changes by less than TOL (nats, largest voxel) between blocks of 5 samples.\n"
    "The network sees only the vbs_box around the voxels non-zero in any channel (the\n"
    "skull-stripped brain); outside it the maps are background with zero uncertainty\n"
    "(--no-crop: the whole volume).\n"
    "Layouts are detected (see the README); channels are matched to the model card's\n"
    "names. --shard I/N takes every N-th case from the I-th (0-based) and names its\n"
    "summaries and manifest .shard-I-of-N.\n"
    "Safety: the output folder must not be the input folder and no output may be an\n"
    "input file; both are checked, with the folder's writability, before the first case.\n"
    "A case's outputs appear together when it is done. Ctrl-C (or SIGTERM) abandons the\n"
    "case in flight, keeps the finished ones and their summary; running the same command\n"
    "again skips the cases done with the same model and options (--overwrite redoes them).\n"
    "Exit status: 0, 1 if a case failed or an output could not be written, 130 if\n"
    "interrupted.\n";

static volatile sig_atomic_t g_signal;

static void on_signal(int sig) { g_signal = sig; }

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static uint64_t fnv(const char *path) {
    FILE *f = fopen(path, "rb");
    uint64_t h = 1469598103934665603ull;
    if (!f) return 0;
    unsigned char buf[1 << 16];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, f)) > 0)
        for (size_t i = 0; i < n; i++) h = (h ^ buf[i]) * 1099511628211ull;
    fclose(f);
    return h;
}

static const char *ordinal(long long n, char *buf, size_t len) {
    const char *suf = n % 100 >= 11 && n % 100 <= 13 ? "th" : n % 10 == 1 ? "st" : n % 10 == 2 ? "nd" : n % 10 == 3 ? "rd" : "th";
    snprintf(buf, len, "%lld%s", n, suf);
    return buf;
}

static const char *duration(double s, char *buf, size_t len) {
    if (s < 90) snprintf(buf, len, "%.0f s", s);
    else if (s < 5400) snprintf(buf, len, "%.0f min", s / 60);
    else snprintf(buf, len, "%.1f h", s / 3600);
    return buf;
}

/* mkdir -p; *created receives the first folder this call made ("" if none) */
static int make_dirs(const char *path, char *created, size_t len) {
    char p[PATH_MAX];
    created[0] = 0;
    if (snprintf(p, sizeof p, "%s", path) >= (int)sizeof p) { errno = ENAMETOOLONG; return -1; }
    for (char *s = p + 1;; s++) {
        if (*s && *s != '/') continue;
        char c = *s;
        *s = 0;
        if (mkdir(p, 0755)) {
            if (errno != EEXIST) return -1;
        } else if (!created[0]) snprintf(created, len, "%s", p);
        *s = c;
        if (!c) break;
    }
    struct stat sb;
    if (stat(path, &sb)) return -1;
    if (!S_ISDIR(sb.st_mode)) { errno = ENOTDIR; return -1; }
    return 0;
}

/* removes a folder tree this run created, when nothing was written into it */
static void remove_created(const char *created, const char *out) {
    if (!created[0]) return;
    char p[PATH_MAX];
    snprintf(p, sizeof p, "%s", out);
    for (;;) {
        if (rmdir(p)) return;
        if (!strcmp(p, created)) return;
        char *slash = strrchr(p, '/');
        if (!slash || slash == p) return;
        *slash = 0;
    }
}

/* can a file be made in dir? 0, or errno */
static int probe_writable(const char *dir) {
    char p[PATH_MAX];
    snprintf(p, sizeof p, "%s/.vbseg-probe.XXXXXX", dir);
    int fd = mkstemp(p);
    if (fd < 0) return errno;
    int e = write(fd, "x", 1) == 1 ? 0 : errno;
    close(fd);
    unlink(p);
    return e;
}

/* the temporaries an interrupted run leaves: staged outputs, and the atomic
 * writer's NAME.tmp.XXXXXX beside a file vbseg writes */
static int stale_temporary(const char *name) {
    if (!strncmp(name, STAGE_PREFIX, strlen(STAGE_PREFIX)) || !strncmp(name, ".vbseg-probe.", 13)) return 1;
    const char *t = strstr(name, ".tmp.");
    if (!t || strlen(t) != 11) return 0;
    static const char *const ends[] = {".nii.gz", ".png", ".csv", ".json", ".tsv"};
    for (size_t i = 0; i < sizeof ends / sizeof ends[0]; i++) {
        size_t k = strlen(ends[i]);
        if ((size_t)(t - name) > k && !strncmp(t - k, ends[i], k)) return 1;
    }
    return 0;
}

static int remove_stale(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return 0;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (!stale_temporary(e->d_name)) continue;
        char p[PATH_MAX];
        snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
        n += !unlink(p);
    }
    closedir(d);
    return n;
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* An output that would land on an input file: its path, else NULL. Compares
 * resolved paths, so links and ../ do not hide a collision. */
static const char *input_collision(const vbs_scan_case *cases, int n, const char *out, const runner *R, const char *const *reports,
                                   int n_reports, char *hit, size_t len) {
    int ni = 0;
    for (int i = 0; i < n; i++) ni += cases[i].n_files;
    char **in = calloc((size_t)ni + 1, sizeof *in), real[PATH_MAX], outr[PATH_MAX];
    if (!in || !realpath(out, outr)) { free(in); return NULL; }
    int k = 0;
    for (int i = 0; i < n; i++)
        for (int j = 0; j < cases[i].n_files; j++)
            if (realpath(cases[i].files[j], real)) in[k++] = strdup(real);
    qsort(in, (size_t)k, sizeof *in, cmp_str);
    static const char *const suf[] = {"", "_entropy", "_epistemic", "_aleatoric", "_regions", "_probabilities", "_aleatoric_het", "_epistemic_het"};
    const char *found = NULL;
    for (int i = 0; i < n + 1 && !found; i++) {
        int nn = i < n ? (int)(sizeof suf / sizeof suf[0]) + 1 : n_reports;
        for (int q = 0; q < nn && !found; q++) {
            if (i < n) {
                if (q < (int)(sizeof suf / sizeof suf[0])) snprintf(hit, len, "%.3000s/%s%s.nii.gz", outr, cases[i].id, suf[q]);
                else if (R->png) snprintf(hit, len, "%.3000s/%s_preview.png", outr, cases[i].id);
                else continue;
            } else snprintf(hit, len, "%.3000s/%s", outr, reports[q]);
            const char *key = hit;
            if (bsearch(&key, in, (size_t)k, sizeof *in, cmp_str)) found = hit;
        }
    }
    for (int i = 0; i < k; i++) free(in[i]);
    free(in);
    return found;
}

/* The progress line within a case, and the flag that stops it. */
typedef struct {
    int quiet, tty;
    int index, total;          /* this case's number and the cases in the run */
    const char *id;
    double t_case, t_print;
    double computed_s;         /* seconds spent on cases computed so far */
    int computed, to_compute;  /* cases computed so far, and still to compute after this one */
} progress;

static int on_progress(void *user, int64_t done, int64_t total) {
    progress *p = user;
    if (g_signal) return 1;
    if (p->quiet) return 0;
    double t = now(), el = t - p->t_case;
    if (t - p->t_print < (p->tty ? 0.25 : 30)) return 0;
    p->t_print = t;
    double left = done ? el / (double)done * (double)(total - done) : 0;
    double per_case = p->computed ? p->computed_s / p->computed : (done ? el / (double)done * (double)total : 0);
    char a[32], b[32], c[32];
    char msg[512];
    snprintf(msg, sizeof msg, "[%d/%d] %s: %lld/%lld passes (samples x slices or windows), %s, ETA case %s, run %s", p->index,
             p->total, p->id, (long long)done, (long long)total, duration(el, a, sizeof a), duration(left, b, sizeof b),
             duration(left + per_case * p->to_compute, c, sizeof c));
    if (p->tty) fprintf(stderr, "\r\033[K%s", msg);
    else fprintf(stderr, "%s\n", msg);
    return 0;
}

/* the manifest of an earlier run: rows for the cases it finished with the same model and options */
typedef struct { char **lines; int n; int same; int same_model; } old_manifest;

static void read_manifest(const char *path, const char *header, old_manifest *m) {
    memset(m, 0, sizeof *m);
    FILE *f = fopen(path, "r");
    if (!f) return;
    char line[8192];
    if (!fgets(line, sizeof line, f)) { fclose(f); return; }
    line[strcspn(line, "\n")] = 0;
    m->same = !strcmp(line, header);
    const char *tab = strchr(header, '\t'), *tab2 = tab ? strchr(tab + 1, '\t') : NULL;
    m->same_model = tab2 && !strncmp(line, header, (size_t)(tab2 - header));
    while (fgets(line, sizeof line, f)) {
        char **t = realloc(m->lines, sizeof *t * (size_t)(m->n + 1));
        if (!t) break;
        m->lines = t;
        m->lines[m->n++] = strdup(line);
    }
    fclose(f);
}

static const char *manifest_row(const old_manifest *m, const char *id) {
    size_t k = strlen(id);
    for (int i = 0; i < m->n; i++)
        if (m->lines[i] && !strncmp(m->lines[i], id, k) && m->lines[i][k] == '\t') return m->lines[i] + k + 1;
    return NULL;
}

static void free_manifest(old_manifest *m) {
    for (int i = 0; i < m->n; i++) free(m->lines[i]);
    free(m->lines);
}

/* the summaries and the manifest after a case; 0 if one could not be written (printed) */
static int write_reports(const char *out, const char *tag, const char *mpath, const report *rp) {
    char path[PATH_MAX], e[1024];
    int ok = 1;
    snprintf(path, sizeof path, "%s/summary%s.csv", out, tag);
    if (write_summary_csv(path, rp, e)) { cli_error("infer", "%s", e); ok = 0; }
    snprintf(path, sizeof path, "%s/summary%s.json", out, tag);
    if (write_summary_json(path, rp, e)) { cli_error("infer", "%s", e); ok = 0; }
    if (write_manifest(mpath, rp, e)) { cli_error("infer", "%s", e); ok = 0; }
    return ok;
}

int cmd_infer(int argc, char **argv) {
    const char *model = NULL, *input = NULL, *out = NULL;
    vbs_layout lay = VBS_LAYOUT_AUTO;
    long long samples = 20, seed = 0, threads = 0, shard_i = 0, shard_n = 1;
    double overlap = 0.5, adaptive = 0, preview_max = 0;
    int remap = 0; /* 0 keep the card's values, 1 contiguous class indices, 2 BraTS 2018 values (0,1,2,4) */
    int probs = 0, quiet = 0, overwrite = 0, png = 1, crop = 1;
    vbs_mode mode = VBS_MODE_SAMPLE;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) { fputs(help, stdout); return 0; }
        if (!strcmp(a, "--save-probabilities")) { probs = 1; continue; }
        if (!strcmp(a, "--quiet")) { quiet = 1; continue; }
        if (!strcmp(a, "--overwrite")) { overwrite = 1; continue; }
        if (!strcmp(a, "--no-png")) { png = 0; continue; }
        if (!strcmp(a, "--no-crop")) { crop = 0; continue; }
        if (!(v = cli_value("infer", argc, argv, &i))) return 2;
        if (!strcmp(a, "--model")) model = v;
        else if (!strcmp(a, "--input")) input = v;
        else if (!strcmp(a, "--output")) out = v;
        else if (!strcmp(a, "--layout")) { if (!vbs_layout_parse(v, &lay)) { cli_error("infer", "--layout '%s' is not auto, nnunet, brats2021, brats2023 or flat", v); return 2; } }
        else if (!strcmp(a, "--samples")) { if (!cli_int("infer", a, v, 1, 100000, &samples)) return 2; }
        else if (!strcmp(a, "--seed")) { if (!cli_int("infer", a, v, 0, 0x7fffffffffffffffLL, &seed)) return 2; }
        else if (!strcmp(a, "--threads")) { if (!cli_int("infer", a, v, 0, 256, &threads)) return 2; }
        else if (!strcmp(a, "--adaptive")) {
            if (!cli_float("infer", a, v, &adaptive)) return 2;
            if (adaptive <= 0 || adaptive > 1) { cli_error("infer", "--adaptive %g is not in (0, 1] nats", adaptive); return 2; }
        } else if (!strcmp(a, "--remap")) {
            if (!strcmp(v, "contiguous")) remap = 1;
            else if (!strcmp(v, "brats")) remap = 2;
            else { cli_error("infer", "--remap must be contiguous or brats, not '%s'", v); return 2; }
        } else if (!strcmp(a, "--preview-max")) {
            if (!cli_float("infer", a, v, &preview_max)) return 2;
            if (!(preview_max > 0 && preview_max < 1e30)) { cli_error("infer", "--preview-max %g is not a positive number of nats", preview_max); return 2; }
        } else if (!strcmp(a, "--overlap")) {
            if (!cli_float("infer", a, v, &overlap)) return 2;
            if (overlap < 0 || overlap > 0.9) { cli_error("infer", "--overlap %g is not in 0..0.9", overlap); return 2; }
        }
        else if (!strcmp(a, "--mode")) {
            if (!strcmp(v, "sample")) mode = VBS_MODE_SAMPLE;
            else if (!strcmp(v, "mean")) mode = VBS_MODE_MEAN;
            else { cli_error("infer", "--mode must be sample or mean, not '%s'", v); return 2; }
        } else if (!strcmp(a, "--shard")) {
            if (sscanf(v, "%lld/%lld", &shard_i, &shard_n) != 2 || shard_n < 1 || shard_i < 0 || shard_i >= shard_n) {
                cli_error("infer", "--shard '%s' is not I/N with 0 <= I < N", v);
                return 2;
            }
        } else { cli_error("infer", "unknown option '%s' (see --help)", a); return 2; }
    }
    if (!model || !input || !out) { cli_error("infer", "--model, --input and --output are required (see --help)"); return 2; }
    vbs_model *m;
    if (vbs_model_load(model, &m)) {
        cli_error("infer", "%s", vbs_model_errmsg(m));
        vbs_model_free(m);
        return 1;
    }
    vbs_scan_case *cases = NULL;
    int n = 0, rc = 1;
    char err[1024], unused[1024], created[PATH_MAX] = "";
    result *res = NULL;
    vbs_session *s = NULL;
    old_manifest old = {0};
    int wrote_any = 0;
    /* ---- before the first case: inputs, the output folder, the manifest ---- */
    struct stat ob;
    if (!stat(out, &ob) && !S_ISDIR(ob.st_mode)) { cli_error("infer", "%s: --output exists and is not a folder", out); goto out; }
    struct stat ib;
    if (!stat(input, &ib) && !stat(out, &ob) && ib.st_dev == ob.st_dev && ib.st_ino == ob.st_ino) {
        cli_error("infer", "%s: --output is the input folder; outputs would overwrite or mix with the scans: choose another folder", out);
        goto out;
    }
    if (!vbs_find_cases(input, out, &lay, &cases, &n, unused, sizeof unused, err, sizeof err)) { cli_error("infer", "%s", err); goto out; }
    if (!n) {
        cli_error("infer", "%s: no cases found for the %s layout%s%s%s", input, vbs_layout_name(lay), unused[0] ? " (" : "",
                  unused, unused[0] ? ")" : "");
        goto out;
    }
    if (unused[0]) fprintf(stderr, "vbseg infer: warning: %s: %s\n", input, unused);
    if (make_dirs(out, created, sizeof created)) { cli_error("infer", "%s: cannot create the output folder: %s", out, strerror(errno)); goto out; }
    int werr = probe_writable(out);
    if (werr) { cli_error("infer", "%s: cannot write to the output folder: %s", out, strerror(werr)); goto out; }
    const vbs_card *card = vbs_model_card(m);
    columns cols;
    make_columns(card, &cols);
    int regions = card->label_convention == VBS_LABELS_BRATS_2018 || card->label_convention == VBS_LABELS_BRATS_2023;
    vbs_session_new(m, &s);
    progress pg = {quiet, isatty(2), 0, 0, "", 0, 0, 0, 0, 0};
    runner R = {out, m, s, &cols,
                {.n_samples = (int)samples, .seed = (uint64_t)seed, .mode = mode, .threads = (int)threads,
                 .overlap = overlap > 0 ? (float)overlap : 1e-6f, .adaptive_tol = (float)adaptive, .adaptive_block = 5,
                 .progress = on_progress, .progress_user = &pg},
                probs, regions, png, remap, crop, card->heteroscedastic && vbs_model_n_outputs(m) >= 2, (float)preview_max};
    char tag[64] = "", mpath[PATH_MAX];
    if (shard_n > 1) snprintf(tag, sizeof tag, ".shard-%lld-of-%lld", shard_i, shard_n);
    snprintf(mpath, sizeof mpath, "%s/manifest%s.tsv", out, tag);
    {
        char rep[3][64];
        snprintf(rep[0], sizeof rep[0], "summary%s.csv", tag);
        snprintf(rep[1], sizeof rep[1], "summary%s.json", tag);
        snprintf(rep[2], sizeof rep[2], "manifest%s.tsv", tag);
        const char *reports[3] = {rep[0], rep[1], rep[2]};
        char hit[PATH_MAX];
        if (input_collision(cases, n, out, &R, reports, 3, hit, sizeof hit)) {
            cli_error("infer", "%s: this output would overwrite an input file: choose another --output folder", hit);
            goto out;
        }
    }
    int stale = remove_stale(out);
    if (stale && !quiet) fprintf(stderr, "vbseg infer: removed %d temporar%s left by an interrupted run in %s\n", stale, stale == 1 ? "y" : "ies", out);
    /* the manifest: the model and the options must match for a case to be skipped */
    char header[512];
    snprintf(header, sizeof header, "vbseg-infer 3\tmodel %016llx\tsamples %lld seed %lld mode %s probabilities %d overlap %g png %d adaptive %g remap %d crop %d preview_max %g",
             (unsigned long long)fnv(model), mode == VBS_MODE_MEAN ? 1 : samples, seed, mode == VBS_MODE_MEAN ? "mean" : "sample", probs, overlap,
             png, adaptive, remap, crop, preview_max);
    if (!overwrite) read_manifest(mpath, header, &old);
    res = calloc((size_t)n + 1, sizeof *res);
    char *skip = calloc((size_t)n + 1, 1);
    if (!res || !skip) { free(skip); cli_error("infer", "out of memory"); goto out; }
    int mine = 0, to_compute = 0, stale_rows = 0;
    for (int i = 0; i < n; i++) {
        if (i % shard_n != shard_i) continue;
        mine++;
        const char *row = manifest_row(&old, cases[i].id);
        result probe;
        memset(&probe, 0, sizeof probe);
        if (row && old.same && parse_manifest_row(&probe, &cols, row) && case_outputs_exist(&R, cases[i].id)) skip[i] = 1;
        else to_compute++;
        stale_rows += row && !old.same;
    }
    if (!quiet) {
        char o1[32], o2[32];
        fprintf(stderr, "vbseg infer: %s layout, %d case%s", vbs_layout_name(lay), n, n == 1 ? "" : "s");
        if (shard_n > 1)
            fprintf(stderr, "; shard %lld of %lld takes %d of them (every %s case from the %s)", shard_i, shard_n, mine,
                    ordinal(shard_n, o1, sizeof o1), ordinal(shard_i + 1, o2, sizeof o2));
        if (mine - to_compute) fprintf(stderr, "; %d already done", mine - to_compute);
        fputc('\n', stderr);
        if (stale_rows)
            fprintf(stderr, "vbseg infer: %s differ from the manifest (%s); redoing %d case%s\n", old.same_model ? "options" : "the model",
                    mpath, stale_rows, stale_rows == 1 ? "" : "s");
    }
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sa.sa_flags = SA_RESETHAND; /* a second Ctrl-C stops at once */
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    int nres = 0, failed = 0, done = 0, stop_write = 0;
    double t_run = now();
    for (int i = 0; i < n && !g_signal && !stop_write; i++) {
        if (i % shard_n != shard_i) continue;
        result *r = &res[nres];
        memset(r, 0, sizeof *r);
        snprintf(r->id, sizeof r->id, "%s", cases[i].id);
        const char *note = "";
        if (skip[i]) {
            parse_manifest_row(r, &cols, manifest_row(&old, cases[i].id));
            r->ok = 1;
            note = "already done";
        } else {
            pg.index = done + 1;
            pg.total = mine;
            pg.id = r->id;
            pg.t_case = now();
            pg.t_print = pg.t_case;
            pg.to_compute = --to_compute;
            case_status cs = run_case(&R, lay, &cases[i], r);
            if (pg.tty && !quiet) fprintf(stderr, "\r\033[K");
            if (cs == CASE_CANCELLED) break; /* abandoned: its files are gone, it is not reported */
            r->ok = cs == CASE_OK;
            r->seconds = now() - pg.t_case;
            pg.computed_s += r->seconds;
            pg.computed++;
            struct rusage ru;
            if (!getrusage(RUSAGE_SELF, &ru)) r->peak_mb = (double)ru.ru_maxrss / 1024.0;
            stop_write = cs == CASE_WRITE_FAILED;
            /* the reason, which --quiet would otherwise leave only in the summary */
            if (stop_write && quiet) cli_error("infer", "%s: %s", r->id, r->error);
        }
        nres++;
        done++;
        failed += !r->ok;
        /* the reports after every case: a killed run loses at most the case in flight. Not after a
         * case already done, unless it is the last: written then, they would hold only the done
         * cases before it, and a stop before the next write would drop the later ones' rows. */
        if (!skip[i] || i + shard_n >= n) {
            report rp = {res, nres, &cols, header};
            if (!write_reports(out, tag, mpath, &rp)) stop_write = 1;
            wrote_any = 1;
        }
        if (!quiet) {
            char a[32];
            if (note[0]) fprintf(stderr, "[%d/%d] %s: %s", done, mine, r->id, note);
            else if (!r->ok) fprintf(stderr, "[%d/%d] %s: FAILED: %s", done, mine, r->id, r->error);
            else fprintf(stderr, "[%d/%d] %s: ok, %d samples, %s", done, mine, r->id, r->samples, duration(r->seconds, a, sizeof a));
            if (r->notes[0]) fprintf(stderr, "; note: %s", r->notes);
            fputc('\n', stderr);
        }
    }
    free(skip);
    if (g_signal) {
        if (wrote_any) {
            report rp = {res, nres, &cols, header};
            write_reports(out, tag, mpath, &rp);
        }
        fprintf(stderr, "vbseg infer: interrupted after %d of %d cases; run the same command again to resume\n", done, mine);
        rc = 128 + (int)g_signal;
    } else if (stop_write) {
        cli_error("infer", "stopping: outputs cannot be written to %s (see above); %d of %d cases done; run the same command again to resume",
                  out, done - 1, mine);
        rc = 1;
    } else if (failed) cli_error("infer", "%d of %d case%s failed (see %s/summary%s.csv)", failed, nres, nres == 1 ? "" : "s", out, tag);
    else rc = 0;
    if (!quiet && !g_signal && !stop_write) {
        char a[32];
        fprintf(stderr, "vbseg infer: %d case%s in %s; maps and summary%s.csv in %s\n", nres, nres == 1 ? "" : "s",
                duration(now() - t_run, a, sizeof a), tag, out);
    }
out:
    if (!wrote_any) remove_created(created, out);
    free_manifest(&old);
    vbs_session_free(s);
    free(res);
    vbs_free_cases(cases, n);
    vbs_model_free(m);
    return rc;
}
