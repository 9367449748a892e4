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
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "infer.h"

static const char *help =
    "usage: vbseg infer --model M --input DIR --output DIR [--layout auto|nnunet|brats2021|brats2023|flat]\n"
    "                   [--samples 20] [--seed 0] [--mode sample|mean] [--threads T] [--save-probabilities]\n"
    "                   [--overlap 0.5] [--no-png] [--no-crop] [--adaptive TOL] [--remap contiguous|brats]\n"
    "                   [--shard I/N] [--overwrite] [--wait] [--quiet] [--preview-max X]\n"
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
    "A case's outputs appear together when it is done. One run writes to an output\n"
    "folder at a time (shards: one per shard): a second one refuses (exit 1), or with\n"
    "--wait waits for the first to finish, then skips what it finished. Ctrl-C (or\n"
    "SIGTERM) abandons the case in flight, keeps the finished ones and their summary;\n"
    "running the same command again skips the cases done with the same model and\n"
    "options (--overwrite redoes them).\n"
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

/* Removes the temporaries an interrupted run left. An unsharded run holds
 * the folder alone and removes all; a shard runs beside the other shards
 * and removes only its own: its cases' staged outputs and its reports'. */
static int remove_stale(const char *dir, const runner *R, const vbs_scan_case *cases, int n, long long shard_i, long long shard_n,
                        const char *tag) {
    DIR *d = opendir(dir);
    if (!d) return 0;
    int k = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (!stale_temporary(e->d_name)) continue;
        int mine = shard_n == 1;
        for (int i = 0; i < n && !mine; i++) mine = i % shard_n == shard_i && is_case_temporary(R, cases[i].id, e->d_name);
        static const char *const reports[] = {"summary%s.csv.tmp.", "summary%s.json.tmp.", "manifest%s.tsv.tmp."};
        for (size_t q = 0; q < sizeof reports / sizeof reports[0] && !mine; q++) {
            char r[128];
            snprintf(r, sizeof r, reports[q], tag);
            mine = !strncmp(e->d_name, r, strlen(r));
        }
        if (!mine) continue;
        char p[PATH_MAX];
        snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
        k += !unlink(p);
    }
    closedir(d);
    return k;
}

/* A case name as one printable line: control bytes as \n, \t, \xNN. */
static const char *printable(const char *id, char *buf, size_t len) {
    size_t k = 0;
    for (const unsigned char *c = (const unsigned char *)id; *c && k + 5 < len; c++) {
        if (*c >= 0x20 && *c != 0x7f) buf[k++] = (char)*c;
        else k += (size_t)snprintf(buf + k, len - k, *c == '\n' ? "\\n" : *c == '\t' ? "\\t" : *c == '\r' ? "\\r" : "\\x%02x", *c);
    }
    buf[k] = 0;
    return buf;
}

/* Why a case's name cannot name its output files (the reason, in why), or
 * NULL. Such a case is a bad input like an unreadable file: it fails alone
 * and the run goes on. Names from a folder listing hold no '/' and (dot
 * files being skipped) never start with '.', but the rule does not rely
 * on that. */
static const char *name_problem(const runner *R, const vbs_scan_case *c, char *why, size_t len) {
    const char *id = c->id, *from = c->n_files ? strrchr(c->files[0], '/') : NULL;
    char p[600];
    from = from ? from + 1 : "?";
    printable(id, p, sizeof p);
    if (!id[0]) snprintf(why, len, "the case name (from %s) is empty: its outputs would be hidden files named .nii.gz, _entropy.nii.gz, ...", from);
    else if (!strcmp(id, ".") || !strcmp(id, "..")) snprintf(why, len, "the case name '%s' names a folder: its outputs would not be its own files", p);
    else if (strchr(id, '/')) snprintf(why, len, "the case name '%s' holds a path separator: its outputs would leave the output folder", p);
    else if (id[0] == '.') snprintf(why, len, "the case name '%s' starts with a dot: its outputs would be hidden files", p);
    else if (strcmp(p, id)) snprintf(why, len, "the case name '%s' holds a control character: it would break the manifest and the summaries", p);
    else {
        /* the longest name written: a staged output's temporary */
        char names[CASE_MAX_OUTPUTS][CASE_NAME_LEN];
        int k = case_output_names(R, id, names);
        size_t longest = 0;
        for (int i = 0; i < k; i++)
            if (strlen(names[i]) > longest) longest = strlen(names[i]);
        long max = pathconf(R->out, _PC_NAME_MAX);
        if (max <= 0) max = 255;
        longest += strlen(STAGE_PREFIX) + strlen(".tmp.XXXXXX");
        if ((long)longest > max)
            snprintf(why, len, "the case name '%s' is %zu bytes long: its outputs' names (%zu bytes while written) would pass the output folder's limit of %ld",
                     p, strlen(id), longest, max);
        else return NULL;
    }
    return why;
}

/* Inputs that collide: two files that would be the same input of one case
 * (a.nii and a.nii.gz), or two cases whose outputs would have one name (two
 * inputs making the same case, or cases 'X' and 'X_entropy'). Known before
 * anything runs, so the run is refused (one line, in msg) rather than guess
 * which input was meant. 1 if there is one. */
typedef struct { const char *name; int c; } out_name;

static int cmp_out_name(const void *a, const void *b) { return strcmp(((const out_name *)a)->name, ((const out_name *)b)->name); }

static int case_collision(const runner *R, const vbs_scan_case *cases, int n, char *msg, size_t len) {
    char why[1024], p[600];
    for (int i = 0; i < n; i++)
        for (int a = 0; a < cases[i].n_files; a++)
            for (int b = a + 1; b < cases[i].n_files; b++)
                if (cases[i].channel[a] == cases[i].channel[b]) {
                    snprintf(msg, len, "%.400s and %.400s are the same input of case '%.100s': remove or rename one", cases[i].files[a], cases[i].files[b],
                             printable(cases[i].id, p, sizeof p));
                    return 1;
                }
    char (*names)[CASE_NAME_LEN] = malloc(sizeof *names * CASE_MAX_OUTPUTS * (size_t)(n + 1));
    out_name *v = malloc(sizeof *v * CASE_MAX_OUTPUTS * (size_t)(n + 1));
    int k = 0, found = 0;
    if (!names || !v) { free(names); free(v); snprintf(msg, len, "out of memory"); return 1; }
    for (int i = 0; i < n; i++) {
        if (name_problem(R, &cases[i], why, sizeof why)) continue; /* such a case writes nothing */
        int m = case_output_names(R, cases[i].id, names + k);
        for (int q = 0; q < m; q++) v[k + q] = (out_name){names[k + q], i};
        k += m;
    }
    qsort(v, (size_t)k, sizeof *v, cmp_out_name);
    for (int i = 1; i < k && !found; i++) {
        if (strcmp(v[i - 1].name, v[i].name) || v[i - 1].c == v[i].c) continue;
        const vbs_scan_case *x = &cases[v[i - 1].c], *y = &cases[v[i].c];
        if (x > y) { const vbs_scan_case *t = x; x = y; y = t; }
        if (!strcmp(x->id, y->id))
            snprintf(msg, len, "%.400s and %.400s both make the case '%.100s': remove or rename one", x->n_files ? x->files[0] : x->id,
                     y->n_files ? y->files[0] : y->id, printable(x->id, p, sizeof p));
        else snprintf(msg, len, "cases '%.255s' and '%.255s' would both write %.300s: rename one", x->id, y->id, v[i].name);
        found = 1;
    }
    free(names);
    free(v);
    return found;
}

/* The run's advisory locks (flock), held until it ends, so that two runs
 * never write one folder's cases, reports or temporaries at once. The lock
 * files are dot files beside the manifest (never taken for scans or
 * outputs) and stay: unlinking a lock file that another run waits on would
 * let a third run lock a new file beside it. An unsharded run holds
 * OUT/.manifest.tsv.lock exclusively; a shard holds it shared (shards of
 * one job array run together) and its own .manifest.shard-I-of-N.tsv.lock
 * exclusively. Each holder writes its pid (fixed width, so that concurrent
 * shards' writes never mix) into the file it locks exclusively and into the
 * folder's, for the refusal to name. */
static void lock_path(char *p, size_t n, const char *out, const char *tag) { snprintf(p, n, "%s/.manifest%s.tsv.lock", out, tag); }

static long lock_pid(int fd) {
    char b[32] = {0};
    ssize_t k = pread(fd, b, sizeof b - 1, 0);
    return k > 0 ? atol(b) : 0;
}

/* 0 if the pid cannot be written (printed): the lock is what counts, but a
 * folder that refuses ten bytes will refuse the outputs, so stop before any */
static int put_pid(int fd, const char *path) {
    char b[16];
    int k = snprintf(b, sizeof b, "%-10ld\n", (long)getpid());
    ssize_t w = pwrite(fd, b, (size_t)k, 0);
    if (w == k) return 1;
    cli_error("infer", "%s: cannot write the lock file: %s", path, w < 0 ? strerror(errno) : "short write");
    return 0;
}

/* Locks one file: 1 when held (fd in *fd), 0 on refusal or error (printed). */
static int take_lock(const char *out, const char *path, int shared, int wait, int quiet, int *fd) {
    *fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (*fd < 0) { cli_error("infer", "%s: cannot open the lock file: %s", path, strerror(errno)); return 0; }
    int op = shared ? LOCK_SH : LOCK_EX;
    if (!flock(*fd, op | LOCK_NB)) return 1;
    if (errno != EWOULDBLOCK) {
        /* a file system without locks (some network mounts): say so, and go on unguarded */
        if (!quiet) fprintf(stderr, "vbseg infer: warning: %s: cannot lock (%s); concurrent runs here are not detected\n", path, strerror(errno));
        return 1;
    }
    if (!wait) {
        cli_error("infer", "%s: another vbseg infer is writing here (pid %ld); wait for it, or add --wait", out, lock_pid(*fd));
        return 0;
    }
    if (!quiet) fprintf(stderr, "vbseg infer: %s: another vbseg infer is writing here (pid %ld); waiting for it to finish\n", out, lock_pid(*fd));
    while (flock(*fd, op))
        if (errno != EINTR) { cli_error("infer", "%s: cannot lock: %s", path, strerror(errno)); return 0; }
    return 1;
}

/* The folder's lock (shared for a shard), then the shard's own. */
static int lock_run(const char *out, const char *tag, int wait, int quiet, int fds[2]) {
    char p[PATH_MAX];
    lock_path(p, sizeof p, out, "");
    if (!take_lock(out, p, tag[0] != 0, wait, quiet, &fds[0])) return 0;
    if (tag[0]) {
        char ps[PATH_MAX];
        lock_path(ps, sizeof ps, out, tag);
        if (!take_lock(out, ps, 0, wait, quiet, &fds[1]) || !put_pid(fds[1], ps)) return 0;
    }
    return put_pid(fds[0], p); /* only once every lock is held: a refused run must not overwrite the holder's pid */
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
    const char *found = NULL;
    char names[CASE_MAX_OUTPUTS][CASE_NAME_LEN];
    for (int i = 0; i < n + 1 && !found; i++) {
        int nn = i < n ? case_output_names(R, cases[i].id, names) : n_reports;
        for (int q = 0; q < nn && !found; q++) {
            snprintf(hit, len, "%.3000s/%s", outr, i < n ? names[q] : reports[q]);
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
    int probs = 0, quiet = 0, overwrite = 0, png = 1, crop = 1, wait = 0;
    vbs_mode mode = VBS_MODE_SAMPLE;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) { fputs(help, stdout); return 0; }
        if (!strcmp(a, "--save-probabilities")) { probs = 1; continue; }
        if (!strcmp(a, "--quiet")) { quiet = 1; continue; }
        if (!strcmp(a, "--overwrite")) { overwrite = 1; continue; }
        if (!strcmp(a, "--wait")) { wait = 1; continue; }
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
    row *res = NULL;
    int nres = 0;
    vbs_session *s = NULL;
    old_manifest old = {0};
    int wrote_any = 0, lock_fd[2] = {-1, -1};
    char tag[64] = ""; /* the shard's name in its reports, manifest and lock */
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
    char mpath[PATH_MAX];
    if (shard_n > 1) snprintf(tag, sizeof tag, ".shard-%lld-of-%lld", shard_i, shard_n);
    snprintf(mpath, sizeof mpath, "%s/manifest%s.tsv", out, tag);
    /* collisions refuse the run before anything is written */
    if (case_collision(&R, cases, n, err, sizeof err)) { cli_error("infer", "%s: %s", input, err); goto out; }
    /* one run per folder (per shard) from here to the end: before the temporaries are cleared and the manifest read */
    if (!lock_run(out, tag, wait, quiet, lock_fd)) goto out;
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
    int stale = remove_stale(out, &R, cases, n, shard_i, shard_n, tag);
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
    int mine = 0, to_compute = 0, stale_rows = 0, bad_names = 0;
    for (int i = 0; i < n; i++) {
        if (i % shard_n != shard_i) continue;
        mine++;
        if (name_problem(&R, &cases[i], err, sizeof err)) { bad_names++; continue; } /* it fails in the loop */
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
        if (mine - to_compute - bad_names) fprintf(stderr, "; %d already done", mine - to_compute - bad_names);
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
    int failed = 0, done = 0, stop_write = 0, oom = 0;
    result cur; /* the case being computed; kept as a row once done */
    double t_run = now();
    for (int i = 0; i < n && !g_signal && !stop_write; i++) {
        if (i % shard_n != shard_i) continue;
        result *r = &cur;
        memset(r, 0, sizeof *r);
        snprintf(r->id, sizeof r->id, "%s", cases[i].id);
        const char *note = "";
        if (name_problem(&R, &cases[i], r->error, sizeof r->error)) {
            /* a case whose name cannot name files is a bad input: it fails alone, printable in the reports */
            char p[sizeof r->id];
            snprintf(r->id, sizeof r->id, "%s", printable(cases[i].id, p, sizeof p));
            r->ok = 0;
        } else if (skip[i]) {
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
        if (!row_set(&res[nres], r)) { oom = 1; break; }
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
    } else if (oom) {
        cli_error("infer", "out of memory after %d of %d cases; run the same command again to resume", done, mine);
        rc = 1;
    } else if (stop_write) {
        cli_error("infer", "stopping: outputs cannot be written to %s (see above); %d of %d cases done; run the same command again to resume",
                  out, done - 1, mine);
        rc = 1;
    } else if (failed) cli_error("infer", "%d of %d case%s failed (see %s/summary%s.csv)", failed, nres, nres == 1 ? "" : "s", out, tag);
    else rc = 0;
    if (!quiet && !g_signal && !stop_write && !oom) {
        char a[32];
        fprintf(stderr, "vbseg infer: %d case%s in %s; maps and summary%s.csv in %s\n", nres, nres == 1 ? "" : "s",
                duration(now() - t_run, a, sizeof a), tag, out);
    }
out:
    if (!wrote_any && created[0]) {
        /* a folder this run made and left empty goes, lock files with it (no other run knew of it before this one) */
        char p[PATH_MAX];
        lock_path(p, sizeof p, out, "");
        unlink(p);
        lock_path(p, sizeof p, out, tag);
        unlink(p);
    }
    if (!wrote_any) remove_created(created, out);
    for (int i = 0; i < 2; i++)
        if (lock_fd[i] >= 0) close(lock_fd[i]);
    free_manifest(&old);
    vbs_session_free(s);
    for (int i = 0; i < nres; i++) row_free(&res[i]);
    free(res);
    vbs_free_cases(cases, n);
    vbs_model_free(m);
    return rc;
}
