import { describe, expect, it } from 'vitest';
import { PathLiveness } from './liveness.js';

describe('PathLiveness', () => {
  it('is established only once heartbeats flow both ways', () => {
    const d = new PathLiveness(0);
    d.heard(100);
    expect(d.evaluate(100, 5000)).toBe(false);
    expect(d.state).toBe('pending');
    d.acked(200, 150);
    expect(d.evaluate(200, 5000)).toBe(true);
    expect(d.state).toBe('established');
    expect(d.rttMs).toBe(50);
  });

  it('fails when one direction goes silent for longer than the timeout, and says which', () => {
    const d = new PathLiveness(0);
    d.heard(0);
    d.acked(0, 0);
    d.evaluate(0, 5000);
    d.heard(4000);
    expect(d.evaluate(5001, 5000)).toBe(true);
    expect(d.state).toBe('failed');
    expect(d.reason).toBe('our heartbeats not acknowledged');
    d.acked(6000, 5990);
    expect(d.evaluate(6000, 5000)).toBe(true);
    expect(d.state).toBe('established');
  });

  it('fails a path that never came up once the timeout passes', () => {
    const d = new PathLiveness(1000);
    expect(d.evaluate(5999, 5000)).toBe(false);
    expect(d.evaluate(6001, 5000)).toBe(true);
    expect(d.state).toBe('failed');
    expect(d.reason).toBe('no heartbeats either way');
  });

  it('ignores an ack stamped in the future for the RTT', () => {
    const d = new PathLiveness(0);
    d.acked(100, 500);
    expect(d.rttMs).toBeUndefined();
  });
});
