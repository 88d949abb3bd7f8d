// Break-glass (R43, issue 27): with the shared store down nobody can sign in the normal way; a
// named person's sealed one-time code, printed for one node, lets them view and chat with a
// device whose user consents, nothing else, once, with every record of theirs marked.
import { expect } from '@playwright/test';
import { test } from './harness';
import * as fs from 'node:fs';
import * as path from 'node:path';
import {
  RedisServer, World, world, stopWorld, relayCli, tempDir, SAMPLE_POLICY, requestView, sampleFrames,
  chatMarker, watchChannels, sendRawSignal, api, AuditRecord, Rsyslog, parseSiemMessage, parseCef,
} from './harness';

let w: World | undefined;
let redis: RedisServer | undefined;
let siem: Rsyslog | undefined;

test.afterEach(async () => {
  await stopWorld(w);
  w = undefined;
  await redis?.kill();
  redis = undefined;
  await siem?.kill();
  siem = undefined;
});

type Marked = AuditRecord & { break_glass?: boolean };

test('with Redis stopped a sealed one-time code lets its holder view and chat with a consenting user and nothing more, once, every record marked @R43', async ({ browser }) => {
  const made = relayCli(['--node', 'relay-glass', 'break-glass', 'codes', '--holder', 'jane.doe', '--count', '2']);
  expect(made.status, made.stderr).toBe(0);
  const codes = made.stdout.trim().split('\n');
  expect(codes).toHaveLength(2);
  for (const code of codes) expect(code).toMatch(/^relay-glass\.[0-9a-f]{32}$/);
  const policy = path.join(tempDir('glass-policy'), 'policy.toml');
  const table = made.stderr.slice(made.stderr.indexOf('[[break_glass.holders]]'));
  fs.writeFileSync(policy, `${fs.readFileSync(SAMPLE_POLICY, 'utf8')}\n${table}\n`);

  redis = await RedisServer.start();
  siem = await Rsyslog.start();
  w = await world(browser, { name: 'glass-desk' }, { redis: redis.url(), node: 'relay-glass', policy, siem: [`tcp://127.0.0.1:${siem.ports.tcp}`], siemFormat: 'cef' });
  const relay = w.relay;
  await expect(w.operator.getByTestId('agent-row').filter({ hasText: 'glass-desk' })).toBeVisible();
  const records = (): Marked[] => relay.auditRecords() as Marked[];

  const glassContext = await browser.newContext();
  const glass = await glassContext.newPage();
  const breakGlass = async (code: string) => {
    await glass.goto(relay.url);
    await glass.getByText('Break-glass sign-in').click();
    await glass.locator('input[name="break-glass-holder"]').fill('jane.doe');
    await glass.locator('input[name="break-glass-code"]').fill(code);
    await glass.getByRole('button', { name: 'Sign in with break-glass code' }).click();
  };

  // The control: while the store answers, the normal sign-in works, and the code is refused
  // without being spent.
  await breakGlass(codes[0]);
  await expect(glass.getByTestId('break-glass-error')).toContainText('the normal sign-in works now');
  await expect.poll(() => records().filter((r) => r.kind === 'auth.break_glass_refused').map((r) => r.detail.split(':')[0])).toEqual(['reason=not_needed']);

  await redis.kill();
  // Nobody signs in the normal way now: the operator's page loses its socket to the store check.
  await breakGlass(codes[0]);
  await expect(glass.getByTestId('agent-row').filter({ hasText: 'glass-desk' })).toBeVisible({ timeout: 20_000 });
  const login = records().find((r) => r.kind === 'auth.break_glass_login')!;
  expect(login.actor).toBe('break-glass:jane.doe');
  expect(login.detail).toContain('the shared store does not answer');
  expect(login.break_glass).toBe(true);

  // View with the user's consent, in the endpoint's own window; the picture moves; chat works.
  await watchChannels(glass);
  await requestView(glass, relay, 'glass-desk', 'INC-911', 'incident', false);
  await expect(glass.getByTestId('view-state')).toHaveAttribute('data-state', 'awaiting-consent');
  await w.endpoint.click('allow');
  await expect(glass.getByTestId('view-state')).toHaveAttribute('data-state', 'live');
  const frames = await sampleFrames(glass, 1500);
  expect(new Set(frames.map((f) => f.counter)).size).toBeGreaterThan(3);
  await chatMarker(glass, 'break-glass hello');

  // Refused, with the break-glass reason: control, the admin's and the account's routes.
  await sendRawSignal(glass, { v: 1, type: 'elevate', levels: ['control'] });
  await expect.poll(() => records().filter((r) => r.kind === 'access.denied' && r.detail.includes('level control')).length).toBe(1);
  for (const route of ['/api/admin/users', '/api/me/sessions', '/api/audit/records']) {
    const refused = await api(glass, 'GET', route);
    expect(refused.status, route).toBe(403);
    expect(refused.json.message, route).toContain('break-glass');
  }
  // The positive marker after the refusals: the session still runs and chat still passes.
  await chatMarker(glass, 'still here');
  await expect(glass.getByTestId('view-state')).toHaveAttribute('data-state', 'live');

  // Spent: the same code is refused in a fresh browser, and the refusal is on the record.
  const again = await (await browser.newContext()).newPage();
  const answer = await again.request.post(`${relay.url}/api/break-glass/login`, { data: { holder: 'jane.doe', code: codes[0] } });
  expect(answer.status()).toBe(403);
  expect((await answer.json()).message).toContain('used before');

  // Every record of the break-glass person's doing carries the mark, the user's consent and the
  // session's system events included; the others do not.
  await expect.poll(() => records().filter((r) => r.kind === 'auth.break_glass_refused').length).toBe(2);
  const all = records();
  const theirs = all.filter((r) => r.actor.startsWith('break-glass:') || r.session?.operator.startsWith('break-glass:'));
  const kinds = new Set(theirs.map((r) => r.kind));
  for (const k of ['auth.break_glass_refused', 'auth.break_glass_login', 'session.start', 'session.granted', 'recording.started', 'access.denied']) {
    expect([...kinds], k).toContain(k);
  }
  expect(theirs.filter((r) => r.break_glass !== true).map((r) => r.kind)).toEqual([]);
  const grant = theirs.find((r) => r.kind === 'session.granted')!;
  expect(grant.session!.levels).toEqual(['view', 'chat']);
  expect(grant.session!.ticket).toBe('INC-911');
  expect(all.filter((r) => !theirs.includes(r)).filter((r) => r.break_glass !== undefined)).toEqual([]);

  // The SIEM (rsyslog, CEF over TCP) has each of them at the highest severity, with the mark in
  // a field of its own; the others below it.
  const cefOf = () => new Map(siem!.messages('tcp').map(parseSiemMessage).filter((m) => m.seq !== undefined).map((m) => [m.seq!, parseCef(m.body)]));
  await expect.poll(() => theirs.every((r) => cefOf().has(r.seq)), { timeout: 15_000 }).toBe(true);
  const cef = cefOf();
  for (const r of theirs) {
    expect([r.kind, cef.get(r.seq)!.header[6]]).toEqual([r.kind, '10']);
    expect([cef.get(r.seq)!.ext.cn2Label, cef.get(r.seq)!.ext.cn2]).toEqual(['breakGlass', '1']);
  }
  const enrolled = all.find((r) => r.kind === 'user.enrolled')!;
  await expect.poll(() => cefOf().has(enrolled.seq)).toBe(true);
  expect(cefOf().get(enrolled.seq)!.header[6]).not.toBe('10');
  expect(cefOf().get(enrolled.seq)!.ext.cn2).toBeUndefined();
  await glassContext.close();
});
