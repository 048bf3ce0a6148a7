import path from 'node:path'
import express, { Router } from 'express'

/** The UI's files: index.html, app.js, style.css (served as they are, no build step). */
export const publicDir = path.resolve(import.meta.dirname, '..', '..', 'public')

/**
 * GET / and its static files (sample-app/public). Their CSP (no inline script or style,
 * everything from this origin) and X-Content-Type-Options are the app-wide ones helmet sets
 * (security-headers.ts); a path that names no file goes on to the next routes (and ends in the
 * JSON 404).
 */
export function uiRoutes(): Router {
  const router = Router()
  router.use(
    express.static(publicDir, {
      index: 'index.html',
      redirect: false,
    }),
  )
  return router
}
