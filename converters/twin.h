/*
 * twin.h: a checkpoint (ckpt.h) matched onto a graph, the ONNX export of
 * the network's deterministic twin or a .vbseg model (`vbseg convert CKPT
 * --graph`), and a model written back as a checkpoint in one of the naming
 * conventions (`vbseg export OUT.safetensors`). See twin.c.
 */
#ifndef VBS_CONVERTERS_TWIN_H
#define VBS_CONVERTERS_TWIN_H

#include "ckpt.h"
#include "naming.h"

typedef struct {
    vbs_naming naming;        /* AUTO: detected from the keys */
    int prior_given;          /* 0: N(0, 1) is used and the card records "prior": "unknown" */
    float prior_sigma;        /* the Gaussian prior N(0, prior_sigma^2) of every variational weight */
    const vbs_card *card;     /* an ONNX twin's card (borrowed, copied), or NULL; refused with a .vbseg graph */
} vbs_twin_opts;

typedef struct {
    vbs_naming naming;        /* the convention used */
    int detected;             /* 1: found by AUTO */
    int n_by_name, n_by_bytes, n_variational, n_dropped;
    int n_unmatched_ckpt, n_unmatched_graph;
    const char **unmatched_ckpt;  /* checkpoint keys (borrowed from the checkpoint) */
    const char **unmatched_graph; /* graph tensors kept as they were (borrowed from the model) */
} vbs_twin_report;

/* Fills the weights of the graph at graph_path (a .vbseg file, by its
 * magic bytes, else ONNX imported deterministic, BatchNormalization kept)
 * from checkpoint c (read from ckpt_path, named in messages). *out is set
 * as by vbs_model_load: on failure it holds only the one-line message. rep
 * (zeroed here; free with vbs_twin_report_free) is filled on success. */
vbs_status vbs_twin_convert(const vbs_ckpt *c, const char *ckpt_path, const char *graph_path, const vbs_twin_opts *o,
                            vbs_model **out, vbs_twin_report *rep);
void vbs_twin_report_free(vbs_twin_report *r);

/* Writes every variational weight's mean and spread (rho; torchbnn: log
 * sigma = log(softplus(rho))) and every plain tensor of m as F32 under
 * convention n (not AUTO), the card's JSON in __metadata__["vbseg.card"]
 * and the convention in __metadata__["vbseg.naming"], atomically. On
 * failure m's message names the file and the tensor. */
vbs_status vbs_twin_export_safetensors(vbs_model *m, vbs_naming n, const char *path);

#endif
