import type { webApi } from '@slack/bolt';
import type { Job } from '../../jobs/job.js';
import type { GeneratedImage } from '../../jobs/types.js';
import { messages } from '../../messages.js';
import { describeSlackError, type SlackFailure } from './errors.js';
import { escapeMrkdwn, mention, truncate } from './text.js';

/**
 * Posts the image in the channel the command came from, as the exact bytes the
 * diffusion server returned: files.uploadV2 = getUploadURLExternal → upload →
 * completeUploadExternal, with a comment naming who asked and the prompt.
 */
export async function postImage(
  client: webApi.WebClient,
  job: Job,
  image: GeneratedImage,
): Promise<{ ok: true } | { ok: false; failure: SlackFailure }> {
  const channelId = job.requester.channelId;
  if (!channelId) return { ok: false, failure: { code: 'no_channel', reason: 'the command did not say which channel it came from' } };
  const caption = messages.imageCaption(escapeMrkdwn(job.prompt), {
    ...job.requester,
    userName: mention(job.requester.userId, job.requester.userName),
  });
  try {
    await client.files.uploadV2({
      channel_id: channelId,
      file: image.bytes,
      filename: `fairbot-${job.id}.${image.extension}`,
      // Titles and alt text are plain text, not mrkdwn: no escaping.
      title: truncate(job.prompt, 200),
      alt_text: truncate(job.prompt, 1000),
      initial_comment: caption,
    });
    return { ok: true };
  } catch (error) {
    return { ok: false, failure: describeSlackError(error) };
  }
}
