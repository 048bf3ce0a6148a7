/**
 * What grew in a process's heap between two of its heap snapshots: the objects of the later one
 * that the earlier one did not have (V8 keeps an object's id from one snapshot to the next),
 * each charged to the first older object that holds it (following its retainers through newer
 * objects), grouped by that holder, named by the path that leads to it:
 *
 *   tsx scripts/heap-growth.ts before.heapsnapshot after.heapsnapshot
 *
 * e.g. `Map <-verified- CookieCodec <-codec- Sessions`: the entries a session cookie cache
 * added since the first snapshot. The soak (scripts/soak.ts) prints it for each server.
 */
import { readFileSync } from 'node:fs'
import { pathToFileURL } from 'node:url'

interface Snapshot {
  snapshot: { meta: { node_fields: string[]; node_types: [string[]]; edge_fields: string[]; edge_types: [string[]] } }
  nodes: number[]
  edges: number[]
  strings: string[]
}

const read = (file: string) => JSON.parse(readFileSync(file, 'utf8')) as Snapshot

/** The ids of every object of a snapshot. */
function objectIds(file: string): Set<number> {
  const { snapshot, nodes } = read(file)
  const fields = snapshot.meta.node_fields
  const ids = new Set<number>()
  for (let i = fields.indexOf('id'); i < nodes.length; i += fields.length) ids.add(nodes[i] as number)
  return ids
}

/** Rows `KiB objects holder <-edge- its holder ...`, the largest growth first. */
export function heapGrowth(before: string, after: string, rows = 15): string[] {
  const old = objectIds(before)
  const { snapshot, nodes, edges, strings } = read(after)
  const { node_fields: nf, node_types, edge_fields: ef, edge_types } = snapshot.meta
  const [nodeTypes, edgeTypes] = [node_types[0], edge_types[0]]
  const [W, EW] = [nf.length, ef.length]
  const [typeAt, nameAt, idAt, sizeAt, countAt] = ['type', 'name', 'id', 'self_size', 'edge_count'].map((f) =>
    nf.indexOf(f),
  ) as [number, number, number, number, number]
  const [edgeTypeAt, edgeNameAt, toAt] = ['type', 'name_or_index', 'to_node'].map((f) => ef.indexOf(f)) as [
    number,
    number,
    number,
  ]
  const count = nodes.length / W
  const at = (node: number, field: number) => nodes[node * W + field] as number
  // each node's first edge, then every node's retainers (the node and the edge that hold it)
  const firstEdge = new Uint32Array(count + 1)
  for (let node = 0, edge = 0; node < count; node++) {
    firstEdge[node] = edge
    edge += at(node, countAt) * EW
  }
  firstEdge[count] = edges.length
  const retainerStart = new Uint32Array(count + 1)
  for (let edge = 0; edge < edges.length; edge += EW) retainerStart[(edges[edge + toAt] as number) / W + 1]!++
  for (let node = 0; node < count; node++) retainerStart[node + 1]! += retainerStart[node]!
  const retainers = new Uint32Array(edges.length / EW)
  const retainerEdges = new Uint32Array(edges.length / EW)
  const filled = retainerStart.slice(0, count)
  for (let node = 0; node < count; node++) {
    for (let edge = firstEdge[node]!; edge < firstEdge[node + 1]!; edge += EW) {
      const slot = filled[(edges[edge + toAt] as number) / W]!++
      retainers[slot] = node
      retainerEdges[slot] = edge
    }
  }
  const isNew = (node: number) => !old.has(at(node, idAt))
  const label = (node: number) => {
    const type = nodeTypes[at(node, typeAt)] as string
    return /string|number/.test(type)
      ? `(${type})`
      : `${type === 'object' ? '' : `${type} `}${strings[at(node, nameAt)]}`
  }
  const edgeName = (edge: number) => {
    const type = edgeTypes[edges[edge + edgeTypeAt] as number]
    return type === 'element' || type === 'hidden' ? '[]' : String(strings[edges[edge + edgeNameAt] as number])
  }
  /** The strongest-looking retainer of a node (an older one first), or undefined. */
  const holder = (node: number): [number, number] | undefined => {
    let best: [number, number] | undefined
    for (let slot = retainerStart[node]!; slot < retainerStart[node + 1]!; slot++) {
      const [from, edge] = [retainers[slot]!, retainerEdges[slot]!]
      if (edgeTypes[edges[edge + edgeTypeAt] as number] === 'weak') continue
      if (nodeTypes[at(from, typeAt)] === 'synthetic') continue
      if (!best || (!isNew(from) && isNew(best[0]))) best = [from, edge]
    }
    return best
  }
  const groups = new Map<string, { objects: number; bytes: number }>()
  for (let node = 0; node < count; node++) {
    if (!isNew(node)) continue
    let current = node
    for (let step = 0; step < 12 && isNew(current); step++) {
      const up = holder(current)
      if (!up) break
      current = up[0]
    }
    // the holder, then three of its own holders: what the growth belongs to
    const path = [label(current)]
    for (let up = holder(current), step = 0; up && step < 3; up = holder(up[0]), step++) {
      path.push(`<-${edgeName(up[1])}- ${label(up[0])}`)
    }
    const key = `${path.join(' ')} #${at(current, idAt)}`
    const group = groups.get(key) ?? { objects: 0, bytes: 0 }
    group.objects++
    group.bytes += at(node, sizeAt)
    groups.set(key, group)
  }
  return [...groups]
    .sort((a, b) => b[1].bytes - a[1].bytes)
    .slice(0, rows)
    .map(
      ([key, { objects, bytes }]) =>
        `${(bytes / 1024).toFixed(0).padStart(7)} KiB ${String(objects).padStart(7)}  ${key}`,
    )
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  const [before, after] = process.argv.slice(2)
  if (!before || !after) throw new Error('usage: tsx scripts/heap-growth.ts before.heapsnapshot after.heapsnapshot')
  console.log(heapGrowth(before, after, 30).join('\n'))
}
