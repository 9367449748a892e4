/*
 * checkpoint.c: the training state in a .vbseg file (format 1.1+). A
 * checkpoint is the model as it stands (so `vbseg info`, `run` and `infer`
 * take it as they are) plus the optimiser's moments as tensors of role
 * ROLE_OPTIM named "adam.m:NAME" and "adam.v:NAME", placed after every
 * model tensor, and Model.train_state: the step, the epoch, the schedule,
 * the best validation result, the options and the data it was made with,
 * and the epoch log. Every draw of the trainer is keyed by (seed, step), so
 * the step is the whole of the RNG and data-order position. Written
 * atomically like every file vbseg writes (a full disk leaves the previous
 * checkpoint as it was) and read through the same validating reader as a
 * model (CRC of the header, bounds, alignment, overlaps, and from format
 * 1.2 the CRC-32C of every tensor, the moments included, and the zero
 * padding: a flipped bit anywhere is refused by name), then checked
 * against the run that resumes it: anything foreign is refused, and nothing
 * is half-loaded.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "trainer.h"

vbs_status vbs_checkpoint_save(const vbs_trainer *t, const vbs_train_state *state, const char *path, char *err) {
    const vbs_def *d = &t->m->def;
    int nt = 0;
    for (int i = 0; i < d->n_tensors; i++) nt += t->P.trained[i];
    int moments = t->cfg.opt.kind == VBS_OPT_SGD ? 1 : 2;
    vbs_def v = *d; /* a view: the model's tensors, then the moments; nothing here is freed */
    vbs_arena ar = {0};
    v.tensors = vbs_arena_alloc(&ar, sizeof(vbs_tensor_def) * (size_t)(d->n_tensors + moments * nt + 1));
    if (!v.tensors) return vbs_fail(err, VBS_ERR_NOMEM, "%s: out of memory", path);
    memcpy(v.tensors, d->tensors, sizeof(vbs_tensor_def) * (size_t)d->n_tensors);
    int k = d->n_tensors;
    for (int mo = 0; mo < moments; mo++)
        for (int i = 0; i < d->n_tensors; i++) {
            if (!t->P.trained[i]) continue;
            vbs_tensor_def *o = &v.tensors[k++];
            *o = d->tensors[i];
            char name[1024];
            snprintf(name, sizeof name, "adam.%c:%s", mo ? 'v' : 'm', d->tensors[i].name);
            o->name = vbs_arena_strdup(&ar, name);
            if (!o->name) { vbs_arena_free(&ar); return vbs_fail(err, VBS_ERR_NOMEM, "%s: out of memory", path); }
            o->role = VBS_ROLE_OPTIM;
            o->rho = NULL;
            o->has_prior = 0;
            o->data = (mo ? t->adam_v : t->adam_m) + t->P.toff[i];
        }
    v.n_tensors = k;
    v.train = (vbs_train_state *)state;
    vbs_status st = vbs_format_write(&v, path, err);
    vbs_arena_free(&ar);
    return st;
}

vbs_status vbs_checkpoint_open(vbs_model *m, const char *path, vbs_checkpoint *ck, char *err) {
    memset(ck, 0, sizeof *ck);
    vbs_def *d = &m->def;
    if (!d->train) return vbs_fail(err, VBS_ERR_FORMAT, "%s: not a checkpoint (a model without training state)", path);
    int nm = 0;
    while (nm < d->n_tensors && d->tensors[nm].role != VBS_ROLE_OPTIM) nm++;
    for (int i = nm; i < d->n_tensors; i++)
        if (d->tensors[i].role != VBS_ROLE_OPTIM)
            return vbs_fail(err, VBS_ERR_FORMAT, "%s: tensor '%s' follows the optimiser state", path, d->tensors[i].name);
    ck->state = *d->train;
    ck->optim = d->tensors + nm;
    ck->n_optim = d->n_tensors - nm;
    d->n_tensors = nm; /* the model is what comes before */
    d->train = NULL;
    return VBS_OK;
}

vbs_status vbs_checkpoint_restore(vbs_trainer *t, const vbs_checkpoint *ck, const char *path, char *err) {
    const vbs_def *d = &t->m->def;
    int moments = t->cfg.opt.kind == VBS_OPT_SGD ? 1 : 2, want = 0;
    for (int i = 0; i < d->n_tensors; i++) want += t->P.trained[i];
    if (ck->n_optim != moments * want)
        return vbs_fail(err, VBS_ERR_FORMAT, "%s: %d optimiser tensors, this run's %s keeps %d", path, ck->n_optim,
                        moments == 1 ? "SGD" : "Adam", moments * want);
    for (int j = 0; j < ck->n_optim; j++) {
        const vbs_tensor_def *o = &ck->optim[j];
        const char *name = o->name;
        int mo = !strncmp(name, "adam.v:", 7) ? 1 : !strncmp(name, "adam.m:", 7) ? 0 : -1;
        if (mo < 0 || mo >= moments) return vbs_fail(err, VBS_ERR_FORMAT, "%s: optimiser tensor '%s' is not this run's", path, name);
        int i = 0;
        while (i < d->n_tensors && strcmp(d->tensors[i].name, name + 7)) i++;
        if (i == d->n_tensors || !t->P.trained[i] || d->tensors[i].numel != o->numel)
            return vbs_fail(err, VBS_ERR_FORMAT, "%s: optimiser tensor '%s' matches no trained tensor of the model", path, name);
        memcpy((mo ? t->adam_v : t->adam_m) + t->P.toff[i], o->data, sizeof(float) * (size_t)o->numel);
    }
    return VBS_OK;
}
