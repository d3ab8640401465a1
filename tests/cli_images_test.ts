/**
 * The command line as a user meets it with their own pictures (adapt --images, predict, export
 * --format onnx), and the rough edges of issue 13: each bad input gets one clear line naming
 * the value and what to do, never "looks like a bug".
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { encode as encodePng } from "fast-png";
import { loadDataset } from "../src/data/dataset.ts";
import { type CliOutput, runMain } from "./util.ts";

const cifarDir = decodeURIComponent(new URL("../../shared/data/", import.meta.url).pathname);
const haveCifar10 = await Deno.stat(join(cifarDir, "cifar-10-batches-bin")).then(
  (s) => s.isDirectory,
  () => false,
);

/** Runs main.ts with the permissions of the deno.json tasks (no --allow-sys, no --allow-run). */
function cli(
  args: string[],
  options: { env?: Record<string, string>; clearEnv?: boolean } = {},
): Promise<CliOutput> {
  return runMain(args, options);
}

const TINY = ["--steps", "6", "--tasks-per-step", "2", "--batch", "8", "--eval-every", "0"];

/** Writes MNIST test digits of `classes` as PNGs: dir/<name>/<index>.png, `count` per class. */
async function digits(dir: string, classes: Record<string, number>, count: number, skip = 0) {
  const mnist = await loadDataset("mnist");
  for (const [name, digit] of Object.entries(classes)) {
    await Deno.mkdir(join(dir, name), { recursive: true });
    let seen = 0;
    for (let i = 0; i < mnist.test.count && seen < skip + count; i++) {
      if (mnist.test.labels[i] !== digit || seen++ < skip) continue;
      const pixels = mnist.test.images.subarray(i * 784, (i + 1) * 784);
      await Deno.writeFile(
        join(dir, name, `${i}.png`),
        encodePng({ width: 28, height: 28, data: pixels, channels: 1, depth: 8 }),
      );
    }
  }
}

Deno.test("adapt --images, predict and export --format onnx through the command line", async () => {
  const dir = await Deno.makeTempDir({ prefix: "cli_images_" });
  try {
    const run = join(dir, "run");
    const trained = await cli(["train", ...TINY, "--out", run, "--quiet"]);
    assert.equal(trained.code, 0, trained.stderr);
    // One picture per class is enough to start.
    const pictures = join(dir, "pets");
    await digits(pictures, { cats: 1, dogs: 7 }, 1);
    await Deno.writeFile(join(pictures, "dogs", "broken.jpg"), new Uint8Array([0xff, 0xd8, 0xff]));
    const adapted = await cli([
      "adapt",
      "--run",
      run,
      "--images",
      pictures,
      "--steps",
      "4",
      "--eval-every",
      "2",
      "--batch",
      "4",
      "--quiet",
    ]);
    assert.equal(adapted.code, 0, adapted.stderr);
    assert.match(adapted.stderr, /warning: skipped .*broken\.jpg: truncated JPEG/);
    assert.match(
      adapted.stderr,
      /Pictures: learning from 2 \(1 'cats', 1 'dogs'\), no --test-dir; 1 skipped\. Positive class: 'dogs'/,
    );
    assert.match(adapted.stdout, /Task 'cats vs dogs' \(your pictures\): learned from 2 images/);
    assert.match(adapted.stdout, /method +trainable +train acc +train loss/);
    const zFile = join(run, "adapt_pets", "z_pets.safetensors");
    assert.match(adapted.stdout, new RegExp(`deno task predict --run ${run} --z ${zFile}`));

    // Held-out pictures of the same classes, and a hostile header among them.
    const held = join(dir, "held");
    await digits(held, { cats: 1, dogs: 7 }, 3, 1);
    const bomb = new Uint8Array(33);
    bomb.set([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0, 0, 0, 13, 73, 72, 68, 82]);
    new DataView(bomb.buffer).setUint32(16, 60000);
    new DataView(bomb.buffer).setUint32(20, 60000);
    await Deno.writeFile(join(held, "dogs", "huge.png"), bomb);
    const predicted = await cli([
      "predict",
      "--run",
      run,
      "--z",
      zFile,
      held + "/cats",
      held + "/dogs",
    ]);
    assert.equal(predicted.code, 0, predicted.stderr);
    const lines = predicted.stdout.trim().split("\n");
    assert.match(lines[0]!, /^file +P\(dogs\) +class$/);
    assert.equal(lines.length, 7);
    for (const line of lines.slice(1)) assert.match(line, /\.png +[01]\.\d{4} +(cats|dogs)$/);
    assert.match(predicted.stderr, /skipped .*huge\.png: 60000x60000 pixels exceeds the limit/);
    assert.match(predicted.stderr, /6 picture\(s\) classified, 1 skipped/);

    const json = await cli(["predict", "--run", run, "--z", zFile, "--json", held + "/cats"]);
    assert.equal(json.code, 0, json.stderr);
    const rows = json.stdout.trim().split("\n").map((l) => JSON.parse(l));
    assert.equal(rows.length, 3);
    for (const r of rows) {
      assert.ok(r.probability >= 0 && r.probability <= 1 && ["cats", "dogs"].includes(r.class));
    }
    const strict = await cli(["predict", "--run", run, "--z", zFile, "--strict", held + "/dogs"]);
    assert.equal(strict.code, 1);
    assert.match(strict.stderr, /^error: .*huge\.png: .*exceeds the limit.*--strict/m);

    // A held-out score, and a class folder with nothing usable.
    const scored = await cli([
      "adapt",
      "--run",
      run,
      "--images",
      pictures,
      "--test-dir",
      held,
      "--steps",
      "2",
      "--eval-every",
      "2",
      "--methods",
      "z",
      "--quiet",
    ]);
    assert.equal(scored.code, 0, scored.stderr);
    assert.match(scored.stdout, /tested on 6 held-out ones/);
    assert.match(scored.stdout, /method +trainable +test acc/);
    await Deno.remove(join(pictures, "cats"), { recursive: true });
    await Deno.mkdir(join(pictures, "cats"));
    const empty = await cli(["adapt", "--run", run, "--images", pictures, "--quiet"]);
    assert.equal(empty.code, 1);
    assert.match(empty.stderr, /^error: .*cats has no usable image \(0 file\(s\), 0 skipped\)/);

    const exported = await cli(["export", "--run", run, "--z", zFile, "--format", "onnx"]);
    assert.equal(exported.code, 0, exported.stderr);
    assert.match(exported.stdout, /cats_vs_dogs\.onnx and .*cats_vs_dogs\.json/);
    const unused = await cli(["adapt", "--run", run, "--positive", "dogs"]);
    assert.equal(unused.code, 2);
    assert.match(unused.stderr, /--positive only applies with --images DIR/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("rough edges: one clear line for each, never a bug report", async () => {
  const dir = await Deno.makeTempDir({ prefix: "cli_edges_" });
  try {
    const file = join(dir, "notes.txt");
    await Deno.writeTextFile(file, "keep me");
    const cases: { args: string[]; code: number; message: RegExp }[] = [
      { args: ["train", "--steps", "-1"], code: 2, message: /--steps '-1' is not a non-negative/ },
      { args: ["adapt", "--lr", "-0.5"], code: 2, message: /--lr '-0.5' is not a non-negative/ },
      {
        args: ["train", "--dataset", "cifar10", "--data-dir", file],
        code: 1,
        message: /Data folder .*notes\.txt .* is a file; expected the folder/,
      },
      {
        args: ["train", ...TINY, "--out", file],
        code: 2,
        message: /--out .*notes\.txt is a file; expected a folder \(the file is left as it is\)/,
      },
      {
        args: ["export", "--run", join(dir, "missing")],
        code: 1,
        message: /checkpoint\.json not found/,
      },
      {
        args: ["train", ...TINY, "--tasks-per-step", "20", "--out", join(dir, "t")],
        code: 1,
        message:
          /--tasks-per-step 20 is more than the 8 training tasks of one_vs_anchor on mnist; use at most 8/,
      },
    ];
    for (const c of cases) {
      const r = await cli(c.args);
      assert.equal(r.code, c.code, `${c.args.join(" ")}: ${r.stderr}`);
      assert.match(r.stderr, c.message, c.args.join(" "));
      assert.doesNotMatch(r.stderr, /looks like a bug|^\s+at /m, c.args.join(" "));
    }
    assert.equal(await Deno.readTextFile(file), "keep me");
    assert.ok(!(await Deno.stat(join(dir, "t")).then(() => true, () => false)), "no folder left");

    // An export into a place that cannot be created.
    const run = join(dir, "run");
    assert.equal((await cli(["train", ...TINY, "--out", run, "--quiet"])).code, 0);
    const blocked = await cli(["export", "--run", run, "--out", join(file, "export")]);
    assert.equal(blocked.code, 1);
    assert.match(
      blocked.stderr,
      /^error: cannot create --out .*notes\.txt\/export \(part of the path is a file\); choose a folder you can write to\n$/,
    );

    // No driver warning when XDG_RUNTIME_DIR is unset, with the tasks' permissions.
    const env = Deno.env.toObject();
    delete env.XDG_RUNTIME_DIR;
    const quiet = await cli(["evaluate", "--run", run, "--quiet"], { env, clearEnv: true });
    assert.equal(quiet.code, 0, quiet.stderr);
    assert.doesNotMatch(quiet.stderr, /XDG_RUNTIME_DIR/);

    // --holdout: task indices in train and tasks; experiment refuses it (tests/cli_test.ts).
    const tasks = await cli(["tasks", "--holdout", "2,3"]);
    assert.match(tasks.stdout, /9 tasks of one_vs_anchor on mnist: 7 train, 2 held out/);
    const last = await cli(["tasks", "--holdout-last", "3"]);
    assert.match(last.stdout, /6 train, 3 held out/);
    const help = await cli(["experiment", "--help"]);
    assert.equal(help.code, 0);
    assert.match(help.stdout, /--holdout-last <value> +hold out the last K tasks/);
    assert.doesNotMatch(help.stdout, /--holdout </);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test({
  name: "evaluate and adapt keep a run's --no-verify" +
    (haveCifar10 ? "" : " (skipped: ../shared/data/cifar-10-batches-bin is absent)"),
  ignore: !haveCifar10,
  fn: async () => {
    const dir = await Deno.makeTempDir({ prefix: "cli_verify_" });
    try {
      const run = join(dir, "run");
      const base = ["--dataset", "cifar10", "--data-dir", cifarDir];
      const trained = await cli([
        "train",
        ...base,
        "--no-verify",
        ...TINY,
        "--out",
        run,
        "--quiet",
      ]);
      assert.equal(trained.code, 0, trained.stderr);
      const evaluated = await cli(["evaluate", "--run", run, "--quiet"]);
      assert.equal(evaluated.code, 0, evaluated.stderr);
      assert.match(evaluated.stdout, /Mean test accuracy/);
      const strict = await cli(["evaluate", "--run", run, "--quiet", "--data-dir", cifarDir]);
      assert.equal(strict.code, 0, "--data-dir alone does not bring checking back");
      const adapted = await cli(["adapt", "--run", run, "--methods", "zero-shot", "--quiet"]);
      assert.equal(adapted.code, 0, adapted.stderr);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});
