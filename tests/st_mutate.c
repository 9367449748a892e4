/*
 * st_mutate.c: the seeded mutation sweep of the safetensors reader (issue
 * 11): valid files (the fuzz seeds of tests/fuzz/corpus/safetensors/, and
 * one written here by vbs_ckpt_write_safetensors) mutated 10,000 times each
 * (bit flips, interesting bytes, truncations, insertions, deletions, numbers
 * and dtype names spliced into the header with its length kept right or
 * not), each read from memory. Every read must end in a status: VBS_OK with
 * a consistent checkpoint whose values are all readable, or a refusal with a
 * one-line "NAME: what" message. The oracle is the sanitizers (the suite
 * runs this under ASan/UBSan) and those invariants; the same seed gives the
 * same mutations. Usage: st_mutate CORPUS_DIR (ST_MUTATE_SHOW=1 prints every
 * refusal, to see which checks the sweep reaches)
 */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "ckpt.h"
#include "internal.h"

#define MUTATIONS_PER_FILE 10000

static uint64_t rng_state = 11;
static uint64_t next(void) { /* splitmix64 */
    uint64_t z = (rng_state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}
static size_t below(size_t n) { return n ? (size_t)(next() % n) : 0; }

static uint64_t get_len(const uint8_t *b) {
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--) v = v << 8 | b[i];
    return v;
}
static void set_len(uint8_t *b, uint64_t v) {
    for (int i = 0; i < 8; i++) b[i] = (uint8_t)(v >> (8 * i));
}

/* replaces [at, at+del) of b (len *n, room cap) by ins; keeps the header length right when asked and the edit is in it */
static void splice(uint8_t *b, size_t *n, size_t cap, size_t at, size_t del, const char *ins, size_t nins, int fix) {
    if (at > *n) at = *n;
    if (del > *n - at) del = *n - at;
    if (*n - del + nins > cap) return;
    memmove(b + at + nins, b + at + del, *n - at - del);
    memcpy(b + at, ins, nins);
    *n = *n - del + nins;
    if (fix && *n >= 8 && at >= 8) {
        uint64_t h = get_len(b);
        if (at < 8 + h) set_len(b, h - del + nins);
    }
}

static void mutate(uint8_t *b, size_t *n, size_t cap) {
    static const char *nums[] = {"0", "1", "7", "-1", "1.5", "1e3", "4294967296", "9223372036854775807", "18446744073709551615",
                                 "18446744073709551616", "99999999999999999999999"};
    static const char *dts[] = {"\"BOOL\"", "\"U8\"", "\"I64\"", "\"F16\"", "\"BF16\"", "\"F32\"", "\"F64\"", "\"F8_E5M2\"", "\"\"", "0"};
    static const uint8_t bytes[] = {0, 0xff, 0x80, '0', '9', '{', '}', '[', ']', '"', ',', ':', ' ', '\\', 0xc3};
    int k = 1 + (int)below(3);
    for (int r = 0; r < k; r++) {
        size_t h = *n >= 8 ? (size_t)(get_len(b) < *n ? get_len(b) : *n) : 0; /* the header's length, bounded */
        switch (below(9)) {
        case 0: if (*n) b[below(*n)] ^= (uint8_t)(1u << below(8)); break;
        case 1: if (*n) b[below(*n)] = bytes[below(sizeof bytes)]; break;
        case 2: *n = below(*n + 1); break;
        case 3: { char junk[16]; size_t m = 1 + below(16); for (size_t i = 0; i < m; i++) junk[i] = (char)next();
                  splice(b, n, cap, *n, 0, junk, m, 0); break; }
        case 4: { /* a number into the header, over the digits there */
            size_t at = 8 + below(h);
            while (at < *n && at < 8 + h && !(b[at] >= '0' && b[at] <= '9')) at++;
            size_t e = at;
            while (e < *n && b[e] >= '0' && b[e] <= '9') e++;
            const char *s = nums[below(sizeof nums / sizeof nums[0])];
            splice(b, n, cap, at, e - at, s, strlen(s), (int)below(4)); break; }
        case 5: if (*n >= 8) set_len(b, below(3) ? get_len(b) + below(5) - 2 : next() >> below(64)); break;
        case 6: { size_t at = below(*n); splice(b, n, cap, at, 1 + below(8), "", 0, (int)below(2)); break; }
        case 7: { /* a dtype string over a quoted string of the header */
            size_t at = 8 + below(h);
            while (at < *n && at < 8 + h && b[at] != '"') at++;
            size_t e = at + 1;
            while (e < *n && b[e] != '"') e++;
            const char *s = dts[below(sizeof dts / sizeof dts[0])];
            splice(b, n, cap, at, e + 1 - at, s, strlen(s), (int)below(4)); break; }
        default: { /* a copy of a piece of the file elsewhere */
            char piece[64];
            size_t from = below(*n), m = 1 + below(sizeof piece);
            if (m > *n - from) m = *n - from;
            memcpy(piece, b + from, m);
            splice(b, n, cap, below(*n + 1), 0, piece, m, (int)below(2)); break; }
        }
    }
}

static int accepted, refused;

static void read_one(const uint8_t *b, size_t n, const char *what) {
    char err[VBS_ERRLEN];
    err[0] = 0;
    vbs_ckpt c;
    vbs_status st = vbs_ckpt_read_safetensors_memory(b, n, "m.safetensors", &c, err, sizeof err);
    if (st) {
        refused++;
        if (getenv("ST_MUTATE_SHOW")) printf("%s\n", err);
        CHECK(!strncmp(err, "m.safetensors: ", 15) && err[15] && !strchr(err, '\n'), "%s: refusal message '%s'", what, err);
        CHECK(st < 0 && strcmp(vbs_status_name(st), "?"), "%s: status %d", what, st);
        CHECK(!c.t && !c.n && !c.metadata, "%s: a refusal leaves the checkpoint empty", what);
        return;
    }
    accepted++;
    for (int i = 0; i < c.n; i++) {
        const vbs_ckpt_tensor *t = &c.t[i];
        int64_t p = 1;
        for (int d = 0; d < t->ndim; d++) p *= t->dims[d];
        int fl = !strcmp(t->dtype, "F32") || !strcmp(t->dtype, "F16") || !strcmp(t->dtype, "BF16") || !strcmp(t->dtype, "F64");
        if (p != t->numel || t->ndim > VBS_MAX_DIMS || (t->data != NULL) != (fl && t->numel > 0)) {
            CHECK(0, "%s: tensor '%s' %s ndim %d numel %lld", what, t->name, t->dtype, t->ndim, (long long)t->numel);
            break;
        }
        volatile float sink = 0;
        for (int64_t j = 0; t->data && j < t->numel; j++) sink += t->data[j]; /* every value readable (ASan) */
        (void)sink;
    }
    vbs_ckpt_free(&c);
}

int main(int argc, char **argv) {
    if (argc != 2) { fprintf(stderr, "usage: st_mutate CORPUS_DIR\n"); return 2; }
    /* the base files: the corpus, and one from the writer */
    char names[32][512];
    int nfiles = 0;
    DIR *d = opendir(argv[1]);
    CHECK(d != NULL, "cannot open %s", argv[1]);
    for (struct dirent *e; d && (e = readdir(d)) && nfiles < 31;)
        if (e->d_name[0] != '.') snprintf(names[nfiles++], sizeof names[0], "%s/%s", argv[1], e->d_name);
    if (d) closedir(d);
    qsort(names, (size_t)nfiles, sizeof names[0], (int (*)(const void *, const void *))strcmp);
    float v[7] = {1, -2, 0.5f, 3, 0, -0.f, 7};
    vbs_ckpt_tensor t[3] = {{.name = "enc.mu_weight", .dtype = "F32", .ndim = 2, .dims = {2, 3}, .numel = 6, .data = v},
                            {.name = "enc.rho_weight", .dtype = "F32", .ndim = 0, .numel = 1, .data = v + 6},
                            {.name = "empty", .dtype = "F32", .ndim = 1, .dims = {0}, .numel = 0}};
    vbs_ckpt w = {.t = t, .n = 3};
    char tmp[] = "/tmp/st_mutate.XXXXXX";
    int fd = mkstemp(tmp);
    CHECK(fd >= 0, "mkstemp");
    if (fd >= 0) close(fd);
    char err[VBS_ERRLEN];
    CHECK(!vbs_ckpt_write_safetensors(&w, "{\"k\":\"v\"}", tmp, err, sizeof err), "write: %s", err);
    snprintf(names[nfiles++], sizeof names[0], "%s", tmp);
    CHECK(nfiles >= 4, "only %d base files", nfiles);

    for (int f = 0; f < nfiles; f++) {
        FILE *fp = fopen(names[f], "rb");
        if (!fp) { CHECK(0, "cannot open %s", names[f]); continue; }
        static uint8_t base[1 << 16], buf[(1 << 16) + 4096];
        size_t len = fread(base, 1, sizeof base, fp);
        fclose(fp);
        /* the base file itself reads */
        int acc = accepted;
        read_one(base, len, names[f]);
        CHECK(accepted == acc + 1, "%s: the unmutated file is refused", names[f]);
        for (int m = 0; m < MUTATIONS_PER_FILE; m++) {
            size_t n = len;
            memcpy(buf, base, len);
            mutate(buf, &n, sizeof buf);
            /* a copy of exactly n bytes, so that ASan sees any read past the end */
            uint8_t *exact = malloc(n ? n : 1);
            if (!exact) { CHECK(0, "out of memory"); break; }
            memcpy(exact, buf, n);
            char what[600];
            snprintf(what, sizeof what, "%.500s mutation %d", names[f], m);
            read_one(exact, n, what);
            free(exact);
        }
    }
    unlink(tmp);
    printf("st_mutate: %d files x %d mutations: %d read, %d refused\n", nfiles, MUTATIONS_PER_FILE, accepted, refused);
    /* the sweep reaches both sides: mutations that keep a file valid, and refusals */
    CHECK(accepted > nfiles * 50 && refused > nfiles * MUTATIONS_PER_FILE / 2, "accepted %d, refused %d", accepted, refused);
    return finish("st_mutate");
}
