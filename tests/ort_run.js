// ort_run.js: runs an exported ONNX model on ONNX Runtime (npm's
// onnxruntime-node), the oracle of tests/export.sh.
//   node ort_run.js ORT_DIR MODEL.onnx IN.npy OUTDIR           one run: OUTDIR/<output>.npy per output
//        (IN.npy feeds the first input; NAME=A.npy,NAME=B.npy feeds named inputs;
//        characters of output names outside [A-Za-z0-9._-] become _)
//   node ort_run.js ORT_DIR MODEL.onnx IN.npy OUTDIR N sigmoid|softmax
//        N runs: per voxel of the class probabilities of output 0 (the activation
//        applied over axis 1), OUTDIR/mean.npy, var.npy (population, as vbseg's
//        prob_var) and m4.npy (fourth central moment, for the standard error of var)
'use strict';
const fs = require('fs');
const path = require('path');
const [ortDir, model, input, outDir, nArg, act] = process.argv.slice(2);
const ort = require(path.join(ortDir, 'node_modules', 'onnxruntime-node'));

function readNpy(f) {
  const b = fs.readFileSync(f);
  const hlen = b.readUInt16LE(8);
  const h = b.toString('latin1', 10, 10 + hlen);
  if (!h.includes("'<f4'") || h.includes("'fortran_order': True")) throw new Error(f + ': not a C-order <f4 array');
  const dims = h.match(/'shape': \(([^)]*)\)/)[1].split(',').map(s => s.trim()).filter(s => s).map(Number);
  const off = 10 + hlen;
  const data = new Float32Array(b.buffer.slice(b.byteOffset + off, b.byteOffset + b.length));
  return { dims, data };
}

function writeNpy(f, dims, data) {
  let h = "{'descr': '<f4', 'fortran_order': False, 'shape': (" + dims.join(', ') + (dims.length === 1 ? ',' : '') + '), }';
  while ((10 + h.length + 1) % 64) h += ' ';
  h += '\n';
  const head = Buffer.alloc(10);
  head.write('\x93NUMPY', 0, 'latin1');
  head[6] = 1; head[7] = 0;
  head.writeUInt16LE(h.length, 8);
  fs.writeFileSync(f, Buffer.concat([head, Buffer.from(h, 'latin1'), Buffer.from(new Float32Array(data).buffer)]));
}

(async () => {
  const s = await ort.InferenceSession.create(model, process.env.ORT_NOOPT ? { graphOptimizationLevel: 'disabled' } : {});
  // IN.npy feeds the first input; NAME=FILE.npy,NAME=FILE.npy names each feed
  const feeds = {};
  for (const item of input.split(',')) {
    const eq = item.indexOf('=');
    const x = readNpy(eq < 0 ? item : item.slice(eq + 1));
    feeds[eq < 0 ? s.inputNames[0] : item.slice(0, eq)] = new ort.Tensor('float32', x.data, x.dims);
  }
  fs.mkdirSync(outDir, { recursive: true });
  if (!nArg) {
    const r = await s.run(feeds);
    for (const name of s.outputNames) writeNpy(path.join(outDir, name.replace(/[^A-Za-z0-9._-]/g, '_') + '.npy'), r[name].dims, r[name].data);
    return;
  }
  const n = Number(nArg);
  let dims, k, nv, sum, sum2, sum3, sum4;
  for (let it = 0; it < n; it++) {
    const y = (await s.run(feeds))[s.outputNames[0]];
    if (!sum) {
      dims = y.dims.slice(1); k = dims[0]; nv = y.data.length / (k * y.dims[0]);
      if (y.dims[0] !== 1) throw new Error('batch of one expected');
      sum = new Float64Array(k * nv); sum2 = new Float64Array(k * nv); sum3 = new Float64Array(k * nv); sum4 = new Float64Array(k * nv);
    }
    for (let v = 0; v < nv; v++) {
      let mx = -Infinity, z = 0;
      if (act === 'softmax') {
        for (let c = 0; c < k; c++) mx = Math.max(mx, y.data[c * nv + v]);
        for (let c = 0; c < k; c++) z += Math.exp(y.data[c * nv + v] - mx);
      }
      for (let c = 0; c < k; c++) {
        const l = y.data[c * nv + v];
        const p = act === 'softmax' ? Math.exp(l - mx) / z : 1 / (1 + Math.exp(-l));
        const i = c * nv + v;
        sum[i] += p; sum2[i] += p * p; sum3[i] += p * p * p; sum4[i] += p * p * p * p;
      }
    }
  }
  const mean = new Float64Array(k * nv), vr = new Float64Array(k * nv), m4 = new Float64Array(k * nv);
  for (let i = 0; i < k * nv; i++) {
    const m = sum[i] / n;
    mean[i] = m;
    vr[i] = Math.max(sum2[i] / n - m * m, 0);
    m4[i] = Math.max(sum4[i] / n - 4 * m * sum3[i] / n + 6 * m * m * sum2[i] / n - 3 * m * m * m * m, 0);
  }
  writeNpy(path.join(outDir, 'mean.npy'), dims, mean);
  writeNpy(path.join(outDir, 'var.npy'), dims, vr);
  writeNpy(path.join(outDir, 'm4.npy'), dims, m4);
})().catch(e => { console.error('ort_run.js: ' + e.message); process.exit(1); });
