import { expect } from 'chai'
import { OptionError } from '../../src/shared/errors.js'

/**
 * The message of the OptionError (a TypeError with code ERK_INVALID_OPTION) that `create`
 * throws; fails the test when it throws nothing, or anything else.
 */
export function optionErrorOf(create: () => unknown): string {
  try {
    create()
  } catch (error) {
    expect(error).to.be.instanceOf(OptionError).and.instanceOf(TypeError)
    expect(error).to.have.property('code', 'ERK_INVALID_OPTION')
    return (error as Error).message
  }
  throw new Error('nothing was thrown')
}
