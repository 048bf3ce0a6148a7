import { expect } from 'chai'
import { createClient } from 'redis'
import request from 'supertest'
import { createApp } from '../src/app.js'

describe('sample app', () => {
  const redis = createClient({ url: process.env.REDIS_URL ?? 'redis://127.0.0.1:6379' })
  before(async () => {
    await redis.connect()
    await redis.del('sample:rl:{127.0.0.1}')
  })
  after(async () => {
    await redis.del('sample:rl:{127.0.0.1}')
    await redis.close()
  })

  it('answers GET / through the rate limiter, with its headers', async () => {
    const res = await request(createApp({ redis: redis as never })).get('/')
    expect(res.status).to.equal(200)
    expect(res.body.hello).to.equal('express-redis-kit')
    expect(res.body.rateLimit).to.include({ limit: 100, key: '127.0.0.1' })
    expect(res.headers['ratelimit-policy']).to.match(/^"100-in-1min"; q=100; w=60; pk=:/)
  })
})
