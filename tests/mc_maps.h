/*
 * mc_maps.h: test helper: every map of a session's last Monte-Carlo run,
 * concatenated in vbs_map order, for byte comparisons (threads, seeds).
 */
#ifndef VBS_TESTS_MC_MAPS_H
#define VBS_TESTS_MC_MAPS_H

#include <stdlib.h>
#include <string.h>

#include "vbseg.h"

/* malloc'd; *n floats. mi_sum (may be NULL) receives the sum of the MI map. */
static inline float *mc_all_maps(vbs_session *s, int64_t *n, double *mi_sum) {
    float *all = NULL;
    *n = 0;
    if (mi_sum) *mi_sum = 0;
    for (int w = 0; w < VBS_MAP_COUNT; w++) {
        const float *d;
        vbs_map_info info;
        if (vbs_session_map(s, (vbs_map)w, &d, &info)) continue;
        int64_t k = 1;
        for (int i = 0; i < info.ndim; i++) k *= info.dims[i];
        float *grown = realloc(all, sizeof(float) * (size_t)(*n + k));
        if (!grown) { free(all); *n = 0; return NULL; }
        all = grown;
        memcpy(all + *n, d, sizeof(float) * (size_t)k);
        if (mi_sum && w == VBS_MAP_MUTUAL_INFO)
            for (int64_t i = 0; i < k; i++) *mi_sum += d[i];
        *n += k;
    }
    return all;
}

#endif
