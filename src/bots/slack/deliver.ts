import { request } from 'undici';
import type { webApi } from '@slack/bolt';
import type { Logger } from 'pino';
import type { Job } from '../../jobs/job.js';
import type { GeneratedImage } from '../../jobs/types.js';
import { slackMessages } from '../../messages.js';
import { captionBlocks, rerollBlocks, withBlocks } from './blocks.js';
import { describeSlackError, type SlackFailure } from './errors.js';
import type { SlackErrorReporter } from './reply.js';
import { truncate } from './text.js';

/**
 * files.uploadV2's three steps, done here: getUploadURLExternal, a POST of the raw bytes
 * to the upload URL, completeUploadExternal. The SDK's uploadV2 copies the image into a
 * Blob and a multipart body first, which costs a copy per upload and ~5 ms per 1 MB.
 */
async function uploadFile(client: webApi.WebClient, channelId: string, job: Job, image: GeneratedImage): Promise<void> {
  const { upload_url: uploadUrl, file_id: fileId } = await client.files.getUploadURLExternal({
    filename: `fairbot-${job.id}.${image.extension}`,
    length: image.bytes.length,
    // The screen-reader text. Slack documents it as `alt_txt` (at most 1000 characters); the
    // SDK's type says `alt_text`, which Slack ignores. Plain text, not mrkdwn: no escaping.
    ...({ alt_txt: truncate(job.prompt, 1000) } as object),
  });
  if (!uploadUrl || !fileId) throw Object.assign(new Error('no upload_url'), { code: 'slack_webapi_platform_error', data: { error: 'no_upload_url' } });
  let status: number;
  try {
    const res = await request(uploadUrl, {
      method: 'POST',
      body: image.bytes,
      headers: { 'content-type': 'application/octet-stream' },
      headersTimeout: 60_000,
      bodyTimeout: 60_000,
    });
    await res.body.dump();
    status = res.statusCode;
  } catch (error) {
    throw Object.assign(new Error('upload failed'), { code: 'slack_webapi_request_error', original: error });
  }
  // The upload URL answers 200 on success; anything else refused the bytes.
  if (status !== 200) throw Object.assign(new Error(`upload answered ${status}`), { code: 'slack_webapi_http_error', statusCode: status });
  await client.files.completeUploadExternal({
    files: [{ id: fileId, title: truncate(job.prompt, 200) }],
    channel_id: channelId,
    ...withBlocks(captionBlocks(job.prompt, job.requester)),
  });
}

/** How long an upload keeps trying through Slack's rate limits before the user is told. */
const RATE_LIMIT_PATIENCE_MS = 3 * 60_000;

/**
 * Posts the image in the channel the command came from, as the exact bytes the
 * diffusion server returned (getUploadURLExternal → upload → completeUploadExternal,
 * what the SDK's files.uploadV2 does, without its extra copy), then the Re-roll button under it.
 *
 * The caption (the prompt and who asked) is the file message's `blocks`: a rich_text
 * block, whose text elements Slack shows literally, so a prompt can neither mention
 * anyone nor inject formatting. (completeUploadExternal documents `blocks` as rich text
 * and ignores it when `initial_comment` is set, so there is no initial_comment.)
 *
 * The Re-roll button is a message of its own (chat.postMessage): completeUploadExternal
 * documents rich text blocks only, not interactive ones, and shares the file without
 * returning the message's ts, so the button can neither ride along nor be threaded to
 * it. The button message repeats the prompt (plain text) so it reads on its own, even if
 * Slack shows it a moment before the file message.
 */
export async function postImage(
  client: webApi.WebClient,
  job: Job,
  image: GeneratedImage,
  opts: {
    log: Logger;
    report: SlackErrorReporter;
    /** Called the moment the file is shared: delivery is recorded before anything else is sent. */
    onUploaded: () => void;
  },
): Promise<{ ok: true; rerollPosted: boolean } | { ok: false; failure: SlackFailure }> {
  const channelId = job.requester.channelId;
  if (!channelId) return { ok: false, failure: { code: 'no_channel', reason: 'the command did not say which channel it came from' } };
  // Rate limits are waited out: the WebClient retries a few 429s itself; past those, the
  // whole upload is tried again, patiently, rather than the image dropped.
  const patienceUntil = Date.now() + RATE_LIMIT_PATIENCE_MS;
  for (let attempt = 0; ; attempt++) {
    try {
      await uploadFile(client, channelId, job, image);
      break;
    } catch (error) {
      const failure = describeSlackError(error);
      opts.report(failure.code);
      const waitMs = Math.min(30_000, 1_000 * 2 ** attempt);
      if (failure.code !== 'ratelimited' || Date.now() + waitMs > patienceUntil) return { ok: false, failure };
      opts.log.warn({ jobId: job.id, waitMs }, 'Slack rate-limited the upload; trying again');
      await new Promise((resolve) => setTimeout(resolve, waitMs));
    }
  }
  // Recorded now, so the crash window that could post this image twice is the upload alone.
  opts.onUploaded();
  try {
    await client.chat.postMessage({
      channel: channelId,
      // Notification text: no prompt (it is shown in the blocks, as plain text).
      text: slackMessages.rerollFallback,
      ...withBlocks(rerollBlocks(job.id, job.prompt)),
      unfurl_links: false,
      unfurl_media: false,
    });
    return { ok: true, rerollPosted: true };
  } catch (error) {
    // The image is there; only the button is missing. Not worth failing the job over.
    const failure = describeSlackError(error);
    opts.report(failure.code);
    opts.log.warn({ jobId: job.id, channelId, code: failure.code }, 'could not post the Re-roll button');
    return { ok: true, rerollPosted: false };
  }
}
