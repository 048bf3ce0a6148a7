/**
 * The subscriber of one run of src/notifier.ts, in a process of its own. Environment:
 * BENCH_SCENARIO, BENCH_REDIS_URL, BENCH_PREFIX, BENCH_WARMUP_MESSAGES (W), BENCH_MESSAGES (N),
 * BENCH_PIN_CPU (the CPU to run on, if set).
 * It subscribes, reports `ready`, expects message ids 0 .. W+N-1 (in order: a smaller id than
 * the last one's counts as out of order), reports `warm` after the
 * first W and `done` after all of them (or 3 s after the last one came, if some never do),
 * and exits on `stop`.
 */
import { execFileSync } from 'node:child_process'
import { createNotifier } from 'express-redis-kit'
import { createClient } from 'redis'
import {
  batchSizeOf,
  CHANNEL,
  FIELD,
  GROUP,
  modeOf,
  type Scenario,
  type SubscriberMessage,
  type UserUpdated,
} from './notifier-scenarios.js'

const env = process.env
if (env.BENCH_PIN_CPU) execFileSync('taskset', ['-a', '-p', '-c', env.BENCH_PIN_CPU, String(process.pid)])
const scenario = env.BENCH_SCENARIO as Scenario
const prefix = env.BENCH_PREFIX!
const warmup = Number(env.BENCH_WARMUP_MESSAGES)
const total = warmup + Number(env.BENCH_MESSAGES)
const key = prefix + CHANNEL

const send = (message: SubscriberMessage) => process.send?.(message)
const cpu = () => {
  const { user, system } = process.cpuUsage()
  return user + system
}

const seen = new Uint8Array(total)
let received = 0
let unique = 0
let outOfOrder = 0
let next = 0
let lastAt = 0n
let finished = false

function receive(event: UserUpdated): void {
  lastAt = process.hrtime.bigint()
  received++
  if (event.id < next) outOfOrder++
  next = event.id + 1
  if (seen[event.id] === 0) {
    seen[event.id] = 1
    unique++
  }
  if (unique === warmup) send({ type: 'warm', cpu: cpu() })
  if (unique === total) finish()
}

function finish(): void {
  if (finished) return
  finished = true
  send({ type: 'done', cpu: cpu(), at: String(lastAt), received, unique, outOfOrder })
}

// Messages that never come: report what did, 3 s after the last one.
setInterval(() => {
  if (unique >= warmup && lastAt > 0n && process.hrtime.bigint() - lastAt > 3_000_000_000n) finish()
}, 500).unref()

/** A hand-written check, what a small schema's `parse` costs. */
function parse(value: unknown): UserUpdated {
  const event = value as UserUpdated
  if (
    typeof event !== 'object' ||
    event === null ||
    !Number.isSafeInteger(event.id) ||
    typeof event.name !== 'string' ||
    typeof event.email !== 'string' ||
    typeof event.updatedAt !== 'string' ||
    !Array.isArray(event.changedFields) ||
    !event.changedFields.every((field) => typeof field === 'string')
  ) {
    throw new TypeError('not a UserUpdated event')
  }
  return event
}

const client = createClient({ url: env.BENCH_REDIS_URL })
client.on('error', (error) => console.error('subscriber Redis:', error.message))
await client.connect()

if (scenario === 'raw-pubsub') {
  const subscriber = client.duplicate()
  await subscriber.connect()
  await subscriber.subscribe(key, (message) => receive(JSON.parse(message)))
} else if (scenario === 'raw-durable' || scenario === 'raw-durable-batch-ack') {
  const reader = client.duplicate()
  await reader.connect()
  await reader.xGroupCreate(key, GROUP, '$', { MKSTREAM: true })
  const batchAck = scenario === 'raw-durable-batch-ack'
  void (async () => {
    for (;;) {
      const reply = (await reader.xReadGroup(GROUP, 'c1', { key, id: '>' }, { COUNT: 10, BLOCK: 5000 })) as
        | { messages: { id: string; message: Record<string, string> }[] }[]
        | null
      const messages = reply?.[0]?.messages ?? []
      for (const { id, message } of messages) {
        receive(JSON.parse(message[FIELD]!))
        if (!batchAck) await reader.xAck(key, GROUP, id)
      }
      if (batchAck && messages.length > 0)
        await reader.xAck(
          key,
          GROUP,
          messages.map(({ id }) => id),
        )
    }
  })()
} else if (scenario === 'raw-fanout') {
  const reader = client.duplicate()
  await reader.connect()
  type Entry = { id: string; message: Record<string, string> }
  // from the stream's last entry (or its start): what is published once `ready` is sent
  const [last] = (await reader.xRevRange(key, '+', '-', { COUNT: 1 })) as unknown as Entry[]
  let position = last?.id ?? '0-0'
  void (async () => {
    for (;;) {
      const reply = (await reader.xRead({ key, id: position }, { COUNT: 10, BLOCK: 5000 })) as
        | { messages: Entry[] }[]
        | null
      for (const { id, message } of reply?.[0]?.messages ?? []) {
        receive(JSON.parse(message[FIELD]!))
        position = id
      }
    }
  })()
} else {
  const notifier = createNotifier({
    client,
    prefix,
    mode: modeOf(scenario),
    ...(modeOf(scenario) === 'durable' ? { group: GROUP } : {}),
    batchSize: batchSizeOf(scenario),
  })
  await notifier.subscribe<UserUpdated>(CHANNEL, receive, scenario === 'erk-pubsub-parse' ? { parse } : {})
}

process.on('message', (message) => {
  if (message === 'stop') process.exit(0)
})
send({ type: 'ready' })
