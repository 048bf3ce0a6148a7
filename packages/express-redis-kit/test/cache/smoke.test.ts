import { expect } from 'chai'
import express from 'express'
import request from 'supertest'
import { cached, cacheResponse, invalidateTags, type RedisClient } from '../../src/index.js'
import { connectRedis, uniquePrefix } from '../helpers/redis.js'

describe('cache smoke', () => {
  let client: RedisClient
  before(async () => {
    client = await connectRedis()
  })
  after(async () => {
    await client.close()
  })

  it('cacheResponse: MISS then HIT, byte-identical, tags invalidate', async () => {
    const prefix = uniquePrefix('cache')
    const cache = cacheResponse({ client, prefix, ttl: '1m', tags: ['users'] })
    let runs = 0
    const app = express()
    app.get('/users', cache, (_req, res) => {
      runs++
      res.type('application/octet-stream').send(Buffer.from([0, 1, 2, 255, runs]))
    })
    const first = await request(app).get('/users?b=2&a=1').buffer(true)
    console.log(first.status, first.headers['x-cache'], first.headers.etag, first.body)
    await new Promise((r) => setTimeout(r, 50))
    const second = await request(app).get('/users?a=1&b=2').buffer(true)
    console.log(second.status, second.headers['x-cache'], second.headers.age, second.headers.etag, second.body)
    expect(second.headers['x-cache']).to.equal('HIT')
    expect(runs).to.equal(1)
    const notModified = await request(app).get('/users?a=1&b=2').set('If-None-Match', String(second.headers.etag))
    expect(notModified.status).to.equal(304)
    expect(await cache.invalidateTags(['users'])).to.equal(1)
    const third = await request(app).get('/users?a=1&b=2')
    expect(third.headers['x-cache']).to.equal('MISS')
    expect(runs).to.equal(2)
  })

  it('cached: read-through with types, null cached, tags', async () => {
    const prefix = uniquePrefix('cached')
    let loads = 0
    const load = () => cached(client, 'user:1', { prefix, ttl: '1m', tags: ['user:1'] }, async () => {
      loads++
      return { id: 1n, at: new Date(0), name: '' }
    })
    const [a, b] = await Promise.all([load(), load()])
    const c = await load()
    expect(loads).to.equal(1)
    expect(c.id).to.equal(1n)
    expect(c.at).to.be.instanceOf(Date)
    expect(a).to.deep.equal(b)
    await invalidateTags(client, ['user:1'], { prefix })
    await load()
    expect(loads).to.equal(2)
    let nullLoads = 0
    for (let i = 0; i < 3; i++) await cached(client, 'nobody', { prefix }, () => { nullLoads++; return null })
    expect(nullLoads).to.equal(1)
  })
})
