import { expect } from '@playwright/test';
import { test } from './harness';
import { World, world, stopWorld, Relay, openView, sampleFrames, api, inviteAndEnrol } from './harness';

let w: World;

test.afterEach(async () => stopWorld(w));

test('relay dies: viewer shows it; relay returns: agent reconnects by itself and the view reopens @reconnect', async ({ browser }) => {
  w = await world(browser, { name: 'reconnecting-desk' });
  const page = w.operator;
  await openView(page, w.relay, 'reconnecting-desk', w.endpoint);

  await w.relay.proc.kill('SIGKILL');
  await expect(page.getByTestId('relay-state')).toHaveAttribute('data-state', 'lost');
  await expect(page.getByTestId('view-state')).toHaveAttribute('data-state', 'ended');
  await expect(page.getByTestId('view-state')).toContainText('relay connection was lost');

  // Same port, same data directory: users, passkeys, devices and sign-ins are durable, so the
  // operator is still signed in (R46: a restart signs nobody out); the session ended with it.
  w.relay = await Relay.start({ port: w.relay.port, dataDir: w.relay.dataDir });
  await expect(page.getByTestId('relay-state')).toHaveAttribute('data-state', 'online', { timeout: 20_000 });
  await expect(page.getByTestId('signed-in-as')).toContainText('operator');
  expect((await api(page, 'GET', '/api/me')).status).toBe(200);
  // Nobody restarted the agent: it comes back through its own backoff.
  const row = page.getByTestId('agent-row').filter({ hasText: 'reconnecting-desk' });
  await expect(row).toBeVisible({ timeout: 20_000 });
  // The session ended with the relay; a new one needs the user's consent again.
  await openView(page, w.relay, 'reconnecting-desk', w.endpoint);
  const samples = await sampleFrames(page, 1500);
  expect(samples[samples.length - 1].counter - samples[0].counter).toBeGreaterThanOrEqual(15);
});

test('a relay restart with the embedded store signs nobody out and brings back no sign-in that ended or was revoked @R46 @R17', async ({ browser }) => {
  w = await world(browser, { name: 'restart-desk' });
  const leaving = await inviteAndEnrol(browser, w.admin, 'lena', 'operator');
  const revoked = await inviteAndEnrol(browser, w.admin, 'rolf', 'operator');
  // Controls: every cookie works before.
  for (const page of [w.operator, leaving, revoked]) expect((await api(page, 'GET', '/api/me')).status).toBe(200);
  // Lena signs out, keeping a copy of her cookie; the admin revokes Rolf's sign-ins.
  const cookie = (await leaving.context().cookies()).find((c) => c.name === 'sightline_session')!;
  expect((await api(leaving, 'POST', '/api/logout', {})).status).toBe(204);
  await leaving.context().addCookies([cookie]);
  expect((await api(leaving, 'GET', '/api/me')).status).toBe(401);
  const users = (await api(w.admin, 'GET', '/api/admin/users')).json as { id: string; name: string }[];
  const rolf = users.find((u) => u.name === 'rolf')!;
  expect((await api(w.admin, 'POST', `/api/admin/users/${rolf.id}/revoke-sessions`)).status).toBe(204);
  expect((await api(revoked, 'GET', '/api/me')).status).toBe(401);

  // A crash, not a clean stop: what was acknowledged is on disk.
  await w.relay.proc.kill('SIGKILL');
  w.relay = await Relay.start({ port: w.relay.port, dataDir: w.relay.dataDir });
  expect((await api(w.operator, 'GET', '/api/me')).status).toBe(200);
  expect((await api(w.admin, 'GET', '/api/me')).status).toBe(200);
  expect((await api(leaving, 'GET', '/api/me')).status).toBe(401);
  expect((await api(revoked, 'GET', '/api/me')).status).toBe(401);
});
