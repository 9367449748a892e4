/*
 * uncertainty_summary.c: the smallest complete use of the public API.
 * Loads a model, reads one NIfTI volume per input channel, normalises
 * it as the model card says, runs N Monte-Carlo samples and prints how
 * much of the scan is segmented and how uncertain the model is.
 *
 *   uncertainty_summary MODEL.vbseg SAMPLES CHANNEL.nii.gz [CHANNEL.nii.gz ...]
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "vbseg.h"

int main(int argc, char **argv) {
    if (argc < 4) {
        fprintf(stderr, "usage: uncertainty_summary MODEL SAMPLES CHANNEL.nii[.gz] ...\n");
        return 2;
    }
    vbs_model *m;
    if (vbs_model_load(argv[1], &m) != VBS_OK) {
        fprintf(stderr, "%s\n", vbs_model_errmsg(m));
        vbs_model_free(m);
        return 1;
    }
    int nch = argc - 3, rc = 1;
    int64_t dims[4] = {0};
    float *x = NULL;
    vbs_volume *first = NULL;
    for (int c = 0; c < nch; c++) {
        vbs_volume *v;
        char err[512];
        if (vbs_volume_read_nifti(argv[3 + c], &v, err, sizeof err) != VBS_OK) {
            fprintf(stderr, "%s\n", err);
            goto out;
        }
        int64_t d[4];
        vbs_volume_dims(v, d);
        if (c == 0) {
            memcpy(dims, d, sizeof d);
            x = malloc(sizeof(float) * (size_t)(d[0] * d[1] * d[2] * nch));
        } else if (d[0] != dims[0] || d[1] != dims[1] || d[2] != dims[2]) {
            fprintf(stderr, "%s: size differs from the first channel\n", argv[3 + c]);
            vbs_volume_free(v);
            goto out;
        }
        int64_t n = dims[0] * dims[1] * dims[2];
        if (x) memcpy(x + c * n, vbs_volume_data(v), sizeof(float) * (size_t)n);
        if (c == 0) first = v;
        else vbs_volume_free(v);
    }
    if (!x) goto out;
    int64_t nvox = dims[0] * dims[1] * dims[2];
    vbs_normalize(vbs_model_card(m), x, nch, nvox);
    int64_t shape[5] = {1, nch, dims[2], dims[1], dims[0]};
    vbs_session *s;
    vbs_session_new(m, &s);
    vbs_mc_opts o = vbs_mc_defaults();
    o.n_samples = atoi(argv[2]);
    if (vbs_session_run_mc(s, x, shape, 5, &o) != VBS_OK) {
        fprintf(stderr, "%s\n", vbs_session_errmsg(s));
        vbs_session_free(s);
        goto out;
    }
    const float *lab, *mi, *ent;
    vbs_map_info info;
    vbs_session_map(s, VBS_MAP_LABELS, &lab, &info);
    vbs_session_map(s, VBS_MAP_MUTUAL_INFO, &mi, NULL);
    vbs_session_map(s, VBS_MAP_ENTROPY, &ent, NULL);
    double fg = 0, mi_sum = 0, ent_sum = 0;
    for (int64_t i = 0; i < nvox; i++) {
        fg += lab[i] != 0.f;
        mi_sum += mi[i];
        ent_sum += ent[i];
    }
    printf("samples: %lld\nvoxels: %lld, labelled non-zero: %.0f\n", (long long)info.n_samples, (long long)nvox, fg);
    printf("mean predictive entropy: %.5f nats\nmean mutual information: %.5f nats\n", ent_sum / nvox, mi_sum / nvox);
    vbs_session_free(s);
    rc = 0;
out:
    free(x);
    vbs_volume_free(first);
    vbs_model_free(m);
    return rc;
}
