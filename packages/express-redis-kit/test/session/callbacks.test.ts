import { expect } from 'chai'
import request from 'supertest'
import { type Session, session } from '../../src/index.js'
import { connectRedis, type RedisClient, uniquePrefix } from '../helpers/redis.js'
import { handleOfCookie, SessionClient, sessionApp, sessionIdOf, sessionKey } from '../helpers/session-app.js'

/** Calls `method(callback)` and reports how the callback was called, and whether the promise it returned had settled then. */
function viaCallback(method: (callback: (error: Error | null) => void) => Promise<void>) {
  return new Promise<{ calls: number; error: string | null; settledFirst: boolean; promise: boolean }>((resolve) => {
    let settled = false
    let calls = 0
    const promise = method((error) => {
      calls++
      // A second call would come after this tick: report once everything queued ran.
      setImmediate(() =>
        resolve({
          calls,
          error: error ? String((error as { code?: string }).code) : null,
          settledFirst: settled,
          promise: true,
        }),
      )
    })
    promise.then(
      () => {
        settled = true
      },
      () => {
        settled = true
      },
    )
  })
}

describe('session: the express-session API that middleware uses (callbacks, regenerate, sessionID)', () => {
  let client: RedisClient
  before(async () => {
    client = await connectRedis()
  })
  after(async () => {
    await client.close()
  })

  it('save, reload, touch, regenerate and destroy take a callback, called once with null after the promise settled', async () => {
    const prefix = uniquePrefix('sess-callbacks')
    const app = sessionApp(session({ client, prefix }), {
      routes: (app) =>
        app.post('/callbacks', async (req, res) => {
          req.session.color = 'red'
          const saved = await viaCallback((cb) => req.session.save(cb))
          const storedAfterSave = await client.hGet(sessionKey(prefix, String(req.signedCookies.sid)), 'd:color')
          const reloaded = await viaCallback((cb) => req.session.reload(cb))
          const touched = await viaCallback((cb) => req.session.touch(cb))
          const regenerated = await viaCallback((cb) => req.session.regenerate(cb))
          req.session.color = 'blue'
          const regeneratedKeeping = await viaCallback((cb) => req.session.regenerate({ keepData: true }, cb))
          const kept = req.session.color
          const destroyed = await viaCallback((cb) => req.session.destroy(cb))
          res.json({ saved, storedAfterSave, reloaded, touched, regenerated, regeneratedKeeping, kept, destroyed })
        }),
    })
    const user = new SessionClient(app)
    await user.post('/login?user=7')
    const res = await user.post('/callbacks')
    const once = { calls: 1, error: null, settledFirst: true, promise: true }
    expect(res.body).to.deep.equal({
      saved: once,
      storedAfterSave: '"red"',
      reloaded: once,
      touched: once,
      regenerated: once,
      regeneratedKeeping: once,
      kept: 'blue',
      destroyed: once,
    })
  })

  it('save(callback) has stored the session when the callback runs', async () => {
    const prefix = uniquePrefix('sess-callback-saved')
    const app = sessionApp(session({ client, prefix }), {
      routes: (app) =>
        app.post('/save-cb', (req, res, next) => {
          req.session.color = 'red'
          req.session.save((error) => {
            if (error) return next(error)
            const id = req.sessionID
            res.json({ id })
          })
        }),
    })
    const res = await request(app).post('/save-cb')
    const value = sessionIdOf(res)
    expect(res.body.id).to.equal(handleOfCookie(value))
    expect(await client.hGet(sessionKey(prefix, value), 'd:color')).to.equal('"red"')
  })

  it('a failing method passes its error to the callback, and its promise makes no unhandled rejection', async () => {
    const unhandled: unknown[] = []
    const onUnhandled = (reason: unknown) => unhandled.push(reason)
    process.on('unhandledRejection', onUnhandled)
    try {
      const app = sessionApp(session({ client, prefix: uniquePrefix('sess-callback-error') }), {
        routes: (app) =>
          app.post('/fail', async (req, res) => {
            const old: Session = req.session
            await req.session.regenerate()
            // The replaced object refuses: its methods fail (with a callback, the promise is ignored here).
            const failed = await viaCallback((cb) => old.save(cb))
            const rejected = await old.reload().then(
              () => 'resolved',
              (error: { code?: string }) => error.code,
            )
            res.json({ failed, rejected })
          }),
      })
      const res = await request(app).post('/fail')
      expect(res.body).to.deep.equal({
        failed: { calls: 1, error: 'ERK_MISCONFIGURED', settledFirst: true, promise: true },
        rejected: 'ERK_MISCONFIGURED',
      })
      // Unhandled rejections are reported after the microtask queue drained: give them a turn.
      await new Promise((resolve) => setImmediate(resolve))
      expect(unhandled).to.deep.equal([])
    } finally {
      process.off('unhandledRejection', onUnhandled)
    }
  })

  describe('regenerate() replaces req.session', () => {
    it('with a new object; the old one keeps a read-only copy of the data and its handle', async () => {
      const prefix = uniquePrefix('sess-regen-object')
      const app = sessionApp(session({ client, prefix }), {
        routes: (app) =>
          app.post('/regen', async (req, res) => {
            const old = req.session
            const oldHandle = old.handle
            await req.session.regenerate()
            let writeError: string | undefined
            try {
              old.color = 'written to the old object'
            } catch (error) {
              writeError = (error as { code?: string }).code
            }
            let deleteError: string | undefined
            try {
              delete old.userId
            } catch (error) {
              deleteError = (error as { code?: string }).code
            }
            req.session.color = 'new'
            res.json({
              same: old === req.session,
              old: { ...old },
              oldHandle: old.handle === oldHandle,
              current: { ...req.session },
              writeError,
              deleteError,
              sessionID: req.sessionID === req.session.handle && req.sessionID !== oldHandle,
            })
          }),
      })
      const user = new SessionClient(app)
      const before = sessionIdOf(await user.post('/login?user=7'))
      await user.post('/set/color?value=red')
      const res = await user.post('/regen')
      expect(res.body).to.deep.equal({
        same: false,
        old: { userId: 7, color: 'red' },
        oldHandle: true,
        current: { color: 'new' },
        writeError: 'ERK_MISCONFIGURED',
        deleteError: 'ERK_MISCONFIGURED',
        sessionID: true,
      })
      expect(await user.data()).to.deep.equal({ color: 'new' })
      expect(await client.exists(sessionKey(prefix, before))).to.equal(0)
    })

    it('regenerate({ keepData: true }) gives the new object the data; the old one keeps its copy', async () => {
      const app = sessionApp(session({ client, prefix: uniquePrefix('sess-regen-keep-object') }), {
        routes: (app) =>
          app.post('/regen-keep', async (req, res) => {
            const old = req.session
            await req.session.regenerate({ keepData: true })
            req.session.color = 'changed after'
            res.json({ old: { ...old }, current: { ...req.session } })
          }),
      })
      const user = new SessionClient(app)
      await user.post('/login?user=7')
      await user.post('/set/color?value=red')
      const res = await user.post('/regen-keep')
      expect(res.body).to.deep.equal({
        old: { userId: 7, color: 'red' },
        current: { userId: 7, color: 'changed after' },
      })
      expect(await user.data()).to.deep.equal({ userId: 7, color: 'changed after' })
    })
  })

  it('req.sessionID is the handle of a new session before it is stored, and stays so once stored', async () => {
    const app = sessionApp(session({ client, prefix: uniquePrefix('sess-id-new') }), {
      routes: (app) =>
        app.post('/new', (req, res) => {
          const early = req.sessionID
          req.session.color = 'red'
          res.json({ early })
        }),
    })
    const res = await request(app).post('/new')
    expect(res.body.early).to.equal(handleOfCookie(sessionIdOf(res)))
  })
})
