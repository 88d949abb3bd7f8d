// A real OpenID provider for the SSO tests (R12): npm oidc-provider with its development
// interactions (any login name, any password; the login name is the subject), on a loopback port.
//
//   node provider.mjs CONFIG.json
//
// CONFIG: { "port": N, "clients": [ oidc-provider client metadata ], "accounts": { sub: { "groups": [..] } } }
// It prints "ready <issuer>" once it listens. A control API for the test, on the same port:
//   POST /test/groups  { "sub": "...", "groups": [..] }  the directory changes a person's groups
//   POST /test/tamper  { "mode": "aud" | "expired" | "nonce-replay" | "unsigned" | "foreign-key" | null }
//        the next token responses carry an ID token altered that way (what a broken or hostile
//        provider, or someone in the middle, would hand the relay)
import * as fs from 'node:fs';
import * as crypto from 'node:crypto';
import Provider from 'oidc-provider';
import * as jose from 'jose';

const config = JSON.parse(fs.readFileSync(process.argv[2], 'utf8'));
const issuer = `http://127.0.0.1:${config.port}`;
const accounts = config.accounts ?? {};

const signing = await jose.generateKeyPair('RS256', { extractable: true });
const signingJwk = { ...(await jose.exportJWK(signing.privateKey)), kid: 'provider-key', alg: 'RS256', use: 'sig' };
const foreign = await jose.generateKeyPair('RS256', { extractable: true });

let tamper = null;
let previousIdToken = null;

const provider = new Provider(issuer, {
  clients: config.clients,
  jwks: { keys: [signingJwk] },
  // Groups go into the ID token, as Keycloak's and Entra's group mappers put them.
  conformIdTokenClaims: false,
  claims: { openid: ['sub'], profile: ['preferred_username'], groups: ['groups'] },
  findAccount: async (_ctx, sub) => ({
    accountId: sub,
    claims: async () => ({ sub, preferred_username: sub, groups: accounts[sub]?.groups ?? [] }),
  }),
  features: {
    devInteractions: { enabled: true },
    backchannelLogout: { enabled: true },
    rpInitiatedLogout: { enabled: true },
  },
  // Every grant that may refresh gets a refresh token (the relay re-reads groups with it).
  issueRefreshToken: async (_ctx, client) => client.grantTypeAllowed('refresh_token'),
  ttl: { AccessToken: 120, IdToken: 300, RefreshToken: 3600, Session: 3600, Grant: 3600, Interaction: 600 },
  pkce: { required: () => true },
  // The provider refuses to post to special-use addresses (its SSRF guard); the relay under test
  // listens on loopback, which is the point of the test, so the guard's dispatcher is dropped.
  fetch: (url, options) => {
    const { dispatcher: _guard, ...rest } = options;
    return globalThis.fetch(url, rest);
  },
  cookies: { keys: [crypto.randomBytes(32).toString('hex')] },
});
provider.proxy = false;
// What the provider did about logout, in its log (the test reads the relay's records).
provider.on('backchannel.success', (_ctx, client, accountId) => console.log(`backchannel logout sent to ${client.clientId} for ${accountId}`));
provider.on('backchannel.error', (_ctx, err, client, accountId) => console.log(`backchannel logout to ${client.clientId} for ${accountId} failed: ${err} ${err?.cause ?? ""}`));
provider.on('server_error', (_ctx, err) => console.log(`server error: ${err}`));

async function body(ctx) {
  const chunks = [];
  for await (const c of ctx.req) chunks.push(c);
  return JSON.parse(Buffer.concat(chunks).toString('utf8') || '{}');
}

async function altered(idToken) {
  const claims = jose.decodeJwt(idToken);
  const now = Math.floor(Date.now() / 1000);
  const sign = (c, key = signing.privateKey, kid = 'provider-key') =>
    new jose.SignJWT(c).setProtectedHeader({ alg: 'RS256', kid, typ: 'JWT' }).sign(key);
  switch (tamper) {
    case 'aud': return sign({ ...claims, aud: 'another-application' });
    case 'expired': return sign({ ...claims, iat: now - 1200, exp: now - 600 });
    case 'nonce-replay': return previousIdToken ?? idToken;
    case 'unsigned': return new jose.UnsecuredJWT(claims).encode();
    case 'foreign-key': return sign(claims, foreign.privateKey, 'not-the-providers-key');
    default: return idToken;
  }
}

provider.use(async (ctx, next) => {
  if (ctx.path === '/test/groups' && ctx.method === 'POST') {
    const { sub, groups } = await body(ctx);
    accounts[sub] = { ...(accounts[sub] ?? {}), groups };
    ctx.body = { ok: true };
    return;
  }
  if (ctx.path === '/test/tamper' && ctx.method === 'POST') {
    tamper = (await body(ctx)).mode ?? null;
    ctx.body = { ok: true };
    return;
  }
  await next();
  if (ctx.path === '/token' && ctx.body && typeof ctx.body === 'object' && ctx.body.id_token) {
    const genuine = ctx.body.id_token;
    ctx.body = { ...ctx.body, id_token: await altered(genuine) };
    if (!tamper) previousIdToken = genuine;
  }
});

const server = provider.listen(config.port, '127.0.0.1', () => console.log(`ready ${issuer}`));
for (const signal of ['SIGTERM', 'SIGINT']) process.on(signal, () => server.close(() => process.exit(0)));
