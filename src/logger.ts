import { pino, type Logger, type DestinationStream } from 'pino';

/** Field paths that hold secrets anywhere in a log object. */
const REDACT_PATHS = [
  'token',
  'password',
  'authorization',
  '*.token',
  '*.password',
  '*.authorization',
  '*.Authorization',
  'headers.authorization',
  '*.headers.authorization',
  'config.fairPassword',
  'config.discordToken',
  'config.slackBotToken',
  'config.slackSigningSecret',
  'config.slackAppToken',
  'interactionToken',
  '*.interactionToken',
  'responseUrl',
  '*.responseUrl',
];

export interface LoggerOptions {
  level?: string;
  /** Where lines go; tests pass a stream they read. Defaults to stdout. */
  destination?: DestinationStream | NodeJS.WritableStream;
  /** Exact secret values scrubbed from every line, whatever field or message holds them. */
  secrets?: string[];
}

export function createLogger(options: LoggerOptions = {}): Logger {
  const secrets = (options.secrets ?? []).filter((s) => s.length >= 4);
  const destination = (options.destination ?? pino.destination({ dest: 1, sync: false })) as DestinationStream;
  // Path redaction covers known fields; the scrubber catches a secret that slips into
  // an error message or a URL (e.g. a platform SDK's error text).
  const scrubbed: DestinationStream =
    secrets.length === 0
      ? destination
      : {
          write(line: string) {
            let out = line;
            for (const secret of secrets) if (out.includes(secret)) out = out.split(secret).join('[REDACTED]');
            destination.write(out);
          },
        };
  return pino(
    {
      level: options.level ?? 'info',
      redact: { paths: REDACT_PATHS, censor: '[REDACTED]' },
      base: { name: 'fairbot' },
    },
    scrubbed,
  );
}
