// Session policy through the real path: the operator's browser asks, the relay decides from the
// policy file, and refusals name their reason.
import { expect } from '@playwright/test';
import { test } from './harness';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { spawnSync } from 'node:child_process';
import { World, world, stopWorld, requestView, tempDir, api, rawWatch, SAMPLE_POLICY } from './harness';

let w: World | undefined;

test.afterEach(async () => {
  await stopWorld(w);
  w = undefined;
});

function policyWith(change: (text: string) => string): string {
  const file = path.join(tempDir('policy'), 'policy.toml');
  fs.writeFileSync(file, change(fs.readFileSync(SAMPLE_POLICY, 'utf8')));
  return file;
}

test('no ticket, or a reason outside the catalog: the session is refused with the reason @R4', async ({ browser }) => {
  w = await world(browser, { name: 'front-desk' });
  await requestView(w.operator, w.relay, 'front-desk', '   ');
  await expect(w.operator.getByTestId('view-state')).toHaveAttribute('data-state', 'ended');
  await expect(w.operator.getByTestId('view-state')).toContainText('ticket ID is required');

  const agents = await w.operator.evaluate(() => [...document.querySelectorAll('[data-testid="agent-row"]')].map((r) => r.getAttribute('data-agent-id')));
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
    'levels = ["view", "control", "clipboard", "file_transfer"]',
    `levels = ["view", "control", "clipboard", "file_transfer"]\nhours = { tz = "UTC", days = [${others}], from = "00:00", to = "23:59" }`,
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

test('outside a maintenance window the session is refused with the reason; the user opens one with agent allow @R3', async ({ browser }) => {
  const policy = policyWith((t) => t.replace(
    'levels = ["view", "control", "clipboard", "file_transfer"]',
    'levels = ["view", "control", "clipboard", "file_transfer"]\nmaintenance_window = true',
  ));
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
  const policy = policyWith((t) => t.replace(
    'levels = ["view", "control", "clipboard", "file_transfer"]',
    'levels = ["view", "control", "clipboard", "file_transfer"]\nmaintenance_window = true',
  ));
  w = await world(browser, { name: 'branch-pc' }, { policy });
  await w.admin.getByTestId('tab-admin').click();
  await w.admin.locator('[data-testid="device-row"][data-device="branch-pc"]').getByRole('button', { name: 'Open window 30 min' }).click();
  await expect(w.admin.getByTestId('admin-message')).toContainText('maintenance window open');
  await requestView(w.operator, w.relay, 'branch-pc');
  // Policy lets the request through: it now waits for the user at the endpoint.
  await expect(w.operator.getByTestId('view-state')).toHaveAttribute('data-state', 'awaiting-consent');
});
