/*
 * fiu_nth.c: an LD_PRELOAD shim, loaded before Debian's fiu_posix_preload.so,
 * that fails exactly the Nth call of one libfiu failure point, as SQLite's
 * I/O-error tests do. Its constructor enables each point named in
 * VBS_FIU_POINTS (comma-separated) with a counting callback
 * (fiu_enable_external); the walk then re-runs the command with
 * VBS_FIU_FAIL=POINT:N and VBS_FIU_ERRNO=E, and the Nth call of POINT fails
 * with errno E. At exit the counts go to VBS_FIU_COUNTS (lines "POINT N",
 * then "trace LETTERS", the points in call order as a, b, ... by their place
 * in VBS_FIU_POINTS, then "fired POINT N" if the fault was injected), written
 * with the points disabled.
 *
 * libfiu's posix points cover write(2), fsync(2), rename(2) and the stdio
 * calls an application makes, but not the writes glibc makes inside fclose
 * and fflush (internal calls, not interposable). Those are where fprintf'd
 * files (infer's summaries and manifest) meet the disk, so this shim adds
 * two points of its own, "vbs/stdio/fclose" and "vbs/stdio/fflush", on
 * streams open for writing on a regular file (never the terminal, stdout or
 * stderr): the real call runs, then reports the failure, as a failed flush
 * does.
 *
 * It is not a general fault injector: one point fails, once.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#define FIU_ENABLE 1 /* the real fiu_fail(), not fiu.h's stub */
#include <fiu-control.h>
#include <fiu.h>
#include <stdint.h>
#include <stdio.h>
#include <stdio_ext.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define MAXP 16

static char names[MAXP][64];
static long counts[MAXP];
static int npoints, fail_point = -1, fired;
static long fail_at;
static char trace[1 << 16]; /* the order of the calls: one letter (a, b, ...) per call, by point */
static size_t ntrace;
static int fail_errno = EIO;

static int point_index(const char *name) {
    for (int i = 0; i < npoints; i++)
        if (!strcmp(names[i], name)) return i;
    return -1;
}

static int on_call(const char *name, int *failnum, void **failinfo, unsigned int *flags) {
    (void)failnum;
    (void)flags;
    int i = point_index(name);
    if (i < 0) return 0;
    counts[i]++;
    if (ntrace + 1 < sizeof trace) trace[ntrace++] = (char)('a' + i);
    if (i != fail_point || counts[i] != fail_at) return 0;
    fired = 1;
    *failinfo = (void *)(intptr_t)fail_errno;
    return 1;
}

static void report(void) {
    const char *path = getenv("VBS_FIU_COUNTS");
    for (int i = 0; i < npoints; i++) fiu_disable(names[i]);
    if (!path) return;
    FILE *f = fopen(path, "w");
    if (!f) return;
    for (int i = 0; i < npoints; i++) fprintf(f, "%s %ld\n", names[i], counts[i]);
    fprintf(f, "trace %s\n", trace);
    if (fired) fprintf(f, "fired %s %ld\n", names[fail_point], fail_at);
    fclose(f);
}

__attribute__((constructor)) static void setup(void) {
    const char *pts = getenv("VBS_FIU_POINTS");
    if (!pts) return;
    fiu_init(0);
    char buf[1024];
    snprintf(buf, sizeof buf, "%s", pts);
    for (char *save = NULL, *p = strtok_r(buf, ",", &save); p && npoints < MAXP; p = strtok_r(NULL, ",", &save))
        snprintf(names[npoints++], sizeof names[0], "%s", p);
    const char *fail = getenv("VBS_FIU_FAIL"), *e = getenv("VBS_FIU_ERRNO");
    if (e) fail_errno = atoi(e);
    if (fail) {
        const char *colon = strrchr(fail, ':');
        char nm[64];
        if (colon && (size_t)(colon - fail) < sizeof nm) {
            memcpy(nm, fail, (size_t)(colon - fail));
            nm[colon - fail] = 0;
            fail_point = point_index(nm);
            fail_at = atol(colon + 1);
        }
    }
    for (int i = 0; i < npoints; i++) fiu_enable_external(names[i], 1, NULL, 0, on_call);
    atexit(report);
}

/* a stream vbseg writes a file through (not stdout, stderr or a pipe) */
static int file_stream(FILE *f) {
    struct stat sb;
    if (!f || f == stdout || f == stderr || !__fwritable(f)) return 0;
    int fd = fileno(f);
    return fd > 2 && !fstat(fd, &sb) && S_ISREG(sb.st_mode);
}

/* the real call runs (the stream is flushed and, for fclose, freed), then the failure is reported */
static int flush_fault(FILE *f, const char *fn, const char *point) {
    int (*real)(FILE *) = (int (*)(FILE *))dlsym(RTLD_NEXT, fn);
    int fail = file_stream(f) && fiu_fail(point);
    int r = real(f);
    if (!fail) return r;
    errno = (int)(intptr_t)fiu_failinfo();
    return EOF;
}

int fclose(FILE *f) { return flush_fault(f, "fclose", "vbs/stdio/fclose"); }
int fflush(FILE *f) { return flush_fault(f, "fflush", "vbs/stdio/fflush"); }
