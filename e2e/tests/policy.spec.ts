// Session policy through the real path: the operator's browser asks, the relay decides from the
// policy file, and refusals name their reason.
import { expect } from '@playwright/test';
import { test } from './harness';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { spawnSync } from 'node:child_process';
import { World, world, stopWorld, requestView, tempDir, api, rawWatch, SAMPLE_POLICY, openView, recordMeasurement, AuditRecord, BIN } from './harness';

let w: World | undefined;

test.afterEach(async () => {
  await stopWorld(w);
  w = undefined;
});

/** The sample's office segment opts out of maintenance windows (the first such line is its). */
const OFFICE_OPT_OUT = 'maintenance_window = false\n';

function policyWith(change: (text: string) => string): string {
  const file = path.join(tempDir('policy'), 'policy.toml');
  const sample = fs.readFileSync(SAMPLE_POLICY, 'utf8');
  const changed = change(sample);
  // A change that no longer matches the sample would test the sample instead.
  if (changed === sample) throw new Error('the policy change did not apply to the sample');
  fs.writeFileSync(file, changed);
  return file;
}

test('no ticket, or a reason outside the catalog: the session is refused with the reason @R4', async ({ browser }) => {
  w = await world(browser, { name: 'front-desk' });
  // The page stops a blank ticket itself (console.spec); the relay refuses it on its own too, as
  // sent by a modified viewer.
  await requestView(w.operator, w.relay, 'front-desk', '   ');
  await expect(w.operator.getByTestId('request-error')).toContainText('Enter the ticket or request ID first');
  const agents = await w.operator.evaluate(() => [...document.querySelectorAll('[data-testid="agent-row"]')].map((r) => r.getAttribute('data-agent-id')));
  const blank = await rawWatch(w.operator, w.relay.port, agents[0]!, '   ', 'incident');
  expect([blank.code, blank.message]).toEqual(['policy_denied', expect.stringContaining('ticket ID is required')]);

  const refused = await rawWatch(w.operator, w.relay.port, agents[0]!, 'INC-1', 'because I can');
  expect(refused.code).toBe('policy_denied');
  expect(refused.message).toContain('catalog');
  // With both, the request goes on to the user at the endpoint, and with their consent the screen.
  await requestView(w.operator, w.relay, 'front-desk', 'INC-1', 'password-reset');
  await expect(w.operator.getByTestId('view-state')).toHaveAttribute('data-state', 'awaiting-consent');
  await w.endpoint.click('allow');
  await expect(w.operator.getByTestId('view-state')).toHaveAttribute('data-state', 'live');
  const records = w.relay.auditRecords();
  const refusals = records.filter((r) => r.kind === 'session.refused');
  expect(refusals.map((r) => r.detail)).toEqual([expect.stringContaining('ticket ID is required'), expect.stringContaining('catalog')]);
  expect(refusals[1].subject).toContain('ticket:INC-1 reason:because I can');
  const started = records.find((r) => r.kind === 'session.start');
  expect(started?.session?.ticket).toBe('INC-1');
  expect(started?.session?.reason).toBe('password-reset');
});

test('an operator address outside the segment networks is refused @R16', async ({ browser }) => {
  const policy = policyWith((t) => t.replace(
    'operator_cidrs = ["127.0.0.0/8", "::1/128", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"]',
    'operator_cidrs = ["10.9.0.0/16"]',
  ));
  w = await world(browser, { name: 'front-desk' }, { policy });
  await requestView(w.operator, w.relay, 'front-desk');
  await expect(w.operator.getByTestId('view-state')).toHaveAttribute('data-state', 'ended');
  await expect(w.operator.getByTestId('view-state')).toContainText('network address is not allowed');
});

test('outside the segment hours the session is refused @R16', async ({ browser }) => {
  // Support hours on every day but today (UTC), so "now" is always outside them.
  const days = ['sun', 'mon', 'tue', 'wed', 'thu', 'fri', 'sat'];
  const today = days[new Date().getUTCDay()];
  const others = days.filter((d) => d !== today).map((d) => `"${d}"`).join(', ');
  const policy = policyWith((t) => t.replace(
    'levels = ["view", "chat", "control", "clipboard", "file_transfer"]',
    `levels = ["view", "chat", "control", "clipboard", "file_transfer"]\nhours = { tz = "UTC", days = [${others}], from = "00:00", to = "23:59" }`,
  ));
  w = await world(browser, { name: 'front-desk' }, { policy });
  await requestView(w.operator, w.relay, 'front-desk');
  await expect(w.operator.getByTestId('view-state')).toHaveAttribute('data-state', 'ended');
  await expect(w.operator.getByTestId('view-state')).toContainText('outside the support hours');
});

test('the relay refuses to start with an invalid policy file @R16', async () => {
  const { Relay } = await import('./harness');
  const policy = policyWith((t) => t.replace('consent_timeout_s = 120', 'consent_timeout_s = 900'));
  await expect(Relay.start({ policy })).rejects.toThrow(/consent_timeout_s/);
});

test('a segment that does not opt out needs a maintenance window: outside one the session is refused with the reason; the user opens one with agent allow @R3', async ({ browser }) => {
  // The office segment without its opt-out: R3's default, a window is needed.
  const policy = policyWith((t) => t.replace(OFFICE_OPT_OUT, ''));
  w = await world(browser, { name: 'branch-pc' }, { policy });
  await requestView(w.operator, w.relay, 'branch-pc');
  await expect(w.operator.getByTestId('view-state')).toHaveAttribute('data-state', 'ended');
  await expect(w.operator.getByTestId('view-state')).toContainText('no maintenance window is open');

  // An admin's window must have an exact start and end; one starting in an hour is not open now.
  const devices = (await api(w.admin, 'GET', '/api/admin/devices')).json as { id: string; name: string }[];
  const device = devices.find((d) => d.name === 'branch-pc')!;
  const now = Date.now();
  expect((await api(w.admin, 'POST', `/api/admin/devices/${device.id}/maintenance-window`, { start_ms: now - 7_200_000, end_ms: now - 3_600_000 })).status).toBe(400);
  expect((await api(w.admin, 'POST', `/api/admin/devices/${device.id}/maintenance-window`, { start_ms: now + 3_600_000, end_ms: now + 7_200_000 })).status).toBe(200);
  await requestView(w.operator, w.relay, 'branch-pc');
  await expect(w.operator.getByTestId('view-state')).toContainText('no maintenance window is open');

  // The person at the endpoint releases remote support for 5 minutes.
  const allow = spawnSync(path.join(process.env.SIGHTLINE_BIN_DIR ?? path.resolve(__dirname, '../../target/debug'), 'agent'),
    ['allow', '--for', '5m', '--relay-url', `ws://127.0.0.1:${w.relay.port}`, '--data-dir', w.agentDir], { encoding: 'utf8', timeout: 30_000 });
  expect(allow.status, allow.stderr).toBe(0);
  expect(allow.stdout).toContain('remote support allowed for 300 s');
  await requestView(w.operator, w.relay, 'branch-pc');
  // Policy lets the request through: it now waits for the user at the endpoint.
  await expect(w.operator.getByTestId('view-state')).toHaveAttribute('data-state', 'awaiting-consent');
  expect(w.relay.auditRecords().map((r) => r.kind)).toContain('maintenance.window_opened');
});

test('an admin opens a maintenance window from the dashboard @R3', async ({ browser }) => {
  const policy = policyWith((t) => t.replace(OFFICE_OPT_OUT, 'maintenance_window = true\n'));
  w = await world(browser, { name: 'branch-pc' }, { policy });
  await w.admin.getByTestId('tab-admin').click();
  await w.admin.locator('[data-testid="device-row"][data-device="branch-pc"]').getByRole('button', { name: 'Open window 30 min' }).click();
  await expect(w.admin.getByTestId('admin-message')).toContainText('maintenance window open');
  await requestView(w.operator, w.relay, 'branch-pc');
  // Policy lets the request through: it now waits for the user at the endpoint.
  await expect(w.operator.getByTestId('view-state')).toHaveAttribute('data-state', 'awaiting-consent');
});

/** Opens a maintenance window on `name` from the admin API, from now for `ms`. */
async function openWindowFor(w: World, name: string, ms: number): Promise<void> {
  const devices = (await api(w.admin, 'GET', '/api/admin/devices')).json as { id: string; name: string }[];
  const device = devices.find((d) => d.name === name)!;
  expect((await api(w.admin, 'POST', `/api/admin/devices/${device.id}/maintenance-window`, { start_ms: Date.now() - 1_000, end_ms: Date.now() + ms })).status).toBe(200);
}

test('an unattended agent is refused where its segment does not allow it, even inside a window @R2', async ({ browser }) => {
  w = await world(browser, { name: 'rack-01', unattended: true });
  await openWindowFor(w, 'rack-01', 600_000);
  await requestView(w.operator, w.relay, 'rack-01');
  await expect(w.operator.getByTestId('view-state')).toContainText('unattended access is not allowed in this segment');
  // A refusal's record is not awaited before the answer (nothing happened that needs it): poll.
  await expect.poll(() => w!.relay.auditRecords().filter((r) => r.kind === 'session.refused').map((r) => r.detail))
    .toEqual(['unattended access is not allowed in this segment']);
  // Nobody was asked, and nothing reached the endpoint.
  expect(w.relay.auditRecords().filter((r) => r.kind.startsWith('consent.'))).toEqual([]);
});

test('where the segment allows it, an unattended agent is served only inside an open window: without a prompt, recorded, and marked unattended in every event @R2', async ({ browser }) => {
  // The office segment opts out of windows for attended support; unattended access needs one anyway.
  const policy = policyWith((t) => t.replace(OFFICE_OPT_OUT, `${OFFICE_OPT_OUT}unattended = true\n`));
  w = await world(browser, { name: 'rack-01', unattended: true }, { policy });
  await requestView(w.operator, w.relay, 'rack-01');
  await expect(w.operator.getByTestId('view-state')).toContainText('no maintenance window is open');

  await openWindowFor(w, 'rack-01', 600_000);
  await requestView(w.operator, w.relay, 'rack-01');
  // Live with nobody clicking anything, and only once the recorder writes (R9).
  await expect(w.operator.getByTestId('view-state')).toHaveAttribute('data-state', 'live');
  await expect(w.operator.getByTestId('recording')).toHaveAttribute('data-recording', 'true');
  await expect.poll(() => w!.agent.log()).toContain('unattended: taking up the request without asking');
  // No consent window was opened on the endpoint's display: nobody is there.
  expect(w.agent.log()).not.toContain('consent-ui prompt: ');
  await w.operator.getByTestId('end-session').click();
  await expect(w.operator.getByTestId('view-state')).toHaveAttribute('data-state', 'ended');

  let session: AuditRecord[] = [];
  await expect.poll(() => {
    session = w!.relay.auditRecords().filter((r) => r.session !== null && r.kind !== 'session.refused');
    return session.map((r) => r.kind);
  }).toContain('session.ended');
  const kinds = session.map((r) => r.kind);
  // The record says nobody consented, never that somebody did.
  expect(kinds).toContain('consent.unattended');
  expect(kinds).not.toContain('consent.allowed');
  expect(kinds).toContain('recording.started');
  const unmarked = session.filter((r) => r.session!.unattended !== true).map((r) => r.kind);
  expect(unmarked, 'session events without the unattended mark').toEqual([]);
  const taken = session.find((r) => r.kind === 'consent.unattended')!;
  expect(taken.actor).toMatch(/^device:/);
  expect(taken.session!.levels).toEqual(['view', 'chat', 'control']);
});

const OFFICE_LEVELS = 'levels = ["view", "chat", "control", "clipboard", "file_transfer"]';

/** Waits for the one `session.ended` record of the session and the warning before it. */
async function endedAndWarned(w: World): Promise<{ warned: AuditRecord; ended: AuditRecord }> {
  let found: { warned: AuditRecord; ended: AuditRecord } | undefined;
  await expect.poll(() => {
    const records = w.relay.auditRecords();
    const warned = records.filter((r) => r.kind === 'session.ending_soon');
    const ended = records.filter((r) => r.kind === 'session.ended');
    found = warned.length === 1 && ended.length === 1 ? { warned: warned[0], ended: ended[0] } : undefined;
    return found !== undefined;
  }, { message: 'one warning and one end in the audit log' }).toBe(true);
  return found!;
}

test('a running session ends when the maintenance window ends; operator and user are warned first and both name the same end @R3', async ({ browser }) => {
  const policy = policyWith((t) => t.replace(OFFICE_OPT_OUT, 'maintenance_window = true\nend_warning_s = 10\n'));
  w = await world(browser, { name: 'branch-pc' }, { policy });
  const devices = (await api(w.admin, 'GET', '/api/admin/devices')).json as { id: string; name: string }[];
  const device = devices.find((d) => d.name === 'branch-pc')!;
  const end = Date.now() + 20_000;
  expect((await api(w.admin, 'POST', `/api/admin/devices/${device.id}/maintenance-window`, { start_ms: Date.now() - 1_000, end_ms: end })).status).toBe(200);
  await openView(w.operator, w.relay, 'branch-pc', w.endpoint);

  // Warned on both sides, then ended on both sides for the same reason.
  await expect(w.operator.getByTestId('ending')).toContainText('the maintenance window of this device ends', { timeout: 20_000 });
  await expect.poll(() => w!.endpoint.told('consent-ui ending: ')).toContain('the maintenance window of this device ends');
  await expect(w.operator.getByTestId('view-state')).toContainText('the maintenance window of this device ended', { timeout: 25_000 });
  await expect.poll(() => w!.endpoint.told('consent-ui ended: ')).toBe('the maintenance window of this device ended');

  const { warned, ended } = await endedAndWarned(w);
  expect(warned.ts_ms).toBeLessThan(end);
  expect(ended.ts_ms, 'not before the window ended').toBeGreaterThanOrEqual(end);
  expect(ended.detail).toContain('the maintenance window of this device ended');
  recordMeasurement('window-end', `a maintenance window's end to the session's end in the audit log: ${ended.ts_ms - end} ms`, { window_end_to_session_end_ms: ended.ts_ms - end });
});

test('a running session ends with the support hours of its segment; operator and user are warned first @R16', async ({ browser }) => {
  // Hours that end 25 s from now (UTC, to the second); a test that would cross midnight waits.
  let now = new Date();
  const toMidnight = 86_400_000 - (now.getTime() % 86_400_000);
  if (toMidnight < 60_000) await new Promise((r) => setTimeout(r, toMidnight + 1_000));
  now = new Date();
  const end = new Date(Math.ceil((now.getTime() + 25_000) / 1000) * 1000);
  const hhmmss = end.toISOString().slice(11, 19);
  const today = ['sun', 'mon', 'tue', 'wed', 'thu', 'fri', 'sat'][now.getUTCDay()];
  const policy = policyWith((t) => t.replace(OFFICE_LEVELS,
    `${OFFICE_LEVELS}\nhours = { tz = "UTC", days = ["${today}"], from = "00:00", to = "${hhmmss}" }\nend_warning_s = 15`));
  w = await world(browser, { name: 'front-desk' }, { policy });
  await openView(w.operator, w.relay, 'front-desk', w.endpoint);

  await expect(w.operator.getByTestId('ending')).toContainText(`${hhmmss} UTC: the support hours of this segment end`, { timeout: 25_000 });
  await expect.poll(() => w!.endpoint.told('consent-ui ending: ')).toBe(`This session ends at ${hhmmss} UTC: the support hours of this segment end`);
  await expect(w.operator.getByTestId('view-state')).toContainText('the support hours of this segment ended', { timeout: 30_000 });
  await expect.poll(() => w!.endpoint.told('consent-ui ended: ')).toBe('the support hours of this segment ended');
  const { warned, ended } = await endedAndWarned(w);
  expect(warned.ts_ms).toBeLessThan(end.getTime());
  expect(ended.ts_ms, 'not before the hours ended').toBeGreaterThanOrEqual(end.getTime());
  // Control: a new request now is refused at the door, for the same rule.
  await requestView(w.operator, w.relay, 'front-desk');
  await expect(w.operator.getByTestId('view-state')).toContainText('outside the support hours');
});

test('the user withdraws remote support early with agent close-window: the running session on the device ends on both sides @R3', async ({ browser }) => {
  const policy = policyWith((t) => t.replace(OFFICE_OPT_OUT, 'maintenance_window = true\n'));
  w = await world(browser, { name: 'branch-pc' }, { policy });
  const agentCall = (command: string) => spawnSync(path.join(BIN, 'agent'), [command, '--relay-url', `ws://127.0.0.1:${w!.relay.port}`, '--data-dir', w!.agentDir], { encoding: 'utf8', timeout: 30_000 });
  // With nothing open, nothing is closed (and the command says so).
  const nothing = agentCall('close-window');
  expect(nothing.status, nothing.stderr).toBe(0);
  expect(nothing.stdout).toContain('no maintenance window was open');
  await openWindowFor(w, 'branch-pc', 600_000);
  await openView(w.operator, w.relay, 'branch-pc', w.endpoint);
  await expect(w.operator.getByTestId('session-phase')).toHaveAttribute('data-phase', 'active');

  const closing = agentCall('close-window');
  expect(closing.status, closing.stderr).toBe(0);
  expect(closing.stdout).toContain('remote support withdrawn');
  await expect(w.operator.getByTestId('view-state')).toContainText('the maintenance window of this device ended');
  await expect.poll(() => w!.endpoint.told('consent-ui ended: ')).toBe('the maintenance window of this device ended');
  await expect.poll(() => w!.relay.auditRecords().filter((r) => r.kind === 'session.ended').length).toBe(1);
  const records = w.relay.auditRecords();
  const closed = records.filter((r) => r.kind === 'maintenance.window_closed');
  expect(closed.map((r) => r.actor)).toEqual(['user@branch-pc']);
  const ended = records.find((r) => r.kind === 'session.ended')!;
  expect(ended.seq, 'the end follows the closing').toBeGreaterThan(closed[0].seq);
});

test('an admin closes a maintenance window early from the dashboard: the running session on the device ends on both sides @R3', async ({ browser }) => {
  const policy = policyWith((t) => t.replace(OFFICE_OPT_OUT, 'maintenance_window = true\n'));
  w = await world(browser, { name: 'branch-pc' }, { policy });
  await w.admin.getByTestId('tab-admin').click();
  const row = w.admin.locator('[data-testid="device-row"][data-device="branch-pc"]');
  await row.getByRole('button', { name: 'Open window 30 min' }).click();
  await expect(w.admin.getByTestId('admin-message')).toContainText('maintenance window open');
  await openView(w.operator, w.relay, 'branch-pc', w.endpoint);
  // Control: the session runs while the window is open.
  await expect(w.operator.getByTestId('session-phase')).toHaveAttribute('data-phase', 'active');

  await row.getByRole('button', { name: 'Close window' }).click();
  await expect(w.admin.getByTestId('admin-message')).toContainText('maintenance window closed');
  await expect(w.operator.getByTestId('view-state')).toContainText('the maintenance window of this device ended');
  await expect.poll(() => w!.endpoint.told('consent-ui ended: ')).toBe('the maintenance window of this device ended');
  await expect.poll(() => w!.relay.auditRecords().filter((r) => r.kind === 'session.ended').length).toBe(1);
  const records = w.relay.auditRecords();
  const closed = records.filter((r) => r.kind === 'maintenance.window_closed');
  expect(closed.map((r) => r.actor)).toEqual(['admin']);
  expect(closed[0].subject).toMatch(/^device:/);
  const ended = records.find((r) => r.kind === 'session.ended')!;
  expect(ended.detail).toContain('the maintenance window of this device ended');
  expect(ended.seq, 'the end follows the closing').toBeGreaterThan(closed[0].seq);
  // And no new session until a window opens again.
  await requestView(w.operator, w.relay, 'branch-pc');
  await expect(w.operator.getByTestId('view-state')).toContainText('no maintenance window is open');
});
