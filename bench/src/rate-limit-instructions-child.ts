/**
 * One measurement of src/rate-limit-instructions.ts, run under callgrind: an Express app with
 * one limiter scenario (src/scenarios.ts, limits never reached) answers BENCH_REQUESTS requests
 * of `GET /`, 20 in flight at a time, in this process (requests built in memory, a response
 * that writes nowhere, a real Redis). Environment: BENCH_SCENARIO, BENCH_REQUESTS, BENCH_PREFIX.
 */
import express from 'express'
import { type Handler, sendInMemory, sendMany } from './callgrind.js'
import { buildMiddleware, defaultLimit, SCENARIOS, type Scenario, usesRedis } from './scenarios.js'
import { connectRedis, type ServerRedis } from './serve.js'

const scenario = process.env.BENCH_SCENARIO as Scenario
if (!SCENARIOS.includes(scenario)) throw new Error(`unknown BENCH_SCENARIO ${scenario}`)
const count = Number(process.env.BENCH_REQUESTS)
const client: ServerRedis | undefined = usesRedis(scenario) ? (await connectRedis(scenario)).client : undefined

const app = express()
const middleware = buildMiddleware(scenario, client, process.env.BENCH_PREFIX ?? '', defaultLimit(scenario))
if (middleware) app.use(middleware)
app.get('/', (_req, res) => {
  res.send('ok')
})

await sendMany(count, 20, async () => {
  const res = await sendInMemory(app as unknown as Handler, 'GET', '/')
  if (res.statusCode !== 200) throw new Error(`${scenario}: GET / answered ${res.statusCode}`)
})
await client?.close()
