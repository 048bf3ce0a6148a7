import { type Decision, waitOf } from './local.js'

interface Block {
  /** Until when (monotonic ms) the client is refused. */
  until: number
  /** The cost and limit of the refused request: a request of the same limit and no smaller cost is refused too. */
  cost: number
  limit: number
  decision: Decision
  /** When (monotonic ms) the decision was made: its windows' resets count down from then. */
  at: number
  /** What get() answers: the decision counted down to the last get(), rewritten by each (see get). */
  now: Decision
}

/**
 * The clients Redis said are over their limit, until the moment a request would next be
 * admitted (the decision's wait, kept on this host's monotonic clock, so that neither clock
 * skew nor a change of the wall clock moves it). At most `maxKeys` clients: the least
 * recently blocked go first.
 */
export class BlockCache {
  private readonly blocks = new Map<string, Block>()

  constructor(private readonly maxKeys: number) {}

  /** Remembers a refused request's decision, for as long as it says the client must wait. */
  set(key: string, cost: number, limit: number, decision: Decision): void {
    const wait = waitOf(decision)
    if (!(wait > 0)) return
    const at = performance.now()
    const now = { ...decision, windows: decision.windows.map((window) => ({ ...window })) }
    this.blocks.delete(key)
    this.blocks.set(key, { until: at + wait, cost, limit, decision, at, now })
    if (this.blocks.size > this.maxKeys) this.blocks.delete(this.blocks.keys().next().value!)
  }

  /**
   * The decision to give a request of `cost` against `limit` without asking Redis, its
   * times counted down to now; undefined when the client is not (or no longer) known to be
   * blocked for such a request. A blocked client's requests are answered from memory, many
   * a second: rather than a new decision each time, the same object is rewritten by the next
   * get() for this client, so the caller reads it before it yields.
   */
  get(key: string, cost: number, limit: number): Decision | undefined {
    const block = this.blocks.get(key)
    if (block === undefined) return undefined
    const now = performance.now()
    if (now >= block.until) {
      this.blocks.delete(key)
      return undefined
    }
    if (cost < block.cost || limit !== block.limit) return undefined
    const elapsed = now - block.at
    const { decision } = block
    block.now.blockMs = Math.max(0, Math.ceil(decision.blockMs - elapsed))
    for (let i = 0; i < decision.windows.length; i++)
      block.now.windows[i]!.resetMs = Math.max(1, Math.ceil(decision.windows[i]!.resetMs - elapsed))
    return block.now
  }

  delete(key: string): void {
    this.blocks.delete(key)
  }
}
