import { expect } from 'chai'
import { createJobQueue, runJobWorker } from '../src/jobs/index.js'
import {
  clusterNodes,
  expectClusterUp,
  PASSWORD,
  recordingLogger,
  signedInUser,
  signUp,
  startApp,
  type TestApp,
  uniqueEmail,
} from './helpers/app.js'
import { eventually, readMailLog, uniqueMailLog } from './helpers/jobs.js'

const modes: { name: string; env: Record<string, string> }[] = [
  { name: 'a single Redis', env: {} },
  { name: 'a Redis Cluster', env: { REDIS_CLUSTER_NODES: clusterNodes } },
]

for (const mode of modes)
  describe(`jobs through the outbox on ${mode.name}: the mail a user gets`, function () {
    this.timeout(60_000)
    const quiet = () => ({ ...recordingLogger(), log() {} })
    let app: TestApp
    let mailLog: string
    let stop: () => Promise<void>

    before(async () => {
      if (mode.env.REDIS_CLUSTER_NODES !== undefined) await expectClusterUp(clusterNodes)
    })
    beforeEach(async () => {
      mailLog = uniqueMailLog()
      app = await startApp({ ...mode.env, MAIL_LOG: mailLog, OUTBOX_POLL_MS: '200' })
      const worker = runJobWorker(app.config, app.services.redis, quiet())
      stop = async () => {
        await worker.close()
        await app.close()
      }
    })
    afterEach(() => stop())

    const mailsTo = async (address: string, subject?: RegExp) =>
      (await readMailLog(mailLog)).filter((mail) => mail.to === address && (!subject || subject.test(mail.subject)))
    const welcomes = (address: string) => mailsTo(address, /^Welcome/)

    it('sends one welcome mail on sign-up', async () => {
      const user = await signUp(app)
      await eventually(async () => (await welcomes(user.email)).length > 0, 20_000, 'the welcome mail')
      // a later job's mail is there once every job enqueued before it ran: a repeat of the welcome would be too
      const later = await signUp(app)
      await eventually(async () => (await welcomes(later.email)).length > 0, 20_000, 'the second welcome mail')
      const [mail, ...more] = await welcomes(user.email)
      expect(more).to.have.length(0)
      expect(mail!.jobId).to.match(/^welcome-email\.outbox-\d+$/)
      expect(mail!.text).to.include(user.name)
    })

    it('sends a notice to the old and to the new address on an email change', async () => {
      const user = await signedInUser(app)
      const newEmail = uniqueEmail('new')
      const res = await app
        .http()
        .patch(`/users/${user.id}`)
        .set('Cookie', user.cookie)
        .send({ email: newEmail, currentPassword: PASSWORD })
      expect(res.status, res.text).to.equal(200)
      await eventually(
        async () =>
          (await mailsTo(user.email, /changed/)).length > 0 && (await mailsTo(newEmail, /changed/)).length > 0,
        20_000,
        'both notices',
      )
      const [toOld] = await mailsTo(user.email, /changed/)
      const [toNew] = await mailsTo(newEmail, /changed/)
      expect(toOld!.text).to.include(`to ${newEmail}`).and.include('did not make this change')
      expect(toNew!.text).to.include(`it was ${user.email}`)
      expect(toOld!.jobId).not.to.equal(toNew!.jobId)
    })

    it('sends a second welcome mail to an address signed up again after its account was deleted', async () => {
      const jobs = createJobQueue(app.config, quiet())
      try {
        const user = await signedInUser(app)
        await eventually(async () => (await welcomes(user.email)).length === 1, 20_000, 'the first welcome mail')
        const deleted = await app
          .http()
          .delete(`/users/${user.id}`)
          .set('Cookie', user.cookie)
          .send({ currentPassword: user.password })
        expect(deleted.status, deleted.text).to.equal(204)
        await eventually(
          async () => (await jobs.queue().getCompleted()).some((job) => job.name === 'account-cleanup'),
          20_000,
          'the cleanup job',
        )
        await signUp(app, { email: user.email })
        await eventually(async () => (await welcomes(user.email)).length === 2, 20_000, 'the second welcome mail')
        const ids = (await welcomes(user.email)).map((mail) => mail.jobId)
        expect(new Set(ids).size).to.equal(2)
      } finally {
        await jobs.close()
      }
    })
  })
