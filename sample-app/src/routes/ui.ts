import path from 'node:path'
import express, { Router } from 'express'

/** The UI's files: index.html, app.js, style.css (served as they are, no build step). */
export const publicDir = path.resolve(import.meta.dirname, '..', '..', 'public')

/** The UI's content security policy: no inline script or style, everything from this origin. */
export const UI_CSP = "default-src 'self'; img-src 'self' data:"

/**
 * GET / and its static files (sample-app/public). Each response carries the UI's CSP; a path
 * that names no file goes on to the next routes (and ends in the JSON 404).
 */
export function uiRoutes(): Router {
  const router = Router()
  router.use(
    express.static(publicDir, {
      index: 'index.html',
      redirect: false,
      setHeaders(res) {
        res.setHeader('Content-Security-Policy', UI_CSP)
        res.setHeader('X-Content-Type-Options', 'nosniff')
      },
    }),
  )
  return router
}
