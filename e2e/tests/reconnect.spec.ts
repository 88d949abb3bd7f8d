import { test, expect } from '@playwright/test';
import { Relay, Proc, startAgent, openView, sampleFrames } from './harness';

let relay: Relay;
let agent: Proc;

test.afterEach(async () => {
  await agent?.kill();
  await relay?.proc.kill();
});

test('relay dies: viewer shows it; relay returns: agent reconnects by itself and the view reopens @reconnect', async ({ page }) => {
  relay = await Relay.start();
  const port = relay.port;
  agent = startAgent(relay, { name: 'reconnecting-desk' });
  await openView(page, relay, 'reconnecting-desk');

  await relay.proc.kill('SIGKILL');
  await expect(page.getByTestId('relay-state')).toHaveAttribute('data-state', 'lost');
  await expect(page.getByTestId('view-state')).toHaveAttribute('data-state', 'ended');
  await expect(page.getByTestId('view-state')).toContainText('relay connection was lost');

  relay = await Relay.start(port);
  await expect(page.getByTestId('relay-state')).toHaveAttribute('data-state', 'online', { timeout: 20_000 });
  // Nobody restarted the agent: it comes back through its own backoff.
  const row = page.getByTestId('agent-row').filter({ hasText: 'reconnecting-desk' });
  await expect(row).toBeVisible({ timeout: 20_000 });
  await row.getByRole('button', { name: 'View' }).click();
  await expect(page.getByTestId('view-state')).toHaveAttribute('data-state', 'live');
  const samples = await sampleFrames(page, 1500);
  expect(samples[samples.length - 1].counter - samples[0].counter).toBeGreaterThanOrEqual(15);
});
