/*
 * fuzz_dataset.c: libFuzzer target for the dataset.json reader of training
 * folders (vbs_read_dataset_json in runtime/json.c, what `vbseg train`
 * reads beside nnU-Net and MSD images; it has no public entry point), on a
 * scratch file. A file it accepts must give counts within its arrays and
 * ascending label values starting at 0, as the trainer relies on.
 */
#include <stdio.h>

#include "cases.h"
#include "fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *path = fuzz_path("dataset.json");
    fuzz_status = -1;
    if (fuzz_write(path, data, size)) return 0;
    vbs_dataset_meta meta;
    char ending[16], err[1024];
    fuzz_cap_on(size, 0);
    int ok = vbs_read_dataset_json(path, &meta, ending, sizeof ending, err, sizeof err);
    fuzz_cap_off();
    if (ok) {
        if (meta.n_channels < 0 || meta.n_channels > VBS_MAX_CHANNELS || meta.n_labels < 0 || meta.n_labels > VBS_MAX_LABELS)
            fuzz_fail("dataset.json: counts outside the arrays");
        if (meta.n_labels && meta.label_value[0] != 0) fuzz_fail("dataset.json: labels without the background, 0");
        for (int i = 1; i < meta.n_labels; i++)
            if (meta.label_value[i] <= meta.label_value[i - 1]) fuzz_fail("dataset.json: label values not ascending");
    }
    fuzz_status = ok ? 0 : 1;
    return 0;
}
