/** `npm run bench`: runs every benchmark (or those named: `npm run bench -- verify`). */
import { benchVerify } from './verify.js';
import { benchBroker } from './broker.js';
import { benchAgent } from './agent.js';
import { benchJunk } from './junk.js';

const ALL: Record<string, () => Promise<unknown>> = { verify: benchVerify, broker: benchBroker, agent: benchAgent, junk: benchJunk };

const wanted = process.argv.slice(2);
for (const name of wanted.length ? wanted : Object.keys(ALL)) {
  const run = ALL[name];
  if (!run) {
    console.error(`unknown benchmark "${name}"; known: ${Object.keys(ALL).join(', ')}`);
    process.exit(2);
  }
  await run();
}
