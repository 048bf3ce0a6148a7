import { expect } from 'chai'
import request from 'supertest'
import { type RedisClient, rateLimit } from '../../src/index.js'
import { appWith } from '../helpers/app.js'
import { connectRedis, uniquePrefix } from '../helpers/redis.js'

describe('rateLimit smoke', () => {
  let client: RedisClient
  before(async () => {
    client = await connectRedis()
  })
  after(async () => {
    await client.close()
  })
  for (const algorithm of ['sliding-window', 'fixed-window', 'sliding-log', 'token-bucket'] as const) {
    it(`${algorithm}: admits limit then rejects`, async () => {
      const app = appWith(rateLimit({ client, limit: 3, windowMs: '1h', algorithm, prefix: uniquePrefix() }))
      for (let i = 0; i < 3; i++) {
        const res = await request(app).get('/')
        expect(res.status).to.equal(200)
        console.log(res.headers.ratelimit, res.headers['ratelimit-policy'])
      }
      const res = await request(app).get('/')
      expect(res.status).to.equal(429)
      console.log(res.headers.ratelimit, res.headers['retry-after'])
    })
  }
})
