// Request discipline (issue 13): a signed-in insider floods one device with session requests.
// The relay refuses all but one before the endpoint is touched (one pending request per device,
// per-operator and per-device rate limits, each refusal an audit event); the endpoint's X server
// keeps serving ordinary clients; the agent shows one prompt; a legitimate request afterwards is
// asked at once.
import { execFile } from 'node:child_process';
import { expect, Page } from '@playwright/test';
import { test, World, world, stopWorld, inviteAndEnrol, waitFor, recordMeasurement } from './harness';

let w: World | undefined;

test.afterEach(async () => {
  await stopWorld(w);
  w = undefined;
});

/**
 * Opens `n` viewer sockets from `page` at once, each asking for a session with `agentId`, and
 * returns the first answer of each (`session` when admitted, else the error code). An admitted
 * request's socket stays open, so the request stays pending; `closeFlood` closes it.
 */
async function flood(page: Page, port: number, agentId: string, n: number): Promise<string[]> {
  return page.evaluate(([p, agent, count]) => {
    const sockets: WebSocket[] = ((window as any).__flood ??= []);
    return Promise.all(Array.from({ length: count }, (_, i) => new Promise<string>((resolve) => {
      const ws = new WebSocket(`ws://localhost:${p}/ws/viewer`);
      sockets.push(ws);
      ws.onopen = () => ws.send(JSON.stringify({ v: 1, type: 'watch', agent_id: agent, sdp: 'v=0', ticket: `FLOOD-${i}`, reason: 'incident', levels: ['view', 'control'] }));
      ws.onmessage = (ev) => {
        const msg = JSON.parse(ev.data);
        // A refused socket closes, so the flood never holds hundreds of sockets at once.
        if (msg.type === 'error') { ws.close(); resolve(msg.code); }
        if (msg.type === 'session') resolve('session');
      };
      ws.onclose = () => resolve('closed');
    })));
  }, [port, agentId, n] as const);
}

async function closeFlood(page: Page): Promise<void> {
  await page.evaluate(() => { for (const ws of (window as any).__flood ?? []) ws.close(); });
}

/** Whether a new X client can connect to `display` right now (what the user's next app does). */
function xAccepts(display: string): Promise<boolean> {
  return new Promise((resolve) => execFile('xdpyinfo', ['-display', display], { timeout: 5_000 }, (err) => resolve(!err)));
}

/** How many consent windows the agent runs now (its `consent-ui` children). */
function consentWindows(agentPid: number): Promise<number> {
  return new Promise((resolve) => execFile('pgrep', ['-P', String(agentPid), '-f', 'consent-ui'], (_err, out) => resolve(out.split('\n').filter((l) => l.trim() !== '').length)));
}

test('a burst of hundreds of session requests from one operator and from several: one prompt, the X server keeps serving, every refusal is audited, and the next legitimate request is asked at once @hardening', async ({ browser }) => {
  test.setTimeout(120_000);
  w = await world(browser, { name: 'desk-flood' }, { requestLimits: 'defaults' });
  const row = w.operator.getByTestId('agent-row').filter({ hasText: 'desk-flood' });
  await expect(row).toBeVisible();
  const agentId = (await row.getAttribute('data-agent-id'))!;
  const others = [await inviteAndEnrol(browser, w.admin, 'mallory', 'operator'), await inviteAndEnrol(browser, w.admin, 'trudy', 'operator')];
  const legitimate = await inviteAndEnrol(browser, w.admin, 'carol', 'operator');
  const display = w.endpoint.display;

  // The X server is watched during the whole flood: every probe must connect.
  let probing = true;
  const probes: boolean[] = [];
  const prober = (async () => {
    while (probing) probes.push(await xAccepts(display));
  })();
  let peakWindows = 0;
  const watcher = (async () => {
    while (probing) {
      peakWindows = Math.max(peakWindows, await consentWindows(w!.agent.pid));
      await new Promise((r) => setTimeout(r, 50));
    }
  })();

  // One operator: 200 requests at once.
  const burst = Date.now();
  const answers = await flood(w.operator, w.relay.port, agentId, 200);
  const burstMs = Date.now() - burst;
  // Several operators at the same device, while the first request waits.
  const othersAnswers = (await Promise.all(others.map((page) => flood(page, w!.relay.port, agentId, 50)))).flat();
  await w.endpoint.window();
  probing = false;
  await Promise.all([prober, watcher]);

  const count = (list: string[], what: string) => list.filter((a) => a === what).length;
  expect(count(answers, 'session'), answers.join(',')).toBe(1);
  expect(count(answers, 'session') + count(answers, 'busy') + count(answers, 'rate_limited'), answers.join(',')).toBe(200);
  // The operator's own bucket (6 a minute by default) refused most of the burst.
  expect(count(answers, 'rate_limited')).toBeGreaterThanOrEqual(190);
  expect(count(othersAnswers, 'session')).toBe(0);
  expect(count(othersAnswers, 'busy') + count(othersAnswers, 'rate_limited'), othersAnswers.join(',')).toBe(100);
  // Each other operator got "a request is already waiting" for the requests their bucket allowed.
  expect(count(othersAnswers, 'busy')).toBeGreaterThanOrEqual(2);

  expect(probes.length).toBeGreaterThan(0);
  expect(probes.every((ok) => ok), `xdpyinfo failed ${probes.filter((ok) => !ok).length} of ${probes.length} times`).toBe(true);
  expect(peakWindows).toBeLessThanOrEqual(1);

  // The relay's evidence: one request reached the user; every other one is a refusal record.
  // Refusal records are not awaited before their answers: wait until all of them are on disk.
  await expect.poll(() => w!.relay.auditRecords().filter((r) => r.kind === 'session.refused').length).toBe(299);
  const records = w.relay.auditRecords();
  expect(records.filter((r) => r.kind === 'consent.asked')).toHaveLength(1);
  const refusals = records.filter((r) => r.kind === 'session.refused');
  expect(refusals).toHaveLength(299);
  expect(refusals.filter((r) => r.detail === "a request is already waiting for this device's user").length).toBe(count(answers, 'busy') + count(othersAnswers, 'busy'));
  expect(new Set(refusals.map((r) => r.actor))).toEqual(new Set(['operator', 'mallory', 'trudy']));
  // The first request was not ended by the others: it still waits for the user.
  const started = records.filter((r) => r.kind === 'session.start');
  expect(started).toHaveLength(1);
  expect(records.some((r) => r.kind === 'session.ended')).toBe(false);

  // The flood ends (its sockets close, so the waiting request ends and its prompt closes); an
  // operator who took no part is asked at once: the refused flood cost the device nothing.
  await closeFlood(w.operator);
  await w.endpoint.windowGone();
  const asked = Date.now();
  const legit = await flood(legitimate, w.relay.port, agentId, 1);
  expect(legit).toEqual(['session']);
  await w.endpoint.window();
  // Reported, not asserted (timings belong to benchmarks): how fast the relay answered the
  // burst, and how soon the legitimate request's prompt showed.
  const promptMs = Date.now() - asked;
  recordMeasurement('hardening-flood', `200 requests answered in ${burstMs} ms; the next prompt showed ${promptMs} ms after its request`, {
    requests: 300,
    admitted: count(answers, 'session') + count(othersAnswers, 'session'),
    refused: refusals.length,
    burst_200_ms: burstMs,
    next_prompt_ms: promptMs,
    peak_consent_windows: peakWindows,
  });
  expect(await consentWindows(w.agent.pid)).toBe(1);
  await waitFor('the audit record of the legitimate request', async () => w!.relay.auditRecords().filter((r) => r.kind === 'consent.asked').length === 2);
});
