/** The IPC messages between src/local-cache.ts and its workers (src/local-cache-worker.ts). */

/** One write of the coherence run: key `key` got `version`; `invalidateTags` was called at `calledAt` and resolved at `resolvedAt` (epoch ms). */
export interface WriteLog {
  key: number
  version: number
  calledAt: number
  resolvedAt: number
}

export type WorkerCommand =
  | { type: 'read'; seconds: number }
  | { type: 'judge'; writes: WriteLog[] }
  | { type: 'write'; seconds: number; rate: number }
  | { type: 'set'; seconds: number; rate: number }
  | { type: 'stop' }

/** A reader's reads, judged against the writer's log. */
export interface ReaderReport {
  type: 'judged'
  reads: number
  localHits: number
  /** Reads that started after a write of their key resolved and returned an older version. */
  staleReads: number
  /** Of those, the local hits. */
  staleLocal: number
  /** Per write (the log's order): how long after it resolved this reader last served an older version (ms), -1 if never. */
  staleness: number[]
}

export type WorkerMessage =
  | { type: 'ready' }
  | { type: 'read-done' }
  | ReaderReport
  | { type: 'written'; writes: WriteLog[] }
  | { type: 'set-done'; sent: number }
