#!/usr/bin/env python3
"""io_walk.py BUILD_DIR SHIM [WALK...]: I/O-error walks of vbseg create,
convert, train (its checkpoint writer) and infer, as SQLite's I/O-error
tests do.

Each command runs once with every failure point counted (fiu_nth.so over
Debian's fiu_posix_preload.so: write(2), pwrite(2), fsync(2), fdatasync(2),
rename(2), and the shim's own fclose/fflush of a stdio file), then once per
call with that call failing: EIO, and for the write points EIO and ENOSPC in
turn. Before each run the folder is reset to the state a good earlier run
left (a model at the output path, a finished case, a checkpoint); after it
the oracle is that state and the fault-free run's end state:
  - the fault was injected, and vbseg exited with status 1 (not 0, not a
    signal), with exactly one line on stderr, "vbseg CMD: ..." naming a
    file under the work folder and the injected error;
  - every file is byte-identical to before the run, or to the fault-free
    run's (a whole new version; files holding timings, such as the manifest
    and the checkpoint, are compared with their numbers masked); nothing
    earlier is lost and no temporary is left; every case infer's manifest
    lists has all its outputs;
  - the same command then run without the fault ends in the fault-free
    end state.
Calls are walked one by one up to 24 per point; beyond that the first 8,
the first and last call of each run of consecutive calls (one file's writes
between its fsync and rename) and a stride of the rest, 24 in all (the
trainer's checkpoint and create's model are written a tensor at a time).
"""
import csv
import errno
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

B, SHIM = os.path.abspath(sys.argv[1]), os.path.abspath(sys.argv[2])
ONLY = set(sys.argv[3:])
V = os.path.join(B, "vbseg")
PRELOAD = "/usr/lib/fiu/fiu_posix_preload.so"
POINTS = ["posix/io/rw/write", "posix/io/rw/pwrite", "posix/io/sync/fsync", "posix/io/sync/fdatasync",
          "posix/io/dir/rename", "vbs/stdio/fclose", "vbs/stdio/fflush"]
WRITES = {"posix/io/rw/write", "posix/io/rw/pwrite", "vbs/stdio/fclose", "vbs/stdio/fflush"}
FULL, BUDGET = 8, 24
ONNX = "/usr/include/onnx/backend/test/data/node/test_conv_with_strides_padding/model.onnx"

passed = failed = 0


def check(ok, what):
    global passed, failed
    if ok:
        passed += 1
    else:
        failed += 1
        print("FAIL:", what, flush=True)
    return ok


def preload_env(counts, fail=None, err=errno.EIO):
    env = dict(os.environ, VBS_FIU_POINTS=",".join(POINTS), VBS_FIU_COUNTS=counts, OPENBLAS_NUM_THREADS="1")
    # an ASan build needs its runtime first in the preload list
    asan = os.environ.get("VBS_ASAN_RUNTIME", "")
    env["LD_PRELOAD"] = " ".join(x for x in (asan, SHIM, PRELOAD) if x)
    if fail:
        env["VBS_FIU_FAIL"] = "%s:%d" % fail
        env["VBS_FIU_ERRNO"] = str(err)
    return env


def read_counts(path):
    counts, trace, fired = {}, "", None
    with open(path) as f:
        for line in f:
            parts = line.split()
            if parts[0] == "trace":
                trace = parts[1] if len(parts) > 1 else ""
            elif parts[0] == "fired":
                fired = (parts[1], int(parts[2]))
            else:
                counts[parts[0]] = int(parts[1])
    return counts, trace, fired


def select(trace, letter, n):
    """the calls of one point to walk (1-based)"""
    if n <= BUDGET:
        return list(range(1, n + 1))
    chosen = set(range(1, FULL + 1))
    k, prev = 0, None
    for ch in trace:
        if ch == letter:
            k += 1
            if prev != letter:
                chosen.add(k)
        elif prev == letter:
            chosen.add(k)
        prev = ch
    chosen.add(n)
    rest = [i for i in range(1, n + 1) if i not in chosen]
    room = BUDGET - len(chosen)
    if room > 0 and rest:
        step = max(1, -(-len(rest) // room))
        chosen.update(rest[::step])
    return sorted(chosen)


def snapshot(root):
    out = {}
    for d, _, files in os.walk(root):
        for f in files:
            p = os.path.join(d, f)
            with open(p, "rb") as fh:
                out[os.path.relpath(p, root)] = fh.read()
    return out


NUM = re.compile(rb"-?\d+(\.\d+)?(e[-+]?\d+)?")


def same_shape(name, a, b):
    """two versions of a file that holds timings: numbers masked (text), or
    both load and have the same size (a checkpoint: its elapsed time)"""
    if name.endswith(".vbseg"):
        return len(a) == len(b)
    return NUM.sub(b"#", a) == NUM.sub(b"#", b)


def restore(src, dst):
    shutil.rmtree(dst, ignore_errors=True)
    shutil.copytree(src, dst, symlinks=True)


def report_ok(name, a, before):
    """a run's report (infer's summary.csv/json, which list this run's failures
    too, and its manifest): it parses, and every case the earlier one listed
    is still there"""
    try:
        if name.endswith(".tsv"):  # infer's manifest: its header, and every earlier row as it was
            new, old = a.decode().split("\n"), before.decode().split("\n") if before else []
            return a.endswith(b"\n") and (not old or new[0] == old[0]) and set(old[1:]) <= set(new[1:])
        if name.endswith(".json"):
            ids = [r["case"] for r in json.loads(a)]
            old = [r["case"] for r in json.loads(before)] if before else []
        else:
            rows = list(csv.reader(io.StringIO(a.decode())))
            if not rows or any(len(r) != len(rows[0]) for r in rows):
                return False
            ids = [r[0] for r in rows[1:]]
            old = [r[0] for r in list(csv.reader(io.StringIO(before.decode())))[1:]] if before else []
    except (ValueError, KeyError, TypeError, UnicodeDecodeError):
        return False
    return set(old) <= set(ids)


def walk(name, cmd, make_pristine, volatile, W, reports=(), then=None, consistent=None):
    """make_pristine(state) leaves the earlier outputs in W/state; cmd works
    there. reports: files checked by report_ok; then: a regular expression
    for the one line allowed after the error (infer's "stopping: ...");
    consistent(files): what is wrong across the files after a faulty run"""
    state, pristine_dir = os.path.join(W, "state"), os.path.join(W, name + ".pristine")
    counts = os.path.join(W, "counts")
    os.makedirs(state)
    make_pristine(state)
    shutil.copytree(state, pristine_dir, symlinks=True)
    pristine = snapshot(state)
    r = subprocess.run(cmd, env=preload_env(counts), capture_output=True, text=True)
    if not check(r.returncode == 0, "%s: fault-free run exited %d: %s" % (name, r.returncode, r.stderr.strip())):
        return
    good = snapshot(state)
    check(good != pristine, "%s: the fault-free run wrote nothing" % name)
    n, trace, _ = read_counts(counts)
    runs = 0
    for pi, point in enumerate(POINTS):
        calls = select(trace, chr(ord("a") + pi), n[point])
        for j, k in enumerate(calls):
            err = errno.ENOSPC if point in WRITES and j % 2 else errno.EIO
            what = "%s: %s call %d of %d (%s)" % (name, point, k, n[point], errno.errorcode[err])
            restore(pristine_dir, state)
            if os.path.exists(counts):
                os.unlink(counts)  # a run killed before its exit handler must not read as fired
            r = subprocess.run(cmd, env=preload_env(counts, (point, k), err), capture_output=True, text=True)
            runs += 1
            fired = read_counts(counts)[2] if os.path.exists(counts) else None
            problems = []
            if not fired:
                problems.append("the fault was not injected (the run took another path)")
            if r.returncode != 1:
                problems.append("exit status %d" % r.returncode)
            lines = r.stderr.splitlines()
            if then and len(lines) == 2 and re.match(then, lines[1]):
                lines = lines[:1]
            if len(lines) != 1:
                problems.append("%d lines on stderr" % len(lines))
            elif not (lines[0].startswith("vbseg %s: " % cmd[1]) and W in lines[0] and os.strerror(err) in lines[0]):
                problems.append("stderr does not name a file and the error")
            after = snapshot(state)
            for f in sorted(set(pristine) | set(after)):
                a = after.get(f)
                if a is None:
                    problems.append("%s lost" % f)
                elif f not in pristine and f not in good:
                    problems.append("%s left behind" % f)
                elif f in reports:
                    if not report_ok(f, a, pristine.get(f)):
                        problems.append("%s damaged" % f)
                elif a != pristine.get(f) and a != good.get(f) and not (f in volatile and f in good and same_shape(f, a, good[f])):
                    problems.append("%s damaged" % f)
            if consistent:
                problems += consistent(after)
            # and the same command without the fault ends where the fault-free run did
            r2 = subprocess.run(cmd, capture_output=True, text=True)
            final = snapshot(state)
            if r2.returncode != 0:
                problems.append("the run after it exited %d: %s" % (r2.returncode, r2.stderr.strip()))
            elif set(final) != set(good) or any(
                    final[f] != good[f] and not ((f in volatile or f in reports) and same_shape(f, final[f], good[f])) for f in good):
                problems.append("the run after it did not end in the fault-free state: %s" % sorted(
                    f for f in set(final) | set(good) if final.get(f) != good.get(f)))
            check(not problems, "%s: %s; stderr: %s" % (what, "; ".join(problems), r.stderr.strip()))
    shutil.rmtree(state)
    print("%s: %d faulty runs over %s" % (name, runs, ", ".join("%s %d" % (p.split("/")[-1], n[p]) for p in POINTS if n[p])),
          flush=True)


def sh(*cmd):
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)


def main():
    if not check(os.path.exists(SHIM) and os.path.exists(PRELOAD), "the shim %s and %s" % (SHIM, PRELOAD)):
        print("io_walk: %d passed, %d failed" % (passed, failed))
        return 1
    # on tmpfs where there is one: the walk is about error paths, and a real disk's fsyncs made it 4x slower
    shm = "/dev/shm" if os.access("/dev/shm", os.W_OK) else None
    W = tempfile.mkdtemp(prefix="vbs_iowalk.", dir=shm)
    try:
        S = os.path.join(W, "state")
        create = [V, "create", "--arch", "unet", "--dims", "2", "--in-channels", "1", "--classes", "2", "--base", "2",
                  "--depth", "1", "--latent", "0"]

        def pre_create(st):  # another model already at the output path
            sh(*create, "--seed", "1", "--out", st + "/m.vbseg")
        if not ONLY or "create" in ONLY:
            walk("create", create + ["--seed", "2", "--out", S + "/m.vbseg"], pre_create, set(), W)

        def pre_convert(st):
            shutil.copy(ONNX, st + "/in.onnx")
            sh(*create, "--seed", "1", "--out", st + "/m.vbseg")
        if (not ONLY or "convert" in ONLY) and check(os.path.exists(ONNX), "the ONNX conformance data (libonnx-testdata)"):
            walk("convert", [V, "convert", S + "/in.onnx", S + "/m.vbseg"], pre_convert, set(), W)

        def scans(folder, cases):
            for c in cases:
                os.makedirs(os.path.join(folder, c))
                sh(B + "/samples/make_scan", os.path.join(folder, c), c, "16", "16", "4")

        # train: the checkpoint, log, curves and model of epoch 2 written over those of epoch 1
        small = ["--base", "2", "--depth", "1", "--latent", "0", "--batch", "2", "--patch", "16x16", "--val", "0.25",
                 "--seed", "1", "--val-samples", "1", "--steps-per-epoch", "1", "--threads", "1", "--quiet"]

        def pre_train(st):
            scans(st + "/data", ["A", "B", "C", "D"])
            sh(V, "train", "--data", st + "/data", "--out", st + "/t.vbseg", *small, "--epochs", "1")
        if not ONLY or "train" in ONLY:
            walk("train", [V, "train", "--resume", S + "/t.vbseg.train/checkpoint.vbseg", "--epochs", "2", "--threads", "1",
                           "--quiet"], pre_train,
                 {"t.vbseg.train/checkpoint.vbseg", "t.vbseg.train/train_log.csv"}, W)

        # infer: cases A and B done, C new; A's and B's outputs and the manifest must survive
        def pre_infer(st):
            scans(st + "/in", ["A", "B"])
            sh(*create[:7], "4", *create[8:], "--out", st + "/m.vbseg")
            sh(V, "infer", "--model", st + "/m.vbseg", "--input", st + "/in", "--output", st + "/out", "--samples", "2",
               "--threads", "1", "--quiet")
            scans(st + "/in", ["C"])
        def infer_consistent(files):
            """every case the manifest lists as done has all its outputs"""
            rows = files.get("out/manifest.tsv", b"").decode(errors="replace").splitlines()[1:]
            outs = [f[len("out/A"):] for f in files if f.startswith("out/A")]  # A's outputs: A is done before the run
            return ["manifest lists %s without out/%s%s" % (c, c, o) for c in (r.split("\t")[0] for r in rows)
                    for o in outs if "out/%s%s" % (c, o) not in files]

        # infer into a folder that does not exist yet: nothing earlier to keep, nothing half-made to leave
        def pre_infer_new(st):
            scans(st + "/in", ["A"])
            sh(*create[:7], "4", *create[8:], "--out", st + "/m.vbseg")
        for name, pre in (("infer", pre_infer), ("infer_new", pre_infer_new)):
            if ONLY and name not in ONLY:
                continue
            walk(name, [V, "infer", "--model", S + "/m.vbseg", "--input", S + "/in", "--output", S + "/out", "--samples",
                        "2", "--threads", "1", "--quiet"], pre,
                 {"out/.manifest.tsv.lock"}, W, reports={"out/manifest.tsv", "out/summary.csv", "out/summary.json"},
                 then=r"vbseg infer: stopping: outputs cannot be written to .*run the same command again to resume$",
                 consistent=infer_consistent)
    finally:
        shutil.rmtree(W, ignore_errors=True)
    print("io_walk: %d passed, %d failed" % (passed, failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
