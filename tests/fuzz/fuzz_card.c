/*
 * fuzz_card.c: libFuzzer target for the JSON model card reader
 * (vbs_read_card_json in runtime/json.c, what `vbseg convert --card` calls:
 * the card has no public entry point of its own), then, for a card that
 * reads, the converter's checks of it against a graph: a fixed ONNX model
 * (one 1x1 Conv from 2 channels to 3 raw logits over symbolic N, H, W; the
 * bytes of corpus/onnx/conv-head.onnx, written by make_corpus.py) converted
 * with the card (vbs_convert_onnx). The input is written to a scratch file.
 */
#include <stdio.h>
#include <stdlib.h>

#include "fuzz.h"
#include "internal.h"
#include "vbseg.h"

static const uint8_t conv_head[] = {
    8, 8, 66, 2, 16, 13, 58, 157, 1, 10, 24, 10, 1, 120, 10, 1, 119, 10, 1, 98, 18, 1, 121, 26, 4, 104, 101, 97, 100, 34, 4, 67, 111,
    110, 118, 18, 1, 103, 42, 39, 8, 3, 8, 2, 8, 1, 8, 1, 16, 1, 66, 1, 119, 74, 24, 0, 0, 0, 63, 0, 0, 128, 190, 205, 204, 204, 61,
    205, 204, 76, 62, 154, 153, 153, 190, 205, 204, 204, 62, 42, 21, 8, 3, 16, 1, 66, 1, 98, 74, 12, 0, 0, 0, 0, 205, 204, 204, 61,
    205, 204, 204, 189, 90, 30, 10, 1, 120, 18, 25, 10, 23, 8, 1, 18, 19, 10, 3, 18, 1, 78, 10, 2, 8, 2, 10, 3, 18, 1, 72, 10, 3,
    18, 1, 87, 98, 30, 10, 1, 121, 18, 25, 10, 23, 8, 1, 18, 19, 10, 3, 18, 1, 78, 10, 2, 8, 3, 10, 3, 18, 1, 72, 10, 3, 18, 1, 87};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static char model[8192];
    if (!model[0]) {
        snprintf(model, sizeof model, "%s", fuzz_path("conv-head.onnx"));
        if (fuzz_write(model, conv_head, sizeof conv_head)) fuzz_fail("cannot write the fixed ONNX model");
    }
    const char *path = fuzz_path("card.json");
    fuzz_status = -1;
    if (fuzz_write(path, data, size)) return 0;
    vbs_card card = {0};
    card.output_activation = VBS_ACT_AUTO; /* as `vbseg convert` starts it */
    char **pool = NULL, err[1024];
    int npool = 0;
    fuzz_cap_on(size, 0);
    int ok = vbs_read_card_json(path, &card, &pool, &npool, err, sizeof err);
    vbs_status st = ok ? VBS_OK : VBS_ERR_FORMAT;
    if (ok) {
        vbs_convert_opts o = vbs_convert_defaults();
        o.card = &card;
        vbs_model *m = NULL;
        st = vbs_convert_onnx(model, &o, &m);
        vbs_model_free(m);
    }
    fuzz_cap_off();
    for (int i = 0; i < npool; i++) free(pool[i]);
    free(pool);
    fuzz_status = (int)st;
    return 0;
}
