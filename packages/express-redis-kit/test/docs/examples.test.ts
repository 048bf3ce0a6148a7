/*
 * The documents' code examples as the examples runner (consumers/examples.mjs) reads them: every
 * program carries a marker, every marker is valid. The runner itself installs the packed package
 * and runs them (npm test, consumer matrix); this fails first, without the network.
 */
import { expect } from 'chai'
import { parseCheck } from '../../consumers/examples/checks.mjs'
import { blocksOf, problems, programs, readExamples } from '../../consumers/examples/extract.mjs'

const fence = '```'

describe('the documents: code examples', () => {
  it('every ts/js block of the READMEs and docs/migrating.md has a valid example marker', async () => {
    const blocks = await readExamples()
    expect(problems(blocks)).to.deep.equal([])
    expect(programs(blocks).length, 'examples that run').to.be.greaterThan(20)
    for (const example of programs(blocks))
      for (const check of example.checks) expect(() => parseCheck(check), `${example.name}: ${check}`).not.to.throw()
  })

  it('a ts block without a marker, or an unlabelled one, is a problem; sh, yaml, json and text are not programs', () => {
    const markdown = [
      `${fence}ts`,
      'const a = 1',
      fence,
      fence,
      'plain',
      fence,
      `${fence}sh`,
      'npm test',
      fence,
      `${fence}text`,
      'output',
      fence,
    ].join('\n')
    const found = problems(blocksOf(markdown, 'doc.md'))
    expect(found).to.have.length(2)
    expect(found[0]).to.match(/^doc\.md:1: a `ts` block without an <!-- example: name --> marker/)
    expect(found[1]).to.match(/^doc\.md:4: a `unlabelled` block without/)
  })

  it('names are unique, continues names an earlier example, one Express major needs a reason, fields are known', () => {
    const markdown = [
      '<!-- example: one -->',
      `${fence}ts`,
      'const a = 1',
      fence,
      '<!-- example: one',
      'continues: missing',
      'express: 5',
      'redis: sometimes',
      'chek: GET / -> 200',
      '-->',
      `${fence}ts`,
      'const b = 2',
      fence,
    ].join('\n')
    const found = problems(blocksOf(markdown, 'doc.md')).join('\n')
    expect(found).to.include('doc.md:11: the example name "one" is used at doc.md:2 too')
    expect(found).to.include('continues "missing", which no example is named')
    expect(found).to.include('express: 5 runs on one major only: say why')
    expect(found).to.include('redis: "sometimes" is not one of')
    expect(found).to.include('unknown marker field "chek"')
  })

  it('a continuation runs after the code it continues, inherits its Redis, and maps its lines back', () => {
    const markdown = [
      '<!-- example: base',
      'redis: cluster',
      '-->',
      `${fence}ts`,
      'const a = 1',
      fence,
      'text',
      '  <!-- example: more',
      '  continues: base',
      '  check: GET /x -> 200',
      '  -->',
      `  ${fence}ts`,
      '  const b = a',
      `  ${fence}`,
    ].join('\n')
    const more = programs(blocksOf(markdown, 'doc.md'))[1]!
    expect(more.code).to.equal('const a = 1\n\nconst b = a\n')
    expect(more.redis).to.equal('cluster')
    expect(more.express).to.deep.equal(['4', '5'])
    expect(more.checks).to.deep.equal(['GET /x -> 200'])
    expect(more.segments).to.deep.equal([
      ['doc.md', 5, 2],
      ['doc.md', 13, 2],
    ])
  })

  it('a check reads its request (headers, JSON or form body) and what the response must hold', () => {
    expect(
      parseCheck('POST /login [X-Api-Key: k1] {"email":"a@b.c"} -> 302, location: /me, set-cookie, !x-cache, body~ ok'),
    ).to.deep.equal({
      method: 'POST',
      path: '/login',
      headers: { 'x-api-key': 'k1', 'content-type': 'application/json' },
      body: '{"email":"a@b.c"}',
      status: 302,
      expect: [
        { kind: 'equals', name: 'location', value: '/me' },
        { kind: 'present', name: 'set-cookie', value: undefined },
        { kind: 'absent', name: 'x-cache', value: undefined },
        { kind: 'contains', name: 'body', value: 'ok' },
      ],
    })
    expect(
      parseCheck('GET /x -> 200, ratelimit-policy~ "10-in-1sec"; q=10, !set-cookie~ Max-Age').expect,
    ).to.deep.equal([
      { kind: 'contains', name: 'ratelimit-policy', value: '"10-in-1sec"; q=10' },
      { kind: 'lacks', name: 'set-cookie', value: 'Max-Age' },
    ])
    expect(() => parseCheck('GET /x {"broken" -> 200')).to.throw()
    expect(() => parseCheck('GET /x 200')).to.throw(/->/)
  })
})
