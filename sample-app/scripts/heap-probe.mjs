// Loaded into a sample app server by the soak (scripts/soak.ts) through NODE_OPTIONS: every
// HEAP_PROBE_MS it collects garbage and prints the heap that survives, as one line
// `heap-probe {...}` on standard output; on SIGUSR2 it also writes a heap snapshot into
// HEAP_PROBE_DIR. Nothing of the app changes: the timer is unref'd, the flag is set at run time.
import path from 'node:path'
import { setFlagsFromString, writeHeapSnapshot } from 'node:v8'
import { runInNewContext } from 'node:vm'
import { isMainThread } from 'node:worker_threads'

setFlagsFromString('--expose-gc')
const gc = runInNewContext('gc')
const intervalMs = Number(process.env.HEAP_PROBE_MS ?? 30_000)
const directory = process.env.HEAP_PROBE_DIR ?? process.cwd()

function sample(label) {
  gc()
  gc() // a second pass collects what the first one's finalizers released
  const { heapUsed, external, arrayBuffers, rss } = process.memoryUsage()
  console.log(`heap-probe ${JSON.stringify({ label, time: Date.now(), heapUsed, external, arrayBuffers, rss })}`)
}

// NODE_OPTIONS' --import runs in worker threads too: only the main thread samples
if (isMainThread) {
  setInterval(() => sample('tick'), intervalMs).unref()
  process.on('SIGUSR2', () => {
    sample('snapshot')
    const file = writeHeapSnapshot(path.join(directory, `heap-${process.pid}-${Date.now()}.heapsnapshot`))
    console.log(`heap-probe-snapshot ${file}`)
  })
}
