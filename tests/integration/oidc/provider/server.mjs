// A real OpenID provider (the certified `oidc-provider` package) for Sandman's
// single sign-on tests. Everything comes from one JSON file named on the command
// line, so the tests decide the client, the port and the users' claims:
//
//   { "port": 9000, "issuer": "http://127.0.0.1:9000",
//     "client": { "client_id": "...", "client_secret": "...", "redirect_uris": ["..."] },
//     "users": { "alice": { "preferred_username": "alice", "groups": ["gpu-admins"] } } }
//
// The account id a person types at the login form is the `sub`; the form is the
// package's own development interaction (login, then consent), which the tests
// fill in over plain HTTP. PKCE is required, as Sandman must send it. The package
// is imported from OIDC_PROVIDER_MODULES (a node_modules built by setup.sh outside
// the repository), since ES modules do not look anywhere else.
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';

const modules = process.env.OIDC_PROVIDER_MODULES;
if (!modules) {
  console.error('OIDC_PROVIDER_MODULES must name the node_modules holding oidc-provider');
  process.exit(2);
}
const manifest = JSON.parse(readFileSync(join(modules, 'oidc-provider', 'package.json'), 'utf8'));
const entry = pathToFileURL(join(modules, 'oidc-provider', manifest.main ?? 'lib/index.js'));
const { default: Provider } = await import(entry.href);

const config = JSON.parse(readFileSync(process.argv[2], 'utf8'));
const users = config.users ?? {};

// A signing key of this run only: Sandman must fetch it from jwks_uri.
const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
const signingKey = { ...privateKey.export({ format: 'jwk' }), kid: `test-${Date.now()}`, use: 'sig', alg: 'RS256' };

const provider = new Provider(config.issuer, {
  clients: [
    {
      grant_types: ['authorization_code'],
      response_types: ['code'],
      token_endpoint_auth_method: 'client_secret_basic',
      ...config.client,
    },
  ],
  jwks: { keys: [signingKey] },
  cookies: { keys: [randomBytes(32).toString('hex')] },
  pkce: { required: () => true },
  scopes: ['openid', 'profile', 'email', 'groups'],
  claims: {
    openid: ['sub'],
    profile: ['preferred_username', 'name'],
    email: ['email', 'email_verified'],
    groups: ['groups'],
  },
  features: { devInteractions: { enabled: true } },
  async findAccount(ctx, id) {
    const claims = users[id];
    if (!claims) return undefined;
    return { accountId: id, async claims() { return { sub: id, ...claims }; } };
  },
});
provider.proxy = false;

const server = provider.listen(config.port, '127.0.0.1', () => {
  console.log(`oidc-provider listening on ${config.issuer}`);
});
const stop = () => server.close(() => process.exit(0));
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
