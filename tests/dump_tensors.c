/*
 * dump_tensors.c: test helper. Loads a .vbseg model and writes every
 * tensor as DIR/<index>.npy plus DIR/manifest.txt ("index role name"),
 * so that the PyTorch reference test can rebuild the network from the
 * stored means and rhos without parsing the format itself; and
 * DIR/nodes.txt ("index op name", plus the ratio of a Dropout: its index
 * keys its masks).
 */
#include <stdio.h>

#include "internal.h"

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: dump_tensors MODEL DIR\n");
        return 2;
    }
    vbs_model *m;
    if (vbs_model_load(argv[1], &m)) {
        fprintf(stderr, "%s\n", vbs_model_errmsg(m));
        return 1;
    }
    char path[4096], err[512];
    snprintf(path, sizeof path, "%s/manifest.txt", argv[2]);
    FILE *f = fopen(path, "w");
    if (!f) return 1;
    for (int i = 0; i < m->def.n_tensors; i++) {
        const vbs_tensor_def *t = &m->def.tensors[i];
        snprintf(path, sizeof path, "%s/%d.npy", argv[2], i);
        if (vbs_write_npy(path, t->data, t->dims, t->ndim, err, sizeof err)) {
            fprintf(stderr, "%s\n", err);
            return 1;
        }
        fprintf(f, "%d %s %s\n", i, t->role == VBS_ROLE_MU ? "mu" : t->role == VBS_ROLE_RHO ? "rho" : "plain", t->name);
    }
    fclose(f);
    snprintf(path, sizeof path, "%s/nodes.txt", argv[2]);
    if (!(f = fopen(path, "w"))) return 1;
    for (int i = 0; i < m->g.n_nodes; i++) {
        fprintf(f, "%d %s %s", i, m->def.nodes[i].op_type, m->def.nodes[i].name);
        if (m->g.nodes[i].op == VBS_OP_DROPOUT) fprintf(f, " %.9g", m->g.nodes[i].a.ratio);
        fprintf(f, "\n");
    }
    fclose(f);
    vbs_model_free(m);
    return 0;
}
