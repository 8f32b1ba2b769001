// Structured logs (pino), one logger per process, children per component.
import { pino, type Logger } from 'pino';

export type { Logger };

export function createLogger(level = process.env.DROVER_LOG_LEVEL ?? 'info'): Logger {
  return pino({ level, base: { app: 'drover' } });
}
