/**
 * The contract every fuzz target keeps, and the one error a target throws when a property fails.
 *
 * A target drives one parser (or a whole receive path) with one input and says what became of it:
 *
 *   input bytes ──► run(input) ──► outcome label          (a valid result, a typed error, a counted drop)
 *                        │
 *                        └──► throws PropertyViolation     (a property the parser promises does not hold)
 *                        └──► throws anything else         (a crash: an exception the parser must never raise)
 *
 * Outcome labels guide the fuzzer: an input whose label was never seen before joins the corpus, so
 * mutations explore from every distinct way a parser has answered so far. Labels must therefore have
 * few distinct values (strip numbers from error messages).
 */

/** Rand returns uniform values in [0, 1); every choice of a run comes from one seeded Rand. */
export type Rand = () => number;

/** FuzzTarget is one parser under fuzz. */
export interface FuzzTarget {
  /** name is kebab-case and unique; it names the target in reports and regression files. */
  readonly name: string;
  /** parsers lists the `file: function` entry points the target reaches, for the report. */
  readonly parsers: readonly string[];
  /** maxLen bounds random and mutated inputs (bytes). */
  readonly maxLen: number;
  /** seeds returns valid inputs built with the project's own encoders (what real traffic looks like). */
  seeds(): Uint8Array[];
  /**
   * generate makes one structure-aware input (fast-check arbitraries encoded the way the wire
   * does), when the target has such a generator; the engine mixes it with random bytes and mutations.
   */
  generate?(rand: Rand): Uint8Array;
  /** setup opens what the target needs (sockets, servers); called once before the first run. */
  setup?(): Promise<void>;
  /** teardown releases everything setup opened. */
  teardown?(): Promise<void>;
  /**
   * run feeds one input; returns an outcome label. Throws PropertyViolation when a promised property
   * fails; any other exception is a crash. `input` is borrowed: valid until run returns (or settles).
   */
  run(input: Uint8Array): string | Promise<string>;
}

/** PropertyViolation says a parser answered without crashing, but broke a property it promises. */
export class PropertyViolation extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'PropertyViolation';
  }
}

/** label turns an error message into an outcome label with few distinct values (digits and quotes dropped). */
export function label(prefix: string, message: string): string {
  return `${prefix}:${message
    .slice(0, 80)
    .replace(/"[^"]*"/g, '""')
    .replace(/[0-9a-f]{2}(:[0-9a-f]{2}){5}/g, 'NAME')
    .replace(/\d+/g, 'N')}`;
}

/** violation throws a PropertyViolation unless `ok`. */
export function check(ok: boolean, message: string): asserts ok {
  if (!ok) throw new PropertyViolation(message);
}
