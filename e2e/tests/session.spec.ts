// Sessions: the user's consent in the real window on the endpoint's X display (clicked with
// xdotool), input injected only while control is granted, pause/end, observers, forced ends.
import { expect, Page, chromium } from '@playwright/test';
import { test } from './harness';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { spawn, execFileSync, ChildProcess } from 'node:child_process';
import { World, world, stopWorld, requestView, openView, api, inviteAndEnrol, tempDir, SAMPLE_POLICY, watchChannels, inputsSent, chatMarker, droppedInSession, AuditRecord, sendRawSignal, keycodeOf, held } from './harness';

let w: World | undefined;
let xterm: ChildProcess | undefined;

test.afterEach(async () => {
  xterm?.kill('SIGKILL');
  xterm = undefined;
  await stopWorld(w);
  w = undefined;
});

/** The sample policy with settings of the office segment replaced or added. */
function officePolicy(...settings: string[]): string {
  const file = path.join(tempDir('policy'), 'policy.toml');
  const text = fs.readFileSync(SAMPLE_POLICY, 'utf8');
  const start = text.indexOf('[segments.office]');
  const end = text.indexOf('\n[', start + 1);
  let segment = text.slice(start, end);
  for (const setting of settings) {
    const key = setting.split('=')[0].trim();
    const line = new RegExp(`^${key} = .*$`, 'm');
    segment = line.test(segment) ? segment.replace(line, setting) : segment.replace('[segments.office]\n', `[segments.office]\n${setting}\n`);
  }
  fs.writeFileSync(file, text.slice(0, start) + segment + text.slice(end));
  return file;
}

/** An xterm on the endpoint at a known place, writing what is typed into a file. */
function startXterm(display: string): string {
  const file = path.join(tempDir('typed'), 'typed.txt');
  fs.writeFileSync(file, '');
  xterm = spawn('xterm', ['-geometry', '60x8+640+420', '-e', 'sh', '-c', `stty -echo; cat > ${file}`], { env: { ...process.env, DISPLAY: display }, stdio: 'ignore' });
  return file;
}

/** Page coordinates of a point on the remote screen (the video is letterboxed). */
async function pagePoint(page: Page, x: number, y: number): Promise<{ x: number; y: number }> {
  const dims = () => page.evaluate(() => {
    const v = document.querySelector('video') as HTMLVideoElement;
    return `${v.videoWidth}x${v.videoHeight} in ${v.getBoundingClientRect().width}x${v.getBoundingClientRect().height}`;
  });
  await expect.poll(dims, { message: 'the video has a size' }).toMatch(/^[1-9]\d*x[1-9]\d* in [1-9][\d.]*x[1-9]/);
  return page.evaluate(([rx, ry]) => {
    const v = document.querySelector('video') as HTMLVideoElement;
    const r = v.getBoundingClientRect();
    const scale = Math.min(r.width / v.videoWidth, r.height / v.videoHeight);
    const ox = (r.width - v.videoWidth * scale) / 2, oy = (r.height - v.videoHeight * scale) / 2;
    return { x: r.left + ox + (rx + 0.5) * scale, y: r.top + oy + (ry + 0.5) * scale };
  }, [x, y]);
}

async function clickRemote(page: Page, x: number, y: number): Promise<void> {
  const p = await pagePoint(page, x, y);
  await page.mouse.click(p.x, p.y);
}

/**
 * Clicks until the X pointer is there: right after a resume or an observer joining, the agent may
 * still be applying the change when the first click arrives (control and input travel on
 * different channels), and refuses it as it should.
 */
async function clickLands(w: World, page: Page, x: number, y: number): Promise<void> {
  for (let i = 0; i < 20; i++) {
    await clickRemote(page, x, y);
    await sleep(150);
    if (near(w.endpoint.pointer(), x, y)) return;
  }
  expect(w.endpoint.pointer()).toEqual({ x, y });
}

/** The video is scaled in the page (1280 px shown in fewer): one page pixel spans more than one
 * remote pixel, so a click lands within a pixel of its aim. */
function near(p: { x: number; y: number }, x: number, y: number): boolean {
  return Math.abs(p.x - x) <= 2 && Math.abs(p.y - y) <= 2;
}

/** The frame counter of the frame the video shows now (synthetic source). */
async function shownCounter(page: Page): Promise<number> {
  return page.evaluate(() => {
    const video = document.querySelector('video') as HTMLVideoElement;
    const canvas = document.createElement('canvas');
    canvas.width = 1024; canvas.height = 16;
    const ctx = canvas.getContext('2d')!;
    ctx.drawImage(video, 0, 0, 1024, 16, 0, 0, 1024, 16);
    const px = ctx.getImageData(0, 0, 1024, 16).data;
    let hi = 0;
    for (let i = 0; i < 32; i++) {
      const o = (8 * 1024 + i * 16 + 8) * 4;
      hi = (hi * 2 + ((0.299 * px[o] + 0.587 * px[o + 1] + 0.114 * px[o + 2]) >= 128 ? 1 : 0)) >>> 0;
    }
    return hi;
  });
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

test('the consent window shows operator, role, organisation, reason, ticket and levels; deny, closing and the timeout refuse; allow starts media @R5', async ({ browser }, testInfo) => {
  w = await world(browser, { name: 'front-desk' }, { policy: officePolicy('consent_timeout_s = 6') });
  const page = w.operator;

  // Deny: no media, a refused session.
  await requestView(page, w.relay, 'front-desk');
  await expect(page.getByTestId('view-state')).toHaveAttribute('data-state', 'awaiting-consent');
  await w.endpoint.click('deny');
  await expect(page.getByTestId('view-state')).toContainText('the user denied the request');
  expect(await page.evaluate(() => (document.querySelector('video') as HTMLVideoElement).videoWidth)).toBe(0);
  await w.endpoint.windowGone();

  // Closing the window is a deny.
  await requestView(page, w.relay, 'front-desk');
  await w.endpoint.window();
  await w.endpoint.killWindow();
  await expect(page.getByTestId('view-state')).toContainText('closed the consent prompt');
  await w.endpoint.windowGone();

  // No answer within the segment's timeout is a deny.
  await requestView(page, w.relay, 'front-desk');
  await w.endpoint.window();
  await expect(page.getByTestId('view-state')).toContainText('did not answer in time', { timeout: 15_000 });
  await w.endpoint.windowGone();
  expect(await page.evaluate(() => (document.querySelector('video') as HTMLVideoElement).videoWidth)).toBe(0);

  // The prompt, as the user sees it; the screenshot is kept with the test results.
  await requestView(page, w.relay, 'front-desk', 'INC-4711', 'incident');
  await w.endpoint.window();
  await expect.poll(() => w!.endpoint.layout().has('allow')).toBe(true);
  const shot = testInfo.outputPath('consent-popup.png');
  w.endpoint.screenshot(shot);
  await testInfo.attach('consent-popup', { path: shot, contentType: 'image/png' });
  const text = w.endpoint.promptText();
  for (const part of ['Operator: operator', 'Role: operator', 'Organisation: Example Bank IT', 'Reason: incident', 'Ticket: INC-4711', 'Requested: view, chat, control']) {
    expect(text).toContain(part);
  }
  // An operator whose display name is the user name is named once, not "operator (operator)" (@ux).
  expect(text.replace('consent-ui prompt: ', '').split(' | ')).toContain('Operator: operator');
  // View and chat are ticked (R20): the user ticks control on purpose.
  await w.endpoint.click('level:control');
  await w.endpoint.click('allow');
  await expect(page.getByTestId('view-state')).toHaveAttribute('data-state', 'live');
  await expect(page.getByTestId('granted')).toHaveText('granted: view, chat, control');

  // Every decision is in the relay's events with the ticket, and was signed by the device.
  const records = w.relay.auditRecords();
  for (const event of ['consent.asked', 'consent.denied', 'consent.timed_out', 'consent.allowed']) expect(records.map((r) => r.kind)).toContain(event);
  const consent = records.filter((r) => r.kind.startsWith('consent.'));
  expect(consent.every((r) => r.session?.ticket === 'INC-4711')).toBe(true);
  expect(records.find((r) => r.kind === 'consent.allowed')?.detail).toContain('receipt signed at');
});

test('a request asks for view and chat unless the operator ticks more; the user grants what the window ticks: the operator sees the screen and pointer events do not move the X pointer @R6 @R20', async ({ browser }) => {
  w = await world(browser, { name: 'front-desk' });
  const page = w.operator;
  // R20: a request asks for view and chat only unless the operator ticks more.
  await page.goto(w.relay.url);
  await watchChannels(page);
  await expect(page.locator('input[name="level-chat"]')).toBeChecked();
  await expect(page.locator('input[name="level-control"]')).not.toBeChecked();
  await expect(page.locator('input[name="level-clipboard"]')).not.toBeChecked();
  // The operator ticked control; the consent window ticks view and chat only (R20), and the
  // user allows as shown.
  await requestView(page, w.relay, 'front-desk');
  await w.endpoint.click('allow');
  await expect(page.getByTestId('view-state')).toHaveAttribute('data-state', 'live');
  await expect(page.getByTestId('granted')).toHaveText('granted: view, chat');
  await expect.poll(() => page.evaluate(() => (document.querySelector('video') as HTMLVideoElement).videoWidth)).toBe(1280);

  w.endpoint.xdo(['mousemove', '900', '600']);
  const before = w.endpoint.pointer();
  await clickRemote(page, 200, 150);
  await page.mouse.move(10, 10);
  await clickRemote(page, 300, 250);
  // Measured against a marker, not a sleep: the chat line after the clicks has reached the
  // endpoint, so anything passed on before it had too.
  await chatMarker(page, 'after the clicks');
  const sent = await inputsSent(page);
  expect(sent).toBeGreaterThan(0);
  expect(w.endpoint.pointer()).toEqual(before);
  await page.getByTestId('end-session').click();
  await expect(page.getByTestId('view-state')).toContainText('the operator ended the session');
  // The relay dropped every input event the browser sent: none went on.
  expect(await droppedInSession(w.relay)).toBe(sent);
});

test('with control granted a browser click moves the X pointer there and typed text arrives in an X window; input sent before the grant never does @R19 @R7', async ({ browser }) => {
  w = await world(browser, { name: 'front-desk' }, { policy: officePolicy('grant_expiry_s = 8') });
  const page = w.operator;
  const typed = startXterm(w.endpoint.display);
  await page.goto(w.relay.url);
  await watchChannels(page);

  // View only first: input the operator sends now is dropped by the relay (and would be by the agent).
  await requestView(page, w.relay, 'front-desk', 'INC-4711', 'incident', false);
  await w.endpoint.click('allow');
  await expect(page.getByTestId('view-state')).toHaveAttribute('data-state', 'live');
  await expect(page.getByTestId('granted')).toHaveText('granted: view, chat');
  await expect.poll(() => page.evaluate(() => (document.querySelector('video') as HTMLVideoElement).videoWidth)).toBe(1280);
  w.endpoint.xdo(['mousemove', '700', '470']); // the user's pointer rests on the xterm
  await clickRemote(page, 100, 100);
  await page.keyboard.type('forged\n');
  await chatMarker(page, 'before the grant');
  const beforeGrant = await inputsSent(page);
  expect(beforeGrant).toBeGreaterThan(0);
  expect(w.endpoint.pointer()).toEqual({ x: 700, y: 470 });

  // Elevation to control needs the user's second confirmation (R7).
  await page.getByTestId('elevate').click();
  await expect(page.getByTestId('pending-elevation')).toContainText('control');
  await w.endpoint.click('elevate-allow');
  await expect(page.getByTestId('granted')).toHaveText('granted: view, chat, control');

  // Now a click lands where it was aimed, and typing reaches the window under the pointer.
  await clickRemote(page, 720, 480);
  await expect.poll(() => near(w!.endpoint.pointer(), 720, 480)).toBe(true);
  await page.keyboard.type('hello sightline\n');
  await expect.poll(() => fs.readFileSync(typed, 'utf8')).toContain('hello sightline');
  expect(fs.readFileSync(typed, 'utf8')).not.toContain('forged');

  // The grant expires (8 s in this segment) and falls back to view: input stops.
  await expect(page.getByTestId('granted')).toHaveText('granted: view, chat', { timeout: 15_000 });
  const beforeLate = await inputsSent(page);
  await page.keyboard.type('too late\n');
  await chatMarker(page, 'after the expiry');
  const late = (await inputsSent(page)) - beforeLate;
  expect(late).toBeGreaterThan(0);
  expect(w.relay.auditRecords().map((r) => r.kind)).toContain('elevation.confirmed');
  // The relay dropped exactly what was sent without control (before the grant, after it
  // expired), so none of it went on; the text typed with control did arrive (above).
  await page.getByTestId('end-session').click();
  expect(await droppedInSession(w.relay)).toBe(beforeGrant + late);
  expect(fs.readFileSync(typed, 'utf8')).not.toMatch(/forged|too late/);
});

test('pause stops frames and input within 1 s, resume restores them, end ends it for everyone @R8', async ({ browser }) => {
  w = await world(browser, { name: 'front-desk' });
  const page = w.operator;
  const observer = await inviteAndEnrol(browser, w.admin, 'observer1', 'observer');
  await watchChannels(page);
  await openView(page, w.relay, 'front-desk', w.endpoint);
  await expect.poll(() => page.evaluate(() => (document.querySelector('video') as HTMLVideoElement).videoWidth)).toBe(1280);
  await observer.getByTestId('session-row').getByTestId('observe').click();
  await expect(observer.getByTestId('view-state')).toHaveAttribute('data-state', 'live');

  // The operator pauses: within a second the picture stands still and clicks do nothing.
  await page.getByTestId('pause').click();
  await expect(page.getByTestId('session-phase')).toHaveAttribute('data-phase', 'paused');
  await sleep(1000);
  const frozen = await shownCounter(page);
  w.endpoint.xdo(['mousemove', '900', '650']);
  const sentBefore = await inputsSent(page);
  await clickRemote(page, 100, 100);
  await chatMarker(page, 'while paused');
  const sentPaused = (await inputsSent(page)) - sentBefore;
  expect(sentPaused).toBeGreaterThan(0);
  await sleep(1000);
  expect(await shownCounter(page)).toBe(frozen);
  expect(w.endpoint.pointer()).toEqual({ x: 900, y: 650 });
  await page.getByTestId('resume').click();
  await expect.poll(() => shownCounter(page)).toBeGreaterThan(frozen);
  await clickLands(w, page, 1000, 150);

  // The user pauses from the session bar; the operator cannot lift it, the user can. The viewer
  // offers no Resume then; a modified viewer that sends one anyway is refused and told why.
  await w.endpoint.click('pause');
  await expect(page.getByTestId('session-phase')).toHaveAttribute('data-phase', 'paused');
  await expect(page.getByTestId('resume')).toHaveCount(0);
  await sendRawSignal(page, { v: 1, type: 'control', action: 'resume' });
  await expect(page.getByTestId('notice')).toHaveText('not done: the user paused the session; only the user resumes it');
  await expectResumeRefused(w);
  await expect(page.getByTestId('session-phase')).toHaveAttribute('data-phase', 'paused');
  await w.endpoint.click('resume');
  await expect(page.getByTestId('session-phase')).toHaveAttribute('data-phase', 'active');

  // The user ends it: operator and observer both see the end, media stops.
  await w.endpoint.click('end');
  await expect(page.getByTestId('view-state')).toContainText('the user ended the session');
  await expect(observer.getByTestId('view-state')).toHaveAttribute('data-state', 'ended');
  await expect.poll(() => w!.agent.log()).toContain('session over: screen capture stopped');
  // Exactly the input sent while paused was dropped by the relay (the rest was admitted).
  expect(await droppedInSession(w.relay)).toBe(sentPaused);
});

test('an observer sees the same frames and cannot send input; where required, control works only while an observer is present @R21', async ({ browser }) => {
  w = await world(browser, { name: 'front-desk' }, { policy: officePolicy('observer_required_for_control = true') });
  const page = w.operator;
  const observer = await inviteAndEnrol(browser, w.admin, 'observer1', 'observer');
  await watchChannels(page);
  await watchChannels(observer);
  await openView(page, w.relay, 'front-desk', w.endpoint);
  await expect(page.getByTestId('granted')).toHaveText('granted: view, chat, control');
  await expect.poll(() => page.evaluate(() => (document.querySelector('video') as HTMLVideoElement).videoWidth)).toBe(1280);

  // No observer yet: control is granted but suspended (each check against a chat marker).
  w.endpoint.xdo(['mousemove', '900', '650']);
  let suspended = await inputsSent(page);
  await clickRemote(page, 100, 100);
  await chatMarker(page, 'no observer yet');
  suspended = (await inputsSent(page)) - suspended;
  expect(suspended).toBeGreaterThan(0);
  expect(w.endpoint.pointer()).toEqual({ x: 900, y: 650 });

  await observer.getByTestId('session-row').getByTestId('observe').click();
  await expect(observer.getByTestId('view-state')).toHaveAttribute('data-state', 'live');
  await expect(page.getByTestId('view-agent')).toBeVisible();
  // Same frames: the observer's counter reaches what the operator saw.
  const seen = await shownCounter(page);
  await expect.poll(() => shownCounter(observer)).toBeGreaterThanOrEqual(seen);
  // The observer's viewer sends no input at all (what the relay does with an observer's input
  // anyway is the test after this one).
  await clickRemote(observer, 300, 300);
  expect(await inputsSent(observer)).toBe(0);
  // With the observer present the operator's click lands.
  await clickLands(w, page, 1000, 200);

  // The observer leaves: control is suspended again.
  await observer.getByTestId('close-view').click();
  await expect.poll(() => w!.relay.auditRecords().map((r) => r.kind)).toContain('observer.left');
  const before = await inputsSent(page);
  await clickRemote(page, 1100, 500);
  await chatMarker(page, 'observer gone');
  const afterLeaving = (await inputsSent(page)) - before;
  expect(afterLeaving).toBeGreaterThan(0);
  expect(near(w.endpoint.pointer(), 1000, 200)).toBe(true);
  expect(w.relay.auditRecords().map((r) => r.kind)).toContain('observer.joined');
  // The relay dropped exactly what was sent while no observer was there.
  await page.getByTestId('end-session').click();
  expect(await droppedInSession(w.relay)).toBe(suspended + afterLeaving);
});

/** Waits for the relay's record that it refused the operator's resume of the user's pause (R8):
 * the positive marker that the resume was handled, so the phase checked after it is the answer. */
async function expectResumeRefused(w: World): Promise<void> {
  const refused = () => w.relay.auditRecords().filter((r) => r.kind === 'session.resumed' && r.outcome === 'failure');
  await expect.poll(() => refused().length, { message: 'the refused resume is recorded' }).toBe(1);
  expect(refused()[0].actor).toBe('operator');
  expect(refused()[0].detail).toContain('only the user resumes it');
}

/** Sends input messages as raw JSON on the page's open `session` channel, waiting until they have
 * left the browser. */
async function sendRawInput(page: Page, inputs: object[]): Promise<void> {
  const open = () => page.evaluate(() => ((window as any).__channels ?? []).some((c: RTCDataChannel) => c.label === 'session' && c.readyState === 'open'));
  await expect.poll(open, { message: 'the session channel is open' }).toBe(true);
  await page.evaluate(async (list) => {
    const channel = ((window as any).__channels as RTCDataChannel[]).filter((c) => c.label === 'session' && c.readyState === 'open').at(-1)!;
    for (const input of list) channel.send(JSON.stringify({ v: 1, type: 'input', input }));
    while (channel.bufferedAmount > 0) await new Promise((r) => setTimeout(r, 10));
  }, inputs);
}

/** Sends a raw pointer move from `page` until the X pointer is there (the agent may still be
 * applying a change when the first one arrives). */
async function rawMoveLands(w: World, page: Page, x: number, y: number): Promise<void> {
  for (let i = 0; i < 20 && !near(w.endpoint.pointer(), x, y); i++) {
    await sendRawInput(page, [{ type: 'pointer_move', x, y }]);
    await sleep(150);
  }
  expect(w.endpoint.pointer()).toEqual({ x, y });
}

test('an observer whose viewer sends input anyway reaches nothing: the relay drops and counts each event, while the same raw message from the operator moves the pointer @R21 @hardening', async ({ browser }) => {
  w = await world(browser, { name: 'front-desk' });
  const page = w.operator;
  await watchChannels(page);
  const observer = await inviteAndEnrol(browser, w.admin, 'observer1', 'observer');
  await watchChannels(observer);
  await openView(page, w.relay, 'front-desk', w.endpoint);
  await expect(page.getByTestId('granted')).toHaveText('granted: view, chat, control');
  // Control: the probe's message, sent by the operator, moves the X pointer.
  await rawMoveLands(w, page, 300, 300);
  w.endpoint.xdo(['mousemove', '900', '650']);

  await observer.getByTestId('session-row').getByTestId('observe').click();
  await expect(observer.getByTestId('view-state')).toHaveAttribute('data-state', 'live');
  // The probe: five moves to (300, 300) on the observer's own channel.
  const probes = 5;
  await sendRawInput(observer, Array.from({ length: probes }, () => ({ type: 'pointer_move', x: 300, y: 300 })));
  // The marker on the same channel: the relay has handled the probes once this line is back.
  await chatMarker(observer, 'after the probes');
  expect(w.endpoint.pointer()).toEqual({ x: 900, y: 650 });
  // And the operator's move still lands.
  await rawMoveLands(w, page, 1000, 200);

  // The relay's account, at the end: exactly the probes were dropped (the operator's input was
  // all admitted), so none of them went on to the endpoint.
  await page.getByTestId('end-session').click();
  await expect(page.getByTestId('view-state')).toHaveAttribute('data-state', 'ended');
  let dropped: number | undefined;
  await expect.poll(() => {
    const record = w!.relay.auditRecords().find((r) => r.kind === 'input.dropped');
    dropped = record ? Number(/^(\d+) input events$/.exec(record.detail)?.[1]) : undefined;
    return dropped;
  }, { message: 'the input.dropped record' }).toBe(probes);
  expect(near(w.endpoint.pointer(), 1000, 200)).toBe(true);
});

test('the endpoint session ends within 5 s of losing the relay, releasing held keys and buttons, within 10 s of losing the operator, and at once on an admin kill @R22', async ({ browser }) => {
  w = await world(browser, { name: 'front-desk' });

  // Admin kill.
  await openView(w.operator, w.relay, 'front-desk', w.endpoint);
  const sessions = (await api(w.admin, 'GET', '/api/admin/sessions')).json as { session_id: string; ticket: string }[];
  expect(sessions).toHaveLength(1);
  expect(sessions[0].ticket).toBe('INC-4711');
  expect((await api(w.admin, 'POST', `/api/admin/sessions/${sessions[0].session_id}/kill`)).status).toBe(200);
  await expect(w.operator.getByTestId('view-state')).toContainText('ended by administrator admin', { timeout: 2_000 });
  await expect.poll(() => w!.agent.log(), { timeout: 2_000 }).toContain('ended by administrator admin');
  await w.endpoint.windowGone();

  // The operator's browser disappears.
  await openView(w.operator, w.relay, 'front-desk', w.endpoint);
  await w.operator.context().close();
  await expect.poll(() => w!.agent.log(), { timeout: 10_000 }).toContain("the operator's connection was lost");
  await w.endpoint.windowGone();

  // The relay dies. (The first operator's passkey lived in the closed context: a second one.)
  const again = await inviteAndEnrol(browser, w.admin, 'operator2', 'operator');
  await openView(again, w.relay, 'front-desk', w.endpoint);
  // The operator holds Shift and the left button when the relay dies: the endpoint must not keep
  // them pressed.
  // (pagePoint waits for the first frame: before it the viewer cannot place a press on the screen.)
  const at = await pagePoint(again, 640, 360);
  await again.mouse.move(at.x, at.y);
  await again.mouse.down();
  await again.keyboard.down('Shift');
  const display = w.endpoint.display;
  const shift = keycodeOf(display, 'Shift_L');
  // The control: the X server reports them held (so the probe works).
  await expect.poll(() => held(display), { message: 'Shift and button 1 held on the endpoint' }).toEqual({ keys: [shift], buttons: [1] });
  await w.relay.proc.kill('SIGKILL');
  await expect.poll(() => w!.agent.log(), { timeout: 5_000 }).toContain('the connection to the relay was lost');
  await expect.poll(() => held(display), { timeout: 5_000, message: 'released within 5 s' }).toEqual({ keys: [], buttons: [] });
  await expect.poll(() => w!.agent.log(), { timeout: 5_000 }).toContain('screen capture stopped');
  await again.keyboard.up('Shift');
  await again.mouse.up();
});

test('where the segment needs a senior, control waits for the user and a senior operator who approves with a passkey step-up; unapproved requests lapse @R7 @R14', async ({ browser }) => {
  // Elevations lapse after the consent timeout: 15 s here.
  w = await world(browser, { name: 'front-desk' }, { policy: officePolicy('elevation_needs_senior = true', 'consent_timeout_s = 15') });
  const page = w.operator;
  const senior = await inviteAndEnrol(browser, w.admin, 'senior1', 'senior_operator');
  await watchChannels(page);
  await requestView(page, w.relay, 'front-desk', 'INC-4711', 'incident', false);
  await w.endpoint.click('allow');
  await expect(page.getByTestId('granted')).toHaveText('granted: view, chat');
  await expect.poll(() => page.evaluate(() => (document.querySelector('video') as HTMLVideoElement).videoWidth)).toBe(1280);

  // The operator asks, the user confirms: not enough here.
  await page.getByTestId('elevate').click();
  await w.endpoint.click('elevate-allow');
  await expect.poll(() => w!.relay.auditRecords().map((r) => r.kind)).toContain('elevation.confirmed');
  // A pointer move sent on the channel as a modified viewer would: it has not landed when a
  // chat line sent after it has reached the endpoint.
  w.endpoint.xdo(['mousemove', '900', '650']);
  await sendRawInput(page, [{ type: 'pointer_move', x: 100, y: 100 }]);
  await chatMarker(page, 'before approval');
  expect(w.endpoint.pointer()).toEqual({ x: 900, y: 650 });
  await expect(page.getByTestId('granted')).toHaveText('granted: view, chat');

  // Only a senior operator approves: an operator's roles cannot.
  const row = senior.getByTestId('session-row');
  await expect(row.getByTestId('approve')).toHaveText('Approve control');
  const sessionId = await row.getAttribute('data-session-id');
  const approve = (who: Page, levels: string[]) => api(who, 'POST', `/api/sessions/${sessionId}/approve-elevation`, { levels });
  expect((await approve(page, ['control'])).status).toBe(403);
  // Approving something else than what is pending is refused.
  const other = await approve(senior, ['clipboard']);
  expect(other.status).toBe(409);
  expect(other.json.message).toContain('the pending elevation is for control, not clipboard');
  // Without a fresh passkey confirmation the senior's approval does not count (R14).
  const unconfirmed = await approve(senior, ['control']);
  expect([unconfirmed.status, unconfirmed.json.error]).toEqual([403, 'step_up_required']);
  await expect(page.getByTestId('granted')).toHaveText('granted: view, chat');
  // The button confirms with the passkey, then approves.
  await row.getByTestId('approve').click();
  await expect(senior.getByTestId('notice')).toHaveText('approved control');
  await expect(page.getByTestId('granted')).toHaveText('granted: view, chat, control');
  await clickLands(w, page, 1000, 150);
  // The approval is applied without waiting for its record: wait for it.
  await expect.poll(() => w!.relay.auditRecords().some((r) => r.kind === 'elevation.approved')).toBe(true);
  // The senior's own step-up, not anyone's, came before the approval, which names the senior.
  const records = w.relay.auditRecords();
  const approval = records.find((r) => r.kind === 'elevation.approved')!;
  expect(approval.actor).toBe('senior1');
  const stepUp = records.find((r) => r.kind === 'auth.step_up' && r.actor === 'senior1' && r.outcome === 'success' && r.seq < approval.seq);
  expect(stepUp, 'the senior stepped up before approving').toBeDefined();
  await page.getByTestId('end-session').click();
  await expect(page.getByTestId('view-state')).toContainText('the operator ended the session');
  // The relay dropped the one move sent before the approval.
  expect(await droppedInSession(w.relay)).toBe(1);
  await w.endpoint.windowGone();

  // A senior running a session of their own cannot approve its elevation either.
  await requestView(senior, w.relay, 'front-desk', 'INC-4712', 'incident', false);
  await w.endpoint.click('allow');
  await expect(senior.getByTestId('granted')).toHaveText('granted: view, chat');
  await senior.getByTestId('elevate').click();
  await w.endpoint.click('elevate-allow');
  const ownRow = senior.getByTestId('session-row').filter({ hasText: 'INC-4712' });
  await expect(ownRow.getByTestId('approve')).toHaveText('Approve control');
  const ownId = await ownRow.getAttribute('data-session-id');
  const own = await api(senior, 'POST', `/api/sessions/${ownId}/approve-elevation`, { levels: ['control'] });
  expect([own.status, own.json.message]).toEqual([403, 'the operator cannot approve their own elevation']);
  await expect(senior.getByTestId('granted')).toHaveText('granted: view, chat');
  // Nobody else approves: the request lapses, on both sides, and grants nothing.
  await expect(ownRow.getByTestId('approve')).toHaveCount(0, { timeout: 25_000 });
  await expect.poll(() => w!.relay.auditRecords().map((r) => r.kind)).toContain('elevation.expired');
  await expect.poll(() => w!.agent.log()).toContain('the request for more access lapsed');
  await expect(senior.getByTestId('granted')).toHaveText('granted: view, chat');
});

test('with active confirmation, minimising the session bar pauses the session until the user resumes; closing the window is a deny, closing the bar ends the session @R8 @R5', async ({ browser }) => {
  w = await world(browser, { name: 'front-desk' }, { policy: officePolicy('active_confirmation = true') });
  const page = w.operator;
  await watchChannels(page);
  const wm = w.endpoint.startWindowManager();

  // Closing the prompt with the window manager's close (as its close button does) is a deny.
  await requestView(page, w.relay, 'front-desk');
  await w.endpoint.window();
  await expect.poll(() => w!.endpoint.layout().has('allow')).toBe(true);
  w.endpoint.closeThroughWindowManager();
  await expect(page.getByTestId('view-state')).toContainText('closed the consent prompt');
  await w.endpoint.windowGone();

  await openView(page, w.relay, 'front-desk', w.endpoint);
  await expect(page.getByTestId('session-phase')).toHaveAttribute('data-phase', 'active');
  await expect.poll(() => page.evaluate(() => (document.querySelector('video') as HTMLVideoElement).videoWidth)).toBe(1280);
  await expect.poll(() => w!.endpoint.layout().has('pause')).toBe(true);
  const bar = await w.endpoint.window();

  // The user minimises the bar: the session pauses within a second, frames stop.
  w.endpoint.xdo(['windowminimize', bar]);
  await expect(page.getByTestId('session-phase')).toHaveAttribute('data-phase', 'paused', { timeout: 3_000 });
  await sleep(1000);
  const frozen = await shownCounter(page);
  await sleep(1000);
  expect(await shownCounter(page)).toBe(frozen);
  expect(w.agent.log()).toContain('session bar hidden: pausing (active confirmation)');
  // The operator is offered no Resume and cannot lift it (a raw resume is refused and recorded);
  // showing the bar again does not either (the bar reports nothing it could be measured against,
  // so this one waits): the user resumes.
  await expect(page.getByTestId('resume')).toHaveCount(0);
  await sendRawSignal(page, { v: 1, type: 'control', action: 'resume' });
  await expectResumeRefused(w);
  w.endpoint.xdo(['windowactivate', bar]);
  await w.endpoint.window();
  await sleep(1000);
  await expect(page.getByTestId('session-phase')).toHaveAttribute('data-phase', 'paused');
  await w.endpoint.click('resume');
  await expect(page.getByTestId('session-phase')).toHaveAttribute('data-phase', 'active');
  await expect.poll(() => shownCounter(page)).toBeGreaterThan(frozen);

  // Closing the bar is the user ending the session.
  w.endpoint.closeThroughWindowManager();
  await expect(page.getByTestId('view-state')).toContainText('the user ended the session');
  await wm.kill();
});

test('an operator browser that freezes without closing its connection ends the session within 10 s @R22', async ({ browser }, testInfo) => {
  w = await world(browser, { name: 'front-desk' });
  // A browser of its own, so freezing it stops nothing else; the marker finds its processes.
  const marker = `--sightline-frozen-operator=${process.pid}-${Date.now()}`;
  const launchOptions = testInfo.project.use.launchOptions ?? {};
  const frozenBrowser = await chromium.launch({ ...launchOptions, args: [...(launchOptions.args ?? []), marker] });
  try {
    const page = await inviteAndEnrol(frozenBrowser, w.admin, 'operator2', 'operator');
    await openView(page, w.relay, 'front-desk', w.endpoint);
    await expect.poll(() => page.evaluate(() => (document.querySelector('video') as HTMLVideoElement).videoWidth)).toBe(1280);

    // Stop every process of that browser (its process group): TCP stays open, nothing answers.
    const group = processGroupOf(Number(execFileSync('pgrep', ['-f', '--', marker], { encoding: 'utf8' }).trim().split('\n')[0]));
    expect(group).not.toBe(processGroupOf(process.pid));
    process.kill(-group, 'SIGSTOP');
    try {
      await expect.poll(() => w!.agent.log(), { timeout: 10_000 }).toContain("the operator's connection was lost");
      expect(w.relay.proc.log()).toContain('viewer silent: treating the browser as gone');
      await w.endpoint.windowGone();
    } finally {
      process.kill(-group, 'SIGCONT');
    }
  } finally {
    await frozenBrowser.close();
  }
});

test('an endpoint without a display asks on its terminal: the user grants view only and ends the session there @R5 @R6', async ({ browser }) => {
  w = await world(browser, { name: 'kiosk', terminal: true });
  const page = w.operator;
  await requestView(page, w.relay, 'kiosk', 'INC-4711', 'incident');
  await expect(page.getByTestId('view-state')).toHaveAttribute('data-state', 'awaiting-consent');
  await expect.poll(() => w!.agent.log()).toContain('Allow? [allow (view, chat) / deny / levels');
  const prompt = w.agent.log();
  for (const part of ['Operator: operator', 'Role: operator', 'Organisation: Example Bank IT', 'Reason: incident', 'Ticket: INC-4711', 'Requested: view, chat, control']) {
    expect(prompt).toContain(part);
  }
  // Naming the levels grants those: view, and no chat (R20).
  w.agent.child.stdin!.write('view\n');
  await expect(page.getByTestId('view-state')).toHaveAttribute('data-state', 'live');
  await expect(page.getByTestId('granted')).toHaveText('granted: view');
  await expect(page.getByTestId('chat-off')).toBeVisible();
  await expect.poll(() => w!.agent.log()).toContain('[session] granted: view; observers: none; recording on');
  // Chat typed anyway is not sent, and the user is told so (the agent handled the line, so the
  // operator's empty chat log is the whole story).
  w.agent.child.stdin!.write('chat are you there?\n');
  await expect.poll(() => w!.agent.log()).toContain('[chat] not sent: are you there? (chat is not granted in this session)');
  await expect(page.getByTestId('chat-log')).not.toContainText('are you there');
  w.agent.child.stdin!.write('end\n');
  await expect(page.getByTestId('view-state')).toContainText('the user ended the session');
});

test('operator and user chat over the data channel: the viewer and the session bar show both sides @R24', async ({ browser }) => {
  w = await world(browser, { name: 'front-desk' });
  const page = w.operator;
  await openView(page, w.relay, 'front-desk', w.endpoint);
  await page.locator('input[name="chat"]').fill('hello, I am looking at your printer settings');
  await page.getByTestId('chat-send').click();
  await expect(page.getByTestId('chat-log')).toContainText('operator: hello, I am looking at your printer settings');
  await expect.poll(() => w!.agent.log()).toContain('consent-ui chat operator: hello, I am looking at your printer settings');

  // The user answers in the session bar. (No window manager runs here to give the window the
  // keyboard focus when it is clicked, so the test gives it.)
  w.endpoint.xdo(['windowfocus', await w.endpoint.window()]);
  await w.endpoint.click('chat-input');
  w.endpoint.xdo(['type', '--delay', '30', 'thanks, go ahead']);
  w.endpoint.xdo(['key', 'Return']);
  await expect(page.getByTestId('chat-log')).toContainText('user@front-desk: thanks, go ahead');
  await expect.poll(() => w!.agent.log()).toContain('consent-ui chat you: thanks, go ahead');
});

/** Sends a chat line on the page's own session channel, as a modified viewer would (see `watchChannels`). */
async function sendRawChat(page: Page, text: string): Promise<void> {
  const open = () => page.evaluate(() => ((window as any).__channels ?? []).some((c: RTCDataChannel) => c.label === 'session' && c.readyState === 'open'));
  await expect.poll(open, { message: 'the session channel is open' }).toBe(true);
  await page.evaluate(async (line) => {
    const channel = ((window as any).__channels as RTCDataChannel[]).filter((c) => c.label === 'session' && c.readyState === 'open').at(-1)!;
    channel.send(JSON.stringify({ v: 1, type: 'chat', from: '', text: line }));
    while (channel.bufferedAmount > 0) await new Promise((r) => setTimeout(r, 10));
  }, text);
}

test('chat is a level the policy switches: a segment without it runs the default request without chat, neither side offers it; a level asked for on purpose that the segment lacks is refused by name @R20', async ({ browser }) => {
  w = await world(browser, { name: 'front-desk' }, { policy: officePolicy('levels = ["view", "control"]') });
  const page = w.operator;
  await watchChannels(page);
  // Asked for on purpose, a level the segment does not have is refused, naming it.
  await page.goto(w.relay.url);
  await page.locator('input[name="level-clipboard"]').setChecked(true);
  await requestView(page, w.relay, 'front-desk', 'INC-4711', 'incident', false);
  await expect(page.getByTestId('view-state')).toHaveAttribute('data-state', 'ended');
  await expect(page.getByTestId('view-state')).toContainText('level clipboard is not allowed in this segment');
  let refused: AuditRecord[] = [];
  await expect.poll(() => (refused = w!.relay.auditRecords().filter((r) => r.kind === 'session.refused')).length).toBe(1);
  expect(refused[0].detail).toContain('level clipboard is not allowed in this segment');

  // The default request (view and chat) goes to the user without chat: the window has no chat to tick.
  await page.locator('input[name="level-clipboard"]').setChecked(false);
  await expect(page.locator('input[name="level-chat"]')).toBeChecked();
  await requestView(page, w.relay, 'front-desk', 'INC-4711', 'incident', false);
  await expect(page.getByTestId('view-state')).toHaveAttribute('data-state', 'awaiting-consent');
  await expect.poll(() => w!.endpoint.layout().has('allow')).toBe(true);
  expect(w.endpoint.promptText()).toMatch(/Requested: view$/);
  expect(w.endpoint.layout().has('level:chat')).toBe(false);
  await w.endpoint.click('allow');
  await expect(page.getByTestId('granted')).toHaveText('granted: view');
  await expect(page.getByTestId('chat-off')).toBeVisible();
  const asked = w.relay.auditRecords().find((r) => r.kind === 'consent.asked')!;
  expect(asked.session!.levels).toEqual(['view']);
  // A raw line anyway: refused at the relay, told to the sender.
  await sendRawChat(page, 'no chat here');
  await expect(page.getByTestId('chat-log')).toContainText('not delivered: no chat here (chat is not granted in this session)');
});

test('a session whose user unticked chat has no chat on either side: a raw line from the viewer is refused, told to the sender and counted, and never reaches the bar; with chat ticked the same line does @R20 @R24', async ({ browser }) => {
  w = await world(browser, { name: 'front-desk' });
  const page = w.operator;
  await watchChannels(page);
  await requestView(page, w.relay, 'front-desk', 'INC-4711', 'incident', true);
  await expect.poll(() => w!.endpoint.layout().has('level:chat')).toBe(true);
  // The user unticks chat and ticks control.
  await w.endpoint.click('level:chat');
  await w.endpoint.click('level:control');
  await w.endpoint.click('allow');
  await expect(page.getByTestId('view-state')).toHaveAttribute('data-state', 'live');
  await expect(page.getByTestId('granted')).toHaveText('granted: view, control');
  // Neither side offers chat: the viewer says so; the session bar (its end button is there) has no chat box.
  await expect(page.getByTestId('chat-off')).toBeVisible();
  await expect(page.locator('input[name="chat"]')).toHaveCount(0);
  await expect.poll(() => w!.endpoint.layout().has('end')).toBe(true);
  expect(w.endpoint.layout().has('chat-input')).toBe(false);

  // The probe: a line on the viewer's own channel. The relay answers the sender that it was not delivered.
  await sendRawChat(page, 'a line nobody granted');
  await expect(page.getByTestId('chat-log')).toContainText('not delivered: a line nobody granted (chat is not granted in this session)');
  // The marker: a pointer move sent after the line on the same channel lands, so the line would
  // have reached the bar by now.
  await rawMoveLands(w, page, 300, 300);
  expect(w.endpoint.told('consent-ui chat ')).toBe('');
  await page.getByTestId('end-session').click();
  await expect(page.getByTestId('view-state')).toContainText('the operator ended the session');
  let counted: number | undefined;
  await expect.poll(() => {
    const record = w!.relay.auditRecords().find((r) => r.kind === 'chat.refused');
    counted = record ? Number(/^(\d+) chat lines:/.exec(record.detail)?.[1]) : undefined;
    return counted;
  }, { message: 'the chat.refused record' }).toBe(1);
  await w.endpoint.windowGone();

  // The control: the user leaves chat ticked; the same raw line reaches the bar.
  await requestView(page, w.relay, 'front-desk', 'INC-4712', 'incident', false);
  await expect.poll(() => w!.endpoint.layout().has('allow')).toBe(true);
  await w.endpoint.click('allow');
  await expect(page.getByTestId('granted')).toHaveText('granted: view, chat');
  await sendRawChat(page, 'a line the user allowed');
  await expect.poll(() => w!.endpoint.told('consent-ui chat ')).toBe('operator: a line the user allowed');
  await expect(page.getByTestId('chat-log')).toContainText('operator: a line the user allowed');
});

/** The process group of a process (field 5 of /proc/PID/stat, after the command in brackets). */
function processGroupOf(pid: number): number {
  const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
  return Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[2]);
}

test('idle and maximum duration end the session on both sides with the same reason; operator chat counts as activity on both @R23', async ({ browser }) => {
  test.setTimeout(120_000);
  w = await world(browser, { name: 'front-desk' }, { policy: officePolicy('idle_timeout_s = 6', 'max_duration_s = 20') });
  const page = w.operator;
  // Bounded: the chat box goes away when the session ends, which may come between the fill and
  // the click (CI hung there until the test's timeout).
  const say = async (text: string) => {
    await page.locator('input[name="chat"]').fill(text, { timeout: 3_000 });
    await page.getByTestId('chat-send').click({ timeout: 3_000 });
    await expect(page.getByTestId('chat-log')).toContainText(`operator: ${text}`);
  };
  const ends = () => w!.relay.auditRecords().filter((r) => r.kind === 'session.ended');

  // Idle: the operator's chat keeps the session alive on both sides for longer than the idle
  // timeout (the control), then silence ends it. The idle timeout leaves room for a chat round
  // trip on a loaded machine (at 4 s, a slow round trip let the session go idle under CI).
  await openView(page, w.relay, 'front-desk', w.endpoint);
  for (let i = 0; i < 6; i++) {
    await say(`still here ${i}`);
    await page.waitForTimeout(1_500);
  }
  await expect(page.getByTestId('session-phase')).toHaveAttribute('data-phase', 'active');
  expect(ends()).toEqual([]);
  await expect(page.getByTestId('view-state')).toContainText('the session was idle too long', { timeout: 10_000 });
  await expect.poll(() => w!.endpoint.told('consent-ui ended: ')).toBe('the session was idle too long');
  await expect.poll(() => ends().length).toBe(1);
  expect(ends()[0].detail).toContain('the session was idle too long');

  // Maximum duration: an active session ends anyway.
  await openView(page, w.relay, 'front-desk', w.endpoint);
  const opened = Date.now();
  while (Date.now() - opened < 35_000 && ends().length < 2) {
    await say(`working ${Date.now() - opened}`).catch(() => undefined);
    await page.waitForTimeout(1_500);
  }
  await expect(page.getByTestId('view-state')).toContainText('the maximum session duration was reached');
  await expect.poll(() => w!.endpoint.told('consent-ui ended: ')).toBe('the maximum session duration was reached');
  await expect.poll(() => ends().length).toBe(2);
  expect(ends()[1].detail).toContain('the maximum session duration was reached');
});
