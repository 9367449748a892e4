/*
 * fuzz_vbseg.c: libFuzzer target for the .vbseg loader from memory
 * (vbs_model_load_memory, the public entry point, through fuzz_load_model:
 * an aligned copy, and the header CRC repaired when that is all that is
 * refused), then, for a model that loads, what `vbseg info` and `vbseg run`
 * do with it (fuzz_run_model: the summaries, a mean forward pass and a
 * 2-sample Monte-Carlo run on a small input). A model that loads but
 * crashes on its first run is a finding.
 */
#include <stdlib.h>

#include "fuzz.h"
#include "vbseg.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    vbs_model *m;
    void *buf;
    fuzz_cap_on(size, 0);
    int st = fuzz_load_model(data, size, "input.vbseg", &m, &buf);
    fuzz_status = st ? st : fuzz_run_model(m, size);
    fuzz_cap_off();
    vbs_model_free(m);
    free(buf);
    return 0;
}
