import { expect } from '@playwright/test';
import { test } from './harness';
import { World, world, stopWorld, Relay, openView, sampleFrames } from './harness';

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

  // Same port, same data directory: users, passkeys and devices are durable; sessions live in
  // memory with the embedded store, so the viewer notices its session ended and asks to sign in.
  w.relay = await Relay.start({ port: w.relay.port, dataDir: w.relay.dataDir });
  await expect(page.getByTestId('login-notice')).toContainText('session ended', { timeout: 20_000 });
  await page.locator('input[name="username"]').fill('operator');
  await page.getByRole('button', { name: 'Sign in with passkey' }).click();
  await expect(page.getByTestId('signed-in-as')).toContainText('operator');
  // Nobody restarted the agent: it comes back through its own backoff.
  const row = page.getByTestId('agent-row').filter({ hasText: 'reconnecting-desk' });
  await expect(row).toBeVisible({ timeout: 20_000 });
  // The session ended with the relay; a new one needs the user's consent again.
  await openView(page, w.relay, 'reconnecting-desk', w.endpoint);
  const samples = await sampleFrames(page, 1500);
  expect(samples[samples.length - 1].counter - samples[0].counter).toBeGreaterThanOrEqual(15);
});
