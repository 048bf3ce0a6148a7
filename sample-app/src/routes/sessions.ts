import { Router } from 'express'
import type { SessionMiddleware } from 'express-redis-kit'
import { HttpError } from '../errors.js'
import { requireUser } from '../http.js'

/** A session handle as the kit issues them (22 base64url characters); never a token. */
const HANDLE = /^[A-Za-z0-9_-]{22}$/

const notYours = () => new HttpError(404, 'session_not_found', 'You have no session with this handle.')

/**
 * GET /sessions (the signed-in user's live sessions: device, created, last seen, which one is
 * this one) and DELETE /sessions/:handle (end one of them; ending this one signs you out).
 * Sessions are named by their public handle, never by their token.
 */
export function sessionRoutes(deps: { sessions: SessionMiddleware }): Router {
  const { sessions } = deps
  const router = Router()

  router.get('/sessions', async (req, res) => {
    const id = await requireUser(req)
    const current = req.session.handle
    const listed = await sessions.listUserSessions(id)
    res.set('Cache-Control', 'private, no-store').json({
      sessions: listed.map(({ handle, createdAt, lastSeenAt, agent }) => ({
        handle,
        createdAt,
        lastSeenAt,
        agent: typeof agent === 'string' ? agent : '',
        current: handle === current,
      })),
    })
  })

  router.delete('/sessions/:handle', async (req, res) => {
    const id = await requireUser(req)
    const handle = String(req.params.handle)
    if (!HANDLE.test(handle)) {
      throw new HttpError(400, 'invalid_handle', 'A session handle is 22 characters of A-Z, a-z, 0-9, - and _.')
    }
    if (handle === req.session.handle) {
      // this session: end it and clear its cookie (signed out)
      await req.session.destroy()
    } else if (!(await sessions.destroyUserSession(id, handle))) {
      throw notYours()
    }
    res.status(204).end()
  })

  return router
}
