/*
 * test_cases.c: the names a model card may give its channels, matched to the
 * BraTS file suffixes (runtime/cases.c): each spelling in use, in any case and
 * with any separators, and the names that are none of them.
 */
#include "cases.h"
#include "check.h"

int main(void) {
    static const struct { const char *name; int want; } t[] = {
        {"flair", 0}, {"FLAIR", 0}, {"Flair", 0}, {"t2f", 0}, {"T2-FLAIR", 0}, {"t2_flair", 0}, {"T2 FLAIR", 0},
        {"t1", 1}, {"T1", 1}, {"t1n", 1}, {"T1w", 1},
        {"t1ce", 2}, {"T1CE", 2}, {"T1-CE", 2}, {"t1c", 2}, {"t1gd", 2}, {"T1Gd", 2},
        {"t2", 3}, {"T2", 3}, {"t2w", 3}, {"T2w", 3},
        {"", -1}, {"t3", -1}, {"dwi", -1}, {"flairr", -1}, {"t1cet", -1}, {"a-very-long-channel-name-indeed", -1}, {"---", -1},
    };
    for (size_t i = 0; i < sizeof t / sizeof t[0]; i++) {
        int got = vbs_brats_channel_index(t[i].name);
        CHECK(got == t[i].want, "'%s': channel %d, want %d", t[i].name, got, t[i].want);
    }
    return finish("test_cases");
}
