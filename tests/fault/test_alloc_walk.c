/*
 * test_alloc_walk.c: allocation-failure walks of the loaders (model load,
 * NIfTI .nii and .nii.gz, .npy, ONNX convert, the JSON card) and the session
 * (new, run_mc, the maps), as SQLite's OOM tests do. It runs under Debian's
 * fiu_posix_preload.so, whose libc/mm points wrap malloc, calloc and realloc
 * (in libvbseg and in the libraries it calls: zlib, libnifti, protobuf-c);
 * the fault is enabled only around the call walked, so that the harness and
 * libc's own setup are not faulted.
 *
 * Each call runs once with the allocations counted, then once per
 * allocation with that one failing (ENOMEM). The oracle: the call fails
 * with a status and a message (never a crash), returns no object, and a
 * session whose run failed gives, on the next fault-free run, the same maps
 * as a fresh session. Leaks are caught by LeakSanitizer in the ASan build
 * (detect_leaks=1); the Release build checks only statuses and results.
 * It is not a test of what the loaders accept: tests/test_format.c,
 * test_nifti.c and test_onnx.c do that.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <execinfo.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define FIU_ENABLE 1 /* the real fiu_* functions, not fiu.h's stubs */
#include <fiu-control.h>
#include <fiu.h>

#include "../check.h"
#include "internal.h"
#include "net.h"
#include "vbseg.h"

/* ---- the fault: the Nth allocation inside the armed window fails ---- */

/* The session's activation arena comes from aligned_alloc, which libfiu does
 * not wrap: the link wraps vbseg's calls to it (-Wl,--wrap) under the same
 * point family. In the ASan build fiu_posix_preload.so cannot be used (ASan's
 * runtime must come first in the preload list, and then its malloc is the one
 * called; put first, libfiu's malloc wrapper runs before it is initialised),
 * so there malloc, calloc and realloc are wrapped the same way: vbseg's own
 * allocations are walked, not those inside zlib, libnifti or protobuf-c. */
void *__real_aligned_alloc(size_t align, size_t n);
void *__wrap_aligned_alloc(size_t align, size_t n) {
    if (fiu_fail("libc/mm/aligned_alloc")) { errno = ENOMEM; return NULL; }
    return __real_aligned_alloc(align, n);
}
#ifdef VBS_WALK_WRAP
void *__real_malloc(size_t n);
void *__real_calloc(size_t k, size_t n);
void *__real_realloc(void *p, size_t n);
void *__wrap_malloc(size_t n) {
    if (fiu_fail("libc/mm/malloc")) { errno = ENOMEM; return NULL; }
    return __real_malloc(n);
}
void *__wrap_calloc(size_t k, size_t n) {
    if (fiu_fail("libc/mm/calloc")) { errno = ENOMEM; return NULL; }
    return __real_calloc(k, n);
}
void *__wrap_realloc(void *p, size_t n) {
    if (fiu_fail("libc/mm/realloc")) { errno = ENOMEM; return NULL; }
    return __real_realloc(p, n);
}
#endif

static long g_count, g_fail_at;
static int g_fired;

/* Allocations made inside two Debian libraries are not walked, because the
 * libraries themselves crash when such a malloc fails, before any caller can
 * act: libjansson 2.14's parser (json_load_file frees a bad pointer in
 * json_delete, or asserts in lex_scan_string) and OpenBLAS 0.3.21's
 * sgemm_small_kernel (SKYLAKEX), which uses the buffer it could not get.
 * vbseg's own allocations around them are walked. */
static int in_unwalked_library(void) {
    static const char *const libs[] = {"libjansson", "libopenblas"};
    void *bt[32];
    int n = backtrace(bt, 32);
    for (int i = 0; i < n; i++) {
        Dl_info di;
        if (!dladdr(bt[i], &di) || !di.dli_fname) continue;
        for (size_t k = 0; k < sizeof libs / sizeof libs[0]; k++)
            if (strstr(di.dli_fname, libs[k])) return 1;
    }
    return 0;
}

static int on_alloc(const char *name, int *failnum, void **failinfo, unsigned int *flags) {
    (void)name;
    (void)failnum;
    (void)flags;
    if (in_unwalked_library()) return 0;
    if (++g_count != g_fail_at) return 0;
    g_fired = 1;
    *failinfo = (void *)(intptr_t)ENOMEM;
    if (getenv("VBS_ALLOC_WALK_BT")) { /* for debugging a finding: where the failed allocation is */
        void *bt[32];
        fprintf(stderr, "allocation %ld fails here:\n", g_fail_at);
        backtrace_symbols_fd(bt, backtrace(bt, 32), 2);
    }
    return 1;
}

static void arm(long n) {
    g_count = 0;
    g_fail_at = n;
    g_fired = 0;
    fiu_enable_external("libc/mm/*", 1, NULL, 0, on_alloc);
}

static void disarm(void) { fiu_disable("libc/mm/*"); }

/* One walked call: 0 (VBS_OK) or an error with msg filled; it frees what it
 * made. setup and teardown run outside the window around every run. */
typedef struct walk_case {
    const char *name;
    vbs_status (*call)(struct walk_case *w, char *msg, size_t n);
    const char *path;
    void (*setup)(struct walk_case *w);
    void (*teardown)(struct walk_case *w);
    vbs_session *s;
    uint64_t fp; /* the fault-free result's fingerprint (set by run 0) */
} walk_case;

static long g_total_runs, g_tolerated;
static int g_wrong; /* a call that succeeded gave another result than the fault-free run */

static const char *g_only; /* VBS_ALLOC_WALK_ONLY=name,name: those walks only (e.g. a subset under valgrind) */

/* counts the allocations of w (run 0), then fails each in turn */
static void walk(walk_case *w) {
    if (g_only) {
        size_t k = strlen(w->name);
        const char *p = g_only;
        while ((p = strstr(p, w->name)) && ((p > g_only && p[-1] != ',') || (p[k] && p[k] != ','))) p += k;
        if (!p) return;
    }
    long n = 0;
    int bad = 0;
    for (long k = 0; k == 0 || k <= n; k++) {
        char msg[1024] = "";
        if (w->setup) w->setup(w);
        g_wrong = 0;
        arm(k);
        vbs_status st = w->call(w, msg, sizeof msg);
        disarm();
        if (w->teardown) w->teardown(w);
        if (!k) {
            n = g_count;
            CHECK(st == VBS_OK && !g_wrong, "%s: fault-free call failed: %s", w->name, msg);
            CHECK(n > 0, "%s: no allocation counted (is fiu_posix_preload.so preloaded?)", w->name);
            continue;
        }
        g_total_runs++;
        const char *why = NULL;
        if (!g_fired) why = "the fault was not injected (the call took another path)";
        else if (g_wrong) why = "it succeeded with another result";
        else if (st != VBS_OK && !msg[0]) why = "no message";
        else if (st == VBS_OK && g_tolerated++ < 20) /* an allocation it can do without; its result was checked */
            printf("note: %s: allocation %ld of %ld failed and the call succeeded with the fault-free result\n", w->name, k, n);
        if (why) {
            g_fail++;
            if (bad++ < 5) printf("FAIL %s: allocation %ld of %ld: %s (status %s)\n", w->name, k, n, why, vbs_status_name(st));
        } else g_pass++;
    }
    printf("%s: %ld allocations walked\n", w->name, n);
}

/* ---- the calls ---- */

static uint64_t fnv(uint64_t h, const void *p, size_t n) {
    for (size_t i = 0; i < n; i++) h = (h ^ ((const unsigned char *)p)[i]) * 1099511628211ull;
    return h;
}
static uint64_t fnv_s(uint64_t h, const char *s) { return fnv(h, s ? s : "(null)", strlen(s ? s : "(null)") + 1); }

/* what a loaded model says about itself: nodes, inputs and outputs (dims and
 * their names), the card's strings and numbers; a load that lost any of it
 * under a failed allocation gives another fingerprint */
static uint64_t model_fingerprint(const vbs_model *m) {
    uint64_t h = 1469598103934665603ull;
    for (int i = 0; i < vbs_model_n_nodes(m); i++) h = fnv_s(fnv_s(h, vbs_model_node_name(m, i)), vbs_model_node_op(m, i));
    for (int io = 0; io < 2; io++)
        for (int i = 0; i < (io ? vbs_model_n_outputs(m) : vbs_model_n_inputs(m)); i++) {
            vbs_value_info v;
            if ((io ? vbs_model_output : vbs_model_input)(m, i, &v)) return 0;
            h = fnv(fnv_s(h, v.name), v.dims, sizeof v.dims[0] * (size_t)v.ndim);
            for (int j = 0; j < v.ndim; j++) h = fnv_s(h, v.dim_param[j]);
        }
    /* and the definition's own strings (internal.h): graph, node, value, attribute and tensor names */
    const vbs_def *d = &m->def;
    h = fnv_s(h, d->graph_name);
    for (int i = 0; i < d->n_nodes; i++) {
        const vbs_node_def *n = &d->nodes[i];
        for (int k = 0; k < n->n_in; k++) h = fnv_s(h, n->in[k]);
        for (int k = 0; k < n->n_out; k++) h = fnv_s(h, n->out[k]);
        for (int k = 0; k < n->n_attr; k++) h = fnv_s(fnv_s(h, n->attr[k].name), n->attr[k].type == VBS_ATTR_STRING ? n->attr[k].s : "");
    }
    for (int i = 0; i < d->n_tensors; i++) h = fnv_s(fnv_s(h, d->tensors[i].name), d->tensors[i].rho);
    const vbs_card *c = vbs_model_card(m);
    for (int i = 0; i < c->n_channels; i++) h = fnv_s(h, c->channels[i]);
    for (int i = 0; i < c->n_labels; i++) h = fnv_s(fnv(h, &c->labels[i].value, sizeof(int)), c->labels[i].name);
    for (int i = 0; i < c->n_metrics; i++) h = fnv_s(fnv(h, &c->metrics[i].value, sizeof(double)), c->metrics[i].name);
    for (int i = 0; i < c->n_extra; i++) h = fnv_s(fnv_s(h, c->extra[i].key), c->extra[i].value);
    h = fnv_s(fnv_s(fnv_s(fnv_s(h, c->producer), c->producer_version), c->training_data), c->description);
    int nums[] = {c->normalization, c->spatial_dims, c->label_convention, c->heteroscedastic, c->output_activation, c->epochs};
    return fnv(fnv(h, nums, sizeof nums), &c->seed, sizeof c->seed);
}

/* run 0 records the result; the others must match it when they succeed */
static void same_result(walk_case *w, uint64_t fp) {
    if (!w->fp) w->fp = fp;
    else g_wrong |= fp != w->fp;
}

static vbs_status call_model_load(walk_case *w, char *msg, size_t n) {
    vbs_model *m = NULL;
    vbs_status st = vbs_model_load(w->path, &m);
    /* no handle to hold a message only when the handle itself could not be made */
    if (st) snprintf(msg, n, "%s", m ? vbs_model_errmsg(m) : st == VBS_ERR_NOMEM ? "(out of memory, no handle)" : "");
    else same_result(w, model_fingerprint(m));
    vbs_model_free(m);
    return st;
}

static vbs_status call_nifti(walk_case *w, char *msg, size_t n) {
    vbs_volume *v = NULL;
    vbs_status st = vbs_volume_read_nifti(w->path, &v, msg, n);
    if (!st) {
        int64_t d[4];
        vbs_volume_dims(v, d);
        g_wrong = d[0] != 12 || d[1] != 10 || d[2] != 3 || vbs_volume_data(v)[5] != 5.f;
    }
    CHECK(st == VBS_OK || !v, "%s: an object returned with an error", w->name);
    vbs_volume_free(v);
    return st;
}

static vbs_status call_npy(walk_case *w, char *msg, size_t n) {
    vbs_volume *v = NULL;
    vbs_status st = vbs_volume_read_npy(w->path, &v, msg, n);
    if (!st) g_wrong = vbs_volume_data(v)[7] != 7.f;
    vbs_volume_free(v);
    return st;
}

static vbs_status call_card(walk_case *w, char *msg, size_t n) {
    vbs_card card;
    memset(&card, 0, sizeof card);
    char **pool = NULL;
    int npool = 0;
    vbs_status st = vbs_read_card_json(w->path, &card, &pool, &npool, msg, n) ? VBS_OK : VBS_ERR_FORMAT;
    if (!st) g_wrong = card.n_labels != 2 || strcmp(card.labels[1].name, "lesion") || card.n_metrics != 1;
    for (int i = 0; i < npool; i++) free(pool[i]);
    free(pool);
    return st;
}

static vbs_status call_convert(walk_case *w, char *msg, size_t n) {
    vbs_model *m = NULL;
    vbs_convert_opts o = vbs_convert_defaults();
    vbs_status st = vbs_convert_onnx(w->path, &o, &m);
    if (st) snprintf(msg, n, "%s", m ? vbs_model_errmsg(m) : st == VBS_ERR_NOMEM ? "(out of memory, no handle)" : "");
    else same_result(w, model_fingerprint(m));
    vbs_model_free(m);
    return st;
}

static const vbs_model *g_model;
/* 12 x 13: the network takes multiples of 2, so the session pads (to 12 x 14); an out-of-memory
 * probe that made it pad further would show in the maps */
static float g_input[1 * 2 * 12 * 13];
static const int64_t g_shape[4] = {1, 2, 12, 13};
#define NVOX (12 * 13)

static vbs_status call_session_new(walk_case *w, char *msg, size_t n) {
    (void)w;
    vbs_session *s = NULL;
    vbs_status st = vbs_session_new(g_model, &s);
    if (st) snprintf(msg, n, "%s", s ? vbs_session_errmsg(s) : st == VBS_ERR_NOMEM ? "(out of memory, no handle)" : "");
    vbs_session_free(s);
    return st;
}

static vbs_mc_opts mc_opts(void) {
    vbs_mc_opts o = vbs_mc_defaults();
    o.n_samples = 3;
    o.seed = 7;
    o.threads = 1; /* one worker: the allocations in one order */
    return o;
}

static float g_ref[2 * NVOX]; /* a fresh session's MI and label maps */
static int64_t g_ref_counts[3 * 3]; /* and its per-sample label volumes (3 samples, 3 classes) */

/* the mutual-information and label maps after a run, against the fresh session's */
static vbs_status check_maps(vbs_session *s, char *msg, size_t n) {
    const float *mi, *lab;
    vbs_map_info info;
    vbs_status st = vbs_session_map(s, VBS_MAP_MUTUAL_INFO, &mi, &info);
    if (!st) st = vbs_session_map(s, VBS_MAP_LABELS, &lab, &info);
    if (st) { snprintf(msg, n, "%s", vbs_session_errmsg(s)); return st; }
    g_wrong |= memcmp(mi, g_ref, NVOX * sizeof(float)) || memcmp(lab, g_ref + NVOX, NVOX * sizeof(float));
    const int64_t *counts;
    int64_t ns;
    int k;
    if ((st = vbs_session_label_counts(s, &counts, &ns, &k))) { snprintf(msg, n, "%s", vbs_session_errmsg(s)); return st; }
    g_wrong |= ns != 3 || k != 3 || memcmp(counts, g_ref_counts, sizeof g_ref_counts);
    return VBS_OK;
}

static vbs_status run_mc(vbs_session *s, char *msg, size_t n) {
    vbs_mc_opts o = mc_opts();
    vbs_status st = vbs_session_run_mc(s, g_input, g_shape, 4, &o);
    if (st) snprintf(msg, n, "%s", vbs_session_errmsg(s));
    else st = check_maps(s, msg, n);
    return st;
}

static vbs_status call_run_mc(walk_case *w, char *msg, size_t n) { return run_mc(w->s, msg, n); }
static vbs_status call_maps(walk_case *w, char *msg, size_t n) { return check_maps(w->s, msg, n); }

static void new_session(walk_case *w) { CHECK(vbs_session_new(g_model, &w->s) == VBS_OK, "%s: session", w->name); }

/* a session with a finished run whose maps have not been asked for (each is made on demand) */
static void new_session_run(walk_case *w) {
    vbs_mc_opts o = mc_opts();
    new_session(w);
    CHECK(vbs_session_run_mc(w->s, g_input, g_shape, 4, &o) == VBS_OK, "%s: fault-free run: %s", w->name, vbs_session_errmsg(w->s));
}

/* after a walked run (failed or not) the session still works: a fault-free
 * run gives the fresh session's maps */
static void recheck_session(walk_case *w) {
    char msg[1024] = "";
    int wrong = g_wrong;
    g_wrong = 0;
    vbs_status st = run_mc(w->s, msg, sizeof msg);
    CHECK(st == VBS_OK && !g_wrong, "%s: the session after the fault: %s %s", w->name, vbs_status_name(st), msg);
    g_wrong = wrong;
}

static void recheck_free_session(walk_case *w) {
    recheck_session(w);
    vbs_session_free(w->s);
    w->s = NULL;
}

static void free_session(walk_case *w) {
    vbs_session_free(w->s);
    w->s = NULL;
}

int main(int argc, char **argv) {
    const char *onnx = argc > 1 ? argv[1] : NULL;
    char dir[] = "/tmp/vbs_allocwalk.XXXXXX", path[6][256], err[1024];
    setvbuf(stdout, NULL, _IOLBF, 0); /* the lines so far survive a crash */
    if (!mkdtemp(dir)) { perror("mkdtemp"); return 1; }
    fiu_init(0);
    g_only = getenv("VBS_ALLOC_WALK_ONLY");
#ifdef VBS_WALK_WRAP
    printf("allocations walked: vbseg's own (the link wraps malloc, calloc, realloc, aligned_alloc)\n");
#else
    printf("allocations walked: every malloc, calloc, realloc (fiu_posix_preload.so) and vbseg's aligned_alloc\n");
#endif
    void *warm[2];
    backtrace(warm, 2); /* loads the unwinder now, not inside the first armed window */

    /* the inputs, written fault-free */
    vbs_net_opts no = vbs_net_defaults(VBS_ARCH_UNET);
    no.dims = 2; no.in_channels = 2; no.classes = 3; no.base = 2; no.depth = 1; no.latent = 2; no.rho0 = -3; no.seed = 3;
    no.patch[0] = no.patch[1] = 12;
    vbs_model *m = NULL;
    CHECK(vbs_net_build(VBS_ARCH_UNET, &no, &m) == VBS_OK, "build");
    snprintf(path[0], sizeof path[0], "%s/m.vbseg", dir);
    CHECK(m && vbs_model_save(m, path[0]) == VBS_OK, "save: %s", m ? vbs_model_errmsg(m) : "");
    int64_t d[4] = {12, 10, 3, 1};
    float px[3] = {1, 1, 2}, org[3] = {0, 0, 0}, data[12 * 10 * 3];
    for (int i = 0; i < 12 * 10 * 3; i++) data[i] = (float)i;
    vbs_volume *v = vbs_volume_create(d, px, org);
    snprintf(path[1], sizeof path[1], "%s/v.nii.gz", dir);
    snprintf(path[2], sizeof path[2], "%s/v.nii", dir);
    snprintf(path[3], sizeof path[3], "%s/v.npy", dir);
    snprintf(path[4], sizeof path[4], "%s/card.json", dir);
    CHECK(v && !vbs_volume_write_nifti(v, path[1], data, d, 0, err, sizeof err), "%s", err);
    CHECK(v && !vbs_volume_write_nifti(v, path[2], data, d, 0, err, sizeof err), "%s", err);
    CHECK(!vbs_write_npy(path[3], data, (int64_t[]){3, 10, 12}, 3, err, sizeof err), "%s", err);
    vbs_volume_free(v);
    FILE *f = fopen(path[4], "w");
    if (f) {
        fputs("{\"channels\": [\"t1\", \"t2\"], \"normalization\": \"zscore_nonzero\", \"spatial_dims\": 2, \"patch\": [12, 12],\n"
              " \"labels\": {\"0\": \"background\", \"1\": \"lesion\"}, \"label_convention\": \"custom\", \"seed\": 1,\n"
              " \"metrics\": {\"dice\": 0.5}, \"extra\": {\"site\": \"x\"}}\n", f);
        fclose(f);
    }

    walk_case loaders[] = {
        {"model_load", call_model_load, path[0], NULL, NULL, NULL, 0}, {"nifti_gz", call_nifti, path[1], NULL, NULL, NULL, 0},
        {"nifti", call_nifti, path[2], NULL, NULL, NULL, 0},           {"npy", call_npy, path[3], NULL, NULL, NULL, 0},
        {"card", call_card, path[4], NULL, NULL, NULL, 0},             {"convert_onnx", call_convert, onnx, NULL, NULL, NULL, 0},
    };
    for (size_t i = 0; i < sizeof loaders / sizeof loaders[0]; i++) {
        if (!loaders[i].path) { printf("convert_onnx: skipped: no ONNX file given\n"); continue; }
        walk(&loaders[i]);
    }

    /* the session: new; run_mc on a session that has run before (its plan made) and on a new one;
     * the maps of a run made outside the window */
    g_model = m;
    for (int i = 0; i < 2 * NVOX; i++) g_input[i] = sinf(0.37f * (float)i);
    vbs_session *fresh = NULL;
    vbs_mc_opts o = mc_opts();
    const float *mi = NULL, *lab = NULL;
    vbs_map_info info;
    CHECK(m && vbs_session_new(m, &fresh) == VBS_OK && vbs_session_run_mc(fresh, g_input, g_shape, 4, &o) == VBS_OK &&
              !vbs_session_map(fresh, VBS_MAP_MUTUAL_INFO, &mi, &info) && !vbs_session_map(fresh, VBS_MAP_LABELS, &lab, &info),
          "fresh run");
    const int64_t *counts = NULL;
    int64_t ns = 0;
    int kc = 0;
    CHECK(fresh && !vbs_session_label_counts(fresh, &counts, &ns, &kc) && ns == 3 && kc == 3, "fresh label counts");
    if (mi && lab && counts && ns == 3 && kc == 3) {
        memcpy(g_ref_counts, counts, sizeof g_ref_counts);
        memcpy(g_ref, mi, sizeof(float) * NVOX);
        memcpy(g_ref + NVOX, lab, sizeof(float) * NVOX);
        walk_case sn = {"session_new", call_session_new, NULL, NULL, NULL, NULL, 0};
        walk(&sn);
        walk_case rm = {"session_run_mc", call_run_mc, NULL, NULL, recheck_session, fresh, 0};
        walk(&rm);
        walk_case r1 = {"session_first_run_mc", call_run_mc, NULL, new_session, recheck_free_session, NULL, 0};
        walk(&r1);
        walk_case mp = {"session_maps", call_maps, NULL, new_session_run, free_session, NULL, 0};
        walk(&mp);
    }
    vbs_session_free(fresh);
    vbs_model_free(m);
    for (int i = 0; i < 5; i++) unlink(path[i]);
    rmdir(dir);
    printf("%ld faulty calls, %ld of them succeeded without the allocation (result checked)\n", g_total_runs, g_tolerated);
    return finish("test_alloc_walk");
}
