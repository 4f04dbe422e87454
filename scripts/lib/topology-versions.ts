import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

/**
 * The code a rolling upgrade starts from, for `npm run topology:test`: v1 is the commit before the lean run (item 3's
 * workflow change, `LEAN_RUN_PATCH`), as it would have shipped with worker versioning — that commit's tree with the
 * `src/` changes of the commits titled "Worker versioning: …" applied on top (3-way, as each was made on later code). v2
 * is the checkout itself. Both are found in git history by commit subject, so a rebase does not break them; a shallow
 * clone has no history to find them in, and the topology says so.
 */
const ROOT = path.resolve(__dirname, '../..');

/** The subject of the commit v2 carries and v1 does not. */
export const UPGRADE_COMMIT_SUBJECT = 'Lean run (LEAN_RUN_PATCH)';
/** The subjects of the commits whose `src/` changes make a worker versioned. */
export const VERSIONING_COMMIT_SUBJECT = 'Worker versioning:';

export interface OldVersion {
  /** A folder holding the old code, its node_modules a link to the repository's. */
  dir: string;
  /** The commit the old code is (before the versioning changes applied to it). */
  sha: string;
  /** The versioning commits applied to it. */
  applied: string[];
  remove(): void;
}

/** Git's output as it is (a patch's last context line may be a lone space). */
const gitRaw = (args: string[], env: NodeJS.ProcessEnv = process.env, input?: string) =>
  execFileSync('git', args, { cwd: ROOT, encoding: 'utf8', env, input, stdio: ['pipe', 'pipe', 'pipe'], maxBuffer: 64 * 1024 * 1024 });
const git = (args: string[], env?: NodeJS.ProcessEnv, input?: string) => gitRaw(args, env, input).trim();

/** Commits of HEAD's history whose subject starts with `prefix`, oldest first. */
function commitsTitled(prefix: string): string[] {
  return git(['log', '--reverse', '--format=%H%x09%s', 'HEAD'])
    .split('\n')
    .filter((line) => line.split('\t')[1]?.startsWith(prefix))
    .map((line) => line.split('\t')[0]);
}

/** Writes the old version's files to a new temporary folder, through a temporary index (no worktree is registered). */
export function materialiseOldVersion(): OldVersion {
  const [upgrade] = commitsTitled(UPGRADE_COMMIT_SUBJECT);
  if (!upgrade) throw new Error(`no commit titled "${UPGRADE_COMMIT_SUBJECT}…" in HEAD's history (a shallow clone? fetch the history: git fetch --unshallow)`);
  const sha = git(['rev-parse', `${upgrade}^`]);
  const applied = commitsTitled(VERSIONING_COMMIT_SUBJECT);
  if (applied.length === 0) throw new Error(`no commit titled "${VERSIONING_COMMIT_SUBJECT}…" in HEAD's history`);

  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vg-topology-v1-'));
  const remove = () => fs.rmSync(dir, { recursive: true, force: true });
  try {
    const env = { ...process.env, GIT_INDEX_FILE: path.join(dir, '.index') };
    git(['read-tree', sha], env);
    for (const commit of applied) {
      // The service's code only (tests and docs of later commits do not belong to v1); --3way: a change made on later code.
      const patch = gitRaw(['diff', '--binary', `${commit}^`, commit, '--', 'src', ':(exclude)*.test.ts'], env);
      if (patch) git(['apply', '--cached', '--3way', '-'], env, patch);
    }
    git(['checkout-index', '--all', '--force', `--prefix=${path.join(dir, 'tree')}/`], env);
    fs.rmSync(env.GIT_INDEX_FILE, { force: true });
    fs.symlinkSync(path.join(ROOT, 'node_modules'), path.join(dir, 'tree', 'node_modules'));
  } catch (err) {
    remove();
    const { stderr } = err as { stderr?: string };
    throw new Error(`could not write the old version's code (${sha.slice(0, 12)} + ${applied.map((c) => c.slice(0, 12)).join(', ')}): ${stderr?.trim() || String(err)}`, { cause: err });
  }
  return { dir: path.join(dir, 'tree'), sha, applied, remove };
}
