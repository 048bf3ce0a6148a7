/**
 * One server of the rate-limit benchmark, run as a child process of src/rate-limit.ts
 * (IPC protocol in src/serve.ts). Environment: BENCH_SCENARIO, BENCH_PREFIX, BENCH_LIMIT (optional).
 */
import express from 'express'
import { buildMiddleware, defaultLimit, SCENARIOS, type Scenario, usesRedis } from './scenarios.js'
import { connectRedis, type ServerRedis, serve } from './serve.js'

const scenario = process.env.BENCH_SCENARIO as Scenario
if (!SCENARIOS.includes(scenario)) throw new Error(`unknown BENCH_SCENARIO ${scenario}`)
const prefix = process.env.BENCH_PREFIX ?? ''
const limit = process.env.BENCH_LIMIT ? Number(process.env.BENCH_LIMIT) : defaultLimit(scenario)

let client: ServerRedis | undefined
let redisAddr: string | undefined
if (usesRedis(scenario)) ({ client, redisAddr } = await connectRedis(scenario))

const app = express()
const middleware = buildMiddleware(scenario, client, prefix, limit)
if (middleware) app.use(middleware)
app.get('/', (_req, res) => {
  res.send('ok')
})

serve(app, client, redisAddr)
