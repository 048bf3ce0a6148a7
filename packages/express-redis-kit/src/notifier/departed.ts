import type { PubSubClient } from './shards.js'

/**
 * How long after a departed node answers again its channels get onReconnect (ms): what it held
 * is run in its first moments awake and reaches the new master's subscribers within milliseconds.
 */
const SETTLE_MS = 1_000

interface DepartedNode {
  /** Our connection to it, waiting for its first reply. */
  probe: { destroy(): void }
  /** The channels that left it. */
  names: Set<string>
  /** When it answered again. */
  answeredAt?: number
}

/** What a node pub/sub connection of node-redis gives for a probe of its node (checked before use). */
type Duplicable = PubSubClient & {
  options?: { socket?: object }
  duplicate?(overrides: object): {
    on(event: 'error', listener: () => void): unknown
    connect(): Promise<unknown>
    destroy(): void
  }
}

/**
 * Nodes that sharded channels left without handing them over (node-redis dropped the node from
 * its topology: it died, or it froze and its replica was promoted). A frozen master still holds
 * what publishers sent it while it was frozen (the SPUBLISHes that timed out for them): when it
 * wakes up it runs them before it learns that it is a replica, and passes them to the other nodes
 * of its shard, so the promoted master delivers them to its subscribers, after messages published
 * later. Each such node is watched through one connection of ours, which it answers only once
 * awake: once it did, its channels are due for another onReconnect (after SETTLE_MS, when what it
 * held has been delivered), so an app that reloads its state there does so after the stale
 * messages. A node that refuses the connection (dead: what it held is gone) is forgotten. One
 * that was not frozen answers at once and costs an onReconnect more than needed: conservative.
 */
export class DepartedNodes {
  readonly #nodes = new Map<string, DepartedNode>()

  /** Watches the node of `client` (our pub/sub connection to it) for the channels `names` that left it. */
  watch(client: PubSubClient, names: Iterable<string>): void {
    const node = client as Duplicable
    const socket = (node.options?.socket ?? {}) as { host?: string; port?: number; path?: string }
    const address = socket.path ?? `${socket.host}:${socket.port}`
    const watched = this.#nodes.get(address)
    if (watched !== undefined) {
      for (const name of names) watched.names.add(name)
      return
    }
    if (typeof node.duplicate !== 'function') return
    // One attempt: a node that refuses it is down, and then holds nothing. Without the cluster's
    // client-side cache, which closing this connection would clear.
    const probe = node.duplicate({ socket: { ...socket, reconnectStrategy: false }, clientSideCache: undefined })
    probe.on('error', () => {})
    const departed: DepartedNode = { probe, names: new Set(names) }
    this.#nodes.set(address, departed)
    probe.connect().then(
      () => {
        departed.answeredAt = Date.now()
        probe.destroy()
      },
      () => {
        if (this.#nodes.get(address) === departed) this.#nodes.delete(address)
        probe.destroy()
      },
    )
  }

  /** The channels of the nodes that answered again at least SETTLE_MS ago; each node is then forgotten. */
  due(): string[] {
    const now = Date.now()
    const names: string[] = []
    for (const [address, node] of this.#nodes) {
      if (node.answeredAt === undefined || now - node.answeredAt < SETTLE_MS) continue
      this.#nodes.delete(address)
      names.push(...node.names)
    }
    return names
  }

  close(): void {
    for (const node of this.#nodes.values()) node.probe.destroy()
    this.#nodes.clear()
  }
}
