// Example enclave application: fetches its secrets through keygate and serves
// a health endpoint on vsock. Everything it trusts is baked into the image
// (and so measured into PCR0): the broker's public key and the broker address.
import { readFileSync } from 'node:fs';
import { createServer } from 'node:http';
import { createAgent, openNsmDevice, connectVsock, listenVsock, parseTransport, tunnelTransport } from 'keygate/agent';

const env = (name, fallback) => process.env[name] ?? fallback;
const brokerKey = JSON.parse(readFileSync(new URL('./broker-key.jwk', import.meta.url), 'utf8'));
const secrets = env('KEYGATE_SECRETS', 'db-password').split(',');

const agent = await createAgent({
  brokerKey,
  nsm: openNsmDevice(),
  // The parent's `keygate forward --listen vsock:8000 --allow <broker>` relays to the broker.
  transport: tunnelTransport(parseTransport(env('KEYGATE_FORWARDER', 'vsock:3:8000'), connectVsock), env('KEYGATE_BROKER', 'broker.internal:8443')),
});

let ready = false;
const server = createServer(async (req, res) => {
  if (req.url === '/healthz') {
    res.writeHead(ready ? 200 : 503, { 'content-type': 'application/json' });
    res.end(JSON.stringify({ ready, stats: { hits: agent.stats.hits, attestations: agent.stats.attestations } }));
    return;
  }
  res.writeHead(404).end();
});
// The parent reaches the app on vsock (CID of the enclave, this port).
await listenVsock(Number(env('APP_VSOCK_PORT', '5005')), (stream) => server.emit('connection', stream));

for (;;) {
  try {
    // Values stay in memory; getSecret re-attests when their TTL runs out.
    await agent.getSecrets(secrets);
    ready = true;
  } catch (err) {
    ready = false;
    console.error(`keygate: ${err.code ?? 'ERROR'}: ${err.message}`);
  }
  await new Promise((r) => setTimeout(r, 15_000));
}
