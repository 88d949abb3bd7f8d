// Live SIEM forwarding (R40) into a real rsyslog: every record and checkpoint over TCP, TLS and
// RELP; RELP survives the receiver being killed (every sequence number once); TCP survives a
// restart without a gap; CEF lines keep awkward values intact.
import { expect, Page } from '@playwright/test';
import { test } from './harness';
import {
  World, stopWorld, Relay, worldOn, api, rawWatch, Rsyslog, parseSiemMessage, parseCef, SiemMessage, AuditRecord,
} from './harness';

let w: World | undefined;
let siem: Rsyslog | undefined;

test.afterEach(async () => {
  await stopWorld(w);
  w = undefined;
  await siem?.kill('SIGKILL');
  siem = undefined;
});

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Record messages received over `transport`, by sequence number (duplicates kept). */
function received(r: Rsyslog, transport: 'tcp' | 'tls' | 'relp'): SiemMessage[] {
  return r.messages(transport).map(parseSiemMessage).filter((m) => m.msgid !== 'checkpoint');
}

/** Makes `n` security events (agent tokens) through the admin API. */
async function events(admin: Page, n: number): Promise<void> {
  for (let i = 0; i < n; i++) expect((await api(admin, 'POST', '/api/admin/agent-tokens', { segment: 'office' })).status).toBe(200);
}

function seqs(messages: SiemMessage[]): number[] {
  return messages.map((m) => m.seq!).sort((a, b) => a - b);
}

test('every record and checkpoint reaches rsyslog over TCP, TLS and RELP, with its sequence number and leaf hash @R40', async ({ browser }) => {
  siem = await Rsyslog.start();
  const p = siem.ports;
  const relay = await Relay.start({
    node: 'relay-siem',
    siem: [`tcp://127.0.0.1:${p.tcp}`, `tls://127.0.0.1:${p.tls}`, `relp://127.0.0.1:${p.relp}`],
    siemCa: siem.caFile,
  });
  w = await worldOn(browser, relay, { name: 'desk-siem' });
  await events(w.admin, 5);
  const records = relay.auditRecords();
  const all = records.map((r) => r.seq);
  for (const transport of ['tcp', 'tls', 'relp'] as const) {
    await expect.poll(() => seqs(received(siem!, transport)), { message: transport, timeout: 15_000 }).toEqual(expect.arrayContaining(all));
    const byseq = new Map(received(siem, transport).map((m) => [m.seq!, m]));
    for (const r of records) {
      const m = byseq.get(r.seq)!;
      expect(m.node).toBe('relay-siem');
      expect(m.msgid).toBe(r.kind);
      const body = JSON.parse(m.body) as AuditRecord;
      expect(body).toEqual(r);
      expect(m.leaf).toMatch(/^[A-Za-z0-9+/]{43}=$/);
    }
    // Checkpoints travel too, so the SIEM's copy can be checked against the node's key.
    await expect.poll(() => siem!.messages(transport).map(parseSiemMessage).some((m) => m.msgid === 'checkpoint' && (m.size ?? 0) > 0), { timeout: 10_000 }).toBe(true);
    const cp = siem.messages(transport).map(parseSiemMessage).find((m) => m.msgid === 'checkpoint')!;
    expect(JSON.parse(cp.body) as string).toMatch(/^sightline\.audit\/relay-siem\n\d+\n/);
  }
});

test('RELP: rsyslog killed while events are made and restarted 10 s later receives every sequence number exactly once @R40', async ({ browser }) => {
  siem = await Rsyslog.start();
  const relay = await Relay.start({ node: 'relay-relp', siem: [`relp://127.0.0.1:${siem.ports.relp}`] });
  w = await worldOn(browser, relay, { name: 'desk-relp' });
  await events(w.admin, 10);
  await expect.poll(() => received(siem!, 'relp').length).toBeGreaterThan(0);
  const making = events(w.admin, 30);
  await sleep(100);
  await siem.kill('SIGKILL');
  await making;
  // The relay does not wait for its SIEM: sign-ins and actions go on while it is down.
  await events(w.admin, 10);
  await sleep(10_000);
  siem = await Rsyslog.start(siem);
  await events(w.admin, 5);
  const all = relay.auditRecords().map((r) => r.seq);
  await expect.poll(() => seqs(received(siem!, 'relp')), { timeout: 30_000 }).toEqual(all);
});

test('TCP: rsyslog stopped and restarted: no record is missing (resent from the cursor) @R40', async ({ browser }) => {
  siem = await Rsyslog.start();
  const relay = await Relay.start({ node: 'relay-tcp', siem: [`tcp://127.0.0.1:${siem.ports.tcp}`] });
  w = await worldOn(browser, relay, { name: 'desk-tcp' });
  await events(w.admin, 10);
  await expect.poll(() => received(siem!, 'tcp').length).toBeGreaterThan(0);
  await siem.kill('SIGTERM');
  await events(w.admin, 20);
  await sleep(2_000);
  siem = await Rsyslog.start(siem);
  await events(w.admin, 5);
  const all = relay.auditRecords().map((r) => r.seq);
  // Every sequence number arrives; a few may arrive twice (plain TCP has no acknowledgement, so
  // what was written just before the break is sent again), which the sequence numbers show.
  await expect.poll(() => [...new Set(seqs(received(siem!, 'tcp')))], { timeout: 30_000 }).toEqual(all);
});

test('CEF over TCP: a ticket and reason with |, =, \\ and a newline arrive intact @R40', async ({ browser }) => {
  siem = await Rsyslog.start();
  const relay = await Relay.start({ node: 'relay-cef', siem: [`tcp://127.0.0.1:${siem.ports.tcp}`], siemFormat: 'cef' });
  w = await worldOn(browser, relay, { name: 'desk-cef' });
  await expect(w.operator.getByTestId('agent-row').filter({ hasText: 'desk-cef' })).toBeVisible();
  const agents = await w.operator.evaluate(() => [...document.querySelectorAll('[data-testid="agent-row"]')].map((r) => r.getAttribute('data-agent-id')));
  const ticket = 'INC|7=x\\y';
  const reason = 'because|I=can\\\nreally';
  const refused = await rawWatch(w.operator, relay.port, agents[0]!, ticket, reason);
  expect(refused.code, JSON.stringify(refused)).toBe('policy_denied');
  // A refusal's record is not awaited before the answer: wait for it.
  await expect.poll(() => relay.auditRecords().some((r) => r.kind === 'session.refused')).toBe(true);
  const record = relay.auditRecords().find((r) => r.kind === 'session.refused')!;
  await expect.poll(() => received(siem!, 'tcp').some((m) => m.seq === record.seq), { timeout: 15_000 }).toBe(true);
  const line = received(siem, 'tcp').find((m) => m.seq === record.seq)!.body;
  expect(line).not.toContain('\n');
  const cef = parseCef(line);
  expect(cef.header[0]).toBe('CEF:0');
  expect(cef.header[4]).toBe('session.refused');
  expect(cef.ext.cs6).toBe(record.subject);
  expect(cef.ext.cs6).toContain(`ticket:${ticket}`);
  expect(cef.ext.cs6).toContain('reason:because|I=can\\\nreally');
  expect(cef.ext.msg).toBe(record.detail);
  expect(cef.ext.externalId).toBe(String(record.seq));
  expect(cef.ext.dvchost).toBe('relay-cef');
});

