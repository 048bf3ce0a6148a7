// The sample app's UI: plain JavaScript against the JSON API (no build step, no inline code:
// it runs under `Content-Security-Policy: default-src 'self'`).

const $ = (selector, root = document) => root.querySelector(selector)
const $$ = (selector, root = document) => [...root.querySelectorAll(selector)]

const state = {
  /** The signed-in user ({ id, email, name, ... }) or null. */
  me: null,
  users: [],
  next: null,
}

/** An error answer of the API: `{ error: { code, message } }` and its status. */
class ApiError extends Error {
  constructor(status, code, message) {
    super(message)
    this.status = status
    this.code = code
  }
}

/**
 * Calls the API with a JSON body; resolves to `{ data, res }`, rejects with an ApiError.
 * Every response's RateLimit header updates the rate-limit line; a 429 starts its countdown.
 */
async function api(method, path, { body, credentials = 'same-origin' } = {}) {
  const init = { method, credentials, headers: { Accept: 'application/json' } }
  if (body !== undefined) {
    init.headers['Content-Type'] = 'application/json'
    init.body = JSON.stringify(body)
  }
  let res
  try {
    res = await fetch(path, init)
  } catch {
    throw new ApiError(0, 'network_error', 'The server cannot be reached.')
  }
  showRateLimit(res)
  const text = res.status === 204 ? '' : await res.text()
  let data = null
  try {
    data = text ? JSON.parse(text) : null
  } catch {
    data = null
  }
  if (!res.ok) {
    const error = data?.error ?? { code: `http_${res.status}`, message: `${res.status} ${res.statusText}` }
    if (res.status === 429) startRetryCountdown(res)
    throw new ApiError(res.status, error.code, error.message)
  }
  return { data, res }
}

// ---- rate limits ----------------------------------------------------------------------------

/** The entries of a draft-8 `RateLimit` or `RateLimit-Policy` header: `"name"; r=1; t=2, "other"; ...`. */
function parseStructured(header) {
  const entries = []
  for (const match of (header ?? '').matchAll(/"([^"]*)"((?:\s*;\s*[a-z]+=[^;,]*)*)/g)) {
    const params = {}
    for (const param of match[2].matchAll(/([a-z]+)=([^;,]*)/g)) params[param[1]] = param[2].trim()
    entries.push({ name: match[1], params })
  }
  return entries
}

let retryTimer
let retryUntil = 0

function showRateLimit(res) {
  if (Date.now() < retryUntil) return // the countdown of a 429 stays until it ends
  const limits = parseStructured(res.headers.get('RateLimit'))
  if (limits.length === 0) return
  const quotas = new Map(parseStructured(res.headers.get('RateLimit-Policy')).map((p) => [p.name, p.params.q]))
  // the tightest of the limits this response counted against
  const tightest = limits.reduce((a, b) => (Number(b.params.r) < Number(a.params.r) ? b : a))
  const quota = quotas.get(tightest.name)
  const line = $('#rate-limit')
  line.classList.remove('limited')
  line.dataset.remaining = tightest.params.r
  line.textContent = `Rate limit: ${tightest.params.r}${quota ? ` of ${quota}` : ''} left, resets in ${tightest.params.t} s`
  line.title = `RateLimit: ${res.headers.get('RateLimit')}`
}

function startRetryCountdown(res) {
  const retryAfter = Number(res.headers.get('Retry-After'))
  const fromHeader = parseStructured(res.headers.get('RateLimit')).map((entry) => Number(entry.params.t))
  const seconds = retryAfter > 0 ? retryAfter : Math.max(1, ...fromHeader.filter((t) => t > 0))
  retryUntil = Date.now() + seconds * 1000
  const line = $('#rate-limit')
  line.classList.add('limited')
  line.dataset.remaining = '0'
  const tick = () => {
    const left = Math.ceil((retryUntil - Date.now()) / 1000)
    if (left <= 0) {
      clearInterval(retryTimer)
      line.classList.remove('limited')
      line.textContent = 'Rate limit: you can retry now'
      return
    }
    line.textContent = `Rate limited (429): retry in ${left} s`
  }
  clearInterval(retryTimer)
  tick()
  retryTimer = setInterval(tick, 1000)
}

// ---- small helpers --------------------------------------------------------------------------

let flashTimer
function flash(message, kind = 'info') {
  const box = $('#flash')
  box.textContent = message
  box.className = `flash ${kind}`
  box.hidden = false
  clearTimeout(flashTimer)
  flashTimer = setTimeout(() => {
    box.hidden = true
  }, 8000)
}

function showError(element, error) {
  element.textContent = error ? error.message : ''
  element.hidden = !error
}

const relative = new Intl.RelativeTimeFormat('en', { numeric: 'auto' })
function ago(iso) {
  const seconds = Math.round((new Date(iso).getTime() - Date.now()) / 1000)
  if (Math.abs(seconds) < 60) return relative.format(seconds, 'second')
  if (Math.abs(seconds) < 3600) return relative.format(Math.round(seconds / 60), 'minute')
  if (Math.abs(seconds) < 86400) return relative.format(Math.round(seconds / 3600), 'hour')
  return relative.format(Math.round(seconds / 86400), 'day')
}

function time(iso, withAgo = false) {
  const element = document.createElement('time')
  element.dateTime = iso
  element.title = new Date(iso).toLocaleString()
  element.textContent = withAgo ? ago(iso) : new Date(iso).toLocaleDateString()
  return element
}

function cell(...children) {
  const td = document.createElement('td')
  td.append(...children)
  return td
}

function tag(name, text, className) {
  const element = document.createElement(name)
  element.textContent = text
  if (className) element.className = className
  return element
}

/** "Chrome 126 on Linux" from a user agent string. */
function device(agent) {
  if (!agent) return 'Unknown device'
  const browsers = [
    [/Edg\/(\d+)/, 'Edge'],
    [/HeadlessChrome\/(\d+)/, 'Headless Chrome'],
    [/(?:Chrome|CriOS)\/(\d+)/, 'Chrome'],
    [/(?:Firefox|FxiOS)\/(\d+)/, 'Firefox'],
    [/Version\/(\d+)[^ ]* (?:Mobile\/\S+ )?Safari/, 'Safari'],
    [/^curl\/(\S+)/, 'curl'],
  ]
  const systems = [
    [/iPhone|iPad/, 'iOS'],
    [/Android/, 'Android'],
    [/Windows/, 'Windows'],
    [/Mac OS X/, 'macOS'],
    [/CrOS/, 'ChromeOS'],
    [/Linux/, 'Linux'],
  ]
  const found = browsers.find(([pattern]) => pattern.test(agent))
  const browser = found ? `${found[1]} ${found[0].exec(agent)[1]}` : agent.split(' ')[0]
  const system = systems.find(([pattern]) => pattern.test(agent))
  return system ? `${browser} on ${system[1]}` : browser
}

// ---- signed in or out -----------------------------------------------------------------------

function setMe(me) {
  state.me = me
  for (const element of $$('[data-signed-in]')) element.hidden = !me
  for (const element of $$('[data-signed-out]')) element.hidden = Boolean(me)
  $('#who').textContent = me ? `Signed in as ${me.name}` : ''
  document.body.dataset.auth = me ? 'signed-in' : 'signed-out'
}

/** A route that needs a user answered 401: this session ended elsewhere (revoked, signed out everywhere). */
function signedOutUnderneath() {
  setMe(null)
  flash('You were signed out: this session was ended (revoked, or signed out everywhere). Sign in again.', 'warn')
  go('signin')
}

/** Runs an action that needs a user; a 401 signs the page out. */
async function signedIn(action, errorElement) {
  showError(errorElement, null)
  try {
    return await action()
  } catch (error) {
    if (error instanceof ApiError && error.status === 401) signedOutUnderneath()
    else showError(errorElement, error)
    return undefined
  }
}

async function loadMe() {
  try {
    const { data } = await api('GET', '/me')
    setMe(data)
  } catch (error) {
    if (error instanceof ApiError && error.status === 401) setMe(null)
    else throw error
  }
}

// ---- screens --------------------------------------------------------------------------------

const SCREENS = ['signin', 'users', 'profile', 'sessions']
const NEEDS_USER = new Set(['profile', 'sessions'])

function go(screen) {
  if (location.hash !== `#/${screen}`) location.hash = `#/${screen}`
  else show(screen)
}

async function show(requested) {
  let screen = SCREENS.includes(requested) ? requested : state.me ? 'users' : 'signin'
  if (NEEDS_USER.has(screen) && !state.me) screen = 'signin'
  if (screen === 'signin' && state.me) screen = 'users'
  for (const section of $$('section[data-screen]')) section.hidden = section.dataset.screen !== screen
  for (const link of $$('[data-nav]')) link.classList.toggle('active', link.dataset.nav === screen)
  $('#loading').hidden = true
  document.body.dataset.screen = screen
  document.body.dataset.loaded = ''
  if (screen === 'users') await loadUsers()
  if (screen === 'profile') await loadProfile()
  if (screen === 'sessions') await loadSessions()
  // what it shows has arrived (a 401 meanwhile went to sign-in)
  if (document.body.dataset.screen === screen) document.body.dataset.loaded = screen
}

window.addEventListener('hashchange', () => show(location.hash.slice(2)))

// ---- sign in, sign up, sign out -------------------------------------------------------------

function formValues(form) {
  return Object.fromEntries(new FormData(form).entries())
}

async function submitting(form, action) {
  const button = $('button[type=submit]', form)
  const error = $('[data-error]', form)
  showError(error, null)
  button.disabled = true
  try {
    await action()
  } catch (failure) {
    showError(error, failure)
  } finally {
    button.disabled = false
  }
}

$('#sign-in-form').addEventListener('submit', (event) => {
  event.preventDefault()
  const form = event.currentTarget
  submitting(form, async () => {
    const { email, password } = formValues(form)
    const { data } = await api('POST', '/login', { body: { email, password } })
    form.reset()
    await loadMe()
    flash(`Welcome back, ${data.name}.`)
    go('users')
  })
})

$('#sign-up-form').addEventListener('submit', (event) => {
  event.preventDefault()
  const form = event.currentTarget
  submitting(form, async () => {
    const { name, email, password } = formValues(form)
    await api('POST', '/users', { body: { name, email, password } })
    await api('POST', '/login', { body: { email, password } })
    form.reset()
    await loadMe()
    flash(`Welcome, ${name}: your account is ready.`)
    go('users')
  })
})

$('#sign-out').addEventListener('click', async () => {
  try {
    await api('POST', '/logout')
  } catch (error) {
    if (!(error instanceof ApiError && error.status === 401)) return flash(error.message, 'error')
  }
  setMe(null)
  flash('Signed out.')
  go('signin')
})

// ---- users: the cached list -----------------------------------------------------------------

/**
 * The list is public: it is fetched without the session cookie, so that the shared response
 * cache serves it (a signed-in request bypasses it) and the X-Cache / Cache-Status it answers
 * with show HIT or MISS.
 */
async function loadUsers({ more = false, highlight } = {}) {
  const path = more && state.next ? state.next : '/users?limit=20'
  showError($('#users-error'), null)
  let answer
  try {
    answer = await api('GET', path, { credentials: 'omit' })
  } catch (error) {
    showError($('#users-error'), error)
    return
  }
  const { data, res } = answer
  const xCache = res.headers.get('X-Cache') ?? 'none'
  const badge = $('#x-cache')
  badge.textContent = `X-Cache: ${xCache}`
  badge.className = `badge cache-${xCache.toLowerCase()}`
  $('#cache-status').textContent = res.headers.get('Cache-Status') ?? ''
  state.users = more ? state.users.concat(data.users) : data.users
  state.next = data.next
  renderUsers(highlight)
}

function renderUsers(highlight) {
  const rows = state.users.map((user) => {
    const row = document.createElement('tr')
    row.dataset.userId = String(user.id)
    const name = tag('span', user.name, 'user-name')
    const you = state.me?.id === user.id ? [' ', tag('span', 'you', 'pill')] : []
    row.append(cell(String(user.id)), cell(name, ...you), cell(time(user.createdAt)))
    if (user.id === highlight) row.classList.add('changed')
    return row
  })
  $('#users').replaceChildren(...rows)
  $('#users-empty').hidden = state.users.length > 0
  $('#more-users').hidden = !state.next
}

$('#refresh-users').addEventListener('click', () => loadUsers())
$('#more-users').addEventListener('click', () => loadUsers({ more: true }))

// ---- the live feed (Server-Sent Events from every instance) ---------------------------------

const EVENTS = ['user.created', 'user.updated', 'user.deleted']

function addToFeed(name, text) {
  const item = document.createElement('li')
  item.append(tag('time', new Date().toLocaleTimeString()), ' ', tag('code', name), ' ', text)
  item.dataset.event = name
  const feed = $('#feed')
  feed.prepend(item)
  while (feed.children.length > 50) feed.lastElementChild.remove()
  $('#feed-empty').hidden = true
}

function setFeedState(text, kind) {
  const pill = $('#feed-state')
  pill.textContent = text
  pill.className = `pill ${kind}`
}

/** A user's public record (a cached response too) to name them in the feed; undefined if gone. */
async function publicUser(id, event) {
  if (event === 'user.deleted') return undefined
  try {
    return (await api('GET', `/users/${id}`, { credentials: 'omit' })).data
  } catch {
    return undefined
  }
}

/** The id of the last event received: a new EventSource resumes after it (the browser's own reconnects send it). */
let lastEventId

function connectFeed() {
  const source = new EventSource(lastEventId ? `/events?lastEventId=${encodeURIComponent(lastEventId)}` : '/events')
  source.addEventListener('open', () => setFeedState('live', 'ok'))
  source.addEventListener('error', () => {
    if (source.readyState === EventSource.CLOSED) {
      // an error answer (503, 429) ends an EventSource for good: try again a little later, from the last event
      setFeedState('offline: retrying', 'bad')
      setTimeout(connectFeed, 5000)
    } else setFeedState('reconnecting', 'bad')
  })
  for (const name of EVENTS) {
    source.addEventListener(name, async (event) => {
      if (event.lastEventId) lastEventId = event.lastEventId
      const { id } = JSON.parse(event.data)
      const before = state.users.find((user) => user.id === id)
      // the list on screen follows at once (another screen reloads it when it is shown)
      if (!$('section[data-screen=users]').hidden) await loadUsers({ highlight: id })
      const label = state.users.find((user) => user.id === id) ?? before ?? (await publicUser(id, name))
      addToFeed(name, `user #${id}${label ? ` (${label.name})` : ''}`)
      if (state.me?.id === id && name === 'user.updated') await loadMe()
    })
  }
  source.addEventListener('resync', () => {
    addToFeed('resync', 'events may have been missed: reloading')
    loadUsers()
  })
}

// ---- profile ----------------------------------------------------------------------------------

async function loadProfile() {
  const form = $('#profile-form')
  await signedIn(
    async () => {
      const { data } = await api('GET', '/me')
      setMe(data)
      $('#profile-id').textContent = `#${data.id}`
      $('#profile-email').textContent = data.email
      $('#profile-created').replaceChildren(time(data.createdAt))
      $('#profile-updated').replaceChildren(time(data.updatedAt, true))
      form.elements.name.value = data.name
    },
    $('[data-error]', form),
  )
}

$('#profile-form').addEventListener('submit', (event) => {
  event.preventDefault()
  const form = event.currentTarget
  const button = $('button[type=submit]', form)
  button.disabled = true
  signedIn(
    async () => {
      const { name } = formValues(form)
      const { data } = await api('PATCH', `/users/${state.me.id}`, { body: { name } })
      setMe(data)
      $('#profile-updated').replaceChildren(time(data.updatedAt, true))
      flash(`Saved: you are now ${data.name}.`)
    },
    $('[data-error]', form),
  ).finally(() => {
    button.disabled = false
  })
})

// ---- sessions ---------------------------------------------------------------------------------

async function loadSessions() {
  await signedIn(async () => {
    const { data } = await api('GET', '/sessions')
    const rows = data.sessions.map((session) => {
      const row = document.createElement('tr')
      row.dataset.handle = session.handle
      const name = tag('span', device(session.agent))
      name.title = session.agent || 'no user agent'
      const what = session.current ? [name, ' ', tag('span', 'this one', 'pill ok')] : [name]
      const revoke = tag('button', session.current ? 'Sign out' : 'Revoke', 'quiet')
      revoke.type = 'button'
      revoke.addEventListener('click', () => revokeSession(session))
      row.append(cell(...what), cell(time(session.createdAt, true)), cell(time(session.lastSeenAt, true)), cell(revoke))
      if (session.current) row.classList.add('current')
      return row
    })
    $('#sessions').replaceChildren(...rows)
  }, $('#sessions-error'))
}

async function revokeSession(session) {
  await signedIn(async () => {
    try {
      await api('DELETE', `/sessions/${encodeURIComponent(session.handle)}`)
    } catch (error) {
      if (error.status !== 404) throw error
      flash('That session had already ended.')
    }
    if (session.current) {
      setMe(null)
      flash('This session was revoked: you are signed out.')
      go('signin')
    } else {
      flash(`Revoked the session of ${device(session.agent)}.`)
      await loadSessions()
    }
  }, $('#sessions-error'))
}

$('#sign-out-everywhere').addEventListener('click', async () => {
  await signedIn(async () => {
    const { data } = await api('POST', '/logout-everywhere')
    setMe(null)
    flash(`Signed out everywhere: ${data.sessionsEnded} session${data.sessionsEnded === 1 ? '' : 's'} ended.`)
    go('signin')
  }, $('#sessions-error'))
})

// ---- live stats -------------------------------------------------------------------------------

/** How often the page asks for this instance's numbers. */
const STATS_EVERY_MS = 5000

/** Shows this instance's cache hit ratio and limited-request count (GET /stats); keeps the last ones if it fails. */
async function loadStats() {
  try {
    const { data } = await api('GET', '/stats')
    const { hits, misses, hitRatio } = data.cache
    const ratio = $('#hit-ratio')
    ratio.textContent = hitRatio === null ? 'no lookup yet' : `${Math.round(hitRatio * 100)}%`
    ratio.title = `${hits} hit${hits === 1 ? '' : 's'}, ${misses} miss${misses === 1 ? '' : 'es'}`
    $('#limited-count').textContent = String(data.rateLimit.limited)
    $('#live-stats').classList.remove('stale')
  } catch {
    $('#live-stats').classList.add('stale')
  }
}

// ---- start ------------------------------------------------------------------------------------

async function start() {
  try {
    await loadMe()
  } catch (error) {
    flash(error.message, 'error')
  }
  connectFeed()
  void loadStats()
  setInterval(loadStats, STATS_EVERY_MS)
  await show(location.hash.slice(2))
  document.body.dataset.ready = 'yes'
}

start()
