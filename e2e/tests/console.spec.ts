// The console says what is true (issue 24): each check reads what the page shows, in the words a
// person reads, at each state of a real session.
import { expect } from '@playwright/test';
import { test } from './harness';
import * as fs from 'node:fs';
import { World, world, stopWorld, requestView, api, contextWithPasskeys, signIn, inviteAndEnrol } from './harness';

let w: World | undefined;

test.afterEach(async () => {
  await stopWorld(w);
  w = undefined;
});

test('the recording indicator shows exactly while frames are recorded: not while consent is awaited, not after a denial, paused with the session, gone at the end @ux @R9', async ({ browser }) => {
  w = await world(browser, { name: 'front-desk' });
  const page = w.operator;
  const indicator = page.getByTestId('recording');

  // Asked, then denied: the recorder holds the consent on the record, but no picture is taken.
  await requestView(page, w.relay, 'front-desk', 'INC-4711', 'incident', false);
  await expect(page.getByTestId('view-state')).toHaveAttribute('data-state', 'awaiting-consent');
  await expect(page.getByTestId('session-phase')).toHaveText('waiting for the user to answer');
  await expect(indicator).toHaveCount(0);
  await w.endpoint.click('deny');
  await expect(page.getByTestId('view-state')).toHaveAttribute('data-state', 'ended');
  await expect(indicator).toHaveCount(0);
  await w.endpoint.windowGone();

  // Allowed: recording while it runs, in a recording indicator's colour.
  await requestView(page, w.relay, 'front-desk', 'INC-4711', 'incident', false);
  await expect(page.getByTestId('view-state')).toHaveAttribute('data-state', 'awaiting-consent');
  await expect(indicator).toHaveCount(0);
  await w.endpoint.click('allow');
  await expect(indicator).toHaveText('Recording');
  await expect(indicator).toHaveAttribute('data-recording', 'true');
  expect(await indicator.evaluate((e) => getComputedStyle(e).color)).toBe('rgb(255, 82, 82)');
  await expect(page.getByTestId('session-phase')).toHaveText('running');

  // Paused: no picture is taken, and the indicator says so.
  await w.endpoint.click('pause');
  await expect(indicator).toHaveText('Recording paused');
  await expect(indicator).toHaveAttribute('data-recording', 'false');
  await w.endpoint.click('resume');
  await expect(indicator).toHaveText('Recording');

  // Ended: nothing recorded any more, nothing shown.
  await w.endpoint.click('end');
  await expect(page.getByTestId('view-state')).toContainText('the user ended the session');
  await expect(indicator).toHaveCount(0);
});

test('a pause by the user reads as such and offers the operator nothing it cannot do; control is not offered once granted; nothing from a closed view stays @ux @R8 @R7', async ({ browser }) => {
  w = await world(browser, { name: 'front-desk' });
  const page = w.operator;
  await requestView(page, w.relay, 'front-desk', 'INC-4711', 'incident', false);
  await w.endpoint.click('allow');
  await expect(page.getByTestId('view-state')).toHaveText('live');
  await expect(page.getByTestId('elevate')).toBeVisible();
  await expect(page.getByTestId('pause')).toBeVisible();

  // The user pauses: the picture is not called live, and only the user's resume is possible.
  await w.endpoint.click('pause');
  await expect(page.getByTestId('session-phase')).toHaveText('paused by the user: only the user can resume');
  await expect(page.getByTestId('view-state')).toHaveText('picture paused');
  await expect(page.getByTestId('resume')).toHaveCount(0);
  await expect(page.getByTestId('pause')).toHaveCount(0);
  await expect(page.getByTestId('elevate')).toHaveCount(0);
  await expect(page.getByTestId('end-session')).toBeVisible();
  await w.endpoint.click('resume');
  await expect(page.getByTestId('session-phase')).toHaveText('running');

  // The operator's own pause is the operator's to lift.
  await page.getByTestId('pause').click();
  await expect(page.getByTestId('session-phase')).toHaveText('paused by you');
  await page.getByTestId('resume').click();
  await expect(page.getByTestId('session-phase')).toHaveText('running');

  // Control asked and granted: no longer offered.
  await page.getByTestId('elevate').click();
  await expect(page.getByTestId('elevate')).toHaveCount(0);
  await w.endpoint.click('elevate-allow');
  await expect(page.getByTestId('granted')).toHaveText('granted: view, chat, control');
  await expect(page.getByTestId('elevate')).toHaveCount(0);

  // The user ends it; the operator closes the ended view and opens the next session: no word of
  // the last one (nor of closing a view the relay had already closed) is left on the page.
  await w.endpoint.click('end');
  await expect(page.getByTestId('view-state')).toContainText('the user ended the session');
  await page.getByTestId('close-view').click();
  await expect(page.getByTestId('view-state')).toHaveText('idle');
  await w.endpoint.windowGone();
  await requestView(page, w.relay, 'front-desk', 'INC-4712', 'incident', false);
  await w.endpoint.click('allow');
  await expect(page.getByTestId('view-state')).toHaveText('live');
  await expect(page.getByTestId('notice')).toHaveText('');
  await expect(page.locator('body')).not.toContainText('no view is open');
});

test('an invitation link pasted into a tab that is already open opens the enrolment at once, without a reload @ux @R11', async ({ browser }) => {
  w = await world(browser, { name: 'front-desk' });
  const invite = await api(w.admin, 'POST', '/api/admin/invitations', { name: 'olga', role: 'operator' });
  expect(invite.status).toBe(200);
  const { page } = await contextWithPasskeys(browser);
  await page.goto(w.relay.url);
  await expect(page.locator('input[name="username"]')).toBeVisible();
  const loads: string[] = [];
  page.on('load', () => loads.push(page.url()));
  // Only the fragment differs: the browser changes the hash and loads nothing.
  expect(new URL(invite.json.link).origin + '/').toBe(new URL(w.relay.url).origin + '/');
  await page.goto(invite.json.link);
  await expect(page.getByRole('button', { name: 'Create passkey' })).toBeVisible();
  expect(loads).toEqual([]);
  await page.getByRole('button', { name: 'Create passkey' }).click();
  await expect(page.getByTestId('signed-in-as')).toContainText('olga');
});

test('a request without a ticket or a reason is stopped in the page with what is missing, and nothing reaches the relay; an unknown user name at sign-in says what it may mean; no claim of no endpoint while connecting @ux @R4', async ({ browser }) => {
  w = await world(browser, { name: 'front-desk' });
  const page = w.operator;
  await page.goto(w.relay.url);
  const row = page.getByTestId('agent-row').filter({ hasText: 'front-desk' });
  // Nothing chosen for the operator: no default reason.
  await expect(page.locator('select[name="reason"]')).toHaveValue('');
  // Each "Ask for" check box sits on one line with its label (measured, at both window sizes),
  // and the page is no wider than the window.
  for (const size of [{ width: 1280, height: 800 }, { width: 1920, height: 1080 }]) {
    await page.setViewportSize(size);
    const labels = page.locator('fieldset.levels label');
    await expect(labels).toHaveCount(5);
    for (const label of await labels.all()) {
      const box = (await label.boundingBox())!;
      const input = (await label.locator('input').boundingBox())!;
      expect(box.height, await label.innerText()).toBeLessThan(2 * input.height);
      expect(input.x + input.width).toBeLessThanOrEqual(box.x + box.width / 2);
    }
    expect(await page.evaluate(() => document.documentElement.scrollWidth)).toBeLessThanOrEqual(size.width);
  }
  await row.getByRole('button', { name: 'View' }).click();
  await expect(page.getByTestId('request-error')).toHaveText('Enter the ticket or request ID first: every session names one.');
  await page.locator('input[name="ticket"]').fill('INC-4711');
  await row.getByRole('button', { name: 'View' }).click();
  await expect(page.getByTestId('request-error')).toHaveText('Choose the reason for the session first.');
  await expect(page.getByTestId('view-state')).toHaveText('idle');
  // Control: with both, the request goes out and the user is asked; the record has that request
  // and nothing before it.
  await page.locator('select[name="reason"]').selectOption('incident');
  await row.getByRole('button', { name: 'View' }).click();
  await expect(page.getByTestId('request-error')).toHaveText('');
  await expect(page.getByTestId('view-state')).toHaveAttribute('data-state', 'awaiting-consent');
  await expect.poll(() => w!.relay.auditRecords().filter((r) => r.kind === 'consent.asked').length).toBe(1);
  expect(w.relay.auditRecords().filter((r) => r.kind === 'session.refused')).toEqual([]);
  await w.endpoint.click('deny');
  await expect(page.getByTestId('view-state')).toHaveAttribute('data-state', 'ended');

  // While the relay's socket is down the endpoint list does not claim that nothing is online.
  let blocked = true;
  await page.routeWebSocket(/\/ws\/viewer/, (ws) => { if (blocked) ws.close(); else ws.connectToServer(); });
  await page.reload();
  await expect(page.getByTestId('relay-state')).not.toHaveAttribute('data-state', 'online');
  await expect(page.getByTestId('no-agents')).toHaveText('Connecting to the relay…');
  // Control: the socket let through (the viewer retries every second), the endpoint shows.
  blocked = false;
  await expect(row).toBeVisible();

  // Sign-in with a name nobody has: told what that may mean, not "not signed in".
  const { page: stranger } = await contextWithPasskeys(browser);
  await stranger.goto(w.relay.url);
  await stranger.locator('input[name="username"]').fill('nobody');
  await stranger.getByRole('button', { name: 'Sign in with passkey' }).click();
  await expect(stranger.getByTestId('login-error')).toHaveText('Sign-in failed: there is no passkey for "nobody" here. Check the user name; if it is right, ask an admin for an invitation.');
  // Control: the same form with a name that has a passkey (the operator's, in their browser) signs in.
  await w.operator.getByTestId('logout').click();
  await signIn(w.operator, w.relay, 'operator');
  await expect(w.operator.getByTestId('login-error')).toHaveCount(0);
});

test('the tabs say which one is open, to the eye and to a screen reader @ux', async ({ browser }) => {
  w = await world(browser, { name: 'front-desk' });
  // The admin's tabs (the operator's page has one tab only).
  const page = w.admin;
  const tabs = page.locator('nav.tabs button');
  const count = await tabs.count();
  expect(count).toBeGreaterThan(1);
  for (let i = 0; i < count; i++) {
    await tabs.nth(i).click();
    for (let j = 0; j < count; j++) {
      if (i === j) await expect(tabs.nth(j)).toHaveAttribute('aria-current', 'page');
      else await expect(tabs.nth(j)).not.toHaveAttribute('aria-current', /.*/);
    }
    const open = await tabs.nth(i).evaluate((e) => getComputedStyle(e).backgroundColor);
    const other = await tabs.nth((i + 1) % count).evaluate((e) => getComputedStyle(e).backgroundColor);
    expect(open).not.toBe(other);
  }
});

test('the Audit page fits the window, folds recording chunks into their recording, pages, takes dates from pickers, shows details as fields with the raw record a click away, and says what was wrong @ux @R45', async ({ browser }) => {
  w = await world(browser, { name: 'front-desk' });
  // A recorded session long enough to leave several chunk records.
  await requestView(w.operator, w.relay, 'front-desk', 'INC-4711', 'incident', false);
  await w.endpoint.click('allow');
  await expect(w.operator.getByTestId('recording')).toHaveAttribute('data-recording', 'true');
  await expect.poll(() => w!.relay.auditRecords().filter((r) => r.kind === 'recording.chunk').length, { timeout: 20_000 }).toBeGreaterThanOrEqual(3);
  await w.endpoint.click('end');
  await expect(w.operator.getByTestId('view-state')).toContainText('the user ended the session');
  await expect.poll(() => w!.relay.auditRecords().some((r) => r.kind === 'recording.closed')).toBe(true);
  const chunks = w.relay.auditRecords().filter((r) => r.kind === 'recording.chunk');

  const admin = w.admin;
  const rows = admin.getByTestId('audit-row');
  await admin.setViewportSize({ width: 1280, height: 800 });
  await admin.getByTestId('tab-audit').click();
  // Before a key is pinned nothing is shown as verified; the long key the relay sends wraps too.
  await expect(admin.getByTestId('audit-verification')).toHaveAttribute('data-state', 'unpinned');
  expect(await admin.evaluate(() => document.documentElement.scrollWidth <= window.innerWidth)).toBe(true);
  await admin.locator('textarea[name="audit-keys"]').fill(fs.readFileSync(w.relay.pinnedKey(), 'utf8').trim());
  await admin.getByTestId('audit-pin').click();
  for (const size of [{ width: 1280, height: 800 }, { width: 1920, height: 1080 }]) {
    await admin.setViewportSize(size);
    await admin.getByTestId('audit-search').click();
    await expect(rows.first()).toBeVisible();
    const widths = await admin.evaluate(() => ({ page: document.documentElement.scrollWidth, window: window.innerWidth }));
    expect(widths.page, `the Audit page at ${size.width}x${size.height}`).toBeLessThanOrEqual(widths.window);
  }

  // Recording chunks are counted into their recording, not listed; asked for, they are listed.
  await expect(rows.and(admin.locator('[data-kind="recording.chunk"]'))).toHaveCount(0);
  const folded = admin.getByTestId('audit-folded-row');
  await expect(folded).toHaveCount(1);
  await expect(folded).toHaveAttribute('data-count', String(chunks.length));
  await expect(folded).toContainText(`session ${chunks[0].session!.session_id}`);
  const kind = admin.locator('select[name="audit-kind"]');
  await kind.selectOption('recording.chunk');
  await admin.getByTestId('audit-search').click();
  await expect(rows.and(admin.locator('[data-kind="recording.chunk"]'))).toHaveCount(chunks.length);
  await expect(folded).toHaveCount(0);

  // Details read as fields; the raw record is one click away. Each search is on the record, in words.
  await kind.selectOption('audit.viewed');
  await admin.getByTestId('audit-search').click();
  const viewed = rows.first();
  await expect(viewed).toHaveAttribute('data-kind', 'audit.viewed');
  await expect(viewed.locator('td.detail')).toContainText('searched kind audit.viewed');
  await expect(viewed.locator('td.detail')).not.toContainText('Filter {');
  const raw = viewed.getByTestId('audit-raw');
  await expect(raw).toBeHidden();
  await viewed.getByText('Raw record').click();
  await expect(raw).toBeVisible();
  expect(JSON.parse((await raw.textContent())!).seq).toBe(Number(await viewed.getAttribute('data-seq')));

  // Paging: more than a page of searches, newest first, each page below the last.
  for (let i = 0; i < 55; i++) await api(admin, 'GET', '/api/audit/records?kind=auth.login&limit=1');
  await admin.getByTestId('audit-search').click();
  await expect(rows).toHaveCount(50);
  const newest = Number(await rows.first().getAttribute('data-seq'));
  const firstPage = Number(await rows.last().getAttribute('data-seq'));
  await expect(admin.getByTestId('audit-newer')).toBeDisabled();
  await admin.getByTestId('audit-older').click();
  await expect.poll(async () => Number(await rows.first().getAttribute('data-seq'))).toBeLessThan(firstPage);
  expect(await rows.count()).toBeGreaterThan(0);
  // Back to the newest page (which each search, itself a record, has added to).
  await admin.getByTestId('audit-newer').click();
  await expect.poll(async () => Number(await rows.first().getAttribute('data-seq'))).toBeGreaterThan(newest);
  await expect(admin.getByTestId('audit-newer')).toBeDisabled();

  // Dates come from pickers; a range that cannot hold a record says so instead of searching.
  await kind.selectOption('');
  await admin.locator('input[name="audit-from"]').fill('2030-01-01T10:00:00');
  await admin.getByTestId('audit-search').click();
  await expect(rows).toHaveCount(0);
  await expect(admin.getByTestId('audit-error')).toHaveCount(0);
  await admin.locator('input[name="audit-to"]').fill('2030-01-01T09:00:00');
  await admin.getByTestId('audit-search').click();
  await expect(admin.getByTestId('audit-error')).toHaveText('To must be later than From: no record can lie between them.');
  await expect(admin.getByTestId('audit-error')).toHaveAttribute('role', 'alert');
});

test('the admin page says which device is online, in a session or has a window open, lists what is not yet used, and hands links on with their expiry and a copy button @ux @R45', async ({ browser }) => {
  w = await world(browser, { name: 'front-desk' });
  const admin = w.admin;
  await admin.context().grantPermissions(['clipboard-read', 'clipboard-write']);
  await admin.getByTestId('tab-admin').click();
  const state = admin.locator('[data-testid="device-row"][data-device="front-desk"]').getByTestId('device-state');
  await expect(state).toHaveText('online');

  // In a session, then with a maintenance window, read again by the page itself.
  await requestView(w.operator, w.relay, 'front-desk', 'INC-4711', 'incident', false);
  await w.endpoint.click('allow');
  await expect(w.operator.getByTestId('view-state')).toHaveAttribute('data-state', 'live');
  await expect(state).toHaveText('online, in a session', { timeout: 10_000 });
  await admin.locator('[data-testid="device-row"][data-device="front-desk"]').getByRole('button', { name: 'Open window 30 min' }).click();
  await expect(state).toContainText('maintenance window open until');
  await w.operator.getByTestId('end-session').click();
  await w.agent.kill();
  await expect(state).toContainText('offline', { timeout: 10_000 });

  // An invitation: the link once, how long it works, a copy button; and it is listed until used.
  await admin.locator('input[name="invite-name"]').fill('carol');
  await admin.locator('select[name="invite-role"]').selectOption('auditor');
  await admin.getByRole('button', { name: 'Create invitation' }).click();
  const link = (await admin.getByTestId('invite-link').textContent())!.trim();
  expect(link).toContain('/enrol/');
  await expect(admin.getByTestId('invite-link-expiry')).toContainText('Works once, until');
  await admin.getByRole('button', { name: 'Copy the link' }).click();
  await expect(admin.getByRole('status')).toHaveText('copied');
  expect(await admin.evaluate(() => navigator.clipboard.readText())).toBe(link);
  const invitation = admin.locator('[data-testid="pending-row"][data-kind="invitation"]');
  await expect(invitation).toContainText('carol as auditor');
  await expect(invitation).toContainText('admin');
  // The page never shows a pending token again: only what it is for.
  await expect(admin.getByTestId('pending')).not.toContainText(link.split('/').pop()!);
});

test('the picture area says what it waits for while it shows nothing, and chat lines carry their time @ux', async ({ browser }) => {
  w = await world(browser, { name: 'front-desk' });
  const page = w.operator;
  const hint = page.getByTestId('video-hint');
  await requestView(page, w.relay, 'front-desk', 'INC-4711', 'incident', false);
  await expect(hint).toHaveText('Waiting for the user to allow the session: no picture until then.');
  await w.endpoint.click('allow');
  // Frames play: the hint goes.
  await expect(page.getByTestId('view-state')).toHaveAttribute('data-state', 'live');
  await expect(hint).toHaveCount(0);
  await w.endpoint.click('pause');
  await expect(hint).toHaveText('Paused: the picture stops until the session resumes.');
  await w.endpoint.click('resume');
  await expect(hint).toHaveCount(0);
  await page.locator('input[name="chat"]').fill('hello from the desk');
  await page.getByTestId('chat-send').click();
  await expect(page.getByTestId('chat-log').locator('li').last()).toHaveText(/^\d\d:\d\d:\d\d operator: hello from the desk$/);
});

test('the auditor sees a denied session set apart in the recording list: no picture, and why @ux @R29', async ({ browser }) => {
  w = await world(browser, { name: 'front-desk' });
  // Denied: the recorder took the consent on the record, and no frame.
  await requestView(w.operator, w.relay, 'front-desk', 'INC-1', 'incident', false);
  await w.endpoint.click('deny');
  await expect(w.operator.getByTestId('view-state')).toHaveAttribute('data-state', 'ended');
  await w.endpoint.windowGone();
  // Allowed, then ended by the user: frames.
  await requestView(w.operator, w.relay, 'front-desk', 'INC-2', 'incident', false);
  await w.endpoint.click('allow');
  await expect(w.operator.getByTestId('recording')).toHaveAttribute('data-recording', 'true');
  await expect.poll(() => w!.relay.auditRecords().filter((r) => r.kind === 'recording.chunk').length, { timeout: 20_000 }).toBeGreaterThan(0);
  await w.endpoint.click('end');
  await expect.poll(() => w!.relay.auditRecords().filter((r) => r.kind === 'recording.closed').length, { timeout: 20_000 }).toBe(2);

  const auditor = await inviteAndEnrol(browser, w.admin, 'audra', 'auditor');
  await auditor.getByTestId('tab-recordings').click();
  await auditor.getByTestId('recordings-search').click();
  const rows = auditor.getByTestId('recording-row');
  await expect(rows).toHaveCount(2);
  const denied = rows.filter({ hasText: 'INC-1' });
  await expect(denied).toHaveAttribute('data-empty', 'true');
  await expect(denied.getByTestId('recording-empty')).toContainText('no picture: ');
  await expect(denied.getByTestId('recording-empty')).toContainText('denied');
  const allowed = rows.filter({ hasText: 'INC-2' });
  await expect(allowed).toHaveAttribute('data-empty', 'false');
  await expect(allowed.getByTestId('recording-empty')).toHaveCount(0);
});
