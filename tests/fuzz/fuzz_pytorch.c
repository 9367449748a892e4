/*
 * fuzz_pytorch.c: libFuzzer target for the PyTorch checkpoint reader
 * (converters/pytorch.c, issue 11): the input is a torch.save zip archive
 * given to vbs_ckpt_read_pytorch_memory, with no key (the top-level state
 * dict, else 'state_dict', else 'model_state_dict'). The zip's CRC-32 is
 * computed but not refused in the fuzz build (FUZZING_BUILD_MODE_UNSAFE_FOR_PRODUCTION),
 * so that mutated pickles reach the unpickler; the replay keeps the check.
 * An accepted checkpoint must have consistent shapes and readable data.
 */
#include <stdlib.h>
#include <string.h>

#include "ckpt.h"
#include "fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    vbs_ckpt c;
    char err[512];
    fuzz_status = -1;
    fuzz_cap_on(size, 0);
    vbs_status st = vbs_ckpt_read_pytorch_memory(data, size, "input.pt", NULL, &c, err, sizeof err);
    fuzz_cap_off();
    if (st == VBS_OK) {
        for (int i = 0; i < c.n; i++) {
            const vbs_ckpt_tensor *t = &c.t[i];
            int64_t n = 1;
            for (int d = 0; d < t->ndim; d++) n *= t->dims[d];
            if (!t->name || n != t->numel || t->ndim < 0 || t->ndim > VBS_MAX_DIMS)
                fuzz_fail("vbs_ckpt_read_pytorch_memory accepted a tensor whose shape and numel disagree");
            if (t->data && n) {
                volatile float sink = t->data[0] + t->data[n - 1]; /* the first and last elements are readable */
                (void)sink;
            }
        }
    } else if (!err[0] || strchr(err, '\n')) {
        fuzz_fail("vbs_ckpt_read_pytorch_memory refused without a one-line message");
    }
    vbs_ckpt_free(&c);
    fuzz_status = (int)st;
    return 0;
}
