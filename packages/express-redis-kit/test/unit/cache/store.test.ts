import { expect } from 'chai'
import { tagCopyKeys } from '../../../src/cache/store.js'
import { clusterSlot, encodeKeyPart } from '../../../src/shared/redis.js'

const SLOTS = 16_384

/** How far round the slot space `slot` is from `from` (0 to 16383). */
const distance = (from: number, slot: number) => (slot - from + SLOTS) % SLOTS

describe('tagCopyKeys: the copies of a tag’s fence, spread round the Cluster’s slots', () => {
  it('one copy: <prefix>tag:{<tag>}', () => {
    expect(tagCopyKeys('cache:', 'user:42', 1)).to.deep.equal(['cache:tag:{user:42}'])
  })

  for (const count of [2, 3, 5]) {
    it(`${count} copies: copy j about j/${count} of the way round from the first, within a quarter of a step`, () => {
      for (const tag of ['user:42', 'products', 'a', 'x'.repeat(150)]) {
        const keys = tagCopyKeys('cache:', tag, count)
        expect(keys).to.have.length(count)
        expect(keys[0]).to.equal(`cache:tag:{${tag}}`)
        const home = clusterSlot(keys[0]!)
        const step = SLOTS / count
        for (let j = 1; j < count; j++) {
          expect(keys[j]).to.match(new RegExp(`^cache:tag:\\{${tag}#${j}\\.\\d+\\}$`))
          const offset = distance(home, clusterSlot(keys[j]!))
          expect(offset, `${tag} copy ${j}`).to.be.at.least(Math.floor(j * step))
          expect(offset, `${tag} copy ${j}`).to.be.below(Math.floor(j * step) + Math.floor(step / 4))
        }
      }
    })
  }

  it('a tag with braces, # or unicode is encoded first: each copy keeps one hash tag', () => {
    for (const tag of ['a{b}', '#1', 'café']) {
      const name = encodeKeyPart(tag)
      const keys = tagCopyKeys('cache:', tag, 3)
      expect(keys[0]).to.equal(`cache:tag:{${name}}`)
      for (const key of keys) expect(key.match(/[{}]/g)).to.deep.equal(['{', '}'])
    }
  })

  it('no copy of one tag is the first key of another', () => {
    const firsts = new Set(['user:42', 'user:42#1', 'user:42#1.0', 'a'].map((tag) => tagCopyKeys('p:', tag, 1)[0]))
    for (const key of tagCopyKeys('p:', 'user:42', 3).slice(1)) expect(firsts.has(key), key).to.equal(false)
  })
})
