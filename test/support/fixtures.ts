/** Access to the real Nitro documents in ../shared/fixtures/nitro and their manifest. */
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { join } from 'node:path';

export const FIXTURE_DIR = fileURLToPath(new URL('../../../shared/fixtures/nitro/', import.meta.url));

export interface ManifestDocument {
  file: string;
  expect: string;
  timestamp_ms: number;
  module_id?: string;
  debug_mode?: boolean;
  pcr_count?: number;
  pcrs?: Record<string, string>;
  public_key_len?: number | null;
  user_data_len?: number | null;
  nonce_len?: number | null;
  null_optional_fields?: string[];
  payload_map?: string;
  leaf_not_before?: string;
  leaf_not_after?: string;
  cose_tag18?: boolean;
  bytes?: number;
}

interface Manifest {
  root: { file: string; sha256_fingerprint: string };
  documents: ManifestDocument[];
}

export const manifest = JSON.parse(readFileSync(join(FIXTURE_DIR, 'manifest.json'), 'utf8')) as Manifest;
export const realDocuments = manifest.documents.filter((d) => d.file.startsWith('real-'));
export const negativeDocuments = manifest.documents.filter((d) => d.expect === 'invalid');

export function fixtureBytes(file: string): Uint8Array {
  return new Uint8Array(readFileSync(join(FIXTURE_DIR, file)));
}

export function fixturePath(file: string): string {
  return join(FIXTURE_DIR, file);
}

export const awsRootPem = readFileSync(join(FIXTURE_DIR, manifest.root.file), 'utf8');
