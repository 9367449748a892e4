/*
 * fuzz_onnx.c: libFuzzer target for the ONNX importer (vbs_convert_onnx, the
 * public entry point, with the default options: MOPED variational weights
 * and the activation inferred). The input is written to a scratch file in a
 * folder that holds nothing else, so an external-data reference finds no
 * file beside it (and none outside it may be read). A model that converts
 * is then run as fuzz_vbseg runs a loaded one (fuzz_run_model).
 */
#include "fuzz.h"
#include "vbseg.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *path = fuzz_path("model.onnx");
    fuzz_status = -1;
    if (fuzz_write(path, data, size)) return 0;
    vbs_convert_opts o = vbs_convert_defaults();
    vbs_model *m = NULL;
    fuzz_cap_on(size, 0);
    vbs_status st = vbs_convert_onnx(path, &o, &m);
    if (!m) fuzz_fail("vbs_convert_onnx left no model to read the message from");
    if (st && !vbs_model_errmsg(m)[0]) fuzz_fail("a refusal without a message");
    fuzz_status = st ? (int)st : fuzz_run_model(m, size);
    fuzz_cap_off();
    vbs_model_free(m);
    return 0;
}
