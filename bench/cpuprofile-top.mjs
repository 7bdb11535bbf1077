// Top self-time entries of a V8 .cpuprofile (node --cpu-prof): `node bench/cpuprofile-top.mjs FILE [N]`.
// Plain JavaScript: a reading aid for the benchmarks' profiles (e.g. BENCH_BROKER_CPU_PROFILE=DIR npm run bench -- broker).
import { readFileSync } from 'node:fs';
const p = JSON.parse(readFileSync(process.argv[2], 'utf8'));
const n = Number(process.argv[3] ?? 15);
const byId = new Map(p.nodes.map((x) => [x.id, x]));
const self = new Map();
const dt = p.timeDeltas; let total = 0;
for (let i = 0; i < p.samples.length; i++) { const node = byId.get(p.samples[i]); const cf = node.callFrame; const key = `${cf.functionName || '(anon)'} ${cf.url.replace(/^.*\/node_modules\//, 'node_modules/').replace(/^file:\/\/.*?\/(broker|bench|lib|enclave-agent|vsock-shim|cli|test)\//, '$1/')}:${cf.lineNumber + 1}`; self.set(key, (self.get(key) ?? 0) + (dt[i] ?? 0)); total += dt[i] ?? 0; }
const rows = [...self].sort((a, b) => b[1] - a[1]).slice(0, n);
for (const [k, v] of rows) console.log(`${(v / 1000).toFixed(1).padStart(8)} ms ${(100 * v / total).toFixed(1).padStart(5)}%  ${k}`);
console.log('total ms', (total / 1000).toFixed(0));
