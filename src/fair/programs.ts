/**
 * The wire form of the programs fairbot runs on a node. Kept in one place because
 * the Kill form is inferred from the Fair CLI (`fair node <node> kill <container>`).
 */
export interface ContainerSpec {
  image: string;
  runtime: string;
  hostPort: number;
  containerPort: number;
}

export type FairCommand = Record<string, unknown> & { type: string };

/** Create + Start, detached: command 1 names the container made by command 0 as "$0". */
export function startServerProgram(spec: ContainerSpec): FairCommand[] {
  return [
    {
      type: 'Create',
      container_desc: {
        image: spec.image,
        runtime: spec.runtime,
        // "ip" is the string "null" in Fair's wire format, not JSON null.
        ports: [[{ port: spec.hostPort, ip: 'null' }, { port: spec.containerPort, protocol: 'Tcp' }]],
        command: [],
        host_config: { network_mode: 'bridge' },
      },
    },
    { type: 'Start', container_id: '$0' },
  ];
}

export function killProgram(containerId: string): FairCommand[] {
  return [{ type: 'Kill', container_id: containerId }];
}
