/*
 * pytorch.c: reads torch.save zip checkpoints (PyTorch >= 1.6) into named
 * float32 tensors (ckpt.h), without Python and without running anything the
 * file asks for. Two parts:
 *   - a small zip reader: the end record (and the ZIP64 one torch always
 *     writes), the central directory, stored entries only, every offset and
 *     size bounds-checked, entries that overlap refused, CRC-32 checked; the
 *     record prefix ("archive/" or whatever torch chose) is the folder of the
 *     first entry; nothing is assumed aligned (its own rather than minizip:
 *     stored entries read in place from one buffer, each offset checked
 *     against it, need no I/O callbacks and no new package);
 *   - a restricted pickle machine for PREFIX/data.pkl: the protocol 2
 *     opcodes a state dict or a training checkpoint uses, globals only from
 *     an allow-list (collections.OrderedDict, torch._utils._rebuild_tensor_v2,
 *     torch._utils._rebuild_parameter, the typed torch.*Storage classes),
 *     persistent ids only ('storage', type, key, location, numel). Values are
 *     nodes referenced by index: the memo and containers share them, never
 *     copy, so a memo bomb stays linear. Nothing is ever walked recursively.
 * The taken state dict's tensors are gathered through their strides into C
 * order, with the floats that views can repeat bounded before allocation.
 * It is not a general unpickler, and there is no looser fallback: anything
 * else is refused with one line naming what it met. It does not interpret
 * names (the converter does), nor refuse NaN.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "ckpt.h"
#include "internal.h"

#define HINT "re-save it with a current torch.save(model.state_dict())"
#define SAVE_ALONE "save the state dict alone with torch.save(model.state_dict())"

/* caps: what a checkpoint's pickle never needs */
#define MAX_FILE ((size_t)1 << 40)
#define MAX_PKL ((size_t)64 << 20)  /* data.pkl bytes */
#define MAX_MEMO (1 << 20)          /* memo index */
#define MAX_MARKS 64                /* open MARKs: the nesting depth of what is being built */
#define MAX_NODES (1 << 24)         /* values created */
#define MAX_ENTRIES (1 << 20)       /* zip entries */
#define MAX_NAME 4096               /* a zip entry's name, a str */
#define REPEAT_CAP (1 << 20)        /* elements of a tensor larger than its storage (stride 0) */
#define TOTAL_SLACK ((uint64_t)1 << 22) /* floats out, beyond 4 per byte in */

typedef struct {
    const char *file;
    char *err;
    size_t errlen;
} ctx;

__attribute__((format(printf, 2, 3))) static vbs_status fail(ctx *c, const char *fmt, ...) {
    if (c->err && c->errlen) {
        char msg[512];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(msg, sizeof msg, fmt, ap);
        va_end(ap);
        /* names and keys come from the file: the message stays one printable line */
        for (char *q = msg; *q; q++)
            if ((unsigned char)*q < 0x20 || *q == 0x7f) *q = '?';
        snprintf(c->err, c->errlen, "%.250s: %s", c->file, msg);
    }
    return VBS_ERR_FORMAT;
}

static vbs_status nomem(ctx *c) {
    if (c->err && c->errlen) snprintf(c->err, c->errlen, "%.250s: out of memory", c->file);
    return VBS_ERR_NOMEM;
}

static uint16_t rd16(const uint8_t *p) { return (uint16_t)(p[0] | p[1] << 8); }
static uint32_t rd32(const uint8_t *p) { return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24; }
static uint64_t rd64(const uint8_t *p) { return rd32(p) | (uint64_t)rd32(p + 4) << 32; }

/* ---- zip ---------------------------------------------------------------- */

typedef struct {
    const char *name; /* points into the central directory; not NUL-terminated */
    size_t nlen;
    uint64_t hdr, data, size; /* local header offset, data offset, data size */
    /* the storage record's declared type, once a persistent id named it */
    int dtype;                /* index into dtypes[] + 1; 0: not yet named */
    int64_t numel;
} zentry;

typedef struct {
    const uint8_t *buf;
    size_t len;
    zentry *e; /* sorted by name */
    int n;
    char prefix[MAX_NAME + 1];
    size_t plen;
} zip;

static int cmp_name(const char *a, size_t an, const char *b, size_t bn) {
    int r = memcmp(a, b, an < bn ? an : bn);
    return r ? r : (an > bn) - (an < bn);
}

static int cmp_entry(const void *a, const void *b) {
    const zentry *x = a, *y = b;
    return cmp_name(x->name, x->nlen, y->name, y->nlen);
}

static int cmp_hdr(const void *a, const void *b) {
    const zentry *x = *(zentry *const *)a, *y = *(zentry *const *)b;
    return (x->hdr > y->hdr) - (x->hdr < y->hdr);
}

/* the entry PREFIX/rest, or NULL */
static zentry *zfind(zip *z, const char *rest, size_t rlen) {
    char name[2 * MAX_NAME + 2];
    if (z->plen + rlen >= sizeof name) return NULL;
    memcpy(name, z->prefix, z->plen);
    memcpy(name + z->plen, rest, rlen);
    zentry key = {.name = name, .nlen = z->plen + rlen};
    return bsearch(&key, z->e, (size_t)z->n, sizeof *z->e, cmp_entry);
}

/* What a file that is not a zip is, for its refusal. */
static vbs_status not_zip(ctx *c, const uint8_t *b, size_t len) {
    if (len >= 262 && memcmp(b + 257, "ustar", 5) == 0)
        return fail(c, "a legacy tar checkpoint (PyTorch < 0.4), not a zip archive: " HINT);
    if (len >= 2 && b[0] == 0x80)
        return fail(c, "a legacy pickle stream (PyTorch < 1.6 or _use_new_zipfile_serialization=False), not a zip "
                       "archive: " HINT);
    return fail(c, "not a zip archive (no end of central directory record): not a torch.save checkpoint");
}

static vbs_status zip_open(ctx *c, const uint8_t *b, size_t len, zip *z) {
    memset(z, 0, sizeof *z);
    z->buf = b;
    z->len = len;
    if (len < 22 || memcmp(b, "PK\3\4", 4) != 0) return not_zip(c, b, len);
    /* the end record: the last signature whose comment reaches exactly the end */
    size_t eocd = SIZE_MAX;
    size_t lo = len > 22 + 65535 ? len - 22 - 65535 : 0;
    for (size_t i = len - 22 + 1; i-- > lo;)
        if (memcmp(b + i, "PK\5\6", 4) == 0 && i + 22 + rd16(b + i + 20) == len) {
            eocd = i;
            break;
        }
    if (eocd == SIZE_MAX) return not_zip(c, b, len);
    const uint8_t *e = b + eocd;
    if (rd16(e + 4) || rd16(e + 6)) return fail(c, "a multi-disk zip archive");
    uint64_t ndisk = rd16(e + 8), nent = rd16(e + 10), cdsize = rd32(e + 12), cdoff = rd32(e + 16);
    size_t cdlimit = eocd; /* the central directory ends before the end records */
    if (eocd >= 20 && memcmp(b + eocd - 20, "PK\6\7", 4) == 0) {
        const uint8_t *l = b + eocd - 20;
        uint64_t z64 = rd64(l + 8);
        if (rd32(l + 4) != 0 || rd32(l + 16) != 1) return fail(c, "ZIP64 locator names another disk");
        if (z64 > eocd - 20 || eocd - 20 - z64 < 56 || memcmp(b + z64, "PK\6\6", 4) != 0)
            return fail(c, "ZIP64 locator points outside the file or not at a ZIP64 end record");
        const uint8_t *r = b + z64;
        uint64_t rsize = rd64(r + 4);
        if (rsize < 44 || rsize > eocd - 20 - z64 - 12) return fail(c, "ZIP64 end record size %llu is out of bounds",
                                                                   (unsigned long long)rsize);
        if (rd32(r + 16) || rd32(r + 20)) return fail(c, "a multi-disk zip archive (ZIP64)");
        uint64_t n1 = rd64(r + 24), n2 = rd64(r + 32), s = rd64(r + 40), o = rd64(r + 48);
        /* the 32-bit record says 0xFFFF... (see ZIP64) or the same value */
        if ((ndisk != 0xFFFF && ndisk != n1) || (nent != 0xFFFF && nent != n2) ||
            (cdsize != 0xFFFFFFFF && cdsize != s) || (cdoff != 0xFFFFFFFF && cdoff != o))
            return fail(c, "the ZIP64 end record disagrees with the end record (entries, directory size or offset)");
        ndisk = n1, nent = n2, cdsize = s, cdoff = o;
        cdlimit = z64;
    } else if (ndisk == 0xFFFF || nent == 0xFFFF || cdsize == 0xFFFFFFFF || cdoff == 0xFFFFFFFF) {
        return fail(c, "the end record has ZIP64 markers but there is no ZIP64 locator");
    }
    if (ndisk != nent) return fail(c, "a multi-disk zip archive (%llu of %llu entries on this disk)",
                                   (unsigned long long)ndisk, (unsigned long long)nent);
    if (cdoff > cdlimit || cdsize > cdlimit - cdoff)
        return fail(c, "central directory (offset %llu, %llu bytes) past its end at %zu", (unsigned long long)cdoff,
                    (unsigned long long)cdsize, cdlimit);
    if (nent == 0) return fail(c, "an empty zip archive");
    if (nent > MAX_ENTRIES || nent > cdsize / 46)
        return fail(c, "%llu entries do not fit a %llu-byte central directory", (unsigned long long)nent,
                    (unsigned long long)cdsize);
    z->e = calloc((size_t)nent, sizeof *z->e);
    zentry **byhdr = calloc((size_t)nent, sizeof *byhdr);
    if (!z->e || !byhdr) {
        free(byhdr);
        return nomem(c);
    }
    vbs_status st = VBS_OK;
    const uint8_t *p = b + cdoff, *end = b + cdoff + cdsize;
    for (uint64_t i = 0; i < nent; i++) {
        zentry *ze = &z->e[i];
        if (end - p < 46 || rd32(p) != 0x02014b50) {
            st = fail(c, "central directory entry %llu is truncated or has no signature", (unsigned long long)i);
            goto out;
        }
        unsigned flags = rd16(p + 8), method = rd16(p + 10), nl = rd16(p + 28), xl = rd16(p + 30), cl = rd16(p + 32);
        uint32_t crc = rd32(p + 16);
        uint64_t csize = rd32(p + 20), usize = rd32(p + 24), hdr = rd32(p + 42);
        if ((size_t)(end - p - 46) < (size_t)nl + xl + cl) {
            st = fail(c, "central directory entry %llu runs past the directory", (unsigned long long)i);
            goto out;
        }
        ze->name = (const char *)p + 46;
        ze->nlen = nl;
        if (nl == 0 || memchr(ze->name, 0, nl)) {
            st = fail(c, "central directory entry %llu has an empty name or a NUL in it", (unsigned long long)i);
            goto out;
        }
        /* TorchScript first: its entries may be compressed, and that is not what is wrong */
        const char *slash = memchr(ze->name, '/', nl);
        size_t rl = slash ? nl - (size_t)(slash + 1 - ze->name) : 0;
        if (slash && ((rl == 13 && !memcmp(slash + 1, "constants.pkl", 13)) || (rl > 5 && !memcmp(slash + 1, "code/", 5)))) {
            st = fail(c, "a TorchScript archive (torch.jit.save), not a torch.save checkpoint: " HINT);
            goto out;
        }
        /* ZIP64 extra field: the 0xFFFFFFFF fields, in the order usize, csize, offset */
        if (usize == 0xFFFFFFFF || csize == 0xFFFFFFFF || hdr == 0xFFFFFFFF) {
            const uint8_t *x = p + 46 + nl, *xe = x + xl;
            int found = 0;
            while (xe - x >= 4) {
                unsigned id = rd16(x), sz = rd16(x + 2);
                if ((size_t)(xe - x - 4) < sz) break;
                if (id == 1) {
                    const uint8_t *f = x + 4, *fe = f + sz;
                    uint64_t *fields[3] = {&usize, &csize, &hdr};
                    found = 1;
                    for (int k = 0; k < 3; k++) {
                        if (*fields[k] != 0xFFFFFFFF) continue;
                        if (fe - f < 8) { found = 0; break; }
                        *fields[k] = rd64(f);
                        f += 8;
                    }
                    break;
                }
                x += 4 + sz;
            }
            if (!found) {
                st = fail(c, "entry %.*s has ZIP64 markers but no complete ZIP64 extra field", (int)nl, ze->name);
                goto out;
            }
        }
        if (flags & 1) {
            st = fail(c, "entry %.*s is encrypted", (int)nl, ze->name);
            goto out;
        }
        if (method != 0 || csize != usize) {
            st = fail(c, "entry %.*s is compressed (method %u): torch.save writes stored entries only", (int)nl, ze->name,
                      method);
            goto out;
        }
        /* the local header: its name must agree; the data follows its name and extra field */
        if (hdr > cdoff || cdoff - hdr < 30 || rd32(b + hdr) != 0x04034b50) {
            st = fail(c, "entry %.*s: local header offset %llu is not a local header before the directory", (int)nl,
                      ze->name, (unsigned long long)hdr);
            goto out;
        }
        uint64_t lnl = rd16(b + hdr + 26), lxl = rd16(b + hdr + 28), data = hdr + 30 + lnl + lxl;
        if (data > cdoff || lnl != nl || memcmp(b + hdr + 30, ze->name, nl) != 0) {
            st = fail(c, "entry %.*s: its local header has another name or runs into the directory", (int)nl, ze->name);
            goto out;
        }
        if (usize > cdoff - data) {
            st = fail(c, "entry %.*s: %llu bytes at offset %llu run past the central directory", (int)nl, ze->name,
                      (unsigned long long)usize, (unsigned long long)data);
            goto out;
        }
        ze->hdr = hdr, ze->data = data, ze->size = usize;
#ifndef FUZZING_BUILD_MODE_UNSAFE_FOR_PRODUCTION /* as the .vbseg CRC-32C: mutated bytes still reach the unpickler */
        unsigned long got = crc32(0L, Z_NULL, 0);
        for (uint64_t k = 0; k < usize;) { /* crc32 takes uInt lengths */
            uInt step = usize - k > (1u << 30) ? 1u << 30 : (uInt)(usize - k);
            got = crc32(got, b + data + k, step);
            k += step;
        }
        if (got != crc) {
            st = fail(c, "entry %.*s: CRC-32 %08lx, the directory says %08x", (int)nl, ze->name, got, (unsigned)crc);
            goto out;
        }
#else
        (void)crc;
#endif
        if (i == 0) { /* the record prefix: the first entry's folder */
            if (!slash || slash == ze->name) {
                st = fail(c, "first entry %.*s is not in a folder: not a torch.save archive", (int)nl, ze->name);
                goto out;
            }
            z->plen = (size_t)(slash - ze->name) + 1;
            memcpy(z->prefix, ze->name, z->plen);
        } else if (nl < z->plen || memcmp(ze->name, z->prefix, z->plen) != 0) {
            st = fail(c, "entry %.*s is outside the archive's folder %.*s", (int)nl, ze->name, (int)z->plen, z->prefix);
            goto out;
        }
        byhdr[i] = ze;
        p += 46 + nl + xl + cl;
    }
    z->n = (int)nent;
    /* no two entries overlap (a lying offset would make one record read as another) */
    qsort(byhdr, (size_t)nent, sizeof *byhdr, cmp_hdr);
    for (uint64_t i = 1; i < nent; i++)
        if (byhdr[i]->hdr < byhdr[i - 1]->data + byhdr[i - 1]->size) {
            st = fail(c, "entries %.*s and %.*s overlap", (int)byhdr[i - 1]->nlen, byhdr[i - 1]->name,
                      (int)byhdr[i]->nlen, byhdr[i]->name);
            goto out;
        }
    qsort(z->e, (size_t)nent, sizeof *z->e, cmp_entry);
    for (int i = 1; i < z->n; i++)
        if (cmp_entry(&z->e[i - 1], &z->e[i]) == 0) {
            st = fail(c, "entry %.*s appears twice", (int)z->e[i].nlen, z->e[i].name);
            goto out;
        }
out:
    free(byhdr);
    return st;
}

/* ---- the restricted pickle machine ---------------------------------------- */

/* the typed storages: the class name, safetensors' dtype spelling, bytes per element */
static const struct {
    const char *cls, *dtype;
    int size;
} dtypes[] = {
    {"FloatStorage", "F32", 4}, {"HalfStorage", "F16", 2}, {"BFloat16Storage", "BF16", 2},
    {"DoubleStorage", "F64", 8}, {"LongStorage", "I64", 8}, {"IntStorage", "I32", 4},
    {"ShortStorage", "I16", 2}, {"CharStorage", "I8", 1},   {"ByteStorage", "U8", 1},
    {"BoolStorage", "BOOL", 1},
};
#define NDTYPES ((int)(sizeof dtypes / sizeof dtypes[0]))

enum { K_NONE, K_BOOL, K_INT, K_FLOAT, K_STR, K_TUPLE, K_LIST, K_DICT, K_GLOBAL, K_STORAGE, K_TENSOR };
static const char *kind_name[] = {"None", "bool", "int", "float", "str", "tuple", "list", "dict",
                                  "global", "storage", "tensor"};
enum { G_ORDEREDDICT = 1, G_REBUILD_TENSOR, G_REBUILD_PARAMETER, G_STORAGE /* + dtype index */ };

typedef struct {
    uint8_t kind;
    uint8_t ordered; /* a dict made by OrderedDict() */
    uint16_t sub;    /* K_GLOBAL: G_*; K_STORAGE: dtype index */
    uint32_t a;      /* K_STR: length; containers: index into seqs; K_TENSOR: index into tensors; K_STORAGE: zip entry */
    int64_t b;       /* K_INT, K_BOOL: value; K_STR: offset in data.pkl; K_FLOAT: bits */
} node;

typedef struct {
    int32_t *v; /* node indices; a dict holds key, value pairs */
    int32_t n, cap;
} seq;

typedef struct {
    int32_t storage; /* node index */
    int ndim;
    int64_t offset, size[VBS_MAX_DIMS], stride[VBS_MAX_DIMS];
} tensor;

typedef struct {
    ctx *c;
    zip *z;
    const uint8_t *p; /* data.pkl */
    size_t len;
    node *nodes;
    int32_t nn, ncap;
    seq *seqs;
    int32_t ns, scap;
    tensor *ts;
    int32_t nt, tcap;
    int32_t *stack;
    int32_t sp, spcap;
    int32_t marks[MAX_MARKS];
    int nmarks;
    int32_t *memo;
    int32_t nmemo;
    /* dict keys seen: open addressing over (dict node, key node) */
    int64_t *keys;
    size_t kcap, kn;
} pm;

static int grow(void **p, int32_t *cap, int32_t need, size_t elem, int32_t max) {
    if (need <= *cap) return 1;
    if (need > max) return 0;
    int64_t nc = *cap ? (int64_t)*cap * 2 : 64;
    while (nc < need) nc *= 2;
    if (nc > max) nc = max;
    void *q = realloc(*p, (size_t)nc * elem);
    if (!q) return 0;
    *p = q;
    *cap = (int32_t)nc;
    return 1;
}

/* a new node; -1 on the cap or no memory (the caller says which) */
static int32_t new_node(pm *m, int kind) {
    if (!grow((void **)&m->nodes, &m->ncap, m->nn + 1, sizeof *m->nodes, MAX_NODES)) return -1;
    memset(&m->nodes[m->nn], 0, sizeof *m->nodes);
    m->nodes[m->nn].kind = (uint8_t)kind;
    return m->nn++;
}

static int32_t new_seq(pm *m, int kind) {
    if (!grow((void **)&m->seqs, &m->scap, m->ns + 1, sizeof *m->seqs, MAX_NODES)) return -1;
    int32_t id = new_node(m, kind);
    if (id < 0) return -1;
    memset(&m->seqs[m->ns], 0, sizeof *m->seqs);
    m->nodes[id].a = (uint32_t)m->ns++;
    return id;
}

static int seq_push(pm *m, int32_t id, int32_t v) {
    seq *s = &m->seqs[m->nodes[id].a];
    if (!grow((void **)&s->v, &s->cap, s->n + 1, sizeof *s->v, MAX_NODES)) return 0;
    s->v[s->n++] = v;
    return 1;
}

static seq *seq_of(pm *m, int32_t id) { return &m->seqs[m->nodes[id].a]; }

static vbs_status capped(pm *m, const char *what) {
    return fail(m->c, "data.pkl: %s over its cap, or out of memory: not a checkpoint's pickle", what);
}

static int str_eq(pm *m, int32_t id, const char *s) {
    node *n = &m->nodes[id];
    return n->kind == K_STR && n->a == strlen(s) && memcmp(m->p + n->b, s, n->a) == 0;
}

static uint64_t key_hash(pm *m, int32_t dict, int32_t key) {
    node *k = &m->nodes[key];
    uint64_t h = 1469598103934665603ull ^ (uint64_t)dict * 0x9E3779B97F4A7C15ull;
    if (k->kind == K_STR)
        for (uint32_t i = 0; i < k->a; i++) h = (h ^ m->p[k->b + i]) * 1099511628211ull;
    else
        h = (h ^ (uint64_t)k->b) * 1099511628211ull ^ 0x55;
    return h ^ h >> 29;
}

static int key_same(pm *m, int32_t x, int32_t y) {
    node *a = &m->nodes[x], *b = &m->nodes[y];
    if (a->kind != b->kind) return 0;
    if (a->kind == K_STR) return a->a == b->a && memcmp(m->p + a->b, m->p + b->b, a->a) == 0;
    return a->b == b->b;
}

/* Records key in dict; 0 if it is already there, -1 on no memory. */
static int key_add(pm *m, int32_t dict, int32_t key) {
    if (2 * (m->kn + 1) > m->kcap) {
        size_t nc = m->kcap ? m->kcap * 2 : 256;
        int64_t *t = malloc(nc * sizeof *t);
        if (!t) return -1;
        for (size_t i = 0; i < nc; i++) t[i] = -1;
        for (size_t i = 0; i < m->kcap; i++) {
            if (m->keys[i] < 0) continue;
            int32_t d = (int32_t)(m->keys[i] >> 32), k = (int32_t)(m->keys[i] & 0xFFFFFFFF);
            size_t j = key_hash(m, d, k) & (nc - 1);
            while (t[j] >= 0) j = (j + 1) & (nc - 1);
            t[j] = m->keys[i];
        }
        free(m->keys);
        m->keys = t;
        m->kcap = nc;
    }
    size_t j = key_hash(m, dict, key) & (m->kcap - 1);
    for (; m->keys[j] >= 0; j = (j + 1) & (m->kcap - 1))
        if ((int32_t)(m->keys[j] >> 32) == dict && key_same(m, (int32_t)(m->keys[j] & 0xFFFFFFFF), key)) return 0;
    m->keys[j] = (int64_t)dict << 32 | (uint32_t)key;
    m->kn++;
    return 1;
}

/* "'name'" for a str key, the number for an int key (messages) */
static void key_text(pm *m, int32_t key, char *buf, size_t n) {
    node *k = &m->nodes[key];
    if (k->kind == K_STR) snprintf(buf, n, "'%.*s'", (int)(k->a > 200 ? 200 : k->a), (const char *)m->p + k->b);
    else snprintf(buf, n, "%lld", (long long)k->b);
}

static vbs_status dict_set(pm *m, int32_t dict, int32_t key, int32_t val, const char *op) {
    if (m->nodes[dict].kind != K_DICT)
        return fail(m->c, "data.pkl: %s on a %s, not a dict", op, kind_name[m->nodes[dict].kind]);
    int kk = m->nodes[key].kind;
    if (kk != K_STR && kk != K_INT)
        return fail(m->c, "data.pkl: %s with a %s key (only str and int keys)", op, kind_name[kk]);
    int r = key_add(m, dict, key);
    if (r < 0) return nomem(m->c);
    if (r == 0) {
        char t[256];
        key_text(m, key, t, sizeof t);
        return fail(m->c, "data.pkl: duplicate key %s in a dict", t);
    }
    if (!seq_push(m, dict, key) || !seq_push(m, dict, val)) return capped(m, "dict size");
    return VBS_OK;
}

static int push(pm *m, int32_t v) {
    if (!grow((void **)&m->stack, &m->spcap, m->sp + 1, sizeof *m->stack, MAX_NODES)) return 0;
    m->stack[m->sp++] = v;
    return 1;
}

/* the stack's items above the last MARK: [*from, sp) */
static vbs_status pop_mark(pm *m, const char *op, int32_t *from) {
    if (!m->nmarks) return fail(m->c, "data.pkl: %s without a MARK", op);
    *from = m->marks[--m->nmarks];
    return VBS_OK;
}

static vbs_status need(pm *m, int n, const char *op) {
    int32_t base = m->nmarks ? m->marks[m->nmarks - 1] : 0;
    if (m->sp - base < n) return fail(m->c, "data.pkl: %s on a stack with %d item(s) above its MARK", op, m->sp - base);
    return VBS_OK;
}

static vbs_status make_tuple(pm *m, int32_t from, int32_t *out) {
    int32_t t = new_seq(m, K_TUPLE);
    if (t < 0) return capped(m, "values");
    for (int32_t i = from; i < m->sp; i++)
        if (!seq_push(m, t, m->stack[i])) return capped(m, "tuple size");
    m->sp = from;
    *out = t;
    return VBS_OK;
}

static const char *global_name(int g) {
    if (g == G_ORDEREDDICT) return "collections.OrderedDict";
    if (g == G_REBUILD_TENSOR) return "torch._utils._rebuild_tensor_v2";
    if (g == G_REBUILD_PARAMETER) return "torch._utils._rebuild_parameter";
    return g - G_STORAGE < NDTYPES ? dtypes[g - G_STORAGE].cls : "?";
}

/* the persistent id ('storage', torch.XStorage, key, location, numel) */
static vbs_status persid(pm *m, int32_t pid, int32_t *out) {
    node *n = &m->nodes[pid];
    seq *s = n->kind == K_TUPLE ? seq_of(m, pid) : NULL;
    if (!s || s->n != 5 || !str_eq(m, s->v[0], "storage"))
        return fail(m->c, "data.pkl: a persistent id that is not ('storage', type, key, location, numel)");
    node *ty = &m->nodes[s->v[1]], *key = &m->nodes[s->v[2]], *loc = &m->nodes[s->v[3]], *ne = &m->nodes[s->v[4]];
    if (ty->kind != K_GLOBAL || ty->sub < G_STORAGE || key->kind != K_STR || loc->kind != K_STR || ne->kind != K_INT ||
        ne->b < 0)
        return fail(m->c, "data.pkl: a persistent id ('storage', type, key, location, numel) with a wrong field "
                          "(a storage class, str, str, int >= 0)");
    int dt = ty->sub - G_STORAGE;
    char rest[MAX_NAME + 8];
    if (key->a > MAX_NAME) return fail(m->c, "data.pkl: a storage key of %u bytes", key->a);
    int rl = snprintf(rest, sizeof rest, "data/%.*s", (int)key->a, (const char *)m->p + key->b);
    zentry *ze = zfind(m->z, rest, (size_t)rl);
    if (!ze) return fail(m->c, "storage %.*s: no record %.*s%s", (int)key->a, (const char *)m->p + key->b,
                         (int)m->z->plen, m->z->prefix, rest);
    int64_t bytes;
    if (!vbs_mul_ok(ne->b, dtypes[dt].size, &bytes) || (uint64_t)bytes != ze->size)
        return fail(m->c, "storage %.*s: the record has %llu bytes, its declared %lld %s elements take %lld",
                    (int)key->a, (const char *)m->p + key->b, (unsigned long long)ze->size, (long long)ne->b,
                    dtypes[dt].cls, (long long)(vbs_mul_ok(ne->b, dtypes[dt].size, &bytes) ? bytes : -1));
    if (ze->dtype && (ze->dtype != dt + 1 || ze->numel != ne->b))
        return fail(m->c, "storage %.*s: named twice with different types or sizes", (int)key->a,
                    (const char *)m->p + key->b);
    ze->dtype = dt + 1;
    ze->numel = ne->b;
    int32_t id = new_node(m, K_STORAGE);
    if (id < 0) return capped(m, "values");
    m->nodes[id].sub = (uint16_t)dt;
    m->nodes[id].a = (uint32_t)(ze - m->z->e);
    *out = id;
    return VBS_OK;
}

/* an int tuple's values into v[VBS_MAX_DIMS]; its length, or -1 */
static int int_tuple(pm *m, int32_t id, int64_t *v) {
    if (m->nodes[id].kind != K_TUPLE) return -1;
    seq *s = seq_of(m, id);
    if (s->n > VBS_MAX_DIMS) return -1;
    for (int i = 0; i < s->n; i++) {
        node *x = &m->nodes[s->v[i]];
        if (x->kind != K_INT || x->b < 0) return -1;
        v[i] = x->b;
    }
    return s->n;
}

/* _rebuild_tensor_v2(storage, offset, size, stride, requires_grad, hooks[, metadata]) */
static vbs_status rebuild_tensor(pm *m, seq *args, int32_t *out) {
    if (args->n != 6 && args->n != 7)
        return fail(m->c, "data.pkl: _rebuild_tensor_v2 with %d arguments (6 or 7)", args->n);
    node *st = &m->nodes[args->v[0]], *off = &m->nodes[args->v[1]], *rg = &m->nodes[args->v[4]];
    tensor t = {.storage = args->v[0]};
    int64_t stride[VBS_MAX_DIMS];
    int nd = int_tuple(m, args->v[2], t.size), ns = int_tuple(m, args->v[3], stride);
    if (st->kind != K_STORAGE || off->kind != K_INT || off->b < 0 || nd < 0 || ns != nd || rg->kind != K_BOOL ||
        m->nodes[args->v[5]].kind != K_DICT)
        return fail(m->c, "data.pkl: _rebuild_tensor_v2 arguments are not (storage, offset >= 0, sizes, strides of "
                          "at most %d dims >= 0, bool, dict)", VBS_MAX_DIMS);
    memcpy(t.stride, stride, sizeof stride);
    t.ndim = nd;
    t.offset = off->b;
    /* the extent: offset + sum (size-1)*stride must lie in the storage (an empty tensor reads nothing) */
    zentry *ze = &m->z->e[st->a];
    int64_t last = t.offset, numel = 1;
    int ok = 1;
    for (int i = 0; i < nd && ok; i++) {
        int64_t d;
        ok = vbs_mul_ok(numel, t.size[i], &numel);
        if (t.size[i] == 0) continue;
        ok = ok && vbs_mul_ok(t.size[i] - 1, t.stride[i], &d) && !__builtin_add_overflow(last, d, &last);
    }
    if (!ok || (numel > 0 && last >= ze->numel) || (numel == 0 && t.offset > ze->numel))
        return fail(m->c, "data.pkl: a tensor (offset %lld, %d dims) reaches past its storage %.*s of %lld elements",
                    (long long)t.offset, nd, (int)(ze->nlen > 200 ? 200 : ze->nlen), ze->name, (long long)ze->numel);
    if (!grow((void **)&m->ts, &m->tcap, m->nt + 1, sizeof *m->ts, MAX_NODES)) return capped(m, "tensors");
    int32_t id = new_node(m, K_TENSOR);
    if (id < 0) return capped(m, "values");
    m->ts[m->nt] = t;
    m->nodes[id].a = (uint32_t)m->nt++;
    *out = id;
    return VBS_OK;
}

static vbs_status reduce(pm *m, int32_t fn, int32_t args, int32_t *out) {
    node *f = &m->nodes[fn];
    if (f->kind != K_GLOBAL) return fail(m->c, "data.pkl: REDUCE on a %s", kind_name[f->kind]);
    if (m->nodes[args].kind != K_TUPLE) return fail(m->c, "data.pkl: REDUCE with %s arguments", kind_name[m->nodes[args].kind]);
    seq *a = seq_of(m, args);
    switch (f->sub) {
    case G_ORDEREDDICT:
        if (a->n) return fail(m->c, "data.pkl: collections.OrderedDict called with arguments");
        if ((*out = new_seq(m, K_DICT)) < 0) return capped(m, "values");
        m->nodes[*out].ordered = 1;
        return VBS_OK;
    case G_REBUILD_TENSOR:
        return rebuild_tensor(m, a, out);
    case G_REBUILD_PARAMETER:
        if (a->n != 3 || m->nodes[a->v[0]].kind != K_TENSOR || m->nodes[a->v[1]].kind != K_BOOL)
            return fail(m->c, "data.pkl: _rebuild_parameter arguments are not (tensor, bool, hooks)");
        *out = a->v[0]; /* a parameter is its tensor */
        return VBS_OK;
    default:
        return fail(m->c, "data.pkl: REDUCE on torch.%s (a storage class is not called in a checkpoint); " SAVE_ALONE,
                    global_name(f->sub));
    }
}

static const char *opname(uint8_t op) {
    switch (op) {
    case 'I': return "INT";
    case 'L': return "LONG";
    case 'F': return "FLOAT";
    case 'S': return "STRING";
    case 'T': return "BINSTRING";
    case 'U': return "SHORT_BINSTRING";
    case 'V': return "UNICODE";
    case 'P': return "PERSID";
    case 'i': return "INST";
    case 'o': return "OBJ";
    case 'g': return "GET";
    case 'p': return "PUT";
    case 'l': return "LIST";
    case 'd': return "DICT";
    case '0': return "POP";
    case '1': return "POP_MARK";
    case '2': return "DUP";
    case 0x81: return "NEWOBJ";
    case 0x82: return "EXT1";
    case 0x83: return "EXT2";
    case 0x84: return "EXT4";
    case 0x8b: return "LONG4";
    case 0x8c: return "SHORT_BINUNICODE";
    case 0x8d: return "BINUNICODE8";
    case 0x8e: return "BINBYTES8";
    case 0x8f: return "EMPTY_SET";
    case 0x90: return "ADDITEMS";
    case 0x91: return "FROZENSET";
    case 0x92: return "NEWOBJ_EX";
    case 0x93: return "STACK_GLOBAL";
    case 0x94: return "MEMOIZE";
    case 0x95: return "FRAME";
    case 'B': return "BINBYTES";
    case 'C': return "SHORT_BINBYTES";
    default: return NULL;
    }
}

/* Runs data.pkl; *top: the value left by STOP. */
static vbs_status run(pm *m, int32_t *top) {
    size_t i = 0;
    vbs_status st;
    int32_t v, a = 0, b;
#define NEED(k)                                                                    \
    if (m->len - i < (size_t)(k)) return fail(m->c, "data.pkl: truncated at byte %zu", i);
#define PUSH(x)                                                                    \
    if (!push(m, (x))) return capped(m, "stack");
#define NODE(kind)                                                                 \
    if ((v = new_node(m, (kind))) < 0) return capped(m, "values");
    while (1) {
        NEED(1);
        size_t at = i;
        uint8_t op = m->p[i++];
        switch (op) {
        case 0x80: /* PROTO */
            NEED(1);
            if (at != 0 || m->p[i] != 2)
                return fail(m->c, "data.pkl: pickle protocol %u at byte %zu (torch.save writes protocol 2 first)", m->p[i], at);
            i++;
            break;
        case '.': /* STOP */
            if (m->nmarks || m->sp != 1)
                return fail(m->c, "data.pkl: STOP with %d item(s) on the stack and %d open MARK(s)", m->sp, m->nmarks);
            if (i != m->len) return fail(m->c, "data.pkl: %zu byte(s) after STOP", m->len - i);
            *top = m->stack[0];
            return VBS_OK;
        case '(': /* MARK */
            if (m->nmarks == MAX_MARKS)
                return fail(m->c, "data.pkl: more than %d open MARKs at byte %zu: nesting depth over its cap", MAX_MARKS, at);
            m->marks[m->nmarks++] = m->sp;
            break;
        case '}': /* EMPTY_DICT */
        case ']': /* EMPTY_LIST */
            if ((v = new_seq(m, op == '}' ? K_DICT : K_LIST)) < 0) return capped(m, "values");
            PUSH(v);
            break;
        case ')': /* EMPTY_TUPLE */
            if ((st = make_tuple(m, m->sp, &v))) return st;
            PUSH(v);
            break;
        case 't': /* TUPLE */
            if ((st = pop_mark(m, "TUPLE", &a)) || (st = make_tuple(m, a, &v))) return st;
            PUSH(v);
            break;
        case 0x85: case 0x86: case 0x87: /* TUPLE1..3 */
            if ((st = need(m, op - 0x84, "TUPLEn")) || (st = make_tuple(m, m->sp - (op - 0x84), &v))) return st;
            PUSH(v);
            break;
        case 'q': case 'r': /* BINPUT, LONG_BINPUT */
            NEED(op == 'q' ? 1 : 4);
            {
                uint32_t k = op == 'q' ? m->p[i] : rd32(m->p + i);
                i += op == 'q' ? 1 : 4;
                if (k >= MAX_MEMO) return fail(m->c, "data.pkl: memo index %u over its cap of %d", k, MAX_MEMO);
                a = (int32_t)k;
            }
            if ((st = need(m, 1, "BINPUT"))) return st;
            if (a >= m->nmemo) {
                int32_t cap = m->nmemo;
                if (!grow((void **)&m->memo, &cap, a + 1, sizeof *m->memo, MAX_MEMO)) return capped(m, "memo");
                for (int32_t k = m->nmemo; k < cap; k++) m->memo[k] = -1;
                m->nmemo = cap;
            }
            m->memo[a] = m->stack[m->sp - 1]; /* the node itself: shared, never copied */
            break;
        case 'h': case 'j': /* BINGET, LONG_BINGET */
            NEED(op == 'h' ? 1 : 4);
            {
                uint32_t k = op == 'h' ? m->p[i] : rd32(m->p + i);
                i += op == 'h' ? 1 : 4;
                if (k >= (uint32_t)m->nmemo || m->memo[k] < 0)
                    return fail(m->c, "data.pkl: BINGET of memo %u that was never put", k);
                PUSH(m->memo[k]);
            }
            break;
        case 'c': { /* GLOBAL "module\nname\n" */
            const uint8_t *s = m->p + i, *e = m->p + m->len;
            const uint8_t *n1 = memchr(s, '\n', (size_t)(e - s));
            const uint8_t *n2 = n1 ? memchr(n1 + 1, '\n', (size_t)(e - n1 - 1)) : NULL;
            if (!n2) return fail(m->c, "data.pkl: GLOBAL at byte %zu is truncated", at);
            int ml = (int)(n1 - s), nl = (int)(n2 - n1 - 1), g = 0;
            i = (size_t)(n2 + 1 - m->p);
#define IS(mod, name) (ml == (int)strlen(mod) && nl == (int)strlen(name) && !memcmp(s, mod, (size_t)ml) && !memcmp(n1 + 1, name, (size_t)nl))
            if (IS("collections", "OrderedDict")) g = G_ORDEREDDICT;
            else if (IS("torch._utils", "_rebuild_tensor_v2")) g = G_REBUILD_TENSOR;
            else if (IS("torch._utils", "_rebuild_parameter")) g = G_REBUILD_PARAMETER;
            else
                for (int k = 0; k < NDTYPES && !g; k++)
                    if (IS("torch", dtypes[k].cls)) g = G_STORAGE + k;
#undef IS
            if (!g)
                return fail(m->c, "data.pkl: global %.*s.%.*s is not allowed (only collections.OrderedDict, "
                                  "torch._utils._rebuild_tensor_v2, torch._utils._rebuild_parameter and torch.*Storage); " SAVE_ALONE,
                            ml > 100 ? 100 : ml, (const char *)s, nl > 100 ? 100 : nl, (const char *)n1 + 1);
            NODE(K_GLOBAL);
            m->nodes[v].sub = (uint16_t)g;
            PUSH(v);
            break;
        }
        case 'R': /* REDUCE */
            if ((st = need(m, 2, "REDUCE"))) return st;
            a = m->stack[m->sp - 2], b = m->stack[m->sp - 1];
            if ((st = reduce(m, a, b, &v))) return st;
            m->sp -= 2;
            PUSH(v);
            break;
        case 'b': /* BUILD: only OrderedDict's state (state_dict()._metadata), which is dropped */
            if ((st = need(m, 2, "BUILD"))) return st;
            a = m->stack[m->sp - 2], b = m->stack[m->sp - 1];
            if (m->nodes[a].kind != K_DICT || !m->nodes[a].ordered || m->nodes[b].kind != K_DICT)
                return fail(m->c, "data.pkl: BUILD of a %s with a %s state (only an OrderedDict's attributes)",
                            kind_name[m->nodes[a].kind], kind_name[m->nodes[b].kind]);
            m->sp--;
            break;
        case 'Q': /* BINPERSID */
            if ((st = need(m, 1, "BINPERSID")) || (st = persid(m, m->stack[m->sp - 1], &v))) return st;
            m->stack[m->sp - 1] = v;
            break;
        case 'J': case 'K': case 'M': /* BININT, BININT1, BININT2 */
            NEED(op == 'J' ? 4 : op == 'K' ? 1 : 2);
            NODE(K_INT);
            m->nodes[v].b = op == 'J' ? (int64_t)(int32_t)rd32(m->p + i) : op == 'K' ? m->p[i] : rd16(m->p + i);
            i += op == 'J' ? 4 : op == 'K' ? 1 : 2;
            PUSH(v);
            break;
        case 0x8a: { /* LONG1 */
            NEED(1);
            unsigned n = m->p[i++];
            NEED(n);
            if (n > 8) return fail(m->c, "data.pkl: an integer of %u bytes (at most 64 bits)", n);
            uint64_t x = 0;
            for (unsigned k = 0; k < n; k++) x |= (uint64_t)m->p[i + k] << 8 * k;
            if (n && n < 8 && (m->p[i + n - 1] & 0x80)) x |= ~(uint64_t)0 << 8 * n; /* sign-extend */
            i += n;
            NODE(K_INT);
            memcpy(&m->nodes[v].b, &x, 8);
            PUSH(v);
            break;
        }
        case 0x88: case 0x89: /* NEWTRUE, NEWFALSE */
            NODE(K_BOOL);
            m->nodes[v].b = op == 0x88;
            PUSH(v);
            break;
        case 'N': /* NONE */
            NODE(K_NONE);
            PUSH(v);
            break;
        case 'G': { /* BINFLOAT, big-endian */
            NEED(8);
            uint64_t x = 0;
            for (int k = 0; k < 8; k++) x = x << 8 | m->p[i + k];
            i += 8;
            NODE(K_FLOAT);
            memcpy(&m->nodes[v].b, &x, 8);
            PUSH(v);
            break;
        }
        case 'X': { /* BINUNICODE */
            NEED(4);
            uint32_t n = rd32(m->p + i);
            i += 4;
            NEED(n);
            NODE(K_STR);
            m->nodes[v].a = n;
            m->nodes[v].b = (int64_t)i;
            i += n;
            PUSH(v);
            break;
        }
        case 's': /* SETITEM */
            if ((st = need(m, 3, "SETITEM"))) return st;
            if ((st = dict_set(m, m->stack[m->sp - 3], m->stack[m->sp - 2], m->stack[m->sp - 1], "SETITEM"))) return st;
            m->sp -= 2;
            break;
        case 'u': /* SETITEMS */
            if ((st = pop_mark(m, "SETITEMS", &a))) return st;
            if (a < 1 || (m->nmarks && a <= m->marks[m->nmarks - 1]) || (m->sp - a) % 2)
                return fail(m->c, "data.pkl: SETITEMS without a dict below its MARK or with an odd number of items");
            for (int32_t k = a; k < m->sp; k += 2)
                if ((st = dict_set(m, m->stack[a - 1], m->stack[k], m->stack[k + 1], "SETITEMS"))) return st;
            m->sp = a;
            break;
        case 'a': /* APPEND */
            if ((st = need(m, 2, "APPEND"))) return st;
            a = m->stack[m->sp - 2];
            if (m->nodes[a].kind != K_LIST) return fail(m->c, "data.pkl: APPEND on a %s, not a list", kind_name[m->nodes[a].kind]);
            if (!seq_push(m, a, m->stack[m->sp - 1])) return capped(m, "list size");
            m->sp--;
            break;
        case 'e': /* APPENDS */
            if ((st = pop_mark(m, "APPENDS", &a))) return st;
            if (a < 1 || (m->nmarks && a <= m->marks[m->nmarks - 1]) || m->nodes[m->stack[a - 1]].kind != K_LIST)
                return fail(m->c, "data.pkl: APPENDS on a %s, not a list",
                            a < 1 ? "missing value" : kind_name[m->nodes[m->stack[a - 1]].kind]);
            for (int32_t k = a; k < m->sp; k++)
                if (!seq_push(m, m->stack[a - 1], m->stack[k])) return capped(m, "list size");
            m->sp = a;
            break;
        default: {
            const char *n = opname(op);
            if (n) return fail(m->c, "data.pkl: opcode %s at byte %zu is not allowed in a checkpoint; " SAVE_ALONE, n, at);
            return fail(m->c, "data.pkl: opcode 0x%02x at byte %zu is not allowed in a checkpoint; " SAVE_ALONE, op, at);
        }
        }
    }
#undef NEED
#undef PUSH
#undef NODE
}

static void pm_free(pm *m) {
    for (int32_t i = 0; i < m->ns; i++) free(m->seqs[i].v);
    free(m->seqs);
    free(m->nodes);
    free(m->ts);
    free(m->stack);
    free(m->memo);
    free(m->keys);
}

/* ---- from the pickle's value to the checkpoint ------------------------------ */

/* a dict of str keys and tensor values (empty counts) */
static int is_state_dict(pm *m, int32_t id) {
    if (m->nodes[id].kind != K_DICT) return 0;
    seq *s = seq_of(m, id);
    for (int32_t i = 0; i < s->n; i += 2)
        if (m->nodes[s->v[i]].kind != K_STR || m->nodes[s->v[i + 1]].kind != K_TENSOR) return 0;
    return 1;
}

static int32_t dict_get(pm *m, int32_t dict, const char *key) {
    seq *s = seq_of(m, dict);
    for (int32_t i = 0; i < s->n; i += 2)
        if (str_eq(m, s->v[i], key)) return s->v[i + 1];
    return -1;
}

/* the first keys of a dict, for a message (n >= 64) */
static void list_keys(pm *m, int32_t dict, char *buf, size_t n) {
    seq *s = seq_of(m, dict);
    size_t k = 0;
    snprintf(buf, n, "none");
    for (int32_t i = 0; i < s->n; i += 2) {
        char t[64];
        key_text(m, s->v[i], t, sizeof t);
        if (k + strlen(t) + 8 >= n) { /* room for ", ..." */
            snprintf(buf + k, n - k, ", ...");
            return;
        }
        k += (size_t)snprintf(buf + k, n - k, "%s%s", i ? ", " : "", t);
    }
}

/* one element of a record (unaligned, little-endian), as float */
static float elem(const uint8_t *p, int dt) {
    switch (dt) {
    case 0: { uint32_t u = rd32(p); float x; memcpy(&x, &u, 4); return x; }
    case 1: return vbs_ckpt_half(rd16(p));
    case 2: return vbs_ckpt_bf16(rd16(p));
    default: {
        uint64_t u = rd64(p);
        double x;
        memcpy(&x, &u, 8);
        return vbs_ckpt_double(x);
    }
    }
}

static vbs_status take(pm *m, int32_t sd, vbs_ckpt *out) {
    seq *s = seq_of(m, sd);
    int n = s->n / 2;
    /* Views make floats out of nothing: a stride-0 tensor repeats its storage, and tensors sharing one storage each
     * get a copy. Both are legitimate (expand(), tied weights) but bounded, so that a small file cannot ask for
     * gigabytes: a tensor larger than its storage at most REPEAT_CAP elements, all float tensors together at most
     * 4 floats per byte of the file + TOTAL_SLACK. Checked before anything is allocated. */
    int64_t total = 0;
    for (int i = 0; i < n; i++) {
        tensor *t = &m->ts[m->nodes[s->v[2 * i + 1]].a];
        node *sn = &m->nodes[t->storage];
        int64_t numel = 1;
        for (int d = 0; d < t->ndim; d++) numel *= t->size[d]; /* no overflow: checked in rebuild_tensor */
        node *kn = &m->nodes[s->v[2 * i]];
        if (numel > m->z->e[sn->a].numel && numel > REPEAT_CAP)
            return fail(m->c, "tensor '%.*s' of %lld elements repeats its storage of %lld past the cap of %d",
                        (int)(kn->a > 200 ? 200 : kn->a), (const char *)m->p + kn->b, (long long)numel,
                        (long long)m->z->e[sn->a].numel, REPEAT_CAP);
        if (sn->sub <= 3 && __builtin_add_overflow(total, numel, &total)) total = INT64_MAX;
    }
    if ((uint64_t)total > 4 * (uint64_t)m->z->len + TOTAL_SLACK)
        return fail(m->c, "the tensors hold %lld floats in all, more than 4 per byte of a %zu-byte file (views "
                          "sharing storages past the cap)", (long long)total, m->z->len);
    out->t = calloc(n ? (size_t)n : 1, sizeof *out->t);
    if (!out->t) return nomem(m->c);
    for (int i = 0; i < n; i++) {
        node *kn = &m->nodes[s->v[2 * i]];
        tensor *t = &m->ts[m->nodes[s->v[2 * i + 1]].a];
        node *sn = &m->nodes[t->storage];
        zentry *ze = &m->z->e[sn->a];
        vbs_ckpt_tensor *o = &out->t[i];
        out->n = i + 1;
        if (!(o->name = malloc((size_t)kn->a + 1))) return nomem(m->c);
        memcpy(o->name, m->p + kn->b, kn->a);
        o->name[kn->a] = 0;
        if (strlen(o->name) != kn->a)
            return fail(m->c, "data.pkl: key %s has a NUL in it", o->name);
        snprintf(o->dtype, sizeof o->dtype, "%s", dtypes[sn->sub].dtype);
        o->ndim = t->ndim;
        o->numel = 1;
        for (int d = 0; d < t->ndim; d++) {
            o->dims[d] = t->size[d];
            o->numel *= t->size[d]; /* checked against the storage in rebuild_tensor */
        }
        if (sn->sub > 3) continue; /* not floating: shape only */
        if ((uint64_t)o->numel > SIZE_MAX / sizeof(float)) return nomem(m->c);
        if (!(o->data = malloc(o->numel ? (size_t)o->numel * sizeof(float) : 1))) return nomem(m->c);
        /* gather in C order through the strides */
        const uint8_t *rec = m->z->buf + ze->data;
        int sz = dtypes[sn->sub].size;
        int64_t idx[VBS_MAX_DIMS] = {0}, pos = t->offset;
        for (int64_t k = 0; k < o->numel; k++) {
            o->data[k] = elem(rec + pos * sz, sn->sub);
            for (int d = t->ndim - 1; d >= 0; d--) {
                pos += t->stride[d];
                if (++idx[d] < t->size[d]) break;
                pos -= t->stride[d] * t->size[d];
                idx[d] = 0;
            }
        }
    }
    return VBS_OK;
}

static vbs_status read_archive(ctx *c, const uint8_t *buf, size_t len, const char *key, vbs_ckpt *out) {
    zip z;
    pm m = {.c = c, .z = &z};
    vbs_status st = zip_open(c, buf, len, &z);
    if (st) goto done;
    zentry *pk = zfind(&z, "data.pkl", 8);
    if (!pk) {
        st = fail(c, "no %.*sdata.pkl in the archive: not a torch.save checkpoint", (int)z.plen, z.prefix);
        goto done;
    }
    if (pk->size > MAX_PKL) {
        st = fail(c, "data.pkl: %llu bytes, over its cap", (unsigned long long)pk->size);
        goto done;
    }
    m.p = buf + pk->data;
    m.len = (size_t)pk->size;
    int32_t top = -1;
    if ((st = run(&m, &top))) goto done;
    int32_t sd = -1;
    const char *taken = NULL;
    if (m.nodes[top].kind != K_DICT) {
        st = fail(c, "data.pkl holds a %s, not a state dict or a training checkpoint's dict", kind_name[m.nodes[top].kind]);
        goto done;
    }
    char keys[256];
    if (key) {
        if ((sd = dict_get(&m, top, key)) < 0) {
            list_keys(&m, top, keys, sizeof keys);
            st = fail(c, "no key '%.100s' in the checkpoint (keys: %s)", key, keys);
            goto done;
        }
        taken = key;
    } else if (is_state_dict(&m, top)) {
        sd = top;
    } else if ((sd = dict_get(&m, top, "state_dict")) >= 0) {
        taken = "state_dict";
    } else if ((sd = dict_get(&m, top, "model_state_dict")) >= 0) {
        taken = "model_state_dict";
    } else {
        list_keys(&m, top, keys, sizeof keys);
        st = fail(c, "not a state dict, and no 'state_dict' or 'model_state_dict' in it (keys: %s); choose one with "
                     "--key", keys);
        goto done;
    }
    if (!is_state_dict(&m, sd)) {
        st = fail(c, "'%.100s' is a %s, not a state dict (str keys, tensor values)", taken ? taken : "(top)",
                  kind_name[m.nodes[sd].kind]);
        goto done;
    }
    if (taken && !(out->key = strdup(taken))) {
        st = nomem(c);
        goto done;
    }
    st = take(&m, sd, out);
done:
    pm_free(&m);
    free(z.e);
    if (st) vbs_ckpt_free(out);
    return st;
}

vbs_status vbs_ckpt_read_pytorch_memory(const void *buf, size_t len, const char *name, const char *key, vbs_ckpt *out,
                                        char *err, size_t errlen) {
    ctx c = {name ? name : "(memory)", err, errlen};
    if (!out || (!buf && len)) {
        if (err && errlen) snprintf(err, errlen, "%.250s: no checkpoint given", c.file);
        return VBS_ERR_ARG;
    }
    memset(out, 0, sizeof *out);
    return read_archive(&c, buf, len, key, out);
}

vbs_status vbs_ckpt_read_pytorch(const char *path, const char *key, vbs_ckpt *out, char *err, size_t errlen) {
    ctx c = {path ? path : "(null)", err, errlen};
    if (!out || !path) {
        if (err && errlen) snprintf(err, errlen, "%.250s: no checkpoint given", c.file);
        return VBS_ERR_ARG;
    }
    memset(out, 0, sizeof *out);
    FILE *f = fopen(path, "rb");
    if (!f) {
        if (err && errlen) snprintf(err, errlen, "%.250s: cannot open", path);
        return VBS_ERR_IO;
    }
    uint8_t *buf = NULL;
    long n = -1;
    vbs_status st = VBS_ERR_IO;
    if (fseek(f, 0, SEEK_END) == 0 && (n = ftell(f)) >= 0 && (uint64_t)n <= MAX_FILE && fseek(f, 0, SEEK_SET) == 0) {
        if (!(buf = malloc(n ? (size_t)n : 1))) st = VBS_ERR_NOMEM;
        else if (fread(buf, 1, (size_t)n, f) == (size_t)n) st = VBS_OK;
    }
    fclose(f);
    if (st) {
        free(buf);
        if (err && errlen) snprintf(err, errlen, "%.250s: %s", path, st == VBS_ERR_NOMEM ? "out of memory" : "cannot read");
        return st;
    }
    st = read_archive(&c, buf, (size_t)n, key, out);
    free(buf);
    return st;
}
