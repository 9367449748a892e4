/*
 * test_onnx.c: the ONNX importer on files written here with protobuf-c:
 * MOPED and constant sigma against the formula; a 10,000-level nesting
 * bomb refused before unpacking; external data that is absolute, has
 * "..", is a symlink, or is short; initializers whose bytes lie about their
 * dims; unsupported ops and attributes named with their node; dynamic
 * Resize scales refused. Every refusal names the file and the culprit.
 * The model card against the graph: the output activation inferred from
 * hand-built graph ends (Softmax over channels or another axis, wrapped in
 * Transposes as before opset 13, behind Identity and Dropout; Sigmoid; raw
 * logits for 1 and 2 channels) and a contradicting one refused; the value a
 * training loss reads as the logits (vbs_model_logits: before the graph's
 * own Softmax or Sigmoid, in the output's axis order; refused for a Sigmoid
 * over 2 channels and when no value has that order); channel and
 * label counts refused by the converter, the builder and the file loader;
 * a Monte-Carlo run of an activation-none model refused when its values are
 * not probabilities, and its maps against the analytic ones when they are.
 */
#include <stdlib.h>
#include <unistd.h>

#include "builder.h"
#include "check.h"
#include "internal.h"
#include "onnx.pb-c.h"

static char dir[] = "/tmp/vbs_test_onnx.XXXXXX";

/* A Conv model: x (1,1,4,4), W (2,1,3,3) initializer, B (2) initializer. */
typedef struct {
    Onnx__ModelProto m;
    Onnx__GraphProto g;
    Onnx__NodeProto n;
    Onnx__TensorProto w, b;
    Onnx__ValueInfoProto in, out;
    Onnx__TypeProto ty;
    Onnx__TypeProto__Tensor tt;
    Onnx__TensorShapeProto sh;
    Onnx__TensorShapeProto__Dimension d[4];
    Onnx__TensorShapeProto__Dimension *dp[4];
    Onnx__OperatorSetIdProto op;
    Onnx__OperatorSetIdProto *ops[1];
    Onnx__NodeProto *nodes[1];
    Onnx__TensorProto *inits[2];
    Onnx__ValueInfoProto *ins[1], *outs[1];
    char *nin[3], *nout[1];
    int64_t wd[4], bd[1];
    float wv[18], bv[2];
} conv_model;

static void make_conv(conv_model *c) {
    memset(c, 0, sizeof *c);
    onnx__model_proto__init(&c->m);
    onnx__graph_proto__init(&c->g);
    onnx__node_proto__init(&c->n);
    onnx__tensor_proto__init(&c->w);
    onnx__tensor_proto__init(&c->b);
    onnx__value_info_proto__init(&c->in);
    onnx__value_info_proto__init(&c->out);
    onnx__type_proto__init(&c->ty);
    onnx__type_proto__tensor__init(&c->tt);
    onnx__tensor_shape_proto__init(&c->sh);
    onnx__operator_set_id_proto__init(&c->op);
    c->op.has_version = 1;
    c->op.version = 13;
    c->ops[0] = &c->op;
    c->m.n_opset_import = 1;
    c->m.opset_import = c->ops;
    c->m.graph = &c->g;
    int64_t dims[4] = {1, 1, 4, 4};
    for (int i = 0; i < 4; i++) {
        onnx__tensor_shape_proto__dimension__init(&c->d[i]);
        c->d[i].value_case = ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_VALUE;
        c->d[i].dim_value = dims[i];
        c->dp[i] = &c->d[i];
    }
    c->sh.n_dim = 4;
    c->sh.dim = c->dp;
    c->tt.has_elem_type = 1;
    c->tt.elem_type = 1;
    c->tt.shape = &c->sh;
    c->ty.value_case = ONNX__TYPE_PROTO__VALUE_TENSOR_TYPE;
    c->ty.tensor_type = &c->tt;
    c->in.name = "x";
    c->in.type = &c->ty;
    c->out.name = "y";
    c->ins[0] = &c->in;
    c->outs[0] = &c->out;
    c->g.n_input = 1;
    c->g.input = c->ins;
    c->g.n_output = 1;
    c->g.output = c->outs;
    c->wd[0] = 2; c->wd[1] = 1; c->wd[2] = 3; c->wd[3] = 3;
    for (int i = 0; i < 18; i++) c->wv[i] = (float)(i - 6) * 0.1f; /* includes w = 0 */
    c->bv[0] = 0.5f; c->bv[1] = -2.f;
    c->w.name = "W"; c->w.has_data_type = 1; c->w.data_type = 1; c->w.n_dims = 4; c->w.dims = c->wd;
    c->w.n_float_data = 18; c->w.float_data = c->wv;
    c->bd[0] = 2;
    c->b.name = "B"; c->b.has_data_type = 1; c->b.data_type = 1; c->b.n_dims = 1; c->b.dims = c->bd;
    c->b.has_raw_data = 1; c->b.raw_data.len = 8; c->b.raw_data.data = (uint8_t *)c->bv;
    c->inits[0] = &c->w;
    c->inits[1] = &c->b;
    c->g.n_initializer = 2;
    c->g.initializer = c->inits;
    c->nin[0] = "x"; c->nin[1] = "W"; c->nin[2] = "B";
    c->nout[0] = "y";
    c->n.name = "conv1";
    c->n.op_type = "Conv";
    c->n.n_input = 3;
    c->n.input = c->nin;
    c->n.n_output = 1;
    c->n.output = c->nout;
    c->nodes[0] = &c->n;
    c->g.n_node = 1;
    c->g.node = c->nodes;
}

static void save(const char *name, const ProtobufCMessage *msg) {
    char path[300];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    size_t n = protobuf_c_message_get_packed_size(msg);
    uint8_t *b = malloc(n + 1);
    protobuf_c_message_pack(msg, b);
    FILE *f = fopen(path, "wb");
    fwrite(b, 1, n, f);
    fclose(f);
    free(b);
}

static vbs_status convert(const char *name, vbs_convert_opts *o, vbs_model **m) {
    char path[300];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    return vbs_convert_onnx(path, o, m);
}

static void expect_refusal(const char *name, vbs_status want, const char *needle) {
    vbs_model *m;
    vbs_status st = convert(name, NULL, &m);
    const char *msg = vbs_model_errmsg(m);
    CHECK(st == want, "%s: status %s, want %s (%s)", name, vbs_status_name(st), vbs_status_name(want), msg);
    CHECK(strstr(msg, name) && strstr(msg, needle), "%s: message lacks the file or '%s': %s", name, needle, msg);
    vbs_model_free(m);
}

static void sigma_rules(void) {
    conv_model c;
    make_conv(&c);
    save("conv.onnx", &c.m.base);
    for (int mode = 0; mode < 3; mode++) {
        vbs_convert_opts o = vbs_convert_defaults();
        o.sigma = mode == 0 ? VBS_SIGMA_MOPED : mode == 1 ? VBS_SIGMA_CONST : VBS_SIGMA_NONE;
        o.value = mode == 0 ? 0.2f : 0.03f;
        vbs_model *m;
        CHECK(convert("conv.onnx", &o, &m) == VBS_OK, "%s", vbs_model_errmsg(m));
        vbs_model_stats st;
        vbs_model_get_stats(m, &st);
        CHECK(st.n_params == 20 && st.n_variational == (mode == 2 ? 0 : 20), "mode %d: %lld params, %lld variational", mode,
              (long long)st.n_params, (long long)st.n_variational);
        for (int t = 0; mode != 2 && t < m->def.n_tensors; t++) {
            const vbs_tensor_def *td = &m->def.tensors[t];
            if (td->role != VBS_ROLE_MU) continue;
            const float *sg = m->g.sigma[t];
            int ok = 1;
            for (int64_t e = 0; e < td->numel; e++) {
                double want = mode == 0 ? fmax(0.2 * fabs(td->data[e]), 1e-6) : 0.03;
                ok &= fabs(sg[e] - want) <= 1e-6 + 1e-4 * want;
            }
            CHECK(ok, "mode %d: sigma of '%s' is not the rule's", mode, td->name);
            CHECK(td->has_prior && td->prior.sigma == 1.f, "prior not recorded on '%s'", td->name);
        }
        /* mean mode reproduces the plain convolution */
        vbs_session *s;
        vbs_session_new(m, &s);
        float x[16];
        for (int i = 0; i < 16; i++) x[i] = (float)(i % 5) - 2.f;
        int64_t shape[4] = {1, 1, 4, 4};
        CHECK(vbs_session_forward(s, x, shape, 4, VBS_MODE_MEAN, 0, 0) == VBS_OK, "%s", vbs_session_errmsg(s));
        const float *y;
        vbs_value_info info;
        vbs_session_output(s, 0, &y, &info);
        float want[8];
        for (int oc = 0; oc < 2; oc++)
            for (int i = 0; i < 2; i++)
                for (int j = 0; j < 2; j++) {
                    double acc = c.bv[oc];
                    for (int p = 0; p < 3; p++)
                        for (int q = 0; q < 3; q++) acc += (double)x[(i + p) * 4 + j + q] * c.wv[oc * 9 + p * 3 + q];
                    want[oc * 4 + i * 2 + j] = (float)acc;
                }
        CHECK(info.dims[1] == 2 && close_enough("conv mean", y, want, 8, 1e-5, 1e-5), "mean-mode output");
        vbs_session_free(s);
        vbs_model_free(m);
    }
}

/* Conv -> BatchNormalization: folded (one node left) for deterministic
 * weights, kept for variational ones; the output is the same either way. */
static void bn_folding(void) {
    conv_model c;
    make_conv(&c);
    Onnx__NodeProto bn;
    Onnx__TensorProto p[4];
    float vals[4][2] = {{1.5f, -0.5f}, {0.25f, 1.f}, {0.1f, -0.2f}, {2.f, 0.5f}}; /* scale, bias, mean, var */
    const char *names[4] = {"s", "beta", "mean", "var"};
    int64_t two = 2;
    Onnx__TensorProto *inits[6] = {&c.w, &c.b, &p[0], &p[1], &p[2], &p[3]};
    for (int i = 0; i < 4; i++) {
        onnx__tensor_proto__init(&p[i]);
        p[i].name = (char *)names[i]; p[i].has_data_type = 1; p[i].data_type = 1; p[i].n_dims = 1; p[i].dims = &two;
        p[i].n_float_data = 2; p[i].float_data = vals[i];
    }
    c.g.n_initializer = 6;
    c.g.initializer = inits;
    onnx__node_proto__init(&bn);
    char *bin[5] = {"y", "s", "beta", "mean", "var"}, *bout[1] = {"z"};
    bn.name = "bn1"; bn.op_type = "BatchNormalization"; bn.n_input = 5; bn.input = bin; bn.n_output = 1; bn.output = bout;
    Onnx__NodeProto *nodes[2] = {&c.n, &bn};
    c.g.n_node = 2;
    c.g.node = nodes;
    c.out.name = "z";
    save("bn.onnx", &c.m.base);
    float x[16], want[8];
    for (int i = 0; i < 16; i++) x[i] = (float)(i % 7) - 3.f;
    for (int oc = 0; oc < 2; oc++)
        for (int i = 0; i < 2; i++)
            for (int j = 0; j < 2; j++) {
                double acc = c.bv[oc];
                for (int a = 0; a < 3; a++)
                    for (int q = 0; q < 3; q++) acc += (double)x[(i + a) * 4 + j + q] * c.wv[oc * 9 + a * 3 + q];
                want[oc * 4 + i * 2 + j] = (float)(vals[0][oc] * (acc - vals[2][oc]) / sqrt(vals[3][oc] + 1e-5) + vals[1][oc]);
            }
    for (int mode = 0; mode < 2; mode++) {
        vbs_convert_opts o = vbs_convert_defaults();
        if (mode == 0) o.sigma = VBS_SIGMA_NONE;
        vbs_model *m;
        CHECK(convert("bn.onnx", &o, &m) == VBS_OK, "%s", vbs_model_errmsg(m));
        if (!m->loaded) { vbs_model_free(m); continue; }
        CHECK(vbs_model_n_nodes(m) == (mode == 0 ? 1 : 2), "mode %d: %d nodes after conversion", mode, vbs_model_n_nodes(m));
        const vbs_card *card = vbs_model_card(m);
        int said = 0;
        for (int i = 0; i < card->n_extra; i++) said |= !strcmp(card->extra[i].key, "folded_batchnorm") && strstr(card->extra[i].value, "bn1 into conv1");
        CHECK(said == (mode == 0), "mode %d: the card %s the folding", mode, said ? "reports" : "does not report");
        vbs_session *s;
        vbs_session_new(m, &s);
        int64_t shape[4] = {1, 1, 4, 4};
        const float *y;
        vbs_value_info info;
        CHECK(vbs_session_forward(s, x, shape, 4, VBS_MODE_MEAN, 0, 0) == VBS_OK, "%s", vbs_session_errmsg(s));
        vbs_session_output(s, 0, &y, &info);
        CHECK(close_enough("conv+bn", y, want, 8, 1e-5, 1e-5), "mode %d: conv + batch norm output", mode);
        vbs_session_free(s);
        vbs_model_free(m);
    }
}

static void hostile(void) {
    conv_model c;
    /* a nesting bomb: Model.graph > Graph.node > Node.attribute > Attribute.g > ... 10,000 times */
    size_t cap = 1 << 20, len = 0;
    uint8_t *buf = malloc(cap), *tmp = malloc(cap);
    /* from the outside in: Graph.node, Node.attribute, Attribute.g, Graph.node, ... */
    static const uint8_t tags[3] = {(1 << 3) | 2, (5 << 3) | 2, (6 << 3) | 2};
    const int levels = 9999;
    for (int level = 0; level < levels; level++) { /* built from the inside out */
        uint8_t hdr[16];
        size_t h = 0, v = len;
        hdr[h++] = tags[(levels - 1 - level) % 3];
        do { hdr[h++] = (uint8_t)((v & 0x7f) | (v > 0x7f ? 0x80 : 0)); v >>= 7; } while (v);
        memcpy(tmp, hdr, h);
        memcpy(tmp + h, buf, len);
        len += h;
        memcpy(buf, tmp, len);
        if (len + 32 > cap) break;
    }
    char path[300];
    snprintf(path, sizeof path, "%s/bomb.onnx", dir);
    FILE *f = fopen(path, "wb");
    uint8_t top[16];
    size_t h = 0, v = len;
    top[h++] = (7 << 3) | 2; /* Model.graph */
    do { top[h++] = (uint8_t)((v & 0x7f) | (v > 0x7f ? 0x80 : 0)); v >>= 7; } while (v);
    fwrite(top, 1, h, f);
    fwrite(buf, 1, len, f);
    fclose(f);
    free(buf);
    free(tmp);
    expect_refusal("bomb.onnx", VBS_ERR_FORMAT, "nest deeper");

    /* initializer bytes that lie */
    make_conv(&c);
    c.b.raw_data.len = 4;
    save("short_raw.onnx", &c.m.base);
    expect_refusal("short_raw.onnx", VBS_ERR_FORMAT, "initializer 'B': 4 bytes of data, its dims need 8");
    make_conv(&c);
    c.wd[0] = (int64_t)1 << 40;
    c.wd[1] = (int64_t)1 << 40;
    save("overflow.onnx", &c.m.base);
    expect_refusal("overflow.onnx", VBS_ERR_FORMAT, "initializer 'W'");

    /* external data */
    Onnx__StringStringEntryProto kv;
    Onnx__StringStringEntryProto *kvs[1] = {&kv};
    const char *locs[4] = {"/etc/passwd", "../secret.bin", "link.bin", "weights.bin"};
    const char *names[4] = {"ext_absolute.onnx", "ext_dotdot.onnx", "ext_symlink.onnx", "ext_ok.onnx"};
    const char *needles[3] = {"is absolute", "contains '..'", "is a symlink"};
    char wpath[300], lpath[300];
    snprintf(wpath, sizeof wpath, "%s/weights.bin", dir);
    snprintf(lpath, sizeof lpath, "%s/link.bin", dir);
    make_conv(&c);
    f = fopen(wpath, "wb");
    fwrite(c.wv, 4, 18, f);
    fclose(f);
    if (symlink(wpath, lpath)) printf("symlink failed\n");
    for (int i = 0; i < 4; i++) {
        make_conv(&c);
        onnx__string_string_entry_proto__init(&kv);
        kv.key = "location";
        kv.value = (char *)locs[i];
        c.w.n_float_data = 0;
        c.w.has_data_location = 1;
        c.w.data_location = ONNX__TENSOR_PROTO__DATA_LOCATION__EXTERNAL;
        c.w.n_external_data = 1;
        c.w.external_data = kvs;
        save(names[i], &c.m.base);
        if (i < 3) expect_refusal(names[i], VBS_ERR_FORMAT, needles[i]);
        else {
            vbs_model *m;
            CHECK(convert(names[i], NULL, &m) == VBS_OK, "external data in the model's folder: %s", vbs_model_errmsg(m));
            vbs_model_free(m);
        }
    }
    /* unsupported op, unsupported attribute, dynamic Resize scales */
    make_conv(&c);
    c.n.op_type = "Einsum";
    save("op.onnx", &c.m.base);
    expect_refusal("op.onnx", VBS_ERR_UNSUPPORTED, "node 'conv1': op 'Einsum' is not supported");
    make_conv(&c);
    Onnx__AttributeProto at;
    Onnx__AttributeProto *ats[1] = {&at};
    onnx__attribute_proto__init(&at);
    at.name = "fancy";
    at.has_type = 1;
    at.type = ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INT;
    at.has_i = 1;
    c.n.n_attribute = 1;
    c.n.attribute = ats;
    save("attr.onnx", &c.m.base);
    expect_refusal("attr.onnx", VBS_ERR_UNSUPPORTED, "node 'conv1' (Conv): unsupported attribute 'fancy'");
    make_conv(&c);
    char *rin[3] = {"x", "", "x"};
    c.n.op_type = "Resize";
    c.n.input = rin;
    c.n.n_input = 3;
    c.g.n_initializer = 0;
    save("dynamic.onnx", &c.m.base);
    expect_refusal("dynamic.onnx", VBS_ERR_UNSUPPORTED, "must be constants");
    f = fopen(path, "wb");
    fputs("definitely not protobuf \xff\xff\xff\xff", f);
    fclose(f);
    expect_refusal("bomb.onnx", VBS_ERR_FORMAT, "ModelProto");
}

/* Seeded random damage to valid ONNX files (bit flips, overwritten bytes,
 * truncation): every conversion ends in a status, never a crash (ASan in CI). */
static void mutations(void) {
    const char *srcs[2] = {"conv.onnx", "bn.onnx"};
    uint64_t r = 0x9E3779B97F4A7C15ull;
    int refused = 0;
    for (int s = 0; s < 2; s++) {
        char path[300];
        snprintf(path, sizeof path, "%s/%s", dir, srcs[s]);
        FILE *f = fopen(path, "rb");
        if (!f) continue;
        uint8_t good[4096];
        size_t n = fread(good, 1, sizeof good, f);
        fclose(f);
        for (int t = 0; t < 600; t++) {
            uint8_t b[4096];
            memcpy(b, good, n);
            size_t len = n;
            for (int e = 0; e < 1 + t % 4; e++) {
                r ^= r << 13; r ^= r >> 7; r ^= r << 17;
                size_t at = (size_t)(r % n);
                if (t % 3 == 0) b[at] ^= (uint8_t)(1u << (r >> 61));
                else if (t % 3 == 1) b[at] = (uint8_t)(r >> 56);
                else len = at;
            }
            snprintf(path, sizeof path, "%s/mutant.onnx", dir);
            f = fopen(path, "wb");
            fwrite(b, 1, len, f);
            fclose(f);
            vbs_model *m;
            vbs_status st = vbs_convert_onnx(path, NULL, &m);
            if (st) {
                refused++;
                CHECK(strstr(vbs_model_errmsg(m), "mutant.onnx") != NULL, "mutant %d: message without the file: %s", t, vbs_model_errmsg(m));
            }
            vbs_model_free(m);
        }
    }
    printf("mutations: %d of 1200 refused\n", refused);
    CHECK(refused > 300, "only %d damaged ONNX files refused", refused);
}

/* ---- the model card against the graph ---------------------------------- */

/* A conv with k output channels (k = 1 or 2), then up to 3 tail nodes. */
typedef struct { const char *op, *attr; int64_t i; int64_t perm[4]; } tail_spec;
typedef struct {
    conv_model c;
    Onnx__NodeProto n[3];
    Onnx__NodeProto *nodes[4];
    Onnx__AttributeProto a[3];
    Onnx__AttributeProto *ap[3];
    char *in[3], *out[3];
    char names[3][16];
    int64_t perm[3][4];
} tail_model;

static void make_tail(tail_model *t, int k, int opset, int n, const tail_spec *spec) {
    memset(t, 0, sizeof *t);
    make_conv(&t->c);
    t->c.op.version = opset;
    t->c.wd[0] = k;
    t->c.w.n_float_data = (size_t)(9 * k);
    t->c.bd[0] = k;
    t->c.b.raw_data.len = (size_t)(4 * k);
    t->nodes[0] = &t->c.n;
    const char *prev = "y";
    for (int i = 0; i < n; i++) {
        onnx__node_proto__init(&t->n[i]);
        snprintf(t->names[i], sizeof t->names[i], "t%d", i);
        t->in[i] = (char *)prev;
        t->out[i] = t->names[i];
        t->n[i].name = t->names[i];
        t->n[i].op_type = (char *)spec[i].op;
        t->n[i].n_input = 1;
        t->n[i].input = &t->in[i];
        t->n[i].n_output = 1;
        t->n[i].output = &t->out[i];
        if (spec[i].attr) {
            onnx__attribute_proto__init(&t->a[i]);
            t->a[i].name = (char *)spec[i].attr;
            t->a[i].has_type = 1;
            if (!strcmp(spec[i].attr, "perm")) {
                t->a[i].type = ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INTS;
                memcpy(t->perm[i], spec[i].perm, sizeof t->perm[i]);
                t->a[i].n_ints = 4;
                t->a[i].ints = t->perm[i];
            } else {
                t->a[i].type = ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INT;
                t->a[i].has_i = 1;
                t->a[i].i = spec[i].i;
            }
            t->ap[i] = &t->a[i];
            t->n[i].n_attribute = 1;
            t->n[i].attribute = &t->ap[i];
        }
        t->nodes[i + 1] = &t->n[i];
        prev = t->names[i];
    }
    t->c.g.n_node = (size_t)(n + 1);
    t->c.g.node = t->nodes;
    t->c.out.name = (char *)prev;
}

static const char *card_extra(const vbs_card *c, const char *key) {
    for (int i = 0; i < c->n_extra; i++)
        if (!strcmp(c->extra[i].key, key)) return c->extra[i].value;
    return "";
}

/* converts with a card that gives only the output activation */
static vbs_status convert_with_activation(const char *file, vbs_output_act act, vbs_model **m) {
    vbs_card card;
    memset(&card, 0, sizeof card);
    card.output_activation = act;
    vbs_convert_opts o = vbs_convert_defaults();
    o.card = &card;
    return convert(file, &o, m);
}

static void activation_inference(void) {
    static const struct {
        const char *file;
        int k, opset, n;
        tail_spec spec[3];
        vbs_output_act want;
        const char *source; /* in the card's output_activation_source */
        const char *logits; /* the value a training loss reads (vbs_model_logits), NULL: refused */
    } cases[] = {
        {"tail_softmax13.onnx", 2, 13, 3, {{"Softmax", "axis", 1, {0}}, {"Identity", NULL, 0, {0}}, {"Dropout", NULL, 0, {0}}},
         VBS_ACT_NONE, "inferred: the graph ends in Softmax over the channels, node 't0'", "y"},
        {"tail_softmax13_neg.onnx", 2, 13, 1, {{"Softmax", "axis", -3, {0}}}, VBS_ACT_NONE, "Softmax over the channels", "y"},
        {"tail_softmax13_last.onnx", 2, 13, 1, {{"Softmax", "axis", -1, {0}}}, VBS_ACT_SOFTMAX, "not the channels, node 't0'", "t0"},
        {"tail_softmax13_default.onnx", 2, 13, 1, {{"Softmax", NULL, 0, {0}}}, VBS_ACT_SOFTMAX, "not the channels", "t0"},
        {"tail_softmax11_wrapped.onnx", 2, 11, 3,
         {{"Transpose", "perm", 0, {0, 2, 3, 1}}, {"Softmax", "axis", 3, {0}}, {"Transpose", "perm", 0, {0, 3, 1, 2}}},
         VBS_ACT_NONE, "Softmax over the channels, node 't1'", "y"},
        /* over the channels too, but the output's H and W are swapped: no value before it holds the logits in its order */
        {"tail_softmax11_swapped.onnx", 2, 11, 3,
         {{"Transpose", "perm", 0, {0, 2, 3, 1}}, {"Softmax", "axis", 3, {0}}, {"Transpose", "perm", 0, {0, 3, 2, 1}}},
         VBS_ACT_NONE, "Softmax over the channels, node 't1'", NULL},
        {"tail_softmax11_flat.onnx", 2, 11, 1, {{"Softmax", "axis", 1, {0}}}, VBS_ACT_SOFTMAX, "flattened axes", "t0"},
        {"tail_transposed_after.onnx", 2, 13, 2, {{"Softmax", "axis", 1, {0}}, {"Transpose", "perm", 0, {0, 2, 3, 1}}},
         VBS_ACT_SOFTMAX, "not the channels, node 't0'", "t1"},
        {"tail_transposed_before.onnx", 2, 13, 2, {{"Transpose", "perm", 0, {0, 2, 3, 1}}, {"Softmax", "axis", 1, {0}}},
         VBS_ACT_NONE, "Softmax over the channels", "t0"}, /* output axis 1 is what the runtime reads as classes */
        {"tail_sigmoid1.onnx", 1, 13, 1, {{"Sigmoid", NULL, 0, {0}}}, VBS_ACT_NONE, "inferred: the graph ends in Sigmoid, node 't0'", "y"},
        {"tail_sigmoid2.onnx", 2, 13, 2, {{"Sigmoid", NULL, 0, {0}}, {"Identity", NULL, 0, {0}}}, VBS_ACT_NONE, "must sum to 1", NULL},
        {"tail_logits1.onnx", 1, 13, 0, {{0}}, VBS_ACT_SIGMOID, "inferred: the graph ends in raw logits, node 'conv1' (Conv)", "y"},
        {"tail_logits2.onnx", 2, 13, 0, {{0}}, VBS_ACT_SOFTMAX, "inferred: the graph ends in raw logits, node 'conv1' (Conv)", "y"},
        {"tail_sigmoid_relu.onnx", 1, 13, 2, {{"Sigmoid", NULL, 0, {0}}, {"Relu", NULL, 0, {0}}}, VBS_ACT_SIGMOID, "node 't1' (Relu)", "t1"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        tail_model t;
        make_tail(&t, cases[i].k, cases[i].opset, cases[i].n, cases[i].spec);
        save(cases[i].file, &t.c.m.base);
        vbs_model *m;
        vbs_status st = convert(cases[i].file, NULL, &m);
        CHECK(st == VBS_OK, "%s: %s", cases[i].file, vbs_model_errmsg(m));
        if (st) { vbs_model_free(m); continue; }
        const vbs_card *c = vbs_model_card(m);
        CHECK(c->output_activation == cases[i].want, "%s: activation %d, want %d", cases[i].file, (int)c->output_activation,
              (int)cases[i].want);
        const char *src = card_extra(c, "output_activation_source");
        CHECK(strstr(src, cases[i].source) != NULL, "%s: source '%s' lacks '%s'", cases[i].file, src, cases[i].source);
        int v;
        char err[VBS_ERRLEN];
        st = vbs_model_logits(m, &v, err);
        if (cases[i].logits)
            CHECK(st == VBS_OK && v >= 0 && !strcmp(m->g.values[v].name, cases[i].logits), "%s: the loss reads '%s', want '%s' (%s)", cases[i].file,
                  st || v < 0 ? "?" : m->g.values[v].name, cases[i].logits, st ? err : "");
        else
            CHECK(st == VBS_ERR_UNSUPPORTED && strstr(err, m->def.outputs[0].name) && (strstr(err, "cannot be found") || strstr(err, "over 2 channels")),
                  "%s: a loss on its output refused: %s %s", cases[i].file, vbs_status_name(st), st ? err : "");
        vbs_model_free(m);
    }
    /* a card that contradicts the graph is refused with what to write instead */
    static const struct { const char *file; vbs_output_act act; const char *needle[2]; } bad[] = {
        {"tail_softmax13.onnx", VBS_ACT_SOFTMAX, {"already ends in Softmax over the channels", "\"none\""}},
        {"tail_softmax11_wrapped.onnx", VBS_ACT_SIGMOID, {"pass through sigmoid again", "\"none\""}},
        {"tail_sigmoid1.onnx", VBS_ACT_SIGMOID, {"already ends in Sigmoid", "\"none\""}},
        {"tail_logits2.onnx", VBS_ACT_NONE, {"ends in raw logits, node 'conv1' (Conv), which are not probabilities", "\"softmax\""}},
        {"tail_logits1.onnx", VBS_ACT_NONE, {"raw logits", "\"sigmoid\""}},
        {"tail_logits1.onnx", VBS_ACT_SOFTMAX, {"output 'y' has 1 channel", "\"sigmoid\""}},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        vbs_model *m;
        vbs_status st = convert_with_activation(bad[i].file, bad[i].act, &m);
        const char *msg = vbs_model_errmsg(m);
        CHECK(st == VBS_ERR_ARG && !m->loaded, "%s with activation %d: status %s (%s)", bad[i].file, (int)bad[i].act, vbs_status_name(st), msg);
        CHECK(strstr(msg, bad[i].file) && strstr(msg, bad[i].needle[0]) && strstr(msg, bad[i].needle[1]), "%s: message: %s", bad[i].file, msg);
        vbs_model_free(m);
    }
    /* the card's own activation where it fits: kept, and said to come from the card */
    static const struct { const char *file; vbs_output_act act; } good[] = {
        {"tail_softmax13.onnx", VBS_ACT_NONE}, {"tail_logits2.onnx", VBS_ACT_SIGMOID}, {"tail_logits1.onnx", VBS_ACT_SIGMOID},
        {"tail_softmax13_last.onnx", VBS_ACT_SOFTMAX}};
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        vbs_model *m;
        CHECK(convert_with_activation(good[i].file, good[i].act, &m) == VBS_OK, "%s: %s", good[i].file, vbs_model_errmsg(m));
        if (m->loaded) {
            CHECK(vbs_model_card(m)->output_activation == good[i].act, "%s: the card's activation was not kept", good[i].file);
            CHECK(!strncmp(card_extra(vbs_model_card(m), "output_activation_source"), "the card", 8), "%s: source '%s'", good[i].file,
                  card_extra(vbs_model_card(m), "output_activation_source"));
        }
        vbs_model_free(m);
    }
}

/* Channel and label counts against the graph: conversion, builder and file. */
static void card_counts(void) {
    static const char *const ch1[] = {"flair"}, *const ch4[] = {"flair", "t1", "t1ce", "t2"};
    static const vbs_label l1[] = {{1, "lesion"}}, l2[] = {{0, "background"}, {1, "lesion"}}, l3[] = {{0, "bg"}, {1, "a"}, {2, "b"}};
    static const struct {
        const char *file;
        vbs_output_act act;
        int nch, nl;
        const char *const *ch;
        const vbs_label *l;
        const char *needle; /* NULL: accepted */
    } cases[] = {
        {"tail_logits2.onnx", VBS_ACT_AUTO, 4, 0, ch4, NULL, "model card lists 4 channels (flair, t1, t1ce, t2) but input 'x' has 1 channel"},
        {"tail_logits2.onnx", VBS_ACT_AUTO, 1, 3, ch1, l3, "model card lists 3 labels but output 'y' has 2 classes"},
        {"tail_logits2.onnx", VBS_ACT_AUTO, 1, 1, ch1, l1, "model card lists 1 label but output 'y' has 2 classes"},
        {"tail_logits2.onnx", VBS_ACT_AUTO, 1, 2, ch1, l2, NULL},
        {"tail_logits2.onnx", VBS_ACT_SIGMOID, 0, 2, NULL, l2, NULL},
        {"tail_logits2.onnx", VBS_ACT_SIGMOID, 0, 3, NULL, l3, "model card lists 3 labels but output 'y' has 2 classes"},
        {"tail_logits1.onnx", VBS_ACT_AUTO, 0, 1, NULL, l1, "model card lists 1 label but output 'y' has 1 channel, a foreground probability: list 2 labels"},
        {"tail_logits1.onnx", VBS_ACT_AUTO, 0, 2, NULL, l2, NULL},
        {"tail_sigmoid1.onnx", VBS_ACT_AUTO, 1, 3, ch1, l3, "model card lists 3 labels but output 't0' has 1 channel, a foreground"},
        {"tail_sigmoid1.onnx", VBS_ACT_AUTO, 1, 2, ch1, l2, NULL},
        {"tail_softmax13.onnx", VBS_ACT_AUTO, 1, 2, ch1, l2, NULL},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        vbs_card card;
        memset(&card, 0, sizeof card);
        card.output_activation = cases[i].act;
        card.n_channels = cases[i].nch;
        card.channels = cases[i].ch;
        card.n_labels = cases[i].nl;
        card.labels = cases[i].l;
        vbs_convert_opts o = vbs_convert_defaults();
        o.card = &card;
        vbs_model *m;
        vbs_status st = convert(cases[i].file, &o, &m);
        const char *msg = vbs_model_errmsg(m);
        if (!cases[i].needle) CHECK(st == VBS_OK && m->loaded, "case %zu (%s): %s", i, cases[i].file, msg);
        else
            CHECK(st == VBS_ERR_SHAPE && strstr(msg, cases[i].file) && strstr(msg, cases[i].needle), "case %zu (%s): status %s: %s", i,
                  cases[i].file, vbs_status_name(st), msg);
        vbs_model_free(m);
    }
    /* the builder (vbs_model_init, as for every builder): a 1x1 conv from 4 channels to 2 classes */
    for (int t = 0; t < 4; t++) {
        vbs_builder *b = vbs_b_new(1);
        int64_t in[4] = {1, 4, 3, 3}, wd[4] = {2, 4, 1, 1};
        float w[8] = {0};
        vbs_b_input(b, "image", 4, in, NULL);
        const char *ins[2] = {"image", vbs_b_tensor(b, "w", 4, wd, w)};
        vbs_b_node(b, VBS_OP_CONV, "logits", 2, ins, 0, NULL);
        vbs_b_output(b, "logits");
        vbs_card *c = vbs_b_card(b);
        c->output_activation = t == 3 ? VBS_ACT_AUTO : VBS_ACT_SOFTMAX;
        c->n_channels = t == 0 ? 1 : 4;
        c->channels = t == 0 ? ch1 : ch4;
        c->n_labels = t == 1 ? 3 : 2;
        c->labels = t == 1 ? l3 : l2;
        vbs_model *m;
        vbs_status st = vbs_b_finish(b, "built", &m);
        const char *msg = vbs_model_errmsg(m);
        if (t == 0) CHECK(st == VBS_ERR_SHAPE && strstr(msg, "built: model card lists 1 channel (flair) but input 'image' has 4 channels"), "%s", msg);
        if (t == 1) CHECK(st == VBS_ERR_SHAPE && strstr(msg, "built: model card lists 3 labels but output 'logits' has 2 classes"), "%s", msg);
        if (t == 2) CHECK(st == VBS_OK, "%s", msg);
        if (t == 3) CHECK(st == VBS_ERR_FORMAT && strstr(msg, "output activation 3"), "no model holds AUTO: %s", msg);
        vbs_model_free(m);
    }
    /* the file loader: a good conversion whose card is edited, written, loaded */
    for (int t = 0; t < 2; t++) {
        vbs_model *m;
        CHECK(convert("tail_logits2.onnx", NULL, &m) == VBS_OK, "%s", vbs_model_errmsg(m));
        if (!m->loaded) { vbs_model_free(m); continue; }
        vbs_card *c = &m->def.card;
        if (t == 0) { c->n_channels = 4; c->channels = ch4; }
        else { c->n_labels = 1; c->labels = l1; }
        char path[300];
        snprintf(path, sizeof path, "%s/badcard%d.vbseg", dir, t);
        CHECK(vbs_model_save(m, path) == VBS_OK, "%s", vbs_model_errmsg(m));
        vbs_model_free(m);
        vbs_status st = vbs_model_load(path, &m);
        const char *msg = vbs_model_errmsg(m);
        CHECK(st == VBS_ERR_SHAPE && strstr(msg, path) &&
                  strstr(msg, t == 0 ? "model card lists 4 channels (flair, t1, t1ce, t2) but input 'x' has 1 channel"
                                     : "model card lists 1 label but output 'y' has 2 classes"),
              "loading %s: %s: %s", path, vbs_status_name(st), msg);
        vbs_model_free(m);
    }
}

/* A 1x1 conv from x (1, 1, 1, n) to k = 1 or 2 channels, y_c = w[c] x + bias[c],
 * whose card says it outputs probabilities (activation none). 3D, with a
 * patch smaller than the input (sliding windows), when d3. */
static vbs_model *own_probs_model(int k, int d3, const float *w, const float *bias) {
    vbs_builder *b = vbs_b_new(2);
    int64_t in[5] = {1, 1, 1, 1, -1}, wd[5] = {k, 1, 1, 1, 1}, bd[1] = {k};
    const char *params[5] = {NULL, NULL, NULL, NULL, "W"};
    vbs_b_input(b, "x", d3 ? 5 : 4, d3 ? in : in + 1, d3 ? params : params + 1);
    const char *ins[3] = {"x", vbs_b_tensor(b, "w", d3 ? 5 : 4, wd, w), vbs_b_tensor(b, "b", 1, bd, bias)};
    vbs_b_node(b, VBS_OP_CONV, "probs", 3, ins, 0, NULL);
    vbs_b_output(b, "probs");
    vbs_card *c = vbs_b_card(b);
    c->output_activation = VBS_ACT_NONE;
    if (d3) {
        int64_t *p = vbs_b_alloc(b, sizeof(int64_t) * 3);
        p[0] = 1; p[1] = 1; p[2] = 4;
        c->patch = p;
        c->n_patch = 3;
    }
    vbs_model *m;
    if (vbs_b_finish(b, "own_probs", &m)) { printf("%s\n", vbs_model_errmsg(m)); exit(1); }
    return m;
}

static const int64_t row6[4] = {1, 1, 1, 6};

/* A mean-mode run of x (row6): its prob_mean, entropy and labels maps. */
static vbs_session *mean_maps(const vbs_model *m, const float *x, const float **pm, const float **ent, const float **lab) {
    vbs_session *s;
    vbs_session_new(m, &s);
    vbs_mc_opts o = vbs_mc_defaults();
    o.mode = VBS_MODE_MEAN;
    if (vbs_session_run_mc(s, x, row6, 4, &o) || vbs_session_map(s, VBS_MAP_PROB_MEAN, pm, NULL) ||
        vbs_session_map(s, VBS_MAP_ENTROPY, ent, NULL) || vbs_session_map(s, VBS_MAP_LABELS, lab, NULL)) {
        CHECK(0, "probabilities refused: %s", vbs_session_errmsg(s));
        exit(finish("test_onnx"));
    }
    return s;
}

static double xlx(double p) { return p > 0 ? p * log(p) : 0; }

static void probability_guard(void) {
    static const float one[2] = {1.f, -1.f}, zero[2] = {0.f, 1.f}; /* k = 1: y = x; k = 2: (x, 1 - x) */
    /* values that are not probabilities: refused, with the output and the range, in
     * sample and mean mode and in sliding windows; no maps are left to read */
    static const float logits[6] = {-0.26f, 0.1f, 0.31f, 1.8f, 0.5f, 0.9f};
    for (int t = 0; t < 3; t++) {
        vbs_model *m = own_probs_model(1, t == 2, one, zero);
        vbs_session *s;
        vbs_session_new(m, &s);
        int64_t shape5[5] = {1, 1, 1, 1, 6};
        vbs_mc_opts o = vbs_mc_defaults();
        o.n_samples = 3;
        o.mode = t == 1 ? VBS_MODE_MEAN : VBS_MODE_SAMPLE;
        vbs_status st = t == 2 ? vbs_session_run_mc(s, logits, shape5, 5, &o) : vbs_session_run_mc(s, logits, row6, 4, &o);
        const char *msg = vbs_session_errmsg(s);
        CHECK(st == VBS_ERR_NUMERIC && strstr(msg, "output 'probs' has values from -0.26 to 1.8") && strstr(msg, "output_activation sigmoid"),
              "run %d: %s: %s", t, vbs_status_name(st), msg);
        const float *d;
        CHECK(vbs_session_map(s, VBS_MAP_ENTROPY, &d, NULL) == VBS_ERR_STATE, "run %d: maps of a refused run", t);
        vbs_session_free(s);
        vbs_model_free(m);
    }
    /* two channels (x, 1 - x): class probabilities, and the maps are the analytic ones */
    static const float x2[6] = {0.2f, 0.5f, 0.7f, 0.9f, 0.4f, 0.6f};
    const float *pm, *ent, *lab;
    vbs_model *m = own_probs_model(2, 0, one, zero);
    vbs_session *s = mean_maps(m, x2, &pm, &ent, &lab);
    float wp[12], we[6], wl[6];
    for (int i = 0; i < 6; i++) {
        wp[i] = x2[i];
        wp[6 + i] = 1 - x2[i];
        we[i] = (float)-(xlx(x2[i]) + xlx(1.0 - x2[i]));
        wl[i] = 1 - x2[i] > x2[i] ? 1.f : 0.f;
    }
    wl[1] = lab[1]; /* a tie */
    CHECK(close_enough("prob_mean k=2", pm, wp, 12, 1e-6, 0), "two-class probabilities");
    CHECK(close_enough("entropy k=2", ent, we, 6, 1e-6, 1e-5), "two-class entropy");
    CHECK(close_enough("labels k=2", lab, wl, 6, 0, 0), "two-class labels");
    vbs_session_free(s);
    vbs_model_free(m);
    /* two channels in [0, 1], (x, 0.5), that do not sum to 1: refused */
    static const float w2[2] = {1.f, 0.f}, b2[2] = {0.f, 0.5f};
    m = own_probs_model(2, 0, w2, b2);
    vbs_session_new(m, &s);
    vbs_mc_opts o = vbs_mc_defaults();
    vbs_status st = vbs_session_run_mc(s, x2, row6, 4, &o);
    const char *msg = vbs_session_errmsg(s);
    CHECK(st == VBS_ERR_NUMERIC && strstr(msg, "output 'probs' has class probabilities summing to 0.7 .. 1.4 over its 2 channels"),
          "%s: %s", vbs_status_name(st), msg);
    vbs_session_free(s);
    vbs_model_free(m);
    /* one channel of the graph's own probability: a foreground probability,
     * read as a sigmoid head reads its own (binary entropy, threshold 0.5);
     * rounding just outside [0, 1] is clamped, never logged negative */
    static const float x1[6] = {0.f, 0.2f, 0.5f, 0.7f, 1.000004f, -3e-6f};
    m = own_probs_model(1, 0, one, zero);
    s = mean_maps(m, x1, &pm, &ent, &lab);
    for (int i = 0; i < 6; i++) {
        double p = fmin(fmax(x1[i], 0), 1);
        wp[i] = (float)p;
        we[i] = (float)-(xlx(p) + xlx(1 - p));
        wl[i] = p >= 0.5 ? 1.f : 0.f;
    }
    CHECK(close_enough("prob_mean k=1", pm, wp, 6, 1e-7, 0), "foreground probability");
    CHECK(close_enough("entropy k=1", ent, we, 6, 1e-6, 1e-5), "binary entropy of the graph's own probability");
    CHECK(close_enough("labels k=1", lab, wl, 6, 0, 0), "threshold 0.5");
    vbs_session_free(s);
    vbs_model_free(m);
}

int main(void) {
    if (!mkdtemp(dir)) return 1;
    sigma_rules();
    bn_folding();
    mutations();
    hostile();
    activation_inference();
    card_counts();
    probability_guard();
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (system(cmd)) printf("could not remove %s\n", dir);
    return finish("test_onnx");
}
