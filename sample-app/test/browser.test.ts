import { randomBytes } from 'node:crypto'
import { existsSync } from 'node:fs'
import { mkdir } from 'node:fs/promises'
import path from 'node:path'
import { expect } from 'chai'
import pg from 'pg'
import { type Browser, type BrowserContext, chromium, type Page } from 'playwright-core'
import { migrateDatabase } from '../scripts/db.js'
import { deleteKeys, PASSWORD, startApp, type TestApp, testEnv, uniqueEmail, uniquePrefix } from './helpers/app.js'
import { testDatabaseUrl } from './helpers/db.js'
import { appDir, type ServerProcess, startServer } from './helpers/processes.js'

/** Debian's chromium (scripts/lib.sh ensure_chromium installs it); never a browser download. */
const CHROMIUM = process.env.CHROMIUM_PATH || '/usr/bin/chromium'
/** Where each screen's screenshot goes (the README shows one), overwritten on every run. */
const SCREENSHOTS = path.resolve(appDir, '..', 'docs', 'screenshots')
/** The app-wide CSP (helmet, src/security-headers.ts). */
const CSP =
  "default-src 'self';img-src 'self' data:;object-src 'none';base-uri 'none';frame-ancestors 'none';form-action 'self'"
const IPHONE =
  'Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1'

/**
 * A database of this run only (created, migrated, dropped after): the list shows this test's
 * users alone, and no other suite's truncation can run under it.
 */
async function ownDatabase(): Promise<{ url: string; drop(): Promise<void> }> {
  const url = new URL(testDatabaseUrl)
  const name = `${decodeURIComponent(url.pathname.slice(1))}_ui_${process.pid}_${randomBytes(3).toString('hex')}`
  url.pathname = `/${name}`
  const log = console.log
  console.log = () => {} // migrateDatabase reports each step
  try {
    await migrateDatabase(url.href)
  } finally {
    console.log = log
  }
  return {
    url: url.href,
    async drop() {
      const maintenance = new URL(testDatabaseUrl)
      maintenance.pathname = '/postgres'
      const client = new pg.Client({ connectionString: maintenance.href })
      await client.connect()
      try {
        await client.query(`DROP DATABASE IF EXISTS ${client.escapeIdentifier(name)} WITH (FORCE)`)
      } finally {
        await client.end()
      }
    },
  }
}

function serverEnv(overrides: Record<string, string>): Record<string, string> {
  const env = testEnv({ PORT: '0', HOST: '127.0.0.1', ...overrides })
  return Object.fromEntries(Object.entries(env).filter((entry): entry is [string, string] => entry[1] !== undefined))
}

describe('the UI in a browser: two contexts on two instances', function () {
  this.timeout(60_000)
  let database: Awaited<ReturnType<typeof ownDatabase>> | undefined
  const prefix = uniquePrefix('ui')
  let a: ServerProcess | undefined
  let b: ServerProcess | undefined
  /** The environment of the two server processes. */
  let env: Record<string, string>
  let limited: TestApp | undefined
  let browser: Browser | undefined
  const contexts: BrowserContext[] = []
  /** CSP violations and uncaught errors of every page. */
  const problems: string[] = []

  let pageA: Page
  let pageB: Page
  const ada = { name: 'Ada', email: uniqueEmail('ada') }
  const bob = { name: 'Bob', email: uniqueEmail('bob') }
  let adaId = 0

  before(async function () {
    this.timeout(60_000)
    if (!existsSync(CHROMIUM)) {
      throw new Error(
        `no Chromium at ${CHROMIUM}: install Debian's package (apt-get install -y chromium; npm test does it) or set CHROMIUM_PATH`,
      )
    }
    database = await ownDatabase()
    env = serverEnv({ DATABASE_URL: database.url, REDIS_PREFIX: prefix, API_RATE_LIMIT: '600' })
    const started = await Promise.allSettled([
      startServer(env),
      startServer(env),
      // its own Redis prefix: it relays no outbox row, which it would publish where the two servers do not listen
      startApp({ DATABASE_URL: database.url, API_RATE_LIMIT: '10', OUTBOX_RELAY: 'false' }),
      chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox'] }),
      mkdir(SCREENSHOTS, { recursive: true }),
    ])
    const [first, second, third, fourth] = started
    if (first.status === 'fulfilled') a = first.value
    if (second.status === 'fulfilled') b = second.value
    if (third.status === 'fulfilled') limited = third.value
    if (fourth.status === 'fulfilled') browser = fourth.value
    const failed = started.find((result) => result.status === 'rejected')
    if (failed) throw failed.reason
  })

  after(async function () {
    this.timeout(30_000)
    await Promise.allSettled(contexts.map((context) => context.close()))
    await browser?.close()
    await Promise.allSettled([a?.stop(), b?.stop(), limited?.close()])
    await deleteKeys(prefix)
    await database?.drop()
  })

  /** A page of a new browser context on `url`, once the UI has started. */
  async function open(url: string, options: { userAgent?: string; hash?: string } = {}): Promise<Page> {
    const context = await browser!.newContext({ viewport: { width: 1180, height: 600 }, userAgent: options.userAgent })
    context.setDefaultTimeout(10_000)
    contexts.push(context)
    const page = await context.newPage()
    page.on('console', (message) => {
      if (/Content Security Policy/i.test(message.text())) problems.push(`${url}: ${message.text()}`)
    })
    page.on('pageerror', (error) => problems.push(`${url}: ${error.message}`))
    const response = await page.goto(`${url}/${options.hash ?? ''}`)
    expect(response?.status()).to.equal(200)
    expect(response?.headers()['content-security-policy']).to.equal(CSP)
    await page.locator('body[data-ready=yes]').waitFor()
    return page
  }

  const screenshot = (page: Page, screen: string) => page.screenshot({ path: path.join(SCREENSHOTS, `${screen}.png`) })
  // (the test is type-checked without the DOM's types: what runs in the page is a locator or a string)
  const screenOf = (page: Page) => page.locator('body').getAttribute('data-screen')
  const authOf = (page: Page) => page.locator('body').getAttribute('data-auth')
  const waitForScreen = (page: Page, screen: string) => page.locator(`body[data-loaded="${screen}"]`).waitFor()

  async function signUp(page: Page, who: { name: string; email: string }): Promise<void> {
    const form = page.locator('#sign-up-form')
    await form.locator('[name=name]').fill(who.name)
    await form.locator('[name=email]').fill(who.email)
    await form.locator('[name=password]').fill(PASSWORD)
    await form.locator('button[type=submit]').click()
    await page.locator('body[data-auth=signed-in][data-loaded=users]').waitFor()
  }

  async function signIn(page: Page, email: string): Promise<void> {
    if ((await screenOf(page)) !== 'signin') await page.click('[data-nav=signin]')
    const form = page.locator('#sign-in-form')
    await form.locator('[name=email]').fill(email)
    await form.locator('[name=password]').fill(PASSWORD)
    await form.locator('button[type=submit]').click()
    await page.locator('body[data-auth=signed-in][data-loaded=users]').waitFor()
  }

  /** Waits until the row of user `id` in the list shows `name`. */
  const rowShows = (page: Page, id: number, name: string) =>
    page.locator(`#users tr[data-user-id="${id}"] .user-name`).getByText(name, { exact: true }).waitFor()

  it('serves the page under its CSP; signed out, it opens on sign-in and shows the rate limit', async () => {
    pageA = await open(a!.url)
    pageB = await open(b!.url)
    expect(await screenOf(pageA)).to.equal('signin')
    expect(await pageA.textContent('#rate-limit')).to.match(/Rate limit: \d+ of 600 left, resets in \d+ s/)
    await pageA.locator('#sign-in-form [name=email]').fill(ada.email)
    await screenshot(pageA, 'signin')
  })

  it('signs up and in, in each context on its own instance; the list is cached (X-Cache, Cache-Status)', async () => {
    await signUp(pageA, ada)
    expect(await pageA.textContent('#who')).to.equal('Signed in as Ada')
    adaId = Number(await pageA.getAttribute('#users tr:has(.pill) ', 'data-user-id'))
    expect(adaId).to.be.above(0)
    await signUp(pageB, bob)
    expect(await pageB.textContent('#who')).to.equal('Signed in as Bob')
    await rowShows(pageB, adaId, 'Ada')
    // the list is fetched without the cookie: the shared cache answers it, MISS and then HIT
    await pageB.click('#refresh-users')
    await pageB.click('#refresh-users')
    await pageB.locator('#x-cache', { hasText: 'X-Cache: HIT' }).waitFor()
    expect(await pageB.textContent('#cache-status')).to.match(/; hit; ttl=\d+/)
  })

  it("A edits its name: B's list and live feed follow without a reload", async () => {
    await pageA.locator('body[data-screen=users] #feed-state', { hasText: 'live' }).waitFor()
    await pageB.locator('#feed-state', { hasText: 'live' }).waitFor()
    await pageB.evaluate('window.notReloaded = true')
    await pageA.click('[data-nav=profile]')
    await waitForScreen(pageA, 'profile')
    expect(await pageA.inputValue('#profile-form [name=name]')).to.equal('Ada')
    expect(await pageA.textContent('#profile-email')).to.equal(ada.email)
    await pageA.fill('#profile-form [name=name]', 'Ada Lovelace')
    await pageA.click('#profile-form button[type=submit]')
    await pageA.locator('#flash', { hasText: 'Saved: you are now Ada Lovelace.' }).waitFor()
    expect(await pageA.textContent('#who')).to.equal('Signed in as Ada Lovelace')

    await rowShows(pageB, adaId, 'Ada Lovelace')
    await pageB.locator('#feed li[data-event="user.updated"]', { hasText: `user #${adaId} (Ada Lovelace)` }).waitFor()
    // the update invalidated the cached list on every instance: B's reload was a MISS
    expect(await pageB.textContent('#x-cache')).to.equal('X-Cache: MISS')
    expect(await pageB.evaluate('window.notReloaded')).to.equal(true)
    await screenshot(pageA, 'profile')
    await pageB.waitForTimeout(2_600) // the highlight of the changed row fades
    await screenshot(pageB, 'users')
  })

  it("B's feed resumes after its instance restarted: the event published meanwhile arrives, once", async () => {
    await pageB.locator('#feed-state', { hasText: 'live' }).waitFor()
    // B's instance restarts on the same port: its EventSource loses the stream and retries (with
    // Last-Event-ID) until the instance is back; meanwhile A's change is published.
    const port = new URL(b!.url).port
    await b!.stop()
    await pageB.locator('#feed-state', { hasText: /reconnecting|offline/ }).waitFor()
    await pageA.click('[data-nav=profile]')
    await waitForScreen(pageA, 'profile')
    await pageA.fill('#profile-form [name=name]', 'Ada King')
    await pageA.click('#profile-form button[type=submit]')
    await pageA.locator('#flash', { hasText: 'Saved: you are now Ada King.' }).waitFor()
    b = await startServer({ ...env, PORT: port })
    const missed = pageB.locator('#feed li[data-event="user.updated"]', { hasText: `user #${adaId} (Ada King)` })
    await missed.waitFor({ timeout: 20_000 })
    await pageB.locator('#feed-state', { hasText: 'live' }).waitFor()
    expect(await missed.count(), 'the missed event, once').to.equal(1)
    expect(await pageB.locator('#feed li[data-event="resync"]').count(), 'no resync: nothing was lost').to.equal(0)
    // back to the name the later steps expect
    await pageA.fill('#profile-form [name=name]', 'Ada Lovelace')
    await pageA.click('#profile-form button[type=submit]')
    await pageA.locator('#flash', { hasText: 'Saved: you are now Ada Lovelace.' }).waitFor()
  })

  it('sessions: every session of the user with its device, this one marked; revoking one signs that device out', async () => {
    // B signs out of Bob and into Ada; a phone signs into Ada on B too: Ada has three sessions
    await pageB.click('#sign-out')
    await waitForScreen(pageB, 'signin')
    await signIn(pageB, ada.email)
    const phone = await open(b!.url, { userAgent: IPHONE })
    await signIn(phone, ada.email)

    await pageA.click('[data-nav=sessions]')
    await waitForScreen(pageA, 'sessions')
    const rows = pageA.locator('#sessions tr')
    await rows.nth(2).waitFor()
    expect(await rows.count()).to.equal(3)
    const current = pageA.locator('#sessions tr.current')
    expect(await current.count()).to.equal(1)
    expect(await current.textContent()).to.include('this one')
    expect(await current.textContent()).to.match(/Headless Chrome \d+ on Linux/)
    const phoneRow = pageA.locator('#sessions tr', { hasText: 'Safari 17 on iOS' })
    expect(await phoneRow.count()).to.equal(1)
    await screenshot(pageA, 'sessions')

    await phoneRow.locator('button', { hasText: 'Revoke' }).click()
    await pageA.locator('#flash', { hasText: 'Revoked the session of Safari 17 on iOS.' }).waitFor()
    await pageA.waitForFunction("document.querySelectorAll('#sessions tr').length === 2")
    // the phone's next action finds itself signed out
    await phone.click('[data-nav=profile]')
    await waitForScreen(phone, 'signin')
    expect(await phone.textContent('#flash')).to.include('You were signed out')
    expect(await authOf(phone)).to.equal('signed-out')
  })

  it('sign out everywhere in A signs B (the same user on the other instance) out on its next action', async () => {
    expect(await authOf(pageB)).to.equal('signed-in')
    await pageA.click('#sign-out-everywhere')
    await waitForScreen(pageA, 'signin')
    expect(await pageA.textContent('#flash')).to.equal('Signed out everywhere: 2 sessions ended.')

    // B still shows Ada until it does something
    expect(await pageB.textContent('#who')).to.equal('Signed in as Ada Lovelace')
    await pageB.click('[data-nav=profile]')
    await waitForScreen(pageB, 'signin')
    expect(await pageB.textContent('#flash')).to.include('You were signed out')
    expect(await pageB.isVisible('#who')).to.equal(false)
  })

  it('rate limits: the remaining requests are shown, and a 429 shows "retry in N s"', async () => {
    // an instance allowing 10 requests a minute (the page itself takes 7: HTML, CSS, JS, /me, /users, /events, /stats)
    const page = await open(`http://127.0.0.1:${(limited!.server.address() as { port: number }).port}`, {
      hash: '#/users',
    })
    await waitForScreen(page, 'users')
    expect(await page.textContent('#rate-limit')).to.match(/Rate limit: \d of 10 left, resets in \d+ s/)
    for (let i = 0; i < 10 && !(await page.isVisible('#rate-limit.limited')); i++) {
      await page.click('#refresh-users')
      await page.waitForTimeout(100)
    }
    const line = page.locator('#rate-limit.limited')
    await line.waitFor()
    expect(await line.textContent()).to.match(/^Rate limited \(429\): retry in \d+ s$/)
    expect(await page.textContent('#users-error')).to.match(/Too many requests; try again in \d+ s\./)
    await screenshot(page, 'rate-limited')
  })

  it('no page broke its CSP or threw', () => {
    expect(problems).to.deep.equal([])
  })
})
