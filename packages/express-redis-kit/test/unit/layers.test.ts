import { readdirSync, readFileSync } from 'node:fs'
import { dirname, join, relative, resolve } from 'node:path'
import { expect } from 'chai'

/*
 * The layering docs/architecture.md describes: the features (rate-limit, session, cache,
 * notifier, express-session) never import each other, only shared/; shared/ imports no feature.
 * Read from the sources' import statements.
 */
const SRC = resolve(import.meta.dirname, '../../src')
const FEATURES = ['rate-limit', 'session', 'cache', 'notifier', 'express-session']

/** Every file of src/ and the src/ folders (or top-level files) its relative imports reach. */
function imports(): { file: string; reaches: string }[] {
  const found: { file: string; reaches: string }[] = []
  const walk = (dir: string) => {
    for (const entry of readdirSync(dir, { withFileTypes: true })) {
      const path = join(dir, entry.name)
      if (entry.isDirectory()) walk(path)
      else if (entry.name.endsWith('.ts')) {
        const text = readFileSync(path, 'utf8')
        for (const [, target] of text.matchAll(/^(?:import|export)[^'"]*from '(\.[^']+)'/gm)) {
          const reached = relative(SRC, resolve(dirname(path), target!))
          found.push({ file: relative(SRC, path), reaches: reached.split('/')[0]! })
        }
      }
    }
  }
  walk(SRC)
  return found
}

describe('layers: features meet only through shared/', () => {
  const all = imports()

  it('the sources were read', () => {
    expect(all.length).to.be.greaterThan(50)
  })

  for (const feature of FEATURES) {
    it(`${feature}/ imports only itself and shared/`, () => {
      const outside = all.filter(
        ({ file, reaches }) => file.startsWith(`${feature}/`) && reaches !== feature && reaches !== 'shared',
      )
      expect(outside).to.deep.equal([])
    })
  }

  it('shared/ imports no feature', () => {
    expect(all.filter(({ file, reaches }) => file.startsWith('shared/') && reaches !== 'shared')).to.deep.equal([])
  })

  it('metrics.ts reads the diagnostics channels, never a feature', () => {
    expect(all.filter(({ file, reaches }) => file === 'metrics.ts' && FEATURES.includes(reaches))).to.deep.equal([])
  })
})
