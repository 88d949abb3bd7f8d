import { test, expect } from '@playwright/test';
import { Relay, Proc, startAgent, openView, sampleFrames } from './harness';

let relay: Relay;
let agent: Proc;

test.beforeEach(async () => {
  relay = await Relay.start();
  agent = startAgent(relay, { name: 'synthetic-desk' });
});

test.afterEach(async () => {
  await agent?.kill();
  await relay?.proc.kill();
});

test('operator sees the agent screen at 1280x720 and frames advance; a second viewer at the same time too @media', async ({ browser }) => {
  const operator = await (await browser.newContext()).newPage();
  const observer = await (await browser.newContext()).newPage();
  await openView(operator, relay, 'synthetic-desk');
  await openView(observer, relay, 'synthetic-desk');

  for (const page of [operator, observer]) {
    await expect.poll(() => page.evaluate(() => (document.querySelector('video') as HTMLVideoElement).videoWidth)).toBe(1280);
  }
  const [a, b] = await Promise.all([sampleFrames(operator, 2500), sampleFrames(observer, 2500)]);
  for (const samples of [a, b]) {
    expect(samples.length).toBeGreaterThan(0);
    expect(samples[0].width).toBe(1280);
    const counters = samples.map((s) => s.counter);
    // Frame counters only move forward, and by at least 30 frames over 2.5 s at 30 fps.
    for (let i = 1; i < counters.length; i++) expect(counters[i]).toBeGreaterThanOrEqual(counters[i - 1]);
    expect(counters[counters.length - 1] - counters[0]).toBeGreaterThanOrEqual(30);
  }
});

test('viewer reports an agent that goes offline @media', async ({ page }) => {
  await openView(page, relay, 'synthetic-desk');
  await agent.kill('SIGKILL');
  await expect(page.getByTestId('view-state')).toHaveAttribute('data-state', 'ended');
  await expect(page.getByTestId('view-state')).toContainText('agent went offline');
  await expect(page.getByTestId('no-agents')).toBeVisible();
});
