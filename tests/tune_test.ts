import assert from "node:assert/strict";
import { join } from "node:path";
import { run, sync } from "../src/gpu/kernel.ts";
import { createTensor, read } from "../src/gpu/tensor.ts";
import { gpuMilliseconds, timestampsBelievable } from "../src/gpu/timing.ts";
import {
  configureTuning,
  MARGIN,
  pendingTuneCount,
  readTuneCache,
  roundCopies,
  SLOW,
  TIMING_REVISION,
  tunedDispatch,
  tunePending,
  tuneSaveProblem,
  tuneSettings,
  writeTuneCache,
} from "../src/gpu/tune.ts";
import { conv2d, conv2dBackwardWeight } from "../src/ops/conv2d.ts";
import { matmul } from "../src/ops/matmul.ts";
import { conv2d as conv2dRef } from "./reference/conv2d.ts";
import { matmul as matmulRef } from "./reference/matmul.ts";
import { assertClose, getGpu, runAndRead, uniform, upload } from "./util.ts";

/** Runs `body` with the tuner on and caching into `path`, then restores the settings. */
async function withTuning(path: string, body: () => Promise<void>): Promise<void> {
  const gpu = await getGpu();
  const before = tuneSettings(gpu);
  configureTuning(gpu, { mode: "auto", path });
  try {
    await body();
  } finally {
    configureTuning(gpu, before);
  }
}

Deno.test("tuner times the candidates once, caches the winner and rebuilds the dispatch with it", async () => {
  const gpu = await getGpu();
  const dir = await Deno.makeTempDir();
  const path = join(dir, "sub", "tune.json");
  await withTuning(path, async () => {
    const [T, M, K, N] = [2, 9, 13, 11];
    const av = uniform(T * M * K, 1);
    const bv = uniform(T * K * N, 2);
    const a = upload(gpu, [T, M, K], av);
    const b = upload(gpu, [T, K, N], bv);
    const out = createTensor(gpu, [T, M, N]);
    const d = matmul(gpu, a, b, out);
    assert.equal(pendingTuneCount(gpu), 1);
    const results = await tunePending(gpu);
    assert.equal(pendingTuneCount(gpu), 0);
    assert.equal(results.length, 1);
    const r = results[0]!;
    assert.equal(r.kernel, "matmul");
    // 13 is not a multiple of 4, so "tiled_texture" (vec4 loads only) is no candidate.
    assert.deepEqual(Object.keys(r.ms).sort(), ["tiled", "workgroup", "workgroup_large"]);
    assert.ok(Object.values(r.ms).every((ms) => ms > 0 && Number.isFinite(ms)));
    // The default unless the other is more than MARGIN faster.
    const fastest = Object.entries(r.ms).sort((x, y) => x[1] - y[1])[0]!;
    const expected = fastest[1] < r.ms.tiled! * (1 - MARGIN) ? fastest[0] : "tiled";
    assert.equal(r.winner, expected);
    // The rebuilt dispatch computes the product (timing ran on other tensors, not on `out`).
    assertClose(await runAndRead(gpu, d, out), matmulRef(av, bv, { T, M, K, N }), {
      label: r.winner,
    });
    const file = readTuneCache(path);
    const entry = file.adapters[gpu.adapterKey]?.[`matmul: ${r.shapeClass}`];
    assert.equal(entry?.winner, r.winner);
    // The same shape class again: the cached winner, nothing left to time.
    const again = matmul(gpu, a, b, createTensor(gpu, [T, M, N]));
    assert.equal(pendingTuneCount(gpu), 0);
    const entryPoint = { tiled: "matmul:tiled", workgroup: "matmul:workgroup_tiled" }[r.winner] ??
      "matmul:workgroup_large";
    assert.ok(again[0]!.pipeline.label.startsWith(entryPoint), again[0]!.pipeline.label);
    for (const t of [a, b, out]) t.destroy();
  });
  await Deno.remove(dir, { recursive: true });
});

Deno.test("the tuner's choice for conv2d gives the reference result", async () => {
  const gpu = await getGpu();
  const dir = await Deno.makeTempDir();
  await withTuning(join(dir, "tune.json"), async () => {
    const s = { tasks: 1, batch: 2, cin: 3, h: 6, w: 6, cout: 5, k: 3, stride: 1, padding: 1 };
    const data = {
      x: uniform(2 * 3 * 36, 3),
      w: uniform(5 * 3 * 9, 4),
      bias: uniform(5, 5),
    };
    const x = upload(gpu, [1, 2, 3, 6, 6], data.x);
    const w = upload(gpu, [1, 5, 3, 3, 3], data.w);
    const bias = upload(gpu, [1, 5], data.bias);
    const y = createTensor(gpu, [1, 2, 5, 6, 6]);
    const d = conv2d(gpu, x, w, bias, y, { padding: 1, activation: "relu" });
    const [r] = await tunePending(gpu);
    assert.equal(r?.kernel, "conv2d.forward");
    const got = await runAndRead(gpu, d, y);
    assertClose(got, conv2dRef(s, { ...data, activation: "relu" }), { label: r!.winner });
    for (const t of [x, w, bias, y]) t.destroy();
  });
  await Deno.remove(dir, { recursive: true });
});

Deno.test("tuning off uses the built-in defaults and writes nothing", async () => {
  const gpu = await getGpu();
  const dir = await Deno.makeTempDir();
  const path = join(dir, "tune.json");
  const before = tuneSettings(gpu);
  configureTuning(gpu, { mode: "off", path });
  try {
    const a = createTensor(gpu, [3, 5]);
    const b = createTensor(gpu, [5, 7]);
    const out = createTensor(gpu, [3, 7]);
    const [d] = matmul(gpu, a, b, out);
    assert.ok(d!.pipeline.label.startsWith("matmul:tiled"));
    assert.equal(pendingTuneCount(gpu), 0);
    assert.deepEqual(await tunePending(gpu), []);
    await assert.rejects(Deno.stat(path), Deno.errors.NotFound);
    await read(gpu, out);
    for (const t of [a, b, out]) t.destroy();
  } finally {
    configureTuning(gpu, before);
  }
  await Deno.remove(dir, { recursive: true });
});

Deno.test("a cache file that is not ours is reported and left as it was", async () => {
  const dir = await Deno.makeTempDir();
  const path = join(dir, "tune.json");
  await Deno.writeTextFile(path, "my notes\n");
  assert.throws(() => readTuneCache(path), /not a SuperNet tuning file/);
  assert.equal(await Deno.readTextFile(path), "my notes\n");
  assert.deepEqual(readTuneCache(join(dir, "absent.json")), { version: 1, adapters: {} });
  await Deno.remove(dir, { recursive: true });
});

Deno.test("a dispatch handed out before tuning is rebuilt in place with a faster winner", async () => {
  const gpu = await getGpu();
  const dir = await Deno.makeTempDir();
  await withTuning(join(dir, "tune.json"), async () => {
    const [M, K, N] = [192, 192, 192];
    const av = uniform(M * K, 7);
    const bv = uniform(K * N, 8);
    const a = upload(gpu, [M, K], av);
    const b = upload(gpu, [K, N], bv);
    const out = createTensor(gpu, [M, N]);
    // Candidates: the one-output-per-invocation kernel (default here) and the register-blocked
    // one, several times faster at this size on any adapter.
    const build = (variant: string, o = out) =>
      matmul(gpu, a, b, o, { variant: variant as "naive" | "tiled" })[0]!;
    const request = {
      kernel: "test.matmul",
      shapeClass: `${M}x${K}x${N}`,
      variants: ["naive", "tiled"],
      build: (v: string) => build(v),
      measure: (v: string) => {
        const o = createTensor(gpu, [M, N]);
        return { dispatch: build(v, o), destroy: () => o.destroy() };
      },
    };
    const d = tunedDispatch(gpu, request);
    assert.ok(d.pipeline.label.startsWith("matmul:naive"));
    // A second dispatch of the same class on its own output: rebuilt on its own tensors.
    const other = createTensor(gpu, [M, N]);
    const d2 = tunedDispatch(gpu, { ...request, build: (v: string) => build(v, other) });
    // A second program of the same class, destroyed before tuning: left alone, no error.
    const dead = createTensor(gpu, [M, N]);
    tunedDispatch(gpu, { ...request, build: (v: string) => build(v, dead) });
    dead.destroy();
    const [r] = await tunePending(gpu);
    // The winner is the fastest measured, or the default where nothing beats it by the tuner's
    // margin (tiled is several times faster, but a loaded machine's timings mean little): no
    // assertion here rests on the machine's speed.
    const ms = r!.ms as Record<string, number>;
    const fastest = Object.keys(ms).reduce((x, y) => (ms[y]! < ms[x]! ? y : x));
    const winner = r!.winner;
    assert.ok(winner === fastest || winner === "naive", JSON.stringify(ms));
    assert.ok(d.pipeline.label.startsWith(`matmul:${winner}`));
    const want = matmulRef(av, bv, { T: 1, M, K, N });
    assertClose(await runAndRead(gpu, [d], out), want, { label: "rebuilt" });
    assert.ok(d2.pipeline.label.startsWith(`matmul:${winner}`));
    assertClose(await runAndRead(gpu, [d2], other), want, { label: "second, rebuilt" });
    for (const t of [a, b, out, other]) t.destroy();
  });
  await Deno.remove(dir, { recursive: true });
});

Deno.test("a cache file that cannot be written keeps the winners in the process", async () => {
  const gpu = await getGpu();
  const dir = await Deno.makeTempDir();
  const blocker = join(dir, "a-file");
  await Deno.writeTextFile(blocker, "");
  await withTuning(join(blocker, "tune.json"), async () => {
    const a = createTensor(gpu, [1, 6, 10]);
    const b = createTensor(gpu, [1, 10, 3]);
    const out = createTensor(gpu, [1, 6, 3]);
    matmul(gpu, a, b, out);
    const results = await tunePending(gpu);
    assert.equal(results.length, 1);
    assert.match(tuneSaveProblem(gpu)!, /could not write .*a-file/);
    // The winner is known in this process: the same class is not timed again.
    matmul(gpu, a, b, out);
    assert.equal(pendingTuneCount(gpu), 0);
    for (const t of [a, b, out]) t.destroy();
  });
  await Deno.remove(dir, { recursive: true });
});

Deno.test("tuner times a cached shape class again when a candidate is new to it or its timing is older", async () => {
  const gpu = await getGpu();
  const dir = await Deno.makeTempDir();
  const path = join(dir, "tune.json");
  const key = "matmul: nn T2 M16 N16 K16";
  const measured = "2026-01-01T00:00:00Z";
  const cases = {
    // A winner recorded before "workgroup_large" was a candidate.
    "a new candidate": {
      winner: "workgroup",
      ms: { tiled: 2, workgroup: 1 },
      timer: "wall clock",
      measured,
      timing: TIMING_REVISION,
    },
    // All candidates, timed before timestamps were checked against the wall clock.
    "an older timing": {
      winner: "workgroup",
      ms: { tiled: 2, workgroup: 1, workgroup_large: 3 },
      timer: "timestamp-query",
      measured,
    },
  };
  for (const [label, old] of Object.entries(cases)) {
    await writeTuneCache(path, { version: 1, adapters: { [gpu.adapterKey]: { [key]: old } } });
    await withTuning(path, async () => {
      const [T, M, K, N] = [2, 9, 13, 11];
      const tensors = [createTensor(gpu, [T, M, K]), createTensor(gpu, [T, K, N])];
      const out = createTensor(gpu, [T, M, N]);
      matmul(gpu, tensors[0]!, tensors[1]!, out);
      assert.equal(pendingTuneCount(gpu), 1, label);
      const [r] = await tunePending(gpu);
      assert.ok("workgroup_large" in r!.ms, JSON.stringify(r!.ms));
      const entry = readTuneCache(path).adapters[gpu.adapterKey]![key]!;
      assert.notEqual(entry.measured, measured, label);
      assert.equal(entry.timing, TIMING_REVISION, label);
      for (const t of [...tensors, out]) t.destroy();
    });
  }
  await Deno.remove(dir, { recursive: true });
});

Deno.test("candidates far slower than the fastest after the warm-up skip the timed rounds", () => {
  // 2 ms passes: 1 copy of a 2.5 ms kernel, 20 of a 0.1 ms one, at most 64 copies.
  assert.deepEqual(roundCopies([2.5, 0.1, 0.01]), [0, 0, 64]);
  assert.deepEqual(roundCopies([1, SLOW * 0.99, SLOW * 1.01, 100]), [2, 1, 0, 0]);
  assert.deepEqual(roundCopies([5, 5]), [1, 1]);
});

Deno.test("timestamps far below the wall clock around the same work are not believed", () => {
  // llvmpipe once read 0.2 ms for 450 ms of work; a submit-and-wait costs about 11 ms.
  assert.equal(timestampsBelievable(0.2, 450), false);
  assert.equal(timestampsBelievable(40, 120), false);
  assert.equal(timestampsBelievable(0.2, 12), true);
  assert.equal(timestampsBelievable(0.2, 45), true);
  assert.equal(timestampsBelievable(157, 192), true);
  assert.equal(timestampsBelievable(100, 190), true);
});

Deno.test("kernel timings agree with the wall clock after the tiled kernels that bind textures", async () => {
  const gpu = await getGpu();
  const [T, B, C, H, O] = [2, 8, 16, 16, 16];
  const x = upload(gpu, [T, B, C, H, H], uniform(T * B * C * H * H, 3));
  const dy = upload(gpu, [T, B, O, H / 2, H / 2], uniform(T * B * O * H * H / 4, 4));
  const dw = createTensor(gpu, [T, O, C, 5, 5]);
  const options = { stride: 2, padding: 2 };
  for (const variant of ["tiled", "tiled_texture"] as const) {
    await gpuMilliseconds(gpu, conv2dBackwardWeight(gpu, x, dy, dw, { ...options, variant }));
  }
  // A kernel without textures, in copies that last well over 50 ms of wall clock.
  let list = conv2dBackwardWeight(gpu, x, dy, dw, { ...options, variant: "naive" });
  for (;;) {
    const t0 = performance.now();
    run(gpu, list);
    await sync(gpu);
    if (performance.now() - t0 > 150) break;
    list = [...list, ...list];
  }
  const t0 = performance.now();
  const ms = await gpuMilliseconds(gpu, list);
  const around = performance.now() - t0;
  assert.ok(ms <= around, `${ms} ms timed inside ${around} ms`);
  assert.ok(ms > around / 2, `${ms} ms timed for work that took ${around} ms by the wall clock`);
  for (const t of [x, dy, dw]) t.destroy();
});
