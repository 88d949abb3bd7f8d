// Benchmarks, run by `cargo xtask bench` (never by `cargo xtask test`): time from opening a view
// to the first decoded frame, glass-to-glass latency from the synthetic source, and agent CPU
// time per frame. Results go to bench-results/latency.json; nothing here asserts a timing.
import { test, expect, Page } from '@playwright/test';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { world, stopWorld, sampleFrames, latencyMs } from './harness';

const OUT = path.resolve(__dirname, '../../bench-results');

function quantile(values: number[], q: number): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))];
}

function cpuSeconds(pid: number): number {
  // utime + stime, fields 14 and 15 of /proc/PID/stat, in clock ticks (100 Hz on Linux).
  const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(fields[11]) + Number(fields[12])) / 100;
}

async function timeToFirstFrame(page: Page, agentName: string): Promise<number> {
  await page.evaluate(() => {
    const w = window as any;
    w.__firstFrame = undefined;
    const video = document.querySelector('video') as HTMLVideoElement;
    video.requestVideoFrameCallback((_now, meta) => { w.__firstFrame = meta.presentationTime; });
    document.addEventListener('click', () => { w.__clickAt = performance.now(); }, { capture: true, once: true });
  });
  await page.getByTestId('agent-row').filter({ hasText: agentName }).getByRole('button', { name: 'View' }).click();
  await page.waitForFunction(() => (window as any).__firstFrame !== undefined, undefined, { timeout: 15_000 });
  return page.evaluate(() => (window as any).__firstFrame - (window as any).__clickAt);
}

async function closeView(page: Page) {
  await page.getByRole('button', { name: 'Close view' }).click();
  await expect(page.getByTestId('view-state')).toHaveAttribute('data-state', 'idle');
  // Let the agent stop publishing so the next open is a cold start, as an operator sees it.
  await page.waitForTimeout(500);
}

test('view latency and agent cost @bench', async ({ browser }) => {
  test.setTimeout(240_000);
  fs.mkdirSync(OUT, { recursive: true });
  const results: Record<string, unknown> = { date: new Date().toISOString(), machine: '2 cores, loopback, Debian chromium 156, debug build (deps opt-level 2, workspace opt-level 1)' };
  for (const size of ['1280x720', '1920x1080']) {
    const name = `bench-${size}`;
    const w = await world(browser, { name, size });
    const agent = w.agent;
    const page = w.operator;
    try {
      await expect(page.getByTestId('agent-row').filter({ hasText: name })).toBeVisible();
      const firstFrame: number[] = [];
      for (let i = 0; i < 10; i++) {
        firstFrame.push(await timeToFirstFrame(page, name));
        if (i < 9) await closeView(page);
      }
      await expect(page.getByTestId('view-state')).toHaveAttribute('data-state', 'live');
      await page.waitForTimeout(1000);
      const cpuBefore = cpuSeconds(agent.pid);
      const samples = await sampleFrames(page, 10_000);
      const cpuAfter = cpuSeconds(agent.pid);
      const frames = samples[samples.length - 1].counter - samples[0].counter;
      const lat = samples.map(latencyMs);
      results[size] = {
        first_frame_ms: { median: quantile(firstFrame, 0.5), p95: quantile(firstFrame, 0.95), all: firstFrame.map(Math.round) },
        glass_to_glass_ms: { median: quantile(lat, 0.5), p95: quantile(lat, 0.95), samples: lat.length },
        frames_captured: frames,
        frames_presented: samples.length,
        agent_cpu_ms_per_frame: Math.round(((cpuAfter - cpuBefore) * 1000 / frames) * 10) / 10,
      };
      await page.getByRole('button', { name: 'Close view' }).click();
    } finally {
      await stopWorld(w);
    }
  }
  fs.writeFileSync(path.join(OUT, 'latency.json'), JSON.stringify(results, null, 2));
  console.log(JSON.stringify(results, null, 2));
});
