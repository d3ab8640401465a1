/**
 * A private single-node Slurm cluster for tests, from Debian's `slurm-wlm` and `munge`: a
 * slurm.conf for this host (its CPUs and memory, `proctrack/linuxproc`, `task/none`, no
 * accounting database), munged (as user munge) with a fresh key, slurmctld and slurmd, all with
 * their state, spool, sockets and logs in one temporary folder. `stop()` cancels what is queued,
 * stops the daemons by their process ids and removes the folder.
 *
 * Run it by hand to try `deno task sweep --backend slurm` on one machine (as root):
 * `deno run -A tests/slurm_cluster.ts` prints the SLURM_CONF to export and stops on Ctrl-C.
 *
 * @module
 */
import { join } from "node:path";

/** A running private cluster. */
export interface Cluster {
  /** The slurm.conf to put in SLURM_CONF. */
  conf: string;
  /** The folder of everything the cluster writes. */
  dir: string;
  /** Environment for Slurm's commands: SLURM_CONF. */
  env: Record<string, string>;
  /** Cancels queued jobs, stops the daemons and removes `dir`. */
  stop(): Promise<void>;
}

const BINARIES = ["munged", "slurmctld", "slurmd", "sbatch", "squeue", "sinfo", "scancel"];
const SBIN = ["/usr/sbin", "/sbin", "/usr/local/sbin"];

/** The full path of a program on PATH or in the sbin folders, if any. */
async function which(name: string): Promise<string | undefined> {
  const dirs = [...(Deno.env.get("PATH") ?? "").split(":").filter(Boolean), ...SBIN];
  for (const d of dirs) {
    const path = join(d, name);
    if (await Deno.stat(path).then((s) => s.isFile, () => false)) return path;
  }
  return undefined;
}

async function output(command: string, args: string[], env?: Record<string, string>) {
  const out = await new Deno.Command(command, { args, env, stdout: "piped", stderr: "piped" })
    .output();
  return {
    ok: out.success,
    stdout: new TextDecoder().decode(out.stdout),
    stderr: new TextDecoder().decode(out.stderr),
  };
}

/** Why a private cluster cannot start here (missing programs, not root), or undefined. */
export async function clusterUnavailable(): Promise<string | undefined> {
  if (Deno.build.os !== "linux") return "a private Slurm cluster needs Linux";
  const missing = [];
  for (const b of [...BINARIES, "setpriv"]) if (!await which(b)) missing.push(b);
  if (missing.length > 0) {
    return `${
      missing.join(", ")
    } not found; install them with 'apt-get install -y slurm-wlm munge'`;
  }
  if ((await output("id", ["-u"])).stdout.trim() !== "0") {
    return "slurmd must run as root to start jobs; run the tests as root";
  }
  if (!(await output("id", ["-u", "munge"])).ok) return "there is no user 'munge'";
  return undefined;
}

/** Ports something listens on, from /proc/net (no network permission needed). */
async function portsInUse(): Promise<Set<number>> {
  const used = new Set<number>();
  for (const file of ["/proc/net/tcp", "/proc/net/tcp6"]) {
    // Deno reads /proc only with every permission; cat needs only --allow-run.
    const text = (await output("cat", [file]).catch(() => ({ stdout: "" }))).stdout;
    for (const line of text.split("\n").slice(1)) {
      const local = line.trim().split(/\s+/)[1];
      if (local) used.add(parseInt(local.split(":").at(-1)!, 16));
    }
  }
  return used;
}

/** Two distinct free ports in 20000-59999. */
async function freePorts(): Promise<[number, number]> {
  const used = await portsInUse();
  const pick = () => {
    for (;;) {
      const port = 20000 + (crypto.getRandomValues(new Uint32Array(1))[0]! % 40000);
      if (!used.has(port)) {
        used.add(port);
        return port;
      }
    }
  };
  return [pick(), pick()];
}

async function tail(path: string): Promise<string> {
  const text = await Deno.readTextFile(path).catch(() => "(no log)");
  return text.trim().split("\n").slice(-8).join("\n");
}

/** Starts munged, slurmctld and slurmd for this host; resolves when the node is idle. */
export async function startCluster(): Promise<Cluster> {
  const dir = await Deno.makeTempDir({ prefix: "supernet-slurm-" });
  await Deno.chmod(dir, 0o755);
  const children: { name: string; child: Deno.ChildProcess; log: string }[] = [];
  const conf = join(dir, "slurm.conf");
  const env = { SLURM_CONF: conf };
  const stop = async () => {
    const squeue = await output(await which("squeue") ?? "squeue", ["-h", "-o", "%A"], env)
      .catch(() => undefined);
    const ids = squeue?.ok ? squeue.stdout.split("\n").filter(Boolean) : [];
    if (ids.length > 0) {
      await output(await which("scancel") ?? "scancel", ids, env).catch(() => undefined);
      for (let i = 0; i < 50; i++) {
        const left = await output("squeue", ["-h", "-o", "%A", "-t", "PD,R,CG,CF"], env)
          .catch(() => undefined);
        if (!left?.ok || left.stdout.trim() === "") break;
        await new Promise((r) => setTimeout(r, 200));
      }
    }
    for (const { child } of [...children].reverse()) {
      try {
        child.kill("SIGTERM");
      } catch {
        // Already ended.
      }
      const ended = await Promise.race([
        child.status.then(() => true),
        new Promise<boolean>((r) => setTimeout(() => r(false), 10_000)),
      ]);
      if (!ended) {
        child.kill("SIGKILL");
        await child.status;
      }
    }
    children.length = 0;
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  };
  try {
    const mungeUid = Number((await output("id", ["-u", "munge"])).stdout.trim());
    const mungeGid = Number((await output("id", ["-g", "munge"])).stdout.trim());
    const munge = join(dir, "munge");
    await Deno.mkdir(munge, { mode: 0o755 });
    await Deno.chmod(munge, 0o755);
    await Deno.chown(munge, mungeUid, mungeGid);
    const key = join(munge, "munge.key");
    await Deno.writeFile(key, crypto.getRandomValues(new Uint8Array(1024)), { mode: 0o400 });
    await Deno.chown(key, mungeUid, mungeGid);
    const socket = join(munge, "munge.socket");
    const spawn = (name: string, command: string, args: string[], log: string) => {
      const child = new Deno.Command(command, {
        args,
        env,
        stdin: "null",
        stdout: "null",
        stderr: "null",
      }).spawn();
      children.push({ name, child, log });
      let exited = false;
      child.status.then(() => exited = true);
      return () => exited;
    };
    const mungeExited = spawn("munged", (await which("setpriv"))!, [
      "--reuid=munge",
      "--regid=munge",
      "--init-groups",
      (await which("munged"))!,
      "--foreground",
      `--key-file=${key}`,
      `--socket=${socket}`,
      `--pid-file=${join(munge, "munged.pid")}`,
      `--log-file=${join(munge, "munged.log")}`,
      `--seed-file=${join(munge, "munged.seed")}`,
    ], join(munge, "munged.log"));
    for (let i = 0; !await Deno.stat(socket).then(() => true, () => false); i++) {
      if (mungeExited() || i > 100) {
        throw new Error(`munged did not start:\n${await tail(join(munge, "munged.log"))}`);
      }
      await new Promise((r) => setTimeout(r, 100));
    }
    const host = (await output("hostname", ["-s"])).stdout.trim();
    const meminfo = (await output("cat", ["/proc/meminfo"])).stdout;
    const memKb = Number(/MemTotal:\s+(\d+)/.exec(meminfo)?.[1] ?? 1024 * 1024);
    const cpus = navigator.hardwareConcurrency;
    const [ctldPort, dPort] = await freePorts();
    for (const d of ["state", "spool", "log"]) await Deno.mkdir(join(dir, d));
    await Deno.writeTextFile(join(dir, "plugstack.conf"), "");
    await Deno.writeTextFile(
      conf,
      [
        "# A private single-node cluster for tests; everything lives in this folder.",
        "ClusterName=supernettest",
        `SlurmctldHost=${host}(127.0.0.1)`,
        `SlurmctldPort=${ctldPort}`,
        `SlurmdPort=${dPort}`,
        "SlurmUser=root",
        "SlurmdUser=root",
        "AuthType=auth/munge",
        `AuthInfo=socket=${socket}`,
        "CredType=cred/munge",
        `StateSaveLocation=${join(dir, "state")}`,
        `SlurmdSpoolDir=${join(dir, "spool")}`,
        `SlurmctldPidFile=${join(dir, "slurmctld.pid")}`,
        `SlurmdPidFile=${join(dir, "slurmd.pid")}`,
        `SlurmctldLogFile=${join(dir, "log", "slurmctld.log")}`,
        `SlurmdLogFile=${join(dir, "log", "slurmd.log")}`,
        `PlugStackConfig=${join(dir, "plugstack.conf")}`,
        "ProctrackType=proctrack/linuxproc",
        "TaskPlugin=task/none",
        "JobAcctGatherType=jobacct_gather/none",
        "AccountingStorageType=accounting_storage/none",
        "JobCompType=jobcomp/none",
        "MpiDefault=none",
        "SchedulerType=sched/backfill",
        "SelectType=select/cons_tres",
        "SelectTypeParameters=CR_Core",
        "ReturnToService=2",
        "MinJobAge=600",
        `NodeName=${host} NodeAddr=127.0.0.1 CPUs=${cpus} RealMemory=${
          Math.floor((memKb / 1024) * 0.9)
        } State=UNKNOWN`,
        `PartitionName=test Nodes=${host} Default=YES MaxTime=INFINITE State=UP`,
        "",
      ].join("\n"),
    );
    const ctldLog = join(dir, "log", "slurmctld.log");
    const dLog = join(dir, "log", "slurmd.log");
    const ctldExited = spawn(
      "slurmctld",
      (await which("slurmctld"))!,
      ["-D", "-f", conf],
      ctldLog,
    );
    const dExited = spawn("slurmd", (await which("slurmd"))!, ["-D", "-f", conf], dLog);
    for (let i = 0;; i++) {
      const sinfo = await output((await which("sinfo"))!, ["-h", "-o", "%T"], env);
      if (sinfo.ok && sinfo.stdout.trim() === "idle") break;
      if (ctldExited() || dExited() || mungeExited() || i > 150) {
        throw new Error(
          `the private Slurm cluster did not come up (sinfo: ${
            (sinfo.stdout + sinfo.stderr).trim()
          }):\nslurmctld: ${await tail(ctldLog)}\nslurmd: ${await tail(dLog)}`,
        );
      }
      await new Promise((r) => setTimeout(r, 200));
    }
    return { conf, dir, env, stop };
  } catch (e) {
    await stop();
    throw e;
  }
}

if (import.meta.main) {
  const reason = await clusterUnavailable();
  if (reason) {
    console.error(`error: ${reason}`);
    Deno.exit(1);
  }
  const cluster = await startCluster();
  console.log(
    `A private Slurm cluster is up. In another shell:\n  export SLURM_CONF=${cluster.conf}`,
  );
  console.log("Ctrl-C stops it and removes its folder.");
  let stopped = () => {};
  const wait = new Promise<void>((resolve) => stopped = resolve);
  Deno.addSignalListener("SIGINT", stopped);
  Deno.addSignalListener("SIGTERM", stopped);
  await wait;
  Deno.removeSignalListener("SIGINT", stopped);
  Deno.removeSignalListener("SIGTERM", stopped);
  await cluster.stop();
}
