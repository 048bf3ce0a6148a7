/** Types of extract.mjs, for the package's tests (see extract.mjs for what each does). */
export interface Marker {
  name: string
  continues: string | undefined
  express: string[] | undefined
  expressReason: string | undefined
  redis: string | undefined
  checks: string[]
  notRun: string | undefined
}
export interface Block {
  file: string
  line: number
  lang: string
  code: string
  marker: Marker | undefined
  problems: string[]
}
export interface Program extends Omit<Marker, 'express' | 'redis'> {
  express: string[]
  redis: string
  file: string
  line: number
  lang: string
  code: string
  segments: [string, number, number][]
}
export const DOCUMENTS: string[]
export const NOT_PROGRAMS: Set<string>
export const repositoryRoot: string
export function blocksOf(markdown: string, file: string): Block[]
export function readExamples(root?: string, documents?: string[]): Promise<Block[]>
export function problems(blocks: Block[]): string[]
export function programs(blocks: Block[]): Program[]
