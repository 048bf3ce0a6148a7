/** Types of checks.mjs, for the package's tests (see checks.mjs for the syntax). */
export interface Check {
  method: string
  path: string
  headers: Record<string, string>
  body: string | undefined
  status: number
  expect: { kind: 'present' | 'absent' | 'equals' | 'contains' | 'lacks'; name: string; value: string | undefined }[]
}
export function parseCheck(line: string): Check
export function runChecks(lines: string[], ports: Map<number, number>): Promise<void>
