/**
 * The code a result came from: what experiments record beside their numbers.
 *
 * @module
 */

/** `git describe --always --dirty` of the working tree, or "unknown" where git cannot say. */
export async function describeCommit(): Promise<string> {
  try {
    const out = await new Deno.Command("git", {
      args: ["describe", "--always", "--dirty"],
      stdout: "piped",
      stderr: "null",
    }).output();
    return out.success ? new TextDecoder().decode(out.stdout).trim() : "unknown";
  } catch {
    return "unknown";
  }
}
