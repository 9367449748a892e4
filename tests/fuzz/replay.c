/*
 * replay.c: the fuzz targets' inputs replayed in the test suite, with the
 * normal compiler (gcc; in the sanitizer build under ASan/UBSan), without
 * libFuzzer: main() calls a target's LLVMFuzzerTestOneInput on every file
 * of the given folders (files ending in .py, the generators, are skipped),
 * each in a child process, so that one crash is reported by name and the
 * others still run. An input fails when its child dies by a signal (a
 * crash, the allocation cap's abort, a violated property) or exits with
 * any status but 0 (a sanitizer report, a leak). Besides that, each folder
 * says what the library must answer:
 *   --accept DIR   every input is accepted (fuzz_status 0): the seed corpora
 *                  are valid files, so fuzzing starts from code that loads
 *   --refuse DIR   every input is refused: the regression inputs of findings
 *   --any DIR      no expectation beyond not crashing
 * Usage: replay NAME (--accept|--refuse|--any) DIR [...]
 * Prints "NAME: N passed, N failed" and exits non-zero on any failure.
 */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "fuzz.h"

/* the folder's file list: global, so that a child's leak check sees it reachable */
static char **files;
static int nf;

static int cmp(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* Runs one input in a child; the exit status tells: 0 accepted, 3 refused. */
static int run_one(const char *path) {
    fflush(stdout);
    pid_t pid = fork();
    if (pid < 0) { perror("fork"); return -1; }
    if (pid == 0) {
        FILE *f = fopen(path, "rb");
        if (!f) { perror(path); exit(4); }
        size_t cap = 1 << 16, n = 0;
        uint8_t *buf = malloc(cap);
        size_t r;
        while (buf && (r = fread(buf + n, 1, cap - n, f)) > 0)
            if ((n += r) == cap) buf = realloc(buf, cap *= 2);
        fclose(f);
        if (!buf) exit(4);
        /* a copy of exactly n bytes, so that reading past the input is caught */
        uint8_t *in = malloc(n ? n : 1);
        if (!in) exit(4);
        memcpy(in, buf, n);
        free(buf);
        LLVMFuzzerTestOneInput(in, n);
        free(in);
        exit(fuzz_status ? 3 : 0);
    }
    int ws;
    if (waitpid(pid, &ws, 0) != pid) return -1;
    if (WIFSIGNALED(ws)) return 128 + WTERMSIG(ws);
    return WEXITSTATUS(ws);
}

int main(int argc, char **argv) {
    if (argc < 4) {
        fprintf(stderr, "usage: %s NAME (--accept|--refuse|--any) DIR [...]\n", argv[0]);
        return 2;
    }
    fuzz_init();
    const char *name = argv[1], *mode = "--any";
    int pass = 0, fail = 0;
    for (int a = 2; a < argc; a++) {
        if (!strncmp(argv[a], "--", 2)) { mode = argv[a]; continue; }
        DIR *d = opendir(argv[a]);
        if (!d) { printf("FAIL %s: cannot open the folder\n", argv[a]); fail++; continue; }
        files = NULL;
        nf = 0;
        struct dirent *e;
        while ((e = readdir(d))) {
            size_t l = strlen(e->d_name);
            if (e->d_name[0] == '.' || (l > 3 && !strcmp(e->d_name + l - 3, ".py"))) continue;
            files = realloc(files, sizeof *files * (size_t)(nf + 1));
            if (!files) return 1;
            files[nf] = malloc(strlen(argv[a]) + l + 2);
            if (!files[nf]) return 1;
            sprintf(files[nf++], "%s/%s", argv[a], e->d_name);
        }
        closedir(d);
        qsort(files, (size_t)nf, sizeof *files, cmp);
        if (!nf) { printf("FAIL %s: no inputs\n", argv[a]); fail++; }
        for (int i = 0; i < nf; i++) {
            int rc = run_one(files[i]);
            const char *why = NULL;
            if (rc > 128) why = "killed by a signal (a crash, the allocation cap or a violated property: see above)";
            else if (rc != 0 && rc != 3) why = "exited with an error (a sanitizer report or a leak: see above)";
            else if (rc == 3 && !strcmp(mode, "--accept")) why = "refused, but it is a seed that must load";
            else if (rc == 0 && !strcmp(mode, "--refuse")) why = "accepted, but it is a finding that must be refused";
            if (why) { printf("FAIL %s: %s (status %d)\n", files[i], why, rc); fail++; }
            else pass++;
            free(files[i]);
        }
        free(files);
        files = NULL;
    }
    printf("%s: %d passed, %d failed\n", name, pass, fail);
    return fail ? 1 : 0;
}
