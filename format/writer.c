/*
 * writer.c: packs a vbs_def into a .vbseg file. Tensor offsets are
 * assigned in tensor order, each 64-byte aligned; every numeric field is
 * written explicitly and strings only when non-empty, so that reading a
 * file and writing it again reproduces it byte for byte. The file is
 * written atomically (vbs_atomic_write). Format 1.2: every tensor carries
 * the CRC-32C of its bytes and the header repeats the minor version; with
 * VBS_WRITE_NO_CHECKSUMS (tests only) it writes what 1.0/1.1 writers wrote.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "../runtime/internal.h"
#include "layout.h"
#include "vbseg.pb-c.h"

static char *opt(const char *s) { return s && s[0] ? (char *)s : NULL; }

typedef struct {
    const vbs_def *d;
    uint8_t *header;
    size_t hlen;
    uint64_t dlen;
    int minor;
} job;

static vbs_status write_body(int fd, void *user, char *err) {
    job *j = user;
    uint8_t pre[VBS_PREAMBLE] = {0};
    memcpy(pre, vbs_magic, 8);
    vbs_wr16(pre + 8, VBS_FORMAT_MAJOR);
    vbs_wr16(pre + 10, (uint16_t)j->minor);
    vbs_wr32(pre + 12, (uint32_t)crc32(0L, j->header, (uInt)j->hlen));
    vbs_wr64(pre + 16, j->hlen);
    vbs_wr64(pre + 24, j->dlen);
    static const uint8_t zeros[VBS_DATA_ALIGN] = {0};
    uint64_t doff = vbs_align64(VBS_PREAMBLE + j->hlen);
    if (vbs_write_all(fd, pre, sizeof pre) || vbs_write_all(fd, j->header, j->hlen) ||
        vbs_write_all(fd, zeros, (size_t)(doff - VBS_PREAMBLE - j->hlen)))
        return vbs_fail(err, VBS_ERR_IO, "write failed: %s", strerror(errno));
    uint64_t pos = 0;
    for (int i = 0; i < j->d->n_tensors; i++) {
        const vbs_tensor_def *t = &j->d->tensors[i];
        uint64_t off = vbs_align64(pos);
        if (vbs_write_all(fd, zeros, (size_t)(off - pos)) || vbs_write_all(fd, t->data, (size_t)t->numel * 4))
            return vbs_fail(err, VBS_ERR_IO, "write failed: %s", strerror(errno));
        pos = off + (uint64_t)t->numel * 4;
    }
    if (vbs_write_all(fd, zeros, (size_t)(j->dlen - pos))) return vbs_fail(err, VBS_ERR_IO, "write failed: %s", strerror(errno));
    return VBS_OK;
}

vbs_status vbs_format_write(const vbs_def *d, const char *path, char *err) { return vbs_format_write_flags(d, path, 0, err); }

vbs_status vbs_format_write_flags(const vbs_def *d, const char *path, int flags, char *err) {
    int sums = !(flags & VBS_WRITE_NO_CHECKSUMS);
    vbs_arena ar = {0};
    vbs_status st = VBS_OK;
#define NEW(T, n) ((T *)vbs_arena_alloc(&ar, sizeof(T) * ((size_t)(n) + 1)))
#define CHECK(p) do { if (!(p)) { st = vbs_fail(err, VBS_ERR_NOMEM, "%s: out of memory", path); goto done; } } while (0)
    Vbseg__Model pm = VBSEG__MODEL__INIT;
    Vbseg__Graph pg = VBSEG__GRAPH__INIT;
    Vbseg__ModelCard pc = VBSEG__MODEL_CARD__INIT;
    pm.has_opset = 1;
    pm.opset = d->opset;
    pm.graph = &pg;
    pm.card = &pc;
    pm.has_format_minor = sums;
    pm.format_minor = VBS_FORMAT_MINOR;
    pg.name = opt(d->graph_name);
    pg.n_node = (size_t)d->n_nodes;
    CHECK(pg.node = NEW(Vbseg__Node *, d->n_nodes));
    for (int i = 0; i < d->n_nodes; i++) {
        const vbs_node_def *n = &d->nodes[i];
        Vbseg__Node *pn = NEW(Vbseg__Node, 1);
        CHECK(pn);
        vbseg__node__init(pn);
        pg.node[i] = pn;
        pn->name = opt(n->name);
        pn->op_type = n->op_type;
        pn->n_input = (size_t)n->n_in;
        pn->input = n->in;
        pn->n_output = (size_t)n->n_out;
        pn->output = n->out;
        pn->n_attribute = (size_t)n->n_attr;
        CHECK(pn->attribute = NEW(Vbseg__Attribute *, n->n_attr));
        for (int k = 0; k < n->n_attr; k++) {
            const vbs_attr *a = &n->attr[k];
            Vbseg__Attribute *pa = NEW(Vbseg__Attribute, 1);
            CHECK(pa);
            vbseg__attribute__init(pa);
            pn->attribute[k] = pa;
            pa->name = a->name;
            pa->has_type = 1;
            switch (a->type) {
            case VBS_ATTR_INT: pa->type = VBSEG__ATTRIBUTE__TYPE__ATTR_INT; pa->has_i = 1; pa->i = a->i; break;
            case VBS_ATTR_FLOAT: pa->type = VBSEG__ATTRIBUTE__TYPE__ATTR_FLOAT; pa->has_f = 1; pa->f = a->f; break;
            case VBS_ATTR_STRING: pa->type = VBSEG__ATTRIBUTE__TYPE__ATTR_STRING; pa->s = a->s ? a->s : ""; break;
            case VBS_ATTR_INTS: pa->type = VBSEG__ATTRIBUTE__TYPE__ATTR_INTS; pa->n_ints = (size_t)a->n; pa->ints = a->ints; break;
            case VBS_ATTR_FLOATS: pa->type = VBSEG__ATTRIBUTE__TYPE__ATTR_FLOATS; pa->n_floats = (size_t)a->n; pa->floats = a->floats; break;
            }
        }
    }
    const vbs_io_def *ios[2] = {d->inputs, d->outputs};
    int nio[2] = {d->n_inputs, d->n_outputs};
    Vbseg__ValueInfo **pio[2];
    for (int side = 0; side < 2; side++) {
        CHECK(pio[side] = NEW(Vbseg__ValueInfo *, nio[side]));
        for (int i = 0; i < nio[side]; i++) {
            const vbs_io_def *io = &ios[side][i];
            Vbseg__ValueInfo *pv = NEW(Vbseg__ValueInfo, 1);
            CHECK(pv);
            vbseg__value_info__init(pv);
            pio[side][i] = pv;
            pv->name = io->name;
            pv->n_dim = (size_t)io->ndim;
            CHECK(pv->dim = NEW(Vbseg__Dim *, io->ndim));
            for (int k = 0; k < io->ndim; k++) {
                Vbseg__Dim *pd = NEW(Vbseg__Dim, 1);
                CHECK(pd);
                vbseg__dim__init(pd);
                pv->dim[k] = pd;
                if (io->dims[k] >= 0) { pd->has_value = 1; pd->value = io->dims[k]; }
                else pd->param = io->param[k] ? io->param[k] : "?";
            }
        }
    }
    pg.n_input = (size_t)d->n_inputs;
    pg.input = pio[0];
    pg.n_output = (size_t)d->n_outputs;
    pg.output = pio[1];
    pg.n_tensor = (size_t)d->n_tensors;
    CHECK(pg.tensor = NEW(Vbseg__Tensor *, d->n_tensors));
    uint64_t pos = 0;
    for (int i = 0; i < d->n_tensors; i++) {
        const vbs_tensor_def *t = &d->tensors[i];
        Vbseg__Tensor *pt = NEW(Vbseg__Tensor, 1);
        CHECK(pt);
        vbseg__tensor__init(pt);
        pg.tensor[i] = pt;
        pt->name = t->name;
        pt->n_dims = (size_t)t->ndim;
        pt->dims = (int64_t *)t->dims;
        pt->has_dtype = pt->has_offset = pt->has_length = pt->has_role = 1;
        pt->dtype = VBSEG__DTYPE__DTYPE_FLOAT32;
        pt->offset = vbs_align64(pos);
        pt->length = (uint64_t)t->numel * 4;
        pos = pt->offset + pt->length;
        pt->has_crc32c = sums;
        if (sums) pt->crc32c = vbs_crc32c(0, t->data, (size_t)pt->length);
        pt->role = t->role == VBS_ROLE_MU    ? VBSEG__ROLE__ROLE_VAR_MU
                   : t->role == VBS_ROLE_RHO  ? VBSEG__ROLE__ROLE_VAR_RHO
                   : t->role == VBS_ROLE_OPTIM ? VBSEG__ROLE__ROLE_OPTIM
                                              : VBSEG__ROLE__ROLE_PLAIN;
        if (t->role == VBS_ROLE_MU) {
            pt->rho = t->rho;
            Vbseg__Prior *pp = NEW(Vbseg__Prior, 1);
            CHECK(pp);
            vbseg__prior__init(pp);
            pp->has_kind = pp->has_sigma = pp->has_pi = pp->has_sigma1 = pp->has_sigma2 = 1;
            pp->kind = t->prior.kind == VBS_PRIOR_MIXTURE ? VBSEG__PRIOR__KIND__PRIOR_SCALE_MIXTURE : VBSEG__PRIOR__KIND__PRIOR_GAUSSIAN;
            pp->sigma = t->prior.sigma; pp->pi = t->prior.pi; pp->sigma1 = t->prior.sigma1; pp->sigma2 = t->prior.sigma2;
            pt->prior = pp;
        }
    }
    const vbs_card *c = &d->card;
    pc.n_channel = (size_t)c->n_channels;
    pc.channel = (char **)c->channels;
    pc.has_normalization = pc.has_percentile_lo = pc.has_percentile_hi = pc.has_spatial_dims = 1;
    pc.normalization = (Vbseg__ModelCard__Normalization)c->normalization;
    pc.percentile_lo = c->percentile_lo;
    pc.percentile_hi = c->percentile_hi;
    pc.spatial_dims = c->spatial_dims;
    pc.n_patch = (size_t)c->n_patch;
    pc.patch = (int64_t *)c->patch;
    pc.n_label = (size_t)c->n_labels;
    CHECK(pc.label = NEW(Vbseg__Label *, c->n_labels));
    for (int i = 0; i < c->n_labels; i++) {
        Vbseg__Label *pl = NEW(Vbseg__Label, 1);
        CHECK(pl);
        vbseg__label__init(pl);
        pl->has_value = 1;
        pl->value = c->labels[i].value;
        pl->name = opt(c->labels[i].name);
        pc.label[i] = pl;
    }
    pc.has_label_convention = pc.has_heteroscedastic = pc.has_output_activation = pc.has_epochs = pc.has_seed = 1;
    pc.label_convention = (Vbseg__ModelCard__LabelConvention)c->label_convention;
    pc.heteroscedastic = c->heteroscedastic != 0;
    pc.output_activation = (Vbseg__ModelCard__OutputActivation)c->output_activation;
    pc.producer = opt(c->producer);
    pc.producer_version = opt(c->producer_version);
    pc.training_data = opt(c->training_data);
    pc.description = opt(c->description);
    pc.epochs = c->epochs;
    pc.seed = c->seed;
    pc.n_metric = (size_t)c->n_metrics;
    CHECK(pc.metric = NEW(Vbseg__Metric *, c->n_metrics));
    for (int i = 0; i < c->n_metrics; i++) {
        Vbseg__Metric *pq = NEW(Vbseg__Metric, 1);
        CHECK(pq);
        vbseg__metric__init(pq);
        pq->name = opt(c->metrics[i].name);
        pq->has_value = 1;
        pq->value = c->metrics[i].value;
        pc.metric[i] = pq;
    }
    pc.n_extra = (size_t)c->n_extra;
    CHECK(pc.extra = NEW(Vbseg__KeyValue *, c->n_extra));
    for (int i = 0; i < c->n_extra; i++) {
        Vbseg__KeyValue *pk = NEW(Vbseg__KeyValue, 1);
        CHECK(pk);
        vbseg__key_value__init(pk);
        pk->key = opt(c->extra[i].key);
        pk->value = opt(c->extra[i].value);
        pc.extra[i] = pk;
    }
    Vbseg__TrainState ps = VBSEG__TRAIN_STATE__INIT;
    if (d->train) {
        const vbs_train_state *t = d->train;
        pm.train_state = &ps;
        ps.options = opt(t->options);
        ps.data_id = opt(t->data_id);
        ps.has_step = ps.has_epoch = ps.has_step_in_epoch = ps.has_sched_lr = ps.has_sched_best = ps.has_sched_bad = 1;
        ps.has_best_metric = ps.has_best_epoch = ps.has_elapsed = 1;
        ps.step = t->step; ps.epoch = t->epoch; ps.step_in_epoch = t->step_in_epoch;
        ps.sched_lr = t->sched_lr; ps.sched_best = t->sched_best; ps.sched_bad = t->sched_bad;
        ps.best_metric = t->best_metric; ps.best_epoch = t->best_epoch; ps.elapsed = t->elapsed;
        ps.n_log = (size_t)t->n_log;
        CHECK(ps.log = NEW(Vbseg__EpochLog *, t->n_log));
        for (int i = 0; i < t->n_log; i++) {
            const vbs_epoch_log *e = &t->log[i];
            Vbseg__EpochLog *pe = NEW(Vbseg__EpochLog, 1);
            CHECK(pe);
            vbseg__epoch_log__init(pe);
            pe->has_epoch = pe->has_step = pe->has_loss = pe->has_dice_loss = pe->has_ce = pe->has_kl = pe->has_val_loss = 1;
            pe->has_val_dice = pe->has_val_dice_mc = pe->has_val_epistemic = pe->has_lr = pe->has_seconds = pe->has_images_per_s = 1;
            pe->epoch = e->epoch; pe->step = e->step; pe->loss = e->loss; pe->dice_loss = e->dice_loss; pe->ce = e->ce; pe->kl = e->kl;
            pe->val_loss = e->val_loss; pe->val_dice = e->val_dice; pe->val_dice_mc = e->val_dice_mc; pe->val_epistemic = e->val_epistemic;
            pe->lr = e->lr; pe->seconds = e->seconds; pe->images_per_s = e->images_per_s;
            ps.log[i] = pe;
        }
    }
    /* 1.0: a model, 1.1: a checkpoint (the versions before checksums) */
    job j = {d, NULL, vbseg__model__get_packed_size(&pm), vbs_align64(pos), sums ? VBS_FORMAT_MINOR : d->train ? 1 : 0};
    if (j.hlen > 0xffffffffu) { st = vbs_fail(err, VBS_ERR_FORMAT, "%s: header larger than 4 GiB", path); goto done; }
    CHECK(j.header = vbs_arena_alloc(&ar, j.hlen + 1));
    vbseg__model__pack(&pm, j.header);
    st = vbs_atomic_write(path, write_body, &j, err);
done:
    vbs_arena_free(&ar);
    return st;
#undef NEW
#undef CHECK
}
