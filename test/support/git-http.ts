// Bare repositories over real smart HTTP, as Forgejo serves them: git's own CGI
// (`git http-backend`) behind a small node:http server on loopback that wants Basic auth with a
// known token. Every bare repository under the project root is served, `<root>/<owner>/<name>.git`
// at `<base>/<owner>/<name>.git`; pushes need `http.receivepack true` in the repository's config.
// Used by the workspace credential tests and the workspace benchmark.
import { execFileSync, spawn } from 'node:child_process';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';

export interface GitHttpOptions {
  /** The password every request must carry (any user name goes); without it, 401. */
  token: string;
  /** The Basic realm of the 401 answers. */
  realm?: string;
}

/**
 * `git http-backend` behind node:http: Basic auth with the token as the password or 401, the
 * request body on the CGI's stdin, the CGI's headers (Status: …) parsed into the response.
 */
export class GitHttpServer {
  /** User names of the requests that authenticated; how many were refused; every URL asked for. */
  readonly users: string[] = [];
  refused = 0;
  readonly urls: string[] = [];
  private readonly backend = join(execFileSync('git', ['--exec-path'], { encoding: 'utf8' }).trim(), 'git-http-backend');

  private constructor(
    private readonly server: Server,
    readonly projectRoot: string,
    private readonly options: GitHttpOptions,
  ) {}

  /** Listens on 127.0.0.1 at a free port, serving the bare repositories under `projectRoot`. */
  static async start(projectRoot: string, options: GitHttpOptions): Promise<GitHttpServer> {
    const server = createServer();
    const self = new GitHttpServer(server, projectRoot, options);
    server.on('request', (req: IncomingMessage, res: ServerResponse) => self.handle(req, res));
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    return self;
  }

  /** `http://127.0.0.1:<port>`: a repository's URL is this and its path under the root. */
  get base(): string {
    return `http://127.0.0.1:${(this.server.address() as AddressInfo).port}`;
  }

  close(): Promise<void> {
    this.server.closeAllConnections();
    return new Promise((resolve) => this.server.close(() => resolve()));
  }

  private handle(req: IncomingMessage, res: ServerResponse): void {
    this.urls.push(req.url ?? '');
    const auth = /^Basic (.+)$/.exec(req.headers.authorization ?? '');
    const [user, ...rest] = auth ? Buffer.from(auth[1]!, 'base64').toString('utf8').split(':') : [];
    if (!auth || rest.join(':') !== this.options.token) {
      this.refused += 1;
      req.resume();
      res.writeHead(401, { 'WWW-Authenticate': `Basic realm="${this.options.realm ?? 'drover-test'}"`, 'Content-Type': 'text/plain' });
      res.end('authentication required\n');
      return;
    }
    this.users.push(user!);
    const url = new URL(req.url ?? '/', 'http://localhost');
    const env: NodeJS.ProcessEnv = {
      PATH: process.env.PATH,
      GIT_PROJECT_ROOT: this.projectRoot,
      GIT_HTTP_EXPORT_ALL: '1',
      GATEWAY_INTERFACE: 'CGI/1.1',
      SERVER_PROTOCOL: `HTTP/${req.httpVersion}`,
      REQUEST_METHOD: req.method ?? 'GET',
      PATH_INFO: decodeURIComponent(url.pathname),
      QUERY_STRING: url.search.replace(/^\?/, ''),
      REMOTE_USER: user,
      REMOTE_ADDR: req.socket.remoteAddress ?? '127.0.0.1',
      ...(req.headers['content-type'] ? { CONTENT_TYPE: req.headers['content-type'] } : {}),
      ...(req.headers['content-length'] ? { CONTENT_LENGTH: req.headers['content-length'] } : {}),
      ...(req.headers['content-encoding'] ? { HTTP_CONTENT_ENCODING: req.headers['content-encoding'] } : {}),
      ...(typeof req.headers['git-protocol'] === 'string' ? { HTTP_GIT_PROTOCOL: req.headers['git-protocol'] } : {}),
    };
    const cgi = spawn(this.backend, [], { env, stdio: ['pipe', 'pipe', 'pipe'] });
    cgi.stdin.on('error', () => {});
    req.pipe(cgi.stdin);
    let stderr = '';
    cgi.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString('utf8')));
    let head = Buffer.alloc(0);
    let headersDone = false;
    cgi.stdout.on('data', (chunk: Buffer) => {
      if (headersDone) {
        res.write(chunk);
        return;
      }
      head = Buffer.concat([head, chunk]);
      const crlf = head.indexOf('\r\n\r\n');
      const lf = head.indexOf('\n\n');
      const end = crlf >= 0 && (lf < 0 || crlf < lf) ? { at: crlf, length: 4 } : lf >= 0 ? { at: lf, length: 2 } : undefined;
      if (!end) return;
      headersDone = true;
      let status = 200;
      const headers: Record<string, string> = {};
      for (const line of head.subarray(0, end.at).toString('latin1').split(/\r?\n/)) {
        const colon = line.indexOf(':');
        if (colon <= 0) continue;
        const name = line.slice(0, colon).trim();
        const value = line.slice(colon + 1).trim();
        if (name.toLowerCase() === 'status') status = Number.parseInt(value, 10) || 500;
        else headers[name] = value;
      }
      res.writeHead(status, headers);
      const body = head.subarray(end.at + end.length);
      if (body.length > 0) res.write(body);
    });
    cgi.once('close', (code) => {
      if (!headersDone) {
        res.writeHead(500, { 'Content-Type': 'text/plain' });
        res.end(`git http-backend exited ${code}: ${stderr}`);
        return;
      }
      res.end();
    });
  }
}
