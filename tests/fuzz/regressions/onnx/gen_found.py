#!/usr/bin/python3
"""gen_found.py: writes beside itself the smallest forms of what the
in-repo fuzz targets (tests/fuzz/run.sh) found in the ONNX importer, with
gen.py's protobuf helpers. The inputs libFuzzer saved are kept too, as
fuzz-*.onnx. tests/onnx_regress.sh and fuzz_replay_onnx replay them all."""
import os

HERE = os.path.dirname(os.path.abspath(__file__))
g = {}
exec(open(os.path.join(HERE, "gen.py")).read().split("\nRELU =")[0], g)
model, node = g["model"], g["node"]
CASES = {
    # Dropout, Resize and Upsample read their data input without checking there is one (NULL dereference)
    "dropout-without-inputs.onnx": model([node("Dropout", "dr", [], ["y"])]),
    "resize-without-inputs.onnx": model([node("Resize", "rs", [], ["y"])]),
}
for name, data in CASES.items():
    with open(os.path.join(HERE, name), "wb") as f:
        f.write(data)
