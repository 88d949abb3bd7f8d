// Identity and access through the real path: Chromium's virtual authenticator, the relay's
// passkey ceremonies, its session cookies and sockets, and (for @R17) two relays on one Redis.
import * as crypto from 'node:crypto';
import { expect, request as playwrightRequest, Page } from '@playwright/test';
import { test } from './harness';
import {
  Relay, World, world, stopWorld, contextWithPasskeys, enrolFromLink, inviteAndEnrol, api, signIn, enrolAgent,
  startAgent, tempDir, RedisServer, Proc, openView, relayCli, socketProbe,
} from './harness';

let w: World | undefined;
const extra: { kill(): Promise<void> }[] = [];

test.afterEach(async () => {
  await stopWorld(w);
  w = undefined;
  for (const p of extra.splice(0)) await p.kill();
});

async function socketOutcome(page: Page, url: string): Promise<'open' | 'refused'> {
  return page.evaluate((u) => new Promise<'open' | 'refused'>((resolve) => {
    const ws = new WebSocket(u);
    ws.onopen = () => { ws.close(); resolve('open'); };
    ws.onerror = () => resolve('refused');
  }), url);
}

test('admin enrols from the bootstrap link, invites an operator who enrols, signs in and sees the agents; without sign-in everything refuses @R11', async ({ browser }) => {
  w = await world(browser, { name: 'front-desk' });
  // The operator signs out and back in with the passkey alone.
  await w.operator.getByTestId('logout').click();
  await expect(w.operator.locator('input[name="username"]')).toBeVisible();
  await signIn(w.operator, w.relay, 'operator');
  await expect(w.operator.getByTestId('agent-row').filter({ hasText: 'front-desk' })).toBeVisible();

  // A stranger gets the sign-in form, 401 from every API, and no socket.
  const { page: stranger } = await contextWithPasskeys(browser);
  await stranger.goto(w.relay.url);
  await expect(stranger.locator('input[name="username"]')).toBeVisible();
  await expect(stranger.getByTestId('agent-row')).toHaveCount(0);
  for (const path of ['/api/me', '/api/admin/users', '/api/admin/devices']) {
    expect((await api(stranger, 'GET', path)).status, path).toBe(401);
  }
  expect((await api(stranger, 'POST', '/api/admin/invitations', { name: 'x', role: 'admin' })).status).toBe(401);
  expect(await socketOutcome(stranger, `ws://localhost:${w.relay.port}/ws/viewer`)).toBe('refused');
  // The admin, by being admin, cannot watch screens either (no universal role).
  expect(await socketOutcome(w.admin, `ws://localhost:${w.relay.port}/ws/viewer`)).toBe('refused');
  expect(await socketOutcome(w.operator, `ws://localhost:${w.relay.port}/ws/viewer`)).toBe('open');
  // The bootstrap link worked once only.
  const again = await contextWithPasskeys(browser);
  await again.page.goto(w.relay.bootstrapLink());
  await again.page.getByRole('button', { name: 'Create passkey' }).click();
  await expect(again.page.getByTestId('enrol-error')).toContainText('unknown or was already used');
});

test('a role grant stays pending until a second admin approves with step-up; nobody grants themselves @R13', async ({ browser }) => {
  const relay = await Relay.start();
  extra.push(relay.proc);
  const { page: alice } = await contextWithPasskeys(browser);
  await enrolFromLink(alice, relay.bootstrapLink(), 'alice');
  // While alice is the only admin her invitations apply at once (the audited bootstrap exception).
  await inviteAndEnrol(browser, alice, 'carol', 'operator');
  const bob = await inviteAndEnrol(browser, alice, 'bob', 'admin');
  // With two admins, an invitation's role waits for the other admin like any grant.
  await inviteAndEnrol(browser, alice, 'dave', 'auditor');
  const dave = ((await api(alice, 'GET', '/api/admin/users')).json as { name: string; roles: string[] }[]).find((u) => u.name === 'dave')!;
  expect(dave.roles).toEqual([]);
  const pending = (await api(alice, 'GET', '/api/admin/role-requests')).json as { id: string; target_name: string }[];
  expect(pending.map((r) => r.target_name)).toEqual(['dave']);
  expect((await api(bob, 'POST', `/api/admin/role-requests/${pending[0].id}/refuse`, {})).json.error).toBe('step_up_required');

  // Alice asks to grant carol the auditor role (the UI confirms with a passkey step-up).
  await alice.getByTestId('tab-admin').click();
  const form = alice.getByTestId('role-change-form');
  await form.locator('select[name="change-user"]').selectOption({ label: 'carol' });
  await form.locator('select[name="change-kind"]').selectOption('grant');
  await form.locator('select[name="change-role"]').selectOption('auditor');
  await form.getByRole('button', { name: 'Request' }).click();
  await expect(alice.getByTestId('admin-message')).toContainText('second admin must approve');
  await expect(alice.getByTestId('role-request')).toHaveCount(2);
  const carolRoles = alice.locator('[data-testid="user-row"][data-user="carol"] [data-testid="user-roles"]');
  await expect(carolRoles).toHaveText('operator');

  // Alice cannot approve her own request.
  await alice.getByTestId('role-request').filter({ hasText: 'carol' }).getByRole('button', { name: 'Approve' }).click();
  await expect(alice.getByTestId('admin-message')).toContainText('second admin');
  await expect(carolRoles).toHaveText('operator');

  // Nobody requests a change of their own roles.
  const users = (await api(alice, 'GET', '/api/admin/users')).json as { id: string; name: string }[];
  const aliceId = users.find((u) => u.name === 'alice')!.id;
  const own = await api(alice, 'POST', '/api/admin/role-requests', { user_id: aliceId, change: { grant: 'auditor' } });
  expect(own.status).toBe(403);
  expect(own.json.message).toContain('own roles');

  // Bob, a second admin, approves: a step-up first, then the role applies.
  const carolRequest = ((await api(bob, 'GET', '/api/admin/role-requests')).json as { id: string; target_name: string }[]).find((r) => r.target_name === 'carol')!;
  const decisionWithoutStepUp = await api(bob, 'POST', `/api/admin/role-requests/${carolRequest.id}/approve`, {});
  expect(decisionWithoutStepUp.status).toBe(403);
  expect(decisionWithoutStepUp.json.error).toBe('step_up_required');
  await bob.getByTestId('tab-admin').click();
  await bob.getByTestId('role-request').filter({ hasText: 'carol' }).getByRole('button', { name: 'Approve' }).click();
  await expect(bob.getByTestId('admin-message')).toContainText('approved');
  await expect(bob.locator('[data-testid="user-row"][data-user="carol"] [data-testid="user-roles"]')).toHaveText('operator, auditor');
  await bob.getByTestId('role-request').filter({ hasText: 'dave' }).getByRole('button', { name: 'Approve' }).click();
  await expect(bob.locator('[data-testid="user-row"][data-user="dave"] [data-testid="user-roles"]')).toHaveText('auditor');
  await expect(bob.getByTestId('role-request')).toHaveCount(0);
  // The decisions are in the audit log, with who decided on whom.
  const approved = relay.auditRecords().filter((r) => r.kind === 'role.change_approved');
  expect(approved.filter((r) => r.actor === 'bob').map((r) => r.subject)).toEqual(expect.arrayContaining(['carol', 'dave']));
  expect(relay.auditRecords().map((r) => r.kind)).toContain('role.change_denied');
});

/** One passkey login attempt in `page`, with the assertion's signature corrupted when `tamper`. */
async function loginAttempt(page: Page, name: string, tamper: boolean): Promise<{ status: number; retryAfter: number | null }> {
  return page.evaluate(async ([n, t]) => {
    const start = await fetch('/api/login/start', { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ name: n }) });
    if (!start.ok) return { status: start.status, retryAfter: Number(start.headers.get('retry-after')) || null };
    const { ceremony_id, options } = await start.json();
    const cred = await navigator.credentials.get({ publicKey: PublicKeyCredential.parseRequestOptionsFromJSON(options.publicKey) }) as PublicKeyCredential;
    const json = (cred as any).toJSON();
    if (t) {
      const sig: string = json.response.signature;
      json.response.signature = (sig[5] === 'A' ? 'B' : 'A') + sig.slice(1, 5) + (sig[5] === 'A' ? 'B' : 'A') + sig.slice(6);
    }
    const finish = await fetch('/api/login/finish', { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ ceremony_id, credential: json }) });
    return { status: finish.status, retryAfter: Number(finish.headers.get('retry-after')) || null };
  }, [name, tamper] as const);
}

test('tampered assertions slow down, then lock the account and the address until an admin unlocks @R15', async ({ browser }) => {
  test.setTimeout(120_000);
  w = await world(browser, { name: 'locked-desk' });
  const op = w.operator;
  await op.getByTestId('logout').click();
  const statuses: number[] = [];
  let throttled = 0;
  for (let i = 0; i < 20; i++) {
    const r = await loginAttempt(op, 'operator', true);
    statuses.push(r.status);
    if (r.status === 423) break;
    if (r.status === 429) {
      throttled++;
      await op.waitForTimeout((r.retryAfter ?? 1) * 1000 + 100);
    }
  }
  expect(statuses.slice(0, 3)).toEqual([401, 401, 401]);
  expect(throttled, `statuses: ${statuses}`).toBeGreaterThan(0);
  expect(statuses[statuses.length - 1], `statuses: ${statuses}`).toBe(423);
  // Locked means locked: the genuine passkey is refused too.
  expect((await loginAttempt(op, 'operator', false)).status).toBe(423);
  // The admin sees both locks and lifts them; the genuine login works again.
  await w.admin.getByTestId('tab-admin').click();
  await expect(w.admin.getByTestId('lock-row')).toHaveCount(2);
  for (let i = 0; i < 2; i++) {
    await w.admin.getByTestId('lock-row').first().getByRole('button', { name: 'Unlock' }).click();
    await expect(w.admin.getByTestId('lock-row')).toHaveCount(1 - i);
  }
  expect((await loginAttempt(op, 'operator', false)).status).toBe(200);
  const kinds = w.relay.auditRecords().map((r) => r.kind);
  expect(kinds).toContain('auth.locked');
  expect(kinds).toContain('auth.unlocked');
});

/** The parts of a passkey a virtual authenticator holds (CDP `WebAuthn.Credential`). */
interface HeldPasskey { credentialId: string; privateKey: string; userHandle: string; signCount: number }

const b64url = (b: Buffer): string => b.toString('base64url');
const sha256 = (b: Buffer | string): Buffer => crypto.createHash('sha256').update(b).digest();

/**
 * Signs in as `name` with an assertion made here from the passkey's own private key, with the
 * authenticator data's user-verified flag as `verified`: what an authenticator that does not
 * verify its user (or a tampering client) would send. Returns the relay's status.
 */
async function assertWith(relay: Relay, name: string, passkey: HeldPasskey, verified: boolean): Promise<number> {
  const origin = relay.url;
  const headers = { 'content-type': 'application/json', origin };
  const start = await fetch(`${origin}/api/login/start`, { method: 'POST', headers, body: JSON.stringify({ name }) });
  expect(start.status).toBe(200);
  const { ceremony_id, options } = await start.json();
  const clientData = Buffer.from(JSON.stringify({ type: 'webauthn.get', challenge: options.publicKey.challenge, origin, crossOrigin: false }));
  const counter = Buffer.alloc(4);
  counter.writeUInt32BE(passkey.signCount + 1);
  // Flags: user present, and user verified only when `verified`.
  const authData = Buffer.concat([sha256(options.publicKey.rpId), Buffer.from([0x01 | (verified ? 0x04 : 0)]), counter]);
  const key = crypto.createPrivateKey({ key: Buffer.from(passkey.privateKey, 'base64'), format: 'der', type: 'pkcs8' });
  const signature = crypto.sign('sha256', Buffer.concat([authData, sha256(clientData)]), key);
  const id = b64url(Buffer.from(passkey.credentialId, 'base64'));
  const credential = {
    id,
    rawId: id,
    type: 'public-key',
    response: { authenticatorData: b64url(authData), clientDataJSON: b64url(clientData), signature: b64url(signature), userHandle: b64url(Buffer.from(passkey.userHandle, 'base64')) },
    clientExtensionResults: {},
  };
  const finish = await fetch(`${origin}/api/login/finish`, { method: 'POST', headers, body: JSON.stringify({ ceremony_id, credential }) });
  return finish.status;
}

test('an assertion without user verification is refused though its signature is genuine; the same assertion with it signs in @R11 @hardening', async ({ browser }) => {
  w = await world(browser, { name: 'uv-desk' });
  const invite = await api(w.admin, 'POST', '/api/admin/invitations', { name: 'vera', role: 'operator' });
  expect(invite.status, JSON.stringify(invite.json)).toBe(200);
  const { page, cdp, authenticatorId } = await contextWithPasskeys(browser);
  await enrolFromLink(page, invite.json.link);
  // The passkey vera registered, private key included (a virtual authenticator lets a test read it).
  const { credentials } = await cdp.send('WebAuthn.getCredentials', { authenticatorId });
  expect(credentials).toHaveLength(1);
  const passkey = credentials[0] as HeldPasskey;
  const records = () => w!.relay.auditRecords().filter((r) => r.actor === 'vera');
  const logins = () => records().filter((r) => r.kind === 'auth.login').length;
  const before = logins();

  expect(await assertWith(w.relay, 'vera', passkey, false)).toBe(401);
  // A refusal's record is not awaited before the answer (only what it refuses is), so poll.
  await expect.poll(() => records().filter((r) => r.kind === 'auth.login_failed').length).toBe(1);
  const failed = records().filter((r) => r.kind === 'auth.login_failed');
  expect(failed[0].outcome).toBe('failure');
  expect(failed[0].detail).toContain('user verified bit is not set');
  expect(logins()).toBe(before);
  // Control: the same key, challenge flow and counter, with the flag set, signs in (so the probe
  // was refused for the flag alone).
  expect(await assertWith(w.relay, 'vera', passkey, true)).toBe(200);
  expect(logins()).toBe(before + 1);
});

test('an admin revokes the sessions of a user: the cookie is refused at once, the live session ends and is recorded as the operator lost, and the user can sign in again @R17 @R22', async ({ browser }) => {
  w = await world(browser, { name: 'revoked-desk' });
  await openView(w.operator, w.relay, 'revoked-desk', w.endpoint);
  // Control: the operator's cookie works before.
  expect((await api(w.operator, 'GET', '/api/me')).status).toBe(200);
  const users = await api(w.admin, 'GET', '/api/admin/users');
  const operator = (users.json as { id: string; name: string }[]).find((u) => u.name === 'operator')!;
  expect((await api(w.admin, 'POST', `/api/admin/users/${operator.id}/revoke-sessions`)).status).toBe(204);

  expect((await api(w.operator, 'GET', '/api/me')).status).toBe(401);
  // The operator's socket closed, so the session ended on the endpoint and in the record.
  await w.endpoint.windowGone();
  await expect.poll(() => w!.relay.auditRecords().filter((r) => r.kind === 'session.ended').map((r) => r.detail.split(';')[0]))
    .toEqual(["the operator's connection was lost"]);
  const revoked = w.relay.auditRecords().filter((r) => r.kind === 'auth.sessions_revoked');
  expect(revoked.map((r) => [r.actor, r.subject])).toEqual([['admin', 'operator']]);

  // A new sign-in right after the revocation is a new session, which stands.
  await signIn(w.operator, w.relay, 'operator');
  expect((await api(w.operator, 'GET', '/api/me')).status).toBe(200);
});

test('two relays on one Redis: logout on node A refuses the cookie on node B at once and closes its socket @R17', async ({ browser }) => {
  const redis = await RedisServer.start();
  extra.push(redis);
  const portA = await (await import('./harness')).freePort();
  const publicUrl = `http://localhost:${portA}/`;
  const nodeA = await Relay.start({ port: portA, redis: redis.url(), publicUrl, node: 'node-a' });
  const nodeB = await Relay.start({ redis: redis.url(), publicUrl, node: 'node-b' });
  extra.push(nodeA.proc, nodeB.proc);

  const { page: admin } = await contextWithPasskeys(browser);
  // Each fresh node replaces the bootstrap link; the latest one printed is the valid one.
  await enrolFromLink(admin, nodeB.bootstrapLink(), 'admin');
  const operator = await inviteAndEnrol(browser, admin, 'operator', 'operator');
  const cookie = (await operator.context().cookies()).find((c) => c.name === 'sightline_session')!;
  expect(cookie.httpOnly).toBe(true);
  expect(cookie.secure).toBe(true);
  expect(cookie.sameSite).toBe('Strict');

  const asOperator = await playwrightRequest.newContext({ extraHTTPHeaders: { cookie: `sightline_session=${cookie.value}` } });
  expect((await asOperator.get(`http://127.0.0.1:${nodeB.port}/api/me`)).status()).toBe(200);
  // A viewer socket on node B with the operator's cookie, from a page of the public origin (node A's).
  const probe = await socketProbe(browser, cookie, publicUrl, `ws://localhost:${nodeB.port}/ws/viewer`);
  await expect.poll(() => probe.state()).toBe('open');

  await operator.getByTestId('logout').click();
  await expect(operator.locator('input[name="username"]')).toBeVisible();
  expect((await asOperator.get(`http://127.0.0.1:${nodeB.port}/api/me`)).status()).toBe(401);
  expect((await asOperator.get(`http://127.0.0.1:${nodeA.port}/api/me`)).status()).toBe(401);
  await expect.poll(() => probe.state(), { timeout: 3_000 }).toBe('closed');
  await asOperator.dispose();
  await probe.close();
});

test('a revoked agent cannot connect, and an enrolment token works once @R18', async ({ browser }) => {
  w = await world(browser, { name: 'teller-3' });
  await expect(w.operator.getByTestId('agent-row').filter({ hasText: 'teller-3' })).toBeVisible();

  // Reusing the enrolment token is refused.
  const token = (await api(w.admin, 'POST', '/api/admin/agent-tokens', { segment: 'office' })).json.token;
  enrolAgent(w.relay, token, 'teller-4');
  expect(() => enrolAgent(w!.relay, token, 'teller-5')).toThrow(/unknown or was already used/);

  // Revoking the device drops it at once, and it stays out.
  await w.admin.getByTestId('tab-admin').click();
  await w.admin.locator('[data-testid="device-row"][data-device="teller-3"]').getByRole('button', { name: 'Revoke' }).click();
  await expect(w.admin.locator('[data-testid="device-row"][data-device="teller-3"]')).toContainText('revoked');
  await expect(w.operator.getByTestId('agent-row').filter({ hasText: 'teller-3' })).toHaveCount(0);
  await expect.poll(() => w!.agent.log(), { timeout: 15_000 }).toContain('refused this device: this device was revoked');

  // A key that was never enrolled is refused too.
  const stranger = tempDir('agent');
  const fs = await import('node:fs');
  fs.cpSync(w.agentDir, stranger, { recursive: true });
  const info = JSON.parse(fs.readFileSync(`${stranger}/device.json`, 'utf8'));
  info.device_id = 'ffffffffffffffffffffffff';
  fs.writeFileSync(`${stranger}/device.json`, JSON.stringify(info));
  const impostor: Proc = startAgent(w.relay, { name: 'impostor', dataDir: stranger });
  extra.push(impostor);
  await expect.poll(() => impostor.log(), { timeout: 15_000 }).toContain('unknown device');
});

test('a reinstalled endpoint takes a new key for the same device only with an admin token; both keys are on the record and consent is checked against the new one @R18 @R39', async ({ browser }) => {
  const fs = await import('node:fs');
  w = await world(browser, { name: 'teller-7' });
  await expect(w.operator.getByTestId('agent-row').filter({ hasText: 'teller-7' })).toBeVisible();
  const deviceId = JSON.parse(fs.readFileSync(`${w.agentDir}/device.json`, 'utf8')).device_id as string;
  const keyIn = (detail: string) => /; key ed25519:([0-9a-f]{64})/.exec(detail)?.[1];
  const enrolled = w.relay.auditRecords().find((r) => r.kind === 'device.enrolled' && r.actor === `device:${deviceId}`)!;
  const oldKey = keyIn(enrolled.detail)!;

  // The admin asks for a token for a new key (a passkey step-up); the running agent's link goes.
  await w.admin.getByTestId('tab-admin').click();
  await w.admin.locator('[data-testid="device-row"][data-device="teller-7"]').getByTestId('device-rekey').click();
  const token = (await w.admin.getByTestId('agent-token').textContent())!.trim();
  expect(token).toMatch(/^sl_/);
  // The reinstalled endpoint enrols with it: same device, new key, and the old key is out.
  await w.agent.kill();
  const reinstalled = enrolAgent(w.relay, token, 'teller-7');
  expect(JSON.parse(fs.readFileSync(`${reinstalled}/device.json`, 'utf8')).device_id).toBe(deviceId);
  const changed = w.relay.auditRecords().filter((r) => r.kind === 'device.key_changed');
  expect(changed).toHaveLength(1);
  expect(changed[0].actor).toBe(`device:${deviceId}`);
  const newKey = keyIn(changed[0].detail)!;
  expect(newKey).not.toBe(oldKey);
  expect(changed[0].detail).toContain(`replaces ed25519:${oldKey}`);
  expect(changed[0].detail).toMatch(/created by admin$/);
  const stepUp = w.relay.auditRecords().find((r) => r.kind === 'auth.step_up' && r.actor === 'admin');
  expect(stepUp, 'the admin stepped up first').toBeDefined();

  const old: Proc = startAgent(w.relay, { name: 'teller-7-old', dataDir: w.agentDir });
  extra.push(old);
  await expect.poll(() => old.log(), { timeout: 15_000 }).toContain('signature does not match the enrolled key');
  w.agent = startAgent(w.relay, { name: 'teller-7', display: w.xvfb!.display, dataDir: reinstalled });
  // A session on the new key: its signed consent checks out against the key the record gave it.
  await openView(w.operator, w.relay, 'teller-7', w.endpoint);
  await w.operator.getByTestId('end-session').click();
  const pinned = w.relay.pinnedKey();
  // The old key's agent keeps trying (each try a record): the log verifies once a checkpoint
  // covers its tail, so the check is repeated until one does.
  let receipts = relayCli(['audit', 'verify', '--dir', w.relay.auditDir, '--key', pinned, '--receipts']);
  await expect.poll(() => (receipts = relayCli(['audit', 'verify', '--dir', w!.relay.auditDir, '--key', pinned, '--receipts'])).status, { timeout: 10_000 }).toBe(0);
  expect(receipts.stdout).toMatch(/OK receipts: [1-9]\d* signed receipts of 1 devices, each by the device's key on record/);
});

test('people see their own sessions (browser, address, started, last active) and end one, or all but the one in hand, on the spot @R17 @hardening', async ({ browser }) => {
  const relay = await Relay.start();
  extra.push(relay.proc);
  const { page, context } = await contextWithPasskeys(browser);
  const cookie = async () => (await context.cookies()).find((c) => c.name === 'sightline_session')!.value;
  // Three sessions of one person: the enrolment's, and two later sign-ins (the cookie of each
  // kept, as another browser would hold it), listed newest first by their start (to the ms).
  await enrolFromLink(page, relay.bootstrapLink(), 'admin');
  const oldest = await cookie();
  await context.clearCookies();
  await signIn(page, relay, 'admin');
  const middle = await cookie();
  await context.clearCookies();
  await signIn(page, relay, 'admin');
  const as = async (value: string) => playwrightRequest.newContext({ extraHTTPHeaders: { cookie: `sightline_session=${value}` } });
  const status = async (value: string) => (await (await as(value)).get(`http://127.0.0.1:${relay.port}/api/me`)).status();
  expect([await status(oldest), await status(middle)]).toEqual([200, 200]);

  await page.getByTestId('tab-sign-ins').click();
  const rows = page.getByTestId('own-session');
  await expect(rows).toHaveCount(3);
  await expect(rows.first()).toHaveAttribute('data-current', 'true');
  await expect(rows.first()).toContainText('(this one)');
  for (const row of await rows.all()) {
    await expect(row).toContainText('127.0.0.1');
    await expect(row).toContainText('Chrome');
  }
  // The oldest (last row): it ends, the middle one is untouched.
  await rows.last().getByRole('button', { name: 'End', exact: true }).click();
  await expect(rows).toHaveCount(2);
  expect([await status(oldest), await status(middle)]).toEqual([401, 200]);
  // All others: the middle one ends, the one in hand stays.
  await page.getByTestId('end-other-sessions').click();
  await expect(page.getByTestId('own-sessions-notice')).toHaveText('Ended 1 session(s).');
  await expect(rows).toHaveCount(1);
  expect(await status(middle)).toBe(401);
  expect((await api(page, 'GET', '/api/me')).status).toBe(200);
  const ended = relay.auditRecords().filter((r) => r.kind === 'auth.sessions_revoked');
  expect(ended.map((r) => [r.actor, r.subject, r.source])).toEqual([['admin', 'admin', '127.0.0.1'], ['admin', 'admin', '127.0.0.1']]);
  expect(ended.every((r) => /^own session [0-9a-f]{16} ended by its owner \(signed in from 127\.0\.0\.1\)$/.test(r.detail))).toBe(true);
  // Another person's session cannot be ended this way: its id is not found, and it keeps working.
  const olga = await inviteAndEnrol(browser, page, 'olga', 'operator');
  const theirs = (await api(olga, 'GET', '/api/me/sessions')).json.sessions as { id: string }[];
  expect(theirs).toHaveLength(1);
  expect((await api(page, 'POST', `/api/me/sessions/${theirs[0].id}/end`)).status).toBe(404);
  expect((await api(olga, 'GET', '/api/me')).status).toBe(200);
  // Control: its owner can.
  expect((await api(olga, 'POST', `/api/me/sessions/${theirs[0].id}/end`)).json).toEqual({ ended: 1 });
  expect((await api(olga, 'GET', '/api/me')).status).toBe(401);
});
