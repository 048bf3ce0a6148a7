/** What src/notifier.ts (publisher, report) and src/notifier-subscriber.ts (the child) share. */

export const SCENARIOS = [
  'raw-pubsub',
  'erk-pubsub',
  'erk-pubsub-parse',
  'raw-durable',
  'raw-durable-batch-ack',
  'erk-durable',
  'erk-durable-100',
  'raw-fanout',
  'erk-fanout',
  'erk-fanout-100',
] as const
export type Scenario = (typeof SCENARIOS)[number]

export const LABELS: Record<Scenario, string> = {
  'raw-pubsub': 'raw node-redis PUBLISH + SUBSCRIBE, JSON.parse',
  'erk-pubsub': "notifier 'pubsub'",
  'erk-pubsub-parse': "notifier 'pubsub' + parse (hand-written check)",
  'raw-durable': 'raw XADD MAXLEN ~ + XREADGROUP COUNT 10 BLOCK + XACK per message',
  'raw-durable-batch-ack': 'raw, the same with one XACK per read (all its ids)',
  'erk-durable': "notifier 'durable', batchSize 10 (default)",
  'erk-durable-100': "notifier 'durable', batchSize 100",
  'raw-fanout': 'raw XADD MAXLEN ~ + XREAD COUNT 10 BLOCK from the last id (no group)',
  'erk-fanout': "notifier 'fanout', batchSize 10 (default)",
  'erk-fanout-100': "notifier 'fanout', batchSize 100",
}

/** The raw scenario each scenario is compared with (acking per read: what acking per message costs). */
export const BASELINE: Partial<Record<Scenario, Scenario>> = {
  'raw-durable-batch-ack': 'raw-durable',
  'erk-pubsub': 'raw-pubsub',
  'erk-pubsub-parse': 'raw-pubsub',
  'erk-durable': 'raw-durable',
  'erk-durable-100': 'raw-durable',
  'erk-fanout': 'raw-fanout',
  'erk-fanout-100': 'raw-fanout',
}

export const isDurable = (scenario: Scenario): boolean => scenario.includes('durable')

/** The notifier mode of a notifier scenario. */
export const modeOf = (scenario: Scenario): 'pubsub' | 'durable' | 'fanout' =>
  isDurable(scenario) ? 'durable' : scenario.includes('fanout') ? 'fanout' : 'pubsub'

/** The batchSize of a notifier scenario (the default, 10, unless it says 100). */
export const batchSizeOf = (scenario: Scenario): number => (scenario.endsWith('-100') ? 100 : 10)

/** The notifier's channel; raw scenarios use `<prefix><channel>` as the notifier does. */
export const CHANNEL = 'user.updated'
export const GROUP = 'bench'
/** The stream field of a raw entry (the notifier's is `m` too). */
export const FIELD = 'm'

export interface UserUpdated {
  id: number
  name: string
  email: string
  changedFields: string[]
  updatedAt: string
}

/** Message number `id`: about 200 bytes of JSON. */
export const payload = (id: number): UserUpdated => ({
  id,
  name: `Ada Lovelace ${id}`,
  email: `ada.lovelace.${id}@example.com`,
  changedFields: ['name', 'email', 'avatarUrl', 'bio', 'updatedAt'],
  updatedAt: new Date(1_780_000_000_000 + id).toISOString(),
})

/** Child → parent. `at` is process.hrtime.bigint() (the monotonic clock every process shares), as a string. */
export type SubscriberMessage =
  | { type: 'ready' }
  | { type: 'warm'; cpu: number }
  | {
      type: 'done'
      cpu: number
      at: string
      received: number
      unique: number
      outOfOrder: number
    }
