// A TCP proxy on loopback that a test can pause: while paused, nothing passes either way and new
// connections hang, as in a network partition (no reset, no close: both ends see only silence).
// Or refuse: every connection is cut and new ones are closed, as when the server is down.
import { createConnection, createServer, type Server, type Socket } from 'node:net';

export class TcpProxy {
  private paused = false;
  private refusing = false;
  private readonly pairs = new Set<[Socket, Socket]>();
  private readonly held = new Set<Socket>();

  private constructor(
    private readonly server: Server,
    readonly port: number,
    private readonly target: { host: string; port: number },
  ) {}

  static async start(target: { host: string; port: number }, host = '127.0.0.1'): Promise<TcpProxy> {
    const accepted: Socket[] = [];
    let accept = (client: Socket): void => {
      accepted.push(client);
    };
    const server = createServer((client) => accept(client));
    await new Promise<void>((resolve) => server.listen(0, host, resolve));
    const address = server.address();
    if (!address || typeof address === 'string') throw new Error('no proxy address');
    const proxy = new TcpProxy(server, address.port, target);
    accept = (client) => {
      proxy.accept(client);
    };
    for (const client of accepted) proxy.accept(client);
    return proxy;
  }

  private accept(client: Socket): void {
    client.on('error', () => {});
    if (this.refusing) {
      client.destroy();
      return;
    }
    if (this.paused) {
      client.pause();
      this.held.add(client);
      client.once('close', () => this.held.delete(client));
      return;
    }
    this.connect(client);
  }

  private connect(client: Socket): void {
    const upstream = createConnection(this.target);
    upstream.on('error', () => client.destroy());
    client.on('error', () => upstream.destroy());
    client.pipe(upstream);
    upstream.pipe(client);
    const pair: [Socket, Socket] = [client, upstream];
    this.pairs.add(pair);
    const drop = () => {
      this.pairs.delete(pair);
      client.destroy();
      upstream.destroy();
    };
    client.once('close', drop);
    upstream.once('close', drop);
  }

  /** While refusing, as a server that is down: every connection is cut, and new ones are closed at once. */
  refuse(refusing: boolean): void {
    this.refusing = refusing;
    if (!refusing) return;
    for (const [client, upstream] of this.pairs) {
      client.destroy();
      upstream.destroy();
    }
  }

  /** Stops every byte, both ways, on every connection; new ones hang. */
  pause(): void {
    this.paused = true;
    for (const [client, upstream] of this.pairs) {
      client.unpipe(upstream);
      upstream.unpipe(client);
      client.pause();
      upstream.pause();
    }
  }

  resume(): void {
    this.paused = false;
    for (const [client, upstream] of this.pairs) {
      client.pipe(upstream);
      upstream.pipe(client);
    }
    for (const client of this.held) {
      this.held.delete(client);
      client.resume();
      this.connect(client);
    }
  }

  async close(): Promise<void> {
    for (const [client, upstream] of this.pairs) {
      client.destroy();
      upstream.destroy();
    }
    for (const client of this.held) client.destroy();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }
}
