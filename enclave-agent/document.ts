import { createHash } from 'node:crypto';
import { Decoder, Tag } from 'cbor-x';
import { AgentError } from './errors.js';

/** What an answer must be bound to: the exact document this agent sent. */
export interface SentDocument {
  /** Hex SHA-256 of the document bytes (the broker's `doc` claim). */
  readonly sha256: string;
  /** The document's module_id (the broker's `aud` claim). */
  readonly moduleId: string;
}

const decoder = new Decoder({ useRecords: false, mapsAsObjects: true });

/**
 * Reads the binding facts of a document our own NSM just produced. The agent
 * does not verify it (the broker does); it only needs the module_id, which is
 * not otherwise known inside the enclave.
 */
export function sentDocument(document: Uint8Array): SentDocument {
  let moduleId: unknown;
  try {
    let cose = decoder.decode(document) as unknown;
    if (cose instanceof Tag) cose = cose.value; // COSE_Sign1 may carry tag 18
    const payload = Array.isArray(cose) ? (cose[2] as unknown) : undefined;
    if (payload instanceof Uint8Array) moduleId = (decoder.decode(payload) as { module_id?: unknown } | null)?.module_id;
  } catch (cause) {
    throw new AgentError('NSM_ERROR', 'the NSM returned an attestation document that is not CBOR', { cause });
  }
  if (typeof moduleId !== 'string' || moduleId === '') throw new AgentError('NSM_ERROR', 'the NSM returned an attestation document without a module_id');
  return { sha256: createHash('sha256').update(document).digest('hex'), moduleId };
}
