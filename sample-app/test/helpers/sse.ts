import http from 'node:http'

export interface SseEvent {
  event: string
  data: string
  id?: string
}

/** A Server-Sent Events client reading a stream as it arrives. */
export interface SseClient {
  status: number
  /** Everything received so far. */
  text(): string
  events: SseEvent[]
  /** Resolves with the first event (received so far or later) matching `match`; rejects after `withinMs`. */
  waitFor(match: (event: SseEvent) => boolean, withinMs?: number, what?: string): Promise<SseEvent>
  close(): void
}

/** Opens `url` and resolves once the stream's `: connected` comment has arrived. */
export function openSse(url: string, headers: Record<string, string> = {}): Promise<SseClient> {
  return new Promise((resolve, reject) => {
    const req = http.get(url, { headers: { Accept: 'text/event-stream', ...headers } })
    const timer = setTimeout(() => {
      req.destroy()
      reject(new Error(`no ': connected' from ${url} within 10 s`))
    }, 10_000)
    req.once('error', (error) => {
      clearTimeout(timer)
      reject(error)
    })
    req.once('response', (res) => {
      res.setEncoding('utf8')
      let received = ''
      let pending = ''
      const events: SseEvent[] = []
      const listeners = new Set<() => void>()
      const client: SseClient = {
        status: res.statusCode ?? 0,
        text: () => received,
        events,
        waitFor(match, withinMs = 10_000, what = 'an event') {
          return new Promise((resolveEvent, rejectEvent) => {
            const check = () => {
              const found = events.find(match)
              if (!found) return
              listeners.delete(check)
              clearTimeout(deadline)
              resolveEvent(found)
            }
            const deadline = setTimeout(() => {
              listeners.delete(check)
              rejectEvent(new Error(`no ${what} from ${url} within ${withinMs} ms; received:\n${received}`))
            }, withinMs)
            listeners.add(check)
            check()
          })
        },
        close: () => req.destroy(),
      }
      if (res.statusCode !== 200) {
        clearTimeout(timer)
        res.resume()
        reject(new Error(`${url} answered ${res.statusCode}`))
        return
      }
      res.on('data', (chunk: string) => {
        received += chunk
        pending += chunk
        let end = pending.indexOf('\n\n')
        while (end >= 0) {
          const block = pending.slice(0, end)
          pending = pending.slice(end + 2)
          end = pending.indexOf('\n\n')
          const fields = new Map<string, string>()
          for (const line of block.split('\n')) {
            if (line.startsWith(':')) continue
            const colon = line.indexOf(':')
            const name = colon < 0 ? line : line.slice(0, colon)
            const value = colon < 0 ? '' : line.slice(colon + 1).replace(/^ /, '')
            fields.set(name, fields.has(name) && name === 'data' ? `${fields.get(name)}\n${value}` : value)
          }
          if (fields.has('data')) {
            const id = fields.get('id')
            events.push({ event: fields.get('event') ?? 'message', data: fields.get('data')!, ...(id ? { id } : {}) })
          }
        }
        for (const listener of [...listeners]) listener()
        if (received.includes(': connected')) {
          clearTimeout(timer)
          resolve(client)
        }
      })
      res.on('error', () => {})
    })
  })
}
