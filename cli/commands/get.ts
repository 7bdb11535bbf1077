import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { JWK } from 'jose';
import { createAgent, AgentError } from '../../enclave-agent/index.js';
import { NsmSimulator } from '../../vsock-shim/simulator/nsm-simulator.js';
import { openDevPki } from '../../vsock-shim/simulator/pki-store.js';
import { openNsmDevice, connectVsock } from '../../vsock-shim/vsock.js';
import { parseTransport, TransportError } from '../../vsock-shim/transport/transport.js';
import { tunnelTransport } from '../../vsock-shim/transport/tunnel.js';
import type { Nsm } from '../../vsock-shim/nsm/client.js';
import { UsageError } from '../errors.js';
import { ConfigError, loadConfigFile, parseListen, resolveConfig } from '../../broker/config.js';
import { measureImage } from '../../broker/ops/baselines.js';
import { parseCommand } from '../args.js';
import type { CliIo } from '../io.js';

export const GET_USAGE = `Usage: keygate get <secret> --broker-key JWK [--transport SPEC [--via HOST:PORT] | --broker URL]
       keygate get <secret> --dev [--broker URL | --config FILE] [--image EIF|NITRO_CLI_JSON]

Fetches one secret the way an enclave application does (attest, release,
decrypt) and writes its value to standard output.

  --broker-key FILE  the broker's public JWK to pin (required outside --dev)
  --transport SPEC   vsock:CID:PORT (the parent's forwarder; default vsock:3:8000),
                     tcp:HOST:PORT or unix:PATH
  --via HOST:PORT    tunnel through the forwarder to this broker address (CONNECT)
  --broker URL       http://HOST:PORT, direct TCP (tests, --dev)
  --dev              DEVELOPMENT ONLY: NSM simulator with the dev PKI of
                     \`keygate broker --dev\`; fetches the broker key unpinned;
                     connects to --broker URL directly (default: the --config
                     file's listen address, else http://127.0.0.1:8443), so
                     --transport and --via are refused with it
  --config FILE      with --dev: the broker config whose listen address to use
  --image FILE       with --dev: the simulated enclave runs this image (its
                     PCR0/1/2/8, measured from the EIF or nitro-cli JSON)
`;

/**
 * Where the development PKI (the NSM simulator's root and leaf keys) lives: one per working directory,
 * whatever the broker's state directory, so `keygate get --dev` reaches every `keygate broker --dev`
 * started from the same directory (replicas with their own --state or a named --config included).
 */
export function devPkiDirectory(): string {
  return join('.keygate-dev', 'simulator');
}

/** The URL of the broker a config describes (its listen address; https when it sets tls). */
async function devBrokerUrl(file: string): Promise<string> {
  let config;
  try {
    config = resolveConfig(await loadConfigFile(file));
  } catch (err) {
    if (err instanceof ConfigError) throw new UsageError(`--config ${file}: ${err.message}`);
    throw err;
  }
  const { host, port } = parseListen(config.listen);
  if (port === 0) throw new UsageError(`--config ${file}: listen ${config.listen} is any free port: give --broker URL`);
  return `${config.tls ? 'https' : 'http'}://${host.includes(':') ? `[${host}]` : host}:${port}`;
}

/** `keygate get`: exit 0 with the value on stdout, 1 when the broker refuses, 2 on usage errors. */
export async function getCommand(argv: readonly string[], io: CliIo): Promise<number> {
  const { values, positionals } = parseCommand(
    argv,
    { 'broker-key': { type: 'string' }, transport: { type: 'string' }, via: { type: 'string' }, broker: { type: 'string' }, dev: { type: 'boolean' }, config: { type: 'string' }, image: { type: 'string' } },
    1,
  );
  if (values.help) {
    io.out(GET_USAGE);
    return 0;
  }
  if (positionals.length !== 1) throw new UsageError('expected exactly one secret name');
  let nsm: Nsm;
  let brokerKey: JWK;
  let agentTarget: { brokerUrl: string } | { transport: ReturnType<typeof parseTransport> };
  if (values.image && !values.dev) throw new UsageError('--image simulates an enclave: it needs --dev');
  if (values.dev) {
    if (values.transport || values.via) throw new UsageError('--transport and --via are not used with --dev: it connects to the broker directly (--broker URL or --config FILE)');
    if (values.broker && values.config) throw new UsageError('give --broker URL or --config FILE, not both');
    const url = values.broker ?? (values.config ? await devBrokerUrl(values.config) : 'http://127.0.0.1:8443');
    const image = values.image
      ? (
          await measureImage(values.image).catch((err: unknown) => {
            throw new UsageError(`--image: ${(err as Error).message}`);
          })
        ).pcrs
      : undefined;
    const simulator = await NsmSimulator.create({ pki: await openDevPki(devPkiDirectory()), ...(image ? { pcrs: image } : {}), warn: (m) => io.err(`${m}\n`) });
    nsm = simulator.client();
    io.err('keygate get --dev: the broker key is fetched, not pinned (development only)\n');
    try {
      brokerKey = (await (await fetch(`${url}/v1/broker-key`)).json()) as JWK;
    } catch (err) {
      // fetch says only "fetch failed"; why (ECONNREFUSED, ENOTFOUND, ...) is on its cause.
      const cause = (err as Error).cause;
      throw new UsageError(`cannot reach the broker at ${url}: ${cause instanceof Error ? cause.message : (err as Error).message}`, { hint: false });
    }
    agentTarget = { brokerUrl: url };
  } else {
    if (values.config) throw new UsageError('--config is used with --dev only (outside it, give --transport/--via or --broker)');
    if (!values['broker-key']) throw new UsageError('--broker-key FILE is required (pin the broker key), or use --dev');
    try {
      brokerKey = JSON.parse(await readFile(values['broker-key'], 'utf8')) as JWK;
    } catch (err) {
      throw new UsageError(`--broker-key: ${(err as Error).message}`);
    }
    try {
      if (values.broker) agentTarget = { brokerUrl: values.broker };
      else {
        const inner = parseTransport(values.transport ?? 'vsock:3:8000', connectVsock);
        agentTarget = { transport: values.via ? tunnelTransport(inner, values.via) : inner };
      }
    } catch (err) {
      if (err instanceof TransportError) throw new UsageError(err.message);
      throw err;
    }
    try {
      nsm = openNsmDevice();
    } catch (err) {
      throw new UsageError((err as Error).message, { hint: false });
    }
  }
  const agent = await createAgent({ ...agentTarget, brokerKey, nsm });
  try {
    const value = await agent.getSecret(positionals[0]!);
    if (typeof value === 'string') io.out(value);
    else {
      io.err('keygate get: binary secret, written as base64\n');
      io.out(`${Buffer.from(value).toString('base64')}\n`);
    }
    return 0;
  } catch (err) {
    if (err instanceof AgentError) {
      io.err(`keygate get: ${err.code}: ${err.message}\n`);
      return 1;
    }
    throw err;
  } finally {
    await agent.close();
    await nsm.close();
  }
}
