// Help the user asks for (R2): `agent help` on the endpoint gives a one-time code, the request
// shows in the operators' queue, an operator takes it up (from the queue or by the code read out
// on the phone), and the user still confirms the levels in the consent window.
import { expect } from '@playwright/test';
import { test } from './harness';
import * as path from 'node:path';
import { spawn, spawnSync } from 'node:child_process';
import { World, world, stopWorld, BIN, api, rawWatch, rawHelpQueue, recordMeasurement, AuditRecord, waitFor, parseLayout } from './harness';

let w: World | undefined;

test.afterEach(async () => {
  await stopWorld(w);
  w = undefined;
});

/** Runs `agent help` for the world's agent; returns its code (digits only) and what it printed. */
function askHelp(w: World): { code: string; stdout: string } {
  const r = spawnSync(path.join(BIN, 'agent'), ['help', '--relay-url', `ws://127.0.0.1:${w.relay.port}`, '--data-dir', w.agentDir], { encoding: 'utf8', timeout: 30_000 });
  expect(r.status, r.stderr).toBe(0);
  const m = /Your help code: (\d{3}) (\d{3})/.exec(r.stdout);
  expect(m, r.stdout).not.toBeNull();
  return { code: m![1] + m![2], stdout: r.stdout };
}

/** The request id an audit record names ("request <hex> ..."). */
function requestId(r: AuditRecord): string {
  return /request ([0-9a-f]{16})/.exec(r.detail)![1];
}

test('the user asks for help with agent help: the code reaches the operator queue, the operator takes it by the code, the user still confirms; a code works once @R2', async ({ browser }) => {
  w = await world(browser, { name: 'front-desk' });
  const page = w.operator;
  await page.goto(w.relay.url);
  await expect(page.getByTestId('no-help')).toBeVisible();

  // From `agent help` to the request in the queue: watched for on every frame of the page.
  const shown = page.waitForFunction(() => document.querySelector('[data-testid="help-row"]') !== null, null, { polling: 'raf', timeout: 15_000 });
  const started = Date.now();
  const child = spawn(path.join(BIN, 'agent'), ['help', '--relay-url', `ws://127.0.0.1:${w.relay.port}`, '--data-dir', w.agentDir], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  child.stdout.on('data', (d) => { stdout += d; });
  const exited = new Promise<number | null>((resolve) => child.on('close', resolve));
  await shown;
  const visibleMs = Date.now() - started;
  expect(await exited).toBe(0);
  const m = /Your help code: (\d{3}) (\d{3})/.exec(stdout);
  expect(m, stdout).not.toBeNull();
  const code = m![1] + m![2];
  expect(stdout).toContain('valid for 10 more minute(s)');
  recordMeasurement('help-request', `agent help started to the request in the operator's queue: ${visibleMs} ms`, { agent_help_to_queue_ms: visibleMs });

  const row = page.getByTestId('help-row');
  await expect(row).toHaveCount(1);
  await expect(row).toContainText('front-desk');
  const agentId = (await row.getAttribute('data-agent-id'))!;
  // The queue never shows the code: only the caller can give it (@ux). Nor does the relay send it.
  await expect(page.getByTestId('help-requests')).not.toContainText(code);
  await expect(page.getByTestId('help-requests')).not.toContainText(`${code.slice(0, 3)} ${code.slice(3)}`);
  const queue = await rawHelpQueue(page, w.relay.port);
  expect(queue.map((r) => r.agent_id)).toEqual([agentId]);
  expect(queue.every((r) => !('code' in r) && !JSON.stringify(r).includes(code))).toBe(true);

  // Asking again while it is open mints no new code and writes nothing (the rate limit).
  expect(askHelp(w).code).toBe(code);
  await expect(row).toHaveCount(1);

  // Without a ticket the page says what is missing and keeps the typed code (@ux).
  await page.locator('input[name="help-code"]').fill(code);
  await page.getByTestId('take-help-code').click();
  await expect(page.getByTestId('request-error')).toHaveText('Enter the ticket or request ID first: every session names one.');
  await expect(page.locator('input[name="help-code"]')).toHaveValue(code);
  await expect(page.getByTestId('view-state')).toHaveText('idle');

  // A code no open request has is refused by the relay, and the queue stays as it was.
  await page.locator('input[name="ticket"]').fill('INC-2001');
  await page.locator('select[name="reason"]').selectOption('incident');
  await page.locator('input[name="help-code"]').fill(code === '000000' ? '000001' : '000000');
  await page.getByTestId('take-help-code').click();
  await expect(page.getByTestId('view-state')).toContainText('no open help request has this code');
  await expect(row).toHaveCount(1);

  // The operator types the code the caller reads out (with a dash), and the user is asked.
  await page.locator('input[name="help-code"]').fill(`${code.slice(0, 3)}-${code.slice(3)}`);
  await page.getByTestId('take-help-code').click();
  await expect(page.getByTestId('view-state')).toHaveAttribute('data-state', 'awaiting-consent');
  await expect(page.getByTestId('no-help')).toBeVisible();
  await expect.poll(() => w!.endpoint.promptText()).toContain('INC-2001');
  // The user's prompt says that it answers their own request, by the code they read out (@ux).
  expect(w.endpoint.promptText().replace('consent-ui prompt: ', '').split(' | ')[0]).toBe(`This answers your help request ${code.slice(0, 3)} ${code.slice(3)}`);
  await w.endpoint.click('allow');
  await expect(page.getByTestId('view-state')).toHaveAttribute('data-state', 'live');
  await page.getByTestId('end-session').click();
  await expect(page.getByTestId('view-state')).toHaveAttribute('data-state', 'ended');

  // Once taken, the code opens nothing, also sent straight to the relay.
  const again = await rawWatch(page, w.relay.port, agentId, 'INC-2002', 'incident', code);
  expect(again.type).toBe('error');
  expect(again.code).toBe('help_code');
  expect(again.message).toContain('no open help request has this code');

  // The record: asked once, taken by the operator, and the session naming the request it
  // answers, with the user's own consent. The spent code's refusal is not awaited before its
  // answer: wait for it.
  await expect.poll(() => w!.relay.auditRecords().some((r) => r.kind === 'session.refused')).toBe(true);
  const records = w.relay.auditRecords();
  const asked = records.filter((r) => r.kind === 'help.requested');
  expect(asked.map((r) => r.actor)).toEqual(['user@front-desk']);
  expect(asked[0].subject).toBe(`device:${agentId}`);
  const id = requestId(asked[0]);
  const taken = records.filter((r) => r.kind === 'help.picked_up');
  expect(taken.map((r) => [r.actor, requestId(r)])).toEqual([['operator', id]]);
  const start = records.filter((r) => r.kind === 'session.start');
  expect(start).toHaveLength(1);
  expect(start[0].detail).toContain(`answers help request ${id}`);
  expect(start[0].session!.ticket).toBe('INC-2001');
  expect(records.filter((r) => r.kind === 'consent.allowed')).toHaveLength(1);
  const refused = records.filter((r) => r.kind === 'session.refused');
  expect(refused.map((r) => r.detail)).toEqual(['no open help request has this code (it may have been taken, or lapsed)']);
});

test('the user asks for help with the Request help button of agent help --window: the window shows the code, the queue only who asks; the operator takes it by the code the window shows, the user still confirms @R2', async ({ browser }) => {
  w = await world(browser, { name: 'front-desk' });
  const page = w.operator;
  await page.goto(w.relay.url);
  await expect(page.getByTestId('no-help')).toBeVisible();
  const display = w.endpoint.display;
  const win = spawn(path.join(BIN, 'agent'), ['help', '--window', '--relay-url', `ws://127.0.0.1:${w.relay.port}`, '--data-dir', w.agentDir], {
    env: { ...process.env, DISPLAY: display }, stdio: ['ignore', 'ignore', 'pipe'],
  });
  let log = '';
  win.stderr.on('data', (d) => { log += d; });
  // What the window logged last under `prefix` (it logs what it shows).
  const told = (prefix: string) => (log.split('\n').filter((l) => l.startsWith(prefix)).at(-1) ?? '').slice(prefix.length);
  try {
    let id = '';
    await waitFor('the help window', async () => {
      try { id = w!.endpoint.xdo(['search', '--onlyvisible', '--name', 'Sightline: ask for help']).split('\n')[0]; } catch { id = ''; }
      return id !== '';
    });
    await expect.poll(() => told('help-ui layout ')).toMatch(/^request=/);
    // The user clicks the button, at its real place on the screen.
    const { x, y, w: bw, h: bh } = parseLayout(told('help-ui layout ')).get('request')!;
    const origin = w.endpoint.windowOrigin(id);
    w.endpoint.xdo(['mousemove', String(origin.x + Math.round(x + bw / 2)), String(origin.y + Math.round(y + bh / 2)), 'sleep', '0.2', 'click', '1']);
    await expect.poll(() => told('help-ui code: ')).toMatch(/^\d{3} \d{3} \(expires \d+\)$/);
    const code = told('help-ui code: ').slice(0, 7).replace(' ', '');
    const expires = Number(/expires (\d+)/.exec(told('help-ui code: '))![1]);
    expect(Math.round((expires - Date.now()) / 60_000)).toBe(10);

    // The request is in the operators' queue (without its code); the operator types the code the
    // window shows, and the user is asked as always.
    const row = page.getByTestId('help-row');
    await expect(row).toHaveCount(1);
    await page.locator('input[name="ticket"]').fill('INC-2101');
    await page.locator('select[name="reason"]').selectOption('incident');
    await page.locator('input[name="help-code"]').fill(code);
    await page.getByTestId('take-help-code').click();
    await expect(page.getByTestId('view-state')).toHaveAttribute('data-state', 'awaiting-consent');
    await expect.poll(() => w!.endpoint.promptText()).toContain('INC-2101');
    await w.endpoint.click('allow');
    await expect(page.getByTestId('view-state')).toHaveAttribute('data-state', 'live');
    const records = w.relay.auditRecords();
    const asked = records.filter((r) => r.kind === 'help.requested');
    expect(asked.map((r) => r.actor)).toEqual(['user@front-desk']);
    const start = records.find((r) => r.kind === 'session.start')!;
    expect(start.detail).toContain(`answers help request ${requestId(asked[0])}`);
  } finally {
    win.kill('SIGKILL');
  }
});

test('a help request nobody takes lapses: it leaves the queue, is recorded as expired, and its code opens nothing @R2', async ({ browser }) => {
  w = await world(browser, { name: 'front-desk' }, { args: ['--help-request-ttl-s', '8'] });
  const page = w.operator;
  await page.goto(w.relay.url);
  const { code, stdout } = askHelp(w);
  expect(stdout).toContain('valid for 1 more minute(s)');
  const row = page.getByTestId('help-row');
  await expect(row).toHaveCount(1);
  const agentId = (await row.getAttribute('data-agent-id'))!;
  // Gone within the TTL and one refresh.
  await expect(page.getByTestId('no-help')).toBeVisible({ timeout: 15_000 });
  await expect.poll(() => w!.relay.auditRecords().filter((r) => r.kind === 'help.expired').length).toBe(1);
  const expired = w.relay.auditRecords().filter((r) => r.kind === 'help.expired');
  expect(expired.map((r) => [r.actor, r.subject])).toEqual([['system', `device:${agentId}`]]);
  const asked = w.relay.auditRecords().find((r) => r.kind === 'help.requested')!;
  expect(requestId(expired[0])).toBe(requestId(asked));
  const refused = await rawWatch(page, w.relay.port, agentId, 'INC-3001', 'incident', code);
  expect([refused.type, refused.code]).toEqual(['error', 'help_code']);
  // The control: the same request without the spent code reaches the endpoint's user.
  const control = await rawWatch(page, w.relay.port, agentId, 'INC-3001', 'incident');
  expect(control.type).toBe('session');
  // And asking again opens a new request with a new id. Read at once: the user gets a code only
  // after its request's record is on disk.
  askHelp(w);
  const ids = w.relay.auditRecords().filter((r) => r.kind === 'help.requested').map(requestId);
  expect(ids).toHaveLength(2);
  expect(ids[1]).not.toBe(ids[0]);
});
