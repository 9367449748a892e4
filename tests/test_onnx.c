/*
 * test_onnx.c: the ONNX importer on files written here with protobuf-c:
 * MOPED and constant sigma against the formula; a 10,000-level nesting
 * bomb refused before unpacking; external data that is absolute, has
 * "..", is a symlink, or is short; initializers whose bytes lie about their
 * dims; unsupported ops and attributes named with their node; dynamic
 * Resize scales refused. Every refusal names the file and the culprit.
 */
#include <stdlib.h>
#include <unistd.h>

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

int main(void) {
    if (!mkdtemp(dir)) return 1;
    sigma_rules();
    bn_folding();
    mutations();
    hostile();
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (system(cmd)) printf("could not remove %s\n", dir);
    return finish("test_onnx");
}
