/**
 * The git commit sinal is built from, resolved at bundle time (a Bun macro: also when running
 * from source, at load): SINAL_COMMIT when set (a Docker build has no .git), else the checkout's
 * HEAD, else "unknown".
 */
export function gitCommit(): string {
  const given = process.env.SINAL_COMMIT;
  if (given !== undefined && /^[0-9a-f]{4,40}$/.test(given)) return given;
  try {
    const result = Bun.spawnSync(["git", "rev-parse", "--short=12", "HEAD"], { cwd: import.meta.dir, stderr: "ignore" });
    const commit = result.stdout.toString().trim();
    return result.exitCode === 0 && /^[0-9a-f]+$/.test(commit) ? commit : "unknown";
  } catch {
    return "unknown";
  }
}
