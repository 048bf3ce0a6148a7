/** Express 4 under the alias `express4` (a devDependency), typed as Express: the tests use what both majors share. */
declare module 'express4' {
  import express from 'express'
  export default express
}
