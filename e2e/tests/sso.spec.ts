// Sign-in through the organisation's identity provider (R12), against a real OpenID provider
// (npm oidc-provider 9) on loopback: the provider says who the person is, the passkey proves it
// to the relay, directory groups give roles and take them away, and the provider's logout ends
// the person's sessions on every node.
import { expect, request as playwrightRequest } from '@playwright/test';
import {
  OidcProvider, Proc, RedisServer, Relay, TokenTamper, api, contextWithPasskeys, enrolAgent, Endpoint, freePort, openView,
  recordMeasurement, signInThroughProvider, socketProbe, startAgent, test, throughProvider, Xvfb, enrolFromLink,
  inviteAndEnrol, stepUp, signOutOfDirectory, requestView, rawObserve,
} from './harness';

const stopped: { kill(): Promise<void> }[] = [];
test.afterEach(async () => {
  for (const p of stopped.splice(0)) await p.kill().catch(() => undefined);
});

/** A provider and a relay that trusts it (`ops` -> operator, `sec` -> observer). */
async function directory(accounts: Record<string, { groups: string[] }>, sso: { local?: 'allow' | 'forbid'; recheckS?: number } = {}): Promise<{ idp: OidcProvider; relay: Relay }> {
  const port = await freePort();
  const idp = await OidcProvider.start([`http://localhost:${port}/`], accounts);
  stopped.push(idp.proc);
  const relay = await Relay.start({ port, args: ['--sso-config', idp.ssoFile(sso)] });
  stopped.push(relay.proc);
  return { idp, relay };
}

function records(relay: Relay, kind: string) {
  return relay.auditRecords().filter((r) => r.kind === kind);
}

/** The refusal reasons on record, in order. */
function refusals(relay: Relay): string[] {
  return records(relay, 'auth.directory_refused').map((r) => /^reason=(\S+)/.exec(r.detail)![1]);
}

test('the first sign-in through the provider enrols a passkey bound to the directory identity; every later one needs the provider and that passkey; groups give roles @R12 @R11', async ({ browser }) => {
  const { idp, relay } = await directory({ alice: { groups: ['ops', 'staff'] }, bob: { groups: ['sales'] } });
  const { page } = await contextWithPasskeys(browser);

  await signInThroughProvider(page, relay, 'alice');
  const me = await api(page, 'GET', '/api/me');
  expect(me.json.user.roles).toEqual(['operator']);
  expect(me.json.capabilities).toContain('view_sessions');
  expect(me.json.capabilities).not.toContain('administer');
  const [verified] = records(relay, 'auth.directory_verified');
  expect(verified.subject).toBe('corp');
  expect(verified.detail).toContain('subject=alice groups=[ops,staff] roles=operator next=enrol_passkey');
  const enrolled = records(relay, 'user.enrolled').at(-1)!;
  expect([enrolled.actor, enrolled.outcome]).toEqual(['alice', 'success']);
  expect(enrolled.detail).toContain(`issuer=http://127.0.0.1:`);
  expect(enrolled.detail).toContain('subject=alice');
  expect(records(relay, 'auth.login').map((r) => [r.actor, r.detail])).toEqual([['alice', 'directory corp then passkey with user verification']]);

  // Signing out goes on to the provider's logout (RP-initiated), which ends its session too: the
  // next sign-in asks for the provider's login again.
  await signOutOfDirectory(page, relay, idp, true);
  expect((await api(page, 'GET', '/api/me')).status).toBe(401);
  // The provider's back-channel logout follows; the next sign-in, right after it, stands.
  await expect.poll(() => records(relay, 'auth.backchannel_logout').length).toBe(1);
  await page.getByTestId('sso-start').click();
  await expect(page.locator('input[name="login"]')).toBeVisible();
  await page.goto(relay.url);
  // A directory account never signs in by name and passkey alone.
  expect((await api(page, 'POST', '/api/login/start', { name: 'alice' })).status).toBe(401);
  await expect.poll(() => records(relay, 'auth.login_failed').map((r) => [r.actor, r.source])).toEqual([['unknown', '127.0.0.1']]);

  // The second time: the provider, then the passkey enrolled the first time (an assertion).
  await signInThroughProvider(page, relay, 'alice');
  expect(records(relay, 'auth.directory_verified').at(-1)!.detail).toContain('next=passkey');
  expect(records(relay, 'auth.login')).toHaveLength(2);
  expect(records(relay, 'user.enrolled').filter((r) => r.actor === 'alice')).toHaveLength(1);

  // The provider alone is not enough: a browser without alice's passkey stops at the passkey.
  const { page: stranger } = await contextWithPasskeys(browser);
  await throughProvider(stranger, relay, 'alice');
  await stranger.getByTestId('sso-passkey').click();
  await expect(stranger.getByTestId('login-notice')).toContainText('Sign-in not completed');
  expect((await api(stranger, 'GET', '/api/me')).status).toBe(401);

  // A person whose groups map to no role gets nothing, and the refusal is on record.
  const { page: bobPage } = await contextWithPasskeys(browser);
  await throughProvider(bobPage, relay, 'bob');
  await expect(bobPage.getByTestId('login-notice')).toContainText('none of your directory groups');
  expect((await api(bobPage, 'GET', '/api/me')).status).toBe(401);
  const refused = records(relay, 'auth.directory_refused').at(-1)!;
  expect([refused.actor, refused.subject, refused.outcome]).toEqual(['bob', 'corp', 'failure']);
  expect(refused.detail).toBe('reason=no_mapped_group groups [sales] map to no role');
});

test('ID tokens with another audience, expired, with a replayed nonce, unsigned or signed with a key the provider does not publish, and a forged state, are each refused and recorded @R12', async ({ browser }) => {
  const { idp, relay } = await directory({ alice: { groups: ['ops'] } });
  const { page } = await contextWithPasskeys(browser);
  // Control, and the genuine token the replay will reuse.
  await signInThroughProvider(page, relay, 'alice');
  // Signed out of the relay only: the provider's session stays (its question is left open).
  await signOutOfDirectory(page, relay, idp, false);
  await page.goto(relay.url);
  expect((await api(page, 'GET', '/api/me')).status).toBe(401);

  const cases: [TokenTamper, string][] = [
    ['aud', 'wrong_audience'], ['expired', 'expired'], ['nonce-replay', 'nonce_replay'], ['unsigned', 'unsigned'], ['foreign-key', 'unknown_key'],
  ];
  for (const [mode, reason] of cases) {
    await idp.tamper(mode);
    await throughProvider(page, relay, 'alice');
    await expect(page.getByTestId('login-notice'), mode).toContainText("did not pass the relay's checks");
    expect((await api(page, 'GET', '/api/me')).status, mode).toBe(401);
    expect(refusals(relay).at(-1), mode).toBe(reason);
  }
  // A state this relay never issued (a forged or replayed callback).
  await page.goto(`${relay.url}/api/sso/corp/callback?code=stolen-code&state=forged-state`);
  await expect(page.getByTestId('login-notice')).toContainText('did not start in this browser');
  expect(refusals(relay)).toEqual([...cases.map(([, r]) => r), 'bad_state']);
  for (const r of records(relay, 'auth.directory_refused')) expect([r.subject, r.source, r.outcome]).toEqual(['corp', '127.0.0.1', 'failure']);

  // Control: the same browser, provider and person pass once the tokens are genuine again.
  await idp.tamper(null);
  await signInThroughProvider(page, relay, 'alice');
  expect(records(relay, 'auth.login')).toHaveLength(2);
});

test('removing the group at the provider takes the role away within the re-read period and ends the live session that needed it @R12 @R22', async ({ browser }) => {
  test.setTimeout(240_000);
  const { idp, relay } = await directory({ alice: { groups: ['ops'] } }, { recheckS: 60 });
  // An admin (invited accounts still work beside the directory) enrols an agent.
  const { page: admin } = await contextWithPasskeys(browser);
  await enrolFromLink(admin, relay.bootstrapLink(), 'admin');
  const token = await api(admin, 'POST', '/api/admin/agent-tokens', { segment: 'office' });
  const xvfb = await Xvfb.start(1280, 720);
  stopped.push(xvfb.proc);
  const agentDir = enrolAgent(relay, token.json.token, 'sso-desk');
  let agent: Proc | undefined = startAgent(relay, { name: 'sso-desk', display: xvfb.display, dataDir: agentDir });
  stopped.push(agent);
  const endpoint = new Endpoint(xvfb.display, () => agent!.log());

  const { page } = await contextWithPasskeys(browser);
  await signInThroughProvider(page, relay, 'alice');
  await openView(page, relay, 'sso-desk', endpoint);

  const removed = Date.now();
  await idp.setGroups('alice', ['sales']);
  await endpoint.windowGone(120_000);
  const ended = Date.now();
  const changed = records(relay, 'role.directory_changed').at(-1)!;
  expect([changed.actor, changed.subject]).toEqual(['directory', 'alice']);
  expect(changed.detail).toBe('on groups re-read: lost operator gained none now none');
  expect(records(relay, 'session.ended').map((r) => r.detail.split(';')[0])).toEqual(["the operator's connection was lost"]);
  expect((await api(page, 'GET', '/api/me')).status).toBe(401);
  // Signing in again through the provider is refused now: no group gives a role.
  await throughProvider(page, relay, 'alice');
  await expect(page.getByTestId('login-notice')).toContainText('none of your directory groups');
  recordMeasurement('sso-group-removal', `group removed at the provider -> live session ended: ${((ended - removed) / 1000).toFixed(1)} s (re-read every 60 s)`, { removal_to_end_ms: ended - removed });
  agent = undefined;
});

test('back-channel logout from the provider ends the sessions of the person on both nodes of a two-relay setup @R12 @R17', async ({ browser }) => {
  const redis = await RedisServer.start();
  stopped.push(redis);
  const portA = await freePort();
  const publicUrl = `http://localhost:${portA}/`;
  const idp = await OidcProvider.start([publicUrl], { alice: { groups: ['ops'] } });
  stopped.push(idp.proc);
  const sso = idp.ssoFile();
  const nodeA = await Relay.start({ port: portA, redis: redis.url(), publicUrl, node: 'node-a', args: ['--sso-config', sso] });
  const nodeB = await Relay.start({ redis: redis.url(), publicUrl, node: 'node-b', args: ['--sso-config', sso] });
  stopped.push(nodeA.proc, nodeB.proc);

  const { page, context } = await contextWithPasskeys(browser);
  await signInThroughProvider(page, nodeA, 'alice');
  const cookie = (await context.cookies()).find((c) => c.name === 'sightline_session')!;
  const asAlice = await playwrightRequest.newContext({ extraHTTPHeaders: { cookie: `sightline_session=${cookie.value}` } });
  expect((await asAlice.get(`http://127.0.0.1:${nodeB.port}/api/me`)).status()).toBe(200);
  const probe = await socketProbe(browser, cookie, publicUrl, `ws://localhost:${nodeB.port}/ws/viewer`);
  await expect.poll(() => probe.state()).toBe('open');

  // The person signs out at the provider, which tells node A; node B hears it through the store.
  await page.goto(`${idp.issuer}/session/end`);
  await page.getByRole('button', { name: 'Yes, sign me out' }).click();
  await expect.poll(() => records(nodeA, 'auth.backchannel_logout').length).toBe(1);
  const [logout] = records(nodeA, 'auth.backchannel_logout');
  expect([logout.actor, logout.subject, logout.source]).toEqual(['directory', 'alice', '127.0.0.1']);
  expect((await asAlice.get(`http://127.0.0.1:${nodeB.port}/api/me`)).status()).toBe(401);
  expect((await asAlice.get(`http://127.0.0.1:${nodeA.port}/api/me`)).status()).toBe(401);
  await expect.poll(() => probe.state(), { timeout: 3_000 }).toBe('closed');

  // A logout token not signed by the provider is refused and recorded; node A keeps its answer.
  const forged = await fetch(`http://127.0.0.1:${nodeA.port}/api/sso/corp/backchannel-logout`, {
    method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: 'logout_token=eyJhbGciOiJub25lIn0.eyJzdWIiOiJhbGljZSJ9.',
  });
  expect(forged.status).toBe(400);
  expect(refusals(nodeA).at(-1)).toBe('algorithm_not_allowed');
  await asAlice.dispose();
});

test('with local accounts forbidden, an invited account with a passkey cannot sign in and its session ends, and no bootstrap link is printed @R12', async ({ browser }) => {
  const port = await freePort();
  const idp = await OidcProvider.start([`http://localhost:${port}/`], { alice: { groups: ['ops'] } });
  stopped.push(idp.proc);
  // Sessions live in Redis, so they outlive the node's restart.
  const redis = await RedisServer.start();
  stopped.push(redis);
  // First with local accounts allowed: an admin enrols from the bootstrap link.
  const before = await Relay.start({ port, redis: redis.url(), args: ['--sso-config', idp.ssoFile({ local: 'allow' })] });
  const { page: admin } = await contextWithPasskeys(browser);
  await enrolFromLink(admin, before.bootstrapLink(), 'admin');
  expect((await api(admin, 'GET', '/api/me')).status).toBe(200);
  await before.proc.kill();
  // Control: the session survives a restart that changes nothing.
  const same = await Relay.start({ port, redis: redis.url(), dataDir: before.dataDir, args: ['--sso-config', idp.ssoFile({ local: 'allow' })] });
  expect((await api(admin, 'GET', '/api/me')).status).toBe(200);
  await same.proc.kill();
  // The same node, now forbidding them.
  const relay = await Relay.start({ port, redis: redis.url(), dataDir: before.dataDir, args: ['--sso-config', idp.ssoFile({ local: 'forbid' })] });
  stopped.push(relay.proc);
  // A fresh node that forbids them prints no bootstrap link (a fresh one that allows them did, above).
  const fresh = await Relay.start({ args: ['--sso-config', idp.ssoFile({ local: 'forbid' })] });
  stopped.push(fresh.proc);
  expect(() => fresh.bootstrapLink()).toThrow('no bootstrap link');
  // Its session from before ends too: the switch holds at once, not at the next sign-in.
  expect((await api(admin, 'GET', '/api/me')).status).toBe(401);
  await admin.goto(relay.url);
  await expect(admin.getByTestId('sso-start')).toBeVisible();
  await expect(admin.locator('input[name="username"]')).toHaveCount(0);
  expect((await api(admin, 'POST', '/api/login/start', { name: 'admin' })).status).toBe(401);
  // Control: the directory sign-in works on the same node.
  const { page } = await contextWithPasskeys(browser);
  await signInThroughProvider(page, relay, 'alice');
});

test('a lost passkey is reset by two admins with step-up: the sessions of the person end, a passkey step begun before fails, and only a sign-in at the provider enrols a new one @R12 @R11 @R14', async ({ browser }) => {
  const { relay } = await directory({ carol: { groups: ['ops'] } });
  const { page: alice } = await contextWithPasskeys(browser);
  await enrolFromLink(alice, relay.bootstrapLink(), 'alice');
  const bob = await inviteAndEnrol(browser, alice, 'bob', 'admin');
  const { page: carol, context: carolContext } = await contextWithPasskeys(browser);
  await signInThroughProvider(carol, relay, 'carol');
  const users = (await api(alice, 'GET', '/api/admin/users')).json as { id: string; name: string; passkeys: number; directory: string | null }[];
  const carolRow = users.find((u) => u.name === 'carol')!;
  expect([carolRow.passkeys, carolRow.directory]).toEqual([1, 'corp']);
  // Carol's session as it stands, kept aside; her browser then begins a new passkey step.
  const session = (await carolContext.cookies()).find((c) => c.name === 'sightline_session')!;
  const asCarol = await playwrightRequest.newContext({ extraHTTPHeaders: { cookie: `sightline_session=${session.value}` } });
  const me = () => asCarol.get(`${relay.url}/api/me`).then((r) => r.status());
  await carolContext.clearCookies();
  await throughProvider(carol, relay, 'carol');
  const pending = await carol.evaluate(async () => (await fetch('/api/sso/continue', { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{}' })).json());
  expect(pending.kind).toBe('login');

  // A local account has no provider to enrol through: its reset is refused and recorded.
  const bobId = users.find((u) => u.name === 'bob')!.id;
  const local = await api(alice, 'POST', '/api/admin/passkey-resets', { user_id: bobId });
  expect([local.status, local.json.message]).toEqual([403, expect.stringContaining('only directory accounts')]);
  const denied = () => records(relay, 'user.passkey_reset_denied').map((r) => [r.actor, r.subject]);
  await expect.poll(denied).toEqual([['alice', 'bob']]);
  // Without a fresh passkey confirmation the request is refused.
  expect((await api(alice, 'POST', '/api/admin/passkey-resets', { user_id: carolRow.id })).json.error).toBe('step_up_required');

  // Alice asks (the page confirms with her passkey); the request alone changes nothing.
  await alice.getByTestId('tab-admin').click();
  await expect(alice.getByTestId('user-row').filter({ hasText: 'carol' }).getByTestId('user-sign-in')).toHaveText('through corp, then passkey');
  await alice.getByTestId('passkey-reset-form').locator('select[name="reset-user"]').selectOption({ label: 'carol' });
  await alice.getByTestId('passkey-reset-form').getByRole('button', { name: 'Request reset' }).click();
  await expect(alice.getByTestId('passkey-reset-message')).toContainText('second admin must approve');
  expect(await me()).toBe(200);
  // She cannot approve her own request.
  await alice.getByTestId('passkey-reset').getByRole('button', { name: 'Approve' }).click();
  await expect(alice.getByTestId('passkey-reset-message')).toContainText('a second admin must approve a passkey reset');
  await expect(alice.getByTestId('passkey-reset-message')).toHaveClass('error');
  await expect.poll(denied).toEqual([['alice', 'bob'], ['alice', 'carol']]);
  expect(await me()).toBe(200);

  // Bob approves, with his own passkey confirmation: carol's passkeys are gone, her session ends.
  const [request] = (await api(bob, 'GET', '/api/admin/passkey-resets')).json as { id: string; target_name: string; requested_by_name: string }[];
  expect([request.target_name, request.requested_by_name]).toEqual(['carol', 'alice']);
  expect((await api(bob, 'POST', `/api/admin/passkey-resets/${request.id}/approve`, {})).json.error).toBe('step_up_required');
  await stepUp(bob);
  expect((await api(bob, 'POST', `/api/admin/passkey-resets/${request.id}/approve`, {})).status).toBe(204);
  await expect.poll(() => records(relay, 'user.passkey_reset_approved').map((r) => [r.actor, r.subject, r.outcome])).toEqual([['bob', 'carol', 'success']]);
  expect(records(relay, 'user.passkey_reset_approved')[0].detail).toContain('requested by alice');
  expect(await me()).toBe(401);
  await asCarol.dispose();

  // The passkey step begun before the reset, finished with the removed passkey, is refused.
  const finish = await carol.evaluate(async (ceremony) => {
    const publicKey = PublicKeyCredential.parseRequestOptionsFromJSON(ceremony.options.publicKey);
    const credential = (await navigator.credentials.get({ publicKey })) as PublicKeyCredential;
    const res = await fetch('/api/login/finish', { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ ceremony_id: ceremony.ceremony_id, credential: credential.toJSON() }) });
    return res.status;
  }, pending);
  expect(finish).toBe(401);
  await expect.poll(() => records(relay, 'auth.login_failed').map((r) => [r.actor, r.detail])).toContainEqual(['carol', 'the passkey was removed from the account']);
  expect((await api(carol, 'GET', '/api/me')).status).toBe(401);

  // Her next sign-in at the provider enrols a new passkey, bound to the same account.
  await signInThroughProvider(carol, relay, 'carol');
  expect(records(relay, 'auth.directory_verified').at(-1)!.detail).toContain('next=enrol_passkey');
  await expect.poll(() => records(relay, 'user.enrolled').filter((r) => r.actor === 'carol').length).toBe(2);
  const after = ((await api(bob, 'GET', '/api/admin/users')).json as { id: string; name: string; passkeys: number }[]).find((u) => u.name === 'carol')!;
  expect([after.id, after.passkeys]).toEqual([carolRow.id, 1]);
});

test('a change of the group to role table needs a step-up and a second admin, holds at once for signed-in people, and a node whose file says otherwise does not start @R12 @R14 @R22', async ({ browser }) => {
  const { idp, relay } = await directory({ alice: { groups: ['ops'] } }, { recheckS: 60 });
  const file = idp.ssoFile({ recheckS: 60 });
  const { page: root } = await contextWithPasskeys(browser);
  await enrolFromLink(root, relay.bootstrapLink(), 'root');
  const bob = await inviteAndEnrol(browser, root, 'bob', 'admin');
  const { page: alice } = await contextWithPasskeys(browser);
  await signInThroughProvider(alice, relay, 'alice');
  expect((await api(alice, 'GET', '/api/me')).json.user.roles).toEqual(['operator']);
  type Listing = { tables: { provider: string; sha256: string; history_sha256: string[]; approved_by_name: string | null; admin_from_directory: boolean }[]; requests: { id: string }[] };
  const listing = async () => (await api(bob, 'GET', '/api/admin/role-mappings')).json as Listing;
  const seeded = (await listing()).tables;
  expect(seeded.map((t) => [t.provider, t.approved_by_name, t.admin_from_directory, t.history_sha256])).toEqual([['corp', null, false, [seeded[0].sha256]]]);

  // Root asks, from the dashboard (confirmed with his passkey), for ops to become observers.
  await root.getByTestId('tab-admin').click();
  const editor = root.locator('textarea[name="role-mapping-corp"]');
  await expect(editor).toHaveValue('ops = operator\nsec = observer\n');
  await editor.fill('ops = observer\nsec = observer\n');
  await root.getByTestId('role-mapping-request').click();
  await expect(root.getByTestId('role-mapping-message')).toContainText('a second admin must approve it');
  const requested = () => records(relay, 'role.mapping_change_requested').map((r) => [r.actor, r.subject, r.outcome]);
  await expect.poll(requested).toEqual([['root', 'corp', 'success']]);
  expect(records(relay, 'role.mapping_change_requested')[0].detail).toContain(`table sha256 ${seeded[0].sha256} -> `);
  // The approver sees what changes, group by group; root cannot approve his own request.
  await expect(root.getByTestId('mapping-change')).toHaveText(['ops: operator → observer']);
  await root.getByTestId('mapping-request').getByRole('button', { name: 'Approve' }).click();
  await expect(root.getByTestId('role-mapping-message')).toContainText('a second admin must approve a change of the role table');
  const denied = () => records(relay, 'role.mapping_change_denied').map((r) => [r.actor, r.subject, r.detail]);
  await expect.poll(denied).toEqual([['root', 'corp', 'a second admin must approve a change of the role table']]);
  // Nothing changed yet: alice is still an operator, and the table in force is the seeded one.
  expect((await api(alice, 'GET', '/api/me')).json.user.roles).toEqual(['operator']);
  expect((await listing()).tables[0].sha256).toBe(seeded[0].sha256);
  // A table past the file's ceiling is refused, with the reason on record.
  const tooMuch = await api(bob, 'POST', '/api/admin/role-mappings', { provider: 'corp', groups: { ops: ['admin'] } });
  expect([tooMuch.status, tooMuch.json.message]).toEqual([403, expect.stringContaining('admin_from_directory = true')]);
  await expect.poll(() => denied().length).toBe(2);
  expect(denied()[1].slice(0, 2)).toEqual(['bob', 'corp']);

  // Bob approves with a fresh step-up: in force on every node at once; alice lost operator, so
  // her session ends at the re-read loop's next tick.
  const [request] = (await listing()).requests;
  expect((await api(bob, 'POST', `/api/admin/role-mappings/${request.id}/approve`, {})).json.error).toBe('step_up_required');
  await stepUp(bob);
  expect((await api(bob, 'POST', `/api/admin/role-mappings/${request.id}/approve`, {})).status).toBe(204);
  const approved = () => records(relay, 'role.mapping_change_approved').map((r) => [r.actor, r.subject, r.outcome]);
  await expect.poll(approved).toEqual([['bob', 'corp', 'success']]);
  expect(records(relay, 'role.mapping_change_approved')[0].detail).toContain('requested by root');
  const inForce = (await listing()).tables[0];
  expect([inForce.approved_by_name, inForce.history_sha256]).toEqual(['bob', [seeded[0].sha256, inForce.sha256]]);
  expect(inForce.sha256).not.toBe(seeded[0].sha256);
  await expect.poll(async () => (await api(alice, 'GET', '/api/me')).status, { timeout: 45_000 }).toBe(401);
  const changed = records(relay, 'role.directory_changed').at(-1)!;
  expect([changed.actor, changed.subject, changed.detail]).toEqual(['directory', 'alice', 'on groups re-read: lost operator gained observer now observer']);
  // Her next sign-in, right after, gets the new table's role.
  await signInThroughProvider(alice, relay, 'alice');
  expect((await api(alice, 'GET', '/api/me')).json.user.roles).toEqual(['observer']);

  // Restarted with the same file: the approved table holds, and the start record names both.
  await relay.proc.kill();
  const again = await Relay.start({ port: relay.port, dataDir: relay.dataDir, args: ['--sso-config', file] });
  const started = JSON.parse(again.auditRecords().filter((r) => r.kind === 'node.started').at(-1)!.detail);
  expect(started.sso.corp).toEqual({ issuer: `${idp.issuer}/`, roles_sha256: inForce.sha256, file_roles_sha256: seeded[0].sha256, admin_from_directory: false });
  await again.proc.kill();
  // A file edited to a table that was never in force stops the node, naming both tables.
  const edited = idp.ssoFile({ recheckS: 60, roles: { ops: ['operator'], sec: ['operator'] } });
  await expect(Relay.start({ port: relay.port, dataDir: relay.dataDir, args: ['--sso-config', edited] })).rejects.toThrow(new RegExp(`was never in force; the table in force is sha256 ${inForce.sha256}`));
  // So does a second provider name for the same directory, which would seed a table of its own.
  const alias = idp.ssoFile({ recheckS: 60, name: 'corp2', roles: { ops: ['admin'] }, adminFromDirectory: true });
  await expect(Relay.start({ port: relay.port, dataDir: relay.dataDir, args: ['--sso-config', alias] })).rejects.toThrow(/already has its table under provider "corp"/);
  // The file brought in line with the approved table starts, and the old one still does (files
  // are updated one node at a time): either way the approved table is in force.
  const caughtUp = idp.ssoFile({ recheckS: 60, roles: { ops: ['observer'], sec: ['observer'] } });
  for (const f of [caughtUp, file]) {
    const node = await Relay.start({ port: relay.port, dataDir: relay.dataDir, args: ['--sso-config', f] });
    const corp = JSON.parse(node.auditRecords().filter((r) => r.kind === 'node.started').at(-1)!.detail).sso.corp;
    expect(corp.roles_sha256).toBe(inForce.sha256);
    await node.proc.kill();
  }
});

test('directory groups narrow the segments operators and observers reach: a request or a join outside them is refused with the reason, and a table that narrows them further ends the live session @R12 @R22 @R21', async ({ browser }) => {
  test.setTimeout(180_000);
  const port = await freePort();
  const idp = await OidcProvider.start([`http://localhost:${port}/`], {
    alice: { groups: ['ops', 'desk-office'] }, dave: { groups: ['ops', 'desk-demo'] }, fay: { groups: ['sec', 'desk-office'] }, erin: { groups: ['sec', 'desk-demo'] },
  });
  stopped.push(idp.proc);
  const roles = { ops: ['operator'], sec: ['observer'] };
  const file = idp.ssoFile({ recheckS: 60, roles, segments: { 'desk-office': ['office'], 'desk-demo': ['demo'] } });
  // A segment the policy does not have stops the node, by name.
  const typo = idp.ssoFile({ roles, segments: { 'desk-office': ['ofice'] } });
  await expect(Relay.start({ args: ['--sso-config', typo] })).rejects.toThrow('group "desk-office" names segment "ofice", which the policy does not have');
  const relay = await Relay.start({ port, args: ['--sso-config', file] });
  stopped.push(relay.proc);
  const { page: root } = await contextWithPasskeys(browser);
  await enrolFromLink(root, relay.bootstrapLink(), 'root');
  const bob = await inviteAndEnrol(browser, root, 'bob', 'admin');
  const token = await api(root, 'POST', '/api/admin/agent-tokens', { segment: 'office' });
  const xvfb = await Xvfb.start(1280, 720);
  stopped.push(xvfb.proc);
  const agentDir = enrolAgent(relay, token.json.token, 'branch-desk');
  const agent = startAgent(relay, { name: 'branch-desk', display: xvfb.display, dataDir: agentDir });
  stopped.push(agent);
  const endpoint = new Endpoint(xvfb.display, () => agent.log());

  // Dave's groups reach the demo segment only: his request for an office device is refused.
  const { page: dave } = await contextWithPasskeys(browser);
  await signInThroughProvider(dave, relay, 'dave');
  await requestView(dave, relay, 'branch-desk');
  await expect(dave.getByTestId('view-state')).toHaveAttribute('data-state', 'ended');
  await expect(dave.getByTestId('view-state')).toContainText('your directory groups do not reach this segment');
  await expect.poll(() => records(relay, 'session.refused').map((r) => [r.actor, r.detail])).toEqual([['dave', 'your directory groups do not reach this segment']]);
  // Control: alice, with the same role, is in the office group, and her session runs.
  const { page: alice } = await contextWithPasskeys(browser);
  await signInThroughProvider(alice, relay, 'alice');
  await openView(alice, relay, 'branch-desk', endpoint);
  // Observers too: fay's groups reach the office segment, so she is listed the session and may
  // join it (the control); erin's do not, so she is listed none, and joining it is refused.
  const { page: fay } = await contextWithPasskeys(browser);
  await signInThroughProvider(fay, relay, 'fay');
  const control = await rawObserve(fay, relay.port);
  expect(control.listed).toHaveLength(1);
  expect(control.answer.type).toBe('session');
  const { page: erin } = await contextWithPasskeys(browser);
  await signInThroughProvider(erin, relay, 'erin');
  const probe = await rawObserve(erin, relay.port, control.listed[0]);
  expect(probe).toEqual({ listed: [], answer: { v: 1, type: 'error', code: 'forbidden', message: "your directory groups do not reach this session's segment" } });

  // Two admins approve a table in which the office group reaches only demo: alice is re-read at
  // the next tick, her segments narrow, and her live session ends.
  await stepUp(root);
  const asked = await api(root, 'POST', '/api/admin/role-mappings', { provider: 'corp', groups: roles, segments: { 'desk-office': ['demo'], 'desk-demo': ['demo'] } });
  expect(asked.status).toBe(200);
  await bob.getByTestId('tab-admin').click();
  await expect(bob.getByTestId('mapping-change')).toHaveText(['desk-office reaches segments: office → demo']);
  await bob.getByTestId('mapping-request').getByRole('button', { name: 'Approve' }).click();
  await expect(bob.getByTestId('role-mapping-message')).toContainText('in force on every node');
  await endpoint.windowGone(60_000);
  // Fay, in the office group too, is narrowed the same way.
  await expect.poll(() => records(relay, 'role.directory_changed').map((r) => [r.subject, r.detail]).filter(([who]) => who === 'alice' || who === 'fay').sort()).toEqual([
    ['alice', 'on groups re-read: lost none gained none now operator; segments [demo]'],
    ['fay', 'on groups re-read: lost none gained none now observer; segments [demo]'],
  ]);
  expect(records(relay, 'auth.sessions_revoked').map((r) => [r.subject, r.detail])).toContainEqual(['alice', 'segments narrowed in the directory to [demo]']);
});
