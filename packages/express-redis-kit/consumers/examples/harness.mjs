/*
 * Runs one example in a child process of the examples runner: `node harness.mjs <example file>`
 * (with an IPC channel). The example's `listen(3000)` listens on a free port of 127.0.0.1 instead,
 * so that examples run side by side, and the runner is told `{ listening: [asked, actual] }`;
 * `{ ready: true }` once the example's module has run to its end (its top-level awaits included)
 * and, unless EXAMPLE_REDIS is `down`, every node-redis connect() it started has settled.
 * A throw there, an uncaught exception or an unhandled rejection ends the process, as it would
 * the reader's (Node's default); the runner reports it with the output.
 */
import { createRequire } from 'node:module'
import net from 'node:net'
import { resolve } from 'node:path'
import { pathToFileURL } from 'node:url'

const listen = net.Server.prototype.listen
net.Server.prototype.listen = function listenOnAFreePort(...args) {
  let asked = 0
  if (typeof args[0] === 'number' || (typeof args[0] === 'string' && /^\d+$/.test(args[0]))) {
    asked = Number(args[0])
    args[0] = 0
    if (typeof args[1] === 'string') args[1] = '127.0.0.1'
  } else if (typeof args[0] === 'object' && args[0] !== null && 'port' in args[0]) {
    asked = Number(args[0].port)
    args[0] = { ...args[0], port: 0, host: '127.0.0.1' }
  }
  this.once('listening', () => process.send?.({ listening: [asked, this.address().port] }))
  return listen.apply(this, args)
}

// With Redis up, `ready` waits for every connect() the example started (awaited or not), so that
// its checks meet a connected client, as a reader's requests would a moment after the start.
const connecting = []
if (process.env.EXAMPLE_REDIS !== 'down') {
  const redis = await import('redis')
  for (const client of [redis.createClient(), redis.createCluster({ rootNodes: [{ url: 'redis://127.0.0.1:1' }] })]) {
    let prototype = client
    while (prototype && !Object.hasOwn(prototype, 'connect')) prototype = Object.getPrototypeOf(prototype)
    const connect = prototype.connect
    prototype.connect = function trackedConnect(...args) {
      const connected = connect.apply(this, args)
      connecting.push(connected.catch(() => {}))
      return connected
    }
  }
}

const file = resolve(process.argv[2])
if (file.endsWith('.cjs')) createRequire(import.meta.url)(file)
else await import(pathToFileURL(file).href)
await Promise.all(connecting)
process.send?.({ ready: true })
