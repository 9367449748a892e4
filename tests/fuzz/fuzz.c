/*
 * fuzz.c: the allocation cap, the scratch folder, and the model loader
 * and runner of the fuzz targets (fuzz.h says the rule). Linked into every
 * libFuzzer target and into the replay driver, with -Wl,--wrap=malloc,...
 * so that vbseg's calls land in the __wrap_ functions below; __real_ is
 * whatever allocator the build has (ASan's, or libc's). Not thread-aware
 * beyond an atomic read of the cap: the targets run the library on one
 * thread. Not a test of results: the targets check the few properties they
 * name, the sanitizers the rest.
 */
#include "fuzz.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>

#include "internal.h"

int fuzz_status;

static size_t g_cap;       /* 0: off */
static size_t g_present, g_extra;

void fuzz_cap_on(size_t present, size_t extra) {
    g_present = present;
    g_extra = extra;
    size_t cap = FUZZ_CAP_CONST + extra;
    cap += present > (SIZE_MAX - cap) / FUZZ_CAP_MULT ? SIZE_MAX - cap : present * FUZZ_CAP_MULT;
    __atomic_store_n(&g_cap, cap, __ATOMIC_SEQ_CST);
}

void fuzz_cap_off(void) { __atomic_store_n(&g_cap, 0, __ATOMIC_SEQ_CST); }

/* A request over the cap is a finding: say so in one line (without
 * allocating) and abort, which libFuzzer reports as a crash and saves. */
static void check(const char *fn, size_t n) {
    size_t cap = __atomic_load_n(&g_cap, __ATOMIC_SEQ_CST);
    if (!cap || n <= cap) return;
    char line[256];
    int k = snprintf(line, sizeof line,
                     "vbseg fuzz: allocation cap exceeded: %s(%zu) > %d x %zu bytes present + %zu + %zu planned for the forward pass\n",
                     fn, n, FUZZ_CAP_MULT, g_present, FUZZ_CAP_CONST, g_extra);
    if (k > 0) { ssize_t w = write(2, line, (size_t)k < sizeof line ? (size_t)k : sizeof line - 1); (void)w; }
    abort();
}

void *__real_malloc(size_t n);
void *__real_calloc(size_t k, size_t n);
void *__real_realloc(void *p, size_t n);
void *__real_aligned_alloc(size_t a, size_t n);
int __real_posix_memalign(void **p, size_t a, size_t n);
void *__wrap_malloc(size_t n);
void *__wrap_calloc(size_t k, size_t n);
void *__wrap_realloc(void *p, size_t n);
void *__wrap_aligned_alloc(size_t a, size_t n);
int __wrap_posix_memalign(void **p, size_t a, size_t n);

void *__wrap_malloc(size_t n) { check("malloc", n); return __real_malloc(n); }
void *__wrap_calloc(size_t k, size_t n) {
    check("calloc", n && k > SIZE_MAX / n ? SIZE_MAX : k * n);
    return __real_calloc(k, n);
}
void *__wrap_realloc(void *p, size_t n) { check("realloc", n); return __real_realloc(p, n); }
void *__wrap_aligned_alloc(size_t a, size_t n) { check("aligned_alloc", n); return __real_aligned_alloc(a, n); }
int __wrap_posix_memalign(void **p, size_t a, size_t n) { check("posix_memalign", n); return __real_posix_memalign(p, a, n); }

/* ---- scratch folder ------------------------------------------------------ */

static char g_dir[4096];

static void remove_dir(void) {
    DIR *d = opendir(g_dir);
    if (!d) return;
    struct dirent *e;
    char p[8192];
    while ((e = readdir(d)))
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) {
            snprintf(p, sizeof p, "%s/%s", g_dir, e->d_name);
            unlink(p);
        }
    closedir(d);
    rmdir(g_dir);
}

const char *fuzz_path(const char *name) {
    static char path[8192];
    if (!g_dir[0]) {
        const char *t = getenv("TMPDIR");
        snprintf(g_dir, sizeof g_dir, "%s/vbseg-fuzz-XXXXXX", t && *t ? t : "/tmp");
        if (!mkdtemp(g_dir)) { perror("vbseg fuzz: mkdtemp"); abort(); }
        atexit(remove_dir);
    }
    snprintf(path, sizeof path, "%s/%s", g_dir, name);
    return path;
}

int fuzz_write(const char *path, const uint8_t *data, size_t size) {
    FILE *f = fopen(path, "wb");
    if (!f) return -1;
    int bad = size && fwrite(data, 1, size, f) != size;
    return fclose(f) || bad ? -1 : 0;
}

void fuzz_init(void) {
    setenv("OMP_NUM_THREADS", "1", 1);
}

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc;
    (void)argv;
    fuzz_init();
    return 0;
}

void fuzz_fail(const char *what) {
    fprintf(stderr, "vbseg fuzz: %s\n", what);
    abort();
}

/* ---- running a loaded model ---------------------------------------------- */

/* The input shape to run m on, in sh: fixed dims as declared, a symbolic
 * batch 1 and channel count 1, symbolic spatial dims `side`. */
static int pick_shape(const vbs_value_info *in, int64_t side, vbs_shape *sh) {
    if (in->ndim < 3 || in->ndim > VBS_MAX_DIMS) return 0;
    sh->ndim = in->ndim;
    for (int i = 0; i < in->ndim; i++) sh->d[i] = in->dims[i] > 0 ? in->dims[i] : i < 2 ? 1 : side;
    return 1;
}

int fuzz_run_model(vbs_model *m, size_t present) {
    vbs_model_stats stats;
    vbs_stochasticity sto;
    vbs_prior_info prior;
    int st = vbs_model_get_stats(m, &stats);
    if (st) return st;
    if ((st = vbs_model_stochasticity(m, &sto))) return st;
    vbs_model_prior(m, &prior); /* VBS_ERR_STATE without variational tensors: not a refusal */
    for (int i = 0; i < vbs_model_n_nodes(m); i++)
        if (!vbs_model_node_op(m, i) || !vbs_model_node_name(m, i)) fuzz_fail("a node without an op or a name");
    if (vbs_model_n_inputs(m) != 1) return 0; /* the session feeds one input; nothing to run */
    vbs_value_info in;
    if ((st = vbs_model_input(m, 0, &in))) return st;
    for (int i = 0; i < vbs_model_n_outputs(m); i++) {
        vbs_value_info out;
        if ((st = vbs_model_output(m, i, &out))) return st;
    }
    vbs_session *s = NULL;
    if ((st = vbs_session_new(m, &s))) { vbs_session_free(s); return st; }
    vbs_shape sh;
    int64_t sides[] = {8, 16, 32};
    int found = 0;
    for (int k = 0; k < 3 && !found; k++)
        found = pick_shape(&in, sides[k], &sh) && !vbs_session_check_input(s, sh.d, sh.ndim);
    if (!found) { vbs_session_free(s); return VBS_ERR_SHAPE; }
    /* what one pass at that shape would take, before it runs */
    vbs_plan pl;
    char err[VBS_ERRLEN];
    if (vbs_plan_build(&pl, &m->g, &sh, err)) fuzz_fail("a shape vbs_session_check_input took does not plan");
    int64_t floats = pl.arena_floats + pl.work_floats, n = vbs_shape_numel(&sh);
    double flops = pl.flops;
    vbs_plan_free(&pl);
    if (floats > FUZZ_FORWARD_FLOATS || flops > FUZZ_FORWARD_FLOPS || n > FUZZ_FORWARD_FLOATS) { vbs_session_free(s); return 0; }
    double fl;
    if ((st = vbs_model_flops(m, sh.d, sh.ndim, &fl))) fuzz_fail("vbs_model_flops refuses a shape the session takes");
    float *x = malloc(sizeof(float) * (size_t)n);
    if (!x) fuzz_fail("out of memory for the input");
    for (int64_t i = 0; i < n; i++) x[i] = (float)(i % 7) * 0.25f - 0.5f;
    fuzz_cap_on(present, (size_t)floats * 4);
    st = vbs_session_forward(s, x, sh.d, sh.ndim, VBS_MODE_MEAN, 1, 0);
    for (int i = 0; !st && i < vbs_model_n_outputs(m); i++) {
        const float *y;
        vbs_value_info yi;
        if (vbs_session_output(s, i, &y, &yi)) fuzz_fail("vbs_session_output fails after a forward pass");
    }
    if (!st && sh.d[0] == 1) {
        vbs_mc_opts o = vbs_mc_defaults();
        o.n_samples = 2;
        o.threads = 1;
        o.seed = 7;
        st = vbs_session_run_mc(s, x, sh.d, sh.ndim, &o);
        for (int w = 0; !st && w < VBS_MAP_COUNT; w++) {
            const float *y;
            vbs_map_info mi;
            vbs_session_map(s, (vbs_map)w, &y, &mi); /* the heteroscedastic maps may be absent */
        }
    }
    fuzz_cap_on(present, 0);
    if (getenv("VBS_FUZZ_VERBOSE")) {
        fprintf(stderr, "vbseg fuzz: ran at");
        for (int i = 0; i < sh.ndim; i++) fprintf(stderr, " %lld", (long long)sh.d[i]);
        fprintf(stderr, ": %s\n", st ? vbs_session_errmsg(s) : "ok");
    }
    free(x);
    vbs_session_free(s);
    return st;
}

/* ---- loading a .vbseg from memory ------------------------------------------ */

int fuzz_load_model(const uint8_t *data, size_t size, const char *name, vbs_model **m, void **buf) {
    *m = NULL;
    if (!(*buf = aligned_alloc(64, (size + 63) / 64 * 64 + 64))) fuzz_fail("out of memory for the input");
    uint8_t *b = *buf;
    if (size) memcpy(b, data, size);
    vbs_status st = vbs_model_load_memory(b, size, name, m);
    if (!*m) fuzz_fail("vbs_model_load_memory left no model to read the message from");
    if (st && !vbs_model_errmsg(*m)[0]) fuzz_fail("a refusal without a message");
    if (st && strstr(vbs_model_errmsg(*m), "checksum") && size >= 32) {
        uint64_t h = 0;
        for (int i = 0; i < 8; i++) h |= (uint64_t)b[16 + i] << 8 * i;
        if (h <= size - 32) {
            uint32_t crc = (uint32_t)crc32(0L, b + 32, (uInt)h);
            for (int i = 0; i < 4; i++) b[12 + i] = (uint8_t)(crc >> 8 * i);
            vbs_model_free(*m);
            st = vbs_model_load_memory(b, size, name, m);
            if (!*m) fuzz_fail("vbs_model_load_memory left no model to read the message from");
        }
    }
    return (int)st;
}
