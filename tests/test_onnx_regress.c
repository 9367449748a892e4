/*
 * test_onnx_regress.c: the API side of issue 10's ONNX findings (the CLI
 * side is onnx_regress.sh). A model without outputs must give an error
 * status everywhere, never a crash: built through the builder (which goes
 * through vbs_model_init like every load), converted from ONNX, and, for a
 * model whose outputs vanish after it loaded, vbs_session_run_mc itself.
 * Oracle: the status codes and the one-line messages the README promises.
 * Usage: test_onnx_regress DIR (tests/fuzz/regressions/onnx).
 */
#include <stdlib.h>

#include "../models/builder.h"
#include "check.h"

/* input x (1,1,4,4) -> Relu -> y; the output declared only if asked */
static vbs_status build(int with_output, vbs_model **m) {
    vbs_builder *b = vbs_b_new(1);
    int64_t in[4] = {1, 1, 4, 4};
    vbs_b_input(b, "x", 4, in, NULL);
    const char *ins[1] = {"x"};
    vbs_b_node(b, VBS_OP_RELU, "y", 1, ins, 0, NULL);
    if (with_output) vbs_b_output(b, "y");
    return vbs_b_finish(b, "built", m);
}

int main(int argc, char **argv) {
    if (argc != 2) { printf("usage: test_onnx_regress DIR\n"); return 2; }
    float img[16] = {0};
    int64_t shape[4] = {1, 1, 4, 4};
    vbs_mc_opts o = vbs_mc_defaults();
    o.n_samples = 2;

    /* built without outputs: refused when it is built, so no session can take it */
    vbs_model *m = NULL;
    vbs_status st = build(0, &m);
    const char *msg = m ? vbs_model_errmsg(m) : "";
    CHECK(st != VBS_OK && strstr(msg, "built: the graph has no outputs"), "status %s: %s", vbs_status_name(st), msg);
    vbs_session *s = NULL;
    CHECK(vbs_session_new(m, &s) != VBS_OK && !s, "a session on a model that did not build");
    CHECK(vbs_session_run_mc(s, img, shape, 4, &o) == VBS_ERR_ARG, "run_mc without a session");
    vbs_model_free(m);

    /* a loaded model whose outputs are gone (the def edited in memory): run_mc refuses, naming why */
    m = NULL;
    st = build(1, &m);
    CHECK(st == VBS_OK, "the same graph with its output builds: %s", m ? vbs_model_errmsg(m) : "");
    if (st == VBS_OK && vbs_session_new(m, &s) == VBS_OK) {
        CHECK(vbs_session_run_mc(s, img, shape, 4, &o) == VBS_OK, "run_mc with the output: %s", vbs_session_errmsg(s));
        m->def.n_outputs = 0;
        st = vbs_session_run_mc(s, img, shape, 4, &o);
        CHECK(st == VBS_ERR_GRAPH && strstr(vbs_session_errmsg(s), "no outputs"), "status %s: %s", vbs_status_name(st),
              vbs_session_errmsg(s));
        m->def.n_outputs = 1;
        vbs_session_free(s);
    }
    vbs_model_free(m);

    /* converted: the graph and the node without outputs are refused by name */
    static const struct { const char *file, *needle; } conv[] = {
        {"graph-without-outputs.onnx", "graph 'g' has no outputs"},
        {"node-without-outputs.onnx", "node 0 ('relu', Relu) has no outputs"},
    };
    for (size_t i = 0; i < sizeof conv / sizeof *conv; i++) {
        char path[4096];
        snprintf(path, sizeof path, "%s/%s", argv[1], conv[i].file);
        m = NULL;
        st = vbs_convert_onnx(path, NULL, &m);
        msg = m ? vbs_model_errmsg(m) : "";
        CHECK(st == VBS_ERR_FORMAT && strstr(msg, path) && strstr(msg, conv[i].needle), "%s: status %s: %s", conv[i].file,
              vbs_status_name(st), msg);
        CHECK(vbs_session_new(m, &s) != VBS_OK && !s, "%s: a session on a refused conversion", conv[i].file);
        vbs_model_free(m);
    }
    return finish("test_onnx_regress");
}
