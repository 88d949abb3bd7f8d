// Operations (R46): the logs a log pipeline reads. With `--log-format json` the relay and the
// agent write one JSON object per line, with the spans that identify the work: a request's id
// (also in the answer's `x-request-id`), a socket's device or user, a relay connection.
import { expect } from '@playwright/test';
import { test, world, stopWorld, World, openView, api, enrolAgent, startAgent, Proc } from './harness';

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

  // A request's lines carry its id, which the answer names; another request has another id.
  const ready = await fetch(`http://127.0.0.1:${w.relay.port}/readyz`);
  expect(ready.status).toBe(200);
  const id = ready.headers.get('x-request-id')!;
  expect(id).toMatch(/^[0-9a-f]{16}$/);
  await expect.poll(() => relayLines().filter((l) => inSpan(l, 'request')?.request_id === id).map((l) => [l.message, inSpan(l, 'request')?.path])).toEqual([['ready to take sessions', '/readyz']]);
  const again = await fetch(`http://127.0.0.1:${w.relay.port}/healthz`);
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
