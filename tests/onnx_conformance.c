/*
 * onnx_conformance.c: runs ONNX's own node test cases (Debian's
 * libonnx-testdata) through the importer and the runtime in mean mode.
 *
 *   onnx_conformance [--require LIST] CASE_DIR...
 *
 * Each CASE_DIR holds model.onnx and test_data_set_0/{input,output}_N.pb
 * (serialized TensorProto). One line per case: PASS, FAIL or UNSUPPORTED
 * with the reason; then "N passed, N failed, N skipped". Outputs are
 * compared with atol 1e-4 and rtol 1e-3. Exits non-zero if any case
 * FAILs or a case named in LIST (one name per line, # comments) does not
 * PASS. No case may crash.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "onnx.pb-c.h"

typedef struct { float *data; vbs_shape shape; } tensor;

vbs_status vbs_convert_onnx_bound(const char *path, const vbs_convert_opts *opts, int n_bind, const char *const *names,
                                  const Onnx__TensorProto *const *values, vbs_model **out);

static void *unpack_file(const char *path, void *(*unpack)(ProtobufCAllocator *, size_t, const uint8_t *)) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *b = malloc((size_t)(n > 0 ? n : 1));
    size_t got = b ? fread(b, 1, (size_t)n, f) : 0;
    fclose(f);
    void *m = got == (size_t)n ? unpack(NULL, (size_t)n, b) : NULL;
    free(b);
    return m;
}

static void *unpack_tensor(ProtobufCAllocator *a, size_t n, const uint8_t *b) { return onnx__tensor_proto__unpack(a, n, b); }
static void *unpack_model(ProtobufCAllocator *a, size_t n, const uint8_t *b) { return onnx__model_proto__unpack(a, n, b); }

/* 0 ok, 1 missing, 2 unsupported (reason in why) */
static int read_tensor(const char *path, tensor *t, char *why, size_t wn) {
    FILE *probe = fopen(path, "rb");
    if (!probe) return 1;
    fclose(probe);
    Onnx__TensorProto *tp = unpack_file(path, unpack_tensor);
    if (!tp) { snprintf(why, wn, "%s: not a TensorProto", path); return 2; }
    int rc = 0;
    if (tp->data_type != ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT) { snprintf(why, wn, "test data of element type %d (float only)", tp->data_type); rc = 2; }
    else if (tp->n_dims > VBS_MAX_DIMS) { snprintf(why, wn, "test data of rank %zu", tp->n_dims); rc = 2; }
    else {
        t->shape.ndim = (int)tp->n_dims;
        int64_t numel = 1;
        for (size_t i = 0; i < tp->n_dims; i++) { t->shape.d[i] = tp->dims[i]; numel *= tp->dims[i]; }
        t->data = malloc(sizeof(float) * (size_t)(numel ? numel : 1));
        if (tp->has_raw_data && tp->raw_data.len == (size_t)numel * 4) memcpy(t->data, tp->raw_data.data, (size_t)numel * 4);
        else if (tp->n_float_data == (size_t)numel) memcpy(t->data, tp->float_data, (size_t)numel * 4);
        else { snprintf(why, wn, "test data length does not match its dims"); rc = 2; }
    }
    onnx__tensor_proto__free_unpacked(tp, NULL);
    return rc;
}

static const char *base(const char *p) {
    size_t n = strlen(p);
    while (n > 1 && p[n - 1] == '/') n--;
    const char *s = p + n;
    while (s > p && s[-1] != '/') s--;
    return s;
}

/* PASS 0, FAIL 1, UNSUPPORTED 2 */
static int run_case(const char *dir, char *why, size_t wn) {
    char path[4096];
    snprintf(path, sizeof path, "%s/model.onnx", dir);
    vbs_convert_opts o = vbs_convert_defaults();
    o.sigma = VBS_SIGMA_NONE;
    /* the ONNX graph's input names, in the order of the input_N.pb files */
    Onnx__ModelProto *mp = (Onnx__ModelProto *)unpack_file(path, unpack_model);
    const char *onames[64];
    Onnx__TensorProto *ovals[64];
    int no = 0;
    for (size_t i = 0; mp && mp->graph && i < mp->graph->n_input && no < 64; i++) {
        int init = 0;
        for (size_t k = 0; k < mp->graph->n_initializer; k++) init |= !strcmp(mp->graph->initializer[k]->name, mp->graph->input[i]->name);
        if (init) continue;
        char tp[4200];
        snprintf(tp, sizeof tp, "%s/test_data_set_0/input_%d.pb", dir, no);
        onames[no] = mp->graph->input[i]->name;
        ovals[no++] = unpack_file(tp, unpack_tensor);
    }
    int nbind = 0;
    const char *bnames[64];
    const Onnx__TensorProto *bvals[64];
    for (int i = 0; i < no; i++)
        if (ovals[i]) { bnames[nbind] = onames[i]; bvals[nbind++] = ovals[i]; }
    vbs_model *m;
    vbs_status cst = vbs_convert_onnx_bound(path, &o, nbind, bnames, bvals, &m);
    /* which input_N.pb file feeds each remaining graph input */
    int file_of[VBS_MAX_IN];
    for (int j = 0; !cst && j < m->def.n_inputs && j < VBS_MAX_IN; j++) {
        file_of[j] = j;
        for (int i = 0; i < no; i++)
            if (!strcmp(onames[i], m->def.inputs[j].name)) file_of[j] = i;
    }
    for (int i = 0; i < no; i++)
        if (ovals[i]) onnx__tensor_proto__free_unpacked(ovals[i], NULL);
    if (mp) onnx__model_proto__free_unpacked(mp, NULL);
    if (cst) {
        const char *msg = vbs_model_errmsg(m);
        const char *p = strstr(msg, "model.onnx: ");
        snprintf(why, wn, "%s", p ? p + 12 : msg);
        vbs_model_free(m);
        return 2;
    }
    int rc = 0, nin = m->def.n_inputs;
    tensor in[VBS_MAX_IN] = {{0}}, want = {0};
    const float *ptr[VBS_MAX_IN];
    vbs_shape shapes[VBS_MAX_IN];
    if (nin > VBS_MAX_IN) { snprintf(why, wn, "%d graph inputs", nin); vbs_model_free(m); return 2; }
    for (int i = 0; i < nin && !rc; i++) {
        snprintf(path, sizeof path, "%s/test_data_set_0/input_%d.pb", dir, file_of[i]);
        int r = read_tensor(path, &in[i], why, wn);
        if (r == 1) { snprintf(why, wn, "missing %s", path); rc = 2; }
        else if (r) rc = 2;
        ptr[i] = in[i].data;
        shapes[i] = in[i].shape;
    }
    vbs_worker w = {0};
    char err[VBS_ERRLEN];
    if (!rc && vbs_worker_run_naive(&w, m, ptr, shapes, VBS_MODE_MEAN, 0, 0, 0, err)) {
        snprintf(why, wn, "run: %s", err);
        rc = 1;
    }
    for (int i = 0; !rc && i < m->def.n_outputs; i++) {
        snprintf(path, sizeof path, "%s/test_data_set_0/output_%d.pb", dir, i);
        int r = read_tensor(path, &want, why, wn);
        if (r) { if (r == 1) snprintf(why, wn, "missing %s", path); rc = 2; break; }
        int v = m->g.output_vals[i];
        const vbs_shape *gs = &w.plan.shapes[v];
        int same = gs->ndim == want.shape.ndim;
        for (int k = 0; same && k < gs->ndim; k++) same = gs->d[k] == want.shape.d[k];
        if (!same) {
            char a[128] = "", b[128] = "";
            for (int k = 0, p = 0; k < gs->ndim; k++) p += snprintf(a + p, sizeof a - (size_t)p, "%s%lld", k ? "x" : "", (long long)gs->d[k]);
            for (int k = 0, p = 0; k < want.shape.ndim; k++) p += snprintf(b + p, sizeof b - (size_t)p, "%s%lld", k ? "x" : "", (long long)want.shape.d[k]);
            snprintf(why, wn, "output %d has shape %s, expected %s", i, a, b);
            rc = 1;
        } else {
            const float *got = vbs_worker_value(&w, m, v);
            int64_t n = vbs_shape_numel(gs), bad = 0, worst = 0;
            double maxerr = 0;
            for (int64_t e = 0; e < n; e++) {
                double d = fabs((double)got[e] - want.data[e]);
                if (!(d <= 1e-4 + 1e-3 * fabs(want.data[e]))) { bad++; if (d > maxerr || d != d) { maxerr = d; worst = e; } }
            }
            if (bad) {
                snprintf(why, wn, "output %d: %lld of %lld values differ, max error %.3g at %lld (got %g, want %g)", i, (long long)bad,
                         (long long)n, maxerr, (long long)worst, got[worst], want.data[worst]);
                rc = 1;
            }
        }
        free(want.data);
        want.data = NULL;
    }
    vbs_worker_free(&w);
    for (int i = 0; i < nin; i++) free(in[i].data);
    vbs_model_free(m);
    return rc;
}

int main(int argc, char **argv) {
    const char *require = NULL;
    int first = 1;
    if (argc > 2 && !strcmp(argv[1], "--require")) { require = argv[2]; first = 3; }
    int pass = 0, fail = 0, skip = 0;
    char **passed = calloc((size_t)argc, sizeof(char *));
    for (int i = first; i < argc; i++) {
        char why[8192] = "";
        int r = run_case(argv[i], why, sizeof why);
        const char *name = base(argv[i]);
        if (r == 0) { printf("PASS %s\n", name); passed[pass++] = (char *)name; }
        else if (r == 1) { printf("FAIL %s: %s\n", name, why); fail++; }
        else { printf("UNSUPPORTED %s: %s\n", name, why); skip++; }
    }
    int missing = 0;
    if (require) {
        FILE *f = fopen(require, "r");
        char line[512];
        if (!f) { printf("cannot read %s\n", require); return 1; }
        while (fgets(line, sizeof line, f)) {
            line[strcspn(line, "\r\n#")] = 0;
            char *s = line;
            while (*s == ' ') s++;
            if (!*s) continue;
            int found = 0;
            for (int k = 0; k < pass && !found; k++) found = !strcmp(passed[k], s);
            if (!found) { printf("REQUIRED BUT NOT PASSING: %s\n", s); missing++; }
        }
        fclose(f);
    }
    free(passed);
    printf("%d passed, %d failed, %d skipped\n", pass, fail, skip);
    return fail || missing ? 1 : 0;
}
