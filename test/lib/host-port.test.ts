import { describe, expect, it } from 'vitest';
import { formatHostPort, parseHostPort } from '../../lib/host-port.js';
import { ConfigError, parseListen } from '../../broker/config.js';
import { parseDestination } from '../../vsock-shim/forwarder.js';
import { parseTransport, TransportError } from '../../vsock-shim/transport/transport.js';

describe('lib/host-port: the one HOST:PORT parser', () => {
  it.each([
    ['127.0.0.1:8443', { host: '127.0.0.1', port: 8443 }],
    ['[::1]:443', { host: '::1', port: 443 }],
    ['Broker.Example:0', { host: 'Broker.Example', port: 0 }],
    ['h:65535', { host: 'h', port: 65535 }],
  ])('parses %s', (text, expected) => {
    expect(parseHostPort(text)).toEqual(expected);
  });

  it.each(['host', 'h:65536', 'h:123456', 'h:', ':80', '[::1:80', '::1:80', 'h:80 ', 'http://h:80'])('rejects %j', (text) => {
    expect(parseHostPort(text)).toBeUndefined();
  });

  it('formatHostPort brackets an IPv6 host, the inverse of parseHostPort', () => {
    expect(formatHostPort('::1', 8443)).toBe('[::1]:8443');
    expect(formatHostPort('127.0.0.1', 8443)).toBe('127.0.0.1:8443');
    expect(parseHostPort(formatHostPort('fe80::1', 1))).toEqual({ host: 'fe80::1', port: 1 });
  });

  it('each caller keeps its own rules and error: listen allows port 0, --allow needs a port and a DNS-name host, tcp: needs a port', () => {
    expect(parseListen('127.0.0.1:0')).toEqual({ host: '127.0.0.1', port: 0 });
    expect(() => parseListen('127.0.0.1:70000')).toThrow(new ConfigError('listen "127.0.0.1:70000" must be HOST:PORT'));
    expect(parseDestination(' Broker.Example:443 ')).toEqual({ host: 'broker.example', port: 443 });
    for (const bad of ['broker:0', 'a_b:1', 'a b:1']) expect(() => parseDestination(bad)).toThrow(new TypeError(`"${bad}" is not HOST:PORT`));
    expect(parseTransport('tcp:[::1]:8443').description).toBe('[::1]:8443');
    for (const bad of ['tcp:h:0', 'tcp:h:70000', 'tcp:h']) {
      expect(() => parseTransport(bad)).toThrow(TransportError);
      expect(() => parseTransport(bad)).toThrow(expect.objectContaining({ code: 'TRANSPORT_INVALID' }));
    }
  });
});
