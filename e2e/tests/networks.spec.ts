// Networks without UDP (R1, R42). An endpoint whose only way out is an authenticating HTTP proxy
// sends its screen through it (ICE-TCP in a CONNECT tunnel). An operator without UDP gets video
// through TURN over TCP and over TLS, with credentials the relay gives each viewer and coturn
// checks; coturn refuses an expired credential and relays to the relay's media address alone.
//
// The operator's browser is held to TURN with `iceTransportPolicy: "relay"` (forced on every
// peer connection the page makes), and coturn has no UDP listener: the only way its video can
// come is TURN over TCP or TLS.

import { test, expect, chromium, Browser, Page } from '@playwright/test';
import * as fs from 'node:fs';
import { Coturn, ProxyNamespace, Relay, World, chatMarker, echoPeer, enrolAgent, freePort, api, inviteAndEnrol, openView, sampleFrames, startAgent, stopWorld, tempDir, world, worldOn } from './harness';

interface IceServersMessage { type: 'ice_servers'; servers: { urls: string[]; username: string; credential: string }[]; expires_ms: number }

/** Every ICE servers message the page's signaling socket receives, parsed. */
function iceServersOf(page: Page): IceServersMessage[] {
  const seen: IceServersMessage[] = [];
  page.on('websocket', (ws) => ws.on('framereceived', (frame) => {
    if (typeof frame.payload !== 'string') return;
    const msg = JSON.parse(frame.payload);
    if (msg.type === 'ice_servers') seen.push(msg as IceServersMessage);
  }));
  return seen;
}

/** Makes every RTCPeerConnection of the page relay-only, and keeps them for inspection. */
async function forceRelay(page: Page): Promise<void> {
  await page.addInitScript(() => {
    const Native = window.RTCPeerConnection;
    const kept: RTCPeerConnection[] = [];
    (window as any).__pcs = kept;
    const Forced = function (config?: RTCConfiguration) {
      const pc = new Native({ ...(config ?? {}), iceTransportPolicy: 'relay' });
      kept.push(pc);
      return pc;
    } as unknown as typeof RTCPeerConnection;
    Forced.prototype = Native.prototype;
    const setConfiguration = Native.prototype.setConfiguration;
    Native.prototype.setConfiguration = function (config?: RTCConfiguration) {
      return setConfiguration.call(this, { ...(config ?? {}), iceTransportPolicy: 'relay' });
    };
    (window as any).RTCPeerConnection = Forced;
  });
}

/** The selected pair's local candidate of the page's newest peer connection. */
async function selectedLocalCandidate(page: Page): Promise<{ candidateType: string; relayProtocol?: string; protocol: string }> {
  return page.evaluate(async () => {
    const pcs = (window as any).__pcs as RTCPeerConnection[];
    const stats = await pcs[pcs.length - 1].getStats();
    let pairId = '';
    stats.forEach((s: any) => { if (s.type === 'transport' && s.selectedCandidatePairId) pairId = s.selectedCandidatePairId; });
    const pair = stats.get(pairId);
    const local = stats.get(pair.localCandidateId);
    return { candidateType: local.candidateType, relayProtocol: local.relayProtocol, protocol: local.protocol };
  });
}

/** Gathers relay candidates with `server` in the page: what came, and the errors reported. */
async function gather(page: Page, server: { urls: string[]; username: string; credential: string }): Promise<{ relays: number; errors: number[] }> {
  return page.evaluate(async (server) => {
    const pc = new RTCPeerConnection({ iceServers: [server], iceTransportPolicy: 'relay' });
    const errors: number[] = [];
    let relays = 0;
    pc.onicecandidateerror = (e: any) => errors.push(e.errorCode);
    const done = new Promise<void>((resolve) => {
      pc.onicecandidate = (e) => {
        if (e.candidate === null) resolve();
        else if (e.candidate.type === 'relay') relays++;
      };
    });
    pc.createDataChannel('probe');
    await pc.setLocalDescription(await pc.createOffer());
    await done;
    pc.close();
    return { relays, errors };
  }, server);
}

for (const transport of ['tcp', 'tls'] as const) {
  test(`an operator without UDP sees the screen through TURN over ${transport.toUpperCase()} @R42`, async ({ browser: shared, launchOptions }) => {
    test.setTimeout(90_000);
    const coturn = await Coturn.start('127.0.0.1');
    // Chromium checks the TURN server's certificate: this browser trusts the test one (by its
    // key), as a bank's browsers trust its TURN server's.
    let own: Browser | undefined;
    if (transport === 'tls') {
      own = await chromium.launch({ ...launchOptions, args: [...(launchOptions.args ?? []), `--ignore-certificate-errors-spki-list=${coturn.spki()}`] });
    }
    const browser = own ?? shared;
    const url = transport === 'tcp'
      ? `turn:127.0.0.1:${coturn.ports.tcp}?transport=tcp`
      : `turns:127.0.0.1:${coturn.ports.tls}?transport=tcp`;
    let w: World | undefined;
    try {
      // TCP: the shortest lifetime, to see a renewal while the session runs.
      const ttl = transport === 'tcp' ? 30 : 300;
      w = await world(browser, { name: `turn-${transport}` }, { args: ['--turn-url', url, '--turn-secret-file', coturn.secretFile, '--turn-ttl-s', String(ttl)] });
      const servers = iceServersOf(w.operator);
      await forceRelay(w.operator);
      await w.operator.reload();
      await openView(w.operator, w.relay, w.agentName, w.endpoint);
      const frames = await sampleFrames(w.operator, 1500);
      expect(frames.length).toBeGreaterThan(5);
      expect(frames[frames.length - 1].counter).toBeGreaterThan(frames[0].counter);
      expect(await selectedLocalCandidate(w.operator)).toMatchObject({ candidateType: 'relay', relayProtocol: transport });

      // This viewer's credential is its own and short-lived.
      expect(servers.length).toBeGreaterThan(0);
      const given = servers[servers.length - 1];
      expect(given.servers[0].urls).toEqual([url]);
      const [expiry, holder] = given.servers[0].username.split(':');
      expect(Number(expiry) * 1000).toBe(given.expires_ms);
      expect(given.expires_ms - Date.now()).toBeLessThanOrEqual(ttl * 1000);
      expect(given.expires_ms - Date.now()).toBeGreaterThan(0);
      expect(holder).toMatch(/\.\d+$/);
      if (transport === 'tcp') {
        // Halfway through its life the viewer gets a new one, for the same holder, and the
        // session goes on.
        const before = servers.length;
        await expect.poll(() => servers.length, { timeout: 25_000 }).toBeGreaterThan(before);
        const renewed = servers[servers.length - 1];
        expect(renewed.expires_ms).toBeGreaterThan(given.expires_ms);
        expect(renewed.servers[0].username.split(':')[1]).toBe(holder);
        expect(coturn.password(renewed.servers[0].username)).toBe(renewed.servers[0].credential);
        const later = await sampleFrames(w.operator, 1000);
        expect(later[later.length - 1].counter).toBeGreaterThan(later[0].counter);
      }
    } finally {
      await stopWorld(w);
      await coturn.proc.kill();
      await own?.close();
    }
  });
}

test('coturn refuses an expired credential and relays to the relay media address alone @R42', async ({ browser }) => {
  test.setTimeout(90_000);
  const coturn = await Coturn.start('127.0.0.1');
  const url = `turn:127.0.0.1:${coturn.ports.tcp}?transport=tcp`;
  const peer = await echoPeer();
  let w: World | undefined;
  try {
    w = await world(browser, { name: 'turn-rules' }, { args: ['--turn-url', url, '--turn-secret-file', coturn.secretFile] });
    const servers = iceServersOf(w.operator);
    await w.operator.reload();
    await expect.poll(() => servers.length).toBeGreaterThan(0);
    const given = servers[servers.length - 1].servers[0];

    // The relay's credential allocates (the control), the same holder's expired one does not.
    expect(await gather(w.operator, given)).toEqual({ relays: 1, errors: [] });
    const holder = given.username.split(':')[1];
    const expired = `${Math.floor(Date.now() / 1000) - 60}:${holder}`;
    const refused = await gather(w.operator, { urls: [url], username: expired, credential: coturn.password(expired) });
    expect(refused.relays).toBe(0);
    expect(refused.errors).toContain(401);

    // With the valid credential, coturn's own client echoes off the permitted address (the
    // control), and is refused a permission anywhere else: the relay host's other loopback
    // addresses, a private address, link-local and the cloud metadata address.
    expect(coturn.uclient(given.username, given.credential, '127.0.0.1', peer.port)).toEqual({ status: 0, errors: [] });
    for (const denied of ['127.0.0.2', '10.20.30.40', '192.168.1.1', '169.254.169.254']) {
      const r = coturn.uclient(given.username, given.credential, denied, peer.port);
      expect(r.status, denied).not.toBe(0);
      expect(r.errors, denied).toContain(403);
    }
  } finally {
    await stopWorld(w);
    await peer.proc.kill();
    await coturn.proc.kill();
  }
});

test('an endpoint whose only way out is an authenticating proxy: the screen, input and chat go through it, and the record says tcp; a wrong proxy password is named and never connects @R1', async ({ browser }) => {
  test.setTimeout(120_000);
  const mediaTcp = await freePort();
  const relay = await Relay.start({ args: ['--media-tcp-port', String(mediaTcp)] });
  // The proxy tunnels to the relay's HTTPS and media TCP ports, nothing else.
  const ns = await ProxyNamespace.start([relay.port, mediaTcp]);
  let w: World | undefined;
  try {
    w = await worldOn(browser, relay, { name: 'branch-proxy', behindProxy: ns });
    await openView(w.operator, w.relay, w.agentName, w.endpoint);
    const frames = await sampleFrames(w.operator, 1500);
    expect(frames.length).toBeGreaterThan(5);
    expect(frames[frames.length - 1].counter).toBeGreaterThan(frames[0].counter);

    // Input: the operator's pointer reaches the endpoint's X server.
    const box = (await w.operator.locator('video').boundingBox())!;
    await w.operator.mouse.move(box.x + box.width / 2, box.y + box.height / 2);
    await expect.poll(() => Math.abs(w!.endpoint.pointer().x - 640) <= 4 && Math.abs(w!.endpoint.pointer().y - 360) <= 4, { timeout: 10_000 }).toBe(true);
    // Chat: the line crosses the data channel and comes back in the session's log.
    await chatMarker(w.operator, 'through the proxy');

    const paths = relay.auditRecords().filter((r) => r.kind === 'session.media_path');
    expect(paths.length).toBe(1);
    expect(paths[0].detail.split(' ').slice(0, 4)).toEqual(['endpoint', 'media', 'over', 'tcp']);
    // The media came from the proxy's side (this namespace's loopback), not from the endpoint.
    expect(paths[0].source).toBe('127.0.0.1');

    // The control: the same endpoint with a wrong proxy password is told why and never comes online.
    const token = await api(w.admin, 'POST', '/api/admin/agent-tokens', { segment: 'office' });
    const dir = enrolAgent(relay, token.json.token, 'branch-wrong');
    const wrong = { ...ns, credentials: `${tempDir('wrong')}/credentials` } as ProxyNamespace;
    fs.writeFileSync(wrong.credentials, 'teller:not-the-password\n', { mode: 0o600 });
    const refused = startAgent(relay, { name: 'branch-wrong', dataDir: dir, behindProxy: wrong });
    try {
      await expect.poll(() => refused.log(), { timeout: 20_000 }).toMatch(/refused the credentials of "teller" \(40[17]/);
      // It tried and was refused; the device list that shows the proxied endpoint online does
      // not show this one online.
      const devices = (await api(w.admin, 'GET', '/api/admin/devices')).json as { name: string; online: boolean }[];
      expect(devices.filter((d) => d.online).map((d) => d.name)).toEqual(['branch-proxy']);
      expect(devices.map((d) => d.name).sort()).toEqual(['branch-proxy', 'branch-wrong']);
    } finally {
      await refused.kill();
    }
  } finally {
    await stopWorld(w);
    await ns.stop();
  }
});

/** The local ports of `pid`'s sockets in the kernel's `udp`/`tcp` tables (for TCP, listeners
 * only): its descriptors' socket inodes matched against the tables' inode column. */
function socketsOf(pid: number, table: 'udp' | 'tcp'): number[] {
  const inodes = new Set<string>();
  for (const fd of fs.readdirSync(`/proc/${pid}/fd`)) {
    try {
      const m = fs.readlinkSync(`/proc/${pid}/fd/${fd}`).match(/^socket:\[(\d+)\]$/);
      if (m) inodes.add(m[1]);
    } catch { /* closed meanwhile */ }
  }
  const ports: number[] = [];
  for (const file of [table, `${table}6`]) {
    for (const line of fs.readFileSync(`/proc/net/${file}`, 'utf8').split('\n').slice(1)) {
      const f = line.trim().split(/\s+/);
      if (f.length < 10 || !inodes.has(f[9])) continue;
      if (table === 'tcp' && f[3] !== '0A') continue;
      ports.push(parseInt(f[1].split(':')[1], 16));
    }
  }
  return ports.sort((a, b) => a - b);
}

test('one media port: while an operator and two observers watch and the recorder records, the relay holds one UDP socket and one media TCP listener @R42', async ({ browser }) => {
  test.setTimeout(120_000);
  const [udp, tcp] = [await freePort(), await freePort()];
  let w: World | undefined;
  try {
    w = await world(browser, { name: 'one-port' }, { args: ['--media-udp-port', String(udp), '--media-tcp-port', String(tcp)] });
    const observers = [await inviteAndEnrol(browser, w.admin, 'observer1', 'observer'), await inviteAndEnrol(browser, w.admin, 'observer2', 'observer')];
    await openView(w.operator, w.relay, w.agentName, w.endpoint);
    for (const o of observers) {
      await o.getByTestId('session-row').getByTestId('observe').click();
      await expect(o.getByTestId('view-state')).toHaveAttribute('data-state', 'live');
    }
    // Every viewer gets frames (the positive side of the count below).
    for (const page of [w.operator, ...observers]) {
      const frames = await sampleFrames(page, 1000);
      expect(frames[frames.length - 1].counter).toBeGreaterThan(frames[0].counter);
    }
    await expect.poll(() => w!.relay.recordingCli(['list']).stdout.includes('"complete":false')).toBe(true);
    expect(socketsOf(w.relay.proc.pid, 'udp')).toEqual([udp]);
    expect(socketsOf(w.relay.proc.pid, 'tcp')).toEqual([w.relay.port, tcp].sort((a, b) => a - b));
  } finally {
    await stopWorld(w);
  }
});
