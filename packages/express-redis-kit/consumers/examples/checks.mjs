/*
 * The HTTP checks of an example marker (`check:` lines), run in order against the example's server
 * with one cookie jar per example:
 *
 *   METHOD PATH [Header: value]... [BODY] -> STATUS[, EXPECTATION]...
 *
 * PATH is the path on the first server the example listened on, or `:PORT/path` for the server it
 * asked for port PORT. BODY is JSON (`{...}`, sent as application/json) or `form:a=1&b=2`
 * (urlencoded). EXPECTATION: `name` (the response header is there), `!name` (it is not),
 * `name: value` (it equals value), `name~ text` (it contains text), `!name~ text` (it is there
 * without text), `body~ text` (the body contains text). Redirects are not followed.
 */

/** Parses one check line into `{ method, path, headers, body, status, expect: [{ kind, name, value }] }`. */
export function parseCheck(line) {
  const arrow = line.indexOf(' -> ')
  if (arrow === -1) throw new Error(`check "${line}": no " -> "`)
  let request = line.slice(0, arrow).trim()
  const expected = line.slice(arrow + 4).trim()
  const start = /^([A-Z]+)\s+(\S+)\s*/.exec(request)
  if (!start) throw new Error(`check "${line}": expected METHOD PATH`)
  const [, method, path] = start
  request = request.slice(start[0].length)
  const headers = {}
  for (let header = /^\[([^\]:]+):\s*([^\]]*)\]\s*/.exec(request); header; ) {
    headers[header[1].trim().toLowerCase()] = header[2].trim()
    request = request.slice(header[0].length)
    header = /^\[([^\]:]+):\s*([^\]]*)\]\s*/.exec(request)
  }
  let body
  if (request.startsWith('{') || request.startsWith('[')) {
    JSON.parse(request) // a typo in a marker fails here, not as a confusing 400
    body = request
    headers['content-type'] ??= 'application/json'
  } else if (request.startsWith('form:')) {
    body = request.slice(5)
    headers['content-type'] ??= 'application/x-www-form-urlencoded'
  } else if (request !== '') throw new Error(`check "${line}": cannot read "${request}"`)
  const [statusText, ...rest] = expected.split(/,\s+(?=!?[a-z][a-z0-9-]*\s*(?::|~|,|$))/i)
  const status = Number(statusText)
  if (!Number.isInteger(status)) throw new Error(`check "${line}": "${statusText}" is not a status`)
  const expect = rest.map((item) => {
    const match = /^(!?)([a-z][a-z0-9-]*)\s*(?:(:|~)\s*(.*))?$/i.exec(item.trim())
    if (!match) throw new Error(`check "${line}": cannot read the expectation "${item}"`)
    const [, not, name, operator, value] = match
    const kind = not
      ? operator === '~'
        ? 'lacks'
        : 'absent'
      : operator === ':'
        ? 'equals'
        : operator === '~'
          ? 'contains'
          : 'present'
    return { kind, name: name.toLowerCase(), value }
  })
  return { method, path, headers, body, status, expect }
}

/** Runs the checks in order; resolves to nothing, or rejects with what differed (and the response). */
export async function runChecks(lines, ports) {
  const jar = new Map()
  for (const line of lines) {
    const check = parseCheck(line)
    const target = /^:(\d+)(\/.*)$/.exec(check.path)
    const port = target ? ports.get(Number(target[1])) : ports.values().next().value
    if (port === undefined)
      throw new Error(`check "${line}": the example listens on no ${target ? `port ${target[1]}` : 'port'}`)
    const headers = { ...check.headers }
    if (jar.size > 0 && headers.cookie === undefined)
      headers.cookie = [...jar].map(([name, value]) => `${name}=${value}`).join('; ')
    const response = await fetch(`http://127.0.0.1:${port}${target ? target[2] : check.path}`, {
      method: check.method,
      headers,
      body: check.body,
      redirect: 'manual',
      signal: AbortSignal.timeout(10_000),
    })
    const body = await response.text()
    for (const cookie of response.headers.getSetCookie()) {
      const [pair, ...attributes] = cookie.split(';')
      const name = pair.slice(0, pair.indexOf('='))
      const cleared = attributes.some((attribute) => /^\s*(max-age=0|expires=thu, 01 jan 1970)/i.test(attribute))
      if (cleared) jar.delete(name)
      else jar.set(name, pair.slice(pair.indexOf('=') + 1))
    }
    const wrong = []
    if (response.status !== check.status) wrong.push(`status ${response.status}, expected ${check.status}`)
    const shown = (text) => JSON.stringify(text === null ? null : text.slice(0, 300))
    for (const { kind, name, value } of check.expect) {
      const actual = name === 'body' ? body : response.headers.get(name)
      if (kind === 'present' && actual === null) wrong.push(`no ${name} header`)
      if (kind === 'absent' && actual !== null) wrong.push(`${name}: ${actual}, expected none`)
      if (kind === 'equals' && actual !== value) wrong.push(`${name}: ${actual}, expected ${value}`)
      if (kind === 'contains' && !actual?.includes(value))
        wrong.push(`${name} ${shown(actual)}, expected to contain ${value}`)
      if (kind === 'lacks' && (actual === null || actual.includes(value)))
        wrong.push(`${name} ${shown(actual)}, expected one without ${value}`)
    }
    if (wrong.length > 0)
      throw new Error(`check "${line}": ${wrong.join('; ')}\n    response: ${response.status} ${body.slice(0, 300)}`)
  }
}
