import { setTimeout as sleep } from 'node:timers/promises'
import { openSse, type SseEvent } from './sse.js'

/**
 * A browser's EventSource, roughly: reads /events from one of the servers, and every so often
 * (a random time between `minMs` and `maxMs`) drops the connection and opens another, to a
 * server picked at random, with `Last-Event-ID` set to the id of the last event it received.
 * A server that is down (refused, no answer) is retried after 100 ms, maybe on the other one.
 * `from`: the Last-Event-ID of its first connection (default none: from now on).
 */
export interface ResumingClient {
  /** Every event received, over every connection, in the order received (the open one's included). */
  received(): SseEvent[]
  /** How many connections were opened. */
  connections(): number
  /** Drops the connection and stops reconnecting. */
  stop(): Promise<void>
}

export function resumingClient(
  servers: () => string[],
  { minMs = 100, maxMs = 1_000, from }: { minMs?: number; maxMs?: number; from?: string } = {},
): ResumingClient {
  const events: SseEvent[] = []
  let connections = 0
  let stopped = false
  let current: SseEvent[] = []
  const loop = (async () => {
    while (!stopped) {
      const urls = servers()
      const url = urls[Math.floor(Math.random() * urls.length)]
      const last = events.findLast((event) => event.id !== undefined)?.id ?? from
      let stream: Awaited<ReturnType<typeof openSse>> | undefined
      try {
        stream = await openSse(`${url}/events`, last === undefined ? {} : { 'Last-Event-ID': last })
      } catch {
        await sleep(100)
        continue
      }
      connections++
      current = stream.events
      const until = Date.now() + minMs + Math.random() * (maxMs - minMs)
      while (!stopped && Date.now() < until) await sleep(20)
      stream.close()
      events.push(...stream.events)
      current = []
    }
  })()
  return {
    received: () => [...events, ...current],
    connections: () => connections,
    async stop() {
      stopped = true
      await loop
    },
  }
}
