/*
 * test_pytorch.c DIR: the PyTorch checkpoint reader (converters/pytorch.c)
 * against the files tests/torch_ckpt.py wrote into DIR with real PyTorch:
 *   - every "ok" case read from its path and from memory: each tensor's
 *     name, dtype, shape and float32 values equal to torch's own conversion
 *     (.f32, exact), and the training checkpoint's key;
 *   - every "bad" case (hostile files) refused with its message, one line
 *     that starts with the file's name;
 *   - seeded mutations of the valid files (bit flips, bytes set, copied
 *     runs, truncations, insertions, deletions; half of them aimed at
 *     data.pkl, and the zip's CRC-32 fixed after in-place changes so they
 *     reach the unpickler): each ends in a status, an accepted one with
 *     readable data and consistent shapes. Under ASan/UBSan this is the
 *     no-crash check.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "check.h"
#include "ckpt.h"
#include "slurp.h"

#define MUTATIONS_PER_FILE 700

static const char *dir;

static char *join(const char *name) {
    static char p[8192];
    snprintf(p, sizeof p, "%.4000s/%.4000s", dir, name);
    return p;
}

typedef struct {
    char name[512], dtype[16];
    int ndim;
    int64_t dims[VBS_MAX_DIMS], numel;
} want;

/* n expected tensor lines "NAME DTYPE NDIM DIMS..." */
static int read_wants(FILE *f, want *w, int n) {
    for (int i = 0; i < n; i++) {
        if (fscanf(f, "%511s %15s %d", w[i].name, w[i].dtype, &w[i].ndim) != 3 || w[i].ndim < 0 ||
            w[i].ndim > VBS_MAX_DIMS)
            return 0;
        w[i].numel = 1;
        for (int d = 0; d < w[i].ndim; d++) {
            long long x;
            if (fscanf(f, "%lld", &x) != 1) return 0;
            w[i].dims[d] = x;
            w[i].numel *= x;
        }
    }
    return 1;
}

static int is_float(const char *dtype) {
    return !strcmp(dtype, "F32") || !strcmp(dtype, "F16") || !strcmp(dtype, "BF16") || !strcmp(dtype, "F64");
}

/* c against the expected tensors and values (torch's float32 conversion, compared exactly) */
static void compare(const char *file, const vbs_ckpt *c, const want *w, int n, const char *outkey, const float *vals,
                    size_t nvals) {
    size_t at = 0;
    CHECK(c->n == n, "%s: %d tensors, want %d", file, c->n, n);
    if (strcmp(outkey, "-") == 0) CHECK(c->key == NULL, "%s: key %s, want none", file, c->key);
    else CHECK(c->key && strcmp(c->key, outkey) == 0, "%s: key %s, want %s", file, c->key ? c->key : "(none)", outkey);
    for (int i = 0; i < n && i < c->n; i++) {
        const vbs_ckpt_tensor *t = &c->t[i];
        CHECK(strcmp(t->name, w[i].name) == 0, "%s: tensor %d is %s, want %s", file, i, t->name, w[i].name);
        CHECK(strcmp(t->dtype, w[i].dtype) == 0, "%s: %s dtype %s, want %s", file, w[i].name, t->dtype, w[i].dtype);
        int same = t->ndim == w[i].ndim && t->numel == w[i].numel;
        for (int d = 0; same && d < w[i].ndim; d++) same = t->dims[d] == w[i].dims[d];
        CHECK(same, "%s: %s shape differs (ndim %d, numel %lld)", file, w[i].name, t->ndim, (long long)t->numel);
        if (!is_float(w[i].dtype)) {
            CHECK(t->data == NULL, "%s: %s (%s) has float data", file, w[i].name, w[i].dtype);
            continue;
        }
        if (!same || at + (size_t)w[i].numel > nvals) {
            CHECK(0, "%s: %s: no values to compare", file, w[i].name);
            continue;
        }
        CHECK(t->data != NULL, "%s: %s has no data", file, w[i].name);
        if (t->data) {
            char what[1200];
            snprintf(what, sizeof what, "%.200s %.500s", file, w[i].name);
            CHECK(close_enough(what, t->data, vals + at, (long)w[i].numel, 0, 0), "%s: %s values", file, w[i].name);
        }
        at += (size_t)w[i].numel;
    }
    CHECK(at == nvals, "%s: %zu of %zu expected values compared", file, at, nvals);
}

/* ---- mutations -------------------------------------------------------------- */

typedef struct {
    size_t data, size, crc_at; /* an entry's data and its CRC field in the central directory */
} span;

static uint64_t rng_state;
static uint64_t rnd(void) { /* splitmix64 */
    uint64_t z = (rng_state += 0x9E3779B97F4A7C15ull);
    z = (z ^ z >> 30) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ z >> 27) * 0x94D049BB133111EBull;
    return z ^ z >> 31;
}

static uint32_t le32(const uint8_t *p) { return (uint32_t)p[0] | p[1] << 8 | p[2] << 16 | (uint32_t)p[3] << 24; }
static uint16_t le16(const uint8_t *p) { return (uint16_t)(p[0] | p[1] << 8); }

/* the entries of a valid small zip (no ZIP64 fields in its directory), independently of the reader */
static int spans(const uint8_t *b, size_t n, span *s, int max, int *pkl) {
    size_t e = n - 22;
    while (e > 0 && memcmp(b + e, "PK\5\6", 4)) e--;
    size_t p = le32(b + e + 16);
    int k = 0;
    *pkl = -1;
    for (int i = 0; i < le16(b + e + 10) && k < max; i++) {
        size_t nl = le16(b + p + 28), hdr = le32(b + p + 42);
        s[k].crc_at = p + 16;
        s[k].size = le32(b + p + 20);
        if (s[k].size == 0xFFFFFFFF) /* in the ZIP64 extra field (z64_valid.pt), usize first */
            s[k].size = le32(b + p + 46 + nl + 4) | (size_t)le32(b + p + 46 + nl + 8) << 32;
        s[k].data = hdr + 30 + le16(b + hdr + 26) + le16(b + hdr + 28);
        if (nl >= 8 && memcmp(b + p + 46 + nl - 8, "data.pkl", 8) == 0) *pkl = k;
        k++;
        p += 46 + nl + le16(b + p + 30) + le16(b + p + 32);
    }
    return k;
}

static int accepted, refused;

static void mutate_one(const char *file, const uint8_t *orig, size_t n, const span *s, int ns, int pkl, uint8_t *buf) {
    size_t len = n;
    memcpy(buf, orig, n);
    int inplace = 1;
    int kind = (int)(rnd() % 8);
    /* where: half in data.pkl, else anywhere */
    size_t lo = 0, hi = n;
    if (pkl >= 0 && rnd() % 2) lo = s[pkl].data, hi = s[pkl].data + s[pkl].size;
    size_t at = lo + rnd() % (hi - lo);
    switch (kind) {
    case 0: case 1: /* 1..4 bit flips */
        for (int k = 1 + (int)(rnd() % 4); k-- > 0;) {
            size_t q = lo + rnd() % (hi - lo);
            buf[q] ^= (uint8_t)(1u << rnd() % 8);
        }
        break;
    case 2: { /* an interesting byte */
        static const uint8_t v[] = {0, 1, 0x7f, 0x80, 0xff, '(', 't', 'R', 'Q', 'e', 'u', 's', 'a', 'h', 'q', '.'};
        buf[at] = v[rnd() % sizeof v];
        break;
    }
    case 3: { /* an interesting 32-bit value */
        static const uint32_t v[] = {0, 1, 0x7fffffff, 0x80000000u, 0xffffffffu, 0xfffffffeu, 0x10000};
        uint32_t x = v[rnd() % 7];
        for (int k = 0; k < 4 && at + k < n; k++) buf[at + k] = (uint8_t)(x >> 8 * k);
        break;
    }
    case 4: { /* a run copied from elsewhere */
        size_t from = rnd() % n, m = 1 + rnd() % 16;
        for (size_t k = 0; k < m && at + k < n && from + k < n; k++) buf[at + k] = orig[from + k];
        break;
    }
    case 5: /* truncation */
        len = at;
        inplace = 0;
        break;
    case 6: /* a byte inserted */
        memmove(buf + at + 1, orig + at, n - at);
        buf[at] = (uint8_t)rnd();
        len = n + 1;
        inplace = 0;
        break;
    default: /* a byte deleted */
        memmove(buf + at, orig + at + 1, n - at - 1);
        len = n - 1;
        inplace = 0;
        break;
    }
    if (inplace) /* the entries' checksums follow their bytes, so the change reaches what reads them */
        for (int i = 0; i < ns; i++) {
            uint32_t c = (uint32_t)crc32(crc32(0L, Z_NULL, 0), buf + s[i].data, (uInt)s[i].size);
            for (int k = 0; k < 4; k++) buf[s[i].crc_at + k] = (uint8_t)(c >> 8 * k);
        }
    vbs_ckpt c;
    char err[512] = "";
    vbs_status st = vbs_ckpt_read_pytorch_memory(buf, len, file, NULL, &c, err, sizeof err);
    if (st == VBS_OK) {
        accepted++;
        int ok = 1;
        volatile float sink = 0;
        for (int i = 0; i < c.n; i++) {
            int64_t m = 1;
            for (int d = 0; d < c.t[i].ndim; d++) m *= c.t[i].dims[d];
            ok = ok && m == c.t[i].numel && c.t[i].name;
            if (c.t[i].data)
                for (int64_t k = 0; k < c.t[i].numel; k++) sink += c.t[i].data[k];
        }
        (void)sink;
        if (!ok) CHECK(0, "%s: a mutation accepted with inconsistent shapes", file);
        vbs_ckpt_free(&c);
    } else {
        refused++;
        if (!err[0] || strchr(err, '\n') || strncmp(err, file, strlen(file)) != 0)
            CHECK(0, "%s: a mutation refused (%d) with message '%s'", file, (int)st, err);
    }
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: test_pytorch DIR (written by tests/torch_ckpt.py)\n");
        return 2;
    }
    dir = argv[1];
    FILE *cases = fopen(join("cases.txt"), "r");
    if (!cases) {
        fprintf(stderr, "test_pytorch: cannot open %s\n", join("cases.txt"));
        return 1;
    }
    char kind[8], file[256], argkey[256];
    char valid[32][256];
    int nvalid = 0, nok = 0, nbad = 0;
    while (fscanf(cases, "%7s %255s %255s", kind, file, argkey) == 3) {
        const char *key = strcmp(argkey, "-") ? argkey : NULL;
        char path[8192];
        snprintf(path, sizeof path, "%s", join(file));
        vbs_ckpt c;
        char err[512] = "";
        if (strcmp(kind, "ok") == 0) {
            char outkey[256], f32name[600];
            int n;
            static want w[64];
            if (fscanf(cases, "%255s %d", outkey, &n) != 2 || n < 0 || n > 64 || !read_wants(cases, w, n)) {
                CHECK(0, "cases.txt: a bad line at %s", file);
                break;
            }
            nok++;
            snprintf(f32name, sizeof f32name, "%s.%s.f32", file, argkey);
            size_t nb = 0, nf = 0;
            uint8_t *f32 = slurp(join(f32name), &nb), *bytes = slurp(path, &nf);
            float *vals = malloc(nb + 4);
            if (f32 && vals) memcpy(vals, f32, nb);
            CHECK(f32 && bytes && vals, "%s: cannot read it or its values", file);
            vbs_status st = vbs_ckpt_read_pytorch(path, key, &c, err, sizeof err);
            CHECK(st == VBS_OK, "%s (key %s): %s", file, argkey, err);
            if (!st && vals) compare(file, &c, w, n, outkey, vals, nb / 4);
            vbs_ckpt_free(&c);
            /* from memory: the same */
            st = bytes ? vbs_ckpt_read_pytorch_memory(bytes, nf, file, key, &c, err, sizeof err) : VBS_ERR_IO;
            CHECK(st == VBS_OK, "%s from memory: %s", file, err);
            if (!st && vals) compare(file, &c, w, n, outkey, vals, nb / 4);
            vbs_ckpt_free(&c);
            if (!key && nvalid < 32) snprintf(valid[nvalid++], sizeof valid[0], "%s", file);
            free(f32);
            free(bytes);
            free(vals);
        } else {
            char msg[1024];
            if (!fgets(msg, sizeof msg, cases)) break;
            msg[strcspn(msg, "\n")] = 0;
            const char *m = msg + strspn(msg, " ");
            nbad++;
            vbs_status st = vbs_ckpt_read_pytorch(path, key, &c, err, sizeof err);
            CHECK(st != VBS_OK && strstr(err, m) != NULL, "%s: status %d, message '%s', want '%s'", file, (int)st, err, m);
            CHECK(strncmp(err, path, strlen(path)) == 0 && !strchr(err, '\n'), "%s: message '%s' is not one line "
                  "naming the file", file, err);
            CHECK(c.n == 0 && c.t == NULL && c.key == NULL, "%s: a refusal left tensors", file);
            vbs_ckpt_free(&c);
        }
    }
    fclose(cases);
    CHECK(nok >= 10 && nbad >= 40, "cases.txt has %d ok and %d bad cases", nok, nbad);

    /* the caller's errors */
    vbs_ckpt c;
    char err[512];
    vbs_status st = vbs_ckpt_read_pytorch(join("no-such-file.pt"), NULL, &c, err, sizeof err);
    CHECK(st == VBS_ERR_IO && strstr(err, "no-such-file.pt: cannot open"), "a missing file: %d %s", (int)st, err);
    st = vbs_ckpt_read_pytorch(dir, NULL, &c, err, sizeof err);
    CHECK(st == VBS_ERR_IO && strstr(err, "cannot read"), "a folder: %d %s", (int)st, err);
    st = vbs_ckpt_read_pytorch_memory("PK", 2, "two.pt", NULL, &c, err, sizeof err);
    CHECK(st == VBS_ERR_FORMAT && !strcmp(err, "two.pt: not a zip archive (no end of central directory record): not a "
                                          "torch.save checkpoint"), "two bytes: %d %s", (int)st, err);
    CHECK(vbs_ckpt_read_pytorch_memory("PK", 2, "x", NULL, NULL, err, sizeof err) == VBS_ERR_ARG, "no output");

    /* seeded mutations of each valid file read without a key */
    rng_state = 11;
    for (int v = 0; v < nvalid; v++) {
        size_t n;
        uint8_t *orig = slurp(join(valid[v]), &n);
        uint8_t *buf = orig ? malloc(n + 1) : NULL;
        span s[64];
        int pkl, ns = orig ? spans(orig, n, s, 64, &pkl) : 0;
        CHECK(buf && ns > 0 && pkl >= 0, "%s: cannot set up its mutations", valid[v]);
        for (int k = 0; buf && ns > 0 && k < MUTATIONS_PER_FILE; k++) mutate_one(valid[v], orig, n, s, ns, pkl, buf);
        free(orig);
        free(buf);
    }
    printf("mutations: %d accepted, %d refused over %d files\n", accepted, refused, nvalid);
    CHECK(accepted + refused >= 5000 && refused > 1000, "%d mutations accepted, %d refused", accepted, refused);
    return finish("test_pytorch");
}
