/** on-headers ships no types: runs `listener` (as `res`) once, just before the head is written. */
declare module 'on-headers' {
  import type { ServerResponse } from 'node:http'

  function onHeaders<R extends ServerResponse>(res: R, listener: (this: R) => void): void
  export default onHeaders
}
