import diagnostics from 'node:diagnostics_channel'
import { passwordWork } from '../../src/passwords.js'

/** Runs `request` and counts the passwords hashed or checked meanwhile (by an app running in this process). */
export async function withPasswordWork<T>(request: () => Promise<T>): Promise<{ result: T; work: number }> {
  let work = 0
  const count = () => void work++
  diagnostics.subscribe(passwordWork.name, count)
  try {
    const result = await request()
    return { result, work }
  } finally {
    diagnostics.unsubscribe(passwordWork.name, count)
  }
}
