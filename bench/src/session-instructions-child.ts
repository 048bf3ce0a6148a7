/**
 * One measurement of src/session-instructions.ts, run under callgrind: an app of a session
 * scenario (src/session-scenarios.ts) answers BENCH_REQUESTS requests of BENCH_ROUTE, 20 in
 * flight at a time, in this process (requests built in memory, a response that writes
 * nowhere, a real Redis), so that the instruction count is the app's work and nothing else.
 * Environment: BENCH_SCENARIO, BENCH_ROUTE, BENCH_REQUESTS, BENCH_PREFIX.
 */
import { type Handler, sendInMemory, sendMany } from './callgrind.js'
import { connectRedis, type ServerRedis } from './serve.js'
import { buildApp, ROUTE_REQUESTS, type Route, SESSION_SCENARIOS, type SessionScenario } from './session-scenarios.js'

const scenario = process.env.BENCH_SCENARIO as SessionScenario
if (!SESSION_SCENARIOS.includes(scenario)) throw new Error(`unknown BENCH_SCENARIO ${scenario}`)
const route = process.env.BENCH_ROUTE as Route
const count = Number(process.env.BENCH_REQUESTS)
const client: ServerRedis | undefined = scenario === 'express' ? undefined : (await connectRedis(scenario)).client
const app = buildApp(scenario, client, process.env.BENCH_PREFIX ?? '') as unknown as Handler

const send = (method: string, path: string, cookie: string | undefined) =>
  sendInMemory(app, method, path, cookie ? { cookie } : {})

const login = await send('POST', '/login', undefined)
const cookie = String(login.getHeader('set-cookie') ?? '').split(';')[0] || undefined
const { method, path } = ROUTE_REQUESTS[route]
await sendMany(count, 20, async () => {
  const res = await send(method, path, cookie)
  if (res.statusCode !== 200) throw new Error(`${scenario}: ${method} ${path} answered ${res.statusCode}`)
})
await client?.close()
