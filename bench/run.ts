/** `npm run bench`: runs the default benchmarks (or those named: `npm run bench -- verify`; `replicas` and `flood` only when named). */
import { benchVerify } from './verify.js';
import { benchBroker } from './broker.js';
import { benchAgent } from './agent.js';
import { benchAgentPhases } from './agent-phases.js';
import { benchJunk } from './junk.js';
import { benchReplicas } from './replicas.js';
import { benchGateway } from './gateway.js';
import { benchFlood } from './flood.js';
import { benchCli } from './cli.js';
import { benchForwarder } from './forwarder.js';
import { benchWorkers } from './workers.js';
import { benchFloor } from './floor.js';

const ALL: Record<string, () => Promise<unknown>> = { verify: benchVerify, broker: benchBroker, agent: benchAgent, junk: benchJunk, gateway: benchGateway, cli: benchCli, forwarder: benchForwarder };
/** Run only when named: replicas needs moto_server (or AWS) and starts several broker processes; flood sends 500k requests; workers starts `keygate broker --workers N` processes; agent-phases times each step of a re-attesting fetch; floor compares the broker with the floor of a release (bench/floor.ts). */
const ON_REQUEST: Record<string, () => Promise<unknown>> = { replicas: benchReplicas, flood: benchFlood, workers: benchWorkers, 'agent-phases': benchAgentPhases, floor: benchFloor };

const wanted = process.argv.slice(2);
for (const name of wanted.length ? wanted : Object.keys(ALL)) {
  const run = ALL[name] ?? ON_REQUEST[name];
  if (!run) {
    console.error(`unknown benchmark "${name}"; known: ${[...Object.keys(ALL), ...Object.keys(ON_REQUEST)].join(', ')}`);
    process.exit(2);
  }
  await run();
}
