/*
 * Runs one example in a child process of the examples runner: `node harness.mjs <example file>`
 * (with an IPC channel). The example's `listen(3000)` listens on a free port of 127.0.0.1 instead,
 * so that examples run side by side, and the runner is told `{ listening: [asked, actual] }`;
 * `{ ready: true }` once the example's module has run to its end (its top-level awaits included).
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

const file = resolve(process.argv[2])
if (file.endsWith('.cjs')) createRequire(import.meta.url)(file)
else await import(pathToFileURL(file).href)
process.send?.({ ready: true })
