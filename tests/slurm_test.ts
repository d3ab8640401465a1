/**
 * The committed smoke plan through a real Slurm: a private single-node cluster (slurmctld, slurmd
 * and munged from Debian's slurm-wlm and munge, see slurm_cluster.ts) runs the 3-cell sweep with
 * `--backend slurm --wait`; one cell is killed mid-run (SIGKILL, no chance to write a record), the
 * sweep fails naming it, and a rerun resubmits only that cell. Then every cell's results, the
 * merged report, and bit-identical results from `--backend local`. The sweep folder's name holds
 * a space, quotes, `$`, `;` and `%`, and the plan an sbatch comment that would run commands if a
 * shell ever read it. The daemons are stopped by their process ids, also when the test fails.
 * Skipped, with the reason, where Slurm's programs are missing or the tests do not run as root.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { loadSafetensors } from "../src/safetensors.ts";
import { clusterUnavailable, startCluster } from "./slurm_cluster.ts";

const root = new URL("..", import.meta.url).pathname;
const reason = await clusterUnavailable();
if (reason) console.error(`slurm_test: skipped: ${reason}`);

const NASTY = `it's "a" $HOME; touch pwned; 100%`;

/** Sweeps started and not yet finished, stopped if the test fails half-way. */
const unfinished = new Set<Deno.ChildProcess>();

function sweep(args: string[], env: Record<string, string>): Deno.ChildProcess {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["task", "sweep", ...args],
    cwd: root,
    env,
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  unfinished.add(child);
  return child;
}

async function finish(child: Deno.ChildProcess) {
  const out = await child.output();
  unfinished.delete(child);
  return {
    code: out.code,
    stdout: new TextDecoder().decode(out.stdout),
    stderr: new TextDecoder().decode(out.stderr),
  };
}

async function exists(path: string): Promise<boolean> {
  return await Deno.stat(path).then(() => true, () => false);
}

/** results.json without what differs between two runs of the same cell: times and paths. */
function deterministic(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(deterministic);
  if (typeof value !== "object" || value === null) return value;
  return Object.fromEntries(
    Object.entries(value)
      .filter(([k]) => !["seconds", "trainSeconds", "phaseSeconds", "command", "out"].includes(k))
      .map(([k, v]) => [k, deterministic(v)]),
  );
}

Deno.test({
  name:
    "the smoke plan runs on a real Slurm, survives a killed cell, and matches the local backend",
  ignore: reason !== undefined,
  fn: async () => {
    const cluster = await startCluster();
    const work = await Deno.makeTempDir({ prefix: "supernet-sweep-" });
    try {
      const env = { ...cluster.env };
      const base = join(work, `sweep ${NASTY}`);
      await Deno.mkdir(base);
      const plan = JSON.parse(await Deno.readTextFile(join(root, "docs", "sweeps", "smoke.json")));
      plan.slurm = { ...plan.slurm, args: [`--comment=${NASTY}`] };
      // One held-out task per cell: the backends are under test, not the statistics (CI time).
      plan.options = { ...plan.options, holdoutLast: 1 };
      const planPath = join(base, "smoke.json");
      await Deno.writeTextFile(planPath, JSON.stringify(plan));
      const out = join(base, "slurm");
      const args = [planPath, "--out", out, "--backend", "slurm", "--wait", "--poll", "1"];
      // The same sweep on this machine without Slurm, alongside, to compare results at the end.
      const local = join(base, "local");
      const here = sweep([planPath, "--out", local, "--backend", "local", "--quiet"], env);

      // First pass: kill the second cell once it is training.
      const first = sweep(args, env);
      const victim = join(out, "cells", "exp1_seed-2");
      let pid = 0;
      for (let i = 0; i < 1200 && pid === 0; i++) {
        const lock = await Deno.readTextFile(join(victim, "running.json")).catch(() => "");
        if (lock && await exists(join(victim, "train"))) pid = JSON.parse(lock).pid;
        else await new Promise((r) => setTimeout(r, 100));
      }
      assert.ok(pid > 0, "the second cell never started");
      Deno.kill(pid, "SIGKILL");
      const failed = await finish(first);
      assert.equal(failed.code, 1, failed.stdout + failed.stderr);
      assert.match(failed.stdout, /Submitted Slurm array job (\d+): 3 cell\(s\)/);
      assert.match(failed.stderr, /error: 1 of 3 cell\(s\) failed: exp1_seed-2 \(log /);
      const jobId = /Submitted Slurm array job (\d+)/.exec(failed.stdout)![1];
      const status = await finish(sweep(["--status", out], env));
      assert.match(status.stdout, /exp1_seed-1\s+done/);
      assert.match(status.stdout, /exp1_seed-2\s+failed\s+Slurm element \d+_1 ended FAILED/);
      assert.match(status.stdout, /2 done, 0 running, 1 failed, 0 missing/);
      assert.equal(await exists(join(victim, "done.json")), false);
      // The plan's comment reached Slurm as one argument, and no shell ran any of it.
      const comment = await new Deno.Command("squeue", {
        args: ["-h", "-t", "all", "-j", jobId!, "-o", "%k"],
        env,
        stdout: "piped",
      }).output();
      assert.equal(new TextDecoder().decode(comment.stdout).trim().split("\n")[0], NASTY);
      for (const dir of [root, base, out, work]) {
        assert.equal(await exists(join(dir, "pwned")), false, `pwned in ${dir}`);
      }

      // Second pass: only the killed cell is submitted again.
      const resumed = await finish(sweep(args, env));
      assert.equal(resumed.code, 0, resumed.stdout + resumed.stderr);
      assert.match(resumed.stdout, /exp1_seed-1\s+skip \(done\)/);
      assert.match(resumed.stdout, /exp1_seed-2\s+run/);
      assert.match(resumed.stdout, /Submitted Slurm array job \d+: 1 cell\(s\)/);
      assert.match(resumed.stdout, /3 done, 0 running, 0 failed, 0 missing/);
      const jobs = JSON.parse(await Deno.readTextFile(join(out, "slurm", "jobs.json")));
      assert.deepEqual(jobs.map((j: { cells: number[] }) => j.cells), [[0, 1, 2], [1]]);

      const localRun = await finish(here);
      assert.equal(localRun.code, 0, localRun.stdout + localRun.stderr);

      for (const seed of [1, 2, 3]) {
        const name = `exp1_seed-${seed}`;
        const a = JSON.parse(await Deno.readTextFile(join(out, "cells", name, "results.json")));
        const b = JSON.parse(await Deno.readTextFile(join(local, "cells", name, "results.json")));
        assert.equal(a.options.seed, seed);
        for (const m of a.heldOut[0].methods) assert.ok(m.accuracy >= 0 && m.accuracy <= 1);
        assert.deepEqual(deterministic(a), deterministic(b), `${name}: results differ`);
        for (const file of ["train/model.safetensors", "adapt/z_8.safetensors"]) {
          const x = await loadSafetensors(join(out, "cells", name, file));
          const y = await loadSafetensors(join(local, "cells", name, file));
          for (const [tensor, t] of x.tensors) {
            assert.deepEqual(
              new Uint8Array(t.data.buffer),
              new Uint8Array(y.tensors.get(tensor)!.data.buffer),
              `${name}/${file}: ${tensor} differs`,
            );
          }
        }
      }

      const report = await new Deno.Command(Deno.execPath(), {
        args: ["task", "report", out],
        cwd: root,
        stdout: "piped",
        stderr: "piped",
      }).output();
      const text = new TextDecoder().decode(report.stdout);
      assert.equal(report.code, 0, new TextDecoder().decode(report.stderr));
      assert.match(text, /exp1\s+z\s+3\s+\d+\.\d\d% ± \d+\.\d\d\s+\[\d+\.\d\d%, \d+\.\d\d%\]/);
      const md = await Deno.readTextFile(join(out, "report.md"));
      assert.match(md, /\| exp1 \| full \| 3 \| /);
      assert.match(md, /## Each method against z-only, paired by seed/);
    } finally {
      for (const child of unfinished) {
        child.kill("SIGTERM");
        await child.output().catch(() => {});
      }
      await cluster.stop();
      await Deno.remove(work, { recursive: true }).catch(() => {});
    }
    // Nothing of the cluster is left: no process mentions its folder.
    const table = await new Deno.Command("sh", {
      args: ["-c", 'for f in /proc/[0-9]*/cmdline; do tr "\\0" " " < "$f"; echo; done 2>/dev/null'],
      stdout: "piped",
    }).output();
    const left = new TextDecoder().decode(table.stdout).split("\n").filter((l) =>
      l.includes(cluster.dir)
    );
    assert.deepEqual(left, [], "processes of the cluster still running");
  },
});
