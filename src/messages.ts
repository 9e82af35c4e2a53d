import type { JobEvent, Requester } from './jobs/types.js';

/**
 * The one catalogue of texts users see. Handlers and adapters never write
 * user-facing strings of their own: they pick one here.
 */

const seconds = (s: number) => `${Math.max(0, Math.round(s))} s`;

function eta(etaS: number | undefined): string {
  if (etaS === undefined || !Number.isFinite(etaS)) return '';
  if (etaS < 90) return ` (about ${seconds(etaS)} to go)`;
  return ` (about ${Math.round(etaS / 60)} min to go)`;
}

/**
 * Text a server wrote (an error body, a Fair message), quoted in a message: its control
 * characters (terminal escapes, NUL, bell, line breaks) never reach a chat or a terminal.
 */
function serverText(text: string): string {
  return text
    .replace(/\p{Cc}+/gu, ' ')
    .replace(/ {2,}/g, ' ')
    .trim();
}

// Chat users ask an admin; in a terminal the user is the admin (see inTerminalWords).
const ASK_ADMIN_IF_REPEATED = 'tell an admin if it keeps happening';
const ASK_ADMIN_IF_FAILING = 'if it keeps failing, tell an admin';
const ASK_ADMIN_DATA_DIR = 'Tell an admin; try again later.';
const ASK_ADMIN = 'Tell an admin.';

export const messages = {
  // --- job progress, as the user watches it -------------------------------
  progress(event: JobEvent): string {
    switch (event.type) {
      case 'queued':
        return event.position <= 1 ? `Queued: you are next${eta(event.etaS)}.` : `Queued: position ${event.position}${eta(event.etaS)}.`;
      case 'warming':
        return `Warming up the GPU (${seconds(event.elapsedS)})${eta(event.etaS)}: the first image after a pause takes a little longer.`;
      case 'retrying':
        return `Retrying the GPU start in ${seconds(event.inS)}: the last attempt failed a moment ago.`;
      case 'generating':
        return `Generating your image${eta(event.etaS)}...`;
      case 'done':
        return 'Done: your image is posted in the channel.';
      case 'failed':
        return event.message;
    }
  },

  imageCaption(prompt: string, requester: Requester): string {
    const who = requester.userName ?? requester.userId;
    return `"${prompt}" (asked by ${who})`;
  },

  // --- refusals of /imagine -------------------------------------------------
  promptEmpty: 'Your prompt is empty. Describe the image you want, e.g. /imagine a red fox in the snow.',
  promptTooLong: (length: number, max: number) => `Your prompt is ${length} characters long; the limit is ${max}. Shorten it and try again.`,
  userLimit: (max: number) =>
    `You already have ${max} job${max === 1 ? '' : 's'} waiting, running or not yet posted (USER_MAX_PENDING is ${max}). Wait for one to finish, then try again.`,
  queueFull: (max: number) => `The queue is full: ${max} jobs are waiting (QUEUE_MAX is ${max}). Try again in a few minutes.`,
  storageFailed: `The bot could not record your job (its DATA_DIR is not writable). ${ASK_ADMIN_DATA_DIR}`,
  storageFull: `The bot could not record your job: its disk is full. ${ASK_ADMIN_DATA_DIR}`,
  storageBusy: "The bot's database is busy (held by another process); try again in a moment.",
  shuttingDown: 'The bot is restarting and not taking new jobs right now. Try again in a minute.',

  // --- job failures -----------------------------------------------------------
  startupFailed: (reason: string) =>
    `Could not start the GPU server: ${serverText(reason)}. Your image was not generated; try again in a minute, and ${ASK_ADMIN_IF_REPEATED}.`,
  startupTimeout: (timeoutS: number) =>
    `The GPU server did not become ready within ${Math.round(timeoutS)} s (STARTUP_TIMEOUT_S). Your image was not generated; try again in a few minutes, and ${ASK_ADMIN_IF_REPEATED}.`,
  startupBackoff: (retryInS: number, reason: string) =>
    `The GPU server failed to start a moment ago (${serverText(reason)}); the next attempt is in ${Math.ceil(retryInS)} s. Try again then.`,
  noServer: `No GPU server is configured: set FAIR_EMAIL and FAIR_PASSWORD so the bot can start one, or INFERENCE_URL to use a running one. ${ASK_ADMIN}`,
  inferenceFailed: (reason: string) => `Image generation failed: ${serverText(reason)}. Try again; ${ASK_ADMIN_IF_FAILING}.`,
  killedByAdmin: 'An admin stopped the GPU server, so your image was not generated. Run /imagine again to start it anew.',
  cancelled: 'Your job was cancelled.',
  stoppedForShutdown: 'The bot shut down before your image was generated. Run /imagine again.',
  deliveryFailed: (reason: string) => `Your image was generated but could not be posted: ${serverText(reason)}.`,

  // --- /gpu ---------------------------------------------------------------------
  adminOnly: 'Only admins can use /gpu (your user id is not in ADMIN_IDS).',
  gpuUsage: 'Usage: /gpu status (show the GPU server) or /gpu kill (stop it now).',
  gpuUnknownSubcommand: (sub: string) => `Unknown subcommand "${sub}". Usage: /gpu status or /gpu kill.`,
  gpuKilled: (jobsEnded: number) =>
    `Stopped the GPU server.${jobsEnded > 0 ? ` ${jobsEnded} job${jobsEnded === 1 ? '' : 's'} waiting or running ${jobsEnded === 1 ? 'was' : 'were'} ended.` : ''} The next /imagine starts it again.`,
  gpuKillConfirm: (waiting: number, running: number) =>
    `${waiting} job${waiting === 1 ? '' : 's'} waiting and ${running} running will end if you stop the GPU server now. Stop it anyway?`,
  gpuKillAborted: 'Kept the GPU server running.',
  cancelNotOwner: 'Only the person who asked for this image (or an admin) can cancel it.',
  cancelTooLate: 'This job has already finished, so there is nothing to cancel.',
  cancelDone: 'Cancelled.',
  rerollUnknown: 'That image is too old to re-roll (its prompt is no longer kept). Run /imagine again.',
  gpuNotRunning: 'The GPU server is not running; nothing to stop.',
  gpuKillFailed: (reason: string) =>
    `Could not stop the GPU server: ${serverText(reason)}. It may still be running; the bot keeps trying to stop it, and /gpu status shows what is pending.`,
  gpuKillPending: (reason: string, jobsEnded: number) =>
    `Not stopped yet: ${reason}.${jobsEnded > 0 ? ` ${jobsEnded} job${jobsEnded === 1 ? '' : 's'} waiting or running ${jobsEnded === 1 ? 'was' : 'were'} ended.` : ''} /gpu status shows when it is done.`,
  gpuKilledAnswerLost: (jobsEnded: number, node: string) =>
    `Not sure everything is stopped: the bot stopped the GPU server it knows of.${jobsEnded > 0 ? ` ${jobsEnded} job${jobsEnded === 1 ? '' : 's'} waiting or running ${jobsEnded === 1 ? 'was' : 'were'} ended.` : ''} One of its start requests got no answer from Fair and was sent again, so Fair may also have started a container the bot has no id for: check node ${node} (fair node ${node} ...).`,
  gpuKillExternal: (endpoint: string) =>
    `The GPU server at ${endpoint} was not started by this bot, so the bot did not stop it. Stop it where it was started (e.g. fair node <node> kill <container>).`,
  serverExited: (exitCode: number) => `the GPU server exited during start-up (exit code ${exitCode})`,

  // --- /gpu status lines every renderer shows (plain text, Slack, Discord) -------------
  statusPending: (what: string) => `Pending: ${what}`,
  statusExternal: 'Started outside this bot: it uses the server but never stops it.',
  statusBusyElsewhere: (what: string) => `Another fairbot process is ${what}`,
  statusControlPlane: (check: { ok: true; nodes: number } | { ok: false; reason: string }) =>
    check.ok ? `Fair control plane: answering (${check.nodes} node${check.nodes === 1 ? '' : 's'})` : `Fair control plane: not answering (${check.reason})`,
  gpuKillNotManaged: 'This bot does not manage the GPU server (no FAIR_EMAIL/FAIR_PASSWORD), so it cannot stop it.',
} as const;

/**
 * The catalogue's chat phrases and their wording in a terminal (the CLI), where the
 * user is the admin and types `fairbot imagine`. The most specific phrases come first.
 */
const TERMINAL_WORDING: ReadonlyArray<readonly [chat: string, terminal: string]> = [
  [ASK_ADMIN_IF_REPEATED, 'if it keeps happening, check the Fair settings (FAIR_*) and "fairbot gpu status"'],
  [ASK_ADMIN_IF_FAILING, 'if it keeps failing, check the diffusion server ("fairbot gpu status", its logs on the node)'],
  [ASK_ADMIN_DATA_DIR, 'Check that DATA_DIR is writable.'],
  [` ${ASK_ADMIN}`, ''],
  ['e.g. /imagine a red fox in the snow', 'e.g. fairbot imagine "a red fox in the snow"'],
  ['/imagine', 'fairbot imagine'],
  ['/gpu', 'fairbot gpu'],
];

/** A catalogue text as the CLI shows it. */
export function inTerminalWords(text: string): string {
  return TERMINAL_WORDING.reduce((out, [chat, terminal]) => out.split(chat).join(terminal), text);
}

// =============================================================================
// Start-up failures, for the operator reading the terminal or the container log:
// which platform, which variable, and whether it could not be reached (the address,
// the network) or refused the credential (the token).
// =============================================================================
export const startupMessages = {
  refused: (platform: string, variable: string, detail: string, fix: string) => `${platform} refused ${variable} (${detail}): ${fix}`,
  unreachable: (platform: string, variable: string, url: string, detail: string) =>
    `could not reach ${platform} at ${variable}=${url} (${detail}): check the address and this machine's network`,
  failed: (platform: string, detail: string) => `${platform} could not be started: ${detail}`,
  discordTokenFix: 'copy the bot token again (Developer Portal > your application > Bot > Reset Token)',
  slackBotTokenFix: 'copy the Bot User OAuth Token (xoxb-...) again from OAuth & Permissions, or reinstall the app',
  slackAppTokenFix: 'it must be an app-level token (xapp-...) with the connections:write scope',
} as const;

// =============================================================================
// Slack adapter (src/bots/slack): texts only the Slack side shows. Reasons are
// clauses (no final period): they complete messages.deliveryFailed(...).
// =============================================================================
export const slackMessages = {
  gpuWorking: 'Working on it...',
  notInChannel: 'I am not a member of this channel. Invite me with /invite @fairbot, then run /imagine again',
  channelNotFound:
    'Slack would not let me post in this conversation (direct messages and private channels need me as a member). Run /imagine in a channel I am in',
  archived: 'this channel is archived',
  rateLimited: 'Slack is rate-limiting the bot right now. Try again in a minute',
  uploadRefused: (detail: string) => `Slack refused the image upload (${detail})`,
  slackError: (code: string) => `Slack answered "${code}"`,
  unreachable: 'the bot could not reach Slack. Try again in a minute',
  unsupportedInteraction: 'This bot only answers the /imagine and /gpu commands.',
  internalError: 'Something went wrong on the bot side while handling your command (it has been logged). Try again.',
  unknownCommand: (command: string) => `I do not know ${command}. Use /imagine <prompt> or /gpu status|kill.`,
  restarting: 'The bot is restarting. Your job is kept and continues in a moment.',

  // --- buttons (Block Kit) -------------------------------------------------------
  cancelButton: 'Cancel',
  rerollButton: 'Re-roll',
  /** Next to the Re-roll button, under each image: the prompt (plain text, shown literally). */
  rerollPrompt: (prompt: string) => `Want another take on "${prompt}"? Re-roll makes a new image for whoever clicks.`,
  /** Notification text of the Re-roll message. */
  rerollFallback: 'Re-roll: the same prompt, a new image.',
  killConfirmButton: 'Confirm: stop it',
  killKeepButton: 'Keep it running',
  /** A button whose value the bot cannot read (edited or very old message). */
  buttonUnreadable: 'This button no longer works. Run the command again.',

  // --- /gpu status as Block Kit ----------------------------------------------------
  statusTitle: (state: string) => `GPU server: ${state}`,
  statusFieldState: 'State',
  statusFieldNode: 'Node',
  statusFieldContainer: 'Container',
  statusFieldUptime: 'Uptime',
  statusFieldColdStart: 'Last cold start',
  statusFieldJobs: 'Jobs',
  statusFieldGenerations: 'Generations in the last hour',
  statusFieldMedian: 'Median generation',
  statusFieldIdle: 'Idle shutdown',
  statusFieldLastGeneration: 'Last generation',
  statusNone: '-',
  statusStateFor: (state: string, duration: string) => `${state} for ${duration}`,
  statusJobs: (waiting: number, running: number) => `${waiting} waiting, ${running} running`,
  statusSeconds: (ms: number) => `${(ms / 1000).toFixed(1)} s`,
  statusIdleIn: (duration: string) => `in ${duration}`,
  statusIdleOff: 'not scheduled',
  statusAgo: (duration: string) => `${duration} ago`,
  statusEndpoint: (endpoint: string) => `Endpoint: ${endpoint}`,
  statusProgram: (programId: string) => `Program: ${programId}`,
  statusNextStart: (duration: string) => `Next start attempt in ${duration}`,
  statusLastError: (error: string) => `Last error: ${error}`,
  statusNotManaged: 'Not managed: no FAIR_EMAIL/FAIR_PASSWORD, using INFERENCE_URL only.',
  /** A duration for people: 45 s, 12 min, 3.5 h. */
  duration(ms: number): string {
    const s = Math.max(0, Math.round(ms / 1000));
    if (s < 120) return `${s} s`;
    if (s < 7200) return `${Math.round(s / 60)} min`;
    return `${(s / 3600).toFixed(1)} h`;
  },
} as const;

// =============================================================================
// Discord adapter (src/bots/discord): texts only Discord users see.
// Appended as its own object so the shared catalogue above stays untouched.
// =============================================================================

const megabytes = (bytes: number) =>
  bytes < 1024 * 1024 ? `${Math.round(bytes / 1024)} KB` : `${(bytes / 1024 / 1024).toFixed(bytes < 10 * 1024 * 1024 ? 1 : 0)} MB`;

export const discordMessages = {
  /** Posted in the channel with the bot token when the reply can no longer be edited (token older than 15 min). */
  lateImage: (mention: string, caption: string) => `${mention} your image is ready: ${caption}`,
  /** Any other final outcome that could not go to the reply (a failure, a refusal of the upload). */
  lateNotice: (mention: string, text: string) => `${mention} ${text}`,
  /** Reason passed to messages.deliveryFailed when the image is over the guild's upload limit. */
  tooLarge: (sizeBytes: number, limitBytes?: number) =>
    `at ${megabytes(sizeBytes)} it is larger than this server's upload limit${limitBytes ? ` of ${megabytes(limitBytes)}` : ''}, so Discord refuses it`,
  /** Reason passed to messages.deliveryFailed when Discord refused or could not be reached. */
  refused: (detail: string) => `Discord refused it (${detail})`,
  unreachable: 'Discord could not be reached',
  /** The reply of a job kept across a restart (durable jobs). */
  restarting: 'The bot is restarting. Your job is kept and continues in a moment.',
  unknownCommand: (name: string) => `This bot does not know /${name} (it knows /imagine and /gpu). An admin may need to run "fairbot register-commands".`,
  unsupportedInteraction: 'This bot only answers the /imagine and /gpu commands.',
  internalError: 'Something went wrong while handling that command. It has been logged; try again in a minute.',
  guildOnly: 'Use this command in a server channel: the image is posted in the channel the command came from.',

  // --- buttons (issue 7) ------------------------------------------------------
  rerollLabel: 'Re-roll',
  cancelLabel: 'Cancel',
  killConfirmLabel: 'Stop the GPU server',
  killKeepLabel: 'Keep it running',
  /** A click on a button this version does not know (e.g. sent by an older version). */
  unknownButton: 'This button no longer does anything. Use /imagine or /gpu.',

  // --- /healthz (operators) ----------------------------------------------------
  gatewayDown: (detail: string) => `Discord gateway not connected (${detail})`,

  // --- /gpu status as an embed --------------------------------------------------
  status: {
    title: 'GPU server',
    notManaged: 'Not managed: no FAIR_EMAIL/FAIR_PASSWORD, so the bot only uses INFERENCE_URL and cannot start or stop a server.',
    state: 'State',
    stateValue: (state: string, forText: string) => `${state} for ${forText}`,
    node: 'Node',
    nodeValue: (node: string, address?: string) => (address ? `${node} (${address})` : node),
    container: 'Container',
    uptime: 'Uptime',
    coldStart: 'Last cold start',
    jobs: 'Jobs',
    jobsValue: (waiting: number, running: number) => `${waiting} waiting, ${running} running`,
    generations: 'Generations (last hour)',
    median: 'Median generation time',
    idle: 'Idle shutdown',
    idleIn: (inText: string, discordTimestamp: string) => `in ${inText} (${discordTimestamp})`,
    idleOff: 'off (IDLE_SHUTDOWN_MIN is 0)',
    idleWhenQueueEmpty: 'after the last job ends',
    idleNotScheduled: 'not scheduled (not a server this bot started)',
    endpoint: 'Endpoint',
    program: 'Program',
    nextStart: 'Next start attempt',
    lastError: 'Last error',
    none: 'none',
    notRunning: 'not running',
    /** Uptime of a server that answers but was not started by this bot (INFERENCE_URL, adopted). */
    uptimeUnknown: 'unknown (not started by this bot)',
    noneYet: 'none yet',
    /** A duration read by people: 45 s, 12 min, 3.5 h. */
    duration: (ms: number) => {
      const s = Math.max(0, Math.round(ms / 1000));
      if (s < 120) return `${s} s`;
      if (s < 7200) return `${Math.round(s / 60)} min`;
      return `${(s / 3600).toFixed(1)} h`;
    },
    /** A measured time: 4.5 s. */
    seconds: (ms: number) => `${(ms / 1000).toFixed(1)} s`,
  },
} as const;
