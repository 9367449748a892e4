/*
 * corrupt_sweep.c: the corruption sweep of issue 10 on a real model (a
 * variational 2D U-Net from the builder, as `vbseg create` makes it: mu/rho
 * pairs with priors, a latent, heteroscedastic heads, a card), loaded from
 * memory (each mutant in a heap buffer of exactly its size, so ASan sees any
 * read past the end) and, for a few, through the file path:
 *  - truncated at every byte boundary of the preamble, the header and its
 *    padding, and at 1,000 points spread over the data section;
 *  - 10^4 single-bit flips: every bit of the preamble, then seeded random
 *    bits with at least 1,000 in each of the header, the padding and the
 *    tensor data, the rest anywhere in the file.
 * Every one must be refused with a one-line message that starts with the
 * file's name. The oracle for what the message names is the file's own
 * layout, read here from the good file's header: a flip in the header must
 * be a header checksum mismatch, in the padding "padding after the header"
 * or "padding after tensor 'T'" with T the tensor the gap follows, in the
 * data "tensor 'T': checksum mismatch" with T the tensor holding the byte;
 * in the preamble, the field it hit. A mutant that loads is run (mean and
 * sample mode) and counted "loaded identical" or "loaded silently
 * different" against the good model's outputs: both counts must be 0.
 *
 *   corrupt_sweep                   the sweep; prints the counts per region
 *   corrupt_sweep --offset FILE T   prints the file offset of tensor T's bytes
 *                                   (tests/corrupt_sweep.sh flips a bit there)
 */
#include <stdlib.h>
#include <unistd.h>

#include "../format/layout.h"
#include "check.h"
#include "internal.h"
#include "slurp.h"
#include "unet.h"
#include "vbseg.pb-c.h"

enum { PREAMBLE, HEADER, PADDING, DATA, NREG };
static const char *reg_name[NREG] = {"preamble", "header", "padding", "data"};

static uint8_t *good;
static size_t good_n;
static uint64_t hlen, doff;
static Vbseg__Model *hdr;          /* the good file's header */
static int *by_off;                /* tensor indices in offset order */
static float ref_mean[3 * 256], ref_sample[3 * 256];

static uint64_t rng = 0x9E3779B97F4A7C15ull;
static uint64_t next(void) {
    rng ^= rng << 13; rng ^= rng >> 7; rng ^= rng << 17;
    return rng;
}

/* the region of file byte at; *tensor: the tensor holding it (DATA) or the one the gap follows (-1: the header's padding) */
static int region(uint64_t at, int *tensor) {
    *tensor = -1;
    if (at < VBS_PREAMBLE) return PREAMBLE;
    if (at < VBS_PREAMBLE + hlen) return HEADER;
    if (at < doff) return PADDING;
    uint64_t d = at - doff;
    for (size_t i = 0; i < hdr->graph->n_tensor; i++) {
        const Vbseg__Tensor *t = hdr->graph->tensor[by_off[i]];
        if (d < t->offset) return PADDING; /* a gap before the first tensor: none in files the writer makes */
        *tensor = by_off[i];
        if (d < t->offset + t->length) return DATA;
    }
    return PADDING;
}

/* What a refusal of a flip at `at` must say. */
static void expected(uint64_t at, char *want, size_t n) {
    int t, r = region(at, &t);
    const char *name = t >= 0 ? hdr->graph->tensor[t]->name : "";
    if (r == HEADER) snprintf(want, n, "header checksum mismatch");
    else if (r == PADDING && t < 0) snprintf(want, n, "padding after the header is not zero");
    else if (r == PADDING) snprintf(want, n, "padding after tensor '%s' is not zero", name);
    else if (r == DATA) snprintf(want, n, "tensor '%s': checksum mismatch", name);
    else if (at < 8) snprintf(want, n, "bad magic bytes");
    else if (at < 10) snprintf(want, n, "format");   /* the major: "major version 0 is invalid" or "newer than this reader" */
    else if (at < 12) snprintf(want, n, "the preamble says format 1.");                     /* minor */
    else if (at < 16) snprintf(want, n, "header checksum mismatch");                          /* the CRC */
    else if (at < 24) snprintf(want, n, "%s", "");  /* H: length, size, CRC or padding, depending on the bit */
    else snprintf(want, n, "preamble declares");                                              /* D */
}

/* runs a loaded model on a fixed input in mean and sample mode; 1 when output 0 equals the good
 * model's bit for bit both times (record: the good model itself, whose outputs are kept) */
static int same_outputs(vbs_model *m, int record) {
    int64_t shape[4] = {1, 4, 16, 16};
    static float x[4 * 256];
    for (int i = 0; i < 4 * 256; i++) x[i] = (float)((i * 37) % 23) * 0.1f - 1.f;
    vbs_session *s;
    if (vbs_session_new(m, &s)) { vbs_session_free(s); return 0; }
    int same = 1;
    for (int mode = 0; mode < 2; mode++) {
        float *ref = mode ? ref_sample : ref_mean;
        if (vbs_session_forward(s, x, shape, 4, mode ? VBS_MODE_SAMPLE : VBS_MODE_MEAN, 7, 0)) { same = 0; break; }
        const float *y;
        vbs_value_info vi;
        if (vbs_session_output(s, 0, &y, &vi) || vi.ndim != 4 || vi.dims[1] != 3 || vi.dims[2] != 16 || vi.dims[3] != 16) {
            same = 0;
            break;
        }
        if (record) memcpy(ref, y, sizeof(float) * 3 * 256);
        else same &= !memcmp(y, ref, sizeof(float) * 3 * 256);
    }
    vbs_session_free(s);
    return same;
}

typedef struct { int tried, refused, named, identical, different; } counts;

/* loads b (n bytes; from a heap copy of exactly n bytes, or through a file); checks the refusal against want */
static void try_load(const uint8_t *b, size_t n, const char *want, counts *c, const char *what, int through_file) {
    char path[] = "/tmp/vbs_sweep.XXXXXX";
    const char *name = "sweep.vbseg";
    uint8_t *copy = NULL;
    vbs_model *m;
    vbs_status st;
    if (through_file) {
        int fd = mkstemp(path);
        int ok = fd >= 0 && write(fd, b, n) == (ssize_t)n;
        if (fd >= 0) close(fd);
        CHECK(ok, "%s: cannot write", path);
        st = vbs_model_load(path, &m);
        name = path;
    } else {
        copy = malloc(n ? n : 1); /* exactly n bytes: ASan catches a read past the end */
        if (n) memcpy(copy, b, n);
        st = vbs_model_load_memory(copy, n, name, &m);
    }
    c->tried++;
    if (st == VBS_OK) { /* the model is run while its bytes are alive */
        int same = same_outputs(m, 0);
        c->identical += same;
        c->different += !same;
        if (c->identical + c->different <= 5) printf("  LOADED (%s): %s\n", same ? "identical" : "silently different", what);
    } else {
        c->refused++;
        const char *msg = vbs_model_errmsg(m);
        size_t ln = strlen(name);
        int ok = !strncmp(msg, name, ln) && msg[ln] == ':' && strlen(msg) > ln + 8 && !strchr(msg, '\n') && strstr(msg, want);
        c->named += ok;
        if (!ok && c->refused - c->named <= 5) printf("  %s: message '%s' (want '%s')\n", what, msg, want);
    }
    vbs_model_free(m);
    free(copy);
    if (through_file) unlink(path);
}

static void report(const char *what, const counts *c) {
    printf("%-24s %6d: %6d refused (%d naming what failed), %d loaded identical, %d loaded silently different\n", what, c->tried, c->refused,
           c->named, c->identical, c->different);
    CHECK(c->refused == c->tried && c->named == c->tried && !c->identical && !c->different, "%s: not all refused by name", what);
}

static int cmp_off(const void *a, const void *b) {
    uint64_t x = hdr->graph->tensor[*(const int *)a]->offset, y = hdr->graph->tensor[*(const int *)b]->offset;
    return (x > y) - (x < y);
}

static void sweep(void) {
    /* truncations: every length through the preamble, header and padding, then 1,000 spread over the data */
    counts tr_head = {0}, tr_data = {0};
    for (size_t n = 0; n < doff; n++) {
        char what[64];
        snprintf(what, sizeof what, "truncated to %zu", n);
        try_load(good, n, n < VBS_PREAMBLE ? "truncated" : "", &tr_head, what, 0);
    }
    uint64_t dlen = good_n - doff;
    for (int k = 0; k < 1000; k++) {
        size_t n = (size_t)(doff + dlen * (uint64_t)k / 1000 + next() % (dlen / 1000 ? dlen / 1000 : 1));
        char what[64];
        snprintf(what, sizeof what, "truncated to %zu", n);
        try_load(good, n, "", &tr_data, what, 0);
    }
    /* bit flips by region */
    counts flips[NREG] = {{0}};
    uint8_t *b = malloc(good_n);
    memcpy(b, good, good_n);
    int total = 0;
    for (int phase = 0; phase < 3; phase++) {
        /* 0: every bit of the preamble; 1: the minimum per region; 2: anywhere, up to 10^4 in all */
        int want = phase == 0 ? VBS_PREAMBLE * 8 : phase == 1 ? 3000 : 10000 - total;
        for (int k = 0; k < want; k++) {
            uint64_t bit;
            if (phase == 0) bit = (uint64_t)k;
            else if (phase == 1) {
                int r = 1 + k / 1000, t;
                do bit = next() % (good_n * 8); /* rejection: a bit in region r */
                while (region(bit / 8, &t) != r);
            } else bit = next() % (good_n * 8);
            uint64_t at = bit / 8;
            int t, r = region(at, &t);
            char want_msg[400], what[64];
            expected(at, want_msg, sizeof want_msg);
            snprintf(what, sizeof what, "bit %llu (byte %llu)", (unsigned long long)bit, (unsigned long long)at);
            b[at] ^= (uint8_t)(1u << (bit % 8));
            try_load(b, good_n, want_msg, &flips[r], what, 0);
            b[at] ^= (uint8_t)(1u << (bit % 8));
            total++;
        }
    }
    /* a few through the file path: 5 flips per region and 10 truncations */
    counts by_file = {0};
    for (int r = 0; r < NREG; r++)
        for (int k = 0; k < 5; k++) {
            uint64_t bit;
            int t;
            do bit = next() % (good_n * 8);
            while (region(bit / 8, &t) != r);
            char want_msg[400];
            expected(bit / 8, want_msg, sizeof want_msg);
            b[bit / 8] ^= (uint8_t)(1u << (bit % 8));
            try_load(b, good_n, want_msg, &by_file, "a flip through the file path", 1);
            b[bit / 8] ^= (uint8_t)(1u << (bit % 8));
        }
    for (int k = 0; k < 10; k++) try_load(good, (size_t)(next() % good_n), "", &by_file, "a truncation through the file path", 1);
    free(b);

    printf("corruption sweep of a %zu-byte model (preamble 32, header %llu, header padding %llu, data %llu bytes in %zu tensors):\n", good_n,
           (unsigned long long)hlen, (unsigned long long)(doff - VBS_PREAMBLE - hlen), (unsigned long long)dlen, hdr->graph->n_tensor);
    report("truncated in the header", &tr_head);
    report("truncated in the data", &tr_data);
    int sum = 0;
    for (int r = 0; r < NREG; r++) {
        char what[64];
        snprintf(what, sizeof what, "bit flips in the %s", reg_name[r]);
        report(what, &flips[r]);
        sum += flips[r].tried;
    }
    CHECK(sum == 10000, "%d flips, want 10^4", sum);
    for (int r = 1; r < NREG; r++) CHECK(flips[r].tried >= 1000, "%d flips in the %s, want at least 1000", flips[r].tried, reg_name[r]);
    CHECK(flips[PREAMBLE].tried >= VBS_PREAMBLE * 8, "every bit of the preamble");
    report("through the file path", &by_file);
}

/* the model: a variational 2D U-Net as `vbseg create --arch unet --dims 2 --in-channels 4 --classes 3 --base 4 --depth 2 --hetero --latent 3` */
static int make_model(void) {
    vbs_unet_opts o = vbs_unet_defaults();
    o.base = 4; o.depth = 2; o.hetero = 1; o.latent = 3; o.in_channels = 4; o.classes = 3;
    vbs_model *m;
    if (vbs_unet_build(&o, &m)) { CHECK(0, "build: %s", vbs_model_errmsg(m)); vbs_model_free(m); return 0; }
    char dir[] = "/tmp/vbs_sweep_m.XXXXXX", path[64];
    if (!mkdtemp(dir)) return 0;
    snprintf(path, sizeof path, "%s/m.vbseg", dir);
    CHECK(vbs_model_save(m, path) == VBS_OK, "save: %s", vbs_model_errmsg(m));
    vbs_model_free(m);
    good = slurp(path, &good_n);
    unlink(path);
    rmdir(dir);
    if (!good) return 0;
    hlen = vbs_rd64(good + 16);
    doff = vbs_align64(VBS_PREAMBLE + hlen);
    hdr = vbseg__model__unpack(NULL, hlen, good + VBS_PREAMBLE);
    if (!hdr) return 0;
    by_off = malloc(sizeof(int) * (hdr->graph->n_tensor + 1));
    for (size_t i = 0; i < hdr->graph->n_tensor; i++) by_off[i] = (int)i;
    qsort(by_off, hdr->graph->n_tensor, sizeof *by_off, cmp_off);
    /* the good model loads, checksummed, and gives the reference outputs */
    vbs_model *g;
    CHECK(vbs_model_load_memory(good, good_n, "good", &g) == VBS_OK, "%s", vbs_model_errmsg(g));
    int ok = g->loaded && g->def.checksummed && g->def.card.n_channels == 4 && same_outputs(g, 1);
    CHECK(ok, "the good model: loaded %d, checksummed %d", g->loaded, g->loaded && g->def.checksummed);
    int pads = doff > VBS_PREAMBLE + hlen, gaps = 0;
    for (size_t i = 0; i < hdr->graph->n_tensor; i++) gaps += hdr->graph->tensor[i]->length % 64 != 0;
    CHECK(pads && gaps > 3, "the model has too little padding to sweep (%d after the header, %d gaps)", pads, gaps);
    vbs_model_free(g);
    return ok;
}

int main(int argc, char **argv) {
    if (argc == 4 && !strcmp(argv[1], "--offset")) {
        vbs_model *m;
        if (vbs_model_load(argv[2], &m)) { fprintf(stderr, "%s\n", vbs_model_errmsg(m)); return 1; }
        int found = 0;
        for (int i = 0; i < m->def.n_tensors && !found; i++)
            if (!strcmp(m->def.tensors[i].name, argv[3])) {
                printf("%llu\n", (unsigned long long)((const uint8_t *)m->def.tensors[i].data - (const uint8_t *)m->map));
                found = 1;
            }
        vbs_model_free(m);
        if (!found) fprintf(stderr, "%s: no tensor '%s'\n", argv[2], argv[3]);
        return !found;
    }
    if (make_model()) sweep();
    if (hdr) vbseg__model__free_unpacked(hdr, NULL);
    free(by_off);
    free(good);
    return finish("corrupt_sweep");
}
