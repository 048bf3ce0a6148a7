import { expect } from 'chai'
import { createClient } from 'redis'
import { loadConfig } from '../src/config.js'
import { createJobQueue, JobInputError, type JobQueue, runJobWorker } from '../src/jobs/index.js'
import { connectRedis } from '../src/redis.js'
import {
  clusterNodes,
  deleteKeys,
  expectClusterUp,
  keysUnder,
  logIn,
  recordingLogger,
  signedInUser,
  startApp,
  testEnv,
  uniqueEmail,
} from './helpers/app.js'
import { completed, eventually, jobState, readMailLog, uniqueMailLog } from './helpers/jobs.js'
import { startWorker, type WorkerProcess } from './helpers/processes.js'
import { type DisposableRedis, startDisposableRedis } from './helpers/redis.js'
import { type SmtpSink, startSmtpSink } from './helpers/smtp-sink.js'

const welcome = (email = uniqueEmail()) => ({ userId: 1, email, name: 'Ann' })

describe('background jobs (BullMQ): a queue and worker processes on real Redis', function () {
  this.timeout(90_000)
  let env: Record<string, string>
  let jobs: JobQueue
  let workers: WorkerProcess[]
  let sink: SmtpSink | undefined
  let disposable: DisposableRedis | undefined

  /** A test's settings: its own queue (REDIS_PREFIX) and mail log, a short backoff. */
  function setUp(overrides: Record<string, string> = {}) {
    env = testEnv({ MAIL_LOG: uniqueMailLog(), JOB_BACKOFF_MS: '100', ...overrides }) as Record<string, string>
    jobs = createJobQueue(loadConfig(env), recordingLogger())
  }
  const worker = async (overrides: Record<string, string> = {}) => {
    const started = await startWorker({ ...env, ...overrides })
    workers.push(started)
    return started
  }

  beforeEach(() => {
    workers = []
    sink = undefined
    disposable = undefined
  })
  afterEach(async () => {
    await Promise.all(workers.map((each) => each.stop(1_000)))
    await jobs?.close()
    await sink?.close()
    await disposable?.stop()
    await deleteKeys(env.REDIS_PREFIX!)
  })

  it('refuses an unknown job, data that does not fit and a malformed job id, naming the problem', async () => {
    setUp()
    const enqueue = jobs.enqueue as (name: string, data: unknown, id: string) => Promise<void>
    await expectRejection(enqueue('send-spam', {}, 'a'), JobInputError, /unknown job "send-spam".*welcome-email/)
    await expectRejection(enqueue('welcome-email', { userId: 1, name: 'x' }, 'a'), JobInputError, /email/)
    await expectRejection(
      enqueue('email-change-notice', { userId: 1, to: 'c@x.io', oldEmail: 'a@x.io', newEmail: 'b@x.io' }, 'a'),
      JobInputError,
      /to: to must be oldEmail or newEmail/,
    )
    await expectRejection(enqueue('welcome-email', welcome(), 'welcome:1'), JobInputError, /job id/)
    await expectRejection(enqueue('welcome-email', welcome(), '42'), JobInputError, /integer/)
  })

  it('delivers once a job whose mail server refused it twice (retried with backoff)', async () => {
    sink = await startSmtpSink({ 1: 'refuse', 2: 'refuse' })
    setUp({ SMTP_URL: sink.url })
    const started = await worker()
    await jobs.enqueue('welcome-email', welcome('ann@example.com'), 'welcome-email.test-1')
    expect(await completed(jobs, 'welcome-email.test-1')).to.equal(3)
    expect(sink.connections()).to.equal(3)
    expect(sink.mails).to.have.length(1)
    expect(sink.mails[0]).to.include({ jobId: 'welcome-email.test-1' })
    expect(sink.mails[0]!.to).to.deep.equal(['ann@example.com'])
    expect(started.stderr().match(/failed \(attempt \d of 5\).*retrying with backoff/g)).to.have.length(2)
    expect(started.stderr()).not.to.include('maxmemory-policy') // the suite's Redis has noeviction
  })

  it('gives a job whose worker was SIGKILLed mid-job to another worker (stalled-job recovery)', async () => {
    sink = await startSmtpSink({ 1: 'hang' })
    // short locks and stalled checks here only: a worker slowed down by a busy machine could lose a short lock
    setUp({ SMTP_URL: sink.url, JOB_LOCK_MS: '2000', JOB_STALLED_INTERVAL_MS: '1000' })
    const first = await worker()
    await jobs.enqueue('welcome-email', welcome(), 'welcome-email.test-2')
    await eventually(() => sink!.connections() === 1, 15_000, 'the first worker to be sending')
    expect(await jobState(jobs, 'welcome-email.test-2')).to.equal('active')
    first.child.kill('SIGKILL')
    await worker()
    // its lock expires (JOB_LOCK_MS), the second worker's stalled check returns it to wait and runs it
    expect(await completed(jobs, 'welcome-email.test-2', 30_000)).to.equal(1)
    expect(sink.mails.map((mail) => mail.jobId)).to.deep.equal(['welcome-email.test-2'])
  })

  it('finishes the job in hand on SIGTERM before the worker exits', async () => {
    sink = await startSmtpSink({ 1: 'slow' })
    setUp({ SMTP_URL: sink.url })
    const started = await worker()
    await jobs.enqueue('welcome-email', welcome(), 'welcome-email.test-3')
    await eventually(() => sink!.connections() === 1, 15_000, 'the worker to be sending')
    const exit = await started.stop(15_000)
    expect(exit.killed, started.stderr()).to.equal(false)
    expect(sink.mails.map((mail) => mail.jobId)).to.deep.equal(['welcome-email.test-3'])
    expect(await jobState(jobs, 'welcome-email.test-3')).to.equal('completed')
    expect(started.stdout()).to.include('job worker stopped')
  })

  it('sends one mail for the same job enqueued twice, and again once it completed', async () => {
    setUp({ WORKER_CONCURRENCY: '1' })
    await worker()
    const data = welcome()
    await Promise.all([
      jobs.enqueue('welcome-email', data, 'welcome-email.test-4'),
      jobs.enqueue('welcome-email', data, 'welcome-email.test-4'),
    ])
    await completed(jobs, 'welcome-email.test-4')
    await jobs.enqueue('welcome-email', data, 'welcome-email.test-4') // kept as completed: a no-op
    // a job enqueued after it runs after it (one queue, one at a time): once its mail is there, a repeat would be too
    await jobs.enqueue('welcome-email', welcome(), 'welcome-email.test-4-after')
    await completed(jobs, 'welcome-email.test-4-after')
    const mails = await readMailLog(env.MAIL_LOG!)
    expect(mails.map((mail) => mail.jobId)).to.deep.equal(['welcome-email.test-4', 'welcome-email.test-4-after'])
    expect(mails[0]).to.include({ to: data.email, subject: 'Welcome to the sample app' })
  })

  it('goes on after a restart of a Redis without persistence, which loses every job it held', async () => {
    disposable = await startDisposableRedis()
    setUp({ QUEUE_REDIS_URL: disposable.url, WORKER_CONCURRENCY: '1' })
    const started = await worker()
    await jobs.enqueue('welcome-email', welcome(), 'welcome-email.before')
    await completed(jobs, 'welcome-email.before')
    // jobs waiting when Redis goes away (the queue paused, so that none runs before)
    await jobs.queue().pause()
    await jobs.enqueue('welcome-email', welcome(), 'welcome-email.waiting-1')
    await jobs.enqueue('welcome-email', welcome(), 'welcome-email.waiting-2')
    expect(await jobs.queue().getWaitingCount()).to.equal(2)

    await disposable.restart() // empty: no RDB, no AOF

    // what is lost: every waiting (and delayed, and running) job, the completed and failed ones kept,
    // the pause, and so the memory of ids already done
    await eventually(async () => {
      try {
        await jobs.queue().getJobCounts()
        return true
      } catch {
        return false
      }
    })
    const counts = await jobs.queue().getJobCounts()
    expect(
      Object.values(counts).every((count) => count === 0),
      JSON.stringify(counts),
    ).to.equal(true)
    expect(await jobState(jobs, 'welcome-email.waiting-1')).to.equal('missing')
    // what goes on: the producer and the worker reconnect (the worker never exited), and a job enqueued again runs
    await eventually(async () => {
      try {
        await jobs.enqueue('welcome-email', welcome(), 'welcome-email.before') // runs again: its completion was lost
        await jobs.enqueue('welcome-email', welcome(), 'welcome-email.after')
        return true
      } catch {
        return false
      }
    })
    await completed(jobs, 'welcome-email.after')
    expect(started.child.exitCode).to.equal(null)
    const sent = (await readMailLog(env.MAIL_LOG!)).map((mail) => mail.jobId)
    expect(sent).to.deep.equal(['welcome-email.before', 'welcome-email.before', 'welcome-email.after'])
  })

  it('warns at startup when the queue Redis may evict keys (maxmemory-policy other than noeviction)', async () => {
    disposable = await startDisposableRedis()
    const admin = createClient({ url: disposable.url })
    await admin.connect()
    await admin.configSet('maxmemory-policy', 'allkeys-lru')
    admin.destroy()
    setUp({ QUEUE_REDIS_URL: disposable.url })
    const started = await worker()
    await eventually(() => started.stderr().includes('maxmemory-policy allkeys-lru'), 10_000, 'the warning')
    expect(started.stderr()).to.match(/BullMQ needs noeviction.*QUEUE_REDIS_URL/)
  })
})

async function expectRejection(promise: Promise<unknown>, type: new () => Error, message: RegExp): Promise<void> {
  const error = await promise.then(
    () => undefined,
    (error: unknown) => error,
  )
  expect(error).to.be.instanceOf(type)
  expect((error as Error).message).to.match(message)
}

describe('background jobs in the app', function () {
  this.timeout(60_000)
  const quiet = () => ({ ...recordingLogger(), log() {} })

  it('account-cleanup ends every session of the user', async () => {
    const app = await startApp({ RUN_WORKER: 'false' })
    const jobs = createJobQueue(app.config, quiet())
    const worker = runJobWorker(app.config, app.services.redis, quiet())
    try {
      const user = await signedInUser(app)
      const second = await logIn(app, user)
      for (const cookie of [user.cookie, second])
        expect((await app.http().get('/me').set('Cookie', cookie)).status).to.equal(200)
      await jobs.enqueue('account-cleanup', { userId: user.id }, 'account-cleanup.test-1')
      await completed(jobs, 'account-cleanup.test-1')
      for (const cookie of [user.cookie, second])
        expect((await app.http().get('/me').set('Cookie', cookie)).status).to.equal(401)
    } finally {
      await worker.close()
      await jobs.close()
      await app.close()
    }
  })

  it('runs on the Redis Cluster (REDIS_CLUSTER_NODES) with the queue in one hash slot, once per job id', async () => {
    await expectClusterUp(clusterNodes)
    const config = loadConfig(testEnv({ REDIS_CLUSTER_NODES: clusterNodes, MAIL_LOG: uniqueMailLog() }))
    const redis = connectRedis(config, quiet())
    const jobs = createJobQueue(config, quiet())
    const worker = runJobWorker(config, redis.redis, quiet())
    try {
      await jobs.enqueue('welcome-email', welcome(), 'welcome-email.cluster-1')
      await jobs.enqueue('welcome-email', welcome(), 'welcome-email.cluster-1')
      await jobs.enqueue('welcome-email', welcome(), 'welcome-email.cluster-2')
      await completed(jobs, 'welcome-email.cluster-1')
      await completed(jobs, 'welcome-email.cluster-2')
      const sent = (await readMailLog(config.jobs.mailLog)).map((mail) => mail.jobId).sort()
      expect(sent).to.deep.equal(['welcome-email.cluster-1', 'welcome-email.cluster-2'])
      const keys = await keysUnder(config.redisPrefix, config.redisClusterNodes)
      expect(keys.length).to.be.greaterThan(0)
      expect(keys.every((key) => key.startsWith(`${config.redisPrefix}{jobs}:jobs:`))).to.equal(true)
    } finally {
      await worker.close()
      await jobs.close()
      redis.destroy()
      await deleteKeys(config.redisPrefix, config.redisClusterNodes)
    }
  })
})
