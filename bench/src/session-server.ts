/**
 * One server of the session benchmark, run as a child process of src/session.ts.
 * Environment: BENCH_SCENARIO (one of SESSION_SCENARIOS), BENCH_PREFIX.
 */
import { connectRedis, type ServerRedis, serve } from './serve.js'
import { buildApp, SESSION_SCENARIOS, type SessionScenario } from './session-scenarios.js'

const scenario = process.env.BENCH_SCENARIO as SessionScenario
if (!SESSION_SCENARIOS.includes(scenario)) throw new Error(`unknown BENCH_SCENARIO ${scenario}`)
const prefix = process.env.BENCH_PREFIX ?? ''

let client: ServerRedis | undefined
let redisAddr: string | undefined
if (scenario !== 'express') ({ client, redisAddr } = await connectRedis(scenario))

serve(buildApp(scenario, client, prefix), client, redisAddr)
