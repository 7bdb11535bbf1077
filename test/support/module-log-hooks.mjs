// Module hooks for module-log.mjs (they run on node's hooks thread): log each module as it loads.
import { appendFileSync } from 'node:fs';

export async function load(url, context, nextLoad) {
  if (process.env.KEYGATE_MODULE_LOG) appendFileSync(process.env.KEYGATE_MODULE_LOG, `${url}\n`);
  return nextLoad(url, context);
}
