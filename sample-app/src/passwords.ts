import { randomBytes, type ScryptOptions, scrypt, timingSafeEqual } from 'node:crypto'
import diagnostics from 'node:diagnostics_channel'
import { type Algorithm, hash as argon2, verify as argon2Verify } from '@node-rs/argon2'

/**
 * Argon2id with OWASP's minimum (Password Storage Cheat Sheet): 19 MiB of memory, 2 passes, 1 lane;
 * about 25 ms a hash here (the scrypt before: about 220 ms), on libuv's thread pool. Stored as the
 * standard PHC string, parameters and salt included (`$argon2id$v=19$m=19456,t=2,p=1$<salt>$<hash>`),
 * so raising them later only affects new hashes, and a sign-in rehashes a hash made with weaker
 * ones (needsRehash).
 */
const ARGON2 = { algorithm: 2 satisfies Algorithm.Argon2id, memoryCost: 19_456, timeCost: 2, parallelism: 1 }
const ARGON2ID = /^\$argon2id\$v=19\$m=(\d+),t=(\d+),p=(\d+)\$[A-Za-z0-9+/]+\$[A-Za-z0-9+/]+$/

// The scheme before Argon2id, still verified: scrypt N=2^15, r=8, p=1 (32 MiB), below OWASP's
// N=2^17. Its hashes are replaced by Argon2id ones at the next successful sign-in.
const PARAMETERS = { N: 2 ** 15, r: 8, p: 1 }
const KEY_LENGTH = 32

/** What a message of {@link passwordWork} says: a password is hashed, or checked against a hash. */
export interface PasswordWork {
  operation: 'hash' | 'verify'
}

/**
 * Announces every Argon2id or scrypt computation, before it starts: the costly part of sign-up,
 * sign-in and credential changes, so that a metric (or a test) can count it.
 */
export const passwordWork = diagnostics.channel('sample-app:password-work')

function announce(operation: PasswordWork['operation']): void {
  if (passwordWork.hasSubscribers) passwordWork.publish({ operation } satisfies PasswordWork)
}

function derive(password: string, salt: Buffer, options: ScryptOptions): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    scrypt(password.normalize('NFKC'), salt, KEY_LENGTH, { ...options, maxmem: 256 * 1024 * 1024 }, (error, key) =>
      error ? reject(error) : resolve(key),
    )
  })
}

/** Hashes a password with Argon2id and a random salt: a PHC string (`$argon2id$v=19$m=19456,t=2,p=1$...`). */
export function hashPassword(password: string): Promise<string> {
  announce('hash')
  return argon2(password.normalize('NFKC'), ARGON2)
}

/** The scheme before Argon2id: `scrypt$N$r$p$salt$hash` (base64url). Only tests still make such hashes. */
export async function hashPasswordScrypt(password: string): Promise<string> {
  announce('hash')
  const salt = randomBytes(16)
  const key = await derive(password, salt, PARAMETERS)
  const { N, r, p } = PARAMETERS
  return ['scrypt', N, r, p, salt.toString('base64url'), key.toString('base64url')].join('$')
}

/** Checks a password against a stored hash (Argon2id, or the older scrypt) in constant time; a malformed hash never matches. */
export async function verifyPassword(password: string, stored: string): Promise<boolean> {
  if (stored.startsWith('$argon2')) {
    if (!ARGON2ID.test(stored)) return false
    announce('verify')
    return argon2Verify(stored, password.normalize('NFKC')).catch(() => false)
  }
  const [scheme, N, r, p, salt, hash] = stored.split('$')
  if (scheme !== 'scrypt' || salt === undefined || hash === undefined) return false
  const expected = Buffer.from(hash, 'base64url')
  announce('verify')
  const key = await derive(password, Buffer.from(salt, 'base64url'), { N: Number(N), r: Number(r), p: Number(p) })
  return key.length === expected.length && timingSafeEqual(key, expected)
}

/** Whether a stored hash should be replaced (at a sign-in that verified it): not Argon2id, or weaker parameters than now. */
export function needsRehash(stored: string): boolean {
  const match = ARGON2ID.exec(stored)
  if (!match) return true
  const [, m, t, p] = match.map(Number) as [number, number, number, number]
  return m < ARGON2.memoryCost || t < ARGON2.timeCost || p < ARGON2.parallelism
}

let dummyHash: Promise<string> | undefined

/**
 * Spends the time of a real check when the email is unknown, so that response times do not
 * tell which emails have an account.
 */
export async function verifyAgainstDummy(password: string): Promise<false> {
  dummyHash ??= hashPassword(randomBytes(16).toString('hex'))
  await verifyPassword(password, await dummyHash)
  return false
}
