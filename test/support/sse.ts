// Reads a Server-Sent Events stream to its end (or a time limit): the events, parsed.
export interface ServerEvent {
  event: string;
  data: unknown;
}

export async function readEvents(response: Response, timeoutMs = 60_000): Promise<ServerEvent[]> {
  if (!response.body) throw new Error('no body');
  const events: ServerEvent[] = [];
  const decoder = new TextDecoder();
  let buffered = '';
  const reader = response.body.getReader();
  const timer = setTimeout(() => void reader.cancel(), timeoutMs);
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      buffered += decoder.decode(value, { stream: true });
      let end: number;
      while ((end = buffered.indexOf('\n\n')) >= 0) {
        const block = buffered.slice(0, end);
        buffered = buffered.slice(end + 2);
        const fields = Object.fromEntries(
          block
            .split('\n')
            .filter((line) => line && !line.startsWith(':'))
            .map((line) => [line.slice(0, line.indexOf(':')), line.slice(line.indexOf(':') + 1).trimStart()]),
        );
        if (fields.event) events.push({ event: fields.event, data: fields.data ? JSON.parse(fields.data) : undefined });
      }
    }
  } finally {
    clearTimeout(timer);
  }
  return events;
}

/** The text of every `log` event, in order. */
export function loggedText(events: ServerEvent[]): string {
  return events
    .filter((e) => e.event === 'log')
    .map((e) => (e.data as { text: string }).text)
    .join('');
}
