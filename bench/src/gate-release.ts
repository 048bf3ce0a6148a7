/**
 * The two builds the regression gate (src/gate.ts) compares: the last release of the package,
 * checked out in a temporary git worktree and built there, and this tree's package, built in
 * place. The release is found without being told: the tag `v<version>` or
 * `express-redis-kit@<version>` of the latest version in the package's CHANGELOG.md, else the
 * oldest commit whose package.json has that version (the commit that set it: `changeset version`
 * writes both). BENCH_GATE_BASE=<rev> overrides it.
 */
import { execFile } from 'node:child_process'
import { mkdtemp, readFile, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { log } from './harness.js'

const execFileAsync = promisify(execFile)
const PACKAGE_DIR = 'packages/express-redis-kit'
const ENTRY = `${PACKAGE_DIR}/dist/esm/index.js`

/** Runs a command; its output, or an error with its stderr. */
async function sh(cwd: string, command: string, ...args: string[]): Promise<string> {
  try {
    const { stdout } = await execFileAsync(command, args, { cwd, maxBuffer: 64 * 1024 * 1024 })
    return stdout.trim()
  } catch (error) {
    const { stderr, stdout } = error as { stderr?: string; stdout?: string }
    throw new Error(
      `${command} ${args.join(' ')} failed in ${cwd}:\n${(stderr || stdout || String(error)).slice(-3000)}`,
    )
  }
}

export interface Build {
  /** For the report: `0.2.0 (49c1046)`, `this tree (f84359d)`. */
  label: string
  /** The built ESM entry point, to import by path. */
  entry: string
}

/** The repository's root. */
export const repositoryRoot = (from: string): Promise<string> => sh(from, 'git', 'rev-parse', '--show-toplevel')

/** The versions the CHANGELOG lists, latest first (its `## x.y.z` headings). */
async function changelogVersions(root: string): Promise<string[]> {
  const changelog = await readFile(join(root, PACKAGE_DIR, 'CHANGELOG.md'), 'utf8')
  const versions = [...changelog.matchAll(/^## (\d+\.\d+\.\d+\S*)\s*$/gm)].map((match) => match[1]!)
  if (versions.length === 0) throw new Error(`${PACKAGE_DIR}/CHANGELOG.md lists no version (no "## x.y.z" heading)`)
  return versions
}

const commitOf = async (root: string, rev: string): Promise<string | undefined> =>
  sh(root, 'git', 'rev-parse', '--quiet', '--verify', `${rev}^{commit}`).catch(() => undefined)

/** The oldest commit whose package.json has `version` (the commit that set it), if any. */
async function versionCommit(root: string, version: string): Promise<string | undefined> {
  const field = `"version": "${version}"`
  const touching = await sh(
    root,
    'git',
    'log',
    '--reverse',
    '--format=%H',
    `-S${field}`,
    '--',
    `${PACKAGE_DIR}/package.json`,
  )
  for (const commit of touching.split('\n').filter(Boolean)) {
    const manifest = await sh(root, 'git', 'show', `${commit}:${PACKAGE_DIR}/package.json`)
    if ((JSON.parse(manifest) as { version?: string }).version === version) return commit
  }
  return undefined
}

export interface Release {
  commit: string
  /** For the table: `0.2.0 (49c1046)`. */
  label: string
  /** How it was found. */
  found: string
}

/**
 * The commit of the last release, and how it was found: BENCH_GATE_BASE if set; else the latest
 * of the CHANGELOG's versions that has a tag (a repository that tags its releases has not
 * released an untagged version); else, with no tag at all, the latest version whose bump is in
 * a commit before HEAD (one not committed yet, or committed in HEAD itself, as `changeset
 * version` leaves it for the release being prepared, is the one being released).
 */
export async function findRelease(root: string): Promise<Release> {
  const short = (commit: string) => commit.slice(0, 7)
  const override = process.env.BENCH_GATE_BASE
  if (override) {
    const commit = await commitOf(root, override)
    if (!commit) throw new Error(`BENCH_GATE_BASE: no commit ${override} in this repository`)
    return { commit, label: `${override} (${short(commit)})`, found: 'BENCH_GATE_BASE' }
  }
  const versions = await changelogVersions(root)
  for (const version of versions) {
    for (const tag of [`v${version}`, `express-redis-kit@${version}`]) {
      const commit = await commitOf(root, `refs/tags/${tag}`)
      if (commit) return { commit, label: `${version} (${short(commit)})`, found: `the tag ${tag}` }
    }
  }
  const head = await commitOf(root, 'HEAD')
  const skipped: string[] = []
  for (const version of versions) {
    const commit = await versionCommit(root, version)
    if (commit && commit !== head) {
      const after = skipped.length ? ` (${skipped.join(', ')} being released)` : ''
      return {
        commit,
        label: `${version} (${short(commit)})`,
        found: `the CHANGELOG's latest version${after}, ${version}, at the commit that set it in ${PACKAGE_DIR}/package.json (no tags)`,
      }
    }
    skipped.push(version)
  }
  throw new Error(
    `no released version found (CHANGELOG versions ${skipped.join(', ')}: no tag v<version> or express-redis-kit@<version>, ` +
      'no commit before HEAD that sets it): set BENCH_GATE_BASE=<rev>',
  )
}

/**
 * Builds the package of `release` in a temporary worktree; `onDispose` gets, before anything is
 * created, what removes the worktree.
 */
export async function buildRelease(
  root: string,
  release: Release,
  onDispose: (dispose: () => Promise<void>) => void,
): Promise<Build> {
  const dir = await mkdtemp(join(tmpdir(), 'erk-gate-'))
  const tree = join(dir, 'tree')
  onDispose(async () => {
    const removed = await sh(root, 'git', 'worktree', 'remove', '--force', tree).then(
      () => true,
      () => false,
    )
    await rm(dir, { recursive: true, force: true })
    // A worktree half made (interrupted) is only known to git: forget it now that it is gone.
    if (!removed) await sh(root, 'git', 'worktree', 'prune').catch(() => {})
  })
  log(`release ${release.label}: checking out in ${tree}`)
  await sh(root, 'git', 'worktree', 'add', '--detach', tree, release.commit)
  log('release: pnpm install (the package only, from the store when it can)')
  await sh(tree, 'pnpm', 'install', '--prefer-offline', '--frozen-lockfile', '--filter', `./${PACKAGE_DIR}`)
  log('release: building the package')
  await sh(join(tree, PACKAGE_DIR), 'pnpm', 'run', 'build')
  return { label: release.label, entry: join(tree, ENTRY) }
}

/** Builds this tree's package in place. */
export async function buildThisTree(root: string): Promise<Build> {
  const head = (await sh(root, 'git', 'rev-parse', '--short=7', 'HEAD')).trim()
  const changed = await sh(root, 'git', 'status', '--porcelain', '--', PACKAGE_DIR)
  log('this tree: building the package')
  await sh(join(root, PACKAGE_DIR), 'pnpm', 'run', 'build')
  return { label: `this tree (${head}${changed ? ' + uncommitted changes' : ''})`, entry: join(root, ENTRY) }
}
