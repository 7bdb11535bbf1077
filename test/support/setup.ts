// @peculiar/x509 (the test PKI generator) resolves its services through
// tsyringe, which needs the Reflect metadata API before the library loads.
import 'reflect-metadata';
