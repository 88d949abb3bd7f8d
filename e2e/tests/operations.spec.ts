// Operations (R46): the metrics Prometheus scrapes and the logs a log pipeline reads. With `--log-format json` the relay and the
// agent write one JSON object per line, with the spans that identify the work: a request's id
// (also in the answer's `x-request-id`), a socket's device or user, a relay connection.
import { expect } from '@playwright/test';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { spawnSync } from 'node:child_process';
import { test, world, stopWorld, World, openView, api, enrolAgent, startAgent, Proc, launch, tempDir, freePort, waitFor } from './harness';

let w: World | undefined;
const procs: Proc[] = [];
test.afterEach(async () => {
  for (const p of procs.splice(0)) await p.kill();
  await stopWorld(w);
  w = undefined;
});

interface Span { name: string; [field: string]: unknown }
interface Line { timestamp: string; level: string; target: string; message: string; spans?: Span[]; [field: string]: unknown }

/** The log's lines, each parsed; `banner` lines (what the relay prints for a person, on stdout) are left out. */
function lines(log: string, banner: RegExp = /^$/): Line[] {
  const text = log.replace(/\u0000/g, '').split('\n').map((l) => l.trim()).filter((l) => l !== '' && !banner.test(l));
  return text.map((l) => {
    try { return JSON.parse(l) as Line; } catch { throw new Error(`a log line is not JSON: ${l}`); }
  });
}
const inSpan = (line: Line, name: string) => line.spans?.find((s) => s.name === name);
const BANNER = /No users yet|#\/enrol\//;

test('with --log-format json the relay and the agent write one JSON object per line with the spans of the request, the socket and the connection @R46', async ({ browser }) => {
  w = await world(browser, { name: 'json-desk' }, { args: ['--log-format', 'json'] });
  await openView(w.operator, w.relay, 'json-desk', w.endpoint);

  // Every line of the relay's log is an object with the base fields.
  const relayLines = () => lines(w!.relay.proc.log(), BANNER);
  for (const line of relayLines()) {
    expect(typeof line.timestamp, JSON.stringify(line)).toBe('string');
    expect(Number.isNaN(Date.parse(line.timestamp))).toBe(false);
    expect(['TRACE', 'DEBUG', 'INFO', 'WARN', 'ERROR']).toContain(line.level);
    expect(typeof line.target).toBe('string');
    expect(typeof line.message).toBe('string');
  }
  // The agent's socket: the line that brings it online carries the device in its span too.
  const online = relayLines().find((l) => l.message === 'agent online')!;
  expect(online).toBeDefined();
  expect(inSpan(online, 'agent_socket')?.device).toBe(online.agent);
  // The operator's socket: its lines name the user.
  await expect.poll(() => relayLines().filter((l) => inSpan(l, 'viewer_socket')?.user === 'operator').length).toBeGreaterThan(0);

  // A request's lines carry its id, which the answer names: a sign-in with an unknown name is a
  // security event, logged in the request's span. Another request has another id.
  const refused = await fetch(`http://127.0.0.1:${w.relay.port}/api/login/start`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ name: 'nobody-here' }) });
  expect(refused.status).toBe(401);
  const id = refused.headers.get('x-request-id')!;
  expect(id).toMatch(/^[0-9a-f]{16}$/);
  await expect.poll(() => relayLines().filter((l) => inSpan(l, 'request')?.request_id === id).map((l) => [l.message, l.kind, inSpan(l, 'request')?.path])).toEqual([['audit event', 'auth.login_failed', '/api/login/start']]);
  const again = await fetch(`http://127.0.0.1:${w.relay.port}/healthz`);
  expect(again.headers.get('x-request-id')).toMatch(/^[0-9a-f]{16}$/);
  expect(again.headers.get('x-request-id')).not.toBe(id);

  // The agent: a second endpoint on the same relay, logging JSON; its connection's span names
  // the relay and the device.
  const token = await api(w.admin, 'POST', '/api/admin/agent-tokens', { segment: 'office' });
  const dir = enrolAgent(w.relay, token.json.token, 'json-agent');
  const agent = startAgent(w.relay, { name: 'json-agent', dataDir: dir, args: ['--log-format', 'json'] });
  procs.push(agent);
  await expect.poll(() => lines(agent.log()).some((l) => l.message === 'connected and authenticated')).toBe(true);
  const connected = lines(agent.log()).find((l) => l.message === 'connected and authenticated')!;
  const span = inSpan(connected, 'relay_connection')!;
  expect(span.relay).toBe(`ws://127.0.0.1:${w.relay.port}/ws/agent`);
  expect(span.device).toBe(connected.device);
  for (const line of lines(agent.log())) expect(['TRACE', 'DEBUG', 'INFO', 'WARN', 'ERROR']).toContain(line.level);
});

/** A real Prometheus (Debian's) scraping `target` every second. */
async function prometheus(target: string): Promise<{ proc: Proc; query: (q: string) => Promise<{ metric: Record<string, string>; value: [number, string] }[]> }> {
  const dir = tempDir('prometheus');
  const config = path.join(dir, 'prometheus.yml');
  fs.writeFileSync(config, ['global:', '  scrape_interval: 1s', 'scrape_configs:', '  - job_name: sightline', '    static_configs:', `      - targets: ['${target}']`].join('\n') + '\n');
  const port = await freePort();
  const proc = launch('prometheus', 'prometheus', [`--config.file=${config}`, `--storage.tsdb.path=${path.join(dir, 'data')}`, `--web.listen-address=127.0.0.1:${port}`]);
  await waitFor('prometheus', async () => {
    if (proc.child.exitCode !== null) throw new Error(`prometheus exited: ${proc.log()}`);
    try { return (await fetch(`http://127.0.0.1:${port}/-/ready`)).ok; } catch { return false; }
  });
  const query = async (q: string) => {
    const r = await fetch(`http://127.0.0.1:${port}/api/v1/query?query=${encodeURIComponent(q)}`);
    const body = await r.json() as { status: string; data: { result: { metric: Record<string, string>; value: [number, string] }[] } };
    expect(body.status).toBe('success');
    return body.data.result;
  };
  return { proc, query };
}

test('Prometheus scrapes the relay metrics from their own address; promtool accepts their names; counters follow a session and name no person @R46', async ({ browser }) => {
  const metricsPort = await freePort();
  w = await world(browser, { name: 'metrics-desk' }, { args: ['--metrics-listen', `127.0.0.1:${metricsPort}`] });
  // Not on the public port.
  expect((await fetch(`http://127.0.0.1:${w.relay.port}/metrics`)).status).toBe(404);
  const scrape = async () => (await fetch(`http://127.0.0.1:${metricsPort}/metrics`)).text();
  const lint = spawnSync('promtool', ['check', 'metrics'], { input: await scrape(), encoding: 'utf8' });
  expect(lint.status, `${lint.stdout}${lint.stderr}`).toBe(0);

  const prom = await prometheus(`127.0.0.1:${metricsPort}`);
  procs.push(prom.proc);
  await expect.poll(async () => (await prom.query('up{job="sightline"}')).map((r) => r.value[1]), { timeout: 20_000 }).toEqual(['1']);
  expect((await prom.query('sightline_build_info')).map((r) => r.metric.version)).toHaveLength(1);
  await expect.poll(async () => (await prom.query('sightline_agents_connected')).map((r) => r.value[1])).toEqual(['1']);

  // A session: running while it runs, then ended by the user, with the reason as the label.
  await openView(w.operator, w.relay, 'metrics-desk', w.endpoint);
  await expect.poll(async () => (await prom.query('sightline_sessions_running{phase="active"}')).map((r) => r.value[1])).toEqual(['1']);
  await expect.poll(async () => (await prom.query('sightline_viewer_sockets')).map((r) => Number(r.value[1]))).toEqual([1]);
  await w.endpoint.click('end');
  await expect(w.operator.getByTestId('view-state')).toContainText('the user ended the session');
  await expect.poll(async () => (await prom.query('sightline_sessions_ended_total')).map((r) => [r.metric.reason, r.value[1]])).toEqual([['ended_by_user', '1']]);
  await expect.poll(async () => (await prom.query('sightline_sessions_running{phase="active"}')).map((r) => r.value[1])).toEqual(['0']);
  const started = await prom.query('sightline_audit_events_total{kind="session.start"}');
  expect(started.map((r) => [r.metric.outcome, r.value[1]])).toEqual([['success', '1']]);
  await expect.poll(async () => (await prom.query('sightline_audit_queue_events')).map((r) => r.value[1])).toEqual(['0']);
  expect((await prom.query('sightline_audit_writable')).map((r) => r.value[1])).toEqual(['1']);

  // No label names a person, a device or a session.
  const sessionId = w.relay.auditRecords().find((r) => r.kind === 'session.ended')!.session!.session_id;
  const text = await scrape();
  for (const secret of ['operator', 'metrics-desk', sessionId]) {
    const labelled = text.split('\n').filter((l) => !l.startsWith('#')).filter((l) => new RegExp(`="${secret}"`).test(l));
    expect(labelled, secret).toEqual([]);
  }
});
