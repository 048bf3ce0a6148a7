import { probeNode, refreshTopology } from '../shared/cluster-health.js'
import { isCluster } from '../shared/redis.js'
import type { ParsedNotifierOptions } from './options.js'
import { slotMaster } from './shards.js'

/** How often a command still waiting for its reply is looked at (ms). */
const WATCH_EVERY_MS = 250
/** A command without a reply for its BLOCK plus this (or `timeoutMs` if longer) is logged as stalled (ms). */
const STALL_MARGIN_MS = 1_000
/** How often, at most, a subscription asks for the topology while its view and the app client's differ (ms). */
const REFRESH_EVERY_MS = 1_000

/**
 * A command abandoned because the node it waited on no longer serves its slot (a frozen master
 * whose replica was promoted): the caller sends it again, and node-redis sends it to the slot's
 * master now.
 */
export class MovedWhileWaiting extends Error {
  constructor(from: string, to: string, options?: { cause?: unknown }) {
    super(`express-redis-kit: ${from} no longer serves the slot (${to} does)`, options)
    this.name = 'MovedWhileWaiting'
  }
}

/**
 * Watches the commands of one stream subscription (durable, fan-out), which run on a connection of
 * its own. Its blocking reads wait up to 5 s for a message, and no command of node-redis has a
 * deadline once written: a node that stops answering (a frozen process, a partition) keeps the
 * connection open and looks like one with nothing to say. node-redis moves a slot to a promoted
 * replica only when a connection drops or a command meets MOVED, neither of which comes, so a
 * read would stay on the frozen master until it woke up, while the promoted one takes messages.
 *
 * While a command waits (checked every 250 ms), on a Cluster: the node of the key's slot is
 * probed through the app's client (see probeNode: a frozen master makes that client find the
 * promoted replica); when the app's client and this connection disagree on the slot's master,
 * both ask for the topology again (at most once a second); once this connection's topology gives
 * the slot to another node than the one the command waits on, the command is abandoned
 * ({@link MovedWhileWaiting}; its late reply, if any, is ignored) and the caller sends it again.
 * So a read follows a promotion within about a second of the app's client seeing it, and that is
 * at most about 2 s after the promotion. On a single Redis, and on a Cluster that does not move
 * the slot, it waits. A command with no reply past its BLOCK plus `timeoutMs` (at least 1 s) is
 * logged as a warning, once; so is a command abandoned.
 */
export class StallWatch {
  readonly #options: ParsedNotifierOptions
  readonly #key: string
  /** Names the subscription in warnings. */
  readonly #what: string
  readonly #cluster: boolean
  #refreshedAt = 0

  constructor(options: ParsedNotifierOptions, key: string, what: string) {
    this.#options = options
    this.#key = key
    this.#what = what
    this.#cluster = isCluster(options.client)
  }

  /**
   * Sends `command` (on `connection`, a duplicate of the app's client) and resolves or rejects with
   * its outcome, or rejects with {@link MovedWhileWaiting} as soon as the slot's master is another
   * node than the one it was sent to. `blockMs`: how long Redis may rightly hold the reply (a
   * blocking read's BLOCK).
   */
  run<T>(connection: unknown, command: () => Promise<T>, blockMs = 0): Promise<T> {
    const sentTo = this.#cluster ? slotMaster(connection, this.#key)?.address : undefined
    const startedAt = Date.now()
    // generous: a loaded machine answers late now and then, and only the warning depends on it
    const expectedMs = blockMs + Math.max(this.#options.timeoutMs, STALL_MARGIN_MS)
    const movedTo = () => {
      const now = sentTo === undefined ? undefined : slotMaster(connection, this.#key)?.address
      return now !== undefined && now !== sentTo ? now : undefined
    }
    return new Promise<T>((resolve, reject) => {
      let settled = false
      let stallLogged = false
      const settle = () => {
        settled = true
        clearInterval(timer)
      }
      const abandon = (to: string, cause?: unknown) => {
        settle()
        this.#options.logger.warn(
          `express-redis-kit notifier: ${this.#what}: ${sentTo} stopped serving the slot of ${this.#key} while a ` +
            `command waited ${Date.now() - startedAt} ms for its reply; sent again to ${to}`,
        )
        reject(new MovedWhileWaiting(sentTo as string, to, { cause }))
      }
      const timer = setInterval(() => {
        const waited = Date.now() - startedAt
        if (!stallLogged && waited > expectedMs) {
          stallLogged = true
          this.#options.logger.warn(
            `express-redis-kit notifier: ${this.#what}: no reply from ${sentTo ?? 'Redis'} for ${waited} ms ` +
              `(expected within ${expectedMs} ms)` +
              (this.#cluster ? "; it is sent again once another node serves the key's slot" : '; waiting for Redis'),
          )
        }
        // a single Redis: nothing more to do than wait
        if (!this.#cluster) {
          if (stallLogged) clearInterval(timer)
          return
        }
        const to = movedTo()
        if (to !== undefined) abandon(to)
        else this.#follow(connection)
      }, WATCH_EVERY_MS)
      timer.unref()
      command().then(
        (reply) => {
          if (settled) return
          settle()
          resolve(reply)
        },
        (error: unknown) => {
          if (settled) return
          // node-redis closed the connection of a node that left the topology under the command
          const to = movedTo()
          if (to !== undefined) abandon(to, error)
          else {
            settle()
            reject(error)
          }
        },
      )
    })
  }

  /**
   * Keeps this connection's view of the key's slot in step with the app client's: both ask for the
   * topology again when they differ (each from another master than the one it believes in), and
   * the slot's master is probed through the app's client while they agree.
   */
  #follow(connection: unknown): void {
    const theirs = this.#options.client
    const ours = slotMaster(connection, this.#key)
    const expected = slotMaster(theirs, this.#key)
    if (ours?.address !== undefined && expected?.address !== undefined && ours.address !== expected.address) {
      const now = Date.now()
      if (now - this.#refreshedAt < REFRESH_EVERY_MS) return
      this.#refreshedAt = now
      if (ours.client) refreshTopology(connection, ours.client)
      if (expected.client) refreshTopology(theirs, expected.client)
    } else if (expected?.client) {
      probeNode(theirs, expected.client, this.#options.timeoutMs)
    }
  }
}
