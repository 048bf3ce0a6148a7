import { expect } from 'chai'
import { compareStreamIds, parseStreamId, STREAM_ID_EXPECTED } from '../../../src/notifier/fanout.js'

const MAX = '18446744073709551615'

describe('stream entry ids (fan-out positions, history `after`, subscribe `from`)', () => {
  describe('parseStreamId: as Redis reads it in XREAD and XRANGE, written as Redis writes it', () => {
    it('<ms>-<seq>, leading zeros dropped', () => {
      expect(parseStreamId('1700000000000-0')).to.equal('1700000000000-0')
      expect(parseStreamId('0-0')).to.equal('0-0')
      expect(parseStreamId('0001-0002')).to.equal('1-2')
      expect(parseStreamId(`${'0'.repeat(100)}5-7`)).to.equal('5-7')
    })

    it('each part up to 2^64-1, compared exactly (past what a double holds)', () => {
      expect(parseStreamId(`${MAX}-${MAX}`)).to.equal(`${MAX}-${MAX}`)
      expect(parseStreamId('18446744073709551616-0')).to.equal(undefined)
      expect(parseStreamId(`0-18446744073709551616`)).to.equal(undefined)
      expect(parseStreamId('9007199254740993-0')).to.equal('9007199254740993-0')
    })

    it('at most 127 characters, whatever they hold', () => {
      const id = `${'0'.repeat(125)}1-0`
      expect(id).to.have.length(128)
      expect(parseStreamId(id)).to.equal(undefined)
      expect(parseStreamId(id.slice(1))).to.equal('1-0')
    })

    it('refused: special ids, a bare <ms>, signs, spaces, fractions, empty parts, other types', () => {
      for (const value of [
        '$',
        '>',
        '-',
        '+',
        '*',
        '0',
        '1700000000000',
        '1-*',
        '+1-0',
        '-1-0',
        '1--1',
        ' 1-0',
        '1-0 ',
        '1-0\n',
        '1.5-0',
        '-0',
        '1-',
        '1-0-0',
        '１-0',
        '',
        1,
        null,
        undefined,
        ['1-0'],
      ])
        expect(parseStreamId(value), JSON.stringify(value)).to.equal(undefined)
    })

    it('what the error messages say it takes', () => {
      expect(STREAM_ID_EXPECTED).to.equal("a stream entry id like '1700000000000-0' (two integers from 0 to 2^64-1)")
    })
  })

  it('compareStreamIds: by milliseconds, then sequence, as 64-bit integers', () => {
    expect(compareStreamIds('1-0', '1-0')).to.equal(0)
    expect(compareStreamIds('1-0', '2-0')).to.equal(-1)
    expect(compareStreamIds('2-0', '1-9')).to.equal(1)
    expect(compareStreamIds('5-2', '5-10')).to.equal(-1)
    expect(compareStreamIds('9007199254740993-0', '9007199254740992-0')).to.equal(1)
    expect(compareStreamIds(`${MAX}-${MAX}`, `${MAX}-18446744073709551614`)).to.equal(1)
    const ids = ['10-0', '9-5', '9-10', '100-0', '9-0']
    expect(ids.sort(compareStreamIds)).to.deep.equal(['9-0', '9-5', '9-10', '10-0', '100-0'])
  })
})
