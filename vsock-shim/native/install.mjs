// keygate's install script: builds the vsock/NSM addon when this machine can,
// and never fails the install when it cannot. Only enclave-side code needs the
// addon (openNsmDevice, connectVsock, listenVsock, `keygate forward --listen
// vsock:PORT`); the broker, the CLI and the verifier run without it, and those
// calls then throw NativeAddonMissingError (code NATIVE_ADDON_MISSING) saying
// how to build it.
//
//   KEYGATE_NATIVE=skip      do not try (nothing is compiled)
//   KEYGATE_NATIVE=required  a failed build fails the install (CI with a compiler)
//
// Plain ESM JavaScript with no dependencies: it runs before anything is built.
import { spawnSync } from 'node:child_process';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const root = join(here, '..', '..');
const mode = process.env.KEYGATE_NATIVE ?? 'auto';

const HOW = [
  'Only enclave code needs it (openNsmDevice, connectVsock, listenVsock, keygate forward --listen vsock:PORT);',
  'the broker, the CLI and `keygate verify` work without it. To build it later:',
  '  install python3, make and a C/C++ compiler (Debian/Ubuntu: apt-get install python3 make g++;',
  '  Amazon Linux / Fedora: dnf install python3 make gcc-c++), then run `npm run build:native`',
  `  in ${root}`,
].join('\n');

function notBuilt(reason) {
  const text = `keygate: the vsock/NSM native addon was not built (${reason}).\n${HOW}\n`;
  if (mode === 'required') {
    process.stderr.write(`${text}KEYGATE_NATIVE=required: failing the install.\n`);
    process.exit(1);
  }
  process.stderr.write(text);
  process.exit(0);
}

/** true when `command` (which may carry arguments, as CC="ccache gcc" does) runs and exits 0. */
function runs(command, args) {
  const [file, ...rest] = command.trim().split(/\s+/);
  if (!file) return false;
  const r = spawnSync(file, [...rest, ...args], { stdio: 'ignore', timeout: 30_000 });
  return r.status === 0;
}

if (mode === 'skip') notBuilt('KEYGATE_NATIVE=skip');
if (process.platform !== 'linux') notBuilt(`AF_VSOCK and /dev/nsm exist on Linux only, this is ${process.platform}`);

// Check the toolchain before node-gyp runs: without one, node-gyp would fail
// only after looking for (and perhaps downloading) Node's headers.
const missing = [];
const cc = process.env.CC || 'cc';
const cxx = process.env.CXX || 'c++';
if (!runs(cc, ['--version'])) missing.push(`a C compiler (${cc})`);
// gyp links with the C++ driver.
if (!runs(cxx, ['--version'])) missing.push(`a C++ compiler driver (${cxx})`);
if (!runs('make', ['--version'])) missing.push('make');
const python = process.env.npm_config_python || process.env.PYTHON || 'python3';
if (!runs(python, ['--version'])) missing.push(`python3 (${python})`);
if (missing.length) notBuilt(`not found or not working: ${missing.join(', ')}`);

// npm runs install scripts with its own node-gyp on PATH and names it in npm_config_node_gyp.
const gyp = process.env.npm_config_node_gyp;
const args = ['rebuild', `--directory=${here}`];
const r = gyp ? spawnSync(process.execPath, [gyp, ...args], { stdio: 'inherit', timeout: 600_000 }) : spawnSync('node-gyp', args, { stdio: 'inherit', timeout: 600_000 });
if (r.status !== 0) notBuilt(`node-gyp failed${r.error ? `: ${r.error.message}` : ` with status ${r.status}`}`);
