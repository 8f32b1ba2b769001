// An agent's output log, bounded: the first part and the latest part are kept, the middle of a
// very long run is dropped with a marker saying how much.

export const DEFAULT_LOG_HEAD_CHARS = 16 * 1024;
export const DEFAULT_LOG_TAIL_CHARS = 48 * 1024;

export class LogBuffer {
  private head = '';
  private tail = '';
  private total = 0;
  private version = 0;

  constructor(
    private readonly headLimit = DEFAULT_LOG_HEAD_CHARS,
    private readonly tailLimit = DEFAULT_LOG_TAIL_CHARS,
  ) {}

  append(chunk: string): void {
    if (!chunk) return;
    this.total += chunk.length;
    this.version += 1;
    if (this.head.length < this.headLimit) {
      const room = this.headLimit - this.head.length;
      this.head += chunk.slice(0, room);
      chunk = chunk.slice(room);
      if (!chunk) return;
    }
    this.tail += chunk;
    if (this.tail.length > this.tailLimit * 2) this.tail = this.tail.slice(-this.tailLimit);
  }

  /** Characters written so far (kept or dropped). */
  get totalChars(): number {
    return this.total;
  }

  /** Changes whenever something was appended. */
  get changes(): number {
    return this.version;
  }

  /** The latest `chars` characters of output (what a live view needs between two heartbeats). */
  latest(chars: number): string {
    const all = this.head.length + this.tail.length === this.total ? this.head + this.tail : this.tail;
    return all.length > chars ? all.slice(-chars) : all;
  }

  text(): string {
    const tail = this.tail.length > this.tailLimit ? this.tail.slice(-this.tailLimit) : this.tail;
    const dropped = this.total - this.head.length - tail.length;
    if (dropped <= 0) return this.head + tail;
    return `${this.head}\n[… ${dropped} characters of output omitted …]\n${tail}`;
  }
}
