/*
 * onnx.c: ONNX model -> vbseg model. Reads the ModelProto with protobuf-c
 * (code generated at build time from Debian's /usr/include/onnx/onnx.proto),
 * maps every supported node one to one, folds the constant inputs that
 * exporters emit (Resize scales/sizes, Pad pads and value, Upsample scales,
 * Constant nodes) into attributes, and makes the Conv, ConvTranspose and
 * PRelu weights and biases variational (MOPED: sigma = delta * |w|, or one
 * constant sigma, or none). The result goes through the same compiler and
 * validator as a loaded file. The card's output activation is then
 * inferred from (or checked against) the end of the compiled graph, so
 * that logits are never read as probabilities nor probabilities passed
 * through a second softmax; its channel and label counts are checked as
 * the loader checks them.
 *
 * Hostile files: ONNX's schema is recursive (Node -> Attribute -> Graph)
 * and Debian's protobuf-c 1.4.1 unpacks recursively without a depth limit,
 * so the wire format's nesting is measured first and anything deeper than
 * VBS_ONNX_MAX_DEPTH is refused before unpacking. Initializer lengths are
 * checked against their dims with overflow checks; external data must be a
 * plain relative path inside the model's folder.
 *
 * Folding budget: a file of a few KB can ask ConstantOfShape (or a chain
 * of Concat, Slice, ...) for a huge constant. Each folded tensor may hold
 * at most max(64 Ki, B) elements and all of them together at most
 * max(256 Ki, 4 B), B being the ONNX file's size in bytes (external data
 * included), and never more than 16 Mi (one) or 64 Mi (all): one
 * constant copied or reshaped from the file's own data always fits the
 * first bound (an element takes at least one byte there). Beyond it the
 * node is refused by name.
 * Transpose perms must be permutations of 0..rank-1; float constants are
 * turned into integers by saturation (NaN as 0), never by an
 * out-of-range cast.
 */
#define _DEFAULT_SOURCE /* realpath, O_NOFOLLOW */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../models/builder.h"
#include "onnx.pb-c.h"

#define VBS_ONNX_MAX_DEPTH 64
#define MAX_FILE ((size_t)1 << 31)

vbs_convert_opts vbs_convert_defaults(void) {
    vbs_convert_opts o = {VBS_SIGMA_MOPED, 0.1f, 1e-6f, 1.0f, NULL, 0};
    return o;
}

typedef struct {
    const char *file;
    char *err;
    char dir[4096];   /* the model's folder, for external data */
    char folded[1024];/* BatchNormalization layers folded, for the card */
    int64_t bytes;    /* the file's size plus external data read: sets the folding budget */
    int64_t folded_numel; /* elements folded so far */
    const char *node; /* the node being folded, for knew's refusal */
} ctx;

#define FOLD_ONE_MAX ((int64_t)1 << 24)
#define FOLD_ALL_MAX ((int64_t)1 << 26)

/* A float as an integer without UB: saturated, NaN as 0. */
static int64_t to_i64(double v) {
    if (!(v == v)) return 0;
    if (v >= 9223372036854775807.0) return INT64_MAX;
    if (v <= -9223372036854775808.0) return INT64_MIN;
    return (int64_t)v;
}

/* Is perm[0..n) a permutation of 0..n-1? */
static int is_perm(const int64_t *perm, size_t n) {
    unsigned seen = 0;
    if (n > 32) return 0;
    for (size_t k = 0; k < n; k++) {
        if (perm[k] < 0 || perm[k] >= (int64_t)n || (seen >> perm[k] & 1u)) return 0;
        seen |= 1u << perm[k];
    }
    return 1;
}

#define fail(c, st, ...) vbs_fail_file((c)->err, st, (c)->file, __VA_ARGS__)

/* ---- wire-format depth scan ------------------------------------------ */

/* Message kinds and, for each, the fields that hold messages which can
 * lead back into recursion (others are skipped unread). */
typedef enum { M_MODEL, M_GRAPH, M_NODE, M_ATTR, M_VALUEINFO, M_TYPE, M_TYPE_SEQ, M_TYPE_MAP, M_TYPE_OPT, M_FUNCTION, M_TRAINING,
               M_LEAF } msg_kind;

static msg_kind child_kind(msg_kind k, uint32_t field) {
    switch (k) {
    case M_MODEL: return field == 7 ? M_GRAPH : field == 25 ? M_FUNCTION : field == 20 ? M_TRAINING : M_LEAF;
    case M_GRAPH: return field == 1 ? M_NODE : (field == 11 || field == 12 || field == 13) ? M_VALUEINFO : M_LEAF;
    case M_NODE: return field == 5 ? M_ATTR : M_LEAF;
    case M_ATTR: return (field == 6 || field == 11) ? M_GRAPH : (field == 14 || field == 15) ? M_TYPE : M_LEAF;
    case M_VALUEINFO: return field == 2 ? M_TYPE : M_LEAF;
    case M_TYPE: return field == 4 ? M_TYPE_SEQ : field == 5 ? M_TYPE_MAP : field == 9 ? M_TYPE_OPT : M_LEAF;
    case M_TYPE_SEQ: return field == 1 ? M_TYPE : M_LEAF;
    case M_TYPE_MAP: return field == 2 ? M_TYPE : M_LEAF;
    case M_TYPE_OPT: return field == 1 ? M_TYPE : M_LEAF;
    case M_FUNCTION: return field == 7 ? M_NODE : M_LEAF;
    case M_TRAINING: return (field == 1 || field == 2) ? M_GRAPH : M_LEAF;
    default: return M_LEAF;
    }
}

static int varint(const uint8_t **p, const uint8_t *end, uint64_t *v) {
    *v = 0;
    for (int shift = 0; shift < 64 && *p < end; shift += 7) {
        uint8_t b = *(*p)++;
        *v |= (uint64_t)(b & 0x7f) << shift;
        if (!(b & 0x80)) return 1;
    }
    return 0;
}

/* 0: fine; 1: too deep; 2: malformed */
static int scan(const uint8_t *p, const uint8_t *end, msg_kind k, int depth) {
    if (depth > VBS_ONNX_MAX_DEPTH) return 1;
    while (p < end) {
        uint64_t key, v;
        if (!varint(&p, end, &key)) return 2;
        uint32_t field = (uint32_t)(key >> 3);
        switch (key & 7) {
        case 0: if (!varint(&p, end, &v)) return 2; break;
        case 1: if (end - p < 8) return 2; p += 8; break;
        case 5: if (end - p < 4) return 2; p += 4; break;
        case 2: {
            if (!varint(&p, end, &v) || v > (uint64_t)(end - p)) return 2;
            msg_kind ck = child_kind(k, field);
            if (ck != M_LEAF) {
                int r = scan(p, p + v, ck, depth + 1);
                if (r) return r;
            }
            p += v;
            break;
        }
        default: return 2; /* groups (3, 4) are not used by ONNX */
        }
    }
    return 0;
}

/* ---- constants: initializers and Constant outputs --------------------- */

typedef struct {
    const char *name;
    int dtype;                 /* ONNX: 1 float, 7 int64 */
    int ndim;
    int64_t dims[VBS_MAX_DIMS];
    int64_t numel;
    float *f;                  /* owned: float data, or int64 data converted */
    int64_t *i;                /* owned: int64 data */
    int used_as_weight;        /* emitted as a vbseg tensor */
} konst;

typedef struct { konst *k; int n, cap; } ktable;

static konst *kfind(ktable *t, const char *name) {
    for (int i = 0; i < t->n; i++)
        if (!strcmp(t->k[i].name, name)) return &t->k[i];
    return NULL;
}

static void kfree(ktable *t) {
    for (int i = 0; i < t->n; i++) { free(t->k[i].f); free(t->k[i].i); }
    free(t->k);
}

/* Reads external data: location must be a plain relative path, no "..",
 * not a symlink, inside the model's folder once every link in it is
 * resolved (a symlinked parent folder must not lead out: CVE-2026-27489's
 * bypass of ONNX's check), and a file with one link only (a hard link to a
 * file elsewhere looks like any file: CVE-2026-34446), as ONNX 1.21 rules.
 * It is opened without following a final link and checked on the open
 * file, so it cannot be swapped between the checks and the read. */
static vbs_status external(ctx *c, const Onnx__TensorProto *tp, uint8_t **out, size_t want) {
    const char *loc = NULL;
    long long off = 0, len = -1;
    for (size_t i = 0; i < tp->n_external_data; i++) {
        const char *k = tp->external_data[i]->key, *v = tp->external_data[i]->value;
        if (!k || !v) continue;
        if (!strcmp(k, "location")) loc = v;
        else if (!strcmp(k, "offset")) off = atoll(v);
        else if (!strcmp(k, "length")) len = atoll(v);
    }
    if (!loc || !loc[0]) return fail(c, VBS_ERR_FORMAT, "initializer '%s': external data without a location", tp->name);
    if (loc[0] == '/') return fail(c, VBS_ERR_FORMAT, "initializer '%s': external data location '%s' is absolute", tp->name, loc);
    if (strstr(loc, "..")) return fail(c, VBS_ERR_FORMAT, "initializer '%s': external data location '%s' contains '..'", tp->name, loc);
    if (off < 0 || (len >= 0 && (size_t)len != want))
        return fail(c, VBS_ERR_FORMAT, "initializer '%s': external data offset/length do not match its dims", tp->name);
    char path[8192];
    snprintf(path, sizeof path, "%s/%s", c->dir, loc);
    struct stat sb;
    if (lstat(path, &sb)) return fail(c, VBS_ERR_IO, "initializer '%s': external data '%s': %s", tp->name, loc, strerror(errno));
    if (S_ISLNK(sb.st_mode)) return fail(c, VBS_ERR_FORMAT, "initializer '%s': external data '%s' is a symlink", tp->name, loc);
    if (!S_ISREG(sb.st_mode) || (uint64_t)sb.st_size < (uint64_t)off + want)
        return fail(c, VBS_ERR_FORMAT, "initializer '%s': external data '%s' is shorter than its dims need", tp->name, loc);
    int fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) return fail(c, VBS_ERR_IO, "initializer '%s': external data '%s': %s", tp->name, loc, strerror(errno));
    char real[PATH_MAX], home[PATH_MAX];
    if (fstat(fd, &sb) || !S_ISREG(sb.st_mode) || (uint64_t)sb.st_size < (uint64_t)off + want) {
        close(fd);
        return fail(c, VBS_ERR_FORMAT, "initializer '%s': external data '%s' is shorter than its dims need", tp->name, loc);
    }
    if (sb.st_nlink > 1) {
        close(fd);
        return fail(c, VBS_ERR_FORMAT, "initializer '%s': external data '%s' has %llu hard links: it may be a file outside the model's folder",
                    tp->name, loc, (unsigned long long)sb.st_nlink);
    }
    size_t hl = realpath(c->dir, home) ? strlen(home) : 0;
    if (!hl || !realpath(path, real) || strncmp(real, home, hl) || (real[hl] != '/' && strcmp(home, "/"))) {
        close(fd);
        return fail(c, VBS_ERR_FORMAT, "initializer '%s': external data '%s' resolves outside the model's folder (through a link)", tp->name, loc);
    }
    FILE *f = fdopen(fd, "rb");
    if (!f) close(fd);
    uint8_t *b = malloc(want ? want : 1);
    int ok = f && b && fseek(f, off, SEEK_SET) == 0 && fread(b, 1, want, f) == want;
    if (f) fclose(f);
    if (!ok) {
        free(b);
        return fail(c, VBS_ERR_IO, "initializer '%s': cannot read external data '%s'", tp->name, loc);
    }
    *out = b;
    c->bytes += (int64_t)want;
    return VBS_OK;
}

static vbs_status add_const(ctx *c, ktable *t, const Onnx__TensorProto *tp, const char *name) {
    if (t->n == t->cap) {
        int nc = t->cap ? 2 * t->cap : 64;
        konst *k = realloc(t->k, sizeof *k * (size_t)nc);
        if (!k) return fail(c, VBS_ERR_NOMEM, "out of memory");
        t->k = k;
        t->cap = nc;
    }
    konst *k = &t->k[t->n];
    memset(k, 0, sizeof *k);
    k->name = name;
    k->dtype = tp->data_type;
    if (tp->n_dims > VBS_MAX_DIMS) return fail(c, VBS_ERR_UNSUPPORTED, "initializer '%s': %zu dims (max %d)", name, tp->n_dims, VBS_MAX_DIMS);
    k->ndim = (int)tp->n_dims;
    int64_t n = 1;
    for (int i = 0; i < k->ndim; i++) {
        k->dims[i] = tp->dims[i];
        if (tp->dims[i] < 0 || !vbs_mul_ok(n, tp->dims[i], &n) || n > ((int64_t)1 << 32))
            return fail(c, VBS_ERR_FORMAT, "initializer '%s': dim %d is %lld (negative, or the product overflows)", name, i, (long long)tp->dims[i]);
    }
    k->numel = n;
    int esz = k->dtype == ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT ? 4 : k->dtype == ONNX__TENSOR_PROTO__DATA_TYPE__INT64 ? 8
              : k->dtype == ONNX__TENSOR_PROTO__DATA_TYPE__INT32 ? 4 : k->dtype == ONNX__TENSOR_PROTO__DATA_TYPE__DOUBLE ? 8
              : k->dtype == ONNX__TENSOR_PROTO__DATA_TYPE__BOOL ? 1 : 0; /* bool: Dropout's training_mode since opset 12 */
    if (!esz) return fail(c, VBS_ERR_UNSUPPORTED, "initializer '%s': data type %d unsupported (float, double, int32, int64, bool)", name, k->dtype);
    size_t want = (size_t)n * (size_t)esz;
    uint8_t *raw = NULL, *ext = NULL;
    size_t have;
    vbs_status st;
    if (tp->has_data_location && tp->data_location == ONNX__TENSOR_PROTO__DATA_LOCATION__EXTERNAL) {
        if ((st = external(c, tp, &ext, want))) return st;
        raw = ext;
        have = want;
    } else if (tp->has_raw_data) {
        raw = tp->raw_data.data;
        have = tp->raw_data.len;
    } else {
        have = (k->dtype == 1 ? tp->n_float_data : k->dtype == 7 ? tp->n_int64_data : k->dtype == 6 || k->dtype == 9 ? tp->n_int32_data : tp->n_double_data) *
               (size_t)esz;
    }
    if (have != want) {
        free(ext);
        return fail(c, VBS_ERR_FORMAT, "initializer '%s': %zu bytes of data, its dims need %zu", name, have, want);
    }
    k->f = malloc(sizeof(float) * (size_t)(n ? n : 1));
    k->i = malloc(sizeof(int64_t) * (size_t)(n ? n : 1));
    if (!k->f || !k->i) {
        free(ext);
        return fail(c, VBS_ERR_NOMEM, "out of memory");
    }
    for (int64_t e = 0; e < n; e++) {
        double v;
        if (raw) {
            if (esz == 1) v = raw[e] != 0;
            else if (esz == 4 && k->dtype == 1) { float x; memcpy(&x, raw + 4 * e, 4); v = x; }
            else if (esz == 4) { int32_t x; memcpy(&x, raw + 4 * e, 4); v = x; }
            else if (k->dtype == 7) { int64_t x; memcpy(&x, raw + 8 * e, 8); k->i[e] = x; v = (double)x; }
            else { double x; memcpy(&x, raw + 8 * e, 8); v = x; }
        } else {
            v = k->dtype == 1 ? tp->float_data[e] : k->dtype == 7 ? (double)tp->int64_data[e] : k->dtype == 6 || k->dtype == 9 ? tp->int32_data[e] : tp->double_data[e];
            if (k->dtype == 7) k->i[e] = tp->int64_data[e];
        }
        if (k->dtype != 7) k->i[e] = to_i64(v);
        k->f[e] = (float)v;
    }
    free(ext);
    if (k->dtype == 11 || k->dtype == 6 || k->dtype == 9) k->dtype = 1; /* doubles, int32 and bools are read as floats */
    t->n++;
    return VBS_OK;
}

/* ---- constant folding of the shape arithmetic exporters emit -------------- */

/* A new constant of the given shape; data left for the caller. */
static konst *knew(ctx *c, ktable *t, const char *name, int dtype, int ndim, const int64_t *dims) {
    if (t->n == t->cap) {
        int nc = t->cap ? 2 * t->cap : 64;
        konst *k = realloc(t->k, sizeof *k * (size_t)nc);
        if (!k) { fail(c, VBS_ERR_NOMEM, "out of memory"); return NULL; }
        t->k = k;
        t->cap = nc;
    }
    konst *k = &t->k[t->n];
    memset(k, 0, sizeof *k);
    k->name = name;
    k->dtype = dtype;
    k->ndim = ndim;
    int64_t n = 1;
    for (int i = 0; i < ndim; i++) {
        k->dims[i] = dims[i];
        if (dims[i] < 0) { fail(c, VBS_ERR_FORMAT, "node '%s': constant '%s' would have dim %d = %lld", c->node ? c->node : name, name, i, (long long)dims[i]); return NULL; }
        if (!vbs_mul_ok(n, dims[i], &n)) n = INT64_MAX;
    }
    /* the folding budget (see the header) */
    int64_t b = c->bytes > ((int64_t)1 << 16) ? c->bytes : ((int64_t)1 << 16);
    int64_t one = b < FOLD_ONE_MAX ? b : FOLD_ONE_MAX, all = b < FOLD_ALL_MAX / 4 ? 4 * b : FOLD_ALL_MAX;
    if (n > one || n > all - c->folded_numel) {
        fail(c, VBS_ERR_UNSUPPORTED, "node '%s': folding its constant '%s' would take %s%lld elements, over the folding budget "
             "(%lld per tensor, %lld in all, for a file of %lld bytes)", c->node ? c->node : name, name, n == INT64_MAX ? "more than " : "",
             (long long)(n == INT64_MAX ? all : n), (long long)one, (long long)all, (long long)c->bytes);
        return NULL;
    }
    c->folded_numel += n;
    k->numel = n;
    k->f = malloc(sizeof(float) * (size_t)(n ? n : 1));
    k->i = malloc(sizeof(int64_t) * (size_t)(n ? n : 1));
    if (!k->f || !k->i) { free(k->f); free(k->i); fail(c, VBS_ERR_NOMEM, "out of memory"); return NULL; }
    t->n++;
    return k;
}

static int64_t iattr(const Onnx__NodeProto *n, const char *name, int64_t dflt);
static const Onnx__AttributeProto *find_attr(const Onnx__NodeProto *n, const char *name);

/* Folds node n if it is shape arithmetic on constants (Shape of a fixed
 * graph input included). Returns 1 if folded, 0 if not foldable, -1 on error. */
static int fold(ctx *c, ktable *t, const Onnx__GraphProto *g, const Onnx__NodeProto *n) {
    static const char *const ops[] = {"ConstantOfShape", "Concat", "Reshape", "Slice", "Transpose", "Cast", "Unsqueeze", "Squeeze",
                                      "Identity", "Shape", "Gather", NULL};
    const char *op = n->op_type;
    int which = 0;
    while (ops[which] && strcmp(ops[which], op)) which++;
    if (!ops[which] || n->n_output != 1 || n->n_input < 1) return 0;
    konst *in[8] = {0};
    if (n->n_input > 8) return 0;
    if (!strcmp(op, "Shape")) {
        /* the shape of a graph input with fixed dims */
        for (size_t i = 0; i < g->n_input; i++) {
            const Onnx__ValueInfoProto *vi = g->input[i];
            if (!vi->name || strcmp(vi->name, n->input[0]) || !vi->type || vi->type->value_case != ONNX__TYPE_PROTO__VALUE_TENSOR_TYPE ||
                !vi->type->tensor_type->shape)
                continue;
            const Onnx__TensorShapeProto *sh = vi->type->tensor_type->shape;
            int64_t d = (int64_t)sh->n_dim;
            for (size_t k = 0; k < sh->n_dim; k++)
                if (sh->dim[k]->value_case != ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_VALUE) return 0;
            konst *o = knew(c, t, n->output[0], 7, 1, &d);
            if (!o) return -1;
            for (size_t k = 0; k < sh->n_dim; k++) { o->i[k] = sh->dim[k]->dim_value; o->f[k] = (float)o->i[k]; }
            return 1;
        }
        konst *x = kfind(t, n->input[0]);
        if (!x) return 0;
        int64_t d = x->ndim;
        konst *o = knew(c, t, n->output[0], 7, 1, &d);
        if (!o) return -1;
        for (int k = 0; k < x->ndim; k++) { o->i[k] = x->dims[k]; o->f[k] = (float)x->dims[k]; }
        return 1;
    }
    for (size_t i = 0; i < n->n_input; i++) {
        if (!n->input[i][0]) continue;
        if (!(in[i] = kfind(t, n->input[i]))) return 0;
    }
    konst *x = in[0], *o = NULL;
    if (!x && strcmp(op, "Concat")) return 0;
    if (!strcmp(op, "Identity")) {
        o = knew(c, t, n->output[0], x->dtype, x->ndim, x->dims);
        if (!o) return -1;
        memcpy(o->f, x->f, sizeof(float) * (size_t)x->numel);
        memcpy(o->i, x->i, sizeof(int64_t) * (size_t)x->numel);
        return 1;
    }
    if (!strcmp(op, "Cast")) {
        int64_t to = iattr(n, "to", 1);
        if (to != 1 && to != 7 && to != 6 && to != 11) return 0;
        o = knew(c, t, n->output[0], to == 1 || to == 11 ? 1 : 7, x->ndim, x->dims);
        if (!o) return -1;
        for (int64_t e = 0; e < x->numel; e++) {
            double v = x->dtype == 7 ? (double)x->i[e] : x->f[e];
            o->f[e] = (float)v;
            o->i[e] = to_i64(v);
        }
        return 1;
    }
    if (!strcmp(op, "ConstantOfShape")) {
        if (x->ndim != 1 || x->numel > VBS_MAX_DIMS) return 0;
        const Onnx__AttributeProto *va = NULL;
        for (size_t i = 0; i < n->n_attribute; i++)
            if (n->attribute[i]->name && !strcmp(n->attribute[i]->name, "value")) va = n->attribute[i];
        double v = 0;
        int dtype = 1;
        if (va && va->t) {
            ktable tmp = {0};
            if (add_const(c, &tmp, va->t, "value")) { kfree(&tmp); return -1; }
            if (tmp.n == 1 && tmp.k[0].numel >= 1) { v = tmp.k[0].dtype == 7 ? (double)tmp.k[0].i[0] : tmp.k[0].f[0]; dtype = tmp.k[0].dtype; }
            kfree(&tmp);
        }
        o = knew(c, t, n->output[0], dtype, (int)x->numel, x->i);
        if (!o) return -1;
        for (int64_t e = 0; e < o->numel; e++) { o->f[e] = (float)v; o->i[e] = to_i64(v); }
        return 1;
    }
    if (!strcmp(op, "Concat")) {
        int64_t axis = iattr(n, "axis", 0);
        konst *a = in[0];
        if (!a || a->ndim < 1) return 0;
        if (axis < 0) axis += a->ndim;
        if (axis < 0 || axis >= a->ndim) return 0;
        int64_t dims[VBS_MAX_DIMS];
        memcpy(dims, a->dims, sizeof dims);
        dims[axis] = 0;
        for (size_t i = 0; i < n->n_input; i++) {
            if (!in[i] || in[i]->ndim != a->ndim) return 0;
            for (int k = 0; k < a->ndim; k++)
                if (k != axis && in[i]->dims[k] != a->dims[k]) return 0;
            dims[axis] += in[i]->dims[axis];
        }
        o = knew(c, t, n->output[0], a->dtype, a->ndim, dims);
        if (!o) return -1;
        int64_t outer = 1, inner = 1, pos = 0;
        for (int k = 0; k < axis; k++) outer *= dims[k];
        for (int k = (int)axis + 1; k < a->ndim; k++) inner *= dims[k];
        for (size_t i = 0; i < n->n_input; i++) {
            int64_t len = in[i]->dims[axis] * inner;
            for (int64_t q = 0; q < outer; q++)
                for (int64_t e = 0; e < len; e++) {
                    o->f[q * dims[axis] * inner + pos + e] = in[i]->f[q * len + e];
                    o->i[q * dims[axis] * inner + pos + e] = in[i]->i[q * len + e];
                }
            pos += len;
        }
        return 1;
    }
    if (!strcmp(op, "Reshape") || !strcmp(op, "Unsqueeze") || !strcmp(op, "Squeeze")) {
        int64_t dims[VBS_MAX_DIMS];
        int nd = 0;
        if (!strcmp(op, "Reshape")) {
            konst *s = in[1];
            if (!s || s->ndim != 1 || s->numel > VBS_MAX_DIMS) return 0;
            int64_t known = 1, neg = -1;
            for (int k = 0; k < s->numel; k++) {
                int64_t d = s->i[k] == 0 ? (k < x->ndim ? x->dims[k] : 0) : s->i[k];
                if (d == -1) { if (neg >= 0) return 0; neg = k; d = 1; }
                else if (d <= 0) return 0;
                dims[nd++] = d;
                if (!vbs_mul_ok(known, d, &known)) return 0;
            }
            if (neg >= 0) { if (!known || x->numel % known) return 0; dims[neg] = x->numel / known; known = x->numel; }
            if (known != x->numel) return 0;
        } else {
            /* axes: an input from opset 13, an attribute before */
            int64_t axes[VBS_MAX_DIMS];
            int na = 0;
            if (in[1]) { if (in[1]->numel > VBS_MAX_DIMS) return 0; for (int k = 0; k < in[1]->numel; k++) axes[na++] = in[1]->i[k]; }
            else {
                const Onnx__AttributeProto *aa = find_attr(n, "axes"); /* the first only: a repeated one must not overrun axes[] */
                if (aa && aa->n_ints > VBS_MAX_DIMS) return 0;
                for (size_t k = 0; aa && k < aa->n_ints; k++) axes[na++] = aa->ints[k];
            }
            if (!strcmp(op, "Unsqueeze")) {
                int out_nd = x->ndim + na, src = 0;
                if (out_nd > VBS_MAX_DIMS) return 0;
                for (int k = 0; k < out_nd; k++) {
                    int is_new = 0;
                    for (int a = 0; a < na; a++) is_new |= (axes[a] < 0 ? axes[a] + out_nd : axes[a]) == k;
                    if (!is_new && src == x->ndim) return 0; /* repeated or out-of-range axes */
                    dims[nd++] = is_new ? 1 : x->dims[src++];
                }
                if (src != x->ndim) return 0;
            } else
                for (int k = 0; k < x->ndim; k++) {
                    int drop = na == 0 && x->dims[k] == 1;
                    for (int a = 0; a < na; a++) drop |= (axes[a] < 0 ? axes[a] + x->ndim : axes[a]) == k;
                    if (!drop) dims[nd++] = x->dims[k];
                }
        }
        /* the data is copied as it is: the new shape must hold exactly x's elements (Squeeze of a dim > 1 does not) */
        int64_t same = 1;
        for (int k = 0; k < nd; k++)
            if (!vbs_mul_ok(same, dims[k], &same)) return 0;
        if (same != x->numel) return 0;
        o = knew(c, t, n->output[0], x->dtype, nd, dims);
        if (!o) return -1;
        memcpy(o->f, x->f, sizeof(float) * (size_t)x->numel);
        memcpy(o->i, x->i, sizeof(int64_t) * (size_t)x->numel);
        return 1;
    }
    if (!strcmp(op, "Transpose")) {
        int64_t perm[VBS_MAX_DIMS], dims[VBS_MAX_DIMS];
        int np = x->ndim;
        const Onnx__AttributeProto *pa = find_attr(n, "perm");
        if (pa && (pa->n_ints != (size_t)x->ndim || !is_perm(pa->ints, pa->n_ints)))
            return fail(c, VBS_ERR_FORMAT, "node '%s' (Transpose): attribute perm is not a permutation of 0..%d", c->node, x->ndim - 1), -1;
        for (int k = 0; k < np; k++) perm[k] = pa ? pa->ints[k] : x->ndim - 1 - k;
        for (int k = 0; k < np; k++) dims[k] = x->dims[perm[k]];
        o = knew(c, t, n->output[0], x->dtype, np, dims);
        if (!o) return -1;
        int64_t xs[VBS_MAX_DIMS], st = 1;
        for (int k = x->ndim - 1; k >= 0; k--) { xs[k] = st; st *= x->dims[k]; }
        for (int64_t e = 0; e < o->numel; e++) {
            int64_t r = e, src = 0;
            for (int k = np - 1; k >= 0; k--) { src += (r % dims[k]) * xs[perm[k]]; r /= dims[k]; }
            o->f[e] = x->f[src];
            o->i[e] = x->i[src];
        }
        return 1;
    }
    if (!strcmp(op, "Gather")) {
        konst *idx = in[1];
        int64_t axis = iattr(n, "axis", 0);
        if (!idx || x->ndim != 1 || axis != 0 || idx->ndim > 1) return 0;
        o = knew(c, t, n->output[0], x->dtype, idx->ndim, idx->dims);
        if (!o) return -1;
        for (int64_t e = 0; e < idx->numel; e++) {
            int64_t j = idx->i[e] < 0 ? idx->i[e] + x->numel : idx->i[e];
            if (j < 0 || j >= x->numel) return fail(c, VBS_ERR_FORMAT, "node '%s' (Gather): index out of range", c->node), -1;
            o->f[e] = x->f[j];
            o->i[e] = x->i[j];
        }
        return 1;
    }
    if (!strcmp(op, "Slice")) {
        /* opset 10+: starts, ends, axes, steps as inputs */
        konst *sts = in[1], *ens = in[2], *axs = in[3], *sps = in[4];
        if (!sts || !ens || sts->numel != ens->numel || sts->numel > x->ndim || (axs && axs->numel != sts->numel) ||
            (sps && sps->numel != sts->numel))
            return 0;
        int64_t start[VBS_MAX_DIMS], step[VBS_MAX_DIMS], dims[VBS_MAX_DIMS];
        for (int k = 0; k < x->ndim; k++) { start[k] = 0; step[k] = 1; dims[k] = x->dims[k]; }
        for (int q = 0; q < sts->numel; q++) {
            int64_t ax = axs ? axs->i[q] : q, sp = sps ? sps->i[q] : 1, d;
            if (ax < 0) ax += x->ndim;
            if (ax < 0 || ax >= x->ndim || sp == 0) return 0;
            d = x->dims[ax];
            int64_t b = sts->i[q], e = ens->i[q];
            if (b < 0) b += d;
            if (e < 0 && e > -((int64_t)1 << 62)) e += d;
            /* a step longer than the axis takes one element: clamped so that no sum below overflows */
            if (sp > d) sp = d + 1;
            if (sp < -d) sp = -d - 1;
            if (sp > 0) { b = b < 0 ? 0 : b > d ? d : b; e = e < 0 ? 0 : e > d ? d : e; dims[ax] = e > b ? (e - b - 1) / sp + 1 : 0; }
            else { b = b < 0 ? -1 : b > d - 1 ? d - 1 : b; e = e < -1 ? -1 : e > d - 1 ? d - 1 : e; dims[ax] = b > e ? (b - e - 1) / (-sp) + 1 : 0; }
            start[ax] = b;
            step[ax] = sp;
        }
        o = knew(c, t, n->output[0], x->dtype, x->ndim, dims);
        if (!o) return -1;
        int64_t xs[VBS_MAX_DIMS], stv = 1;
        for (int k = x->ndim - 1; k >= 0; k--) { xs[k] = stv; stv *= x->dims[k]; }
        for (int64_t e = 0; e < o->numel; e++) {
            int64_t r = e, src = 0;
            for (int k = x->ndim - 1; k >= 0; k--) { src += (start[k] + (r % dims[k]) * step[k]) * xs[k]; r /= dims[k]; }
            o->f[e] = x->f[src];
            o->i[e] = x->i[src];
        }
        return 1;
    }
    return 0;
}

static int64_t iattr(const Onnx__NodeProto *n, const char *name, int64_t dflt) {
    for (size_t i = 0; i < n->n_attribute; i++)
        if (n->attribute[i]->name && !strcmp(n->attribute[i]->name, name) && n->attribute[i]->type == ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INT)
            return n->attribute[i]->i;
    return dflt;
}

/* ---- attributes --------------------------------------------------------- */

static vbs_status conv_attr(ctx *c, vbs_builder *b, const Onnx__NodeProto *n, const Onnx__AttributeProto *a, vbs_attr *out) {
    memset(out, 0, sizeof *out);
    out->name = (char *)vbs_b_str(b, a->name);
    switch (a->type) {
    case ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INT: out->type = VBS_ATTR_INT; out->i = a->i; break;
    case ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__FLOAT: out->type = VBS_ATTR_FLOAT; out->f = a->f; break;
    case ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__STRING: {
        char *s = vbs_b_alloc(b, a->s.len + 1);
        if (s && a->s.len) memcpy(s, a->s.data, a->s.len); /* an empty string's data is NULL */
        out->type = VBS_ATTR_STRING;
        out->s = s;
        break;
    }
    case ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INTS:
        out->type = VBS_ATTR_INTS;
        out->n = (int)a->n_ints;
        out->ints = vbs_b_alloc(b, sizeof(int64_t) * (a->n_ints + 1));
        if (out->ints && a->n_ints) memcpy(out->ints, a->ints, sizeof(int64_t) * a->n_ints);
        break;
    case ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__FLOATS:
        out->type = VBS_ATTR_FLOATS;
        out->n = (int)a->n_floats;
        out->floats = vbs_b_alloc(b, sizeof(float) * (a->n_floats + 1));
        if (out->floats && a->n_floats) memcpy(out->floats, a->floats, sizeof(float) * a->n_floats);
        break;
    default:
        return fail(c, VBS_ERR_UNSUPPORTED, "node '%s' (%s): attribute '%s' has an unsupported type (%d)", n->name ? n->name : "",
                    n->op_type, a->name, (int)a->type);
    }
    if (a->n_ints > (1u << 16) || a->n_floats > (1u << 16))
        return fail(c, VBS_ERR_FORMAT, "node '%s' (%s): attribute '%s' is too long", n->name ? n->name : "", n->op_type, a->name);
    return VBS_OK;
}

static const Onnx__AttributeProto *find_attr(const Onnx__NodeProto *n, const char *name) {
    for (size_t i = 0; i < n->n_attribute; i++)
        if (n->attribute[i]->name && !strcmp(n->attribute[i]->name, name)) return n->attribute[i];
    return NULL;
}

/* ---- the conversion ------------------------------------------------------ */

static int is_supported(const char *op) {
    static const char *const ops[] = {"Conv", "ConvTranspose", "MaxPool", "AveragePool", "GlobalAveragePool", "BatchNormalization",
                                      "InstanceNormalization", "Relu", "LeakyRelu", "PRelu", "Sigmoid", "Softmax", "Softplus", "Add",
                                      "Mul", "Concat", "Resize", "Upsample", "Pad", "Identity", "Dropout", "Constant", "Transpose", NULL};
    for (const char *const *o = ops; *o; o++)
        if (!strcmp(*o, op)) return 1;
    return 0;
}

/* Is value `name` read by some node or a graph output (beyond node `self`)? */
static int used(const Onnx__GraphProto *g, const char *name, const Onnx__NodeProto *self) {
    if (!name || !name[0]) return 0;
    for (size_t i = 0; i < g->n_node; i++) {
        if (g->node[i] == self) continue;
        for (size_t k = 0; k < g->node[i]->n_input; k++)
            if (g->node[i]->input[k] && !strcmp(g->node[i]->input[k], name)) return 1;
    }
    for (size_t i = 0; i < g->n_output; i++)
        if (g->output[i]->name && !strcmp(g->output[i]->name, name)) return 1;
    return 0;
}

static int64_t opset_of(const Onnx__ModelProto *m) {
    int64_t v = 0;
    for (size_t i = 0; i < m->n_opset_import; i++) {
        const char *d = m->opset_import[i]->domain;
        if (!d || !d[0] || !strcmp(d, "ai.onnx")) v = m->opset_import[i]->version;
    }
    return v;
}

/* Emits initializer `name` as a vbseg tensor (variational for weights of
 * Conv, ConvTranspose and PRelu when asked) unless already emitted. */
static vbs_status emit_weight(ctx *c, vbs_builder *b, ktable *t, konst *k, int variational, const vbs_convert_opts *o) {
    if (k->used_as_weight) return VBS_OK;
    if (k->dtype != ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT)
        return fail(c, VBS_ERR_UNSUPPORTED, "initializer '%s': a weight must be float", k->name);
    if (k->numel == 0) return fail(c, VBS_ERR_UNSUPPORTED, "initializer '%s': an empty weight", k->name);
    int64_t dims[VBS_MAX_DIMS];
    int ndim = k->ndim;
    memcpy(dims, k->dims, sizeof dims);
    if (ndim == 0) { ndim = 1; dims[0] = 1; } /* scalars as 1-element tensors */
    for (int i = 0; i < ndim; i++)
        if (dims[i] <= 0) return fail(c, VBS_ERR_UNSUPPORTED, "initializer '%s': dim %d is %lld, must be > 0", k->name, i, (long long)dims[i]);
    if (variational && o->sigma != VBS_SIGMA_NONE) {
        float *sg = malloc(sizeof(float) * (size_t)k->numel);
        if (!sg) return fail(c, VBS_ERR_NOMEM, "out of memory");
        for (int64_t e = 0; e < k->numel; e++) {
            float s = o->sigma == VBS_SIGMA_MOPED ? o->value * fabsf(k->f[e]) : o->value;
            sg[e] = s > o->sigma_floor ? s : o->sigma_floor;
        }
        vbs_b_variational_from(b, k->name, ndim, dims, k->f, sg, o->prior_sigma);
        free(sg);
    } else {
        vbs_b_tensor(b, k->name, ndim, dims, k->f);
    }
    k->used_as_weight = 1;
    (void)t;
    return VBS_OK;
}

typedef struct { int n; const char *const *names; const Onnx__TensorProto *const *values; } bindings;

/* Deep copy of a caller's card into the model under construction. */
static void copy_card(vbs_builder *b, const vbs_card *src, vbs_card *dst) {
    *dst = *src;
    const char **ch = vbs_b_alloc(b, sizeof(char *) * (size_t)(src->n_channels + 1));
    for (int i = 0; ch && i < src->n_channels; i++) ch[i] = vbs_b_str(b, src->channels[i]);
    dst->channels = ch;
    int64_t *patch = vbs_b_alloc(b, sizeof(int64_t) * 4);
    if (patch && src->n_patch > 0 && src->n_patch <= 3) memcpy(patch, src->patch, sizeof(int64_t) * (size_t)src->n_patch);
    dst->patch = patch;
    dst->n_patch = src->n_patch <= 3 ? src->n_patch : 0;
    vbs_label *l = vbs_b_alloc(b, sizeof(vbs_label) * (size_t)(src->n_labels + 1));
    for (int i = 0; l && i < src->n_labels; i++) { l[i].value = src->labels[i].value; l[i].name = vbs_b_str(b, src->labels[i].name); }
    dst->labels = l;
    vbs_metric *mt = vbs_b_alloc(b, sizeof(vbs_metric) * (size_t)(src->n_metrics + 1));
    for (int i = 0; mt && i < src->n_metrics; i++) { mt[i].name = vbs_b_str(b, src->metrics[i].name); mt[i].value = src->metrics[i].value; }
    dst->metrics = mt;
    vbs_kv *kv = vbs_b_alloc(b, sizeof(vbs_kv) * (size_t)(src->n_extra + 1));
    for (int i = 0; kv && i < src->n_extra; i++) { kv[i].key = vbs_b_str(b, src->extra[i].key); kv[i].value = vbs_b_str(b, src->extra[i].value); }
    dst->extra = kv;
    dst->training_data = vbs_b_str(b, src->training_data);
    dst->description = vbs_b_str(b, src->description);
}

/* protobuf-c leaves an absent optional string NULL: refuse a graph whose
 * required names are missing, so that nothing below meets a NULL */
static vbs_status check_names(ctx *c, const Onnx__GraphProto *g) {
    for (size_t i = 0; i < g->n_node; i++) {
        const Onnx__NodeProto *n = g->node[i];
        if (!n->op_type || !n->op_type[0]) return fail(c, VBS_ERR_FORMAT, "node %zu has no op_type", i);
        for (size_t k = 0; k < n->n_attribute; k++)
            if (!n->attribute[k]->name || !n->attribute[k]->name[0])
                return fail(c, VBS_ERR_FORMAT, "node %zu (%s): attribute %zu has no name", i, n->op_type, k);
        if (!n->n_output)
            return fail(c, VBS_ERR_FORMAT, "node %zu ('%s', %s) has no outputs", i, n->name ? n->name : "", n->op_type);
        for (size_t k = 0; k < n->n_output; k++)
            if (!n->output[k][0] && k == 0) return fail(c, VBS_ERR_FORMAT, "node %zu (%s) has an empty output name", i, n->op_type);
    }
    for (size_t i = 0; i < g->n_input; i++)
        if (!g->input[i]->name || !g->input[i]->name[0]) return fail(c, VBS_ERR_FORMAT, "graph input %zu has no name", i);
    if (!g->n_output) return fail(c, VBS_ERR_FORMAT, "graph '%s' has no outputs", g->name ? g->name : "");
    for (size_t i = 0; i < g->n_output; i++)
        if (!g->output[i]->name || !g->output[i]->name[0]) return fail(c, VBS_ERR_FORMAT, "graph output %zu has no name", i);
    for (size_t i = 0; i < g->n_initializer; i++)
        if (!g->initializer[i]->name || !g->initializer[i]->name[0]) return fail(c, VBS_ERR_FORMAT, "initializer %zu has no name", i);
    return VBS_OK;
}

static vbs_status convert_graph(ctx *c, const Onnx__ModelProto *mp, const vbs_convert_opts *o, const bindings *bind, vbs_builder *b) {
    const Onnx__GraphProto *g = mp->graph;
    if (!g) return fail(c, VBS_ERR_FORMAT, "no graph");
    vbs_status stn = check_names(c, g);
    if (stn) return stn;
    int64_t opset = opset_of(mp);
    vbs_b_set_opset(b, (int)(opset ? opset : 13));
    ktable t = {0};
    vbs_status st = VBS_OK;
    for (size_t i = 0; i < g->n_initializer && !st; i++) {
        const Onnx__TensorProto *tp = g->initializer[i];
        if (!tp->name || !tp->name[0]) st = fail(c, VBS_ERR_FORMAT, "initializer %zu has no name", i);
        else st = add_const(c, &t, tp, tp->name);
    }
    if (g->n_sparse_initializer && !st) st = fail(c, VBS_ERR_UNSUPPORTED, "sparse initializers are unsupported");
    /* bound graph inputs become constants where they feed shape operands */
    for (int i = 0; bind && i < bind->n && !st; i++) {
        int shape_operand = 0;
        for (size_t ni = 0; ni < g->n_node && !shape_operand; ni++) {
            const Onnx__NodeProto *n = g->node[ni];
            int first = !strcmp(n->op_type, "Resize") || !strcmp(n->op_type, "Upsample") || !strcmp(n->op_type, "Pad") ? 1 : INT_MAX;
            for (size_t k = (size_t)(first < (int)n->n_input ? first : (int)n->n_input); k < n->n_input; k++)
                if (n->input[k] && !strcmp(n->input[k], bind->names[i])) shape_operand = 1;
        }
        if (shape_operand && !kfind(&t, bind->names[i])) st = add_const(c, &t, bind->values[i], bind->names[i]);
    }
    /* graph inputs: those that are not initializers */
    for (size_t i = 0; i < g->n_input && !st; i++) {
        const Onnx__ValueInfoProto *vi = g->input[i];
        if (!vi->name || kfind(&t, vi->name)) continue;
        const Onnx__TypeProto *ty = vi->type;
        if (!ty || ty->value_case != ONNX__TYPE_PROTO__VALUE_TENSOR_TYPE || !ty->tensor_type)
            { st = fail(c, VBS_ERR_UNSUPPORTED, "graph input '%s' is not a tensor", vi->name); break; }
        if (ty->tensor_type->elem_type != ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT)
            { st = fail(c, VBS_ERR_UNSUPPORTED, "graph input '%s' has element type %d (float only)", vi->name, (int)ty->tensor_type->elem_type); break; }
        const Onnx__TensorShapeProto *sh = ty->tensor_type->shape;
        if (!sh) { st = fail(c, VBS_ERR_UNSUPPORTED, "graph input '%s' has no shape (dynamic rank)", vi->name); break; }
        if (sh->n_dim > VBS_MAX_DIMS) { st = fail(c, VBS_ERR_UNSUPPORTED, "graph input '%s' has %zu dims", vi->name, sh->n_dim); break; }
        int64_t dims[VBS_MAX_DIMS];
        const char *params[VBS_MAX_DIMS];
        for (size_t k = 0; k < sh->n_dim; k++) {
            const Onnx__TensorShapeProto__Dimension *d = sh->dim[k];
            if (d->value_case == ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_VALUE && d->dim_value > 0) { dims[k] = d->dim_value; params[k] = NULL; }
            else { dims[k] = -1; params[k] = d->value_case == ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_PARAM && d->dim_param[0] ? d->dim_param : "?"; }
        }
        vbs_b_input(b, vi->name, (int)sh->n_dim, dims, params);
    }
    /* BatchNormalization folded into the Conv before it (deterministic
     * weights only: exact there, while a variational weight would change
     * its distribution's parametrisation): W' = k W, B' = k (B - mean) + beta,
     * k = scale / sqrt(var + eps) per output channel. */
    const Onnx__NodeProto **skip = calloc(g->n_node + 1, sizeof *skip), **fold_conv = calloc(g->n_node + 1, sizeof *fold_conv);
    const char **fold_out = calloc(g->n_node + 1, sizeof *fold_out), **fold_bias = calloc(g->n_node + 1, sizeof *fold_bias);
    char *folded = c->folded;
    size_t folded_size = sizeof c->folded;
    int nfold = 0;
    if (!skip || !fold_conv || !fold_out || !fold_bias) st = fail(c, VBS_ERR_NOMEM, "out of memory");
    for (size_t ni = 0; ni < g->n_node && !st && o->sigma == VBS_SIGMA_NONE && !o->keep_batchnorm; ni++) {
        const Onnx__NodeProto *bn = g->node[ni];
        if (strcmp(bn->op_type, "BatchNormalization") || bn->n_input != 5 || (bn->n_output > 1 && used(g, bn->output[1], bn))) continue;
        const Onnx__NodeProto *cv = NULL;
        for (size_t k = 0; k < g->n_node; k++)
            for (size_t q = 0; q < g->node[k]->n_output; q++)
                if (!strcmp(g->node[k]->output[q], bn->input[0])) cv = g->node[k];
        if (!cv || strcmp(cv->op_type, "Conv") || cv->n_input < 2 || cv->n_output != 1) continue;
        /* the conv output must feed this BN only, and not be a graph output */
        int readers = 0;
        for (size_t k = 0; k < g->n_node; k++)
            for (size_t q = 0; q < g->node[k]->n_input; q++) readers += !strcmp(g->node[k]->input[q], cv->output[0]);
        for (size_t k = 0; k < g->n_output; k++) readers += 2 * !strcmp(g->output[k]->name, cv->output[0]);
        konst *w = kfind(&t, cv->input[1]), *bb = cv->n_input > 2 && cv->input[2][0] ? kfind(&t, cv->input[2]) : NULL;
        konst *sc = kfind(&t, bn->input[1]), *be = kfind(&t, bn->input[2]), *mu = kfind(&t, bn->input[3]), *va = kfind(&t, bn->input[4]);
        if (readers != 1 || !w || !sc || !be || !mu || !va || w->ndim < 3 || (cv->n_input > 2 && cv->input[2][0] && !bb)) continue;
        int64_t m = w->dims[0], per = w->numel / (m ? m : 1);
        if (sc->numel != m || be->numel != m || mu->numel != m || va->numel != m || (bb && bb->numel != m)) continue;
        /* weights shared with another node cannot be rewritten */
        int shared = 0;
        for (size_t k = 0; k < g->n_node; k++)
            for (size_t q = 0; q < g->node[k]->n_input; q++)
                shared += g->node[k] != cv && (!strcmp(g->node[k]->input[q], cv->input[1]) || (bb && !strcmp(g->node[k]->input[q], cv->input[2])));
        if (shared) continue;
        const Onnx__AttributeProto *ea = find_attr(bn, "epsilon");
        double eps = ea ? ea->f : 1e-5;
        /* a fresh bias constant named after the BN output */
        int64_t bdim = m;
        konst *nb = knew(c, &t, "", 1, 1, &bdim);
        if (!nb) { st = VBS_ERR_NOMEM; break; }
        w = kfind(&t, cv->input[1]); /* knew may have moved the table */
        bb = cv->n_input > 2 && cv->input[2][0] ? kfind(&t, cv->input[2]) : NULL;
        sc = kfind(&t, bn->input[1]); be = kfind(&t, bn->input[2]); mu = kfind(&t, bn->input[3]); va = kfind(&t, bn->input[4]);
        nb = &t.k[t.n - 1];
        for (int64_t oc = 0; oc < m; oc++) {
            double k = sc->f[oc] / sqrt((double)va->f[oc] + eps);
            for (int64_t e = 0; e < per; e++) w->f[oc * per + e] = (float)(w->f[oc * per + e] * k);
            nb->f[oc] = (float)(k * ((bb ? bb->f[oc] : 0.0) - mu->f[oc]) + be->f[oc]);
        }
        /* the Conv now writes the BN's output, with the folded bias; the
         * protobuf stays untouched (its strings belong to protobuf-c) */
        skip[ni] = bn;
        char bname[600];
        snprintf(bname, sizeof bname, "%s.folded_bias", bn->output[0]);
        nb->name = vbs_b_str(b, bname); /* lives in the model's arena */
        fold_conv[ni] = cv;
        fold_out[ni] = bn->output[0];
        fold_bias[ni] = nb->name;
        if (nfold < 8) {
            size_t l = strlen(folded);
            snprintf(folded + l, folded_size - l, "%s%s into %s", l ? ", " : "", bn->name && bn->name[0] ? bn->name : bn->output[0],
                     cv->name && cv->name[0] ? cv->name : cv->output[0]);
        }
        nfold++;
    }
    if (nfold > 8) {
        size_t l = strlen(folded);
        snprintf(folded + l, folded_size - l, " and %d more", nfold - 8);
    }
    /* nodes */
    for (size_t ni = 0; ni < g->n_node && !st; ni++) {
        if (skip && skip[ni]) continue;
        const Onnx__NodeProto *n = g->node[ni];
        const char *op = n->op_type ? n->op_type : "";
        char nname[256];
        snprintf(nname, sizeof nname, "%s", n->name && n->name[0] ? n->name : (n->n_output ? n->output[0] : "?"));
        if (n->domain && n->domain[0] && strcmp(n->domain, "ai.onnx")) {
            st = fail(c, VBS_ERR_UNSUPPORTED, "node '%s' (%s): domain '%s' unsupported", nname, op, n->domain);
            break;
        }
        c->node = nname;
        int folded = fold(c, &t, g, n);
        c->node = NULL;
        if (folded < 0) { st = VBS_ERR_FORMAT; if (!c->err[0]) st = fail(c, VBS_ERR_FORMAT, "node '%s' (%s): cannot fold", nname, op); break; }
        if (folded) continue; /* shape arithmetic on constants: evaluated here, not a runtime node */
        if (!is_supported(op)) { st = fail(c, VBS_ERR_UNSUPPORTED, "node '%s': op '%s' is not supported", nname, op); break; }
        if (!strcmp(op, "Constant")) {
            const Onnx__AttributeProto *v = find_attr(n, "value");
            if (!v || !v->t || n->n_output != 1) {
                /* value_float(s)/value_int(s) as a tensor */
                Onnx__TensorProto tp = ONNX__TENSOR_PROTO__INIT;
                const Onnx__AttributeProto *a;
                int64_t one = 1;
                if ((a = find_attr(n, "value_float"))) { tp.data_type = 1; tp.n_float_data = 1; tp.float_data = (float *)&a->f; }
                else if ((a = find_attr(n, "value_floats"))) { tp.data_type = 1; tp.n_float_data = a->n_floats; tp.float_data = a->floats; one = (int64_t)a->n_floats; tp.n_dims = 1; }
                else if ((a = find_attr(n, "value_int"))) { tp.data_type = 7; tp.n_int64_data = 1; tp.int64_data = (int64_t *)&a->i; }
                else if ((a = find_attr(n, "value_ints"))) { tp.data_type = 7; tp.n_int64_data = a->n_ints; tp.int64_data = a->ints; one = (int64_t)a->n_ints; tp.n_dims = 1; }
                else { st = fail(c, VBS_ERR_UNSUPPORTED, "node '%s' (Constant): only tensor, float(s) and int(s) values are supported", nname); break; }
                tp.has_data_type = 1;
                tp.dims = &one;
                if (n->n_output != 1) { st = fail(c, VBS_ERR_FORMAT, "node '%s' (Constant): needs one output", nname); break; }
                st = add_const(c, &t, &tp, n->output[0]);
            } else st = add_const(c, &t, v->t, n->output[0]);
            continue;
        }
        /* attributes, copied; some ops take constant inputs as attributes */
        vbs_attr attrs[40];
        int na = 0;
        for (size_t k = 0; k < n->n_attribute && !st; k++) {
            if (na == 38) { st = fail(c, VBS_ERR_UNSUPPORTED, "node '%s' (%s): too many attributes", nname, op); break; }
            st = conv_attr(c, b, n, n->attribute[k], &attrs[na++]);
        }
        if (st) break;
        const Onnx__AttributeProto *perm = !strcmp(op, "Transpose") ? find_attr(n, "perm") : NULL;
        if (perm && !is_perm(perm->ints, perm->n_ints)) {
            st = fail(c, VBS_ERR_FORMAT, "node '%s' (Transpose): attribute perm is not a permutation of 0..%d", nname, (int)perm->n_ints - 1);
            break;
        }
        const char *ins[VBS_MAX_IN];
        int nin = 0;
        const char *vop = op;
        int n_data_in = (int)n->n_input;
        if (!strcmp(op, "Resize") || !strcmp(op, "Upsample")) {
            /* data, then (opset 11+) roi, scales, sizes; Upsample 9 and Resize 10: data, scales */
            int si = !strcmp(op, "Resize") && opset >= 11 ? 2 : 1, zi = si + 1;
            konst *sc = (int)n->n_input > si && n->input[si][0] ? kfind(&t, n->input[si]) : NULL;
            konst *sz = (int)n->n_input > zi && n->input[zi][0] ? kfind(&t, n->input[zi]) : NULL;
            if (((int)n->n_input > si && n->input[si][0] && !sc) || ((int)n->n_input > zi && n->input[zi][0] && !sz)) {
                st = fail(c, VBS_ERR_UNSUPPORTED, "node '%s' (%s): scales and sizes must be constants (dynamic shapes are unsupported)", nname, op);
                break;
            }
            if (sc && sc->numel > 0) {
                if (sc->numel > VBS_MAX_DIMS) { st = fail(c, VBS_ERR_UNSUPPORTED, "node '%s' (%s): too many scales", nname, op); break; }
                attrs[na].name = (char *)vbs_b_str(b, "scales");
                attrs[na].type = VBS_ATTR_FLOATS;
                attrs[na].n = (int)sc->numel;
                attrs[na].floats = vbs_b_alloc(b, sizeof(float) * (size_t)sc->numel);
                if (attrs[na].floats) memcpy(attrs[na].floats, sc->f, sizeof(float) * (size_t)sc->numel);
                na++;
            } else if (sz && sz->numel > 0) {
                if (sz->numel > VBS_MAX_DIMS) { st = fail(c, VBS_ERR_UNSUPPORTED, "node '%s' (%s): too many sizes", nname, op); break; }
                attrs[na++] = vbs_b_ints(b, "sizes", (int)sz->numel, sz->i);
            }
            if (!strcmp(op, "Upsample")) {
                /* Upsample: asymmetric coordinates, nearest by floor; its mode is nearest or linear */
                int have_scales_attr = 0;
                for (int k = 0; k < na; k++) have_scales_attr |= !strcmp(attrs[k].name, "scales");
                if (!have_scales_attr) { st = fail(c, VBS_ERR_UNSUPPORTED, "node '%s' (Upsample): no scales", nname); break; }
                attrs[na++] = vbs_b_string(b, "coordinate_transformation_mode", "asymmetric");
                attrs[na++] = vbs_b_string(b, "nearest_mode", "floor");
                vop = "Resize";
            }
            n_data_in = 1;
        } else if (!strcmp(op, "Pad") && opset >= 11) {
            konst *pd = n->n_input > 1 && n->input[1][0] ? kfind(&t, n->input[1]) : NULL;
            konst *cv = n->n_input > 2 && n->input[2][0] ? kfind(&t, n->input[2]) : NULL;
            if (!pd || (n->n_input > 2 && n->input[2][0] && !cv) || (n->n_input > 3 && n->input[3][0])) {
                st = fail(c, VBS_ERR_UNSUPPORTED, "node '%s' (Pad): pads (and constant_value) must be constants, and axes are unsupported", nname);
                break;
            }
            if (pd->numel > 2 * VBS_MAX_DIMS) { st = fail(c, VBS_ERR_UNSUPPORTED, "node '%s' (Pad): too many pads", nname); break; }
            attrs[na++] = vbs_b_ints(b, "pads", (int)pd->numel, pd->i);
            if (cv && cv->numel) attrs[na++] = vbs_b_float(b, "value", cv->f[0]);
            n_data_in = 1;
        } else if (!strcmp(op, "Dropout")) {
            /* MC dropout keeps the ratio: an attribute before opset 12 (copied above), a constant input since;
             * training_mode is not kept: the run's mode decides (dropout.c) */
            konst *r = opset >= 12 && n->n_input > 1 && n->input[1][0] ? kfind(&t, n->input[1]) : NULL;
            if (opset >= 12 && n->n_input > 1 && n->input[1][0] && (!r || r->numel != 1)) {
                st = fail(c, VBS_ERR_UNSUPPORTED, "node '%s' (Dropout): the ratio must be a constant scalar", nname);
                break;
            }
            if (r) attrs[na++] = vbs_b_float(b, "ratio", r->f[0]);
            n_data_in = 1;
        } else if (!strcmp(op, "Softmax") && opset < 13) {
            /* opset < 13 flattens at axis (default 1): the same as one axis only when it is the last */
            const Onnx__AttributeProto *ax = find_attr(n, "axis");
            int64_t axis = ax ? ax->i : 1;
            int na2 = 0;
            for (int k = 0; k < na; k++)
                if (strcmp(attrs[k].name, "axis")) attrs[na2++] = attrs[k];
            na = na2;
            attrs[na++] = vbs_b_int(b, "axis", axis);
            attrs[na++] = vbs_b_int(b, "flatten", 1); /* vbseg's attribute for the pre-13 semantics */
        }
        if (n_data_in > (int)n->n_input) n_data_in = (int)n->n_input; /* a Resize, Pad or Dropout without inputs: none to read */
        if (n_data_in > VBS_MAX_IN) { st = fail(c, VBS_ERR_UNSUPPORTED, "node '%s' (%s): %d inputs", nname, op, n_data_in); break; }
        const char *bias_override = NULL, *out_override = NULL;
        for (size_t q = 0; fold_conv && q < g->n_node; q++)
            if (fold_conv[q] == n) { bias_override = fold_bias[q]; out_override = fold_out[q]; }
        if (bias_override) n_data_in = 3;
        for (int k = 0; k < n_data_in; k++) {
            const char *in = k == 2 && bias_override ? bias_override : n->input[k];
            konst *kc = in && in[0] ? kfind(&t, in) : NULL;
            if (kc) {
                int var = (k >= 1 && (!strcmp(op, "Conv") || !strcmp(op, "ConvTranspose"))) || (k == 1 && !strcmp(op, "PRelu"));
                if ((st = emit_weight(c, b, &t, kc, var, o))) break;
            }
            ins[nin++] = in;
        }
        if (st) break;
        /* outputs: drop trailing ones nobody reads (Dropout mask, MaxPool indices, BN statistics) */
        int nout = (int)n->n_output;
        while (nout > 1 && !used(g, n->output[nout - 1], n)) nout--;
        if (nout > 2) { st = fail(c, VBS_ERR_UNSUPPORTED, "node '%s' (%s): %d outputs in use", nname, op, nout); break; }
        const char *outs[2] = {out_override ? out_override : n->output[0], nout > 1 ? n->output[1] : NULL};
        vbs_b_node_raw(b, vop, nname, nin, ins, nout, outs, na, attrs);
    }
    free(skip);
    free(fold_conv);
    free(fold_out);
    free(fold_bias);
    for (size_t i = 0; i < g->n_output && !st; i++) {
        const char *name = g->output[i]->name;
        konst *k = name ? kfind(&t, name) : NULL;
        if (k) { st = fail(c, VBS_ERR_UNSUPPORTED, "graph output '%s' is a constant", name); break; }
        vbs_b_output(b, name ? name : "");
    }
    kfree(&t);
    return st;
}

/* ---- the output activation ------------------------------------------------ */

static const char *act_word(vbs_output_act a) { return a == VBS_ACT_SIGMOID ? "sigmoid" : a == VBS_ACT_NONE ? "none" : "softmax"; }

/* Sets the card's activation of a converted model: the card's own, checked
 * against the graph's end, or (VBS_ACT_AUTO) inferred from it; records which
 * in the extra slot `src` (spare room in the card's extra array); and
 * restores the channel and label counts held back while the graph compiled
 * and checks them as the loader does. */
static vbs_status finish_card(vbs_model *m, const char *path, vbs_output_act want, int n_channels, int n_labels, vbs_kv *src) {
    vbs_card *card = &m->def.card;
    card->n_channels = n_channels;
    card->n_labels = n_labels;
    if (!m->def.n_outputs || !m->out_shapes) return vbs_model_check_card(m, path);
    char what[600], note[800];
    vbs_tail_kind tail = vbs_output_tail(m, NULL, what, sizeof what);
    const vbs_io_def *o = &m->out_shapes[0];
    int64_t k = o->ndim >= 2 ? o->dims[1] : -1; /* -1: not fixed */
    vbs_output_act fit = tail != VBS_TAIL_LOGITS ? VBS_ACT_NONE : k == 1 ? VBS_ACT_SIGMOID : VBS_ACT_SOFTMAX;
    if (want == VBS_ACT_AUTO) {
        card->output_activation = fit;
        snprintf(note, sizeof note, "inferred: the graph ends in %s", what);
    } else {
        if (want != VBS_ACT_NONE && tail != VBS_TAIL_LOGITS)
            return vbs_fail(m->err, VBS_ERR_ARG, "%s: the model card's output_activation is %s but the graph already ends in %s: its probabilities "
                            "would pass through %s again; write \"output_activation\": \"none\" (the graph outputs "
                            "probabilities) or leave it out",
                            path, act_word(want), what, act_word(want));
        if (want == VBS_ACT_NONE && tail == VBS_TAIL_LOGITS)
            return vbs_fail(m->err, VBS_ERR_ARG, "%s: the model card's output_activation is none (the graph outputs probabilities) but the graph "
                            "ends in %s, which are not probabilities; write \"output_activation\": \"%s\" or leave it out",
                            path, what, act_word(fit));
        if (want == VBS_ACT_SOFTMAX && k == 1)
            return vbs_fail(m->err, VBS_ERR_ARG, "%s: the model card's output_activation is softmax but output '%s' has 1 channel, where a softmax "
                            "is 1 everywhere; write \"output_activation\": \"sigmoid\" or leave it out",
                            path, o->name);
        card->output_activation = want;
        snprintf(note, sizeof note, "the card; the graph ends in %s", what);
    }
    if (k > 1 && tail == VBS_TAIL_SIGMOID) {
        /* no card value reads K independent probabilities; say so now rather than at the first run */
        size_t l = strlen(note);
        snprintf(note + l, sizeof note - l, "; its %lld channels are read as class probabilities, which must sum to 1 in "
                 "Monte-Carlo runs (export without the final Sigmoid and convert with output_activation sigmoid)", (long long)k);
    }
    src->key = vbs_arena_strdup(&m->def.arena, "output_activation_source");
    src->value = vbs_arena_strdup(&m->def.arena, note);
    if (!src->key || !src->value) return vbs_fail_file(m->err, VBS_ERR_NOMEM, path, "out of memory");
    card->n_extra++;
    return vbs_model_check_card(m, path);
}

vbs_status vbs_convert_onnx_bound(const char *path, const vbs_convert_opts *opts, int n_bind, const char *const *names,
                                  const Onnx__TensorProto *const *values, vbs_model **out);

vbs_status vbs_convert_onnx(const char *path, const vbs_convert_opts *opts, vbs_model **out) {
    return vbs_convert_onnx_bound(path, opts, 0, NULL, NULL, out);
}

/* As vbs_convert_onnx; graph inputs named in names[] that feed the shape
 * operands of Resize, Upsample or Pad are frozen to values[] (the ONNX
 * test cases pass scales and sizes as inputs). */
vbs_status vbs_convert_onnx_bound(const char *path, const vbs_convert_opts *opts, int n_bind, const char *const *names,
                                  const Onnx__TensorProto *const *values, vbs_model **out) {
    vbs_convert_opts o = opts ? *opts : vbs_convert_defaults();
    vbs_model *m = vbs_model_alloc();
    *out = m;
    if (!m) return VBS_ERR_NOMEM;
    ctx cc = {path, m->err, "", "", 0, 0, NULL}, *c = &cc;
    if (!path) return vbs_fail(m->err, VBS_ERR_ARG, "vbs_convert_onnx: NULL path");
    if (!(o.value >= 0) || !(o.sigma_floor > 0) || !(o.prior_sigma > 0) || o.value > 1e6f)
        return fail(c, VBS_ERR_ARG, "invalid sigma initialisation");
    snprintf(c->dir, sizeof c->dir, "%s", path);
    char *slash = strrchr(c->dir, '/');
    if (slash) *slash = 0;
    else snprintf(c->dir, sizeof c->dir, ".");
    FILE *f = fopen(path, "rb");
    if (!f) return fail(c, VBS_ERR_IO, "cannot open: %s", strerror(errno));
    struct stat sb;
    if (fstat(fileno(f), &sb) || !S_ISREG(sb.st_mode) || (size_t)sb.st_size > MAX_FILE) {
        fclose(f);
        return fail(c, VBS_ERR_IO, "not a regular file of at most 2 GiB");
    }
    size_t len = (size_t)sb.st_size;
    c->bytes = (int64_t)len;
    uint8_t *buf = malloc(len ? len : 1);
    if (!buf || fread(buf, 1, len, f) != len) {
        fclose(f);
        free(buf);
        return fail(c, VBS_ERR_IO, "cannot read");
    }
    fclose(f);
    int sc = scan(buf, buf + len, M_MODEL, 0);
    if (sc) {
        free(buf);
        return sc == 1 ? fail(c, VBS_ERR_FORMAT, "messages nest deeper than %d levels: refused before unpacking", VBS_ONNX_MAX_DEPTH)
                       : fail(c, VBS_ERR_FORMAT, "not a protobuf ModelProto (malformed wire format)");
    }
    Onnx__ModelProto *mp = onnx__model_proto__unpack(NULL, len, buf);
    free(buf);
    if (!mp) return fail(c, VBS_ERR_FORMAT, "not a valid ONNX ModelProto");
    vbs_builder *b = vbs_b_new(0);
    bindings bind = {n_bind, names, values};
    vbs_status st = b ? convert_graph(c, mp, &o, &bind, b) : fail(c, VBS_ERR_NOMEM, "out of memory");
    vbs_output_act want = VBS_ACT_AUTO;
    int n_channels = 0, n_labels = 0;
    vbs_kv *kv = NULL;
    if (!st) {
        vbs_card *card = vbs_b_card(b);
        if (o.card) copy_card(b, o.card, card);
        else card->output_activation = VBS_ACT_AUTO;
        card->producer = vbs_b_str(b, "vbseg convert");
        card->producer_version = vbs_b_str(b, VBS_VERSION_STRING);
        char src[512];
        snprintf(src, sizeof src, "ONNX from %s %s", mp->producer_name ? mp->producer_name : "?", mp->producer_version ? mp->producer_version : "");
        if (!o.card || !o.card->description || !o.card->description[0]) card->description = vbs_b_str(b, src);
        /* the sigma initialisation and any folding, after the card's own extra fields */
        int ne = card->n_extra;
        kv = vbs_b_alloc(b, sizeof(vbs_kv) * (size_t)(ne + 3)); /* + sigma_init, folded_batchnorm, output_activation_source */
        if (kv) {
            char sig[64];
            if (o.sigma == VBS_SIGMA_MOPED) snprintf(sig, sizeof sig, "moped:%g", (double)o.value);
            else if (o.sigma == VBS_SIGMA_CONST) snprintf(sig, sizeof sig, "const:%g", (double)o.value);
            else snprintf(sig, sizeof sig, "none");
            if (ne) memcpy(kv, card->extra, sizeof(vbs_kv) * (size_t)ne);
            kv[ne].key = vbs_b_str(b, "sigma_init");
            kv[ne].value = vbs_b_str(b, sig);
            if (c->folded[0]) {
                kv[ne + 1].key = vbs_b_str(b, "folded_batchnorm");
                kv[ne + 1].value = vbs_b_str(b, c->folded);
            }
            card->extra = kv;
            card->n_extra = ne + 1 + (c->folded[0] != 0);
        }
        /* The activation and the channel and label counts are checked against
         * the compiled graph (its class count comes from shape inference):
         * held back until it is compiled, then restored by finish_card. */
        want = card->output_activation;
        n_channels = card->n_channels;
        n_labels = card->n_labels;
        card->output_activation = VBS_ACT_NONE;
        card->n_channels = card->n_labels = 0;
    }
    onnx__model_proto__free_unpacked(mp, NULL);
    if (st) {
        vbs_b_free(b);
        return st;
    }
    vbs_model_free(m); /* c->err pointed into it: messages go to the new model's from here */
    if ((st = vbs_b_finish(b, path, out))) return st;
    m = *out;
    if ((st = finish_card(m, path, want, n_channels, n_labels, kv + m->def.card.n_extra))) m->loaded = 0;
    return st;
}
