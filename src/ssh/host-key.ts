// Pinned SSH host keys. A host's config pins its key as a public key (`ssh-ed25519 AAAA…`), a
// known_hosts line (`host ssh-ed25519 AAAA…`), or a fingerprint (`SHA256:…`, as `ssh-keygen -lf`
// prints it). Several pins may be given, one per line. A key that matches none is refused.
import { createHash } from 'node:crypto';

export type HostKeyPin = { kind: 'key'; type: string; blob: Buffer } | { kind: 'fingerprint'; sha256: string };

export class HostKeyError extends Error {
  override readonly name = 'HostKeyError';
}

const KEY_TYPE = /^(ssh-(ed25519|rsa|dss)|ecdsa-sha2-nistp(256|384|521)|sk-(ssh-ed25519|ecdsa-sha2-nistp256)@openssh\.com)$/;
const BASE64 = /^[A-Za-z0-9+/]+={0,2}$/;

/** `SHA256:<base64 without padding>` of a raw public key blob, as OpenSSH prints it. */
export function fingerprint(blob: Buffer): string {
  return `SHA256:${createHash('sha256').update(blob).digest('base64').replace(/=+$/, '')}`;
}

/** The key type named inside a public key blob (its first SSH string). */
export function blobKeyType(blob: Buffer): string | undefined {
  if (blob.length < 4) return undefined;
  const len = blob.readUInt32BE(0);
  if (len <= 0 || len > 64 || blob.length < 4 + len) return undefined;
  return blob.subarray(4, 4 + len).toString('latin1');
}

export function parseHostKeyPins(text: string): HostKeyPin[] {
  const pins: HostKeyPin[] = [];
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (!line || line.startsWith('#')) continue;
    if (/^SHA256:/.test(line)) {
      const sha256 = line.split(/\s+/)[0]!;
      if (!/^SHA256:[A-Za-z0-9+/]{43}$/.test(sha256)) throw new HostKeyError(`malformed host key fingerprint ${JSON.stringify(sha256)}`);
      pins.push({ kind: 'fingerprint', sha256 });
      continue;
    }
    const fields = line.split(/\s+/);
    if (fields[0]?.startsWith('@')) throw new HostKeyError(`known_hosts markers (${fields[0]}) are not supported: pin the host's own key`);
    const at = fields.findIndex((f) => KEY_TYPE.test(f));
    const data = at >= 0 ? fields[at + 1] : undefined;
    if (at < 0 || !data || !BASE64.test(data)) {
      throw new HostKeyError(`cannot read host key ${JSON.stringify(line.slice(0, 80))}: expected a public key, a known_hosts line or a SHA256: fingerprint`);
    }
    const blob = Buffer.from(data, 'base64');
    const type = fields[at]!;
    if (blobKeyType(blob) !== type) throw new HostKeyError(`host key ${JSON.stringify(line.slice(0, 80))} is corrupt (its data is not a ${type} key)`);
    pins.push({ kind: 'key', type, blob });
  }
  if (pins.length === 0) throw new HostKeyError('no host key pinned');
  return pins;
}

export function matchesPins(pins: readonly HostKeyPin[], blob: Buffer): boolean {
  const print = fingerprint(blob);
  return pins.some((pin) => (pin.kind === 'key' ? pin.blob.equals(blob) : pin.sha256 === print));
}

/** Host key algorithms to offer so the server presents a pinned key (undefined: any, for fingerprint pins). */
export function hostKeyAlgorithms(pins: readonly HostKeyPin[]): string[] | undefined {
  if (pins.some((p) => p.kind === 'fingerprint')) return undefined;
  const algorithms = new Set<string>();
  for (const pin of pins as Array<Extract<HostKeyPin, { kind: 'key' }>>) {
    if (pin.type === 'ssh-rsa') ['rsa-sha2-512', 'rsa-sha2-256', 'ssh-rsa'].forEach((a) => algorithms.add(a));
    else algorithms.add(pin.type);
  }
  return [...algorithms];
}
