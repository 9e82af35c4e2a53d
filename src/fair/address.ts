import { isIPv4, isIPv6 } from 'node:net';

/** RFC 1123 labels: letters, digits and inner hyphens, 1 to 63 characters. */
const DNS_LABEL = /^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$/i;

/**
 * A node's `host_address` from Fair's GET /nodes, as the host part of a URL, or undefined
 * when it is not a host. It goes straight into the diffusion server's URL, so only an IPv4
 * address, an IPv6 address (returned in brackets, as a URL writes it) or a DNS name is
 * taken: nothing with a scheme, port, path, query, user info or whitespace.
 */
export function hostForUrl(value: string): string | undefined {
  if (isIPv4(value)) return value;
  const bare = value.startsWith('[') && value.endsWith(']') ? value.slice(1, -1) : value;
  // A zone id (fe80::1%eth0) would need escaping in a URL and means nothing off the node.
  if (isIPv6(bare) && !bare.includes('%')) return `[${bare}]`;
  const name = value.endsWith('.') ? value.slice(0, -1) : value;
  if (name.length === 0 || name.length > 253) return undefined;
  const labels = name.split('.');
  // An all-digit last label would be a malformed IPv4 address (WHATWG URLs parse 1.2.3 as one).
  if (/^\d+$/.test(labels.at(-1)!)) return undefined;
  return labels.every((label) => DNS_LABEL.test(label)) ? name.toLowerCase() : undefined;
}
