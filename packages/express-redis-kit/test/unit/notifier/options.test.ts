import { hostname } from 'node:os'
import { expect } from 'chai'
import { createClient } from 'redis'
import {
  checkCallOptions,
  isValidName,
  NAME_EXPECTED,
  type NotifierOptions,
  parseNotifierOptions,
} from '../../../src/notifier/options.js'
import type { RedisClient } from '../../../src/shared/redis.js'
import { optionErrorOf } from '../../helpers/option-error.js'
import { recordingLogger } from '../../helpers/outage.js'

/** A node-redis client that is never connected: option parsing sends nothing. */
const client = createClient() as unknown as RedisClient
const logger = recordingLogger()
const parse = (options: Record<string, unknown> = {}) =>
  parseNotifierOptions({ client, logger, ...options } as NotifierOptions)

describe('createNotifier option parsing', () => {
  it('every default resolved', () => {
    const parsed = parse()
    expect(parsed).to.include({
      client,
      prefix: 'events:',
      mode: 'pubsub',
      logger,
      onReconnect: undefined,
      timeoutMs: 500,
      maxMessageBytes: 1_048_576,
      maxLength: 10_000,
      group: 'default',
      claimIdleMs: 30_000,
      maxDeliveries: 5,
      batchSize: 10,
    })
  })

  it('the default consumer: <hostname>-<pid>-<8 hex digits>, a new one per notifier', () => {
    const { consumer } = parse()
    const expected = new RegExp(`^${hostname().replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}-${process.pid}-[0-9a-f]{8}$`)
    expect(consumer).to.match(expected)
    expect(parse().consumer).not.to.equal(consumer)
  })

  it('group and consumer names: 1 to 200 printable ASCII characters without spaces', () => {
    expect(isValidName('workers.v2:eu-1')).to.equal(true)
    expect(isValidName('~'.repeat(200))).to.equal(true)
    for (const name of ['', 'a b', 'a\tb', 'é', 'x'.repeat(201), 5, null]) {
      expect(isValidName(name), JSON.stringify(name)).to.equal(false)
    }
    expect(optionErrorOf(() => parse({ group: 'my group' }))).to.include(`option \`group\` must be ${NAME_EXPECTED}`)
    expect(optionErrorOf(() => parse({ consumer: '' }))).to.include(`option \`consumer\` must be ${NAME_EXPECTED}`)
  })

  it('values checked, naming the option', () => {
    const refused: [Record<string, unknown>, string][] = [
      [{ mode: 'streams' }, "option `mode` must be 'pubsub', 'durable' or 'fanout'"],
      [{ onReconnect: true }, 'option `onReconnect` must be a function'],
      [{ maxMessageBytes: 0 }, 'option `maxMessageBytes` must be a positive integer'],
      [{ maxLength: 1.5 }, 'option `maxLength` must be a positive integer'],
      [{ maxDeliveries: -1 }, 'option `maxDeliveries` must be a positive integer'],
      [{ batchSize: '10' }, 'option `batchSize` must be a positive integer'],
      [{ claimIdle: '1 month' }, 'option `claimIdle` must be a positive number of milliseconds'],
      [{ timeoutMs: 0 }, 'option `timeoutMs` must be a positive integer'],
      [{ prefix: '{events}' }, 'option `prefix` must be a string without { or }'],
      [{ maxlength: 5 }, 'option `maxlength` must be a known option (use `maxLength`)'],
      [{ channel: 'x' }, 'option `channel` must be a known option'],
    ]
    for (const [options, message] of refused)
      expect(
        optionErrorOf(() => parse(options)),
        JSON.stringify(options),
      ).to.include(message)
    expect(optionErrorOf(() => parseNotifierOptions(undefined as unknown as NotifierOptions))).to.include(
      'option `options` must be an object; received undefined',
    )
  })

  it("checkCallOptions: each method's own options, near misses named", () => {
    checkCallOptions({ parse: () => 1, group: 'g', from: '0', onGap: () => {} }, 'subscribe')
    checkCallOptions({ id: 'x' }, 'publish')
    checkCallOptions({ after: '1-0', limit: 5 }, 'history')
    expect(optionErrorOf(() => checkCallOptions({ limit: 5 }, 'publish'))).to.include(
      'option `limit` must be a known option',
    )
    expect(optionErrorOf(() => checkCallOptions({ afer: '1-0' }, 'history'))).to.include('(use `after`)')
    expect(optionErrorOf(() => checkCallOptions('x', 'subscribe'))).to.include('option `options` must be an object')
  })
})
