// How soon an API process's Temporal client is back after an outage: the dev server is cut off
// (a proxy that resets every connection) for BENCH_OUTAGE_MS, then let through again; measured for
// gRPC's default reconnect backoff and for Drover's bounded one (RECONNECT_CHANNEL_ARGS). The
// outage is a proxy, not a stopped server: the rest of the bench shares this server.
import { Connection } from '@temporalio/client';
import { RECONNECT_CHANNEL_ARGS } from '../src/temporal-connection';
import { TcpProxy } from '../test/support/tcp-proxy';
import type { BenchContext } from './context';
import { round } from './stats';

const OUTAGE_MS = Number(process.env.BENCH_OUTAGE_MS ?? 30_000);

async function backAfterOutage(address: string, channelArgs: Record<string, number> | undefined): Promise<number> {
  const [host, port] = address.split(':');
  const proxy = await TcpProxy.start({ host: host!, port: Number(port) });
  const connection = await Connection.connect({ address: `127.0.0.1:${proxy.port}`, ...(channelArgs ? { channelArgs } : {}) });
  const call = () => connection.withDeadline(Date.now() + 500, () => connection.workflowService.getSystemInfo({})).then(() => true, () => false);
  try {
    if (!(await call())) throw new Error('no answer before the outage');
    proxy.refuse(true);
    const downAt = Date.now();
    // Callers keep trying through the outage, as the API's requests would.
    while (Date.now() - downAt < OUTAGE_MS) {
      await call();
      await new Promise((r) => setTimeout(r, 250));
    }
    proxy.refuse(false);
    const upAt = Date.now();
    while (!(await call())) await new Promise((r) => setTimeout(r, 50));
    return Date.now() - upAt;
  } finally {
    await connection.close();
    await proxy.close();
  }
}

export async function benchReconnect(ctx: BenchContext): Promise<Record<string, unknown>> {
  ctx.log(`reconnect: ${OUTAGE_MS / 1000} s outages, default backoff and bounded, side by side…`);
  const [defaultMs, boundedMs] = await Promise.all([backAfterOutage(ctx.address, undefined), backAfterOutage(ctx.address, { ...RECONNECT_CHANNEL_ARGS })]);
  return {
    'outage ms': OUTAGE_MS,
    'back after the server, ms (gRPC default backoff)': round(defaultMs),
    'back after the server, ms (Drover: bounded backoff)': round(boundedMs),
  };
}
