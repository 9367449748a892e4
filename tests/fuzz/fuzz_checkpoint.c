/*
 * fuzz_checkpoint.c: libFuzzer target for the training checkpoint reader as
 * `vbseg train --resume` uses it: the file loaded from memory
 * (vbs_model_load_memory, through fuzz_load_model, as fuzz_vbseg does), split into model and training state
 * (vbs_checkpoint_open), a trainer made for the model (Adam, or SGD when the
 * checkpoint keeps no second moments) and the optimiser's moments restored
 * into it (vbs_checkpoint_restore). Refusals are fine; memory errors, leaks
 * and allocations over the cap (fuzz.h) are findings.
 */
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"
#include "internal.h"
#include "trainer.h"
#include "vbseg.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    vbs_model *m;
    void *buf;
    char err[VBS_ERRLEN];
    fuzz_cap_on(size, 0);
    vbs_status st = fuzz_load_model(data, size, "input.ckpt", &m, &buf);
    vbs_checkpoint ck;
    if (!st) st = vbs_checkpoint_open(m, "input.ckpt", &ck, err);
    if (!st) {
        /* what a resumed run reads of the state */
        if (ck.state.n_log < 0 || (ck.state.n_log && !ck.state.log)) fuzz_fail("a checkpoint's epoch log is inconsistent");
        int second = 0;
        for (int i = 0; i < ck.n_optim; i++) second |= !strncmp(ck.optim[i].name, "adam.v:", 7);
        vbs_trainer_cfg cfg;
        memset(&cfg, 0, sizeof cfg);
        cfg.opt.kind = second ? VBS_OPT_ADAM : VBS_OPT_SGD;
        cfg.opt.lr = 1e-3f;
        cfg.threads = 1;
        cfg.groups = 1;
        vbs_trainer t;
        st = vbs_trainer_init(&t, m, &cfg, err);
        if (!st) st = vbs_checkpoint_restore(&t, &ck, "input.ckpt", err);
        vbs_trainer_free(&t);
    }
    fuzz_cap_off();
    fuzz_status = (int)st;
    vbs_model_free(m);
    free(buf);
    return 0;
}
