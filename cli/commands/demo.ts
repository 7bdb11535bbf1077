import { mkdtemp, rm, readFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { JWK } from 'jose';
import { startBroker } from '../../broker/broker.js';
import { resolveConfig } from '../../broker/config.js';
import { bindSecret, pcrSet } from '../../broker/admin.js';
import { silentLogger } from '../../broker/log.js';
import { verifyAuditLog } from '../../broker/audit/verify-log.js';
import { NsmSimulator } from '../../vsock-shim/simulator/nsm-simulator.js';
import { createAgent } from '../../enclave-agent/index.js';
import { AgentError } from '../../enclave-agent/errors.js';
import { parseCommand } from '../args.js';
import type { CliIo } from '../io.js';

export const DEMO_USAGE = `Usage: keygate demo [--mismatch]

Runs the whole flow on this machine, on embedded development defaults
(DEVELOPMENT ONLY: local key provider, NSM simulator, throwaway state):
a broker, a secret bound to the simulated enclave's PCRs, and an agent that
calls getSecret over TCP. --mismatch binds the secret to another PCR0 and
shows the request denied.
`;

const short = (hex: string): string => `${hex.slice(0, 16)}…`;

/** `keygate demo`: exit 0 when the flow behaves as it should (released, or denied with --mismatch). */
export async function demoCommand(argv: readonly string[], io: CliIo): Promise<number> {
  const { values } = parseCommand(argv, { mismatch: { type: 'boolean' } });
  if (values.help) {
    io.out(DEMO_USAGE);
    return 0;
  }
  const say = (line: string): void => io.out(`${line}\n`);
  say('keygate demo: DEVELOPMENT MODE (local key provider, NSM simulator, throwaway state). Nothing here is for production.');
  const dir = await mkdtemp(join(tmpdir(), 'keygate-demo-'));
  const simulator = await NsmSimulator.create({ warn: (m) => io.err(`${m}\n`) });
  const broker = await startBroker(
    resolveConfig({ listen: '127.0.0.1:0', store: join(dir, 'store'), stateDir: join(dir, 'state'), extraRootPems: [simulator.rootPem], dev: true }),
    { log: silentLogger },
  );
  try {
    const pcrs = simulator.pcrs;
    say(`1. broker listening on ${broker.url}; it trusts the simulator's development root (dev only)`);
    say(`2. simulated enclave ${simulator.moduleId}`);
    say(`   PCR0 ${short(pcrs[0]!)}  PCR1 ${short(pcrs[1]!)}  PCR2 ${short(pcrs[2]!)}`);
    const bound = values.mismatch ? { 0: 'ab'.repeat(48), 1: pcrs[1]!, 2: pcrs[2]! } : { 0: pcrs[0]!, 1: pcrs[1]!, 2: pcrs[2]! };
    await bindSecret(broker.store, broker.providers.get('local')!, {
      secret: 'db-password',
      value: new TextEncoder().encode('correct horse battery staple'),
      allow: [pcrSet(bound)],
      provider: 'local',
      ttlSeconds: 60,
    });
    say(`3. bound "db-password" to PCR0 ${short(bound[0])}${values.mismatch ? '  (NOT the enclave\'s PCR0: expect a denial)' : ''}`);

    // In production the broker key is pinned into the enclave image at build time.
    const brokerKey = (await (await fetch(`${broker.url}/v1/broker-key`)).json()) as JWK;
    const agent = await createAgent({ brokerUrl: broker.url, brokerKey, nsm: simulator.client() });
    try {
      const t0 = performance.now();
      let value: string | Uint8Array;
      try {
        value = await agent.getSecret('db-password');
      } catch (err) {
        if (values.mismatch && err instanceof AgentError && err.code === 'POLICY_DENIED') {
          say(`4. getSecret("db-password") -> denied: ${err.code} (${err.message}); nothing was released`);
          await auditSummary(5, broker.audit.close.bind(broker.audit), join(dir, 'state', 'audit.jsonl'), broker.signingKey.publicKey, say);
          return 0;
        }
        throw err;
      }
      if (values.mismatch) {
        say('4. UNEXPECTED: the secret was released to an enclave with the wrong PCR0');
        return 1;
      }
      const text = typeof value === 'string' ? value : Buffer.from(value).toString('utf8');
      say(`4. getSecret("db-password") -> released: "${text.slice(0, 3)}${'*'.repeat(Math.max(0, text.length - 3))}" (${text.length} chars) in ${(performance.now() - t0).toFixed(1)} ms`);
      say(`   decision RELEASED, version 1, ttl 60 s; attested with a fresh nonce, ${agent.stats.attestations} attestation so far`);
      const t1 = performance.now();
      await agent.getSecret('db-password');
      say(`5. getSecret again -> cache hit in ${((performance.now() - t1) * 1000).toFixed(0)} µs, no attestation (hits ${agent.stats.hits}, attestations ${agent.stats.attestations})`);
      await auditSummary(6, broker.audit.close.bind(broker.audit), join(dir, 'state', 'audit.jsonl'), broker.signingKey.publicKey, say);
      return 0;
    } finally {
      await agent.close();
    }
  } finally {
    await broker.close().catch(() => {});
    await rm(dir, { recursive: true, force: true });
  }
}

async function auditSummary(step: number, flush: () => Promise<void>, file: string, key: Parameters<typeof verifyAuditLog>[1], say: (l: string) => void): Promise<void> {
  await flush();
  const result = verifyAuditLog(await readFile(file, 'utf8'), key);
  say(`${step}. audit log: ${result.decisions} decision(s), chain and seal signatures ${result.ok ? 'verify' : 'DO NOT verify'}`);
}
