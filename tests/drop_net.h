/*
 * drop_net.h: test helper: the small MC-dropout network test_dropout and
 * test_train share: 2 channels -> conv 3x3 (hidden) -> relu -> Dropout
 * (ratio) -> conv 1x1 (3 classes, softmax), with the caller's plain weights.
 */
#ifndef VBS_TESTS_DROP_NET_H
#define VBS_TESTS_DROP_NET_H

#include "builder.h"

/* wa: hidden x 2 x 3 x 3, ba: hidden, wb: 3 x hidden, bb: 3; batch > 0 fixes
 * the graph's batch. Returns the card; the caller finishes the builder. */
static inline vbs_card *drop_net(vbs_builder *b, int batch, int hidden, float ratio, const float *wa, const float *ba, const float *wb,
                                 const float *bb) {
    int64_t in[4] = {batch > 0 ? batch : -1, 2, -1, -1}, w1[4] = {hidden, 2, 3, 3}, b1[1] = {hidden}, w2[4] = {3, hidden, 1, 1}, b2[1] = {3};
    int64_t k3[2] = {3, 3}, p1[4] = {1, 1, 1, 1};
    const char *params[4] = {"N", NULL, "H", "W"};
    vbs_b_input(b, "image", 4, in, params);
    vbs_attr a[2] = {vbs_b_ints(b, "kernel_shape", 2, k3), vbs_b_ints(b, "pads", 4, p1)};
    const char *i1[3] = {"image", vbs_b_tensor(b, "c1.w", 4, w1, wa), vbs_b_tensor(b, "c1.b", 1, b1, ba)};
    const char *h = vbs_b_node(b, VBS_OP_CONV, "c1", 3, i1, 2, a);
    h = vbs_b_node(b, VBS_OP_RELU, "r1", 1, &h, 0, NULL);
    vbs_attr r = vbs_b_float(b, "ratio", ratio);
    h = vbs_b_node(b, VBS_OP_DROPOUT, "d1", 1, &h, 1, &r);
    const char *i2[3] = {h, vbs_b_tensor(b, "c2.w", 4, w2, wb), vbs_b_tensor(b, "c2.b", 1, b2, bb)};
    vbs_b_node(b, VBS_OP_CONV, "logits", 3, i2, 0, NULL);
    vbs_b_output(b, "logits");
    vbs_card *c = vbs_b_card(b);
    c->output_activation = VBS_ACT_SOFTMAX;
    return c;
}

#endif
