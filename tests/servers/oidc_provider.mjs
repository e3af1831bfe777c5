// A real OpenID provider for the console's single sign-on test: the certified `oidc-provider`
// package (npm, MIT, https://github.com/panva/node-oidc-provider) with a small
// configuration, on loopback. tests/run installs it (pinned) into target/oidc-provider and
// points PHIWATCH_OIDC_NODE_MODULES there.
//
//   node oidc_provider.mjs --host 127.0.0.2 --redirect URL --post-logout URL
//
// prints `ready PORT` on standard output once it listens. Any user name signs in with any
// password (the package's development sign-in page); the claims come from USERS below.
//
// What a test needs that no provider does on request, under /__test/ on the same port:
// Back-channel logout is on: signing out at the provider calls --backchannel URL.
//
//   POST /__test/mode?m=forge|expired|aud|nonce  the next ID token from /token is spoiled:
//        signed by a key the provider never published / expired an hour ago / for another
//        client / carrying the nonce of the sign-in before (a replayed nonce);
//   GET  /__test/last-callback   the last redirect the provider sent to the client (code and
//        state), to replay it;
//   POST /__test/groups?user=U&g=G1&g=G2   the user's groups change at the provider (a mover);
//   POST /__test/rotate   a key rotation: a new signing key, published beside the old one,
//        signs from now on (the provider is rebuilt; its sessions end).

import http from 'node:http';
import { createRequire } from 'node:module';
import path from 'node:path';

const modules = process.env.PHIWATCH_OIDC_NODE_MODULES;
if (!modules) {
  console.error('PHIWATCH_OIDC_NODE_MODULES is not set (tests/run installs oidc-provider)');
  process.exit(2);
}
const require = createRequire(path.join(modules, 'index.js'));
const { default: Provider } = await import(require.resolve('oidc-provider'));
const jose = await import(require.resolve('jose'));

function arg(name, fallback) {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? process.argv[i + 1] : fallback;
}
const host = arg('host', '127.0.0.1');
const redirect = arg('redirect');
const postLogout = arg('post-logout');
const backchannel = arg('backchannel');
const clientSecret = arg('secret', 'phiwatch-test-secret');

// Group claims the way Okta sends them (names); Entra ID sends object ids, which are just
// other strings to phiwatch.
const USERS = {
  olivia: { groups: ['Everyone', 'Privacy Office'], employee_id: 'E-1001' },
  audrey: { groups: ['Everyone', 'Internal Audit'], employee_id: 'E-2002' },
  mallory: { groups: ['Everyone', 'Nursing'], employee_id: 'E-3003' },
};

async function signingKey() {
  const { privateKey } = await jose.generateKeyPair('RS256', { extractable: true });
  const jwk = await jose.exportJWK(privateKey);
  return { ...jwk, kid: `k-${Date.now()}-${Math.random().toString(36).slice(2, 8)}`, alg: 'RS256', use: 'sig' };
}

let keys = [await signingKey()];
let mode = null;
let lastCallback = null;
let previousNonce = null;
let lastNonce = null;

function build(issuer) {
  const provider = new Provider(issuer, {
    clients: [{
      client_id: 'phiwatch',
      client_secret: clientSecret,
      redirect_uris: [redirect],
      post_logout_redirect_uris: postLogout ? [postLogout] : [],
      ...(backchannel ? { backchannel_logout_uri: backchannel, backchannel_logout_session_required: true } : {}),
      grant_types: ['authorization_code'],
      response_types: ['code'],
    }],
    jwks: { keys },
    pkce: { required: () => true },
    claims: {
      openid: ['sub'],
      profile: ['preferred_username', 'name'],
      groups: ['groups'],
      employee: ['employee_id'],
    },
    // The claims of the granted scopes go in the ID token itself (as Entra ID and Okta do
    // with a groups claim configured), not only in userinfo.
    conformIdTokenClaims: false,
    features: {
      devInteractions: { enabled: true },
      rpInitiatedLogout: { enabled: true },
      backchannelLogout: { enabled: true },
    },
    // The package refuses to call loopback addresses (its SSRF guard); here the relying
    // party is on loopback by design.
    fetch(url, options) {
      const { dispatcher, ...rest } = options;
      return fetch(url, rest);
    },
    // Consent is granted without asking: the test is about the relying party.
    async loadExistingGrant(ctx) {
      const id = ctx.oidc.result?.consent?.grantId
        || ctx.oidc.session.grantIdFor(ctx.oidc.client.clientId);
      if (id) return ctx.oidc.provider.Grant.find(id);
      const grant = new ctx.oidc.provider.Grant({
        clientId: ctx.oidc.client.clientId,
        accountId: ctx.oidc.session.accountId,
      });
      grant.addOIDCScope('openid profile email groups employee');
      await grant.save();
      return grant;
    },
    async findAccount(ctx, id) {
      const user = USERS[id] ?? { groups: ['Everyone'] };
      return {
        accountId: id,
        async claims() {
          return { sub: id, preferred_username: id, name: id, ...user };
        },
      };
    },
    ttl: { IdToken: 3600, AccessToken: 600, AuthorizationCode: 60, Session: 3600, Grant: 3600, Interaction: 600 },
  });
  provider.use(async (ctx, next) => {
    await next();
    const location = ctx.response.get('location');
    if (location && redirect && location.startsWith(redirect)) lastCallback = location;
    if (ctx.path === '/token' && ctx.body?.id_token) {
      ctx.body = { ...ctx.body, id_token: await spoil(ctx.body.id_token) };
    }
  });
  provider.on('backchannel.error', (ctx, err, client, accountId, sid) => {
    console.error(`back-channel logout of ${accountId} (${sid}) failed: ${err}`);
  });
  provider.on('backchannel.success', (ctx, client, accountId, sid) => {
    console.error(`back-channel logout of ${accountId} (${sid}) delivered`);
  });
  return provider;
}

async function spoil(token) {
  const claims = jose.decodeJwt(token);
  previousNonce = lastNonce;
  lastNonce = claims.nonce;
  const m = mode;
  mode = null;
  if (!m) return token;
  const now = Math.floor(Date.now() / 1000);
  let key = keys[0];
  if (m === 'forge') key = { ...(await signingKey()), kid: keys[0].kid };
  if (m === 'expired') Object.assign(claims, { iat: now - 7200, exp: now - 3600 });
  if (m === 'aud') claims.aud = 'another-client';
  if (m === 'nonce') claims.nonce = previousNonce ?? 'never-issued';
  const { kid, alg } = key;
  return new jose.SignJWT(claims)
    .setProtectedHeader({ alg, kid, typ: 'JWT' })
    .sign(await jose.importJWK(key, alg));
}

let issuer;
let handler;
const server = http.createServer((req, res) => {
  const url = new URL(req.url, issuer);
  if (!url.pathname.startsWith('/__test/')) return handler(req, res);
  const answer = (status, body) => {
    const text = body ?? '';
    res.writeHead(status, { 'content-type': 'text/plain', 'content-length': Buffer.byteLength(text) });
    res.end(text);
  };
  if (url.pathname === '/__test/mode' && req.method === 'POST') {
    const m = url.searchParams.get('m');
    if (!['forge', 'expired', 'aud', 'nonce'].includes(m)) return answer(400, `unknown mode ${m}`);
    mode = m;
    return answer(200, m);
  }
  if (url.pathname === '/__test/groups' && req.method === 'POST') {
    const user = url.searchParams.get('user');
    if (!USERS[user]) return answer(404, `unknown user ${user}`);
    USERS[user].groups = url.searchParams.getAll('g');
    return answer(200, USERS[user].groups.join(','));
  }
  if (url.pathname === '/__test/last-callback') return answer(lastCallback ? 200 : 404, lastCallback);
  if (url.pathname === '/__test/rotate' && req.method === 'POST') {
    signingKey().then((k) => {
      keys = [k, keys[0]];
      handler = build(issuer).callback();
      answer(200, k.kid);
    });
    return undefined;
  }
  return answer(404, 'unknown test control');
});

server.listen(Number(arg('port', '0')), host, () => {
  const { port } = server.address();
  issuer = `http://${host}:${port}`;
  handler = build(issuer).callback();
  // Whoever reads `ready` may close standard output afterwards.
  process.stdout.on('error', () => {});
  console.log(`ready ${port}`);
});
