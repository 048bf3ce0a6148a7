/*
 * The code examples of the documents users read, as the examples runner (consumers/examples.mjs)
 * runs them. Every fenced block whose language is not one of NOT_PROGRAMS (shell, YAML, JSON, plain
 * text: the language says it is not a program) must be preceded by a marker, an HTML comment
 * (invisible on GitHub) on the line right before its fence:
 *
 *   <!-- example: rate-limit               a unique name, [a-z0-9-]
 *   continues: setup                       optional: this block runs after that one (its code first)
 *   express: 4, 5                          optional (default 4, 5); anything else says why: `5 (reason)`
 *   redis: single                          optional: single (default), cluster, down (Redis unreachable), none
 *                                          (express and redis: those of the example continued, unless given)
 *   check: GET /api -> 200, ratelimit-policy
 *   -->                                    (check: repeatable, in order; see checks.mjs)
 *
 * or `<!-- example: NAME; not run: REASON -->` for a block that is not a program (an output, a
 * signature). A block without a marker, a marker without a block, an unknown field, a name used
 * twice or a `continues` that names no earlier example is an error: no example escapes unnoticed.
 * Pure functions: no network, no Redis (the package's test suite runs `problems()` on every push).
 */
import { readFile } from 'node:fs/promises'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'

/** The documents whose examples run, from the repository root. */
export const DOCUMENTS = ['README.md', 'packages/express-redis-kit/README.md', 'docs/migrating.md']

/** Languages that mark a block as not a program here: shell sessions, configuration, output. */
export const NOT_PROGRAMS = new Set(['sh', 'bash', 'shell', 'console', 'yaml', 'yml', 'json', 'text', 'promql'])

/** Languages the runner runs: TypeScript (type-checked, strict) and JavaScript (ESM, or CommonJS with `require`). */
const PROGRAMS = new Set(['ts', 'typescript', 'js', 'javascript'])

const FIELDS = new Set(['continues', 'express', 'redis', 'check', 'not run'])
const REDIS_MODES = new Set(['single', 'cluster', 'down', 'none'])

export const repositoryRoot = join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..', '..')

/**
 * The fenced blocks of one Markdown document with their markers:
 * `{ file, line, lang, code, marker: { name, continues, express, redis, checks, notRun } | undefined, problems }`.
 */
export function blocksOf(markdown, file) {
  const lines = markdown.split('\n')
  const blocks = []
  for (let i = 0; i < lines.length; i++) {
    const open = /^(\s*)(`{3,})(\S*)\s*$/.exec(lines[i])
    if (!open) continue
    const [, indent, fence, lang] = open
    let end = i + 1
    while (end < lines.length && !new RegExp(`^\\s*${fence}\\s*$`).test(lines[end])) end++
    const code = lines
      .slice(i + 1, end)
      .map((line) => (line.startsWith(indent) ? line.slice(indent.length) : line.trimStart()))
      .join('\n')
    const block = { file, line: i + 1, lang: lang.toLowerCase(), code: `${code}\n`, marker: undefined, problems: [] }
    const comment = markerBefore(lines, i)
    if (comment) block.marker = parseMarker(comment.text, block)
    blocks.push(block)
    i = end
  }
  return blocks
}

/** The `<!-- example: ... -->` comment that ends on the line right before line `index`, if any. */
function markerBefore(lines, index) {
  const last = index - 1
  if (last < 0 || !/-->\s*$/.test(lines[last])) return undefined
  let first = last
  while (first >= 0 && !lines[first].includes('<!--')) first--
  if (first < 0) return undefined
  const text = lines
    .slice(first, last + 1)
    .join('\n')
    .replace(/^\s*<!--\s*/, '')
    .replace(/\s*-->\s*$/, '')
  return /^example\s*:/.test(text) ? { text, line: first + 1 } : undefined
}

/** Parses a marker's text (`example: name` then `field: value` lines). */
export function parseMarker(text, block) {
  const [head, ...rest] = text.split('\n')
  const [nameField, ...inline] = head.split(';')
  const marker = {
    name: nameField.replace(/^example\s*:\s*/, '').trim(),
    continues: undefined,
    express: undefined,
    expressReason: undefined,
    redis: undefined,
    checks: [],
    notRun: undefined,
  }
  if (!/^[a-z0-9][a-z0-9-]*$/.test(marker.name))
    block.problems.push(`the example name "${marker.name}" is not [a-z0-9-]`)
  for (const raw of [...inline, ...rest]) {
    const line = raw.trim()
    if (line === '') continue
    const colon = line.indexOf(':')
    const field = colon === -1 ? line : line.slice(0, colon).trim()
    const value = colon === -1 ? '' : line.slice(colon + 1).trim()
    if (!FIELDS.has(field)) {
      block.problems.push(`unknown marker field "${field}" (known: ${[...FIELDS].join(', ')})`)
      continue
    }
    if (field === 'continues') marker.continues = value
    else if (field === 'check') marker.checks.push(value)
    else if (field === 'not run') {
      if (value === '') block.problems.push('`not run:` needs a reason')
      marker.notRun = value
    } else if (field === 'redis') {
      if (!REDIS_MODES.has(value)) block.problems.push(`redis: "${value}" is not one of ${[...REDIS_MODES].join(', ')}`)
      marker.redis = value
    } else if (field === 'express') {
      const match = /^([45](?:\s*,\s*[45])?)\s*(?:\((.+)\))?$/.exec(value)
      if (!match) {
        block.problems.push(`express: "${value}" is not "4, 5", "4 (reason)" or "5 (reason)"`)
        continue
      }
      marker.express = [...new Set(match[1].split(',').map((major) => major.trim()))].sort()
      marker.expressReason = match[2]
      if (marker.express.length < 2 && !marker.expressReason)
        block.problems.push(`express: ${value} runs on one major only: say why, e.g. "5 (async handlers)"`)
    }
  }
  return marker
}

/** Reads the documents (paths from the repository root) and returns their blocks. */
export async function readExamples(root = repositoryRoot, documents = DOCUMENTS) {
  const blocks = []
  for (const file of documents) blocks.push(...blocksOf(await readFile(join(root, file), 'utf8'), file))
  return blocks
}

/** Every problem with the examples of these blocks, as `file:line: message` lines (empty: all good). */
export function problems(blocks) {
  const found = []
  const names = new Map()
  for (const block of blocks) {
    const where = `${block.file}:${block.line}`
    for (const problem of block.problems) found.push(`${where}: ${problem}`)
    if (!block.marker) {
      if (!NOT_PROGRAMS.has(block.lang))
        found.push(
          `${where}: a \`${block.lang || 'unlabelled'}\` block without an <!-- example: name --> marker ` +
            `(every program runs in CI; an output or a signature says \`not run: reason\`)`,
        )
      continue
    }
    if (!PROGRAMS.has(block.lang) && !block.marker.notRun)
      found.push(`${where}: only ts and js blocks run; mark this \`${block.lang}\` block \`not run: reason\``)
    if (names.has(block.marker.name))
      found.push(`${where}: the example name "${block.marker.name}" is used at ${names.get(block.marker.name)} too`)
    names.set(block.marker.name, where)
  }
  for (const block of blocks) {
    const continues = block.marker?.continues
    if (continues === undefined) continue
    const target = blocks.find((other) => other.marker?.name === continues)
    if (!target) found.push(`${block.file}:${block.line}: continues "${continues}", which no example is named`)
    else if (target.marker.notRun)
      found.push(`${block.file}:${block.line}: continues "${continues}", which does not run`)
    else if (target.lang !== block.lang)
      found.push(`${block.file}:${block.line}: continues "${continues}", a \`${target.lang}\` block`)
  }
  return found
}

/** The examples that run: `{ name, file, line, lang, code (the continued blocks' code first), segments, ...marker }`. */
export function programs(blocks) {
  const byName = new Map(blocks.filter((block) => block.marker).map((block) => [block.marker.name, block]))
  const chain = (block, seen = new Set()) => {
    if (seen.has(block.marker.name)) throw new Error(`${block.file}:${block.line}: continues itself`)
    seen.add(block.marker.name)
    const parent = block.marker.continues === undefined ? undefined : byName.get(block.marker.continues)
    return parent ? [...chain(parent, seen), block] : [block]
  }
  return blocks
    .filter((block) => block.marker && !block.marker.notRun)
    .map((block) => {
      const parts = chain(block)
      // redis and express are inherited from the example continued, unless given
      const given = (field) => parts.findLast((part) => part.marker[field] !== undefined)?.marker[field]
      return {
        ...block.marker,
        redis: given('redis') ?? 'single',
        express: given('express') ?? ['4', '5'],
        expressReason: block.marker.express ? block.marker.expressReason : given('expressReason'),
        file: block.file,
        line: block.line,
        lang: block.lang === 'typescript' ? 'ts' : block.lang === 'javascript' ? 'js' : block.lang,
        code: parts.map((part) => part.code).join('\n'),
        // where each line of `code` comes from: [document, its first line, how many lines]
        segments: parts.map((part) => [part.file, part.line + 1, part.code.split('\n').length]),
      }
    })
}
