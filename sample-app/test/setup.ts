import { closePool, prepareDatabase } from './helpers/db.js'

/** Root hooks (.mocharc.json "require"): the test database is migrated and emptied once, before every suite. */
export const mochaHooks = {
  async beforeAll(this: Mocha.Context) {
    this.timeout(120_000)
    await prepareDatabase()
  },
  async afterAll() {
    await closePool()
  },
}
