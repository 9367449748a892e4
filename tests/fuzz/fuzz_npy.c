/*
 * fuzz_npy.c: libFuzzer target for the .npy readers, through the public
 * path entry points: the input is written to a scratch file, then read as a
 * batch (vbs_read_npy) and as a volume (vbs_volume_read_npy). Both must
 * refuse or accept without a memory error, a leak or an allocation over the
 * cap (fuzz.h), and they must agree (a volume is an array of rank 2 to 4).
 */
#include <stdlib.h>

#include "fuzz.h"
#include "vbseg.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *path = fuzz_path("input.npy");
    fuzz_status = -1;
    if (fuzz_write(path, data, size)) return 0;
    char err[512];
    float *x = NULL;
    int64_t dims[VBS_MAX_DIMS];
    int ndim = 0;
    int64_t nan = 0;
    fuzz_cap_on(size, 0);
    vbs_status a = vbs_read_npy(path, &x, dims, &ndim, &nan, err, sizeof err);
    vbs_volume *v = NULL;
    vbs_status b = vbs_volume_read_npy(path, &v, err, sizeof err);
    fuzz_cap_off();
    /* a batch read that succeeds has dims whose product the data hold */
    if (!a) {
        int64_t n = 1;
        for (int i = 0; i < ndim; i++) n *= dims[i];
        volatile float sink = n ? x[n - 1] : 0.f; /* the last element is readable */
        (void)sink;
    }
    free(x);
    vbs_volume_free(v);
    /* a volume is a batch of rank 2..4: the two agree on what they accept */
    if ((!a && ndim >= 2 && ndim <= 4) != !b) fuzz_fail("vbs_read_npy and vbs_volume_read_npy disagree on a file");
    fuzz_status = (int)a;
    return 0;
}
