import { describe, expect, it } from 'vitest';
import { uiLines } from './ui-url.js';

const WHERE = { hostname: 'node1', netns: undefined, tokenFile: '/var/lib/weft/api-token' };

describe('uiLines (weft ui)', () => {
  it('prints the loopback URL first, then the SSH tunnel for another machine', () => {
    const l = uiLines({ http: '127.0.0.1:6784', loopback: true }, WHERE);
    expect(l[0]).toBe('http://127.0.0.1:6784/ui');
    expect(l[1]).toMatch(
      /^from another machine: ssh -N -L 6784:127\.0\.0\.1:6784 node1, then open http:\/\/127\.0\.0\.1:6784\/ui/,
    );
    expect(l).toHaveLength(2);
    // An older router without `api` in its status: the default address.
    expect(uiLines(undefined, WHERE)).toEqual(l);
  });

  it('in a named network namespace, says how to forward it from outside', () => {
    const l = uiLines({ http: '127.0.0.1:7000', loopback: true }, { ...WHERE, netns: 'weftdemo-h1' });
    expect(l[0]).toBe('http://127.0.0.1:7000/ui');
    expect(l[1]).toContain(
      "socat TCP-LISTEN:7000,bind=127.0.0.1,reuseaddr,fork EXEC:'ip netns exec weftdemo-h1 socat STDIO TCP\\:127.0.0.1\\:7000'",
    );
  });

  it('beyond loopback: names the token file and never prints the token', () => {
    const l = uiLines({ http: '192.0.2.10:6784', loopback: false }, WHERE);
    expect(l[0]).toBe('http://192.0.2.10:6784/ui');
    expect(l.join('\n')).toContain('/var/lib/weft/api-token');
    expect(l.join('\n')).toContain('#token=TOKEN');
    const any = uiLines({ http: '0.0.0.0:6784', loopback: false }, WHERE);
    expect(any[0]).toBe('http://127.0.0.1:6784/ui');
    expect(any.at(-1)).toBe('from another machine: http://ADDRESS-OF-THIS-HOST:6784/ui');
  });
});
