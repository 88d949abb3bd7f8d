import { expect } from '@playwright/test';
import { test } from './harness';
import { World, world, stopWorld, openView, sampleFrames, inviteAndEnrol } from './harness';

let w: World;

test.afterEach(async () => stopWorld(w));

test('operator sees the agent screen at 1280x720 and frames advance; an observer at the same time too @media', async ({ browser }) => {
  w = await world(browser, { name: 'synthetic-desk' });
  const second = await inviteAndEnrol(browser, w.admin, 'observer1', 'observer');
  await openView(w.operator, w.relay, 'synthetic-desk', w.endpoint);
  await second.getByTestId('session-row').getByTestId('observe').click();
  await expect(second.getByTestId('view-state')).toHaveAttribute('data-state', 'live');

  for (const page of [w.operator, second]) {
    await expect.poll(() => page.evaluate(() => (document.querySelector('video') as HTMLVideoElement).videoWidth)).toBe(1280);
  }
  const [a, b] = await Promise.all([sampleFrames(w.operator, 2500), sampleFrames(second, 2500)]);
  for (const samples of [a, b]) {
    expect(samples.length).toBeGreaterThan(0);
    expect(samples[0].width).toBe(1280);
    const counters = samples.map((s) => s.counter);
    // Frame counters only move forward, and by at least 30 frames over 2.5 s at 30 fps.
    for (let i = 1; i < counters.length; i++) expect(counters[i]).toBeGreaterThanOrEqual(counters[i - 1]);
    expect(counters[counters.length - 1] - counters[0]).toBeGreaterThanOrEqual(30);
  }
});

test('viewer reports an agent that goes offline @media', async ({ browser }) => {
  w = await world(browser, { name: 'synthetic-desk' });
  await openView(w.operator, w.relay, 'synthetic-desk', w.endpoint);
  await w.agent.kill('SIGKILL');
  await expect(w.operator.getByTestId('view-state')).toHaveAttribute('data-state', 'ended');
  await expect(w.operator.getByTestId('view-state')).toContainText('connection to the endpoint was lost');
  await expect(w.operator.getByTestId('no-agents')).toBeVisible();
});
