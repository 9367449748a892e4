/*
 * test_format.c: the .vbseg round trip (load then save gives the same
 * bytes, from a file and from memory) and one crafted bad file for every
 * refusal of the reader. Header edits go through protobuf-c and get a
 * fresh CRC, so each file is wrong in exactly one way. Every refusal must
 * come back as the right status with a one-line message that names the
 * file and the tensor or node.
 */
#include <stdlib.h>
#include <unistd.h>
#include <zlib.h>

#include "../format/layout.h"
#include "check.h"
#include "internal.h"
#include "slurp.h"
#include "unet.h"
#include "vbseg.pb-c.h"

static char dir[] = "/tmp/vbs_test_format.XXXXXX";

static void spit(const char *path, const uint8_t *b, size_t n) {
    FILE *f = fopen(path, "wb");
    fwrite(b, 1, n, f);
    fclose(f);
}

static uint8_t *good;
static size_t good_n;

/* Loads bytes written to a file; checks status and that the message names the file and contains `needle`. */
static void expect_refusal(const char *what, const uint8_t *b, size_t n, vbs_status want, const char *needle) {
    char path[256];
    snprintf(path, sizeof path, "%s/%s.vbseg", dir, what);
    spit(path, b, n);
    vbs_model *m;
    vbs_status st = vbs_model_load(path, &m);
    const char *msg = vbs_model_errmsg(m);
    CHECK(st == want, "%s: status %s, want %s (%s)", what, vbs_status_name(st), vbs_status_name(want), msg);
    CHECK(strstr(msg, path) == msg, "%s: message does not start with the file name: %s", what, msg);
    CHECK(strstr(msg, needle) != NULL, "%s: message lacks '%s': %s", what, needle, msg);
    CHECK(!strchr(msg, '\n'), "%s: message has more than one line", what);
    vbs_model_free(m);
}

/* Repacks an edited header in front of the original data section. */
static uint8_t *rebuild(Vbseg__Model *pm, size_t *n) {
    uint64_t old_h = vbs_rd64(good + 16), dlen = vbs_rd64(good + 24);
    const uint8_t *data = good + vbs_align64(VBS_PREAMBLE + old_h);
    size_t h = vbseg__model__get_packed_size(pm);
    uint64_t doff = vbs_align64(VBS_PREAMBLE + h);
    *n = (size_t)(doff + dlen);
    uint8_t *b = calloc(1, *n);
    memcpy(b, good, 12);
    vbseg__model__pack(pm, b + VBS_PREAMBLE);
    vbs_wr32(b + 12, (uint32_t)crc32(0L, b + VBS_PREAMBLE, (uInt)h));
    vbs_wr64(b + 16, h);
    vbs_wr64(b + 24, dlen);
    memcpy(b + doff, data, dlen);
    return b;
}

/* replaces a string the unpacker owns, freeing the old one */
static void repl(char **slot, const char *s) {
    free(*slot);
    *slot = strdup(s);
}

static Vbseg__Model *header(void) { return vbseg__model__unpack(NULL, vbs_rd64(good + 16), good + VBS_PREAMBLE); }

static int find_tensor(Vbseg__Model *pm, const char *name) {
    for (size_t i = 0; i < pm->graph->n_tensor; i++)
        if (!strcmp(pm->graph->tensor[i]->name, name)) return (int)i;
    return -1;
}

static int find_node(Vbseg__Model *pm, const char *op) {
    for (size_t i = 0; i < pm->graph->n_node; i++)
        if (!strcmp(pm->graph->node[i]->op_type, op)) return (int)i;
    return -1;
}

#define EDIT(what, want, needle, ...)                          \
    do {                                                       \
        Vbseg__Model *pm = header();                           \
        __VA_ARGS__;                                           \
        size_t n;                                              \
        uint8_t *b = rebuild(pm, &n);                          \
        expect_refusal(what, b, n, want, needle);              \
        free(b);                                               \
        vbseg__model__free_unpacked(pm, NULL);                 \
    } while (0)

static void round_trip(void) {
    vbs_unet_opts o = vbs_unet_defaults();
    o.base = 4; o.depth = 2; o.hetero = 1; o.latent = 3; o.in_channels = 2; o.classes = 3;
    vbs_model *m;
    CHECK(vbs_unet_build(&o, &m) == VBS_OK, "%s", vbs_model_errmsg(m));
    char a[256], b[256], c[256];
    snprintf(a, sizeof a, "%s/a.vbseg", dir);
    snprintf(b, sizeof b, "%s/b.vbseg", dir);
    snprintf(c, sizeof c, "%s/c.vbseg", dir);
    CHECK(vbs_model_save(m, a) == VBS_OK, "%s", vbs_model_errmsg(m));
    vbs_model *l;
    CHECK(vbs_model_load(a, &l) == VBS_OK, "%s", vbs_model_errmsg(l));
    CHECK(vbs_model_save(l, b) == VBS_OK, "%s", vbs_model_errmsg(l));
    size_t na, nb, nc;
    good = slurp(a, &na);
    good_n = na;
    uint8_t *bb = slurp(b, &nb);
    CHECK(na == nb && !memcmp(good, bb, na), "load then save changed the bytes (%zu vs %zu)", na, nb);
    vbs_model *mm;
    CHECK(vbs_model_load_memory(good, na, "mem", &mm) == VBS_OK, "%s", vbs_model_errmsg(mm));
    vbs_model_save(mm, c);
    uint8_t *cc = slurp(c, &nc);
    CHECK(na == nc && !memcmp(good, cc, na), "load from memory then save changed the bytes");
    /* the loaded model computes what the built one does */
    int64_t shape[4] = {1, 2, 8, 8};
    float x[128];
    for (int i = 0; i < 128; i++) x[i] = (float)(i % 11) - 5.f;
    vbs_session *s1, *s2;
    vbs_session_new(m, &s1);
    vbs_session_new(l, &s2);
    vbs_session_forward(s1, x, shape, 4, VBS_MODE_SAMPLE, 5, 2);
    vbs_session_forward(s2, x, shape, 4, VBS_MODE_SAMPLE, 5, 2);
    const float *y1, *y2;
    vbs_value_info i1, i2;
    vbs_session_output(s1, 1, &y1, &i1);
    vbs_session_output(s2, 1, &y2, &i2);
    CHECK(i1.ndim == 4 && i1.dims[1] == 3 && !memcmp(y1, y2, sizeof(float) * 3 * 64), "loaded model computes differently");
    /* the file layout: every tensor 64-byte aligned in the data section */
    Vbseg__Model *pm = header();
    int aligned = 1;
    for (size_t i = 0; i < pm->graph->n_tensor; i++) aligned &= pm->graph->tensor[i]->offset % 64 == 0;
    CHECK(aligned && (vbs_align64(VBS_PREAMBLE + vbs_rd64(good + 16)) % 64) == 0, "tensors not 64-byte aligned");
    vbseg__model__free_unpacked(pm, NULL);
    vbs_session_free(s1); vbs_session_free(s2);
    vbs_model_free(m); vbs_model_free(l); vbs_model_free(mm);
    free(bb); free(cc);
    /* a failed save leaves no file and no temporary behind */
    char bad[300];
    snprintf(bad, sizeof bad, "%s/no/such/dir/x.vbseg", dir);
    vbs_unet_build(&o, &m);
    CHECK(vbs_model_save(m, bad) == VBS_ERR_IO, "save into a missing directory");
    vbs_model_free(m);
}

static void refusals(void) {
    uint8_t *b = malloc(good_n + 1);
    memcpy(b, good, good_n);
    expect_refusal("truncated", b, good_n - 100, VBS_ERR_FORMAT, "truncated");
    expect_refusal("tiny", b, 10, VBS_ERR_FORMAT, "truncated");
    b[good_n] = 0;
    expect_refusal("trailing", b, good_n + 1, VBS_ERR_FORMAT, "trailing");
    b[1] ^= 1;
    expect_refusal("magic", b, good_n, VBS_ERR_FORMAT, "magic");
    b[1] ^= 1;
    vbs_wr16(b + 8, 2);
    expect_refusal("newer_major", b, good_n, VBS_ERR_VERSION, "newer than this reader");
    vbs_wr16(b + 8, 1);
    /* the preamble's minor must be the header's (1.2: the header CRC covers it) */
    CHECK(vbs_rd16(good + 10) == 2, "a new file is format 1.%u, want 1.2", vbs_rd16(good + 10));
    vbs_wr16(b + 10, 7);
    expect_refusal("minor_flipped", b, good_n, VBS_ERR_FORMAT, "the preamble says format 1.7 but the header says 1.2");
    vbs_wr16(b + 10, 2);
    {   /* a newer minor version, said in both places, is readable */
        Vbseg__Model *pm = header();
        pm->format_minor = 7;
        size_t n;
        uint8_t *nb = rebuild(pm, &n);
        vbs_wr16(nb + 10, 7);
        vbs_model *m;
        CHECK(vbs_model_load_memory(nb, n, "minor7", &m) == VBS_OK, "newer minor version refused: %s", vbs_model_errmsg(m));
        vbs_model_free(m);
        free(nb);
        vbseg__model__free_unpacked(pm, NULL);
    }
    b[VBS_PREAMBLE + 40] ^= 0x10;
    expect_refusal("bitflip", b, good_n, VBS_ERR_FORMAT, "checksum");
    b[VBS_PREAMBLE + 40] ^= 0x10;
    vbs_wr64(b + 16, (uint64_t)1 << 40);
    expect_refusal("header_len_lies", b, good_n, VBS_ERR_FORMAT, "header length");
    vbs_wr64(b + 16, vbs_rd64(good + 16));
    vbs_wr64(b + 24, vbs_rd64(good + 24) + 64);
    expect_refusal("data_len_lies", b, good_n, VBS_ERR_FORMAT, "preamble declares");
    memcpy(b, good, good_n);
    /* garbage header with a valid CRC */
    uint64_t h = vbs_rd64(good + 16);
    memset(b + VBS_PREAMBLE, 0xff, h);
    vbs_wr32(b + 12, (uint32_t)crc32(0L, b + VBS_PREAMBLE, (uInt)h));
    expect_refusal("garbage_header", b, good_n, VBS_ERR_FORMAT, "protobuf");
    /* a flipped bit in a weight: refused by its CRC-32C, naming the tensor */
    memcpy(b, good, good_n);
    uint64_t doff = vbs_align64(VBS_PREAMBLE + h);
    {
        Vbseg__Model *pm = header();
        const Vbseg__Tensor *t = pm->graph->tensor[find_tensor(pm, "enc0.conv1.weight")];
        b[doff + t->offset + 9] ^= 0x04;
        char want[128];
        snprintf(want, sizeof want, "tensor 'enc0.conv1.weight': checksum mismatch (stored 0x%08X, computed 0x%08X)", t->crc32c,
                 vbs_crc32c(0, b + doff + t->offset, t->length));
        expect_refusal("weight_bitflip", b, good_n, VBS_ERR_FORMAT, want);
        b[doff + t->offset + 9] ^= 0x04;
        vbseg__model__free_unpacked(pm, NULL);
    }
    /* non-zero padding, named by where it is: after the header, between tensors, after the last */
    CHECK(doff > VBS_PREAMBLE + h, "the test model's header ends on a 64-byte boundary: no padding to test");
    b[doff - 1] = 0x20;
    expect_refusal("header_padding", b, good_n, VBS_ERR_FORMAT, "padding after the header is not zero");
    b[doff - 1] = 0;
    {
        Vbseg__Model *pm = header();
        int gap = -1, last = 0;
        for (size_t i = 0; i < pm->graph->n_tensor; i++) {
            const Vbseg__Tensor *t = pm->graph->tensor[i];
            if (gap < 0 && t->length % 64 && i + 1 < pm->graph->n_tensor) gap = (int)i;
            if (t->offset > pm->graph->tensor[last]->offset) last = (int)i;
        }
        CHECK(gap >= 0, "no tensor of the test model is followed by padding");
        const Vbseg__Tensor *t = pm->graph->tensor[gap >= 0 ? gap : 0];
        char want[300];
        b[doff + t->offset + t->length] = 1;
        snprintf(want, sizeof want, "padding after tensor '%s' is not zero", t->name);
        expect_refusal("tensor_padding", b, good_n, VBS_ERR_FORMAT, want);
        b[doff + t->offset + t->length] = 0;
        t = pm->graph->tensor[last];
        CHECK(doff + t->offset + t->length < good_n, "the last tensor ends the file: no padding after it to test");
        b[good_n - 1] = 0x80;
        snprintf(want, sizeof want, "padding after tensor '%s' is not zero", t->name);
        expect_refusal("tail_padding", b, good_n, VBS_ERR_FORMAT, want);
        b[good_n - 1] = 0;
        vbseg__model__free_unpacked(pm, NULL);
    }
    /* NaN in the data section (the first weight), its CRC made to match: the runtime's check */
    {
        Vbseg__Model *pm = header();
        Vbseg__Tensor *t = pm->graph->tensor[find_tensor(pm, "enc0.conv1.weight")];
        float nan = NAN;
        memcpy(good + doff + t->offset + 8, &nan, 4); /* rebuild() copies good's data section */
        t->crc32c = vbs_crc32c(0, good + doff + t->offset, t->length);
        size_t n;
        uint8_t *nb = rebuild(pm, &n);
        memcpy(good, b, good_n);
        expect_refusal("nan_weight", nb, n, VBS_ERR_NUMERIC, "'enc0.conv1.weight' contains NaN");
        free(nb);
        vbseg__model__free_unpacked(pm, NULL);
    }
    free(b);

    EDIT("length_lies", VBS_ERR_FORMAT, "'enc0.conv1.weight': length", pm->graph->tensor[find_tensor(pm, "enc0.conv1.weight")]->length += 4);
    EDIT("offset_outside", VBS_ERR_FORMAT, "outside", pm->graph->tensor[pm->graph->n_tensor - 1]->offset = vbs_rd64(good + 24));
    EDIT("offset_unaligned", VBS_ERR_FORMAT, "not 64-byte aligned", pm->graph->tensor[1]->offset += 4);
    EDIT("overlap", VBS_ERR_FORMAT, "overlap", pm->graph->tensor[2]->offset = pm->graph->tensor[1]->offset);
    EDIT("dims_overflow", VBS_ERR_FORMAT, "overflows", {
        Vbseg__Tensor *t = pm->graph->tensor[0];
        t->dims[0] = (int64_t)1 << 40;
        t->dims[1] = (int64_t)1 << 40;
    });
    EDIT("zero_dim", VBS_ERR_FORMAT, "must be > 0", pm->graph->tensor[0]->dims[1] = 0);
    EDIT("unknown_op", VBS_ERR_GRAPH, "unknown op 'FancyConv'", repl(&pm->graph->node[find_node(pm, "Relu")]->op_type, "FancyConv"));
    EDIT("dangling_input", VBS_ERR_GRAPH, "input 'nowhere' is not defined", repl(&pm->graph->node[find_node(pm, "Relu")]->input[0], "nowhere"));
    EDIT("cycle", VBS_ERR_GRAPH, "cycle", {
        /* the first conv now reads the output of a node downstream of it */
        int c = find_node(pm, "Conv"), r = find_node(pm, "MaxPool");
        repl(&pm->graph->node[c]->input[0], pm->graph->node[r]->output[0]);
    });
    EDIT("missing_rho", VBS_ERR_FORMAT, "without a rho", repl(&pm->graph->tensor[find_tensor(pm, "enc0.conv1.weight")]->rho, "ghost"));
    EDIT("missing_prior", VBS_ERR_FORMAT, "without a prior", {
        Vbseg__Tensor *t = pm->graph->tensor[find_tensor(pm, "enc0.conv1.weight")];
        vbseg__prior__free_unpacked(t->prior, NULL);
        t->prior = NULL;
    });
    EDIT("mu_rho_shape", VBS_ERR_SHAPE, "mu and rho", {
        Vbseg__Tensor *t = pm->graph->tensor[find_tensor(pm, "enc0.conv1.weight.rho")];
        int64_t d = t->dims[0];
        t->dims[0] = t->dims[1];
        t->dims[1] = d;
    });
    EDIT("shape_mismatch", VBS_ERR_SHAPE, "enc0.conv2", {
        /* swap in/out channels of a conv (mu and rho alike): 4x4 stays 4x4 unless shapes differ, so use enc1.conv1 */
        const char *names[2] = {"enc0.conv2.weight", "enc0.conv2.weight.rho"};
        for (int i = 0; i < 2; i++) {
            Vbseg__Tensor *t = pm->graph->tensor[find_tensor(pm, names[i])];
            t->dims[1] *= 3;
            t->dims[2] = 1;
        }
    });
    EDIT("missing_attribute", VBS_ERR_GRAPH, "missing required attribute 'axis'", {
        Vbseg__Node *n = pm->graph->node[find_node(pm, "Concat")];
        for (size_t i = 0; i < n->n_attribute; i++) vbseg__attribute__free_unpacked(n->attribute[i], NULL);
        n->n_attribute = 0;
    });
    EDIT("bad_attribute", VBS_ERR_GRAPH, "strides must be > 0", {
        Vbseg__Node *n = pm->graph->node[find_node(pm, "MaxPool")];
        for (size_t i = 0; i < n->n_attribute; i++)
            if (!strcmp(n->attribute[i]->name, "strides")) n->attribute[i]->ints[0] = 0;
    });
    EDIT("duplicate_tensor", VBS_ERR_FORMAT, "defined twice", repl(&pm->graph->tensor[1]->name, pm->graph->tensor[0]->name));
    EDIT("no_output", VBS_ERR_GRAPH, "not produced", repl(&pm->graph->output[0]->name, "ghost"));
    EDIT("wrong_dtype", VBS_ERR_FORMAT, "dtype", pm->graph->tensor[0]->dtype = VBSEG__DTYPE__DTYPE_UNDEFINED);
    EDIT("missing_crc", VBS_ERR_FORMAT, "tensor 'enc0.conv1.weight': no checksum in a format 1.2 file",
         pm->graph->tensor[find_tensor(pm, "enc0.conv1.weight")]->has_crc32c = 0);
    EDIT("missing_format_minor", VBS_ERR_FORMAT, "the preamble says format 1.2 but the header has no format version", pm->has_format_minor = 0);
}

/* Files of 1.0 and 1.1 (no checksums) still load, unverified, and say so:
 * one written by the writer's flag, and tests/data/format11.vbseg, a
 * checkpoint the 1.1 writer made (`vbseg train --base 1 --depth 1 --latent 0
 * --norm none --patch 16x16` on four 16x16x4 make_scan cases), which the
 * flag must reproduce byte for byte. */
static void old_files(void) {
    vbs_unet_opts o = vbs_unet_defaults();
    o.base = 4; o.depth = 2; o.hetero = 1; o.latent = 3; o.in_channels = 2; o.classes = 3;
    vbs_model *m;
    CHECK(vbs_unet_build(&o, &m) == VBS_OK, "%s", vbs_model_errmsg(m));
    char p[300], e[VBS_ERRLEN];
    snprintf(p, sizeof p, "%s/old.vbseg", dir);
    CHECK(vbs_format_write_flags(&m->def, p, VBS_WRITE_NO_CHECKSUMS, e) == VBS_OK, "%s", e);
    vbs_model_free(m);
    size_t n;
    uint8_t *b = slurp(p, &n);
    if (!b) { CHECK(0, "%s not written", p); return; }
    CHECK(vbs_rd16(b + 10) == 0, "a model without checksums is format 1.%u, want 1.0", vbs_rd16(b + 10));
    vbs_model *l;
    CHECK(vbs_model_load_memory(b, n, "old", &l) == VBS_OK, "a 1.0 file refused: %s", vbs_model_errmsg(l));
    if (l->loaded) CHECK(!l->def.checksummed && l->def.format_minor == 0, "a 1.0 file counted as checksummed");
    vbs_model_free(l);
    /* its padding is checked all the same */
    b[n - 1] = 1;
    CHECK(vbs_model_load_memory(b, n, "old", &l) == VBS_ERR_FORMAT && strstr(vbs_model_errmsg(l), "is not zero"),
          "non-zero padding in a 1.0 file: %s", vbs_model_errmsg(l));
    vbs_model_free(l);
    b[n - 1] = 0;
    /* a 1.0 file whose minor says 1.2 has no checksums to check: refused */
    vbs_wr16(b + 10, 2);
    CHECK(vbs_model_load_memory(b, n, "old", &l) == VBS_ERR_FORMAT && strstr(vbs_model_errmsg(l), "header has no format version"),
          "a 1.0 file claiming 1.2: %s", vbs_model_errmsg(l));
    vbs_model_free(l);
    free(b);
    snprintf(p, sizeof p, "%s/data/format11.vbseg", VBS_TESTS_DIR);
    b = slurp(p, &n);
    CHECK(b && vbs_rd16(b + 10) == 1, "%s: missing or not format 1.1", p);
    if (!b) return;
    CHECK(vbs_model_load_memory(b, n, "format11", &l) == VBS_OK, "the 1.1 file refused: %s", vbs_model_errmsg(l));
    if (l->loaded) {
        CHECK(!l->def.checksummed && l->def.format_minor == 1 && l->def.train, "the 1.1 file: checksummed %d, minor %d",
              l->def.checksummed, l->def.format_minor);
        char q[300];
        snprintf(q, sizeof q, "%s/again11.vbseg", dir);
        CHECK(vbs_format_write_flags(&l->def, q, VBS_WRITE_NO_CHECKSUMS, e) == VBS_OK, "%s", e);
        size_t n2;
        uint8_t *b2 = slurp(q, &n2);
        CHECK(b2 && n2 == n && !memcmp(b, b2, n), "rewriting the 1.1 file without checksums changed its bytes");
        free(b2);
        /* saved again it is 1.2, every tensor (the Adam moments too) checksummed, and loads verified */
        snprintf(q, sizeof q, "%s/upgraded.vbseg", dir);
        CHECK(vbs_model_save(l, q) == VBS_OK, "%s", vbs_model_errmsg(l));
        vbs_model *u;
        CHECK(vbs_model_load(q, &u) == VBS_OK && u->def.checksummed && u->def.format_minor == 2 && u->def.train, "the upgraded file: %s",
              vbs_model_errmsg(u));
        vbs_model_free(u);
    }
    vbs_model_free(l);
    free(b);
}

/* Seeded random damage (bit flips, overwritten bytes, truncation, in the
 * header and in the data): every load must end in a status, never a crash,
 * and a success must be a model that runs. Under ASan in CI. */
static void mutations(void) {
    uint64_t r = 0x9E3779B97F4A7C15ull;
    int refused = 0, loaded = 0;
    uint8_t *b = malloc(good_n);
    uint64_t hend = VBS_PREAMBLE + vbs_rd64(good + 16);
    for (int t = 0; t < 1500; t++) {
        memcpy(b, good, good_n);
        size_t n = good_n;
        int kind = t % 4, edits = 1 + t % 5;
        for (int e = 0; e < edits; e++) {
            r ^= r << 13; r ^= r >> 7; r ^= r << 17;
            size_t at = kind == 3 ? (size_t)(r % good_n) : (size_t)(r % hend); /* kinds 0-2 hit the preamble and header */
            if (kind == 0 || kind == 3) b[at] ^= (uint8_t)(1u << (r >> 60 & 7));
            else if (kind == 1) b[at] = (uint8_t)(r >> 56);
            else n = at;
        }
        if (kind != 2 && kind != 3 && t % 2) /* half of the header edits come with a fixed CRC, to reach the protobuf and the graph */
            vbs_wr32(b + 12, (uint32_t)crc32(0L, b + VBS_PREAMBLE, (uInt)(vbs_rd64(b + 16) <= n - VBS_PREAMBLE ? vbs_rd64(b + 16) : 0)));
        vbs_model *m;
        vbs_status st = vbs_model_load_memory(b, n, "mutant", &m);
        if (st == VBS_OK) {
            loaded++;
            vbs_session *s;
            int64_t shape[4] = {1, 2, 8, 8};
            float x[128] = {0};
            vbs_session_new(m, &s);
            vbs_session_forward(s, x, shape, 4, VBS_MODE_SAMPLE, 1, 0); /* may refuse a changed input shape; must not crash */
            vbs_session_free(s);
        } else {
            refused++;
            CHECK(strlen(vbs_model_errmsg(m)) > 8, "mutant %d: empty message", t);
        }
        vbs_model_free(m);
    }
    printf("mutations: %d refused, %d loaded\n", refused, loaded);
    CHECK(refused > 1000, "only %d of 1500 damaged files refused", refused);
    free(b);
}

/* The finite check: made in the reader's CRC pass (48 KiB chunks) for a
 * checksummed file, by the runtime for a 1.0 file. A NaN or an Inf at the
 * first element, on either side of a chunk boundary and at the last
 * element of a weight over 3 chunks long, and in a rho: each refused,
 * naming the tensor, in both layouts (the writer computes the right CRC). */
static void nonfinite(void) {
    vbs_unet_opts o = vbs_unet_defaults();
    o.base = 32; o.depth = 2; o.in_channels = 1; o.classes = 2; o.latent = 0;
    vbs_model *m;
    CHECK(vbs_unet_build(&o, &m) == VBS_OK, "%s", vbs_model_errmsg(m));
    if (!m->loaded) { vbs_model_free(m); return; }
    const vbs_tensor_def *big = NULL, *rho = NULL;
    for (int i = 0; i < m->def.n_tensors; i++) {
        const vbs_tensor_def *t = &m->def.tensors[i];
        if (t->role == VBS_ROLE_MU && (!big || t->numel > big->numel)) big = t;
        if (t->role == VBS_ROLE_RHO && !rho) rho = t;
    }
    const int64_t chunk = 6 * 8192 / 4; /* floats per chunk of format/reader.c */
    CHECK(big && big->numel > 3 * chunk && rho, "no weight over 3 chunks (%lld floats) or no rho", big ? (long long)big->numel : 0LL);
    if (!big || big->numel <= 3 * chunk || !rho) { vbs_model_free(m); return; }
    struct { const vbs_tensor_def *t; int64_t at; } spots[] = {
        {big, 0}, {big, chunk - 1}, {big, chunk}, {big, 2 * chunk + 1}, {big, big->numel - 1}, {rho, rho->numel / 2}};
    const float bad[2] = {NAN, -INFINITY};
    for (size_t k = 0; k < sizeof spots / sizeof spots[0]; k++)
        for (int v = 0; v < 2; v++)
            for (int flags = 0; flags <= VBS_WRITE_NO_CHECKSUMS; flags += VBS_WRITE_NO_CHECKSUMS) {
                float *x = (float *)spots[k].t->data + spots[k].at, keep = *x;
                *x = bad[v];
                char p[300], e[VBS_ERRLEN], what[64], want[300];
                snprintf(what, sizeof what, "nonfinite_%zu_%d_%s", k, v, flags ? "1.0" : "1.2");
                snprintf(p, sizeof p, "%s/%s.vbseg", dir, what);
                CHECK(vbs_format_write_flags(&m->def, p, flags, e) == VBS_OK, "%s", e);
                *x = keep;
                size_t n;
                uint8_t *b = slurp(p, &n);
                snprintf(want, sizeof want, "tensor '%s' contains NaN or Inf", spots[k].t->name);
                if (b) expect_refusal(what, b, n, VBS_ERR_NUMERIC, want);
                free(b);
            }
    /* and the same model, all finite, loads in both layouts */
    for (int flags = 0; flags <= VBS_WRITE_NO_CHECKSUMS; flags += VBS_WRITE_NO_CHECKSUMS) {
        char p[300], e[VBS_ERRLEN] = "";
        snprintf(p, sizeof p, "%s/finite_%d.vbseg", dir, flags);
        vbs_model *l;
        CHECK(vbs_format_write_flags(&m->def, p, flags, e) == VBS_OK && vbs_model_load(p, &l) == VBS_OK, "all finite, flags %d: %s %s", flags,
              e, vbs_model_errmsg(l));
        vbs_model_free(l);
    }
    vbs_model_free(m);
}

int main(void) {
    if (!mkdtemp(dir)) return 1;
    round_trip();
    if (good) refusals();
    if (good) mutations();
    old_files();
    nonfinite();
    free(good);
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (system(cmd)) printf("could not remove %s\n", dir);
    return finish("test_format");
}
