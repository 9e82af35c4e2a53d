/**
 * A node's host_address from Fair goes into the diffusion server's URL: only a host is
 * taken (src/fair/address.ts), and FairClient.listNodes drops a node whose address is not one.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { hostForUrl } from '../src/fair/address.js';
import { FairClient } from '../src/fair/client.js';
import { createLogger } from '../src/logger.js';
import { LogCapture } from './helpers/app.js';
import { startFairStandin, type FairStandin } from './standins/fair.js';

describe('hostForUrl', () => {
  it.each([
    ['192.168.1.20', '192.168.1.20'],
    ['10.0.0.1', '10.0.0.1'],
    ['::1', '[::1]'],
    ['[2001:db8::7]', '[2001:db8::7]'],
    ['fd00::a:b', '[fd00::a:b]'],
    ['gpu-1.example.com', 'gpu-1.example.com'],
    ['GPU-Node.Example.COM.', 'gpu-node.example.com'],
    ['localhost', 'localhost'],
    ['node7', 'node7'],
  ])('takes %j as %j', (value, host) => {
    expect(hostForUrl(value)).toBe(host);
  });

  it.each([
    '',
    'evil.example/steal?x=',
    '10.0.0.1/infer',
    '10.0.0.1:8080',
    'http://10.0.0.1',
    'user@10.0.0.1',
    'host name',
    'host\n.example',
    'a..b',
    '-lead.example',
    'trail-.example',
    'under_score.example',
    '1.2.3',
    '256.1.1.1',
    'fe80::1%eth0',
    '[::1',
    '10.0.0.1#frag',
    `${'a'.repeat(64)}.example`,
    `${'a.'.repeat(127)}ab`,
  ])('refuses %j', (value) => {
    expect(hostForUrl(value)).toBeUndefined();
  });
});

describe('FairClient.listNodes and host_address', () => {
  let fair: FairStandin | undefined;
  afterEach(async () => {
    await fair?.close();
    fair = undefined;
  });

  it('drops a node whose host_address is not a host (with a warning), keeps one without any', async () => {
    const nodes = [
      { node_id: 'redirect', host_address: 'evil.example/collect?to=' },
      { node_id: 'not-text', host_address: 42 },
      { node_id: 'no-address' },
      { node_id: 'v6', host_address: '2001:db8::7' },
      { node_id: 'v4', host_address: '10.1.2.3' },
    ];
    fair = await startFairStandin({ email: 'a@example.com', password: 'pw-for-nodes', nodes: nodes as never });
    const logs = new LogCapture();
    const client = new FairClient({
      serverUrl: fair.url,
      email: 'a@example.com',
      password: 'pw-for-nodes',
      logger: createLogger({ level: 'debug', destination: logs }),
    });
    expect(await client.listNodes()).toEqual([
      { nodeId: 'no-address' },
      { nodeId: 'v6', hostAddress: '[2001:db8::7]' },
      { nodeId: 'v4', hostAddress: '10.1.2.3' },
    ]);
    const warnings = logs.entries().filter((e) => e.msg === 'Fair lists a node whose host_address is not a host; node ignored');
    expect(warnings.map((w) => w.nodeId)).toEqual(['redirect', 'not-text']);
  });
});
