/*
 * main.c: the `vbseg` command: dispatch to subcommands, and the small
 * parsing helpers they share. Each subcommand lives in its own file.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

int cli_error(const char *cmd, const char *fmt, ...) {
    va_list ap;
    fprintf(stderr, "vbseg %s: ", cmd);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    return 1;
}

int cli_int(const char *cmd, const char *opt, const char *s, long long lo, long long hi, long long *out) {
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (!*s || *end || errno || v < lo || v > hi) {
        cli_error(cmd, "%s: '%s' is not an integer in %lld..%lld", opt, s, lo, hi);
        return 0;
    }
    *out = v;
    return 1;
}

int cli_float(const char *cmd, const char *opt, const char *s, double *out) {
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (!*s || *end || errno || v != v) {
        cli_error(cmd, "%s: '%s' is not a number", opt, s);
        return 0;
    }
    *out = v;
    return 1;
}

int cli_shape(const char *s, int64_t *dims, int max) {
    int n = 0;
    while (*s) {
        char *end;
        errno = 0;
        long long v = strtoll(s, &end, 10);
        if (end == s || errno || v <= 0 || v > (1 << 24) || n == max) return -1;
        dims[n++] = v;
        s = end;
        if (*s == 'x') s++;
        else if (*s) return -1;
    }
    return n;
}

int cli_ends_with(const char *s, const char *t) {
    size_t n = strlen(s), m = strlen(t);
    return n >= m && !strcmp(s + n - m, t);
}

const char *cli_value(const char *cmd, int argc, char **argv, int *i) {
    if (*i + 1 >= argc) {
        cli_error(cmd, "%s needs a value", argv[*i]);
        return NULL;
    }
    return argv[++*i];
}

void cli_log(vbs_log_level level, const char *msg, void *user) {
    static const char *const names[] = {"error", "warning", "info", "debug"};
    (void)user;
    fprintf(stderr, "vbseg: %s: %s\n", names[level], msg);
}

static void usage(FILE *f) {
    fprintf(f,
            "usage: vbseg <command> [options]\n"
            "\n"
            "commands:\n"
            "  create   write an untrained variational U-Net (.vbseg)\n"
            "  info     describe a model: graph, parameters, sigma statistics, model card\n"
            "  run      Monte-Carlo inference on one NIfTI volume or .npy array\n"
            "  convert  import an ONNX model as a variational .vbseg model\n"
            "  export   write a model as ONNX: its mean network, or a graph that samples every run\n"
            "  infer    batch inference over a folder of scans (BraTS, nnU-Net or flat layouts)\n"
            "  eval     Dice, IoU, HD95 and uncertainty quality against reference labels\n"
            "  train    train a variational network by Bayes by Backprop on labelled scans\n"
            "  bench    time one MC sample and report GFLOP/s\n"
            "\n"
            "`vbseg <command> --help` describes each command. vbseg %s\n",
            VBS_VERSION_STRING);
}

int main(int argc, char **argv) {
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    const char *c = argv[1];
    if (!strcmp(c, "--help") || !strcmp(c, "-h") || !strcmp(c, "help")) {
        usage(stdout);
        return 0;
    }
    if (!strcmp(c, "--version")) {
        printf("vbseg %s (format %d.%d)\n", VBS_VERSION_STRING, VBS_FORMAT_MAJOR, VBS_FORMAT_MINOR);
        return 0;
    }
    if (!strcmp(c, "create")) return cmd_create(argc - 1, argv + 1);
    if (!strcmp(c, "info")) return cmd_info(argc - 1, argv + 1);
    if (!strcmp(c, "run")) return cmd_run(argc - 1, argv + 1);
    if (!strcmp(c, "bench")) return cmd_bench(argc - 1, argv + 1);
    if (!strcmp(c, "convert")) return cmd_convert(argc - 1, argv + 1);
    if (!strcmp(c, "export")) return cmd_export(argc - 1, argv + 1);
    if (!strcmp(c, "infer")) return cmd_infer(argc - 1, argv + 1);
    if (!strcmp(c, "eval")) return cmd_eval(argc - 1, argv + 1);
    if (!strcmp(c, "train")) return cmd_train(argc - 1, argv + 1);
    fprintf(stderr, "vbseg: unknown command '%s' (try vbseg --help)\n", c);
    return 2;
}
