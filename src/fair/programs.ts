/**
 * The wire form of the programs fairbot runs on a node, and how their answers are read.
 * Everything here that is inferred rather than documented is marked INFERRED, so the one
 * place to check against a real Fair cluster is this file:
 *
 * - Documented (the official client does it): `[Create, Start "$0"]` starts a container
 *   detached; a program whose last command is `{"type":"Wait","container_id":"$0"}` stays
 *   Processing while the container runs and completes when it exits, its result entry
 *   `{"Ok":{"exit_code":N}}`; statuses are Queued, NotResponding, Processing, Completed and
 *   anything else is an error.
 * - INFERRED: `[{"type":"Kill","container_id":ID}]` stops a container (the CLI's
 *   `fair node <node> kill <container>`); killing a container that is not running, or one
 *   that does not exist, answers an `Err` entry whose text says so (Docker's words).
 * - INFERRED: `[{"type":"Wait","container_id":ID}]` on an existing container behaves as the
 *   documented `Wait "$0"` does. A cluster that refuses it (400) only costs the early notice
 *   of a crash during start-up; the bot then finds out by the startup timeout, as before.
 * - INFERRED: `result` may be read while a program is Processing and then holds the entries
 *   of the commands finished so far (so the Create entry names the container before the
 *   image pull of a later command, or the Start, is over).
 */
export interface ContainerSpec {
  image: string;
  runtime: string;
  hostPort: number;
  containerPort: number;
}

export type FairCommand = Record<string, unknown> & { type: string };

/** The statuses Fair documents; anything else fails the program at once. */
export const PROGRAM_STATUSES = ['Queued', 'NotResponding', 'Processing', 'Completed'] as const;
export type ProgramStatus = (typeof PROGRAM_STATUSES)[number];

export function isProgramStatus(status: string): status is ProgramStatus {
  return (PROGRAM_STATUSES as readonly string[]).includes(status);
}

/** Create + Start, detached: command 1 names the container made by command 0 as "$0". */
export function startServerProgram(spec: ContainerSpec): FairCommand[] {
  return [
    {
      type: 'Create',
      container_desc: {
        image: spec.image,
        runtime: spec.runtime,
        // "ip" is the string "null" in Fair's wire format, not JSON null.
        ports: [
          [
            { port: spec.hostPort, ip: 'null' },
            { port: spec.containerPort, protocol: 'Tcp' },
          ],
        ],
        command: [],
        host_config: { network_mode: 'bridge' },
      },
    },
    { type: 'Start', container_id: '$0' },
  ];
}

/** INFERRED (see above): stops a container. */
export function killProgram(containerId: string): FairCommand[] {
  return [{ type: 'Kill', container_id: containerId }];
}

/** INFERRED (see above): completes when the container exits; its entry carries the exit code. */
export function waitProgram(containerId: string): FairCommand[] {
  return [{ type: 'Wait', container_id: containerId }];
}

/** INFERRED (see above): a Kill's Err that means the container is already gone, which is what a Kill is for. */
export function meansAlreadyGone(errText: string): boolean {
  return /no such container|is not running|not found/i.test(errText);
}

/** The exit code a Wait entry reports, if it is one. */
export function exitCodeOf(entry: unknown): number | undefined {
  const code = (entry as { exit_code?: unknown } | null)?.exit_code;
  return typeof code === 'number' && Number.isInteger(code) ? code : undefined;
}
