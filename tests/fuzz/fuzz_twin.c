/*
 * fuzz_twin.c: libFuzzer target for `vbseg convert CKPT --graph GRAPH`
 * (vbs_twin_convert, converters/twin.c): a checkpoint's keys classified by
 * naming convention and matched onto a graph by name, then by bytes and
 * shape. The input's first byte picks the options, the rest is a
 * safetensors checkpoint (vbs_ckpt_read_safetensors_memory, which
 * fuzz_safetensors fuzzes on its own):
 *   bit 0     the graph: corpus/vbseg/unet2d.vbseg (a variational U-Net) or
 *             corpus/onnx/norm-act.onnx (an ONNX twin, BatchNormalization kept)
 *   bits 1-3  the naming, mod 5: auto, plain, bayesian-torch, blitz, torchbnn
 *   bit 4     --prior normal:S given, S = 0.05 x (1 + bits 5-7)
 * A checkpoint that converts must give a report that accounts for every
 * key and every graph parameter, a model that runs (fuzz_run_model: a
 * refusal there is the input's status, not a finding), and, whether it ran
 * or not, one that survives `vbseg export` in each of the four conventions
 * (vbs_twin_export_safetensors; it may refuse, in one line, only a name the
 * convention cannot spell: never the U-Net's, never under plain) and
 * conversion back onto the same graph: every key matched by name, none
 * dropped, the same tensors in the same order with the same rho links and
 * priors, bit for bit (torchbnn's rho through log sigma: within float
 * rounding, and exactly below -30).
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"
#include "internal.h"
#include "twin.h"
#include "vbseg.h"

static const char *const graphs[2] = {FUZZ_DIR "/corpus/vbseg/unet2d.vbseg", FUZZ_DIR "/corpus/onnx/norm-act.onnx"};

static int one_line(const char *s) { return s && s[0] && !strchr(s, '\n'); }

/* softplus(rho) in double, by its branches */
static double softplus(double r) { return r > 30 ? r : log1p(exp(r)); }

/* m and b (b converted from m's export under nm) hold the same tensors */
static void same_model(const vbs_model *m, const vbs_model *b, vbs_naming nm) {
    const vbs_def *x = &m->def, *y = &b->def;
    if (x->n_tensors != y->n_tensors) fuzz_fail("converted back, the model has another tensor count");
    for (int t = 0; t < x->n_tensors; t++) {
        const vbs_tensor_def *p = &x->tensors[t], *q = &y->tensors[t];
        if (strcmp(p->name, q->name) || p->role != q->role || p->numel != q->numel || p->ndim != q->ndim ||
            memcmp(p->dims, q->dims, sizeof(p->dims[0]) * (size_t)p->ndim))
            fuzz_fail("converted back, a tensor has another name, role or shape");
        if (!p->rho != !q->rho || (p->rho && strcmp(p->rho, q->rho)) || p->has_prior != q->has_prior ||
            (p->has_prior && memcmp(&p->prior, &q->prior, sizeof p->prior)))
            fuzz_fail("converted back, a mean has another rho or prior");
        if (!p->data != !q->data) fuzz_fail("converted back, a tensor lost or gained its data");
        if (!p->data) continue;
        if (p->role != VBS_ROLE_RHO || nm != VBS_NAMING_TORCHBNN) {
            if (memcmp(p->data, q->data, sizeof(float) * (size_t)p->numel)) fuzz_fail("converted back, a tensor's bytes differ");
            continue;
        }
        for (int64_t i = 0; i < p->numel; i++) {
            if (p->data[i] < -30.f) { /* log sigma = rho both ways: exact */
                if (memcmp(&p->data[i], &q->data[i], sizeof(float))) fuzz_fail("converted back, a torchbnn rho below -30 moved");
                continue;
            }
            /* log sigma rounded to float: relative 2^-24 of it, through softplus^-1 */
            double s = softplus(p->data[i]), s2 = softplus(q->data[i]);
            double tol = 4e-7 * fmax(1.0, fabs(log(fmax(s, 1e-300)))) * s + 1e-45;
            if (fabs(s2 - s) > tol) fuzz_fail("converted back, a torchbnn sigma moved beyond float rounding");
        }
    }
}

/* The graph's parameter tensors (plain or mean), which the report accounts for. */
static int n_params(const vbs_model *m) {
    int n = 0;
    for (int t = 0; t < m->def.n_tensors; t++) n += m->def.tensors[t].role == VBS_ROLE_PLAIN || m->def.tensors[t].role == VBS_ROLE_MU;
    return n;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    fuzz_status = -1;
    if (size < 1) return 0;
    int sel = data[0];
    const char *graph = graphs[sel & 1];
    vbs_twin_opts o = {.naming = (vbs_naming)((sel >> 1 & 7) % 5), .prior_given = sel >> 4 & 1,
                       .prior_sigma = 0.05f * (float)(1 + (sel >> 5))};
    char err[1024];
    vbs_ckpt c;
    fuzz_cap_on(size, 0);
    vbs_status st = vbs_ckpt_read_safetensors_memory(data + 1, size - 1, "input.safetensors", &c, err, sizeof err);
    fuzz_cap_off();
    if (st) {
        if (!one_line(err)) fuzz_fail("the safetensors reader refused without a one-line message");
        fuzz_status = (int)st;
        return 0;
    }
    vbs_model *m = NULL;
    vbs_twin_report rep;
    fuzz_cap_on(size, 0);
    st = vbs_twin_convert(&c, "input.safetensors", graph, &o, &m, &rep);
    fuzz_cap_off();
    if (st) {
        if (!m || !one_line(vbs_model_errmsg(m))) fuzz_fail("vbs_twin_convert refused without a one-line message");
        vbs_model_free(m);
        vbs_ckpt_free(&c);
        fuzz_status = (int)st;
        return 0;
    }
    /* the report: every key dropped, a spread of a variational weight, matched, or unmatched; every graph
     * parameter matched or kept */
    if (rep.naming == VBS_NAMING_AUTO || (o.naming != VBS_NAMING_AUTO && rep.naming != o.naming) ||
        rep.detected != (o.naming == VBS_NAMING_AUTO) ||
        c.n != rep.n_dropped + rep.n_variational + rep.n_by_name + rep.n_by_bytes + rep.n_unmatched_ckpt ||
        n_params(m) != rep.n_by_name + rep.n_by_bytes + rep.n_unmatched_graph)
        fuzz_fail("an inconsistent conversion report");
    for (int i = 0; i < rep.n_unmatched_ckpt; i++) {
        int k = 0;
        while (k < c.n && rep.unmatched_ckpt[i] != c.t[k].name) k++;
        if (k == c.n) fuzz_fail("an unmatched checkpoint key that is not one of the checkpoint's");
    }
    vbs_twin_report_free(&rep);
    vbs_ckpt_free(&c);
    /* run, as `vbseg run` would; export and conversion back do not depend on it */
    int run = fuzz_run_model(m, size);
    int huge = 0; /* a rho near FLT_MAX may round past it through torchbnn's log sigma, and is refused back */
    for (int t = 0; t < m->def.n_tensors; t++)
        for (int64_t i = 0; m->def.tensors[t].role == VBS_ROLE_RHO && i < m->def.tensors[t].numel; i++)
            huge |= m->def.tensors[t].data[i] > 1e37f;
    /* exported in every convention, and each converted back onto the same graph */
    const char *out = fuzz_path("export.safetensors");
    for (vbs_naming x = VBS_NAMING_PLAIN; x <= VBS_NAMING_TORCHBNN; x++) {
        remove(out);
        fuzz_cap_on(size, 0);
        vbs_status e = vbs_twin_export_safetensors(m, x, out);
        fuzz_cap_off();
        if (e) { /* a graph name the convention cannot spell: not one of the U-Net's, nor under plain */
            if (!one_line(vbs_model_errmsg(m))) fuzz_fail("vbs_twin_export_safetensors refused without a one-line message");
            if (graph == graphs[0] || x == VBS_NAMING_PLAIN) {
                fprintf(stderr, "%s\n", vbs_model_errmsg(m));
                fuzz_fail("vbs_twin_export_safetensors refused names it can spell");
            }
            continue;
        }
        if (huge && x == VBS_NAMING_TORCHBNN) continue;
        vbs_ckpt back;
        if (vbs_ckpt_read_safetensors(out, &back, err, sizeof err)) fuzz_fail("an exported checkpoint does not read back");
        vbs_twin_opts o2 = o;
        o2.naming = x;
        vbs_model *b = NULL;
        if (vbs_twin_convert(&back, out, graph, &o2, &b, &rep)) {
            fprintf(stderr, "%s\n", vbs_model_errmsg(b));
            fuzz_fail("an exported checkpoint does not convert back onto its graph");
        }
        if (rep.naming != x || rep.n_dropped || rep.n_by_bytes || rep.n_unmatched_ckpt || rep.n_unmatched_graph)
            fuzz_fail("converted back, a key was dropped or not matched by name");
        same_model(m, b, x);
        vbs_twin_report_free(&rep);
        vbs_model_free(b);
        vbs_ckpt_free(&back);
    }
    vbs_model_free(m);
    fuzz_status = run;
    return 0;
}
