import { createHash } from 'node:crypto';
import { pemCertificates } from './pem.js';

/**
 * AWS Nitro Enclaves Root G1, as published by AWS
 * (AWS_NitroEnclaves_Root-G1.zip). Valid until 2049-10-28.
 */
export const AWS_NITRO_ROOT_G1_PEM = `-----BEGIN CERTIFICATE-----
MIICETCCAZagAwIBAgIRAPkxdWgbkK/hHUbMtOTn+FYwCgYIKoZIzj0EAwMwSTEL
MAkGA1UEBhMCVVMxDzANBgNVBAoMBkFtYXpvbjEMMAoGA1UECwwDQVdTMRswGQYD
VQQDDBJhd3Mubml0cm8tZW5jbGF2ZXMwHhcNMTkxMDI4MTMyODA1WhcNNDkxMDI4
MTQyODA1WjBJMQswCQYDVQQGEwJVUzEPMA0GA1UECgwGQW1hem9uMQwwCgYDVQQL
DANBV1MxGzAZBgNVBAMMEmF3cy5uaXRyby1lbmNsYXZlczB2MBAGByqGSM49AgEG
BSuBBAAiA2IABPwCVOumCMHzaHDimtqQvkY4MpJzbolL//Zy2YlES1BR5TSksfbb
48C8WBoyt7F2Bw7eEtaaP+ohG2bnUs990d0JX28TcPQXCEPZ3BABIeTPYwEoCWZE
h8l5YoQwTcU/9KNCMEAwDwYDVR0TAQH/BAUwAwEB/zAdBgNVHQ4EFgQUkCW1DdkF
R+eWw5b6cp3PmanfS5YwDgYDVR0PAQH/BAQDAgGGMAoGCCqGSM49BAMDA2kAMGYC
MQCjfy+Rocm9Xue4YnwWmNJVA44fA0P5W2OpYow9OYCVRaEevL8uO1XYru5xtMPW
rfMCMQCi85sWBbJwKKXdS6BptQFuZbT73o/gBh1qUxl/nNr12UO8Yfwr6wPLb+6N
IwLz3/Y=
-----END CERTIFICATE-----
`;

/** SHA-256 fingerprint of the root's DER, as AWS publishes it. */
export const AWS_NITRO_ROOT_G1_SHA256 = '641a0321a3e244efe456463195d606317ed7cdcc3c1756e09893f3c68f79bb5b';

/** DER of the AWS Nitro root G1, checked against its published fingerprint when the module loads. */
export const AWS_NITRO_ROOT_G1_DER: Uint8Array = (() => {
  const [der] = pemCertificates(AWS_NITRO_ROOT_G1_PEM);
  const actual = createHash('sha256').update(der!).digest('hex');
  // A corrupted or substituted bundled root must stop the process loudly,
  // never fall back to trusting whatever was shipped.
  if (actual !== AWS_NITRO_ROOT_G1_SHA256) {
    throw new Error(`bundled AWS Nitro root fingerprint mismatch: ${actual}`);
  }
  return der!;
})();
