import { clusterSlot, type NodeClient } from '../shared/cluster-health.js'

/*
 * Where node-redis's cluster keeps a sharded subscription: each master's own pub/sub connection
 * (`master.pubSub.client`) holds the listeners of the channels of its slots. What the notifier
 * reads of it (node-redis 5 and 6; internal, so every step is optional).
 */

/** The (internal) event node-redis 5 and 6 clusters emit when they move pub/sub listeners to other nodes. */
export const RESUBSCRIBE_EVENT = '__resubscribeListeners'

/** A node's sharded pub/sub connection in node-redis's cluster. */
export type PubSubClient = NodeClient & {
  on(event: 'sharded-channel-moved', listener: (channel: string) => void): unknown
  on(event: 'reconnecting' | 'ready', listener: () => void): unknown
  getPubSubListeners(type: 'SHARDED'): Map<string, unknown>
  /** node-redis's command queue of the connection (internal; checked when present). */
  _getQueue?: () => { isEmpty(): boolean }
}

/** What node-redis's cluster shows of its nodes. */
interface ShardedView {
  slots?: ({ master?: ShardMaster } | undefined)[]
  masters?: ShardMaster[]
}
interface ShardMaster {
  address?: string
  client?: NodeClient
  pubSub?: { client?: PubSubClient }
}

/** The master of `name`'s slot in a cluster's topology (undefined: none known). */
export function slotMaster(cluster: unknown, name: string): ShardMaster | undefined {
  return (cluster as ShardedView).slots?.[clusterSlot(name)]?.master
}

/** The pub/sub connections of a cluster's masters. */
export function pubSubClients(cluster: unknown): PubSubClient[] {
  return ((cluster as ShardedView).masters ?? []).flatMap((master) => master.pubSub?.client ?? [])
}

/**
 * The pub/sub connection of `ours` (the notifier's cluster) that holds `name` where it belongs:
 * on its slot's master in our topology, the same master as in `theirs` (the app's client, which
 * the kit's commands keep current), ready. Undefined when the channel is away.
 */
export function homeOf(ours: unknown, theirs: unknown, name: string): PubSubClient | undefined {
  const master = slotMaster(ours, name)
  const expected = slotMaster(theirs, name)?.address
  if (master === undefined || (expected !== undefined && master.address !== expected)) return undefined
  const subscriber = master.pubSub?.client
  return subscriber?.isReady && subscriber.getPubSubListeners('SHARDED').has(name) ? subscriber : undefined
}

/** Whether a pub/sub connection of `cluster` holds `name` (node-redis did not lose its listeners). */
export function heldAnywhere(cluster: unknown, name: string): boolean {
  return pubSubClients(cluster).some((client) => client.getPubSubListeners('SHARDED').has(name))
}
