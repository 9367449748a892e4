/*
 * ckpt.c: what the checkpoint readers share: freeing what they read.
 */
#include <stdlib.h>
#include <string.h>

#include "ckpt.h"

void vbs_ckpt_free(vbs_ckpt *c) {
    if (!c) return;
    for (int i = 0; i < c->n; i++) {
        free(c->t[i].name);
        free(c->t[i].data);
    }
    free(c->t);
    free(c->metadata);
    free(c->key);
    memset(c, 0, sizeof *c);
}
