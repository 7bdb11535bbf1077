// The `inject` section of a binding (credential substitution, issue 13): what the broker adds to calls
// through the gateway, where, and how much. Each field is checked for type, both sides of its
// boundary, and the exact path of the refusal; the route and header vocabularies character by character,
// because a route the schema lets through is a path the broker will put a credential on.
import { describe, expect, it } from 'vitest';
import { bindingDoc, expectRefused, type Doc } from './schema-support.js';
import { INJECT_ROUTE, MAX_INJECT_BODY_BYTES, SchemaError, isInjectRoute, parseBinding, parseInject } from '../../broker/policy/schema.js';
import { INJECT_METHODS } from '../../broker/policy/types.js';



function inject(): Doc {
  return {
    upstream: 'https://api.example.com',
    header: 'authorization',
    template: 'Bearer {value}',
    routes: ['POST /v1/chat/completions'],
    maxBodyBytes: 1_048_576,
    budget: { requests: 100, windowSeconds: 3600 },
  };
}

const binding = (extra: Doc = {}): Doc => bindingDoc('openai-key', extra);

const withInject = (field: string, value: unknown): Doc => ({ ...inject(), [field]: value });


describe('parseInject', () => {
  it('returns exactly the validated rule, without allowStatus when absent', () => {
    expect(parseInject(inject())).toStrictEqual(inject());
    expect('allowStatus' in parseInject(inject())).toBe(false);
  });

  it('keeps every optional field it accepts', () => {
    const doc = { ...inject(), allowStatus: [200, 201, 429] };
    expect(parseInject(doc)).toStrictEqual(doc);
  });

  it('names the path given by the caller, and "inject" by default', () => {
    expectRefused(() => parseInject(withInject('header', 'Host')), 'inject.header');
    expectRefused(() => parseInject(withInject('header', 'Host'), 'b.inject'), 'b.inject.header');
  });

  it.each([null, undefined, 'https://api.example.com', [], 7])('refuses a non-object %j', (v) => {
    expectRefused(() => parseInject(v), 'inject');
  });

  it.each(['value', 'method', 'headers', 'Upstream'])('refuses the unknown field %s', (field) => {
    expectRefused(() => parseInject(withInject(field, 'x')), `inject.${field}`);
  });

  it.each(['upstream', 'header', 'template', 'routes', 'maxBodyBytes', 'budget'])('requires %s', (field) => {
    const doc = inject();
    delete doc[field];
    expectRefused(() => parseInject(doc), `inject.${field}`);
  });

  describe('upstream: an https origin only', () => {
    it.each([
      ['https://api.example.com', 'https://api.example.com'],
      ['https://api.example.com/', 'https://api.example.com'],
      ['https://api.example.com:8443', 'https://api.example.com:8443'],
      ['https://127.0.0.1:9', 'https://127.0.0.1:9'],
      ['https://[::1]:8443/', 'https://[::1]:8443'],
    ])('accepts %j as %j', (upstream, origin) => {
      expect(parseInject(withInject('upstream', upstream)).upstream).toBe(origin);
    });

    it.each([
      'not a url',
      '',
      'api.example.com',
      '//api.example.com',
      'http://api.example.com',
      'ftp://api.example.com',
      'wss://api.example.com',
      'https://user@api.example.com',
      'https://user:pw@api.example.com',
      'https://:pw@api.example.com',
      'https://api.example.com/v1',
      'https://api.example.com//',
      'https://api.example.com?x=1',
      'https://api.example.com/?',
      'https://api.example.com#x',
      'https://api.example.com/#',
      // Forms the URL parser would normalise: what is stored must be what was written.
      'HTTPS://api.example.com',
      'https://API.example.com',
      'https://api.example.com:443',
      ' https://api.example.com',
      'https://api.example.com ',
      'https://api.exa\tmple.com',
      'https:api.example.com',
      'https:\\\\api.example.com',
      7,
      null,
    ])('refuses %j', (upstream) => {
      expectRefused(() => parseInject(withInject('upstream', upstream)), 'inject.upstream');
    });
  });

  describe('header', () => {
    it.each(['authorization', 'x-api-key', 'a', 'a'.repeat(64), "ax0!#$%&'*+.^_`|~-z9"])('accepts %j', (header) => {
      expect(parseInject(withInject('header', header)).header).toBe(header);
    });

    it.each(['', 'Authorization', 'X-Api-Key', 'a'.repeat(65), 'x api', 'x:y', 'x\ny', 'x"y', 'x(y', 'x/y', 'Xa', 'aX', 'x\u00e9', 7, null])('refuses %j', (header) => {
      expectRefused(() => parseInject(withInject('header', header)), 'inject.header');
    });

    it.each(['host', 'content-length', 'transfer-encoding', 'connection', 'keep-alive', 'te', 'trailer', 'upgrade', 'proxy-authorization', 'proxy-connection', 'expect'])(
      'refuses the framing header %s',
      (header) => {
        expectRefused(() => parseInject(withInject('header', header)), 'inject.header');
      },
    );
  });

  describe('template: printable ASCII with {value} exactly once', () => {
    it.each(['{value}', 'Bearer {value}', ' ~{value}~ ', `${'x'.repeat(249)}{value}`])('accepts %j', (template) => {
      expect(parseInject(withInject('template', template)).template).toBe(template);
    });

    it.each([
      '',
      'Bearer',
      '{value}{value}',
      'a {value} b {value}',
      '{VALUE}',
      '{ value }',
      'Bearer {value}\r\nX-Evil: 1',
      'Bearer {value}\n',
      '\x1f{value}',
      '{value}\x7f',
      '{value}\u00e9',
      `${'x'.repeat(250)}{value}`,
      7,
      null,
    ])('refuses %j', (template) => {
      expectRefused(() => parseInject(withInject('template', template)), 'inject.template');
    });
  });

  describe('routes', () => {
    it.each([[[]], ['POST /v1'], [{}], [null]])('refuses the list %j', (routes) => {
      expectRefused(() => parseInject(withInject('routes', routes)), 'inject.routes');
    });

    it('takes 1..64 routes', () => {
      const many = Array.from({ length: 64 }, (_, i) => `GET /v${i}`);
      expect(parseInject(withInject('routes', many)).routes).toStrictEqual(many);
      expectRefused(() => parseInject(withInject('routes', [...many, 'GET /x'])), 'inject.routes');
    });

    it('names the route at fault', () => {
      expectRefused(() => parseInject(withInject('routes', ['GET /a', 7])), 'inject.routes[1]');
      expectRefused(() => parseInject(withInject('routes', ['GET /a', 'GET /b', 'GET /../c'])), 'inject.routes[2]');
    });

    it('allows exactly the six methods', () => {
      expect(INJECT_METHODS).toEqual(['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE']);
      for (const method of INJECT_METHODS) expect(parseInject(withInject('routes', [`${method} /v1`])).routes).toStrictEqual([`${method} /v1`]);
    });

    it.each([
      'GET /',
      'GET /*',
      'POST /v1/chat/completions',
      'GET /v1/models/*',
      'GET /v1/models*',
      'DELETE /v1/files/file-abc123',
      "GET /AZaz09._~!$&'()+,;=:@%41/-",
      'GET /.well-known/openid-configuration',
      'GET /a./b',
      'GET /x.',
      'GET /a..b/c',
      'GET /v1.json',
      'GET /v1/',
      'GET /a%2ex',
      `GET /${'a'.repeat(511)}`,
      `GET /${'a'.repeat(511)}*`,
    ])('accepts the route %j', (route) => {
      expect(isInjectRoute(route)).toBe(true);
      expect(parseInject(withInject('routes', [route])).routes).toStrictEqual([route]);
    });

    it.each([
      // Form: "METHOD /path" or "METHOD /prefix*", one space, upper-case method.
      'get /v1',
      'Get /v1',
      'OPTIONS /v1',
      'CONNECT /v1',
      'TRACE /v1',
      'xGET /v1',
      'GETx /v1',
      'GET  /v1',
      'GET\t/v1',
      'GET v1',
      'GET',
      'GET ',
      '/v1',
      ' GET /v1',
      'GET /v1 ',
      'GET /v1 x',
      'GET /v1\n',
      'GET /v1**',
      'GET /v1*x',
      'GET /*/x',
      'GET /v1?x=1',
      'GET /v1#x',
      'GET /v 1',
      'GET /a"b',
      'GET /a<b',
      'GET /a\\b',
      'GET /a^b',
      'GET /a|b',
      'GET /a`b',
      'GET /a{b}',
      'GET /\u00e9',
      `GET /${'a'.repeat(512)}`,
      // Dot segments, in every spelling an upstream may decode.
      'GET /.',
      'GET /./x',
      'GET /..',
      'GET /../x',
      'GET /a/..',
      'GET /a/../b',
      'GET /a/./b',
      'GET /a/.*',
      'GET /a/..*',
      'GET /%2e',
      'GET /%2E/x',
      'GET /%2e%2e',
      'GET /a/%2E%2e/b',
      'GET /.%2e',
      'GET /a/.%2E/b',
      'GET /%2e.',
      'GET /a/%2e./b',
      // Dots-only segments of any length (Tomcat and Spring resolve `...` and `..;` segments too).
      'GET /.../x',
      'GET /%2e%2e%2e',
      // ... and with path parameters of any length, as `..;jsessionid=x` (Tomcat drops the parameter, keeps the `..`).
      'GET /a/..;jsessionid=x/b',
      'GET /a/.%3bx=1/b',
      // Empty segments and encoded separators.
      'GET //',
      'GET //x',
      'GET /a//b',
      'GET /a%2fb',
      'GET /a%2Fb',
      'GET /a%5cb',
      'GET /a%5Cb',
      'GET /%2F*',
    ])('refuses the route %j', (route) => {
      expect(isInjectRoute(route)).toBe(false);
      expectRefused(() => parseInject(withInject('routes', [route])), 'inject.routes[0]');
    });

    it('quotes at most 80 characters of a refused route in the message', () => {
      const route = `GET /${'x'.repeat(600)}`;
      let message = '';
      try {
        parseInject(withInject('routes', [route]));
      } catch (err) {
        message = (err as SchemaError).message;
      }
      expect(message).toContain(`got "${route.slice(0, 80)}"`);
      expect(message).not.toContain(route.slice(0, 81));
    });

    it('INJECT_ROUTE captures the method, the path and the prefix star', () => {
      expect(INJECT_ROUTE.exec('PATCH /v1/x*')?.slice(1)).toEqual(['PATCH', '/v1/x', '*']);
      expect(INJECT_ROUTE.exec('GET /v1')?.slice(1)).toEqual(['GET', '/v1', '']);
    });
  });

  describe('maxBodyBytes: 0 .. 16 MiB', () => {
    it('is 16 MiB at most', () => {
      expect(MAX_INJECT_BODY_BYTES).toBe(16_777_216);
    });
    it.each([0, 1, 16_777_216])('accepts %d', (n) => {
      expect(parseInject(withInject('maxBodyBytes', n)).maxBodyBytes).toBe(n);
    });
    it.each([-1, 16_777_217, 1.5, '1024', null, Number.NaN])('refuses %j', (n) => {
      expectRefused(() => parseInject(withInject('maxBodyBytes', n)), 'inject.maxBodyBytes');
    });
  });

  describe('budget', () => {
    it.each([
      [{ requests: 1, windowSeconds: 1 }],
      [{ requests: 1_000_000_000, windowSeconds: 86_400 }],
    ])('accepts %j', (budget) => {
      expect(parseInject(withInject('budget', budget)).budget).toStrictEqual(budget);
    });
    it.each([
      [null, 'inject.budget'],
      [[100, 60], 'inject.budget'],
      [{ requests: 1, windowSeconds: 1, burst: 2 }, 'inject.budget.burst'],
      [{ windowSeconds: 60 }, 'inject.budget.requests'],
      [{ requests: 0, windowSeconds: 60 }, 'inject.budget.requests'],
      [{ requests: 1_000_000_001, windowSeconds: 60 }, 'inject.budget.requests'],
      [{ requests: 1.5, windowSeconds: 60 }, 'inject.budget.requests'],
      [{ requests: '10', windowSeconds: 60 }, 'inject.budget.requests'],
      [{ requests: 10 }, 'inject.budget.windowSeconds'],
      [{ requests: 10, windowSeconds: 0 }, 'inject.budget.windowSeconds'],
      [{ requests: 10, windowSeconds: 86_401 }, 'inject.budget.windowSeconds'],
    ])('refuses %j at %s', (budget, path) => {
      expectRefused(() => parseInject(withInject('budget', budget)), path);
    });
  });

  describe('allowStatus', () => {
    it.each([[[100]], [[599]], [[200, 201, 204]]])('accepts %j', (codes) => {
      expect(parseInject(withInject('allowStatus', codes)).allowStatus).toStrictEqual(codes);
    });
    it.each([
      [[], 'inject.allowStatus'],
      [200, 'inject.allowStatus'],
      [null, 'inject.allowStatus'],
      [{ 0: 200 }, 'inject.allowStatus'],
      [[200, 200], 'inject.allowStatus'],
      [[200, 201, 200], 'inject.allowStatus'],
      [[99], 'inject.allowStatus[0]'],
      [[200, 600], 'inject.allowStatus[1]'],
      [[200.5], 'inject.allowStatus[0]'],
      [['200'], 'inject.allowStatus[0]'],
    ])('refuses %j at %s', (codes, path) => {
      expectRefused(() => parseInject(withInject('allowStatus', codes)), path);
    });
  });
});

describe('a binding with an inject section', () => {
  it('is parsed with the rule (upstream in its origin form)', () => {
    const parsed = parseBinding(binding({ inject: { ...inject(), upstream: 'https://api.example.com/' } }));
    expect(parsed).toStrictEqual(binding({ inject: inject() }));
  });

  it('has no inject key when the section is absent', () => {
    expect('inject' in parseBinding(binding())).toBe(false);
  });

  it('names the inject field at fault under the binding path', () => {
    expectRefused(() => parseBinding(binding({ inject: { ...inject(), routes: ['GET /a/../b'] } })), 'binding.inject.routes[0]');
    expectRefused(() => parseBinding(binding({ inject: null })), 'binding.inject');
    expectRefused(() => parseBinding(binding({ inject: { ...inject(), budget: { requests: 0, windowSeconds: 1 } } }), 's["x"]'), 's["x"].inject.budget.requests');
  });

  it('cannot be kms-recipient: the broker must hold the value to add it', () => {
    const kms = { provider: 'aws-kms', kmsKeyId: 'alias/k', mode: 'kms-recipient' };
    expectRefused(() => parseBinding(binding({ ...kms, inject: inject() })), 'binding.inject');
    expect(parseBinding(binding(kms)).mode).toBe('kms-recipient');
    expect(parseBinding(binding({ ...kms, mode: 'jwe', inject: inject() })).inject).toStrictEqual(inject());
    expect(parseBinding(binding({ provider: 'aws-kms', kmsKeyId: 'alias/k', inject: inject() })).inject).toStrictEqual(inject());
  });
});
