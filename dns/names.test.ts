import { describe, expect, it } from 'vitest';
import { nameKeyText, readNameKey } from './names.js';
import { wireName } from './testing/messages.js';

/** key is the NameKey key of dotted labels (already lower case). */
function key(...labels: string[]): string {
  return labels.map((l) => String.fromCharCode(l.length) + l).join('');
}

describe('readNameKey', () => {
  it('reads an uncompressed name, lower-casing ASCII letters only, and says where it ends', () => {
    const buf = Buffer.from([0xff, ...wireName(['WwW', 'Ex\xc9mple', 'com']), 0xaa]);
    expect(readNameKey(buf, 1)).toEqual({ key: key('www', 'ex\xc9mple', 'com'), end: 1 + 4 + 8 + 4 + 1 });
  });

  it('reads the root as the empty key', () => {
    expect(readNameKey(Buffer.from([0]), 0)).toEqual({ key: '', end: 1 });
  });

  it('keeps a dot inside a label apart from a label boundary', () => {
    const dotted = readNameKey(Buffer.from(wireName(['a.b'])), 0);
    const two = readNameKey(Buffer.from(wireName(['a', 'b'])), 0);
    expect(dotted?.key).not.toBe(two?.key);
    expect(nameKeyText(dotted?.key ?? '')).toBe('a.b.');
  });

  it('follows backward pointers, and ends after the first pointer', () => {
    // offset 0: example.com; offset 13: www + pointer to 0; offset 19: api + pointer to 13.
    const buf = Buffer.from([
      ...wireName(['example', 'com']),
      ...wireName(['www'], [0xc0, 0]),
      ...wireName(['api'], [0xc0, 13]),
    ]);
    expect(readNameKey(buf, 13)).toEqual({ key: key('www', 'example', 'com'), end: 19 });
    expect(readNameKey(buf, 19)).toEqual({ key: key('api', 'www', 'example', 'com'), end: 25 });
  });

  it('refuses pointers that do not go strictly backwards, so no loop can run', () => {
    expect(readNameKey(Buffer.from([0xc0, 0x00]), 0)).toBeUndefined(); // to itself
    expect(readNameKey(Buffer.from([0xc0, 0x02, 0x00]), 0)).toBeUndefined(); // forwards
    // 0: "a" then a pointer to 4; 4: a pointer back to 0: the second jump is not below the first.
    expect(readNameKey(Buffer.from([1, 0x61, 0xc0, 4, 0xc0, 0]), 4)).toBeUndefined();
  });

  it('refuses overruns: a label or pointer cut off, a start past the end, no root byte', () => {
    expect(readNameKey(Buffer.from([3, 0x61, 0x62]), 0)).toBeUndefined();
    expect(readNameKey(Buffer.from([1, 0x61, 0xc0]), 0)).toBeUndefined();
    expect(readNameKey(Buffer.from([0]), 1)).toBeUndefined();
    expect(readNameKey(Buffer.from(wireName(['abc'], [])), 0)).toBeUndefined();
    expect(readNameKey(Buffer.alloc(0), 0)).toBeUndefined();
  });

  it('refuses the reserved label types 01 and 10', () => {
    expect(readNameKey(Buffer.from([0x40, 0]), 0)).toBeUndefined();
    expect(readNameKey(Buffer.from([0x80, 0]), 0)).toBeUndefined();
  });

  it('accepts names of 255 wire bytes and refuses longer ones, also when pointers build them', () => {
    const l63 = 'x'.repeat(63);
    const max = wireName([l63, l63, l63, 'y'.repeat(61)]);
    expect(max).toHaveLength(255);
    expect(readNameKey(Buffer.from(max), 0)?.end).toBe(255);
    expect(readNameKey(Buffer.from(wireName([l63, l63, l63, 'y'.repeat(62)])), 0)).toBeUndefined();
    // 191 bytes of labels at 0, then two more labels of 63 that point back to them: 128 + 191 > 255.
    const base = wireName([l63, l63, l63]);
    const buf = Buffer.from([...base, ...wireName([l63, l63], [0xc0, 0])]);
    expect(readNameKey(buf, 0)).toBeDefined();
    expect(readNameKey(buf, base.length)).toBeUndefined();
  });
});

describe('nameKeyText', () => {
  it('renders keys as dotted names with the trailing dot, the root as a dot', () => {
    expect(nameKeyText(key('www', 'example', 'com'))).toBe('www.example.com.');
    expect(nameKeyText('')).toBe('.');
  });
});
