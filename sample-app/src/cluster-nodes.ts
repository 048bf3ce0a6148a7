/** `host:port`: a host name, an IPv4 address or a bracketed IPv6 address, and a port. */
const HOST_PORT = /^(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?):(\d{1,5})$/

/**
 * Parses REDIS_CLUSTER_NODES: a comma-separated list of `host:port` (some or all of the
 * Cluster's nodes; node-redis discovers the rest). Empty or blank: no Cluster (`[]`). Returns
 * the nodes, or `{ error }` naming the variable and the first entry that is not `host:port`.
 */
export function parseClusterNodes(text: string, name = 'REDIS_CLUSTER_NODES'): string[] | { error: string } {
  if (text.trim() === '') return []
  const nodes = text.split(',').map((node) => node.trim())
  for (const node of nodes) {
    const port = Number(HOST_PORT.exec(node)?.[1])
    if (!(port >= 1 && port <= 65535)) {
      return {
        error: `${name} must be a comma-separated list of host:port (e.g. 10.0.0.1:7000,10.0.0.2:7000); ${JSON.stringify(node)} is not one`,
      }
    }
  }
  return nodes
}
