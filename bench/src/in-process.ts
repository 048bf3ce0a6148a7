/**
 * Side-by-side CPU cost of Express apps in one process: requests built in memory
 * (src/callgrind.ts's sendInMemory, no HTTP parsing or socket I/O), a real Redis. The variants
 * take turns in short batches, many rounds, in a rotating order, and each round's CPU time per
 * request (process.cpuUsage) is compared with the reference variant's in the same round: what
 * the machine's load does to one batch it does to its neighbours, and the median of the
 * per-round ratios is what is reported, with its spread.
 */
import { readFileSync } from 'node:fs'
import { type Handler, sendInMemory, sendMany } from './callgrind.js'
import { median } from './harness.js'

export interface Variant {
  name: string
  app: Handler
  path: string
  headers?: Record<string, string>
  /** Checks a response (e.g. a cache hit); throws when it is not what the variant must measure. */
  check?: (status: number, header: (name: string) => unknown) => void
}

export interface Comparison {
  name: string
  /** Median CPU µs per request over the rounds. */
  cpuUs: number
  /** Median, lowest and highest of the per-round ratios to the reference variant. */
  ratio: number
  low: number
  high: number
}

const cpuNow = (): number => {
  const { user, system } = process.cpuUsage()
  return user + system
}

const SCHEDSTAT = `/proc/self/task/${process.pid}/schedstat`
/**
 * The main thread's time on a CPU (Linux's schedstat, nanoseconds, as µs), or NaN where there is
 * no such file. process.cpuUsage also counts V8's compiler and garbage-collector threads, whose
 * work lands in whichever batch is running: on this machine that doubled the spread of the
 * per-round ratios of the same code. (process.threadCpuUsage only comes with Node 23.9.)
 */
const mainThreadNow = (): number => {
  try {
    return Number(readFileSync(SCHEDSTAT, 'latin1').split(' ')[0]) / 1000
  } catch {
    return Number.NaN
  }
}

/** CPU µs per call: the whole process's (user + system, every thread) and the main thread's. */
export interface CpuPerCall {
  process: number
  mainThread: number
}

/** One request of `variant`, checked (an error if the answer is not what the variant must measure). */
export function requestOf(variant: Variant): () => Promise<void> {
  return async () => {
    const res = await sendInMemory(variant.app, 'GET', variant.path, variant.headers)
    variant.check?.(res.statusCode, (name) => res.getHeader(name))
    if (res.statusCode !== 200 && !variant.check) throw new Error(`${variant.name}: answered ${res.statusCode}`)
  }
}

/** CPU time per call over `count` calls of `operation`, 20 in flight. */
export async function cpuPerOperation(operation: () => Promise<void>, count: number): Promise<CpuPerCall> {
  const started = cpuNow()
  const mainStarted = mainThreadNow()
  await sendMany(count, 20, operation)
  return { process: (cpuNow() - started) / count, mainThread: (mainThreadNow() - mainStarted) / count }
}

const batch = async (variant: Variant, requests: number): Promise<number> =>
  (await cpuPerOperation(requestOf(variant), requests)).process

/** Runs `rounds` rounds of `requests` requests per variant (after one warm-up round); `variants[0]` is the reference. */
export async function compare(variants: Variant[], rounds: number, requests: number): Promise<Comparison[]> {
  for (const variant of variants) await batch(variant, requests) // warm-up: JIT, connections
  const perRound: number[][] = variants.map(() => [])
  for (let round = 0; round < rounds; round++) {
    const order = variants.map((_, i) => (i + round) % variants.length)
    for (const i of order) perRound[i]!.push(await batch(variants[i]!, requests))
  }
  const reference = perRound[0]!
  return variants.map((variant, i) => {
    const ratios = perRound[i]!.map((cpu, round) => cpu / reference[round]!)
    return {
      name: variant.name,
      cpuUs: median(perRound[i]!),
      ratio: median(ratios),
      low: Math.min(...ratios),
      high: Math.max(...ratios),
    }
  })
}

/** A Markdown table of a comparison. */
export function table(comparisons: Comparison[], referenceLabel: string): string[] {
  return [
    `| variant | CPU µs / request (median) | vs ${referenceLabel} (median of rounds) | lowest round | highest round |`,
    '|---|--:|--:|--:|--:|',
    ...comparisons.map(
      ({ name, cpuUs, ratio, low, high }) =>
        `| ${name} | ${cpuUs.toFixed(1)} | ${ratio.toFixed(3)}x | ${low.toFixed(3)}x | ${high.toFixed(3)}x |`,
    ),
  ]
}
