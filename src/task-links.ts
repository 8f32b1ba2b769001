// Links people open from a Forgejo comment, without a token: a read-only page of the task at
// `/t/<id>?sig=<signature>`. The signature (an HMAC of the task id under a key derived from the
// config's secrets) makes the link a capability: whoever sees the comment may open it, nobody can
// guess another task's page. The page shows no prompt, no logs and no callback URL.
import { createHmac, timingSafeEqual } from 'node:crypto';
import type { DroverConfig } from './config';

/** The key task links are signed with: api.linkSecret, else derived from the webhook secret or the admin token; none without any. */
export function taskLinkKey(config: Pick<DroverConfig, 'api' | 'webhook'>): Buffer | undefined {
  const secret = config.api.linkSecret ?? config.webhook.secret ?? config.api.adminToken;
  // Derived, so that a link never reveals anything about the secret it comes from.
  return secret ? createHmac('sha256', secret).update('drover task links v1').digest() : undefined;
}

export function taskLinkSignature(key: Buffer, taskId: string): string {
  return createHmac('sha256', key).update(taskId, 'utf8').digest('hex').slice(0, 32);
}

export function verifyTaskLink(key: Buffer, taskId: string, signature: string | undefined): boolean {
  if (!signature || !/^[0-9a-f]{32}$/.test(signature)) return false;
  return timingSafeEqual(Buffer.from(taskLinkSignature(key, taskId)), Buffer.from(signature));
}

/** The task's page URL under the API's public URL. */
export function taskPageUrl(publicUrl: string, key: Buffer, taskId: string): string {
  return `${publicUrl.replace(/\/+$/, '')}/t/${encodeURIComponent(taskId)}?sig=${taskLinkSignature(key, taskId)}`;
}

/** The Web UI's URL of the task's history. */
export function historyUrl(temporalUiUrl: string, namespace: string, taskId: string): string {
  return `${temporalUiUrl.replace(/\/+$/, '')}/namespaces/${encodeURIComponent(namespace)}/workflows/${encodeURIComponent(taskId)}`;
}
