import { describe, expect, it } from 'vitest';
import {
  AWS_NITRO_ROOT_G1_DER,
  AWS_NITRO_ROOT_G1_PEM,
  AWS_NITRO_ROOT_G1_SHA256,
  verifyAttestation,
  type AttestationErrorCode,
} from '../../index.js';
import { pemCertificates } from '../../broker/verify/pem.js';
import { codeOf } from '../support/codes.js';
import { awsRootPem, fixtureBytes, manifest, negativeDocuments, realDocuments } from '../support/fixtures.js';

const hex = (b: Uint8Array | null | undefined): string | null => (b ? Buffer.from(b).toString('hex') : null);

describe('bundled AWS Nitro root', () => {
  it('is the published root G1, byte for byte', () => {
    expect(Buffer.from(AWS_NITRO_ROOT_G1_DER).equals(Buffer.from(pemCertificates(awsRootPem)[0]!))).toBe(true);
    expect(AWS_NITRO_ROOT_G1_SHA256).toBe(manifest.root.sha256_fingerprint.toLowerCase());
    expect(AWS_NITRO_ROOT_G1_PEM).toContain('BEGIN CERTIFICATE');
  });
});

describe('real AWS Nitro documents', () => {
  it('covers every document in the manifest', () => {
    expect(realDocuments.length).toBe(16);
    expect(negativeDocuments.map((d) => d.file).sort()).toEqual(['bad-signature.cbor', 'foreign-root.cbor', 'self-signed-chain.cbor']);
  });

  describe.each(realDocuments)('$file', (entry) => {
    const bytes = fixtureBytes(entry.file);

    it('verifies at its own timestamp and matches the manifest', () => {
      const doc = verifyAttestation(bytes, { at: entry.timestamp_ms, allowDebug: true });
      expect(doc.moduleId).toBe(entry.module_id);
      expect(doc.timestamp).toBe(entry.timestamp_ms);
      expect(doc.digest).toBe('SHA384');
      expect(doc.debug).toBe(entry.debug_mode);
      expect(doc.pcrs.size).toBe(entry.pcr_count);
      for (const [name, value] of Object.entries(entry.pcrs!)) {
        expect(hex(doc.pcrs.get(Number(name.slice(3)))), name).toBe(value);
      }
      expect(doc.publicKey?.length ?? null).toBe(entry.public_key_len);
      expect(doc.userData?.length ?? null).toBe(entry.user_data_len);
      expect(doc.nonce?.length ?? null).toBe(entry.nonce_len);
      for (const field of entry.null_optional_fields!) {
        const key = ({ public_key: 'publicKey', user_data: 'userData', nonce: 'nonce' } as const)[field as 'nonce'];
        expect(doc[key], field).toBeNull();
      }
      expect(doc.signingCertificate.notBefore.toISOString()).toBe(entry.leaf_not_before);
      expect(doc.signingCertificate.notAfter.toISOString()).toBe(entry.leaf_not_after);
      expect(doc.rootSha256).toBe(AWS_NITRO_ROOT_G1_SHA256);
      expect(doc.moduleId.startsWith(doc.moduleId.split('-enc')[0]!)).toBe(true);
    });

    it('verifies with the root given explicitly as PEM and with a Date', () => {
      const doc = verifyAttestation(bytes, { at: new Date(entry.timestamp_ms), roots: [awsRootPem], allowDebug: true });
      expect(doc.moduleId).toBe(entry.module_id);
    });

    if (entry.debug_mode) {
      it('is refused as DEBUG_MODE unless debug is allowed', () => {
        expect(codeOf(() => verifyAttestation(bytes, { at: entry.timestamp_ms }))).toBe('DEBUG_MODE');
      });
    } else {
      it('verifies without allowDebug', () => {
        expect(verifyAttestation(bytes, { at: entry.timestamp_ms }).debug).toBe(false);
      });
    }

    it('fails with CERT_EXPIRED one hour after the leaf expires', () => {
      const at = Date.parse(entry.leaf_not_after!) + 3_600_000;
      expect(codeOf(() => verifyAttestation(bytes, { at, allowDebug: true }))).toBe('CERT_EXPIRED');
    });

    it('fails with CERT_EXPIRED before the leaf was issued', () => {
      const at = Date.parse(entry.leaf_not_before!) - 1_000;
      expect(codeOf(() => verifyAttestation(bytes, { at, allowDebug: true }))).toBe('CERT_EXPIRED');
    });

    it('checks the requested PCRs exactly', () => {
      const pcr0 = entry.pcrs!.PCR0!;
      expect(verifyAttestation(bytes, { at: entry.timestamp_ms, allowDebug: true, pcrs: { 0: pcr0, 8: entry.pcrs!.PCR8! } }).moduleId).toBe(
        entry.module_id,
      );
      const flipped = (pcr0[0] === 'f' ? 'e' : 'f') + pcr0.slice(1);
      expect(codeOf(() => verifyAttestation(bytes, { at: entry.timestamp_ms, allowDebug: true, pcrs: { 0: flipped } }))).toBe('PCR_MISMATCH');
      expect(codeOf(() => verifyAttestation(bytes, { at: entry.timestamp_ms, allowDebug: true, pcrs: { 31: '00'.repeat(48) } }))).toBe(
        'PCR_MISMATCH',
      );
    });
  });

  it('applies freshness around the document timestamp', () => {
    // A document issued long after its leaf, so "at" can precede it while the chain is valid.
    const entry = realDocuments.find((d) => d.timestamp_ms - Date.parse(d.leaf_not_before!) > 120_000 && !d.debug_mode)!;
    const bytes = fixtureBytes(entry.file);
    const t = entry.timestamp_ms;
    expect(verifyAttestation(bytes, { at: t + 299_000, maxAgeMs: 300_000 }).timestamp).toBe(t);
    expect(codeOf(() => verifyAttestation(bytes, { at: t + 301_000, maxAgeMs: 300_000 }))).toBe('DOC_EXPIRED');
    expect(verifyAttestation(bytes, { at: t - 59_000, maxAgeMs: 300_000 }).timestamp).toBe(t);
    expect(codeOf(() => verifyAttestation(bytes, { at: t - 61_000, maxAgeMs: 300_000 }))).toBe('DOC_EXPIRED');
  });

  it('matches the nonce exactly', () => {
    const entry = realDocuments.find((d) => d.nonce_len === 32)!;
    const bytes = fixtureBytes(entry.file);
    const nonce = verifyAttestation(bytes, { at: entry.timestamp_ms }).nonce!;
    expect(verifyAttestation(bytes, { at: entry.timestamp_ms, expectedNonce: nonce }).nonce).toEqual(nonce);
    const other = Uint8Array.from(nonce);
    other[31]! ^= 1;
    expect(codeOf(() => verifyAttestation(bytes, { at: entry.timestamp_ms, expectedNonce: other }))).toBe('NONCE_MISMATCH');
    expect(codeOf(() => verifyAttestation(bytes, { at: entry.timestamp_ms, expectedNonce: nonce.subarray(0, 16) }))).toBe('NONCE_MISMATCH');
    const noNonce = realDocuments.find((d) => d.nonce_len === null && !d.debug_mode)!;
    expect(codeOf(() => verifyAttestation(fixtureBytes(noNonce.file), { at: noNonce.timestamp_ms, expectedNonce: nonce }))).toBe(
      'NONCE_MISMATCH',
    );
  });

  it('refuses documents whose chain is not under the configured roots', () => {
    const entry = realDocuments[0]!;
    const other = pemCertificates(AWS_NITRO_ROOT_G1_PEM)[0]!.slice();
    other[other.length - 5]! ^= 0xff; // same root with one signature byte changed: not the pinned bytes
    expect(codeOf(() => verifyAttestation(fixtureBytes(entry.file), { at: entry.timestamp_ms, roots: [other] }))).toBe('UNTRUSTED_ROOT');
  });
});

describe('negative fixtures', () => {
  const expected: Record<string, AttestationErrorCode> = {
    'bad-signature.cbor': 'BAD_SIGNATURE',
    // Its payload has cabundle: null, which the nsm-api schema forbids (1..N certificates).
    'self-signed-chain.cbor': 'MALFORMED_PAYLOAD',
    'foreign-root.cbor': 'UNTRUSTED_ROOT',
  };
  it.each(negativeDocuments)('$file fails with the right code', (entry) => {
    const bytes = fixtureBytes(entry.file);
    expect(codeOf(() => verifyAttestation(bytes, { at: entry.timestamp_ms, allowDebug: true }))).toBe(expected[entry.file]);
  });
});
