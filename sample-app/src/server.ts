import { createClient } from 'redis'
import { createApp } from './app.js'

const port = Number(process.env.PORT ?? 3000)
const redisUrl = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379'

const redis = createClient({ url: redisUrl, disableOfflineQueue: true })
redis.on('error', (error: Error) => console.error(`Redis: ${error.message}`))
await redis.connect()

const server = createApp({ redis: redis as never }).listen(port, () => {
  console.log(`sample app listening on http://127.0.0.1:${port}`)
})

for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.once(signal, () => {
    server.close()
    void redis.close()
  })
}
