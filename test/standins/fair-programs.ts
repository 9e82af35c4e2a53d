// Strict validation of the programs the Fair stand-in accepts (login, nodes, programs under /api/v0): what a
// malformed program breaks is reported as the 400 message, so a client bug shows as a test
// failure with its reason, not as a container that never comes.

/** A program's kind is its first command: [Create, Start(, Wait)] is 'Create'. */
export const PROGRAM_KINDS = ['Create', 'Kill', 'Wait'] as const;
export type ProgramKind = (typeof PROGRAM_KINDS)[number];

/** One validated command; `$0` references are resolved by the stand-in when it runs. */
export type Command = { type: 'Create'; hostPort: number } | { type: 'Start' } | { type: 'Wait'; containerId: string } | { type: 'Kill'; containerId: string };

type Obj = Record<string, unknown>;
export const isObj = (v: unknown): v is Obj => typeof v === 'object' && v !== null && !Array.isArray(v);

function shape(v: unknown, keys: string[], where: string): Obj {
  if (!isObj(v)) throw new Error(`${where} must be an object`);
  const extra = Object.keys(v).filter((k) => !keys.includes(k));
  const missing = keys.filter((k) => !(k in v));
  if (extra.length) throw new Error(`${where}: unexpected key(s) ${extra.join(', ')}`);
  if (missing.length) throw new Error(`${where}: missing key(s) ${missing.join(', ')}`);
  return v;
}

const isPort = (p: unknown): p is number => Number.isInteger(p) && (p as number) > 0 && (p as number) < 65536;

/** Validates a Create command and returns its first host port. */
function validateCreate(cmd: unknown): number {
  const create = shape(cmd, ['type', 'container_desc'], 'commands[0]');
  const desc = shape(create.container_desc, ['image', 'runtime', 'ports', 'command', 'host_config'], 'container_desc');
  if (typeof desc.image !== 'string' || !desc.image) throw new Error('container_desc.image must be a non-empty string');
  if (typeof desc.runtime !== 'string' || !desc.runtime) throw new Error('container_desc.runtime must be a non-empty string');
  if (!Array.isArray(desc.command) || !desc.command.every((c) => typeof c === 'string')) {
    throw new Error('container_desc.command must be an array of strings');
  }
  const hc = shape(desc.host_config, ['network_mode'], 'container_desc.host_config');
  if (typeof hc.network_mode !== 'string' || !hc.network_mode) throw new Error('host_config.network_mode must be a string');
  if (!Array.isArray(desc.ports) || desc.ports.length === 0) throw new Error('container_desc.ports must be a non-empty array');
  const hostPorts = desc.ports.map((m: unknown, i) => {
    if (!Array.isArray(m) || m.length !== 2) throw new Error(`ports[${i}] must be a [host, container] pair`);
    const host = shape(m[0], ['port', 'ip'], `ports[${i}][0]`);
    const cont = shape(m[1], ['port', 'protocol'], `ports[${i}][1]`);
    if (!isPort(host.port) || !isPort(cont.port)) throw new Error(`ports[${i}]: ports must be integers 1-65535`);
    if (host.ip !== 'null') throw new Error(`ports[${i}][0].ip must be the string "null"`);
    if (cont.protocol !== 'Tcp') throw new Error(`ports[${i}][1].protocol must be "Tcp"`);
    return host.port;
  });
  return hostPorts[0]!;
}

/** The `container_id` of command i; `$0` only where command 0 made a container. */
function containerRef(cmd: unknown, i: number, createdFirst: boolean): string {
  const c = shape(cmd, ['type', 'container_id'], `commands[${i}]`);
  const id = c.container_id;
  if (typeof id !== 'string' || !id) throw new Error(`commands[${i}].container_id must be a non-empty string`);
  if (createdFirst && id !== '$0') throw new Error(`commands[${i}].container_id must be "$0"`);
  if (!createdFirst && id.startsWith('$')) throw new Error(`commands[${i}].container_id ${id} names no earlier command`);
  return id;
}

/**
 * The programs fairbot (and the official client) send: `[Create, Start $0]` (detached),
 * `[Create, Start $0, Wait $0]` (the official client's non-detached run), `[Kill ID]`, `[Wait ID]`.
 * Throws the 400 message for anything else.
 */
export function validateProgram(cmds: unknown[]): { kind: ProgramKind; commands: Command[] } {
  const types = cmds.map((c) => (isObj(c) ? c.type : undefined)).join(',');
  switch (types) {
    case 'Create,Start':
    case 'Create,Start,Wait': {
      const hostPort = validateCreate(cmds[0]);
      containerRef(cmds[1], 1, true);
      const commands: Command[] = [{ type: 'Create', hostPort }, { type: 'Start' }];
      if (cmds.length === 3) commands.push({ type: 'Wait', containerId: containerRef(cmds[2], 2, true) });
      return { kind: 'Create', commands };
    }
    case 'Kill':
    case 'Wait':
      return { kind: types, commands: [{ type: types, containerId: containerRef(cmds[0], 0, false) }] };
    default:
      throw new Error(`unsupported program [${types}]`);
  }
}
