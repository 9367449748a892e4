/*
 * reader.c: parses a .vbseg buffer into a vbs_def, checking everything
 * about the file itself before anything is built from it: the preamble
 * (magic, version, header length against the file size, header CRC), the
 * protobuf header, every tensor's dtype, dims (overflow-checked), byte
 * length, 64-byte alignment, bounds and overlaps, every tensor's CRC-32C
 * (format 1.2+), and the zero padding. Graph semantics (ops, cycles,
 * shapes) and finite weights are checked by the runtime; in a checksummed
 * file the reader makes the finite check in its CRC pass and records it
 * (finite_seen), the runtime judging it. Tensor data stay
 * where they are: def tensors point into the buffer.
 *
 * The invariant (format 1.2+): every byte of the file is checked by one of
 *  - the preamble's own checks: the 8 magic bytes exactly; major = 1 (0 and
 *    newer majors refused); minor = the header's Model.format_minor; the
 *    CRC compared; H and D exactly the file's size (32 + H padded to 64,
 *    plus D, is the file length);
 *  - the header CRC (zlib CRC-32) over the H header bytes;
 *  - a tensor's CRC-32C over its length bytes (the CRCs themselves are in
 *    the header);
 *  - the zero check: every byte after the header up to the data offset, and
 *    every byte of the data section outside a tensor (between tensors,
 *    before the first, after the last) must be 0.
 * So no single flipped bit, and no truncation, can load unnoticed. Files of
 * 1.0/1.1 have no tensor CRCs: their weights load unverified (d->checksummed
 * is 0 and `vbseg info` says so); their padding is still checked.
 */
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include "../runtime/internal.h"
#include "layout.h"
#include "vbseg.pb-c.h"

typedef struct {
    const char *file;
    char *err;
    vbs_arena *ar;
    /* --verify: checksum and padding problems go to report and the parse goes on */
    vbs_report_fn report;
    void *user;
    int problems;
    int nomem; /* a string the arena could not copy: the parse fails at its end */
    char first[VBS_ERRLEN];
    const uint32_t *crc, *crc_val; /* read_tensors: which tensors carry a CRC-32C, and its value */
} ctx;

/* after a string the arena could not copy, any refusal is that: out of memory (an empty name is not the file's fault) */
#define FAIL(st, ...) (c->nomem ? vbs_fail_file(c->err, VBS_ERR_NOMEM, c->file, "out of memory") \
                                : vbs_fail_file(c->err, st, c->file, __VA_ARGS__))

/* A bad checksum or padding: fatal when loading, reported and passed over by --verify. */
__attribute__((format(printf, 2, 3))) static vbs_status problem(ctx *c, const char *fmt, ...) {
    char msg[VBS_ERRLEN], line[VBS_ERRLEN];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    vbs_fail_file(c->report ? line : c->err, VBS_ERR_FORMAT, c->file, "%s", msg);
    if (!c->report) return VBS_ERR_FORMAT;
    if (!c->problems++) snprintf(c->first, sizeof c->first, "%s", line);
    c->report(c->user, line);
    return VBS_OK;
}

/* the offset of the first non-zero byte of p[0, n), or n */
static size_t nonzero_at(const uint8_t *p, size_t n) {
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t w;
        memcpy(&w, p + i, 8);
        if (w) break;
    }
    while (i < n && !p[i]) i++;
    return i;
}

/* never NULL: out of memory gives "" and fails the parse at its end, so no caller dereferences NULL */
static char *sdup(ctx *c, const char *s) {
    static char none[1];
    char *p = vbs_arena_strdup(c->ar, s ? s : "");
    c->nomem |= !p;
    return p ? p : none;
}

static vbs_status read_attr(ctx *c, const char *node, const Vbseg__Attribute *pa, vbs_attr *a) {
    a->name = sdup(c, pa->name);
    if (!a->name[0]) return FAIL(VBS_ERR_FORMAT, "node '%s': attribute without a name", node);
    /* the lengths are checked before anything is sized from them */
    if (pa->n_ints > (1u << 20) || pa->n_floats > (1u << 20))
        return FAIL(VBS_ERR_FORMAT, "node '%s': attribute '%s' is too long", node, a->name);
    switch (pa->type) {
    case VBSEG__ATTRIBUTE__TYPE__ATTR_INT: a->type = VBS_ATTR_INT; a->i = pa->i; break;
    case VBSEG__ATTRIBUTE__TYPE__ATTR_FLOAT: a->type = VBS_ATTR_FLOAT; a->f = pa->f; break;
    case VBSEG__ATTRIBUTE__TYPE__ATTR_STRING: a->type = VBS_ATTR_STRING; a->s = sdup(c, pa->s); break;
    case VBSEG__ATTRIBUTE__TYPE__ATTR_INTS:
        a->type = VBS_ATTR_INTS;
        a->n = (int)pa->n_ints;
        a->ints = vbs_arena_alloc(c->ar, sizeof(int64_t) * pa->n_ints);
        if (!a->ints) return FAIL(VBS_ERR_NOMEM, "out of memory");
        /* an empty list arrives as NULL from protobuf-c: memcpy(_, NULL, 0) is UB */
        if (pa->n_ints) memcpy(a->ints, pa->ints, sizeof(int64_t) * pa->n_ints);
        break;
    case VBSEG__ATTRIBUTE__TYPE__ATTR_FLOATS:
        a->type = VBS_ATTR_FLOATS;
        a->n = (int)pa->n_floats;
        a->floats = vbs_arena_alloc(c->ar, sizeof(float) * pa->n_floats);
        if (!a->floats) return FAIL(VBS_ERR_NOMEM, "out of memory");
        if (pa->n_floats) memcpy(a->floats, pa->floats, sizeof(float) * pa->n_floats);
        break;
    default: return FAIL(VBS_ERR_FORMAT, "node '%s': attribute '%s' has unknown type %d", node, a->name, (int)pa->type);
    }
    return VBS_OK;
}

static vbs_status read_names(ctx *c, size_t n, char **src, char ***dst) {
    *dst = vbs_arena_alloc(c->ar, sizeof(char *) * (n + 1));
    if (!*dst) return FAIL(VBS_ERR_NOMEM, "out of memory");
    for (size_t i = 0; i < n; i++) (*dst)[i] = sdup(c, src[i]);
    return VBS_OK;
}

static vbs_status read_io(ctx *c, const char *what, const Vbseg__ValueInfo *p, vbs_io_def *io) {
    io->name = sdup(c, p->name);
    if (!io->name[0]) return FAIL(VBS_ERR_FORMAT, "graph %s without a name", what);
    if (p->n_dim > VBS_MAX_DIMS) return FAIL(VBS_ERR_FORMAT, "graph %s '%s' has %zu dims (max %d)", what, io->name, p->n_dim, VBS_MAX_DIMS);
    io->ndim = (int)p->n_dim;
    for (int i = 0; i < io->ndim; i++) {
        const Vbseg__Dim *d = p->dim[i];
        if (d->has_value) {
            if (d->value <= 0 || d->value > ((int64_t)1 << 31))
                return FAIL(VBS_ERR_FORMAT, "graph %s '%s': dim %d is %lld", what, io->name, i, (long long)d->value);
            io->dims[i] = d->value;
        } else {
            io->dims[i] = -1;
            io->param[i] = sdup(c, d->param && d->param[0] ? d->param : "?");
        }
    }
    return VBS_OK;
}

static int cmp_off(const void *a, const void *b) {
    const vbs_tensor_def *x = *(vbs_tensor_def *const *)a, *y = *(vbs_tensor_def *const *)b;
    return (x->offset > y->offset) - (x->offset < y->offset);
}

/* The data section in offset order: each gap zero, each tensor's CRC-32C
 * (where it has one) equal to the stored one. CHUNK: two of crc32c.c's
 * three-stream blocks (3 x 8192 bytes), small enough for the L2 cache. */
#define CHUNK (6 * 8192)

static vbs_status verify_data(ctx *c, vbs_def *d, vbs_tensor_def **by_off, const uint8_t *data, uint64_t data_len, uint64_t doff) {
    uint64_t pos = 0;
    vbs_status st = VBS_OK;
    for (int i = 0; i <= d->n_tensors && !st; i++) {
        uint64_t end = i < d->n_tensors ? by_off[i]->offset : data_len;
        size_t z = nonzero_at(data + pos, (size_t)(end - pos));
        if (z < end - pos) {
            unsigned long long at = (unsigned long long)(doff + pos + z); /* in the file */
            if (i) st = problem(c, "padding after tensor '%s' is not zero (byte %llu of the file)", by_off[i - 1]->name, at);
            else if (d->n_tensors) st = problem(c, "padding before tensor '%s' is not zero (byte %llu of the file)", by_off[0]->name, at);
            else st = problem(c, "the data section holds no tensor but is not zero (byte %llu of the file)", at);
        }
        if (st || i == d->n_tensors) break;
        const vbs_tensor_def *t = by_off[i];
        int k = (int)(t - d->tensors);
        if (c->crc[k]) {
            /* the CRC and the runtime's finite check in one pass, chunk by chunk
             * while the chunk is in the L1/L2 caches: at load this is the first
             * pass over the weights, at memory speed; a second one (the finite
             * check after it) found them out of the caches again */
            uint32_t got = 0;
            int bad = 0;
            const uint8_t *p = data + t->offset;
            for (uint64_t at = 0, n; at < t->nbytes; at += n) {
                n = t->nbytes - at < CHUNK ? t->nbytes - at : CHUNK;
                got = vbs_crc32c(got, p + at, (size_t)n);
                bad |= vbs_any_nonfinite((const float *)(p + at), (int64_t)(n / sizeof(float)));
            }
            by_off[i]->finite_seen = bad ? 2 : 1;
#ifndef FUZZING_BUILD_MODE_UNSAFE_FOR_PRODUCTION /* tests/fuzz/run.sh: let mutated weights reach the forward pass */
            if (got != c->crc_val[k])
#else
            if (0)
#endif
                st = problem(c, "tensor '%s': checksum mismatch (stored 0x%08X, computed 0x%08X)", t->name, c->crc_val[k], got);
        }
        pos = t->offset + t->nbytes;
    }
    return st;
}

static vbs_status read_tensors(ctx *c, const Vbseg__Graph *g, vbs_def *d, const uint8_t *data, uint64_t data_len, uint64_t doff) {
    d->n_tensors = (int)g->n_tensor;
    d->tensors = vbs_arena_alloc(c->ar, sizeof(vbs_tensor_def) * (g->n_tensor + 1));
    vbs_tensor_def **by_off = malloc(sizeof(vbs_tensor_def *) * (g->n_tensor + 1));
    /* the stored CRCs, by tensor: [0, n) flags, then the values */
    uint32_t *crc_val = malloc(sizeof(uint32_t) * 2 * (g->n_tensor + 1)), *crc = crc_val ? crc_val + g->n_tensor + 1 : NULL;
    if (!d->tensors || !by_off || !crc_val) { free(by_off); free(crc_val); return FAIL(VBS_ERR_NOMEM, "out of memory"); }
    c->crc = crc;
    c->crc_val = crc_val;
    int need_crc = d->format_minor >= 2;
    vbs_status st = VBS_OK;
    for (size_t i = 0; i < g->n_tensor && !st; i++) {
        const Vbseg__Tensor *p = g->tensor[i];
        vbs_tensor_def *t = &d->tensors[i];
        by_off[i] = t;
        t->name = sdup(c, p->name);
        if (!t->name[0]) { st = FAIL(VBS_ERR_FORMAT, "tensor %zu has no name", i); break; }
        if (!p->has_dtype || p->dtype != VBSEG__DTYPE__DTYPE_FLOAT32) {
            st = FAIL(VBS_ERR_FORMAT, "tensor '%s': dtype %d unsupported (float32 only)", t->name, (int)p->dtype);
            break;
        }
        if (p->n_dims > VBS_MAX_DIMS) { st = FAIL(VBS_ERR_FORMAT, "tensor '%s': %zu dims (max %d)", t->name, p->n_dims, VBS_MAX_DIMS); break; }
        t->ndim = (int)p->n_dims;
        int64_t numel = 1;
        for (int k = 0; k < t->ndim; k++) {
            t->dims[k] = p->dims[k];
            if (p->dims[k] <= 0) { st = FAIL(VBS_ERR_FORMAT, "tensor '%s': dim %d is %lld, must be > 0", t->name, k, (long long)p->dims[k]); break; }
            if (!vbs_mul_ok(numel, p->dims[k], &numel) || numel > ((int64_t)1 << 40)) {
                st = FAIL(VBS_ERR_FORMAT, "tensor '%s': the product of its dims overflows", t->name);
                break;
            }
        }
        if (st) break;
        t->numel = numel;
        t->offset = p->offset;
        t->nbytes = p->length;
        if ((uint64_t)numel * 4u != p->length) {
            st = FAIL(VBS_ERR_FORMAT, "tensor '%s': length %llu bytes, but its dims give %lld floats (%llu bytes)", t->name,
                      (unsigned long long)p->length, (long long)numel, (unsigned long long)numel * 4u);
            break;
        }
        if (p->offset % VBS_DATA_ALIGN) { st = FAIL(VBS_ERR_FORMAT, "tensor '%s': offset %llu is not 64-byte aligned", t->name, (unsigned long long)p->offset); break; }
        if (p->offset > data_len || p->length > data_len - p->offset) {
            st = FAIL(VBS_ERR_FORMAT, "tensor '%s': bytes [%llu, +%llu) lie outside the %llu-byte data section", t->name,
                      (unsigned long long)p->offset, (unsigned long long)p->length, (unsigned long long)data_len);
            break;
        }
        t->data = (const float *)(data + p->offset);
        if (need_crc && !p->has_crc32c) {
            st = FAIL(VBS_ERR_FORMAT, "tensor '%s': no checksum in a format 1.%d file", t->name, d->format_minor);
            break;
        }
        crc[i] = p->has_crc32c;
        crc_val[i] = p->crc32c;
        switch (p->role) {
        case VBSEG__ROLE__ROLE_PLAIN: t->role = VBS_ROLE_PLAIN; break;
        case VBSEG__ROLE__ROLE_VAR_MU: t->role = VBS_ROLE_MU; break;
        case VBSEG__ROLE__ROLE_VAR_RHO: t->role = VBS_ROLE_RHO; break;
        case VBSEG__ROLE__ROLE_OPTIM: t->role = VBS_ROLE_OPTIM; break;
        default: st = FAIL(VBS_ERR_FORMAT, "tensor '%s': unknown role %d", t->name, (int)p->role); break;
        }
        if (st) break;
        if (t->role == VBS_ROLE_MU) {
            t->rho = sdup(c, p->rho);
            if (!p->prior) { st = FAIL(VBS_ERR_FORMAT, "tensor '%s': variational mean without a prior", t->name); break; }
            const Vbseg__Prior *pr = p->prior;
            t->has_prior = 1;
            t->prior.kind = pr->kind == VBSEG__PRIOR__KIND__PRIOR_SCALE_MIXTURE ? VBS_PRIOR_MIXTURE : VBS_PRIOR_GAUSSIAN;
            t->prior.sigma = pr->sigma; t->prior.pi = pr->pi; t->prior.sigma1 = pr->sigma1; t->prior.sigma2 = pr->sigma2;
            int ok = t->prior.kind == VBS_PRIOR_GAUSSIAN
                         ? isfinite(pr->sigma) && pr->sigma > 0
                         : isfinite(pr->sigma1) && isfinite(pr->sigma2) && pr->sigma1 > 0 && pr->sigma2 > 0 && pr->pi >= 0 && pr->pi <= 1;
            if (!ok) { st = FAIL(VBS_ERR_FORMAT, "tensor '%s': invalid prior parameters", t->name); break; }
        } else if (p->rho && p->rho[0]) {
            st = FAIL(VBS_ERR_FORMAT, "tensor '%s': only a variational mean may name a rho tensor", t->name);
            break;
        }
    }
    if (!st && d->n_tensors > 1) {
        qsort(by_off, (size_t)d->n_tensors, sizeof *by_off, cmp_off);
        for (int i = 1; i < d->n_tensors && !st; i++)
            if (by_off[i - 1]->offset + by_off[i - 1]->nbytes > by_off[i]->offset)
                st = FAIL(VBS_ERR_FORMAT, "tensors '%s' and '%s' overlap in the data section", by_off[i - 1]->name, by_off[i]->name);
    }
    if (!st) st = verify_data(c, d, by_off, data, data_len, doff);
    d->checksummed = !st && need_crc; /* 1.2+: every tensor has its CRC, checked above */
    c->crc = c->crc_val = NULL;
    free(by_off);
    free(crc_val);
    return st;
}

static vbs_status read_card(ctx *c, const Vbseg__ModelCard *p, vbs_card *card) {
    memset(card, 0, sizeof *card);
    if (!p) return VBS_OK;
    char **ch;
    vbs_status st = read_names(c, p->n_channel, p->channel, &ch);
    if (st) return st;
    card->channels = (const char *const *)ch;
    card->n_channels = (int)p->n_channel;
    card->normalization = (vbs_norm)p->normalization;
    if (card->normalization > VBS_NORM_PERCENTILE) return FAIL(VBS_ERR_FORMAT, "model card: unknown normalization %d", (int)p->normalization);
    card->percentile_lo = p->percentile_lo;
    card->percentile_hi = p->percentile_hi;
    card->spatial_dims = p->spatial_dims;
    if (p->spatial_dims != 0 && p->spatial_dims != 2 && p->spatial_dims != 3) /* 0: not stated */
        return FAIL(VBS_ERR_FORMAT, "model card: spatial_dims is %d, must be 2 or 3 (or 0, not stated)", (int)p->spatial_dims);
    if (p->n_patch > 3) return FAIL(VBS_ERR_FORMAT, "model card: patch has %zu dims (max 3)", p->n_patch);
    int64_t *patch = vbs_arena_alloc(c->ar, sizeof(int64_t) * (p->n_patch + 1));
    if (!patch) return FAIL(VBS_ERR_NOMEM, "out of memory");
    for (size_t i = 0; i < p->n_patch; i++) {
        if (p->patch[i] <= 0 || p->patch[i] > 65536) return FAIL(VBS_ERR_FORMAT, "model card: patch size %lld", (long long)p->patch[i]);
        patch[i] = p->patch[i];
    }
    card->patch = patch;
    card->n_patch = (int)p->n_patch;
    vbs_label *lab = vbs_arena_alloc(c->ar, sizeof(vbs_label) * (p->n_label + 1));
    vbs_metric *met = vbs_arena_alloc(c->ar, sizeof(vbs_metric) * (p->n_metric + 1));
    vbs_kv *kv = vbs_arena_alloc(c->ar, sizeof(vbs_kv) * (p->n_extra + 1));
    if (!lab || !met || !kv) return FAIL(VBS_ERR_NOMEM, "out of memory");
    for (size_t i = 0; i < p->n_label; i++) { lab[i].value = p->label[i]->value; lab[i].name = sdup(c, p->label[i]->name); }
    for (size_t i = 0; i < p->n_metric; i++) { met[i].name = sdup(c, p->metric[i]->name); met[i].value = p->metric[i]->value; }
    for (size_t i = 0; i < p->n_extra; i++) { kv[i].key = sdup(c, p->extra[i]->key); kv[i].value = sdup(c, p->extra[i]->value); }
    card->labels = lab; card->n_labels = (int)p->n_label;
    card->metrics = met; card->n_metrics = (int)p->n_metric;
    card->extra = kv; card->n_extra = (int)p->n_extra;
    card->label_convention = (vbs_label_convention)p->label_convention;
    if (card->label_convention > VBS_LABELS_MSD) return FAIL(VBS_ERR_FORMAT, "model card: unknown label convention %d", (int)p->label_convention);
    card->heteroscedastic = p->heteroscedastic != 0;
    card->output_activation = (vbs_output_act)p->output_activation;
    if (card->output_activation > VBS_ACT_NONE) return FAIL(VBS_ERR_FORMAT, "model card: unknown output activation %d", (int)p->output_activation);
    card->producer = sdup(c, p->producer);
    card->producer_version = sdup(c, p->producer_version);
    card->training_data = sdup(c, p->training_data);
    card->description = sdup(c, p->description);
    card->epochs = p->epochs;
    card->seed = p->seed;
    return VBS_OK;
}

/* a checkpoint's training state: kept as it is, checked for sanity */
static vbs_status read_train_state(ctx *c, const Vbseg__TrainState *p, vbs_def *d) {
    if (p->n_log > 1000000) return FAIL(VBS_ERR_FORMAT, "train_state: %zu epoch records", p->n_log);
    vbs_train_state *t = vbs_arena_alloc(c->ar, sizeof *t);
    vbs_epoch_log *log = vbs_arena_alloc(c->ar, sizeof *log * (p->n_log + 1));
    if (!t || !log) return FAIL(VBS_ERR_NOMEM, "out of memory");
    t->options = sdup(c, p->options);
    t->data_id = sdup(c, p->data_id);
    t->step = p->step; t->epoch = p->epoch; t->step_in_epoch = p->step_in_epoch;
    t->sched_lr = p->sched_lr; t->sched_best = p->sched_best; t->sched_bad = p->sched_bad;
    t->best_metric = p->best_metric; t->best_epoch = p->best_epoch; t->elapsed = p->elapsed;
    if (t->step < 0 || t->epoch < 0 || t->step_in_epoch < 0 || !(t->sched_lr >= 0) || t->sched_bad < 0)
        return FAIL(VBS_ERR_FORMAT, "train_state: negative step, epoch or schedule state");
    for (size_t i = 0; i < p->n_log; i++) {
        const Vbseg__EpochLog *e = p->log[i];
        vbs_epoch_log *l = &log[i];
        l->epoch = e->epoch; l->step = e->step; l->loss = e->loss; l->dice_loss = e->dice_loss; l->ce = e->ce; l->kl = e->kl;
        l->val_loss = e->val_loss; l->val_dice = e->val_dice; l->val_dice_mc = e->val_dice_mc; l->val_epistemic = e->val_epistemic;
        l->lr = e->lr; l->seconds = e->seconds; l->images_per_s = e->images_per_s;
    }
    t->log = log;
    t->n_log = (int)p->n_log;
    d->train = t;
    return VBS_OK;
}

static vbs_status parse(ctx *c, const uint8_t *buf, size_t len, vbs_def *d) {
    memset(d, 0, sizeof *d);
    c->ar = &d->arena;
    if (len < VBS_PREAMBLE) return FAIL(VBS_ERR_FORMAT, "truncated: %zu bytes, the preamble alone is %d", len, VBS_PREAMBLE);
    if (memcmp(buf, vbs_magic, sizeof vbs_magic)) return FAIL(VBS_ERR_FORMAT, "not a .vbseg file (bad magic bytes)");
    unsigned major = vbs_rd16(buf + 8), minor = vbs_rd16(buf + 10);
    if (major > VBS_FORMAT_MAJOR)
        return FAIL(VBS_ERR_VERSION, "format version %u.%u is newer than this reader (%d.%d); upgrade vbseg", major, minor,
                    VBS_FORMAT_MAJOR, VBS_FORMAT_MINOR);
    if (major == 0) return FAIL(VBS_ERR_FORMAT, "format major version 0 is invalid");
    uint32_t crc = vbs_rd32(buf + 12);
    uint64_t hlen = vbs_rd64(buf + 16), dlen = vbs_rd64(buf + 24);
    if (hlen > len - VBS_PREAMBLE)
        return FAIL(VBS_ERR_FORMAT, "header length %llu exceeds the file size %zu (truncated?)", (unsigned long long)hlen, len);
    uint64_t doff = vbs_align64(VBS_PREAMBLE + hlen);
    if (doff > len || dlen != len - doff)
        return FAIL(VBS_ERR_FORMAT, "file is %zu bytes but the preamble declares %llu (truncated or trailing bytes)", len,
                    (unsigned long long)(doff + dlen));
    d->format_major = (int)major;
    d->format_minor = (int)minor;
    vbs_status st = VBS_OK;
    uint32_t hcrc = (uint32_t)crc32(0L, buf + VBS_PREAMBLE, (uInt)hlen);
    if (hcrc != crc && (st = problem(c, "header checksum mismatch: the header is corrupted (stored 0x%08X, computed 0x%08X)", crc, hcrc)))
        return st;
    size_t z = nonzero_at(buf + VBS_PREAMBLE + hlen, (size_t)(doff - VBS_PREAMBLE - hlen));
    if (z < doff - VBS_PREAMBLE - hlen &&
        (st = problem(c, "padding after the header is not zero (byte %llu of the file)", (unsigned long long)(VBS_PREAMBLE + hlen + z))))
        return st;
    if ((uintptr_t)(buf + doff) % 4) return FAIL(VBS_ERR_ARG, "data section is not 4-byte aligned in memory");
    Vbseg__Model *pm = vbseg__model__unpack(NULL, (size_t)hlen, buf + VBS_PREAMBLE);
    if (!pm) return FAIL(VBS_ERR_FORMAT, "header is not a valid protobuf Model message");
    const Vbseg__Graph *g = pm->graph;
    /* 1.2+: the header repeats the minor version, so that the header CRC covers it */
    if ((minor >= 2 || pm->has_format_minor) && (!pm->has_format_minor || pm->format_minor != minor)) {
        if (pm->has_format_minor)
            st = FAIL(VBS_ERR_FORMAT, "the preamble says format %u.%u but the header says %u.%u", major, minor, major, pm->format_minor);
        else st = FAIL(VBS_ERR_FORMAT, "the preamble says format %u.%u but the header has no format version (1.1 or older)", major, minor);
        goto done;
    }
    if (!g) { st = FAIL(VBS_ERR_FORMAT, "header has no graph"); goto done; }
    if (g->n_node > (1u << 20) || g->n_tensor > (1u << 22) || g->n_input > 64 || g->n_output > 64) {
        st = FAIL(VBS_ERR_FORMAT, "graph too large (%zu nodes, %zu tensors)", g->n_node, g->n_tensor);
        goto done;
    }
    d->opset = pm->opset;
    d->graph_name = sdup(c, g->name);
    d->n_nodes = (int)g->n_node;
    d->nodes = vbs_arena_alloc(c->ar, sizeof(vbs_node_def) * (g->n_node + 1));
    d->n_inputs = (int)g->n_input;
    d->inputs = vbs_arena_alloc(c->ar, sizeof(vbs_io_def) * (g->n_input + 1));
    d->n_outputs = (int)g->n_output;
    d->outputs = vbs_arena_alloc(c->ar, sizeof(vbs_io_def) * (g->n_output + 1));
    if (!d->nodes || !d->inputs || !d->outputs) { st = FAIL(VBS_ERR_NOMEM, "out of memory"); goto done; }
    if (!g->n_input || !g->n_output) { st = FAIL(VBS_ERR_FORMAT, "graph needs at least one input and one output"); goto done; }
    for (size_t i = 0; i < g->n_input && !st; i++) st = read_io(c, "input", g->input[i], &d->inputs[i]);
    for (size_t i = 0; i < g->n_output && !st; i++) st = read_io(c, "output", g->output[i], &d->outputs[i]);
    for (size_t i = 0; i < g->n_node && !st; i++) {
        const Vbseg__Node *pn = g->node[i];
        vbs_node_def *n = &d->nodes[i];
        n->name = sdup(c, pn->name && pn->name[0] ? pn->name : NULL);
        if (!n->name[0]) {
            char tmp[32];
            snprintf(tmp, sizeof tmp, "#%zu", i);
            n->name = sdup(c, tmp);
        }
        n->op_type = sdup(c, pn->op_type);
        if (pn->n_input > VBS_MAX_IN || pn->n_output > 2) {
            st = FAIL(VBS_ERR_GRAPH, "node '%s' (%s): %zu inputs, %zu outputs (max %d, 2)", n->name, n->op_type, pn->n_input,
                      pn->n_output, VBS_MAX_IN);
            break;
        }
        n->n_in = (int)pn->n_input;
        n->n_out = (int)pn->n_output;
        if ((st = read_names(c, pn->n_input, pn->input, &n->in))) break;
        if ((st = read_names(c, pn->n_output, pn->output, &n->out))) break;
        if (pn->n_attribute > 64) { st = FAIL(VBS_ERR_FORMAT, "node '%s': too many attributes", n->name); break; }
        n->n_attr = (int)pn->n_attribute;
        n->attr = vbs_arena_alloc(c->ar, sizeof(vbs_attr) * (pn->n_attribute + 1));
        if (!n->attr) { st = FAIL(VBS_ERR_NOMEM, "out of memory"); break; }
        for (size_t k = 0; k < pn->n_attribute && !st; k++) st = read_attr(c, n->name, pn->attribute[k], &n->attr[k]);
    }
    if (!st) st = read_tensors(c, g, d, buf + doff, dlen, doff);
    if (!st) st = read_card(c, pm->card, &d->card);
    if (!st && pm->train_state) st = read_train_state(c, pm->train_state, d);
done:
    vbseg__model__free_unpacked(pm, NULL);
    if (!st && c->nomem) st = FAIL(VBS_ERR_NOMEM, "out of memory");
    if (st) vbs_def_free(d);
    return st;
}

vbs_status vbs_format_parse(const uint8_t *buf, size_t len, const char *name, vbs_def *d, char *err) {
    ctx c = {.file = name, .err = err};
    return parse(&c, buf, len, d);
}

vbs_status vbs_format_verify_file(const char *path, vbs_report_fn report, void *user, int *n_tensors, int *checksummed, char *err) {
    *n_tensors = *checksummed = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    struct stat sb;
    vbs_status st = VBS_OK;
    if (fd < 0) st = vbs_fail(err, VBS_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    else if (fstat(fd, &sb) || !S_ISREG(sb.st_mode)) st = vbs_fail(err, VBS_ERR_IO, "%s: not a regular file", path);
    void *p = !st && sb.st_size ? mmap(NULL, (size_t)sb.st_size, PROT_READ, MAP_PRIVATE, fd, 0) : NULL;
    if (fd >= 0) close(fd);
    if (p == MAP_FAILED) st = vbs_fail(err, VBS_ERR_IO, "%s: mmap failed: %s", path, strerror(errno));
    if (st) {
        report(user, err);
        return st;
    }
    ctx c = {.file = path, .err = err, .report = report, .user = user};
    vbs_def d;
    static const uint8_t empty[1];
    st = parse(&c, p ? p : empty, (size_t)sb.st_size, &d);
    if (st) report(user, err); /* a fatal problem: nothing after it can be checked */
    else {
        *n_tensors = d.n_tensors;
        *checksummed = d.checksummed; /* every tensor carries a CRC (verified unless reported) */
        vbs_def_free(&d);
        if (c.problems) st = vbs_fail(err, VBS_ERR_FORMAT, "%s", c.first);
    }
    if (p) munmap(p, (size_t)sb.st_size);
    return st;
}
