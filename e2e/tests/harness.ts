// Shared harness: starts real relay, agent and Xvfb processes on loopback, on free ports, and
// reads the frame code (counter + capture time) out of the viewer's video.
import { ChildProcess, spawn, spawnSync, execFileSync } from 'node:child_process';
import * as net from 'node:net';
import * as https from 'node:https';
import * as path from 'node:path';
import * as fs from 'node:fs';
import { Browser, BrowserContext, CDPSession, Page, TestInfo, expect, test as base } from '@playwright/test';
import * as os from 'node:os';
import * as crypto from 'node:crypto';

/** The console text Chromium writes for each Content-Security-Policy violation. */
export const CSP_VIOLATION = /violates the following Content Security Policy directive/;

/**
 * Every test runs with a guard over the browser contexts it opens. A CSP violation Chromium
 * reports in any of their pages fails the test, unless the test provokes one on purpose (the
 * guard's own control) and annotates itself with `csp-violation-expected`. At the test's end every
 * context it opened is closed: the worker's browser outlives tests, and a page left open keeps
 * reconnecting to its dead relay's port, which a later test's server may have been given.
 */
export const test = base.extend<{ contextGuard: void }>({
  contextGuard: [async ({ browser }, use, testInfo) => {
    const violations: string[] = [];
    const opened: BrowserContext[] = [];
    const newContext = browser.newContext.bind(browser);
    browser.newContext = async (options?: Parameters<Browser['newContext']>[0]) => {
      const context = await newContext(options);
      opened.push(context);
      context.on('console', (m) => { if (CSP_VIOLATION.test(m.text())) violations.push(m.text()); });
      return context;
    };
    startedThisTest.length = 0;
    try {
      await use();
    } finally {
      browser.newContext = newContext;
      await Promise.all(opened.map((c) => c.close().catch(() => undefined)));
    }
    if (testInfo.status !== testInfo.expectedStatus) reportLogs(testInfo);
    if (!testInfo.annotations.some((a) => a.type === 'csp-violation-expected')) {
      expect(violations, 'Content-Security-Policy violations reported by Chromium').toEqual([]);
    }
  }, { auto: true }],
});

export const BIN = process.env.SIGHTLINE_BIN_DIR ?? path.resolve(__dirname, '../../target/debug');
const STATIC = process.env.SIGHTLINE_STATIC_DIR ?? path.resolve(__dirname, '../../static');
export const SAMPLE_POLICY = path.resolve(__dirname, '../../relay/policy-sample.toml');
const LOGS = path.resolve(__dirname, '../test-results/logs');

/** Ports this worker has handed out; never handed out twice (see `freePort`). */
const handedOut = new Set<number>();

/**
 * A loopback port nothing listens on, and one this worker has not handed out before: a client of
 * an earlier test's server (a relay's socket, a forwarder) may still be retrying its old port, and
 * must not reach a later test's server by chance.
 */
export async function freePort(): Promise<number> {
  for (;;) {
    const port = await new Promise<number>((resolve, reject) => {
      const srv = net.createServer();
      srv.listen(0, '127.0.0.1', () => {
        const port = (srv.address() as net.AddressInfo).port;
        srv.close(() => resolve(port));
      });
      srv.on('error', reject);
    });
    if (!handedOut.has(port)) {
      handedOut.add(port);
      return port;
    }
  }
}

export class Proc {
  logPath = '';
  constructor(public name: string, public child: ChildProcess) {}
  log(): string { return this.logPath ? fs.readFileSync(this.logPath, 'utf8') : ''; }
  get pid(): number { return this.child.pid!; }
  exited(): Promise<void> {
    if (this.child.exitCode !== null || this.child.signalCode !== null) return Promise.resolve();
    return new Promise((resolve) => this.child.once('exit', () => resolve()));
  }
  async kill(signal: NodeJS.Signals = 'SIGTERM'): Promise<void> {
    if (this.child.exitCode === null && this.child.signalCode === null) this.child.kill(signal);
    await this.exited();
  }
}

// The processes the running test started, for `reportLogs`.
const startedThisTest: Proc[] = [];

/**
 * After a failed test, the end of every log its processes wrote goes to the test's output (and is
 * attached): CI keeps only what the run printed, and a rare failure must be readable from that.
 */
function reportLogs(testInfo: TestInfo): void {
  for (const proc of startedThisTest) {
    if (!proc.logPath) continue;
    let lines: string[] = [];
    try { lines = fs.readFileSync(proc.logPath, 'utf8').split('\n'); } catch { continue; }
    const tail = lines.slice(-60).join('\n');
    console.log(`--- last lines of ${proc.name} (${path.basename(proc.logPath)}) ---\n${tail}`);
    void testInfo.attach(`${proc.name}.log`, { path: proc.logPath, contentType: 'text/plain' }).catch(() => undefined);
  }
}

// Every process a test starts; killed when the worker exits, whatever happened to the test.
const launched: ChildProcess[] = [];
process.on('exit', () => {
  for (const child of launched) if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
});

/** Starts a program with its output in a log file. `env` values of `undefined` unset a variable;
 * with `stdin` the test can write to the program's input. */
export function launch(name: string, program: string, args: string[], env: Record<string, string | undefined> = {}, stdin: 'ignore' | 'pipe' = 'ignore'): Proc {
  fs.mkdirSync(LOGS, { recursive: true });
  const logPath = path.join(LOGS, `${name}-${Date.now()}-${Math.floor(Math.random() * 1e6)}.log`);
  const log = fs.openSync(logPath, 'a');
  const merged: Record<string, string> = {};
  for (const [k, v] of Object.entries({ ...process.env, ...env })) if (v !== undefined) merged[k] = v;
  const child = spawn(program, args, { env: merged, stdio: [stdin, log, log] });
  launched.push(child);
  const proc = new Proc(name, child);
  proc.logPath = logPath;
  startedThisTest.push(proc);
  return proc;
}

export function tempDir(prefix: string): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), `sightline-${prefix}-`));
}

/**
 * Keeps what a test measured (reported, never asserted) in bench-results/NAME.json beside the
 * benchmarks' results, and in the test's annotations.
 */
export function recordMeasurement(name: string, summary: string, data: Record<string, number>): void {
  test.info().annotations.push({ type: 'measured', description: summary });
  console.log(summary);
  const out = path.resolve(__dirname, '../../bench-results');
  fs.mkdirSync(out, { recursive: true });
  fs.writeFileSync(path.join(out, `${name}.json`), JSON.stringify({ measured_at: new Date().toISOString(), summary, ...data }, null, 2));
}

export async function waitFor(what: string, check: () => Promise<boolean>, timeoutMs = 20_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (await check()) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`timed out waiting for ${what}`);
}

/**
 * `requestLimits`: session requests per minute per operator and per device. Tests that are not
 * about request discipline start many sessions on one device in seconds, so they get generous
 * limits; `'defaults'` keeps the relay's own (the hardening tests).
 */
export interface RelayOptions { port?: number; dataDir?: string; redis?: string; publicUrl?: string; cpu?: number; policy?: string; node?: string; auditDir?: string; env?: Record<string, string | undefined>; siem?: string[]; siemCa?: string; siemFormat?: 'json' | 'cef'; args?: string[]; requestLimits?: { operator: number; device: number } | 'defaults'; tls?: { ca: string; cert: string; key: string } }

/**
 * The auditor of this test worker: an age identity made with `age-keygen`, whose public key every
 * relay encrypts recordings to (the relays never hold the identity). `identity` is the file the
 * auditor's tools read, `secret` the key line the auditor gives the browser.
 */
let auditorKey: { identity: string; recipient: string; secret: string } | undefined;
export function auditorKeys(): { identity: string; recipient: string; secret: string } {
  if (!auditorKey) {
    const identity = path.join(tempDir('auditor'), 'auditor.key');
    execFileSync('age-keygen', ['-o', identity], { stdio: 'ignore' });
    const text = fs.readFileSync(identity, 'utf8');
    const recipient = /# public key: (age1\S+)/.exec(text)![1];
    const secret = text.split('\n').find((l) => l.startsWith('AGE-SECRET-KEY-1'))!;
    auditorKey = { identity, recipient, secret };
  }
  return auditorKey;
}

export class Relay {
  private pinned?: string;
  constructor(public proc: Proc, public port: number, public dataDir: string, public opts: RelayOptions = {}) {}
  /**
   * The node's verifier key as an auditor keeps it: copied once, outside the node's data, and
   * passed to every verification with `--key` (the key inside the data is never trusted).
   */
  pinnedKey(): string {
    if (this.pinned === undefined) {
      this.pinned = path.join(tempDir('pinned-key'), 'relay.pub');
      fs.copyFileSync(path.join(this.auditDir, 'audit.pub'), this.pinned);
    }
    return this.pinned;
  }
  /** This node's audit directory. */
  get auditDir(): string { return this.opts.auditDir ?? path.join(this.dataDir, 'audit'); }
  /** The audit log's records, parsed (each line is one canonical JSON record). */
  auditRecords(): AuditRecord[] {
    const text = fs.readFileSync(path.join(this.auditDir, 'log.jsonl'), 'utf8');
    // A record is complete with its newline: a read during the writer's append may see part of
    // the last line, which is not a record yet.
    const lines = text.split('\n');
    lines.pop();
    return lines.filter((l) => l !== '').map((l) => JSON.parse(l) as AuditRecord);
  }
  /** Runs `relay recording ARGS` on this relay's data (beside it while it runs, or after). */
  recordingCli(args: string[]): { status: number; stdout: string; stderr: string } {
    return relayCli(['--data-dir', this.dataDir, '--policy', this.opts.policy ?? SAMPLE_POLICY, ...(this.opts.args ?? []), 'recording', ...args]);
  }
  /** WebAuthn needs a host name, not an IP: the viewer is always opened on localhost. */
  get url(): string { return `http://localhost:${this.port}`; }
  static async start(opts: RelayOptions = {}): Promise<Relay> {
    const p = opts.port ?? (await freePort());
    const dataDir = opts.dataDir ?? tempDir('relay');
    const scheme = opts.tls ? 'https' : 'http';
    const args = ['--listen', `127.0.0.1:${p}`, '--static-dir', STATIC, '--data-dir', dataDir, '--public-url', opts.publicUrl ?? `${scheme}://localhost:${p}/`, '--policy', opts.policy ?? SAMPLE_POLICY];
    if (opts.tls) args.push('--tls-cert', opts.tls.cert, '--tls-key', opts.tls.key);
    if (opts.redis) args.push('--redis', opts.redis);
    if (opts.node) args.push('--node', opts.node);
    if (opts.auditDir) args.push('--audit-dir', opts.auditDir);
    for (const d of opts.siem ?? []) args.push('--siem', d);
    if (opts.siemCa) args.push('--siem-ca', opts.siemCa);
    if (opts.siemFormat) args.push('--siem-format', opts.siemFormat);
    // Recordings are encrypted to the auditor's key; the relay has none that opens them (R32).
    args.push('--recording-recipient', auditorKeys().recipient);
    const limits = opts.requestLimits ?? { operator: 600, device: 600 };
    if (limits !== 'defaults') {
      args.push('--session-requests-per-operator-per-min', String(limits.operator), '--session-requests-per-device-per-min', String(limits.device));
    }
    args.push(...(opts.args ?? []));
    // Benchmarks pin the relay to one core (taskset execs it, so the pid is the relay's).
    const proc = opts.cpu === undefined
      ? launch('relay', path.join(BIN, 'relay'), args, opts.env)
      : launch('relay', 'taskset', ['-c', String(opts.cpu), path.join(BIN, 'relay'), ...args], opts.env);
    const relay = new Relay(proc, p, dataDir, opts);
    try {
      await waitFor('relay /healthz', async () => {
        if (proc.child.exitCode !== null) throw new Error(`relay exited with ${proc.child.exitCode}: ${proc.log().slice(0, 4000)}`);
        if (opts.tls) return httpsOk(p, '/healthz', opts.tls.ca);
        try { return (await fetch(`http://127.0.0.1:${p}/healthz`)).ok; } catch { return false; }
      });
    } catch (e) {
      await proc.kill('SIGKILL');
      throw e;
    }
    return relay;
  }
  /** The one-time admin enrolment link a fresh relay prints. */
  bootstrapLink(): string {
    const m = this.proc.log().match(/(http:\/\/localhost:\d+\/#\/enrol\/[A-Za-z0-9_-]+)/);
    if (!m) throw new Error('relay printed no bootstrap link');
    return m[1];
  }
}

/** Whether GET `route` on 127.0.0.1:`port` over TLS (verified against `ca`) answers 200. */
function httpsOk(port: number, route: string, ca: string): Promise<boolean> {
  return new Promise((resolve) => {
    const req = https.get({ host: '127.0.0.1', port, path: route, ca: fs.readFileSync(ca), servername: 'localhost' }, (res) => {
      res.resume();
      resolve(res.statusCode === 200);
    });
    req.on('error', () => resolve(false));
  });
}

/** A test CA (`ca.pem`) and a server certificate from it for 127.0.0.1 and localhost (`cert.pem`,
 * `key.pem`) in `dir`, made with openssl. */
export function testCertificate(dir: string): { ca: string; cert: string; key: string } {
  const openssl = (args: string[]) => execFileSync('openssl', args, { cwd: dir, stdio: 'ignore' });
  openssl(['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', 'ca.key', '-out', 'ca.pem', '-days', '2', '-subj', '/CN=sightline-test-ca']);
  openssl(['req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', 'key.pem', '-out', 'req.csr', '-subj', '/CN=127.0.0.1']);
  fs.writeFileSync(path.join(dir, 'ext.cnf'), 'subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n');
  openssl(['x509', '-req', '-in', 'req.csr', '-CA', 'ca.pem', '-CAkey', 'ca.key', '-CAcreateserial', '-out', 'cert.pem', '-days', '2', '-extfile', 'ext.cnf']);
  return { ca: path.join(dir, 'ca.pem'), cert: path.join(dir, 'cert.pem'), key: path.join(dir, 'key.pem') };
}

/** One audit record (sightline_core::audit::Record). */
export interface AuditRecord {
  seq: number; ts_ms: number; node: string; kind: string; outcome: 'success' | 'failure'; actor: string;
  source: string | null; subject: string | null; detail: string; prev: string;
  session: { session_id: string; ticket: string; reason: string; device_id: string; device: string; endpoint_user: string; operator: string; levels: string[]; unattended?: boolean } | null;
}

/** Runs `relay ARGS` (a CLI subcommand) to completion. */
export function relayCli(args: string[], env: Record<string, string> = {}): { status: number; stdout: string; stderr: string } {
  const r = spawnSync(path.join(BIN, 'relay'), args, { encoding: 'utf8', timeout: 60_000, env: { ...process.env, ...env } });
  return { status: r.status ?? -1, stdout: r.stdout, stderr: r.stderr };
}

/**
 * `terminal`: the endpoint has no display and the agent runs on a terminal (a pseudo-terminal
 * from `script`), where it asks for consent; the test types the user's answers into it.
 */
export interface AgentOptions { name: string; dataDir: string; /** Further nodes of the service, tried in turn after `relay` (R43). */ moreRelays?: Relay[]; source?: 'synthetic' | 'x11'; display?: string; size?: string; fps?: number; terminal?: boolean; unattended?: boolean; behindProxy?: ProxyNamespace; /** Further arguments of `agent run`. */ args?: string[] }

/** `agent enroll` with a token; returns the agent's data directory. Throws with the agent's words on refusal. */
export function enrolAgent(relay: Relay, token: string, name: string, dataDir = tempDir('agent')): string {
  const r = spawnSync(path.join(BIN, 'agent'), ['enroll', '--relay-url', `ws://127.0.0.1:${relay.port}`, `--token=${token}`, '--name', name, '--data-dir', dataDir], { encoding: 'utf8', timeout: 30_000 });
  if (r.status !== 0) throw new Error(`agent enroll failed: ${r.stderr}${r.stdout}`);
  return dataDir;
}

export function startAgent(relay: Relay, opts: AgentOptions): Proc {
  const args = ['run', '--relay-url', `ws://127.0.0.1:${relay.port}`, '--source', opts.source ?? 'synthetic', '--data-dir', opts.dataDir];
  for (const more of opts.moreRelays ?? []) args.push('--relay-url', `ws://127.0.0.1:${more.port}`);
  if (opts.size) args.push('--synthetic-size', opts.size);
  if (opts.fps) args.push('--fps', String(opts.fps));
  if (opts.unattended) args.push('--unattended');
  args.push(...(opts.args ?? []));
  if (opts.terminal) {
    const command = [path.join(BIN, 'agent'), ...args].map((a) => `'${a.replace(/'/g, `'\\''`)}'`).join(' ');
    return launch(`agent-${opts.name}`, 'script', ['-qfec', command, '/dev/null'], { DISPLAY: undefined }, 'pipe');
  }
  const display = opts.display ? { DISPLAY: opts.display } : {};
  if (opts.behindProxy) {
    // Inside the namespace, with the proxy as the only way out (R1).
    const ns = opts.behindProxy;
    args.push('--proxy', ns.proxyUrl, '--proxy-credentials', ns.credentials);
    return launch(`agent-${opts.name}`, 'ip', ['netns', 'exec', ns.name, path.join(BIN, 'agent'), ...args], { ...display, HTTPS_PROXY: undefined, https_proxy: undefined, NO_PROXY: undefined, no_proxy: undefined });
  }
  return launch(`agent-${opts.name}`, path.join(BIN, 'agent'), args, display);
}

export class Xvfb {
  constructor(public proc: Proc, public display: string) {}
  static async start(width = 1280, height = 720): Promise<Xvfb> {
    // A display number nobody uses: Xvfb refuses taken ones, so try until one starts.
    for (let attempt = 0; attempt < 20; attempt++) {
      const n = 100 + Math.floor(Math.random() * 800);
      if (fs.existsSync(`/tmp/.X11-unix/X${n}`) || fs.existsSync(`/tmp/.X${n}-lock`)) continue;
      // -noreset: by default Xvfb resets when its last client leaves, wiping the root window.
      const proc = launch('xvfb', 'Xvfb', [`:${n}`, '-screen', '0', `${width}x${height}x24`, '-nolisten', 'tcp', '-ac', '-noreset']);
      const display = `:${n}`;
      try {
        await waitFor('Xvfb', async () => {
          if (proc.child.exitCode !== null) throw new Error('Xvfb exited');
          try { execFileSync('xdpyinfo', ['-display', display], { stdio: 'ignore' }); return true; } catch { return false; }
        }, 10_000);
        return new Xvfb(proc, display);
      } catch {
        await proc.kill('SIGKILL');
      }
    }
    throw new Error('could not start Xvfb');
  }
  setRootColour(colour: string): void {
    execFileSync('xsetroot', ['-solid', colour], { env: { ...process.env, DISPLAY: this.display } });
  }
}

/**
 * Fills the session request (ticket, catalog reason, whether to ask for control) and clicks View
 * on the named agent.
 */
export async function requestView(page: Page, relay: { url: string }, agentName: string, ticket = 'INC-4711', reason = 'incident', control = true): Promise<void> {
  if (!page.url().startsWith(relay.url)) await page.goto(relay.url);
  const row = page.getByTestId('agent-row').filter({ hasText: agentName });
  await expect(row).toBeVisible();
  await page.locator('input[name="ticket"]').fill(ticket);
  await page.locator('select[name="reason"]').selectOption(reason);
  await page.locator('input[name="level-control"]').setChecked(control);
  await row.getByRole('button', { name: 'View' }).click();
}

export interface Rect { x: number; y: number; w: number; h: number }

/** A layout an endpoint window logged (`name=x,y,w,h name=...`); other words are skipped (a window
 * with no widgets, such as an ended session's, logs none). */
export function parseLayout(line: string): Map<string, Rect> {
  const map = new Map<string, Rect>();
  for (const item of line.split(' ')) {
    const m = /^([\w:-]+)=(-?\d+),(-?\d+),(\d+),(\d+)$/.exec(item);
    if (m) map.set(m[1], { x: Number(m[2]), y: Number(m[3]), w: Number(m[4]), h: Number(m[5]) });
  }
  return map;
}

/**
 * The person at the endpoint: the agent's X display, where its consent window and session bar
 * appear. Widgets are found from the layout the window logs (`consent-ui layout name=x,y,w,h`)
 * and clicked with xdotool at their real position, like a user would.
 */
export class Endpoint {
  constructor(public display: string, private logs: () => string) {}
  xdo(args: string[]): string {
    return execFileSync('xdotool', args, { env: { ...process.env, DISPLAY: this.display }, encoding: 'utf8' }).trim();
  }
  /** The latest layout the window logged. */
  layout(): Map<string, Rect> {
    const lines = this.logs().split('\n').filter((l) => l.startsWith('consent-ui layout '));
    return parseLayout((lines[lines.length - 1] ?? '').slice('consent-ui layout '.length));
  }
  /** The size of a window's own area (a window manager's frame not counted), from the X server. */
  windowSize(id: string): { w: number; h: number } {
    const info = execFileSync('xwininfo', ['-id', id], { env: { ...process.env, DISPLAY: this.display }, encoding: 'utf8' });
    const at = (k: string) => Number(info.match(new RegExp(`${k}:\\s+(\\d+)`))![1]);
    return { w: at('Width'), h: at('Height') };
  }
  /** The screen's pixels in `r` (screen coordinates) as RGB triples, read from the X server. */
  grab(r: Rect): number[][] {
    const raw = execFileSync('ffmpeg', ['-loglevel', 'error', '-f', 'x11grab', '-video_size', `${r.w}x${r.h}`, '-i', `${this.display}+${r.x},${r.y}`,
      '-frames:v', '1', '-f', 'rawvideo', '-pix_fmt', 'rgb24', '-'], { maxBuffer: 64 << 20 });
    const px: number[][] = [];
    for (let i = 0; i + 2 < raw.length; i += 3) px.push([raw[i], raw[i + 1], raw[i + 2]]);
    return px;
  }
  /** The consent window's id, once it is on screen. */
  async window(timeoutMs = 20_000): Promise<string> {
    let id = '';
    await waitFor('the consent window', async () => {
      try { id = this.xdo(['search', '--onlyvisible', '--name', 'Sightline remote support']).split('\n')[0]; } catch { id = ''; }
      return id !== '';
    }, timeoutMs);
    return id;
  }
  async windowGone(timeoutMs = 20_000): Promise<void> {
    await waitFor('the consent window to close', async () => {
      try { return this.xdo(['search', '--onlyvisible', '--name', 'Sightline remote support']) === ''; } catch { return true; }
    }, timeoutMs);
  }
  /** Clicks a widget of the window (`allow`, `deny`, `level:control`, `pause`, `end`, ...). */
  async click(widget: string): Promise<void> {
    const id = await this.window();
    await waitFor(`widget ${widget} in the consent window`, async () => this.layout().has(widget));
    const r = this.layout().get(widget)!;
    const origin = this.windowOrigin(id);
    const x = origin.x + Math.round(r.x + r.w / 2);
    const y = origin.y + Math.round(r.y + r.h / 2);
    this.xdo(['mousemove', String(x), String(y), 'sleep', '0.2', 'click', '1']);
  }
  /** Where the window's content starts on the screen. (xdotool's getwindowgeometry counts a
   * window manager's frame offset twice; xwininfo translates to the root window itself.) */
  windowOrigin(id: string): { x: number; y: number } {
    const info = execFileSync('xwininfo', ['-id', id], { env: { ...process.env, DISPLAY: this.display }, encoding: 'utf8' });
    const at = (axis: string) => Number(info.match(new RegExp(`Absolute upper-left ${axis}:\\s+(-?\\d+)`))![1]);
    return { x: at('X'), y: at('Y') };
  }
  /** The last thing the window logged under `prefix` (`consent-ui ended: `, `consent-ui ending: `),
   * without the prefix: the window logs what it tells the user. */
  told(prefix: string): string {
    const lines = this.logs().split('\n').filter((l) => l.startsWith(prefix));
    return (lines[lines.length - 1] ?? '').slice(prefix.length);
  }
  /** What the prompt showed, as the window logged it. */
  promptText(): string {
    const lines = this.logs().split('\n').filter((l) => l.startsWith('consent-ui prompt: '));
    return lines[lines.length - 1] ?? '';
  }
  /** Kills the window's X client (it crashed, or was closed where no window manager runs). */
  async killWindow(): Promise<void> {
    this.xdo(['windowkill', await this.window()]);
  }
  /** Starts a window manager (openbox) on the display: minimising and closing windows the way a
   * user does need one. It ends with the display. */
  startWindowManager(): Proc {
    return launch('openbox', 'openbox', ['--sm-disable'], { DISPLAY: this.display });
  }
  /** Asks the window manager to close the window, as its close button does (WM_DELETE_WINDOW). */
  closeThroughWindowManager(): void {
    execFileSync('wmctrl', ['-c', 'Sightline remote support'], { env: { ...process.env, DISPLAY: this.display } });
  }
  screenshot(file: string): void {
    fs.mkdirSync(path.dirname(file), { recursive: true });
    execFileSync('import', ['-window', 'root', file], { env: { ...process.env, DISPLAY: this.display } });
  }
  pointer(): { x: number; y: number } {
    const g = Object.fromEntries(this.xdo(['getmouselocation', '--shell']).split('\n').map((l) => l.split('=')));
    return { x: Number(g.X), y: Number(g.Y) };
  }
}

/** Opens the viewer, asks for a session, the user allows it; resolves once media is live. */
export async function openView(page: Page, relay: { url: string }, agentName: string, endpoint: Endpoint): Promise<void> {
  await requestView(page, relay, agentName);
  await expect(page.getByTestId('view-state')).toHaveAttribute('data-state', 'awaiting-consent');
  // The window ticks view and chat (R20): the user ticks control, which the request asked for.
  await endpoint.click('level:control');
  await endpoint.click('allow');
  await expect(page.getByTestId('view-state')).toHaveAttribute('data-state', 'live');
}

export interface FrameSample { counter: number; captureMs: number; presentedMs: number; width: number; height: number }

/**
 * Samples every frame the video presents for `durationMs`, reading the frame code from the
 * pixels (design.md "Frame code"): 64 blocks of 16x16 from (0,0), centre pixel, luma >= 128.
 */
export async function sampleFrames(page: Page, durationMs: number): Promise<FrameSample[]> {
  return page.evaluate(async (duration) => {
    const video = document.querySelector('video') as HTMLVideoElement;
    const canvas = document.createElement('canvas');
    const ctx = canvas.getContext('2d', { willReadFrequently: true })!;
    const samples: FrameSample[] = [];
    await new Promise<void>((resolve) => {
      const end = performance.now() + duration;
      const onFrame = (_now: number, meta: VideoFrameCallbackMetadata) => {
        canvas.width = 1024; canvas.height = 16;
        ctx.drawImage(video, 0, 0, 1024, 16, 0, 0, 1024, 16);
        const px = ctx.getImageData(0, 0, 1024, 16).data;
        let hi = 0, lo = 0;
        for (let i = 0; i < 64; i++) {
          const o = (8 * 1024 + i * 16 + 8) * 4;
          const luma = 0.299 * px[o] + 0.587 * px[o + 1] + 0.114 * px[o + 2];
          const bit = luma >= 128 ? 1 : 0;
          if (i < 32) hi = (hi * 2 + bit) >>> 0; else lo = (lo * 2 + bit) >>> 0;
        }
        const presented = Math.floor(performance.timeOrigin + meta.presentationTime);
        samples.push({ counter: hi, captureMs: lo, presentedMs: presented, width: meta.width, height: meta.height });
        if (performance.now() < end) video.requestVideoFrameCallback(onFrame); else resolve();
      };
      video.requestVideoFrameCallback(onFrame);
    });
    return samples;
  }, durationMs) as Promise<FrameSample[]>;
}

/** Glass-to-glass latency of a sample in ms, on the shared wrapped 32-bit millisecond clock. */
export function latencyMs(s: FrameSample): number {
  return ((s.presentedMs % 2 ** 32) - s.captureMs + 2 ** 32) % 2 ** 32;
}

/** The colour most pixels of a square have (RGBA `px`, row length `width`, centre x, y, half side
 * `half`): what the screen shows there, whatever fine print (the operator's watermark, R36) runs
 * across it. Pixels are grouped in steps of 16 per channel; the group's mean is returned. */
export function dominantColour(px: Uint8ClampedArray | number[], width: number, height: number, x: number, y: number, half = 16): number[] {
  const groups = new Map<number, number[]>();
  for (let yy = Math.max(0, y - half); yy < Math.min(height, y + half + 1); yy++) {
    for (let xx = Math.max(0, x - half); xx < Math.min(width, x + half + 1); xx++) {
      const o = (yy * width + xx) * 4;
      const key = ((px[o] >> 4) << 8) | ((px[o + 1] >> 4) << 4) | (px[o + 2] >> 4);
      const g = groups.get(key) ?? [0, 0, 0, 0];
      g[0] += px[o]; g[1] += px[o + 1]; g[2] += px[o + 2]; g[3] += 1;
      groups.set(key, g);
    }
  }
  const best = [...groups.values()].reduce((a, b) => (b[3] > a[3] ? b : a));
  return [best[0] / best[3], best[1] / best[3], best[2] / best[3]].map(Math.round);
}

/** The colour the centre of the current video frame shows (see `dominantColour`). */
export async function centrePixel(page: Page): Promise<[number, number, number]> {
  const { px, width, height } = await page.evaluate(() => {
    const video = document.querySelector('video') as HTMLVideoElement;
    const canvas = document.createElement('canvas');
    canvas.width = video.videoWidth; canvas.height = video.videoHeight;
    const ctx = canvas.getContext('2d')!;
    ctx.drawImage(video, 0, 0);
    const [x, y] = [Math.floor(canvas.width / 2) - 16, Math.floor(canvas.height / 2) - 16];
    return { px: Array.from(ctx.getImageData(x, y, 33, 33).data), width: 33, height: 33 };
  });
  return dominantColour(px, width, height, 16, 16) as [number, number, number];
}

/** A Chromium context with a virtual platform authenticator (CTAP2, internal, resident keys, user verification). */
export async function contextWithPasskeys(browser: Browser): Promise<{ context: BrowserContext; page: Page; authenticatorId: string; cdp: CDPSession }> {
  const context = await browser.newContext();
  const page = await context.newPage();
  const cdp = await context.newCDPSession(page);
  await cdp.send('WebAuthn.enable');
  const { authenticatorId } = await cdp.send('WebAuthn.addVirtualAuthenticator', {
    options: { protocol: 'ctap2', transport: 'internal', hasResidentKey: true, hasUserVerification: true, isUserVerified: true, automaticPresenceSimulation: true },
  });
  return { context, page, authenticatorId, cdp };
}

/** Enrols from a link in `page` (which has a virtual authenticator) and waits until signed in. */
export async function enrolFromLink(page: Page, link: string, name?: string): Promise<void> {
  await page.goto(link);
  if (name) await page.locator('input[name="enrol-name"]').fill(name);
  await page.getByRole('button', { name: 'Create passkey' }).click();
  await expect(page.getByTestId('signed-in-as')).toBeVisible();
}

export async function signIn(page: Page, relay: { url: string }, name: string): Promise<void> {
  await page.goto(relay.url);
  await page.locator('input[name="username"]').fill(name);
  await page.getByRole('button', { name: 'Sign in with passkey' }).click();
  await expect(page.getByTestId('signed-in-as')).toContainText(name);
}

/**
 * From the page's next load on (it is reloaded here): keeps the data channels it opens in
 * `window.__channels` and its WebSockets in `window.__sockets`, so a test can send on the
 * viewer's own channel or signalling socket what a modified viewer would (`sendRawSignal`), and
 * counts the input messages the page sends on the channels (`inputsSent`).
 */
export async function watchChannels(page: Page): Promise<void> {
  await page.context().addInitScript(() => {
    const w = window as any;
    w.__channels = [];
    w.__inputsSent = 0;
    const create = RTCPeerConnection.prototype.createDataChannel;
    RTCPeerConnection.prototype.createDataChannel = function (this: RTCPeerConnection, label: string, init?: RTCDataChannelInit) {
      const channel = create.call(this, label, init);
      w.__channels.push(channel);
      const send = channel.send.bind(channel) as (data: string) => void;
      (channel as any).send = (data: string) => {
        if (typeof data === 'string' && JSON.parse(data).type === 'input') w.__inputsSent++;
        send(data);
      };
      return channel;
    };
    w.__sockets = [];
    const NativeSocket = WebSocket;
    w.WebSocket = class extends NativeSocket {
      constructor(url: string | URL, protocols?: string | string[]) {
        super(url, protocols);
        w.__sockets.push(this);
      }
    };
  });
  await page.reload();
}

/** Sends `message` as raw JSON on the page's open signalling socket (see `watchChannels`). */
export async function sendRawSignal(page: Page, message: object): Promise<void> {
  const open = () => page.evaluate(() => ((window as any).__sockets ?? []).some((s: WebSocket) => s.url.endsWith('/ws/viewer') && s.readyState === WebSocket.OPEN));
  await expect.poll(open, { message: 'the signalling socket is open' }).toBe(true);
  await page.evaluate((m) => {
    const socket = ((window as any).__sockets as WebSocket[]).filter((s) => s.url.endsWith('/ws/viewer') && s.readyState === WebSocket.OPEN).at(-1)!;
    socket.send(JSON.stringify(m));
  }, message);
}

/** How many input messages the page has sent on its data channels (see `watchChannels`). */
export async function inputsSent(page: Page): Promise<number> {
  return page.evaluate(() => (window as any).__inputsSent as number);
}

/**
 * Sends a chat line from the operator's page and waits until the relay shows it back, which it
 * does once the line reached the endpoint's channel: every message the page sent on its channel
 * before it has then been handled by the relay, and whatever the relay passed on has reached the
 * endpoint ahead of it (one ordered channel each way). The positive marker for negative input
 * checks, instead of a sleep.
 */
export async function chatMarker(page: Page, text: string): Promise<void> {
  await page.locator('input[name="chat"]').fill(text);
  await page.getByTestId('chat-send').click();
  await expect(page.getByTestId('chat-log')).toContainText(`: ${text}`);
}

/** The relay's count of input it dropped in the one session that ended (its `session.ended` record). */
export async function droppedInSession(relay: Relay): Promise<number> {
  let ended: AuditRecord[] = [];
  await expect.poll(() => (ended = relay.auditRecords().filter((r) => r.kind === 'session.ended')).length, { message: 'the session.ended record' }).toBe(1);
  const m = /input events dropped: (\d+)$/.exec(ended[0].detail);
  expect(m, ended[0].detail).not.toBeNull();
  return Number(m![1]);
}

/** Sends a `watch` request on a raw viewer socket (bypassing the viewer's form); resolves with
 * the relay's first answer. */
export async function rawWatch(page: Page, port: number, agentId: string, ticket: string, reason: string, helpCode?: string): Promise<any> {
  return page.evaluate(([p, agent, t, r, code]) => new Promise((resolve) => {
    const ws = new WebSocket(`ws://localhost:${p}/ws/viewer`);
    const watch: Record<string, unknown> = { v: 1, type: 'watch', agent_id: agent, sdp: 'v=0', ticket: t, reason: r, levels: ['view'] };
    if (code) watch.help_code = code;
    ws.onopen = () => ws.send(JSON.stringify(watch));
    ws.onmessage = (ev) => {
      const msg = JSON.parse(ev.data);
      // A request that reaches the endpoint is answered with the session's status first.
      if (msg.type === 'error' || msg.type === 'watch_answer' || msg.type === 'session') { ws.close(); resolve(msg); }
    };
  }), [port, agentId, ticket, reason, helpCode ?? ''] as const);
}

/** On a raw viewer socket from the signed-in page: the running sessions the relay lists, then its
 * first answer to observing `sessionId` (the first listed when not given). */
export async function rawObserve(page: Page, port: number, sessionId?: string): Promise<{ listed: string[]; answer: any }> {
  return page.evaluate(([p, id]) => new Promise((resolve) => {
    const ws = new WebSocket(`ws://localhost:${p}/ws/viewer`);
    let listed: string[] | null = null;
    ws.onmessage = (ev) => {
      const msg = JSON.parse(ev.data);
      if (listed === null && msg.type === 'sessions') {
        listed = msg.sessions.map((s: { session_id: string }) => s.session_id);
        ws.send(JSON.stringify({ v: 1, type: 'observe', session_id: id || listed![0] || 'none', sdp: 'v=0' }));
      } else if (listed !== null && (msg.type === 'error' || msg.type === 'session')) {
        ws.close();
        resolve({ listed, answer: msg });
      }
    };
  }), [port, sessionId ?? ''] as const);
}

/** The help queue the relay sends a viewer socket opened from the signed-in page, as sent. */
export async function rawHelpQueue(page: Page, port: number): Promise<Record<string, unknown>[]> {
  return page.evaluate((p) => new Promise((resolve) => {
    const ws = new WebSocket(`ws://localhost:${p}/ws/viewer`);
    ws.onmessage = (ev) => {
      const msg = JSON.parse(ev.data);
      if (msg.type === 'help_requests') { ws.close(); resolve(msg.requests); }
    };
  }), port);
}

/** A fresh passkey confirmation from `page` (the relay's step-up ceremony, as the viewer runs it). */
export async function stepUp(page: Page): Promise<void> {
  await page.evaluate(async () => {
    const post = (p: string, body: unknown) => fetch(p, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
    const start = await (await post('/api/step-up/start', {})).json();
    const publicKey = PublicKeyCredential.parseRequestOptionsFromJSON(start.options.publicKey);
    const credential = (await navigator.credentials.get({ publicKey })) as PublicKeyCredential;
    const finish = await post('/api/step-up/finish', { ceremony_id: start.ceremony_id, credential: credential.toJSON() });
    if (!finish.ok) throw new Error(`step-up refused: ${await finish.text()}`);
  });
}

/**
 * An admin's approval of one command on the relay's host (the policy gates it): a step-up, then
 * the relay records the approval and answers its one-time code.
 */
export async function approveCommand(admin: Page, command: string, target: string): Promise<string> {
  await stepUp(admin);
  const res = await api(admin, 'POST', '/api/admin/command-approvals', { command, target, reason: 'e2e: the test asks', valid_minutes: 10 });
  if (res.status !== 200) throw new Error(`approval refused: ${res.status} ${JSON.stringify(res.json)}`);
  return res.json.code as string;
}

/** Calls the relay API from a signed-in page (its cookie goes along). */
export async function api(page: Page, method: string, apiPath: string, body?: unknown): Promise<{ status: number; json: any }> {
  return page.evaluate(async ([m, p, b]) => {
    const res = await fetch(p as string, { method: m as string, headers: b === undefined ? {} : { 'content-type': 'application/json' }, body: b === undefined ? undefined : JSON.stringify(b) });
    const text = await res.text();
    return { status: res.status, json: text ? JSON.parse(text) : null };
  }, [method, apiPath, body] as const);
}

export interface World { relay: Relay; admin: Page; operator: Page; agent: Proc; agentDir: string; agentName: string; endpoint: Endpoint; xvfb?: Xvfb }

/**
 * A relay with an admin (from the bootstrap link), an operator (invited, enrolled, signed in),
 * and one enrolled agent running.
 */
export async function world(browser: Browser, agent: Partial<AgentOptions> & { name: string }, relayOpts: RelayOptions = {}): Promise<World> {
  const relay = await Relay.start(relayOpts);
  return worldOn(browser, relay, agent);
}

/** `world` on a relay that is already running. */
export async function worldOn(browser: Browser, relay: Relay, agent: Partial<AgentOptions> & { name: string }): Promise<World> {
  const { page: admin } = await contextWithPasskeys(browser);
  await enrolFromLink(admin, relay.bootstrapLink(), 'admin');
  const invite = await api(admin, 'POST', '/api/admin/invitations', { name: 'operator', role: 'operator' });
  expect(invite.status).toBe(200);
  const { page: operator } = await contextWithPasskeys(browser);
  await enrolFromLink(operator, invite.json.link);
  const token = await api(admin, 'POST', '/api/admin/agent-tokens', { segment: 'office' });
  expect(token.status).toBe(200);
  const agentDir = enrolAgent(relay, token.json.token, agent.name);
  // The endpoint's display: the consent window shows there (and the screen, for x11 sources).
  // A terminal endpoint has none.
  const xvfb = agent.display || agent.terminal ? undefined : await Xvfb.start(1280, 720);
  const display = agent.display ?? xvfb?.display ?? '';
  const proc = startAgent(relay, { ...agent, display, dataDir: agentDir });
  const w: World = { relay, admin, operator, agent: proc, agentDir, agentName: agent.name, endpoint: new Endpoint(display, () => ''), xvfb };
  w.endpoint = new Endpoint(display, () => w.agent.log());
  return w;
}

/** An admin invites `name` with `role`; the invitee enrols in a fresh context. Returns their page. */
export async function inviteAndEnrol(browser: Browser, admin: Page, name: string, role: string): Promise<Page> {
  const invite = await api(admin, 'POST', '/api/admin/invitations', { name, role });
  expect(invite.status, JSON.stringify(invite.json)).toBe(200);
  const { page } = await contextWithPasskeys(browser);
  await enrolFromLink(page, invite.json.link);
  return page;
}

export async function stopWorld(w: World | undefined): Promise<void> {
  await w?.agent.kill();
  await w?.relay.proc.kill();
  await w?.xvfb?.proc.kill();
}

/** A redis-server on a free loopback port, for multi-node tests: every write on its disk before
 * it answers (`appendfsync always`), as the audit log's second copy needs (R43). */
export class RedisServer {
  constructor(public proc: Proc, public port: number) {}
  url(): string { return `redis://127.0.0.1:${this.port}/`; }
  static async start(): Promise<RedisServer> {
    const port = await freePort();
    const proc = launch('redis', 'redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'yes', '--appendfsync', 'always', '--dir', tempDir('redis')]);
    await waitFor('redis-server', async () => new Promise<boolean>((resolve) => {
      const socket = net.connect(port, '127.0.0.1', () => { socket.end(); resolve(true); });
      socket.on('error', () => resolve(false));
    }));
    return new RedisServer(proc, port);
  }
  async kill(): Promise<void> { await this.proc.kill(); }
}

/**
 * A real HAProxy (Debian's haproxy) in front of several relay nodes (R43), as a bank puts a load
 * balancer in front of them: plain HTTP mode, WebSocket upgrades passed through (`timeout
 * tunnel`), no stickiness needed by the relay. Requests without a pin go round-robin; a test
 * places a browser on one node by giving its context the `sightline_node` cookie (`pin`), which
 * only this balancer reads.
 */
export class LoadBalancer {
  constructor(public proc: Proc, public port: number, public config: string) {}
  get url(): string { return `http://localhost:${this.port}`; }
  /** The public URL the nodes behind it announce. */
  get publicUrl(): string { return `${this.url}/`; }
  static async start(port: number, nodes: { name: string; port: number }[]): Promise<LoadBalancer> {
    const dir = tempDir('haproxy');
    const config = [
      'global', '  maxconn 4096',
      'defaults', '  mode http', '  timeout connect 2s', '  timeout client 30s', '  timeout server 30s', '  timeout tunnel 1h',
      'frontend public', `  bind 127.0.0.1:${port}`,
      // Sticky with failover: a browser stays on its node while that node is up, and goes to the
      // others once its health checks fail (a node lost, R43).
      ...nodes.map((n) => `  use_backend pin_${n.name} if { req.cook(sightline_node) -m str ${n.name} } { srv_is_up(pin_${n.name}/${n.name}) }`),
      '  default_backend nodes',
      'backend nodes', '  balance roundrobin', '  option httpchk GET /readyz', '  http-check expect status 200',
      ...nodes.map((n) => `  server ${n.name} 127.0.0.1:${n.port} check inter 1s fall 2 rise 1`),
      ...nodes.flatMap((n) => [`backend pin_${n.name}`, '  option httpchk GET /readyz', '  http-check expect status 200', `  server ${n.name} 127.0.0.1:${n.port} check inter 1s fall 2 rise 1`]),
    ].join('\n') + '\n';
    const file = path.join(dir, 'haproxy.cfg');
    fs.writeFileSync(file, config);
    const proc = launch('haproxy', 'haproxy', ['-db', '-f', file]);
    await waitFor('haproxy', async () => {
      if (proc.child.exitCode !== null) throw new Error(`haproxy exited: ${proc.log()}`);
      try { return (await fetch(`http://127.0.0.1:${port}/healthz`)).ok; } catch { return false; }
    });
    return new LoadBalancer(proc, port, config);
  }
  /** From now on, `context`'s requests through the balancer go to node `name`. */
  async pin(context: BrowserContext, name: string): Promise<void> {
    await context.addCookies([{ name: 'sightline_node', value: name, domain: 'localhost', path: '/' }]);
  }
}

/**
 * A real rsyslog (Debian's rsyslog, rsyslog-gnutls, rsyslog-relp) as the SIEM: plain TCP
 * (imptcp), TLS (imtcp with GnuTLS) and RELP (imrelp) on free loopback ports, every message
 * written raw (`%rawmsg%`) to one file. It loads no system inputs (imuxsock, imklog), so the
 * machine's own logging is untouched. Restarting keeps the directory, ports and file.
 */
export class Rsyslog {
  constructor(public proc: Proc, public dir: string, public ports: { tcp: number; tls: number; relp: number }) {}
  get caFile(): string { return path.join(this.dir, 'ca.pem'); }
  file(transport: 'tcp' | 'tls' | 'relp'): string { return path.join(this.dir, `${transport}.log`); }
  static async start(previous?: Rsyslog): Promise<Rsyslog> {
    const dir = previous?.dir ?? tempDir('rsyslog');
    const ports = previous?.ports ?? { tcp: await freePort(), tls: await freePort(), relp: await freePort() };
    if (!previous) {
      fs.mkdirSync(path.join(dir, 'work'));
      testCertificate(dir);
      fs.writeFileSync(path.join(dir, 'rsyslog.conf'), [
        `global(workDirectory="${dir}/work" defaultNetstreamDriverCAFile="${dir}/ca.pem" defaultNetstreamDriverCertFile="${dir}/cert.pem" defaultNetstreamDriverKeyFile="${dir}/key.pem")`,
        'module(load="imptcp")',
        'module(load="imtcp" streamDriver.name="gtls" streamDriver.mode="1" streamDriver.authMode="anon" gnutlsPriorityString="NORMAL:-VERS-ALL:+VERS-TLS1.3:+VERS-TLS1.2")',
        'module(load="imrelp")',
        'template(name="raw" type="string" string="%rawmsg%\\n")',
        // One file per transport. Direct queues: a message is in its file before imrelp answers
        // 200 OK for it.
        ...(['tcp', 'tls', 'relp'] as const).flatMap((t) => [
          `ruleset(name="${t}" queue.type="Direct") {`,
          `  action(type="omfile" file="${dir}/${t}.log" template="raw" flushOnTXEnd="on" asyncWriting="off")`,
          '}',
        ]),
        `input(type="imptcp" port="${ports.tcp}" address="127.0.0.1" ruleset="tcp")`,
        `input(type="imtcp" port="${ports.tls}" address="127.0.0.1" ruleset="tls")`,
        `input(type="imrelp" port="${ports.relp}" address="127.0.0.1" ruleset="relp")`,
        '',
      ].join('\n'));
    }
    const proc = launch('rsyslog', 'rsyslogd', ['-n', '-f', path.join(dir, 'rsyslog.conf'), '-i', path.join(dir, 'rsyslog.pid')]);
    const r = new Rsyslog(proc, dir, ports);
    for (const port of [ports.tcp, ports.tls, ports.relp]) {
      await waitFor(`rsyslog on port ${port}`, async () => {
        if (proc.child.exitCode !== null) throw new Error(`rsyslogd exited: ${proc.log()}`);
        return new Promise<boolean>((resolve) => {
          const socket = net.connect(port, '127.0.0.1', () => { socket.destroy(); resolve(true); });
          socket.on('error', () => resolve(false));
        });
      });
    }
    return r;
  }
  /** The messages received so far over one transport, one per line. */
  messages(transport: 'tcp' | 'tls' | 'relp'): string[] {
    const file = this.file(transport);
    if (!fs.existsSync(file)) return [];
    return fs.readFileSync(file, 'utf8').split('\n').filter((l) => l !== '');
  }
  async kill(signal: NodeJS.Signals = 'SIGTERM'): Promise<void> { await this.proc.kill(signal); }
}

/** An RFC 5424 message as the relay sends it: structured data and body. */
export interface SiemMessage { msgid: string; node: string; seq?: number; size?: number; leaf?: string; body: string }

export function parseSiemMessage(line: string): SiemMessage {
  const m = line.match(/^<\d+>1 \S+ \S+ sightline-relay - (\S+) \[sightline@32473 ((?:\w+="(?:[^"\\]|\\.)*" ?)*)\] (.*)$/);
  if (!m) throw new Error(`not a Sightline syslog message: ${line.slice(0, 200)}`);
  const params: Record<string, string> = {};
  for (const p of m[2].matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)) params[p[1]] = p[2].replace(/\\(.)/g, '$1');
  return {
    msgid: m[1], node: params.node, body: m[3],
    seq: params.seq === undefined ? undefined : Number(params.seq),
    size: params.size === undefined ? undefined : Number(params.size),
    leaf: params.leaf,
  };
}

/** A CEF parser written from the format's definition (not from the relay's code). */
export function parseCef(line: string): { header: string[]; ext: Record<string, string> } {
  const header: string[] = [];
  let cur = '';
  let i = 0;
  while (header.length < 7) {
    const c = line[i++];
    if (c === '\\') cur += line[i++];
    else if (c === '|') { header.push(cur); cur = ''; } else cur += c;
  }
  const rest = line.slice(i);
  const ext: Record<string, string> = {};
  // A key is a word right after the start or a space, ending at an unescaped '='; its value
  // runs to the next key.
  const keys: { key: string; start: number; valueStart: number }[] = [];
  for (let j = 0; j < rest.length; j++) {
    if (rest[j] === '\\') { j++; continue; }
    if (rest[j] !== '=') continue;
    let k = j;
    while (k > 0 && /[A-Za-z0-9_]/.test(rest[k - 1])) k--;
    if (k < j && (k === 0 || rest[k - 1] === ' ')) keys.push({ key: rest.slice(k, j), start: Math.max(0, k - 1), valueStart: j + 1 });
  }
  keys.forEach((k, n) => {
    const end = n + 1 < keys.length ? keys[n + 1].start : rest.length;
    ext[k.key] = rest.slice(k.valueStart, end).replace(/\\(.)/g, (_, c) => (c === 'n' ? '\n' : c === 'r' ? '\r' : c));
  });
  return { header, ext };
}

/** The X keycode of `keysym` on `display` (from xmodmap's table). */
export function keycodeOf(display: string, keysym: string): number {
  const table = execFileSync('xmodmap', ['-pke'], { env: { ...process.env, DISPLAY: display }, encoding: 'utf8' });
  const line = table.split('\n').find((l) => l.split('=')[1]?.trim().split(/\s+/)[0] === keysym);
  if (!line) throw new Error(`no keycode for ${keysym}`);
  return Number(line.split('=')[0].replace('keycode', '').trim());
}

/** Keys and pointer buttons held down through XTEST, the agent's way of injecting (xinput's
 * state of the XTEST devices; the master devices have no state of their own to query). */
export function held(display: string): { keys: number[]; buttons: number[] } {
  const state = (device: string) => execFileSync('xinput', ['query-state', device], { env: { ...process.env, DISPLAY: display }, encoding: 'utf8' });
  const down = (text: string, kind: string) => [...text.matchAll(new RegExp(`${kind}\\[(\\d+)\\]=down`, 'g'))].map((m) => Number(m[1])).sort((a, b) => a - b);
  return { keys: down(state('Virtual core XTEST keyboard'), 'key'), buttons: down(state('Virtual core XTEST pointer'), 'button') };
}

/**
 * Debian's coturn as the TURN server viewers relay through (R42): TURN over TCP and over TLS on
 * free loopback ports (no UDP listener), REST credentials (`use-auth-secret`) derived from a
 * fresh 32-byte secret, and relaying to `allowedPeer` alone (the relay's media address): every
 * other IPv4 and IPv6 address is denied. The relay's media is on loopback in these tests, so
 * loopback peers are let through coturn's blanket loopback ban and then held to the same list.
 */
export class Coturn {
  constructor(public proc: Proc, public dir: string, public ports: { tcp: number; tls: number }, public secret: string) {}
  get secretFile(): string { return path.join(this.dir, 'secret'); }
  /** The base64 SHA-256 of the TLS certificate's public key, for Chromium's
   * `--ignore-certificate-errors-spki-list` (trusting this test certificate and no other). */
  spki(): string {
    const pub = execFileSync('openssl', ['x509', '-in', path.join(this.dir, 'cert.pem'), '-pubkey', '-noout']);
    const der = execFileSync('openssl', ['pkey', '-pubin', '-outform', 'der'], { input: pub });
    return crypto.createHash('sha256').update(der).digest('base64');
  }
  static async start(allowedPeer: string): Promise<Coturn> {
    const dir = tempDir('coturn');
    const cert = testCertificate(dir);
    const ports = { tcp: await freePort(), tls: await freePort() };
    const secret = execFileSync('openssl', ['rand', '-hex', '32'], { encoding: 'utf8' }).trim();
    fs.writeFileSync(path.join(dir, 'secret'), `${secret}\n`, { mode: 0o600 });
    const conf = [
      'listening-ip=127.0.0.1', 'relay-ip=127.0.0.1', `listening-port=${ports.tcp}`, `tls-listening-port=${ports.tls}`,
      'no-udp', 'no-dtls', 'use-auth-secret', `static-auth-secret=${secret}`, 'realm=sightline.test',
      'no-cli', 'no-multicast-peers', 'allow-loopback-peers',
      'denied-peer-ip=0.0.0.0-255.255.255.255', 'denied-peer-ip=::-ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff',
      `allowed-peer-ip=${allowedPeer}`,
      `cert=${cert.cert}`, `pkey=${cert.key}`, `userdb=${path.join(dir, 'turndb')}`, `pidfile=${path.join(dir, 'turn.pid')}`,
      'simple-log', 'log-file=stdout', 'verbose',
    ];
    fs.writeFileSync(path.join(dir, 'turnserver.conf'), conf.join('\n') + '\n');
    const proc = launch('coturn', 'turnserver', ['-c', path.join(dir, 'turnserver.conf')]);
    await waitFor('coturn', async () => new Promise<boolean>((resolve) => {
      if (proc.child.exitCode !== null) throw new Error(`coturn exited: ${proc.log().slice(-2000)}`);
      const socket = net.connect(ports.tls, '127.0.0.1', () => { socket.end(); resolve(true); });
      socket.on('error', () => resolve(false));
    }));
    return new Coturn(proc, dir, ports, secret);
  }
  /** The REST password of `username` (`<expiry>:<holder>`), as coturn checks it. */
  password(username: string): string {
    return crypto.createHmac('sha1', this.secret).update(username).digest('base64');
  }
  /**
   * coturn's own client (`turnutils_uclient`) over TCP: allocates with `username`/`password`,
   * asks for a permission to `peer:peerPort` and echoes 3 messages off it. Its exit status (0: the
   * echoes came back) and the TURN error codes it reported.
   */
  uclient(username: string, password: string, peer: string, peerPort: number): { status: number; errors: number[] } {
    const r = spawnSync('turnutils_uclient', ['-t', '-n', '3', '-m', '1', '-u', username, '-w', password, '-e', peer, '-r', String(peerPort), '-p', String(this.ports.tcp), '127.0.0.1'], { encoding: 'utf8', timeout: 20_000 });
    const said = `${r.stdout}${r.stderr}`;
    const errors = [...said.matchAll(/error (\d{3}) \(/g)].map((m) => Number(m[1]));
    return { status: r.status ?? -1, errors };
  }
}

/** coturn's UDP echo peer (`turnutils_peer`) on a free loopback port: the permitted destination. */
export async function echoPeer(): Promise<{ proc: Proc; port: number }> {
  const port = await freePort();
  const proc = launch('turn-peer', 'turnutils_peer', ['-L', '127.0.0.1', '-p', String(port)]);
  return { proc, port };
}

/**
 * An endpoint network whose only way out is an authenticating HTTP proxy (R1): a network
 * namespace joined to this one by a veth pair on a /30 of 198.18.0.0/15, where only tinyproxy
 * (Basic authentication, CONNECT to `connectPorts` only) listens on this side. The relay listens
 * on this side's loopback, which the namespace cannot reach. `netem` shapes the link both ways.
 */
export class ProxyNamespace {
  constructor(public name: string, public links: [string, string], public outside: string, public proxy: Proc, public proxyUrl: string, public credentials: string) {}
  static async start(connectPorts: number[]): Promise<ProxyNamespace> {
    const n = (process.pid * 13 + Math.floor(Math.random() * 1000)) % 16_000;
    const name = `sl-e2e-${n}`;
    const links: [string, string] = [`sle${n}a`, `sle${n}b`];
    const [outside, inside] = [`198.18.${Math.floor(n / 64)}.${(n % 64) * 4 + 1}`, `198.18.${Math.floor(n / 64)}.${(n % 64) * 4 + 2}`];
    spawnSync('ip', ['netns', 'del', name]);
    for (const args of [
      ['netns', 'add', name],
      ['link', 'add', links[0], 'type', 'veth', 'peer', 'name', links[1], 'netns', name],
      ['addr', 'add', `${outside}/30`, 'dev', links[0]],
      ['link', 'set', links[0], 'up'],
      ['-n', name, 'addr', 'add', `${inside}/30`, 'dev', links[1]],
      ['-n', name, 'link', 'set', links[1], 'up'],
      ['-n', name, 'link', 'set', 'lo', 'up'],
    ]) {
      const r = spawnSync('ip', args, { encoding: 'utf8' });
      if (r.status !== 0) throw new Error(`ip ${args.join(' ')}: ${r.stderr} (network namespaces need root)`);
    }
    const dir = tempDir('tinyproxy');
    const port = await freePort();
    const [user, password] = ['teller', crypto.randomBytes(12).toString('hex')];
    fs.writeFileSync(path.join(dir, 'tinyproxy.conf'), [
      `Port ${port}`, `Listen ${outside}`, 'Timeout 600', 'MaxClients 50', 'Allow 198.18.0.0/15', `BasicAuth ${user} ${password}`,
      ...connectPorts.map((p) => `ConnectPort ${p}`), 'LogLevel Info', `PidFile "${path.join(dir, 'tinyproxy.pid')}"`,
    ].join('\n') + '\n');
    const credentials = path.join(dir, 'credentials');
    fs.writeFileSync(credentials, `${user}:${password}\n`, { mode: 0o600 });
    const proxy = launch('tinyproxy', 'tinyproxy', ['-d', '-c', path.join(dir, 'tinyproxy.conf')]);
    await waitFor('tinyproxy', async () => new Promise<boolean>((resolve) => {
      const socket = net.connect(port, outside, () => { socket.end(); resolve(true); });
      socket.on('error', () => resolve(false));
    }));
    return new ProxyNamespace(name, links, outside, proxy, `http://${outside}:${port}`, credentials);
  }
  /** `tc netem` on both ends of the link (e.g. `['loss', '1%']`); `[]` removes it. */
  netem(spec: string[]): void {
    for (const [ns, dev] of [[undefined, this.links[0]], [this.name, this.links[1]]] as const) {
      const prefix = ns ? ['ip', 'netns', 'exec', ns] : [];
      const args = spec.length ? ['qdisc', 'replace', 'dev', dev, 'root', 'netem', ...spec] : ['qdisc', 'del', 'dev', dev, 'root'];
      const r = spawnSync(prefix.length ? prefix[0] : 'tc', prefix.length ? [...prefix.slice(1), 'tc', ...args] : args, { encoding: 'utf8' });
      if (r.status !== 0 && spec.length) throw new Error(`tc ${args.join(' ')}: ${r.stderr}`);
    }
  }
  async stop(): Promise<void> {
    await this.proxy.kill();
    spawnSync('ip', ['netns', 'del', this.name]);
  }
}

/** The tampering the test provider can apply to the ID tokens it hands out (`e2e/oidc/provider.mjs`). */
export type TokenTamper = 'aud' | 'expired' | 'nonce-replay' | 'unsigned' | 'foreign-key';

/**
 * A real OpenID provider (npm oidc-provider 9 with its development interactions: any login name,
 * any password, the login name is the subject) on a free loopback port, with one client,
 * `sightline`, registered for each relay URL given. `ssoFile` writes the relay's SSO file for it.
 */
export class OidcProvider {
  static readonly SECRET = 'test-client-secret-for-sightline-0123456789';
  constructor(public proc: Proc, public port: number) {}
  get issuer(): string { return `http://127.0.0.1:${this.port}`; }
  static async start(relayUrls: string[], accounts: Record<string, { groups: string[] }>): Promise<OidcProvider> {
    const port = await freePort();
    const dir = tempDir('oidc');
    const base = (u: string) => u.replace(/\/$/, '');
    const client = {
      client_id: 'sightline',
      client_secret: OidcProvider.SECRET,
      redirect_uris: relayUrls.map((u) => `${base(u)}/api/sso/corp/callback`),
      // Where the provider's logout sends the browser back (the relay's front page).
      post_logout_redirect_uris: relayUrls.map((u) => `${base(u)}/`),
      grant_types: ['authorization_code', 'refresh_token'],
      response_types: ['code'],
      // The provider posts from Node, whose fetch may resolve localhost to ::1, where no relay
      // listens: the relay's loopback address it binds.
      backchannel_logout_uri: `${base(relayUrls[0]).replace('//localhost:', '//127.0.0.1:')}/api/sso/corp/backchannel-logout`,
      backchannel_logout_session_required: true,
    };
    const config = path.join(dir, 'provider.json');
    fs.writeFileSync(config, JSON.stringify({ port, clients: [client], accounts }));
    const proc = launch('oidc', 'node', [path.resolve(__dirname, '../oidc/provider.mjs'), config]);
    await waitFor('the OpenID provider', async () => {
      if (proc.child.exitCode !== null) throw new Error(`provider exited: ${proc.log().slice(0, 2000)}`);
      try { return (await fetch(`http://127.0.0.1:${port}/.well-known/openid-configuration`)).ok; } catch { return false; }
    });
    return new OidcProvider(proc, port);
  }
  private async control(route: string, body: object): Promise<void> {
    const res = await fetch(`${this.issuer}${route}`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
    if (!res.ok) throw new Error(`${route}: ${res.status}`);
  }
  /** The directory changes a person's groups. */
  async setGroups(sub: string, groups: string[]): Promise<void> { await this.control('/test/groups', { sub, groups }); }
  /** The next ID tokens are altered this way (`null`: genuine again). */
  async tamper(mode: TokenTamper | null): Promise<void> { await this.control('/test/tamper', { mode }); }
  /** The relay's SSO file: provider `corp`, groups `ops` -> operator and `sec` -> observer unless `roles` says otherwise. */
  ssoFile(opts: { local?: 'allow' | 'forbid'; recheckS?: number; roles?: Record<string, string[]>; segments?: Record<string, string[]>; name?: string; adminFromDirectory?: boolean } = {}): string {
    const roles = opts.roles ?? { ops: ['operator'], sec: ['observer'] };
    const dir = tempDir('sso');
    const secret = path.join(dir, 'client.secret');
    fs.writeFileSync(secret, OidcProvider.SECRET);
    const file = path.join(dir, 'sso.toml');
    fs.writeFileSync(file, [
      `local_accounts = "${opts.local ?? 'allow'}"`,
      `recheck_s = ${opts.recheckS ?? 300}`,
      '[[provider]]',
      `name = "${opts.name ?? 'corp'}"`,
      'label = "Corp directory"',
      `issuer = "${this.issuer}"`,
      'client_id = "sightline"',
      `client_secret_file = "${secret}"`,
      'groups_claim = "groups"',
      'scopes = ["profile", "groups"]',
      'max_age_s = 600',
      `admin_from_directory = ${opts.adminFromDirectory ?? false}`,
      '[provider.roles]',
      ...Object.entries(roles).map(([group, r]) => `${JSON.stringify(group)} = ${JSON.stringify(r)}`),
      ...(opts.segments ? ['[provider.segments]', ...Object.entries(opts.segments).map(([group, s]) => `${JSON.stringify(group)} = ${JSON.stringify(s)}`)] : []),
      '',
    ].join('\n'));
    return file;
  }
}

/**
 * Signs in through the provider from the relay's sign-in page: the provider's login form (any
 * password) and consent when it shows them, then back at the relay. Stops where the relay sends
 * the browser (`#/sso` to continue with the passkey, or a refusal).
 */
export async function throughProvider(page: Page, relay: Relay, login: string): Promise<void> {
  await page.goto(relay.url);
  await page.getByTestId('sso-start').click();
  // Login form, then consent: each shows only when the provider's session does not cover it.
  for (let step = 0; step < 3; step += 1) {
    const form = page.locator('input[name="login"]');
    const consent = page.getByRole('button', { name: 'Continue', exact: true });
    const back = page.locator('main, header.topbar').first();
    await expect(form.or(consent).or(back).first()).toBeVisible();
    if (page.url().startsWith(relay.url)) return;
    if (await form.isVisible()) {
      await form.fill(login);
      await page.locator('input[name="password"]').fill('any-password');
      await page.getByRole('button', { name: 'Sign-in' }).click();
      await expect(form).toBeHidden();
    } else if (await consent.isVisible()) {
      await consent.click();
      await expect(consent).toBeHidden();
    }
  }
  await page.waitForURL((u) => u.toString().startsWith(relay.url));
}

/**
 * Signs a directory account out of the relay from the page: the browser then goes on to the
 * provider's logout (RP-initiated). With `confirm` the person confirms there and comes back to
 * the relay signed out of both; without, the page is left on the provider's question.
 */
export async function signOutOfDirectory(page: Page, relay: Relay, idp: OidcProvider, confirm: boolean): Promise<void> {
  await page.getByTestId('logout').click();
  await page.waitForURL((u) => u.toString().startsWith(idp.issuer));
  if (!confirm) return;
  await page.getByRole('button', { name: 'Yes, sign me out' }).click();
  await page.waitForURL((u) => u.toString().startsWith(relay.url));
}

/** The whole directory sign-in: the provider, then the passkey (created the first time). */
export async function signInThroughProvider(page: Page, relay: Relay, login: string): Promise<void> {
  await throughProvider(page, relay, login);
  await page.getByTestId('sso-passkey').click();
  await expect(page.getByTestId('signed-in-as')).toContainText(login);
}

/**
 * A viewer socket to `wsUrl` opened with `cookie` from a page of `origin`, as a second node's
 * socket is reached behind a load balancer. Here the nodes have two ports, and the relay's CSP
 * rightly forbids a page to connect to another port, so this probe page (and only it) bypasses
 * the CSP. `state()` says `connecting`, `open` or `closed`.
 */
export async function socketProbe(browser: Browser, cookie: Parameters<BrowserContext['addCookies']>[0][number], origin: string, wsUrl: string): Promise<{ state(): Promise<string>; close(): Promise<void> }> {
  const context = await browser.newContext({ bypassCSP: true });
  await context.addCookies([cookie]);
  const probe = await context.newPage();
  await probe.goto(origin);
  await probe.evaluate((u) => {
    const ws = new WebSocket(u);
    (window as any).__probe = 'connecting';
    ws.onopen = () => { (window as any).__probe = 'open'; };
    ws.onclose = () => { (window as any).__probe = 'closed'; };
  }, wsUrl);
  return { state: () => probe.evaluate(() => (window as any).__probe as string), close: () => context.close() };
}
